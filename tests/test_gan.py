"""DCGAN models, losses against the formulas of ../shared/EQUATIONS.md, GANPipeline, and train_gan.py end to end."""

import json
import re
import shutil

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from PIL import Image
from safetensors.torch import load_file
from scripts import load_script

from hf_genzoo import DCGANDiscriminator, DCGANGenerator, GANPipeline, MinibatchStd
from hf_genzoo.models import discriminator_loss, generator_loss, r1_penalty
from hf_genzoo.pipelines import save_gif
from hf_genzoo.pipelines.pipeline_gan import jacobian_sensitivity



def tiny_generator(**kwargs):
    torch.manual_seed(0)
    config = dict(latent_dim=8, sample_size=16, block_out_channels=(16, 8, 8), class_embed_dim=4)
    return DCGANGenerator(**{**config, **kwargs}).eval()


# ---- models --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample_size", [16, 28, 32, 64])
@pytest.mark.parametrize("num_classes,upsampling", [(None, "transposed"), (5, "transposed"), (None, "nearest")])
def test_generator_and_discriminator_shapes(sample_size, num_classes, upsampling):
    g = DCGANGenerator(
        latent_dim=8, out_channels=1, sample_size=sample_size, block_out_channels=(16, 8, 8), num_classes=num_classes, upsampling=upsampling
    )
    d = DCGANDiscriminator(in_channels=1, sample_size=sample_size, block_out_channels=(8, 8, 16), num_classes=num_classes, spectral_norm=True)
    labels = None if num_classes is None else torch.tensor([0, 4])
    x = g(torch.randn(2, 8), labels)
    assert x.shape == (2, 1, sample_size, sample_size) and x.abs().max() <= 1
    assert d(x, labels).shape == (2,)


def test_bad_inputs_name_what_is_allowed():
    g = tiny_generator()
    with pytest.raises(ValueError, match=r"latents must have shape \(B, 8\) \(latent_dim\), got \(2, 7\)"):
        g(torch.randn(2, 7))
    with pytest.raises(ValueError, match="class_labels were given but the model is unconditional"):
        g(torch.randn(2, 8), torch.tensor([0, 1]))
    conditional = tiny_generator(num_classes=3)
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 2\], got \[0, 3\]"):
        conditional(torch.randn(2, 8), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="the model is class-conditional"):
        conditional(torch.randn(2, 8))
    with pytest.raises(ValueError, match="sample_size 18 must lie in \\[16, 64\\] and be divisible by 4"):
        DCGANGenerator(sample_size=18, block_out_channels=(8, 8, 8))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, 32, 32\), got \(1, 3, 16, 16\)"):
        DCGANDiscriminator()(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"upsampling must be one of \('transposed', 'nearest'\), got 'bilinear'"):
        DCGANGenerator(upsampling="bilinear")


@pytest.mark.parametrize("upsampling", ["transposed", "nearest"])
def test_resize_convolution_upsamples_a_flat_map_without_a_checkerboard(upsampling):
    """A spatially constant feature map through the first ×2 level: the resize-convolution's output is constant
    away from the border, while the stride-2 transposed convolution's 2×2 cells repeat a non-constant pattern."""
    torch.manual_seed(0)
    g = DCGANGenerator(latent_dim=8, sample_size=16, block_out_channels=(16, 8, 8), upsampling=upsampling)
    start = next(i for i, m in enumerate(g.net) if isinstance(m, torch.nn.ReLU)) + 1  # after the 1×1 → 4×4 level
    end = next(i for i in range(start, len(g.net)) if isinstance(g.net[i], torch.nn.BatchNorm2d))
    level = g.net[start:end]
    flat = torch.randn(1, 16, 1, 1).expand(1, 16, 4, 4)
    interior = level(flat)[0, :, 2:-2, 2:-2]  # (8, 4, 4), pixels whose receptive field lies inside the map
    cells = interior.unfold(1, 2, 2).unfold(2, 2, 2)  # (8, 2, 2, 2, 2): the 2×2 cells
    torch.testing.assert_close(cells, cells[:, :1, :1].expand_as(cells))  # every cell is the same
    spread = (interior.amax(dim=(1, 2)) - interior.amin(dim=(1, 2))).max()
    if upsampling == "nearest":
        assert spread < 1e-5
    else:
        assert spread > 1e-2  # the checkerboard


