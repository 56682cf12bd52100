"""LatentDiffusionPipeline on tiny components: the same images as diffusers' StableDiffusionPipeline and LDMPipeline
from one saved folder, classifier-free guidance for text and classes, the latent bound, inversion, the Hub round trip
and the errors a user meets."""

import logging

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, LDMPipeline, StableDiffusionPipeline, UNet2DModel

import hf_genzoo  # noqa: F401  (diffusers' loader finds our classes through it)
from hf_genzoo import GenZooDDIMScheduler, LatentDiffusionPipeline, VAEModel, VQVAEModel

from tiny_components import tiny_text_to_image_components, tiny_tokenizer, tiny_text_encoder, tiny_unet

PROMPTS = ["a small red circle at the top left", "a large blue square at the bottom and a green triangle"]


def our_vae(**kwargs):
    torch.manual_seed(1)
    return VAEModel(block_out_channels=(8, 16), norm_num_groups=4, latent_channels=4, sample_size=16, scaling_factor=0.8, **kwargs).eval()


def text_pipeline(vae=None, scheduler=None):
    components = tiny_text_to_image_components()
    components["vae"] = vae or our_vae()
    components["scheduler"] = scheduler or GenZooDDIMScheduler.from_config(components["scheduler"].config)
    pipe = LatentDiffusionPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def class_unet(num_classes=3, in_channels=4):
    torch.manual_seed(2)
    return UNet2DModel(
        sample_size=8, in_channels=in_channels, out_channels=in_channels, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=8, num_class_embeds=None if num_classes is None else num_classes + 1,
    ).eval()


def generate(pipe, *args, seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", 4)
    return pipe(*args, generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs).images


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0])
def test_saved_text_folder_gives_the_same_images_in_stock_stable_diffusion(tmp_path, guidance_scale):
    pipe = text_pipeline()
    ours = generate(pipe, PROMPTS, guidance_scale=guidance_scale, num_images_per_prompt=2)
    pipe.save_pretrained(tmp_path)
    stock = StableDiffusionPipeline.from_pretrained(tmp_path, safety_checker=None)
    stock.set_progress_bar_config(disable=True)
    assert isinstance(stock.vae, VAEModel) and isinstance(stock.scheduler, GenZooDDIMScheduler)
    theirs = generate(stock, PROMPTS, guidance_scale=guidance_scale, num_images_per_prompt=2)
    assert ours.shape == (4, 16, 16, 3)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    reloaded = LatentDiffusionPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(generate(reloaded, PROMPTS, guidance_scale=guidance_scale, num_images_per_prompt=2), ours, atol=1e-6)


def test_stock_components_and_schedulers_give_diffusers_images():
    """diffusers' own AutoencoderKL and DDIMScheduler as components: the same images as StableDiffusionPipeline."""
    components = tiny_text_to_image_components()
    ours = LatentDiffusionPipeline(**components)
    stock = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    for p in (ours, stock):
        p.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(
        generate(ours, PROMPTS, guidance_scale=3.0, negative_prompt=["a cat", "a dog"]),
        generate(stock, PROMPTS, guidance_scale=3.0, negative_prompt=["a cat", "a dog"]),
        atol=1e-6,
    )


def test_latents_are_scaled_where_diffusers_scales_them():
    """z_0 = scaling_factor · mode(q(z|x)) after encoding; decode divides by it."""
    pipe = text_pipeline()
    x = torch.rand(2, 3, 16, 16)  # [0, 1], diffusers' convention
    z = pipe.encode_images(x)
    expected = pipe.vae.encode(x * 2 - 1).latent_dist.mode() * 0.8
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(pipe.decode_latents(z), pipe.vae.decode(expected / 0.8).sample)


