"""AutoencoderPipeline for every model of the family, and our VAE inside a stock StableDiffusionPipeline."""

import json

import numpy as np
import PIL.Image
import pytest
import torch

from hf_genzoo import AutoencoderModel, AutoencoderPipeline, VAEModel
from hf_genzoo.pipelines.pipeline_autoencoder import slerp

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=16)
MODELS = {
    "vae": lambda: VAEModel(**TINY, latent_channels=4),
    "vae_vector": lambda: VAEModel(**TINY, latent_channels=2, latent_type="vector"),
    "ae": lambda: AutoencoderModel(**TINY),
    "denoising_ae": lambda: AutoencoderModel(**TINY, corruption="gaussian"),
    "sparse_ae": lambda: AutoencoderModel(**TINY, sparsity_weight=0.1),
    "masked_ae": lambda: AutoencoderModel(**TINY, corruption="patch_mask"),
}


def make_pipeline(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    if isinstance(model, AutoencoderModel):
        model.fit_latent_gaussian(model.encode(torch.rand(64, 3, 16, 16) * 2 - 1).latents)
    return AutoencoderPipeline(model=model)


def images(batch=2):
    return torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_reconstructs_samples_and_round_trips(name, tmp_path):
    pipe = make_pipeline(name)
    x = images()
    recon = pipe.reconstruct(x, output_type="pt").images
    assert recon.shape == (2, 3, 16, 16) and recon.min() >= 0 and recon.max() <= 1
    samples = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert samples.shape == (3, 16, 16, 3)
    pil = pipe(batch_size=2, generator=torch.Generator().manual_seed(0)).images
    assert len(pil) == 2 and isinstance(pil[0], PIL.Image.Image) and pil[0].size == (16, 16)

    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "AutoencoderPipeline" and index["model"][0].startswith("hf_genzoo")
    assert (tmp_path / "model" / "diffusion_pytorch_model.safetensors").exists()
    card = (tmp_path / "README.md").read_text()
    assert "library_name: hf_genzoo" in card and "import hf_genzoo" in card
    loaded = AutoencoderPipeline.from_pretrained(tmp_path)
    assert type(loaded.model) is type(pipe.model)
    torch.testing.assert_close(loaded.reconstruct(x, output_type="pt").images, recon, rtol=0, atol=0)
    again = loaded(batch_size=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_array_equal(again, samples)


def test_encode_decode_and_input_types():
    pipe = make_pipeline("vae")
    x = images()
    latents = pipe.encode(x)
    torch.testing.assert_close(latents, pipe.model.encode(x).latent_dist.mean)
    as_pil = pipe.decode(latents).images
    assert len(as_pil) == 2
    # PIL and numpy inputs give the same latents as the tensor they came from (up to uint8 rounding)
    uint8 = ((x[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    from_pil = pipe.encode(PIL.Image.fromarray(uint8))
    from_np = pipe.encode(uint8)
    torch.testing.assert_close(from_pil, from_np)
    torch.testing.assert_close(from_pil, pipe.encode(torch.from_numpy(uint8).permute(2, 0, 1) / 127.5 - 1))


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_interpolation_ends_at_the_inputs(method):
    pipe = make_pipeline("vae")
    a, b = images()
    frames = pipe.interpolate(a, b, num_steps=5, method=method, output_type="pt").images
    assert frames.shape == (5, 3, 16, 16)
    ends = pipe.reconstruct(torch.stack([a, b]), output_type="pt").images
    torch.testing.assert_close(frames[[0, -1]], ends, atol=1e-5, rtol=0)


def test_slerp_keeps_the_norm_of_equal_norm_ends():
    a = torch.tensor([[3.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 3.0, 0.0]])
    path = slerp(a, b, torch.linspace(0, 1, 7))
    torch.testing.assert_close(path.norm(dim=1), torch.full((7,), 3.0))
    torch.testing.assert_close(path[3], torch.tensor([3 / 2**0.5, 3 / 2**0.5, 0.0]))


def test_bad_arguments():
    pipe = make_pipeline("vae")
    with pytest.raises(ValueError, match="output_type must be one of .*got 'latent'"):
        pipe(output_type="latent")
    with pytest.raises(ValueError, match="num_steps must be ≥ 2"):
        pipe.interpolate(images()[0], images()[1], num_steps=1)
    with pytest.raises(ValueError, match="method must be 'slerp' or 'linear', got 'cubic'"):
        pipe.interpolate(images()[0], images()[1], method="cubic")
    with pytest.raises(ValueError, match=r"expected images with 3 channel\(s\)"):
        pipe.reconstruct(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"'./no/such/folder' is neither a saved folder \(none at /.*/no/such/folder\) nor a Hub repo id"):
        AutoencoderPipeline.from_pretrained("./no/such/folder")


def tiny_stable_diffusion(vae, tmp_path):
    """A random StableDiffusionPipeline: tiny UNet2DConditionModel, CLIPTextModel and a tokenizer built offline."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=16)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=4, attention_head_dim=2,
    )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler(clip_sample=False, steps_offset=1), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def test_our_vae_inside_stable_diffusion_runs_saves_and_reloads(tmp_path):
    from diffusers import StableDiffusionPipeline

    torch.manual_seed(0)
    vae = VAEModel(**TINY, latent_channels=4, scaling_factor=0.5)
    pipe = tiny_stable_diffusion(vae, tmp_path)
    assert pipe.vae_scale_factor == 2  # from our config.block_out_channels
    kwargs = dict(num_inference_steps=2, height=16, width=16, output_type="np")
    first = pipe("a red circle", generator=torch.Generator().manual_seed(0), **kwargs).images
    assert first.shape == (1, 16, 16, 3) and np.isfinite(first).all()
    pipe.save_pretrained(tmp_path / "sd")
    index = json.loads((tmp_path / "sd" / "model_index.json").read_text())
    assert index["vae"] == ["hf_genzoo.models.vae", "VAEModel"]
    reloaded = StableDiffusionPipeline.from_pretrained(tmp_path / "sd")
    assert isinstance(reloaded.vae, VAEModel) and reloaded.vae.config.scaling_factor == 0.5
    again = reloaded("a red circle", generator=torch.Generator().manual_seed(0), **kwargs).images
    np.testing.assert_array_equal(again, first)


# ---- anomaly scores ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ae", "denoising_ae", "vae"])
def test_reconstruction_anomaly_score_is_the_per_image_error_of_reconstruct(name):
    pipe = make_pipeline(name)
    x = images(3)
    recon = pipe.reconstruct(x, output_type="pt").images * 2 - 1  # [0, 1] → [-1, 1]
    expected = (recon.clamp(-1, 1) - x.clamp(-1, 1)).pow(2).flatten(1).mean(1)
    scores = pipe.anomaly_score(x, batch_size=2)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-4)
    # PIL and numpy inputs give the scores of the same pixels as a tensor
    as_numpy = ((x.permute(0, 2, 3, 1) + 1) / 2).numpy()
    torch.testing.assert_close(pipe.anomaly_score(as_numpy), scores, atol=1e-5, rtol=1e-4)
    pil = [PIL.Image.fromarray((a * 255).round().astype(np.uint8)) for a in as_numpy]
    torch.testing.assert_close(pipe.anomaly_score(pil), pipe.anomaly_score(torch.from_numpy((np.stack([np.asarray(p) for p in pil]) / 255).astype(np.float32)).permute(0, 3, 1, 2) * 2 - 1))


def test_reconstruction_score_ranks_what_the_model_cannot_reconstruct_higher():
    # a VAE trained a few steps on one flat image reconstructs it and not a noisy copy of it
    torch.manual_seed(0)
    model = VAEModel(**TINY, latent_channels=4, likelihood="gaussian")
    clean = torch.full((8, 3, 16, 16), -0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        model(clean, return_loss=True).loss.backward()
        optimizer.step()
    pipe = AutoencoderPipeline(model=model.eval())
    noisy = clean[:1] + 0.8 * torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    scores = pipe.anomaly_score(torch.cat([clean[:1], noisy.clamp(-1, 1)]))
    assert scores[1] > 10 * scores[0]
    elbo = pipe.anomaly_score(torch.cat([clean[:1], noisy.clamp(-1, 1)]), method="elbo", num_samples=4)
    assert elbo[1] > elbo[0]


def test_elbo_and_iwae_scores_are_the_negative_bounds():
    from hf_genzoo.metrics import iwae_bound, vae_elbo

    pipe = make_pipeline("vae")
    x = images(3)
    elbo = pipe.anomaly_score(x, method="elbo", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = -vae_elbo(pipe.model, x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(elbo, expected)
    iwae = pipe.anomaly_score(x, method="iwae", num_samples=5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = -iwae_bound(pipe.model, x, 5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(iwae, expected)
    assert (iwae <= pipe.anomaly_score(x, method="elbo", num_samples=64, generator=torch.Generator().manual_seed(1)) + 1.0).all()


def test_anomaly_score_refuses_what_the_model_cannot_do():
    ae, vae = make_pipeline("ae"), make_pipeline("vae")
    with pytest.raises(ValueError, match="method='elbo' is a VAE's likelihood bound; this AutoencoderModel has none"):
        ae.anomaly_score(images(), method="elbo")
    with pytest.raises(ValueError, match="method must be 'reconstruction', 'elbo' or 'iwae', got 'mse'"):
        vae.anomaly_score(images(), method="mse")
    with pytest.raises(ValueError, match="num_samples must be ≥ 1, got 0"):
        vae.anomaly_score(images(), method="iwae", num_samples=0)
    with pytest.raises(ValueError, match="'reconstruction' takes none"):
        vae.anomaly_score(images(), num_samples=4)
