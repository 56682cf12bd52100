"""VectorQuantizer against the formulas of van den Oord et al. (2017), its codebook-health options, the Gumbel
quantizer, and VQVAEModel as diffusers' VQModel inside LDMPipeline."""

import pytest
import torch
from diffusers import DDIMScheduler, LDMPipeline, UNet2DModel

from hf_genzoo import GumbelQuantizer, VectorQuantizer, VQVAEModel
from hf_genzoo.models import nearest_codes


def tiny_vqvae(**kwargs):
    config = dict(block_out_channels=(8, 16), latent_channels=4, num_vq_embeddings=16, sample_size=16, norm_num_groups=4)
    config.update(kwargs)
    torch.manual_seed(0)
    return VQVAEModel(**config)


def test_nearest_code_matrix_product_matches_the_broadcast_distance():
    torch.manual_seed(0)
    z, codebook = torch.randn(500, 8), torch.randn(64, 8)
    naive = (z[:, None, :] - codebook[None, :, :]).pow(2).sum(-1).argmin(1)
    assert torch.equal(nearest_codes(z, codebook), naive)


def test_loss_terms_and_gradient_paths_are_the_papers():
    """L_vq = ‖sg[z_e] − e‖² + β‖z_e − sg[e]‖²: the codebook term moves only the codes, the commitment term only
    the encoder output; the decoder-input gradient passes to z_e unchanged (straight-through)."""
    torch.manual_seed(0)
    beta = 0.25
    vq = VectorQuantizer(8, 3, beta=beta).train()
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = vq(z_e)
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    e_k = vq.embedding.weight.detach()[out.indices.flatten()]
    n = flat.numel()
    torch.testing.assert_close(out.codebook_loss, (flat - e_k).pow(2).sum() / n)
    torch.testing.assert_close(out.commitment_loss, (flat - e_k).pow(2).sum() / n)
    torch.testing.assert_close(out.quantized.detach().permute(0, 2, 3, 1).reshape(-1, 3), e_k)

    out.loss.backward()
    grad_z = beta * 2 * (flat - e_k) / n  # only β·commitment reaches z_e
    torch.testing.assert_close(z_e.grad.permute(0, 2, 3, 1).reshape(-1, 3), grad_z)
    grad_e = torch.zeros(8, 3).index_add_(0, out.indices.flatten(), 2 * (e_k - flat) / n)  # only the codebook term
    torch.testing.assert_close(vq.embedding.weight.grad, grad_e)

    vq.zero_grad()
    z_e.grad = None
    upstream = torch.randn(2, 3, 4, 4)
    (vq(z_e).quantized * upstream).sum().backward()
    torch.testing.assert_close(z_e.grad, upstream)  # straight-through: copied as is
    assert vq.embedding.weight.grad is None or vq.embedding.weight.grad.abs().max() == 0


def test_ema_update_is_the_smoothed_average_of_assigned_vectors():
    torch.manual_seed(0)
    decay, eps, K = 0.9, 1e-5, 4
    vq = VectorQuantizer(K, 2, use_ema=True, ema_decay=decay, ema_epsilon=eps).train()
    size0, sum0 = vq.ema_cluster_size.clone(), vq.ema_embed_sum.clone()
    z_e = torch.randn(1, 2, 3, 3)
    out = vq(z_e)
    flat, idx = z_e.permute(0, 2, 3, 1).reshape(-1, 2), out.indices.flatten()
    size = decay * size0 + (1 - decay) * torch.bincount(idx, minlength=K).float()
    embed_sum = decay * sum0 + (1 - decay) * torch.zeros(K, 2).index_add_(0, idx, flat)
    smoothed = (size + eps) / (size.sum() + K * eps) * size.sum()
    torch.testing.assert_close(vq.embedding.weight, embed_sum / smoothed[:, None])
    assert not vq.embedding.weight.requires_grad
    torch.testing.assert_close(out.loss, 0.25 * out.commitment_loss)  # no codebook term with EMA


def test_ema_code_that_no_vector_picks_stays_put():
    """From the initial counts of one, an unused code keeps its place (up to the Laplace smoothing) instead of
    blowing up to |e_k| / ε and never being picked again."""
    vq = VectorQuantizer(4, 2, use_ema=True, ema_decay=0.9).train()
    with torch.no_grad():
        vq.embedding.weight[3] = vq.ema_embed_sum[3] = torch.tensor([5.0, 5.0])
    for _ in range(3):
        out = vq(torch.randn(1, 2, 4, 4) * 0.1)
        assert not (out.indices == 3).any()
    torch.testing.assert_close(vq.embedding.weight[3], torch.tensor([5.0, 5.0]), rtol=0.1, atol=0)


def test_kmeans_init_puts_codes_on_the_clusters():
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    points = centres.repeat_interleave(64, 0) + 0.1 * torch.randn(256, 2)
    vq = VectorQuantizer(4, 2, kmeans_init=True).train()
    vq(points.T.reshape(1, 2, 16, 16))
    distance = torch.cdist(centres, vq.embedding.weight.detach()).min(dim=1).values
    assert distance.max() < 0.5, distance
    assert bool(vq.initialized)


