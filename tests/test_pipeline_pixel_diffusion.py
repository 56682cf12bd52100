"""PixelDiffusionPipeline with a tiny UNet2DModel: sampling (against diffusers' DDPMPipeline), classifier-free guidance
(against the formula), the variational bound, DDIM inversion, save/load by folder and by Hub repo id, bad input."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from hf_genzoo.pipelines.pipeline_pixel_diffusion import PixelDiffusionPipeline
from hf_genzoo.schedulers import GenZooDDIMScheduler, GenZooDDPMScheduler

T = 20  # num_train_timesteps of the tiny schedulers
SCHEDULERS = {
    "genzoo_ddpm": lambda **kw: GenZooDDPMScheduler(num_train_timesteps=T, **kw),
    "diffusers_ddim": lambda **kw: DDIMScheduler(num_train_timesteps=T, **kw),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_unet(seed=0, output_scale=1.0, **kwargs) -> UNet2DModel:
    torch.manual_seed(seed)
    unet = UNet2DModel(
        block_out_channels=(4, 8),
        norm_num_groups=4,
        sample_size=8,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        **kwargs,
    ).eval()
    with torch.no_grad():  # a smaller, smoother ε_θ (what a trained model is closer to than a random one)
        unet.conv_out.weight.mul_(output_scale)
        unet.conv_out.bias.mul_(output_scale)
    return unet


def make_pipeline(scheduler="genzoo_ddpm", unet=None, **scheduler_kwargs) -> PixelDiffusionPipeline:
    pipe = PixelDiffusionPipeline(unet=unet or tiny_unet(), scheduler=SCHEDULERS[scheduler](**scheduler_kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def conditional_pipeline(**scheduler_kwargs) -> PixelDiffusionPipeline:
    """2 classes + the null label 2."""
    scheduler = GenZooDDIMScheduler(num_train_timesteps=T, timestep_spacing="trailing", **scheduler_kwargs)
    pipe = PixelDiffusionPipeline(unet=tiny_unet(num_class_embeds=3), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def images(batch=2, low=-1.0, high=1.0):
    return torch.rand(batch, 3, 8, 8, generator=g(1)) * (high - low) + low


# ---- sampling ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_sampling_shapes_determinism_and_output_types(scheduler):
    pipe = make_pipeline(scheduler)
    pt = pipe(batch_size=2, generator=g(), num_inference_steps=4, output_type="pt").images
    assert pt.shape == (2, 3, 8, 8) and pt.min() >= 0 and pt.max() <= 1
    torch.testing.assert_close(pipe(2, g(), 4, output_type="pt").images, pt, rtol=0, atol=0)
    assert not torch.equal(pipe(2, g(1), 4, output_type="pt").images, pt)
    np_images = pipe(batch_size=2, generator=g(), num_inference_steps=4, output_type="np").images
    assert np_images.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(np_images, pt.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    pil = pipe(batch_size=2, generator=g(), num_inference_steps=4).images
    assert len(pil) == 2 and isinstance(pil[0], PIL.Image.Image) and pil[0].size == (8, 8)
    as_tuple = pipe(batch_size=2, generator=g(), num_inference_steps=4, output_type="pt", return_dict=False)
    torch.testing.assert_close(as_tuple[0], pt, rtol=0, atol=0)


def test_eta_reaches_ddim_and_is_left_out_for_ddpm():
    ddim = make_pipeline("diffusers_ddim")
    deterministic = ddim(2, g(), 4, eta=0.0, output_type="pt").images
    assert not torch.equal(ddim(2, g(), 4, eta=1.0, output_type="pt").images, deterministic)
    ddpm = make_pipeline("genzoo_ddpm")
    assert "eta" not in ddpm.prepare_extra_step_kwargs(g(), 1.0)
    ddpm(1, g(), 2, eta=1.0, output_type="pt")  # DDPM's step takes no eta: not passed


@pytest.mark.parametrize("ours", [False, True])
def test_same_images_as_diffusers_ddpm_pipeline(ours):
    unet = tiny_unet()
    reference = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=T))
    reference.set_progress_bar_config(disable=True)
    expected = reference(batch_size=2, generator=g(3), num_inference_steps=5, output_type="np").images
    scheduler = GenZooDDPMScheduler.from_config(reference.scheduler.config) if ours else reference.scheduler
    pipe = PixelDiffusionPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, generator=g(3), num_inference_steps=5, output_type="np").images
    np.testing.assert_allclose(images, expected, rtol=0, atol=1e-5 if ours else 0)


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_other_prediction_types(prediction_type):
    pipe = make_pipeline("genzoo_ddpm", prediction_type=prediction_type)
    assert torch.isfinite(pipe(2, g(), 3, output_type="pt").images).all()
    assert torch.isfinite(pipe.likelihood(images(), num_sampled_timesteps=2, generator=g())).all()


# ---- class-conditional sampling and classifier-free guidance ----------------------------------------


def test_guidance_scale_one_is_the_plain_conditional_model():
    pipe = conditional_pipeline()
    labels = torch.tensor([1, 0])
    out = pipe(2, g(), 3, class_labels=labels, guidance_scale=1.0, output_type="pt").images

    scheduler = GenZooDDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(3)
    x = randn_tensor((2, 3, 8, 8), generator=g(), dtype=torch.float32)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(pipe.unet(x, t, class_labels=labels).sample, t, x).prev_sample
    torch.testing.assert_close(out, pipe.postprocess(x, "pt"), rtol=0, atol=1e-6)
    # one label for all images
    torch.testing.assert_close(
        pipe(2, g(), 3, class_labels=1, output_type="pt").images,
        pipe(2, g(), 3, class_labels=[1, 1], output_type="pt").images,
    )
    # no labels: the null label 2 for every image
    unconditional = pipe(2, g(), 3, output_type="pt").images
    assert not torch.equal(unconditional, out)
    assert pipe.null_class_label == 2 and pipe.num_classes == 2


def test_classifier_free_guidance_matches_the_formula_for_one_step():
    pipe = conditional_pipeline()
    labels, s = torch.tensor([0, 1]), 3.0
    out = pipe(2, g(), num_inference_steps=1, class_labels=labels, guidance_scale=s, output_type="pt").images

    t = T - 1  # the one "trailing" step
    x = randn_tensor((2, 3, 8, 8), generator=g(), dtype=torch.float32)
    with torch.no_grad():
        eps_uncond = pipe.unet(x, t, class_labels=torch.tensor([2, 2])).sample
        eps_cond = pipe.unet(x, t, class_labels=labels).sample
    eps = eps_uncond + s * (eps_cond - eps_uncond)  # ε̂ = ε(x, ∅) + s (ε(x, c) − ε(x, ∅))
    scheduler = GenZooDDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(1)
    expected = pipe.postprocess(scheduler.step(eps, t, x).prev_sample, "pt")
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(out, pipe(2, g(), 1, class_labels=labels, output_type="pt").images, atol=1e-3)


def test_guidance_keeps_the_conditional_variance_channels():
    output = torch.randn(4, 6, 2, 2)  # (2B, 2C, H, W): ∅ first, then c
    guided = PixelDiffusionPipeline.classifier_free_guidance(output, 2.0, channels=3)
    torch.testing.assert_close(guided[:, :3], output[:2, :3] + 2.0 * (output[2:, :3] - output[:2, :3]))
    torch.testing.assert_close(guided[:, 3:], output[2:, 3:])


# ---- likelihood ------------------------------------------------------------------------------------


def test_likelihood_is_finite_bits_per_dim_per_image():
    pipe = make_pipeline("diffusers_ddim")
    x = ((images() + 1) * 127.5).round() / 127.5 - 1  # the 256-level grid
    exact = pipe.likelihood(x, generator=g())
    assert exact.shape == (2,) and torch.isfinite(exact).all() and (exact > 0).all()
    estimate = pipe.likelihood(x, num_sampled_timesteps=3, generator=g())
    assert estimate.shape == (2,) and torch.isfinite(estimate).all()
    torch.testing.assert_close(pipe.likelihood(x, generator=g()), exact)
    # numpy input in [0, 1] gives the same numbers
    as_numpy = ((x + 1) / 2).permute(0, 2, 3, 1).numpy()
    torch.testing.assert_close(pipe.likelihood(as_numpy, generator=g()), exact, rtol=1e-4, atol=1e-4)


def test_likelihood_of_a_class_conditional_model():
    pipe = conditional_pipeline()
    bits = pipe.likelihood(images(), num_sampled_timesteps=2, generator=g(), class_labels=[0, 1])
    assert bits.shape == (2,) and torch.isfinite(bits).all()
    null = pipe.likelihood(images(), num_sampled_timesteps=2, generator=g())
    assert not torch.equal(bits, null)


def test_likelihood_rejects_images_outside_minus_one_one():
    pipe = make_pipeline()
    with pytest.raises(ValueError, match=r"\[-1, 1\], got values in \[0\.02.*, 1\.99"):
        pipe.likelihood(images() + 1)


# ---- DDIM inversion --------------------------------------------------------------------------------


def test_invert_is_deterministic_and_reconstruction_improves_with_steps():
    pipe = PixelDiffusionPipeline(unet=tiny_unet(output_scale=0.2), scheduler=DDPMScheduler(num_train_timesteps=100))
    x = images(low=-0.8, high=0.8)
    x_T = pipe.invert(x, num_inference_steps=10)
    assert x_T.shape == x.shape
    torch.testing.assert_close(pipe.invert(x, num_inference_steps=10), x_T, rtol=0, atol=0)

    def error(steps):
        return (pipe.reconstruct(x, num_inference_steps=steps, output_type="pt").images * 2 - 1 - x).abs().mean()

    few, many = error(10), error(50)
    assert many < few / 2 and many < 5e-3  # first order in the step size
    assert len(pipe.reconstruct(x, num_inference_steps=5).images) == 2  # PIL by default


# ---- save / load -----------------------------------------------------------------------------------


def test_save_and_load_from_a_folder(tmp_path):
    pipe = conditional_pipeline()
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "PixelDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"][1] == "GenZooDDIMScheduler"
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    card = (tmp_path / "README.md").read_text()
    assert "library_name: hf_genzoo" in card and "import hf_genzoo" in card and "PixelDiffusionPipeline" in card

    loaded = PixelDiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is GenZooDDIMScheduler and loaded.num_classes == 2
    kwargs = dict(batch_size=2, num_inference_steps=3, class_labels=[0, 1], guidance_scale=2.0, output_type="pt")
    torch.testing.assert_close(
        loaded(generator=g(), **kwargs).images, pipe(generator=g(), **kwargs).images, rtol=0, atol=0
    )


def test_push_to_hub_and_load_by_repo_id(hub, hub_cache):
    pipe = make_pipeline("genzoo_ddpm")
    pipe.push_to_hub("genzoo-tests/tiny-pixel-diffusion")
    files = set(hub.list_files("genzoo-tests/tiny-pixel-diffusion"))
    assert {"model_index.json", "README.md", "unet/diffusion_pytorch_model.safetensors"} <= files
    loaded = PixelDiffusionPipeline.from_pretrained("genzoo-tests/tiny-pixel-diffusion")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is GenZooDDPMScheduler
    torch.testing.assert_close(loaded(2, g(), 3, output_type="pt").images, pipe(2, g(), 3, output_type="pt").images)


# ---- bad input -------------------------------------------------------------------------------------

BAD_CALLS = {
    "too_many_steps": (dict(num_inference_steps=T + 1), rf"num_inference_steps={T + 1}.*1 and.*{T}"),
    "zero_steps": (dict(num_inference_steps=0), rf"num_inference_steps=0.*{T}"),
    "batch_size": (dict(batch_size=0), "batch_size must be ≥ 1, got 0"),
    "output_type": (dict(output_type="latent"), "output_type.*'latent'"),
    "guidance_without_labels": (dict(guidance_scale=3.0), "guidance_scale=3.0 needs class_labels"),
}
BAD_CONDITIONAL_CALLS = {
    "label_too_large": (dict(class_labels=[0, 2]), r"\[0, 1\].*2 is the null label.*\[0, 2\]"),
    "negative_label": (dict(class_labels=[-1, 0]), r"\[0, 1\]"),
    "batch_length": (dict(class_labels=[0, 1, 1]), "3 labels for a batch of 2"),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_sampling_arguments(name):
    kwargs, message = BAD_CALLS[name]
    with pytest.raises(ValueError, match=message):
        make_pipeline()(**{"batch_size": 2, "num_inference_steps": 2, **kwargs})


@pytest.mark.parametrize("name", sorted(BAD_CONDITIONAL_CALLS))
def test_bad_class_labels(name):
    kwargs, message = BAD_CONDITIONAL_CALLS[name]
    with pytest.raises(ValueError, match=message):
        conditional_pipeline()(batch_size=2, num_inference_steps=2, **kwargs)


def test_class_labels_for_an_unconditional_unet():
    pipe = make_pipeline()
    with pytest.raises(ValueError, match="UNet is unconditional"):
        pipe(batch_size=2, num_inference_steps=2, class_labels=[0, 1])
    with pytest.raises(ValueError, match="UNet is unconditional"):
        pipe.likelihood(images(), class_labels=0)


def test_bad_arguments_of_invert_and_reconstruct():
    pipe = make_pipeline()
    with pytest.raises(ValueError, match=rf"num_inference_steps={T + 1}.*{T}"):
        pipe.invert(images(), num_inference_steps=T + 1)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        pipe.invert(images() * 3, num_inference_steps=2)
    with pytest.raises(ValueError, match="output_type"):
        pipe.reconstruct(images(), num_inference_steps=2, output_type="latent")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        conditional_pipeline().invert(images(), num_inference_steps=2, class_labels=[5, 0])
