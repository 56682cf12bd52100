"""One image convention, diffusers': whatever a pipeline returns (output_type "pil", "np" or "pt", all in [0, 1]) reads
back into each of its image-reading methods and gives the result of the same pixels as a [-1, 1] tensor; a [-1, 1]
tensor still works, with diffusers' warning; bad input is a short ValueError naming the value and what is allowed."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import UNet2DModel

from hf_genzoo import (
    AutoencoderModel,
    AutoencoderPipeline,
    GenZooDDIMScheduler,
    GenZooDDPMScheduler,
    InstructPix2PixPipeline,
    LatentDiffusionPipeline,
    PixelDiffusionPipeline,
    PromptToPromptPipeline,
    VAEModel,
    VQVAEModel,
    VQVAEPipeline,
)
from hf_genzoo.models.code_prior import build_code_prior
from hf_genzoo.models.instruct_pix2pix import widen_conv_in
from hf_genzoo.pipelines.pipeline_utils import GenZooImageProcessor

from tiny_components import tiny_text_to_image_components

OUTPUT_TYPES = ("pil", "np", "pt")
PROMPTS = ["a red circle", "a blue square"]
SIGNED_WARNING = r"value range in \[-1,1\] is deprecated"  # diffusers' VaeImageProcessor


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seed(value=0):
    return torch.Generator().manual_seed(value)


def as_signed(images) -> torch.Tensor:
    """A pipeline's output (PIL list, (N, H, W, C) numpy or (N, C, H, W) tensor in [0, 1]) as the (N, C, H, W) tensor
    in [-1, 1] of the same pixels."""
    if isinstance(images, list):
        images = np.stack([np.asarray(image, dtype=np.float32) / 255 for image in images])  # (N, H, W[, C])
        images = images[..., None] if images.ndim == 3 else images  # mode "L" → (N, H, W, 1)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images).permute(0, 3, 1, 2)  # (N, C, H, W)
    return images.float() * 2 - 1


def result_tensors(result) -> list[torch.Tensor]:
    """The tensors a method returned, whatever it wraps them in."""
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, dict):
        return [result[key] for key in sorted(result)]
    if hasattr(result, "images"):
        return [torch.as_tensor(np.asarray(result.images))]
    return [result.latents, result.reconstruction]  # prompt-to-prompt's Inversion


# ---- the pipelines, tiny and seeded, with their samplers and image-reading methods ----------------------------------

TINY_AE = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=16)


def vae_pipeline():
    torch.manual_seed(0)
    return AutoencoderPipeline(model=VAEModel(**TINY_AE, latent_channels=4).eval())


def grayscale_autoencoder_pipeline():
    """An MNIST-like autoencoder: 1-channel images."""
    torch.manual_seed(0)
    model = AutoencoderModel(**TINY_AE, in_channels=1, out_channels=1).eval()
    model.fit_latent_gaussian(model.encode(torch.rand(32, 1, 16, 16) * 2 - 1).latents)
    return AutoencoderPipeline(model=model)


def vqvae_pipeline():
    torch.manual_seed(0)
    vqvae = VQVAEModel(block_out_channels=(8, 16), latent_channels=4, num_vq_embeddings=16, sample_size=16, norm_num_groups=4)
    prior = build_code_prior(16, (8, 8), n_layer=1, n_head=2, n_embd=16)
    return VQVAEPipeline(vqvae=vqvae.eval(), prior=prior.eval())


def pixel_pipeline(channels=3):
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(4, 8), norm_num_groups=4,
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()
    return PixelDiffusionPipeline(unet=unet, scheduler=GenZooDDPMScheduler(num_train_timesteps=20))


def text_components():
    components = tiny_text_to_image_components()
    components["scheduler"] = GenZooDDIMScheduler(num_train_timesteps=20, clip_sample=False, timestep_spacing="trailing")
    return components


def latent_pipeline():
    return LatentDiffusionPipeline(**text_components())


def prompt_to_prompt_pipeline():
    return PromptToPromptPipeline(**text_components())


def instruct_pix2pix_pipeline():
    components = text_components()
    components["unet"] = widen_conv_in(components["unet"], 4)
    with torch.no_grad():  # the image condition must change the output
        components["unet"].conv_in.weight[:, 4:].normal_(0, 0.2, generator=seed(3))
    return InstructPix2PixPipeline(**components)


PIPELINES = {
    # name: (build, sample(pipe, output_type) → images, {method: read(pipe, images) → result})
    "vae": (
        vae_pipeline,
        lambda pipe, output_type: pipe(batch_size=2, generator=seed(), output_type=output_type).images,
        {
            "encode": lambda pipe, x: pipe.encode(x),
            "reconstruct": lambda pipe, x: pipe.reconstruct(x, output_type="pt"),
            "interpolate": lambda pipe, x: pipe.interpolate(x[:1], x[1:], num_steps=3, output_type="pt"),
            "anomaly_score": lambda pipe, x: pipe.anomaly_score(x),
            "anomaly_score_elbo": lambda pipe, x: pipe.anomaly_score(x, method="elbo", generator=seed()),
        },
    ),
    "grayscale_autoencoder": (
        grayscale_autoencoder_pipeline,
        lambda pipe, output_type: pipe(batch_size=2, generator=seed(), output_type=output_type).images,
        {
            "encode": lambda pipe, x: pipe.encode(x),
            "reconstruct": lambda pipe, x: pipe.reconstruct(x, output_type="pt"),
            "anomaly_score": lambda pipe, x: pipe.anomaly_score(x),
        },
    ),
    "vqvae": (
        vqvae_pipeline,
        lambda pipe, output_type: pipe(batch_size=2, generator=seed(), output_type=output_type).images,
        {
            "encode": lambda pipe, x: pipe.encode(x),
            "reconstruct": lambda pipe, x: pipe.reconstruct(x, output_type="pt"),
            "code_likelihood": lambda pipe, x: pipe.code_likelihood(x),
        },
    ),
    **{
        name: (
            lambda channels=channels: pixel_pipeline(channels),
            lambda pipe, output_type: pipe(batch_size=2, num_inference_steps=2, generator=seed(), output_type=output_type).images,
            {
                "likelihood": lambda pipe, x: pipe.likelihood(x, num_sampled_timesteps=2, generator=seed()),
                "invert": lambda pipe, x: pipe.invert(x, num_inference_steps=2),
                "reconstruct": lambda pipe, x: pipe.reconstruct(x, num_inference_steps=2, output_type="pt"),
            },
        )
        for name, channels in (("pixel_diffusion", 3), ("grayscale_pixel_diffusion", 1))
    },
    "latent_diffusion": (
        latent_pipeline,
        lambda pipe, output_type: pipe(PROMPTS, num_inference_steps=2, generator=seed(), output_type=output_type).images,
        {
            "encode_images": lambda pipe, x: pipe.encode_images(x),
            "likelihood": lambda pipe, x: pipe.likelihood(x, prompt=PROMPTS, num_sampled_timesteps=2, generator=seed()),
            "invert": lambda pipe, x: pipe.invert(x, prompt=PROMPTS, num_inference_steps=2),
            "reconstruct": lambda pipe, x: pipe.reconstruct(x, prompt=PROMPTS, num_inference_steps=2, output_type="pt"),
        },
    ),
    "prompt_to_prompt": (
        prompt_to_prompt_pipeline,
        lambda pipe, output_type: pipe(PROMPTS, num_inference_steps=2, generator=seed(), output_type=output_type).images,
        {"invert": lambda pipe, x: pipe.invert(x[:1], PROMPTS[0], num_inference_steps=2, guidance_scale=2.0)},
    ),
    "instruct_pix2pix": (
        instruct_pix2pix_pipeline,
        lambda pipe, output_type: pipe(
            PROMPTS, PIL.Image.new("RGB", (16, 16), (200, 40, 40)), num_inference_steps=2, generator=seed(), output_type=output_type
        ).images,
        {"__call__": lambda pipe, x: pipe(PROMPTS, x, num_inference_steps=2, generator=seed(), output_type="pt")},
    ),
}

CASES = [(name, method) for name, (_, _, methods) in PIPELINES.items() for method in methods]


@pytest.fixture(scope="module")
def pipelines():
    """Each pipeline built once, and its images in each output_type."""
    built = {}
    for name, (build, sample, _) in PIPELINES.items():
        pipe = build()
        pipe.set_progress_bar_config(disable=True)
        built[name] = pipe, {output_type: sample(pipe, output_type) for output_type in OUTPUT_TYPES}
    return built


# ---- the round trip ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_type", OUTPUT_TYPES)
@pytest.mark.parametrize("name, method", CASES, ids=[f"{name}-{method}" for name, method in CASES])
def test_what_a_pipeline_returns_reads_back_as_the_same_pixels_in_minus_one_one(pipelines, name, method, output_type):
    pipe, images = pipelines[name]
    read = PIPELINES[name][2][method]
    signed = as_signed(images[output_type])
    assert signed.min() < 0  # read as [-1, 1], diffusers' rule for a tensor with negative values
    with pytest.warns(FutureWarning, match=SIGNED_WARNING):
        expected = result_tensors(read(pipe, signed))
    for got, want in zip(result_tensors(read(pipe, images[output_type])), expected, strict=True):
        torch.testing.assert_close(got, want)


def test_likelihood_of_the_pipelines_own_pt_output_is_the_bound_of_those_pixels():
    """`pipe.likelihood(pipe(output_type="pt").images)`: the bound of x_0 = 2 y − 1, computed here without the pipeline's
    image reading (the pipelines read [0, 1] tensors as [-1, 1] before, and gave the bound of other pixels)."""
    pipe = pixel_pipeline()
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=2, generator=seed(), output_type="pt").images  # [0, 1]
    bits = pipe.likelihood(images, generator=seed())
    bound = GenZooDDPMScheduler.from_config(pipe.scheduler.config).variational_bound(
        pipe.model_output_fn(), images * 2 - 1, generator=seed()
    )
    torch.testing.assert_close(bits, bound.bits_per_dim)


def test_a_grayscale_pipeline_reads_rgb_pil_images_as_their_luminance():
    """PIL images are converted to the pipeline's mode (L for 1 channel), as diffusers' grayscale processor does."""
    pipe = grayscale_autoencoder_pipeline()
    rgb = PIL.Image.fromarray((np.random.RandomState(0).rand(16, 16, 3) * 255).astype(np.uint8))
    torch.testing.assert_close(pipe.encode(rgb), pipe.encode(rgb.convert("L")))
    grey = np.asarray(rgb.convert("L"))  # (H, W) uint8: read as 0–255, as a PIL image is
    torch.testing.assert_close(pipe.encode(grey), pipe.encode(rgb.convert("L")))
    torch.testing.assert_close(pipe.encode(grey[None].astype(np.float32) / 255), pipe.encode(grey))  # (N, H, W)


# ---- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.rand(1, 1, 16, 16), r"expected images with 3 channel\(s\), got 1 \(shape \(1, 1, 16, 16\)"),
        (np.random.rand(16, 16, 1), r"expected images with 3 channel\(s\), got 1 \(shape \(1, 16, 16, 1\)"),
        ("cat.png", r"images must be PIL images, numpy arrays or torch tensors .*got str"),
        ([torch.rand(3, 16, 16), np.random.rand(16, 16, 3)], r"got a list mixing Tensor, ndarray"),
        ([], r"got an empty list"),
        (np.full((1, 16, 16, 3), 255.0), r"images must lie in \[0, 1\] .* in \[-1, 1\], got values in \[255, 255\]"),
        (torch.full((1, 3, 16, 16), -2.0), r"got values in \[-2, -2\]"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.int64), r"tensor images must be float in \[0, 1\] or uint8, got dtype torch.int64"),
    ],
    ids=["tensor-channels", "numpy-channels", "type", "mixed-list", "empty-list", "numpy-0-255", "below-minus-one", "int-tensor"],
)
def test_bad_input_is_a_short_value_error(images, message):
    pipe = vae_pipeline()
    with pytest.raises(ValueError, match=message):
        pipe.encode(images)


def test_one_processor_for_every_pipeline(pipelines):
    for name, (pipe, _) in pipelines.items():
        assert isinstance(pipe.image_processor, GenZooImageProcessor), name
    assert pipelines["grayscale_autoencoder"][0].image_processor.config.num_channels == 1