def test_projection_discriminator_adds_the_label_embedding_inner_product():
    torch.manual_seed(0)
    d = DCGANDiscriminator(in_channels=1, sample_size=16, block_out_channels=(4, 8, 8), num_classes=3).eval()
    x, labels = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 1])
    features = d.net(x).sum(dim=(2, 3))
    expected = d.head(features).squeeze(1) + (d.class_embedding(labels) * features).sum(1)
    torch.testing.assert_close(d(x, labels), expected)


def test_flatten_pooling_is_a_dense_head_over_the_whole_feature_map():
    """DCGAN's head: the logit is a linear function of every position of the last map, so unlike the sum pooling
    it tells a patch at one place from the same patch elsewhere; with labels the projection uses the same φ(x)."""
    torch.manual_seed(0)
    d = DCGANDiscriminator(in_channels=1, sample_size=16, block_out_channels=(4, 8, 8), num_classes=3, pooling="flatten").eval()
    assert d.head.in_features == 8 * 4 * 4 and d.class_embedding.embedding_dim == 8 * 4 * 4
    x, labels = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 1])
    features = d.net(x).flatten(1)
    torch.testing.assert_close(d(x, labels), d.head(features).squeeze(1) + (d.class_embedding(labels) * features).sum(1))
    # a feature map moved by one position: the sum pooling cannot tell, the flattened head can
    summed = DCGANDiscriminator(in_channels=1, sample_size=16, block_out_channels=(4, 8, 8)).eval()
    feature_map = torch.zeros(1, 8, 4, 4)
    feature_map[..., 1, 1] = 1.0
    moved = feature_map.roll(1, dims=3)
    assert torch.equal(summed.head(feature_map.sum(dim=(2, 3))), summed.head(moved.sum(dim=(2, 3))))
    assert not torch.equal(d.head(feature_map.flatten(1)), d.head(moved.flatten(1)))
    with pytest.raises(ValueError, match=r"pooling must be one of \('sum', 'flatten'\), got 'mean'"):
        DCGANDiscriminator(pooling="mean")


def test_without_batch_norm_each_logit_depends_on_its_own_image_alone():
    """What the R1 penalty assumes: in training mode, BatchNorm mixes the batch into every logit; without it a
    batch's logits are those of its images one at a time."""
    torch.manual_seed(0)
    x = torch.randn(4, 1, 16, 16)
    plain = DCGANDiscriminator(in_channels=1, sample_size=16, block_out_channels=(4, 8, 8), batch_norm=False).train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    torch.testing.assert_close(plain(x), torch.cat([plain(x[i : i + 1]) for i in range(4)]))
    normed = DCGANDiscriminator(in_channels=1, sample_size=16, block_out_channels=(4, 8, 8)).train()
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in normed.modules()) == 2
    assert not torch.allclose(normed(x)[:2], normed(x[:2]))