def test_dead_codes_restart_and_usage_is_measured_over_the_window():
    """Codes far from the data are never chosen; with restarts they are re-seeded from encoder outputs after
    `dead_code_steps` batches, without them they stay dead."""
    torch.manual_seed(0)
    z = torch.randn(1, 2, 8, 8) * 0.1

    def run(dead_code_steps):
        vq = VectorQuantizer(16, 2, dead_code_steps=dead_code_steps, usage_window=5).train()
        with torch.no_grad():
            vq.embedding.weight.copy_(torch.randn(16, 2) + 100.0)  # all far away...
            vq.embedding.weight[0] = 0.0  # ...but one
        stats = []
        for _ in range(5):
            vq(z + 0.01 * torch.randn_like(z))
            stats.append(vq.health.stats())
        return stats

    without, with_restart = run(0), run(2)
    assert without[-1] == {"codebook_usage": 1 / 16, "perplexity": pytest.approx(1.0), "dead_codes": 15}
    assert with_restart[-1]["codebook_usage"] > 0.9 and with_restart[-1]["dead_codes"] <= 1
    assert with_restart[-1]["perplexity"] > 5


def test_cosine_codes_are_unit_vectors():
    vq = VectorQuantizer(8, 4, cosine=True).train()
    out = vq(torch.randn(2, 4, 3, 3))
    torch.testing.assert_close(out.quantized.norm(dim=1), torch.ones(2, 3, 3))


def test_gumbel_quantizer_is_relaxed_in_training_and_hard_in_eval():
    torch.manual_seed(0)
    gq = GumbelQuantizer(8, 4, temperature=0.5)
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = gq.train()(z_e, generator=torch.Generator().manual_seed(0))
    out.quantized.sum().backward()
    assert z_e.grad.abs().sum() > 0 and out.loss >= 0  # KL to the uniform prior is non-negative
    hard = gq.eval()(z_e)
    torch.testing.assert_close(hard.quantized, gq.indices_to_latents(hard.indices))


def test_model_round_trip_keeps_codes_and_health(tmp_path):
    model = tiny_vqvae(dead_code_steps=3, use_ema=True, kmeans_init=True).train()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    for _ in range(3):
        model.loss(x)
    model.save_pretrained(tmp_path)
    loaded = VQVAEModel.from_pretrained(tmp_path).eval()
    model.eval()
    assert torch.equal(loaded.encode_indices(x), model.encode_indices(x))
    assert loaded.codebook_health() == model.codebook_health()
    torch.testing.assert_close(loaded(x).sample, model(x).sample)


def test_vq_model_interface_and_bad_indices():
    model = tiny_vqvae(vq_embed_dim=6).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    h = model.encode(x).latents
    assert h.shape == (2, 6, 8, 8) == (2, *model.latent_shape)
    z_q, loss, indices = model.quantize(h)
    torch.testing.assert_close(model.decode(z_q, force_not_quantize=True).sample, model.decode(h).sample)
    torch.testing.assert_close(model.decode_indices(indices), model.decode(h).sample)
    with pytest.raises(ValueError, match=r"\[0, 16\).*K = 16"):
        model.indices_to_latents(torch.full((1, 8, 8), 16))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        model.indices_to_latents(torch.full((1, 8, 8), -1))
    with pytest.raises(ValueError, match="quantizer must be 'vq' or 'gumbel'"):
        VQVAEModel(quantizer="fsq")
    with pytest.raises(ValueError, match=r"latents of shape \(batch, 6, h, w\)"):
        model.decode(torch.zeros(1, 4, 8, 8))