def test_unconditional_vq_folder_gives_the_same_images_in_stock_ldm_pipeline(tmp_path):
    torch.manual_seed(3)
    vqvae = VQVAEModel(block_out_channels=(8, 16), norm_num_groups=4, latent_channels=4, num_vq_embeddings=16, sample_size=16, scaling_factor=1.3).eval()
    scheduler = GenZooDDIMScheduler(num_train_timesteps=100, clip_sample=False, timestep_spacing="trailing")
    pipe = LatentDiffusionPipeline(vae=None, vqvae=vqvae, unet=class_unet(num_classes=None), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    ours = generate(pipe, batch_size=3, guidance_scale=1.0)
    pipe.save_pretrained(tmp_path)
    stock = LDMPipeline.from_pretrained(tmp_path)
    stock.set_progress_bar_config(disable=True)
    assert isinstance(stock.vqvae, VQVAEModel)
    theirs = stock(batch_size=3, generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np").images
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_class_conditional_guidance_is_ho_and_salimans():
    """ε̂ = ε(z, ∅) + s (ε(z, c) − ε(z, ∅)), with ∅ the last class embedding: one guided DDIM step checked by hand."""
    scheduler = GenZooDDIMScheduler(num_train_timesteps=100, clip_sample=False, timestep_spacing="trailing")
    pipe = LatentDiffusionPipeline(vae=our_vae(), unet=class_unet(3), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    z_T = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    out = pipe(class_labels=[0, 2], guidance_scale=3.0, latents=z_T, num_inference_steps=1, output_type="latent").images

    scheduler.set_timesteps(1)
    t = scheduler.timesteps[0]
    with torch.no_grad():
        cond = pipe.unet(z_T, t, class_labels=torch.tensor([0, 2])).sample
        null = pipe.unet(z_T, t, class_labels=torch.tensor([3, 3])).sample
    expected = scheduler.step(null + 3.0 * (cond - null), t, z_T).prev_sample
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # unconditional sampling of a class-conditional model uses ∅
    assert pipe(batch_size=2, latents=z_T, num_inference_steps=1, output_type="latent").images.shape == (2, 4, 8, 8)


def test_likelihood_is_a_bound_on_the_latents_in_bits_per_latent_dimension():
    pipe = text_pipeline(scheduler=GenZooDDIMScheduler(num_train_timesteps=20, clip_sample=False))
    images = generate(pipe, PROMPTS, guidance_scale=1.0)  # numpy in [0, 1]
    bits = pipe.likelihood(images, prompt=PROMPTS, generator=torch.Generator().manual_seed(0))
    assert bits.shape == (2,) and torch.isfinite(bits).all()
    again = pipe.likelihood(images, prompt=PROMPTS, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(bits, again)
    # the bound of the latents only: the same z_0 under a first stage with another decoder gives the same number
    other = text_pipeline(scheduler=GenZooDDIMScheduler(num_train_timesteps=20, clip_sample=False))
    torch.nn.init.zeros_(other.vae.decoder.conv_out.weight if hasattr(other.vae.decoder, "conv_out") else next(other.vae.decoder.parameters()))
    torch.testing.assert_close(other.likelihood(images, prompt=PROMPTS, generator=torch.Generator().manual_seed(0)), bits)


def test_invert_then_reconstruct_round_trips_the_latents():
    pipe = text_pipeline(scheduler=GenZooDDIMScheduler(num_train_timesteps=20, clip_sample=False, timestep_spacing="trailing"))
    images = torch.rand(2, 3, 16, 16)
    z_T = pipe.invert(images, prompt=PROMPTS, num_inference_steps=20)
    assert z_T.shape == (2, 4, 8, 8)
    recon = pipe.reconstruct(images, prompt=PROMPTS, num_inference_steps=20, output_type="pt").images
    direct = (pipe.decode_latents(pipe.encode_images(images)) / 2 + 0.5).clamp(0, 1)
    assert (recon - direct).abs().max() < 0.05


def test_push_to_hub_and_load_by_repo_id(hub, hub_cache):
    pipe = text_pipeline()
    pipe.push_to_hub("tester/tiny-ldm")
    files = hub.list_files("tester/tiny-ldm")
    assert {"model_index.json", "README.md", "vae/config.json", "tokenizer/tokenizer.json", "text_encoder/config.json"} <= set(files)
    loaded = LatentDiffusionPipeline.from_pretrained("tester/tiny-ldm")
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(generate(loaded, PROMPTS[0], guidance_scale=2.0), generate(pipe, PROMPTS[0], guidance_scale=2.0), atol=1e-6)
    card = hub.read_file("tester/tiny-ldm", "README.md").decode()
    assert "import hf_genzoo" in card and "StableDiffusionPipeline" in card


# ---- bad input ---------------------------------------------------------------------------------------------------


def test_bad_inputs_are_clear_errors():
    pipe = text_pipeline()
    with pytest.raises(ValueError, match="not both"):
        pipe(PROMPTS[0], class_labels=1)
    with pytest.raises(ValueError, match="multiples of 2"):
        pipe(PROMPTS[0], height=15, width=16)
    with pytest.raises(ValueError, match="give a prompt"):
        pipe()
    uncond = LatentDiffusionPipeline(vae=our_vae(), unet=class_unet(None), scheduler=GenZooDDIMScheduler())
    with pytest.raises(ValueError, match="not text-conditioned: it is unconditional"):
        uncond("a red circle")
    with pytest.raises(ValueError, match="in_channels=3 differs from the first stage's latent channels \\(4"):
        LatentDiffusionPipeline(vae=our_vae(), unet=class_unet(None, in_channels=3), scheduler=GenZooDDIMScheduler())
    with pytest.raises(ValueError, match="exactly one first stage"):
        LatentDiffusionPipeline(vae=None, unet=class_unet(None), scheduler=GenZooDDIMScheduler())
    with pytest.raises(ValueError, match="latent_type='vector'"):
        LatentDiffusionPipeline(vae=VAEModel(latent_type="vector", block_out_channels=(8, 16), norm_num_groups=4, sample_size=16), unet=class_unet(None), scheduler=GenZooDDIMScheduler())
    with pytest.raises(ValueError, match="multiples of 2"):
        pipe.encode_images(torch.rand(1, 3, 15, 16))


def test_a_prompt_longer_than_the_tokenizer_is_truncated_with_a_warning(caplog):
    pipe = text_pipeline()
    long_prompt = " ".join(["a red circle and"] * 8)
    with caplog.at_level(logging.WARNING):
        generate(pipe, long_prompt, guidance_scale=1.0, num_inference_steps=1)
    assert "truncated" in caplog.text and "16 tokens" in caplog.text