def test_minibatch_std_appends_each_groups_feature_spread():
    """ProGAN's channel: image i's group is {j : j ≡ i mod B/G}; the channel is the mean over features and positions
    of the features' (biased) standard deviation within the group."""
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4, 4)
    out = MinibatchStd(group_size=2)(x)  # groups {0, 3}, {1, 4}, {2, 5}
    assert out.shape == (6, 4, 4, 4) and torch.equal(out[:, :3], x)
    for i in range(6):
        group = x[[i % 3, i % 3 + 3]]
        torch.testing.assert_close(out[i, 3], torch.full((4, 4), float(group.std(dim=0, unbiased=False).mean())), atol=1e-4, rtol=1e-4)
    assert MinibatchStd(4)(x)[:, 3].unique().numel() == 3  # 4 does not divide 6: groups of gcd(6, 4) = 2
    assert MinibatchStd(4)(x[:1])[:, 3].abs().max() < 1e-3  # one image: no spread
    assert MinibatchStd(4)(x[:1].expand(4, -1, -1, -1))[:, 3].abs().max() < 1e-3  # four copies of one image: none either

    d = DCGANDiscriminator(in_channels=1, sample_size=16, block_out_channels=(4, 8, 8), batch_norm=False, minibatch_std_group_size=2).eval()
    images = torch.randn(4, 1, 16, 16)  # groups {0, 2}, {1, 3}
    changed = images.clone()
    changed[2] = torch.randn(1, 16, 16)
    before, after = d(images), d(changed)
    assert not torch.allclose(before[0], after[0])  # image 0 sees its group partner
    torch.testing.assert_close(before[[1, 3]], after[[1, 3]])  # the other group does not
    with pytest.raises(ValueError, match="minibatch_std_group_size must be 0 \\(off\\) or a group size >= 1, got -1"):
        DCGANDiscriminator(minibatch_std_group_size=-1)


# ---- losses --------------------------------------------------------------------------------------------------


def test_losses_are_the_cross_entropy_of_the_equations():
    l_r, l_f = torch.randn(7), torch.randn(5)
    d_r, d_f = torch.sigmoid(l_r), torch.sigmoid(l_f)
    expected_d = -torch.log(d_r).mean() - torch.log(1 - d_f).mean()  # L(ϑ, φ) of Goodfellow et al.
    torch.testing.assert_close(discriminator_loss(l_r, l_f, "minimax"), expected_d)
    torch.testing.assert_close(discriminator_loss(l_r, l_f, "non_saturating"), expected_d)
    torch.testing.assert_close(generator_loss(l_f, "non_saturating"), -torch.log(d_f).mean())
    torch.testing.assert_close(generator_loss(l_f, "minimax"), torch.log(1 - d_f).mean())
    torch.testing.assert_close(discriminator_loss(l_r, l_f, "hinge"), torch.relu(1 - l_r).mean() + torch.relu(1 + l_f).mean())
    torch.testing.assert_close(generator_loss(l_f, "hinge"), -l_f.mean())
    with pytest.raises(ValueError, match="unknown GAN loss 'wasserstein'"):
        generator_loss(l_f, "wasserstein")


def test_losses_stay_finite_where_probabilities_saturate():
    l = torch.tensor([-200.0, 200.0])
    assert torch.isfinite(discriminator_loss(l, l)) and torch.isfinite(generator_loss(l))


def test_r1_penalty_of_a_linear_critic_is_the_squared_weight_norm():
    w = torch.randn(1, 2, 3, 3)
    x = torch.randn(4, 2, 3, 3, requires_grad=True)
    logits = (x * w).sum(dim=(1, 2, 3))
    torch.testing.assert_close(r1_penalty(logits, x), w.pow(2).sum())


# ---- pipeline ------------------------------------------------------------------------------------------------


def test_pipeline_samples_reproducibly_and_truncates():
    pipe = GANPipeline(generator_model=tiny_generator())
    a = pipe(batch_size=3, generator=torch.Generator().manual_seed(1), output_type="pt").images
    b = pipe(batch_size=3, generator=torch.Generator().manual_seed(1), output_type="pt").images
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, b)
    z = pipe.prepare_latents(1000, torch.Generator().manual_seed(0), truncation=0.5)
    assert z.abs().max() <= 0.5 and z.std() < 0.35  # a N(0, 1) truncated at ±0.5 has std 0.28
    with pytest.raises(ValueError, match="truncation must be > 0"):
        pipe(truncation=0.0)
    with pytest.raises(ValueError, match=r"latents must have shape \(B, 8\)"):
        pipe(latents=torch.randn(2, 9))
    assert len(pipe(batch_size=2).images) == 2  # PIL by default