def test_runs_inside_diffusers_ldm_pipeline_and_reloads(tmp_path):
    vqvae = tiny_vqvae().eval()
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1,
    )
    pipe = LDMPipeline(vqvae=vqvae, unet=unet, scheduler=DDIMScheduler(num_train_timesteps=50))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 16, 16, 3)
    pipe.save_pretrained(tmp_path)
    reloaded = LDMPipeline.from_pretrained(tmp_path)
    assert isinstance(reloaded.vqvae, VQVAEModel)
    reloaded.set_progress_bar_config(disable=True)
    again = reloaded(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert (again == images).all()


# ---- the prior and VQVAEPipeline -------------------------------------------------------------------------------


def tiny_pipeline(num_classes=None, num_codes=16, grid=(8, 8)):
    from hf_genzoo import VQVAEPipeline
    from hf_genzoo.models.code_prior import build_code_prior

    torch.manual_seed(0)
    prior = build_code_prior(num_codes, grid, num_classes=num_classes, n_layer=1, n_head=2, n_embd=16).eval()
    return VQVAEPipeline(vqvae=tiny_vqvae(num_vq_embeddings=16).eval(), prior=prior)


def test_pipeline_samples_codes_reproducibly_and_round_trips(hub, hub_cache, tmp_path):
    from hf_genzoo import VQVAEPipeline

    pipe = tiny_pipeline(num_classes=3)
    pipe.set_progress_bar_config(disable=True)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    codes = pipe.sample_codes(4, g(), class_labels=[0, 1, 2, 0])
    assert codes.shape == (4, 8, 8) and codes.max() < 16  # start/class tokens are never sampled
    assert torch.equal(codes, pipe.sample_codes(4, g(), class_labels=[0, 1, 2, 0]))
    top1 = pipe.sample_codes(2, g(), top_k=1, class_labels=1)
    assert torch.equal(top1[0], top1[1])  # top-1 is greedy: the same codes for the same class
    images = pipe(batch_size=4, generator=g(), class_labels=[0, 1, 2, 0], output_type="pt").images
    assert images.shape == (4, 3, 16, 16)

    pipe.save_pretrained(tmp_path / "vq")
    pipe.push_to_hub("genzoo-tests/vqvae")
    for source in (tmp_path / "vq", "genzoo-tests/vqvae"):
        loaded = VQVAEPipeline.from_pretrained(source)
        again = loaded(batch_size=4, generator=g(), class_labels=[0, 1, 2, 0], output_type="pt").images
        torch.testing.assert_close(again, images)
    x = images * 2 - 1
    assert torch.equal(loaded.encode(x), pipe.vqvae.encode_indices(x))
    torch.testing.assert_close(loaded.reconstruct(x, output_type="pt"), loaded.decode(loaded.encode(x), output_type="pt"))


def test_code_likelihood_is_the_priors_cross_entropy():
    from hf_genzoo.models.code_prior import codes_to_tokens

    pipe = tiny_pipeline()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    codes = pipe.vqvae.encode_indices(x)
    tokens = codes_to_tokens(codes, pipe.layout)
    logp = torch.log_softmax(pipe.prior(input_ids=tokens).logits, dim=-1)  # (B, 65, V)
    by_hand = -sum(logp[:, i, tokens[:, i + 1]].diagonal() for i in range(64))  # Σ_i −ln p(code_i | <s>, code_<i)
    out = pipe.code_likelihood(x)
    torch.testing.assert_close(out["nats_per_code"], by_hand / 64)
    torch.testing.assert_close(out["bits_per_dim"], by_hand / (3 * 16 * 16 * torch.log(torch.tensor(2.0))))


def test_prior_that_does_not_fit_the_codebook_is_refused_at_load_time():
    from hf_genzoo import VQVAEPipeline
    from hf_genzoo.models.code_prior import build_code_prior

    vqvae = tiny_vqvae(num_vq_embeddings=16)
    with pytest.raises(ValueError, match=r"models 32 codes .* K = 16"):
        VQVAEPipeline(vqvae=vqvae, prior=build_code_prior(32, (8, 8), n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match=r"4×4 grid.*8×8 grid: 65 tokens"):
        VQVAEPipeline(vqvae=vqvae, prior=build_code_prior(16, (4, 4), n_layer=1, n_head=2, n_embd=16))
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(ValueError, match="build_code_prior"):
        VQVAEPipeline(vqvae=vqvae, prior=GPT2LMHeadModel(GPT2Config(vocab_size=17, n_positions=65, n_layer=1, n_head=2, n_embd=16)))


def test_epsilon_sampling_never_draws_a_code_below_epsilon():
    """ε-sampling: every drawn code had probability ≥ ε given the codes before it (teacher-forced through the
    prior, softmax over the K codes, since start tokens are never sampled), or was the most likely code where
    none reached ε; without it, less likely codes are drawn too."""
    from hf_genzoo.models.code_prior import codes_to_tokens

    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    epsilon, K = 0.08, 16  # a near-uniform random prior puts many of its 16 codes under 0.08

    def drawn_and_best(codes):
        tokens = codes_to_tokens(codes, pipe.layout)
        probabilities = pipe.prior(input_ids=tokens[:, :-1]).logits[..., :K].float().softmax(-1)
        return probabilities.gather(-1, tokens[:, 1:, None]).squeeze(-1), probabilities.amax(-1)

    with torch.no_grad():
        drawn, best = drawn_and_best(pipe.sample_codes(8, torch.Generator().manual_seed(0), epsilon_cutoff=epsilon))
        plain, plain_best = drawn_and_best(pipe.sample_codes(8, torch.Generator().manual_seed(0)))
    assert ((drawn >= epsilon - 1e-5) | (drawn >= best - 1e-6)).all()
    assert ((plain < epsilon) & (plain < plain_best - 1e-6)).any()
    with pytest.raises(ValueError, match=r"epsilon_cutoff must be in \(0, 1\) or None, got 1.5"):
        pipe(batch_size=1, epsilon_cutoff=1.5)


def test_bad_sampling_inputs_name_what_is_allowed():
    unconditional, conditional = tiny_pipeline(), tiny_pipeline(num_classes=3)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(batch_size=1, class_labels=0)
    with pytest.raises(ValueError, match=r"class_labels in \[0, 3\)"):
        conditional(batch_size=1)
    with pytest.raises(ValueError, match=r"\[0, 3\), got values from 3 to 3"):
        conditional(batch_size=1, class_labels=3)
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 16\]"):
        unconditional(batch_size=1, top_k=17)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        unconditional(batch_size=1, temperature=0)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        unconditional.decode(torch.full((1, 8, 8), 99))