class LinearGenerator(torch.nn.Module):
    """G(z) = W z as a (B, 1, 4, 4) image: its Jacobian is W everywhere."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)))

    def forward(self, z, labels=None):
        return (z @ self.weight.T).view(-1, 1, 4, 4)


def test_jacobian_sensitivity_estimates_the_squared_frobenius_norm():
    g = LinearGenerator()
    scores = jacobian_sensitivity(g, torch.randn(3, 8), num_directions=4000, generator=torch.Generator().manual_seed(0))
    exact = g.weight.detach().pow(2).sum()  # ‖W‖²_F, the same at every z
    torch.testing.assert_close(scores, exact.expand(3), rtol=0.05, atol=0)
    doubled = LinearGenerator()
    doubled.weight.data *= 2  # a map twice as steep scores four times as high, for the same directions
    torch.testing.assert_close(
        jacobian_sensitivity(doubled, torch.randn(3, 8), num_directions=5, generator=torch.Generator().manual_seed(1)),
        4 * jacobian_sensitivity(g, torch.randn(3, 8), num_directions=5, generator=torch.Generator().manual_seed(1)),
        rtol=1e-4,  # the finite difference rounds differently at another z
        atol=0,
    )


def rejection_pipeline(num_classes=None):
    torch.manual_seed(0)
    d = DCGANDiscriminator(sample_size=16, block_out_channels=(8, 8, 16), num_classes=num_classes).eval()
    return GANPipeline(generator_model=tiny_generator(num_classes=num_classes), discriminator=d)


@pytest.mark.parametrize("rejection", ["jacobian", "discriminator", "jacobian+discriminator"])
def test_rejection_keeps_the_best_scored_candidates_in_draw_order(rejection):
    pipe = rejection_pipeline()
    images = pipe(batch_size=4, generator=torch.Generator().manual_seed(3), rejection=rejection, oversample=3, output_type="pt").images
    # the same draws by hand: 12 candidate latents, then the directions of the Jacobian estimate
    draws = torch.Generator().manual_seed(3)
    z = pipe.prepare_latents(12, draws)
    candidates = pipe.generator_model(z)
    jacobian = jacobian_sensitivity(pipe.generator_model, z, generator=draws)
    critic = -pipe.discriminator(candidates)
    ranks = lambda s: s.argsort().argsort()
    score = {"jacobian": jacobian, "discriminator": critic, "jacobian+discriminator": ranks(jacobian) + ranks(critic)}[rejection]
    kept = score.argsort()[:4].sort().values
    torch.testing.assert_close(images, (candidates[kept] + 1) / 2)
    # one candidate per image keeps them all: plain sampling
    plain = pipe(batch_size=4, generator=torch.Generator().manual_seed(3), output_type="pt").images
    torch.testing.assert_close(pipe(batch_size=4, generator=torch.Generator().manual_seed(3), rejection=rejection, oversample=1, output_type="pt").images, plain)


def test_rejection_fills_each_asked_for_label_from_its_own_candidates():
    pipe = rejection_pipeline(num_classes=3)
    labels = [2, 0, 2, 2]
    images = pipe(batch_size=4, class_labels=labels, generator=torch.Generator().manual_seed(0), rejection="discriminator", oversample=2, output_type="pt").images
    z = pipe.prepare_latents(8, torch.Generator().manual_seed(0))
    pool_labels = torch.tensor(labels).repeat_interleave(2)  # [2, 2, 0, 0, 2, 2, 2, 2]
    candidates = pipe.generator_model(z, pool_labels)
    score = -pipe.discriminator(candidates, pool_labels)
    twos = torch.tensor([0, 1, 4, 5, 6, 7])
    best_twos = twos[score[twos].argsort()[:3]].sort().values
    best_zero = torch.tensor([2, 3])[score[[2, 3]].argmin()]
    expected = candidates[torch.stack([best_twos[0], best_zero, best_twos[1], best_twos[2]])]
    torch.testing.assert_close(images, (expected + 1) / 2)


def test_rejection_bad_inputs_name_what_is_allowed():
    pipe = rejection_pipeline()
    with pytest.raises(ValueError, match=r"rejection must be one of \('jacobian', 'discriminator', 'jacobian\+discriminator'\) or None, got 'oracle'"):
        pipe(rejection="oracle")
    for oversample in (0, 1.5, True):
        with pytest.raises(ValueError, match=f"oversample must be an integer ≥ 1 \\(candidates per kept image\\), got {oversample}"):
            pipe(rejection="jacobian", oversample=oversample)
    with pytest.raises(ValueError, match="rejection draws its own candidate latents"):
        pipe(latents=torch.randn(2, 8), rejection="jacobian")
    without_d = GANPipeline(generator_model=tiny_generator())
    with pytest.raises(ValueError, match="needs the pipeline's discriminator, and this pipeline has none .*--save_discriminator"):
        without_d(rejection="jacobian+discriminator")
    assert len(without_d(batch_size=2, rejection="jacobian").images) == 2


def test_interpolation_ends_are_the_two_latents():
    pipe = GANPipeline(generator_model=tiny_generator())
    z_a, z_b = torch.randn(2, 8)
    for method in ("slerp", "linear"):
        frames = pipe.interpolate(z_a, z_b, num_steps=5, method=method, output_type="pt").images
        assert frames.shape == (5, 3, 16, 16)
        ends = pipe(latents=torch.stack([z_a, z_b]), output_type="pt").images
        torch.testing.assert_close(frames[[0, -1]], ends, atol=1e-5, rtol=1e-5)
    slerp = pipe.interpolate(z_a, z_b, num_steps=5, output_type="pt").images
    linear = pipe.interpolate(z_a, z_b, num_steps=5, method="linear", output_type="pt").images
    assert not torch.allclose(slerp[2], linear[2])
    with pytest.raises(ValueError, match="num_steps must be ≥ 2"):
        pipe.interpolate(z_a, z_b, num_steps=1)
    with pytest.raises(ValueError, match=r"latents must have shape \(B, 8\)"):
        pipe.interpolate(torch.randn(3), z_b)


def test_gif_holds_the_frames_forth_and_back(tmp_path):
    pipe = GANPipeline(generator_model=tiny_generator())
    frames = pipe.interpolate(torch.randn(8), torch.randn(8), num_steps=4).images
    path = save_gif(frames, tmp_path / "walk.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 6  # 4 forth, 2 back (the ends are not repeated)


def test_pipeline_round_trips_through_a_folder_and_the_hub(hub, hub_cache, tmp_path):
    pipe = GANPipeline(generator_model=tiny_generator(num_classes=3))
    pipe.save_pretrained(tmp_path / "gan")
    assert (tmp_path / "gan" / "generator_model" / "diffusion_pytorch_model.safetensors").is_file()
    expected = pipe(batch_size=2, class_labels=[0, 2], generator=torch.Generator().manual_seed(0), output_type="pt").images
    loaded = GANPipeline.from_pretrained(tmp_path / "gan")
    assert loaded.discriminator is None
    got = loaded(batch_size=2, class_labels=[0, 2], generator=torch.Generator().manual_seed(0), output_type="pt").images
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    pipe.push_to_hub("genzoo-tests/tiny-gan")
    from_hub = GANPipeline.from_pretrained("genzoo-tests/tiny-gan")
    torch.testing.assert_close(from_hub(batch_size=2, class_labels=[0, 2], generator=torch.Generator().manual_seed(0), output_type="pt").images, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="class_labels must lie in"):
        loaded(batch_size=1, class_labels=3)


# ---- the training script -------------------------------------------------------------------------------------


train = load_script("train_gan")


def tiny_args(output_dir, *extra):
    return [
        "--output_dir", str(output_dir), "--resolution", "16", "--generator_channels", "16", "8", "--discriminator_channels", "8", "16",
        "--latent_dim", "8", "--train_batch_size", "8", "--max_train_samples", "64", "--max_eval_samples", "16",
        "--max_train_steps", "6", "--checkpointing_steps", "3", "--validation_steps", "3", "--num_generated", "8",
        "--mixed_precision", "no", *extra,
    ]



def run(*argv):
    return train.main(train.parse_args(list(argv)))


def test_training_writes_a_loadable_pipeline(fresh_accelerator_state, tmp_path):
    out = tmp_path / "gan"
    run(*tiny_args(out, "--class_conditional", "--r1_gamma", "0.1", "--mixed_precision", "bf16"))
    for name in ("model_index.json", "generator_model/diffusion_pytorch_model.safetensors", "README.md", "samples.png", "interpolation.png", "interpolation.gif", "metrics.json"):
        assert (out / name).is_file(), name
    assert not (out / "discriminator").exists()  # published only with --save_discriminator
    checkpoint = sorted(out.glob("checkpoint-*"))[-1]
    assert {"model.safetensors", "model_1.safetensors", "optimizer.bin", "optimizer_1.bin"} <= {p.name for p in checkpoint.iterdir()}
    assert sorted(p.name for p in (out / "validation").iterdir()) == ["step-000003.png", "step-000006.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("oracle_validity", "oracle_coverage", "oracle_attribute_accuracy"):
        assert 0 <= metrics[key] <= 1, key
    card = (out / "README.md").read_text()
    assert "library_name: hf_genzoo" in card and "import hf_genzoo" in card and "interpolation.png" in card and "train_gan.py" in card
    pipe = GANPipeline.from_pretrained(out)
    assert pipe.generator_model.config.num_classes == 21
    assert pipe(batch_size=2, class_labels=[1, 2], output_type="np").images.shape == (2, 16, 16, 3)


def test_lazy_r1_is_the_penalty_every_nth_step_weighted_by_n(fresh_accelerator_state, tmp_path):
    """With --r1_interval 4, the D update of step 4 is that of γ × 4 on every step, and step 5 has no penalty."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    x_real = torch.rand(8, 3, 16, 16) * 2 - 1

    def d_update(step, r1_gamma, r1_interval):
        args = train.parse_args(tiny_args(tmp_path, "--r1_gamma", str(r1_gamma), "--r1_interval", str(r1_interval), "--no-channels_last"))
        torch.manual_seed(0)  # the same initial weights in every call
        generator, discriminator = train.build_models(args, None)
        before = [p.detach().clone() for p in discriminator.parameters()]
        opt_g = torch.optim.SGD(generator.parameters(), lr=1.0)
        opt_d = torch.optim.SGD(discriminator.parameters(), lr=1.0)
        batches = [(x_real, None, torch.Generator().manual_seed(0))]
        logs = train.training_step(accelerator, generator, discriminator, opt_g, opt_d, batches, args, None, step)
        return [b - p.detach() for b, p in zip(before, discriminator.parameters())], logs

    lazy, lazy_logs = d_update(step=4, r1_gamma=0.1, r1_interval=4)
    every, _ = d_update(step=4, r1_gamma=0.4, r1_interval=1)
    skipped, skipped_logs = d_update(step=5, r1_gamma=0.1, r1_interval=4)
    none, _ = d_update(step=5, r1_gamma=0.0, r1_interval=1)
    assert "r1" in lazy_logs and "r1" not in skipped_logs
    for a, b in zip(lazy, every):
        torch.testing.assert_close(a, b)
    for a, b in zip(skipped, none):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(lazy, none))  # the penalty did change the update


def test_save_discriminator_publishes_it(fresh_accelerator_state, tmp_path):
    out = tmp_path / "gan"
    flags = ("--spectral_norm", "--loss", "hinge", "--discriminator_pooling", "flatten", "--no-discriminator_batch_norm", "--minibatch_std_group_size", "2")
    rejection = ("--eval_rejection", "jacobian+discriminator", "--eval_oversample", "2")
    run(*tiny_args(out, "--max_train_steps", "1", "--save_discriminator", "--generator_upsampling", "nearest", *flags, *rejection))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rejection"] == "jacobian+discriminator" and metrics["rejection_oversample"] == 2
    for key in ("oracle_validity", "oracle_coverage", "oracle_distinct_scenes"):
        assert key in metrics and f"rejection_{key}" in metrics, key
    assert 'rejection="jacobian+discriminator"' in (out / "README.md").read_text()
    pipe = GANPipeline.from_pretrained(out)
    assert pipe.generator_model.config.upsampling == "nearest"
    assert isinstance(pipe.discriminator, DCGANDiscriminator) and pipe.discriminator.config.spectral_norm
    assert pipe.discriminator.config.pooling == "flatten" and pipe.discriminator.config.batch_norm is False
    assert pipe.discriminator.config.minibatch_std_group_size == 2


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--eval_rejection", "discriminator"], "--eval_rejection discriminator scores with the discriminator: add --save_discriminator"),
        (["--eval_rejection", "jacobian", "--eval_oversample", "0"], "--eval_oversample must be ≥ 1, got 0"),
        (["--eval_rejection", "oracle"], "invalid choice: 'oracle' (choose from 'jacobian', 'discriminator', 'jacobian+discriminator')"),
    ],
)
def test_bad_rejection_flags_say_what_is_allowed(capsys, flags, message):
    with pytest.raises(SystemExit) as excinfo:
        train.parse_args(flags)
    assert excinfo.value.code == 2 and message in capsys.readouterr().err


def test_resume_continues_exactly(fresh_accelerator_state, tmp_path):
    """Resumed from its step-3 checkpoint, a run ends with the same generator, discriminator and EMA weights."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    args = ("--class_conditional", "--gradient_accumulation_steps", "2", "--save_discriminator")
    run(*tiny_args(full, *args, "--generator_learning_rate", "3e-4"))
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    # the resume command does not repeat --generator_learning_rate: the checkpoint's rate goes on, not the default's
    run(*tiny_args(resumed, *args, "--resume_from_checkpoint", "latest"))
    for part in ("generator_model", "discriminator"):
        a = load_file(full / part / "diffusion_pytorch_model.safetensors")
        b = load_file(resumed / part / "diffusion_pytorch_model.safetensors")
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=f"{part}.{name}")


@pytest.mark.parametrize("changed", [("--generator_upsampling", "nearest"), ("--generator_channels", "24", "8")])
def test_resuming_with_other_model_flags_says_so_and_keeps_the_checkpoint(fresh_accelerator_state, tmp_path, changed):
    out = tmp_path / "gan"
    run(*tiny_args(out, "--max_train_steps", "3"))
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    before = (out / "checkpoint-3" / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"checkpoint-3 holds a different model than these flags build \(Error\(s\) in loading state_dict for DCGANGenerator: (Missing|size mismatch).*resume with the model flags the run was started with"):
        run(*tiny_args(out, *changed, "--max_train_steps", "6", "--resume_from_checkpoint", "latest"))
    assert (out / "checkpoint-3" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]


def test_diverged_run_names_the_step_and_keeps_the_last_checkpoint(fresh_accelerator_state, tmp_path):
    """Three good steps, then resumed with an absurd learning rate (the flags' rates replace the checkpoint's)."""
    out = tmp_path / "diverged"
    run(*tiny_args(out, "--max_train_steps", "3"))
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    lr = ("--generator_learning_rate", "1e30", "--discriminator_learning_rate", "1e30")
    with pytest.raises(train.TrainingDivergedError, match=r"the (discriminator|generator) loss stopped being finite at step (\d+).*(checkpoint-\d+): lower --(discriminator|generator)_learning_rate") as excinfo:
        run(*tiny_args(out, *lr, "--max_train_steps", "40", "--checkpointing_steps", "1", "--resume_from_checkpoint", "latest"))
    step, checkpoint = re.search(r"at step (\d+).*(checkpoint-\d+)", str(excinfo.value)).groups()
    assert int(step) >= 4 and checkpoint == f"checkpoint-{int(step) - 1}"
    weights = load_file(out / checkpoint / "model.safetensors")
    generator, _ = train.build_models(train.parse_args(tiny_args(out)), None)
    generator.load_state_dict(weights)
    assert all(torch.isfinite(t).all() for t in weights.values())
