"""InstructPix2Pix on tiny components: the same images as diffusers' StableDiffusionInstructPix2PixPipeline (our VAEModel
and diffusers' AutoencoderKL as first stage), a saved folder in the stock pipeline, the widened UNet's step 0, the
latent conventions of a training pair, the guidance grid and the errors a user meets."""

import copy
import logging

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel

import hf_genzoo  # noqa: F401  (diffusers' loader finds our classes through it)
from hf_genzoo import EditPairLatents, GenZooDDIMScheduler, InstructPix2PixPipeline, VAEModel, encode_edit_pair, widen_conv_in

from tiny_components import tiny_scheduler, tiny_text_to_image_components, tiny_unet

STEPS = 3
INSTRUCTIONS = ["make the circle blue", "turn the square red"]

# diffusers deprecates one input image for several images (prompts × num_images_per_prompt); ours takes it
pytestmark = pytest.mark.filterwarnings("ignore:You have passed .* initial images:FutureWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def our_vae():
    torch.manual_seed(1)
    return VAEModel(block_out_channels=(8, 16), norm_num_groups=4, latent_channels=4, sample_size=16, scaling_factor=0.8).eval()


def edit_components(vae=None, scheduler=None) -> dict:
    """Tiny SD components with the UNet widened to 8 input channels; the new input weights are then randomised (a
    trained model's are not zero), so that the image condition changes the output."""
    components = tiny_text_to_image_components()
    components["unet"] = widen_conv_in(components["unet"], 4)
    with torch.no_grad():
        components["unet"].conv_in.weight[:, 4:].normal_(0, 0.2, generator=torch.Generator().manual_seed(3))
    if vae is not None:
        components["vae"] = vae
    if scheduler is not None:
        components["scheduler"] = scheduler
    return components


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stock_pipeline(components) -> StableDiffusionInstructPix2PixPipeline:
    return quiet(
        StableDiffusionInstructPix2PixPipeline(**components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    )


def input_image(seed=0, size=(16, 16)) -> PIL.Image.Image:
    height, width = size
    return PIL.Image.fromarray((np.random.RandomState(seed).rand(height, width, 3) * 255).astype(np.uint8))


def edit(pipe, prompt, image, seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("output_type", "np")
    return pipe(prompt, image, generator=torch.Generator().manual_seed(seed), **kwargs).images


@pytest.fixture(scope="module")
def pipelines():
    """(ours, stock) on the same components, our VAEModel and DDIM scheduler."""
    components = edit_components(vae=our_vae(), scheduler=GenZooDDIMScheduler.from_config(tiny_scheduler().config))
    return quiet(InstructPix2PixPipeline(**components)), stock_pipeline(components)


# ---- the same images as diffusers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),  # s_T = 7.5, s_I = 1.5
        dict(guidance_scale=3.0, image_guidance_scale=1.0, negative_prompt=["a cat", "a dog"], eta=0.5),
        dict(guidance_scale=1.0),  # guidance off
    ],
    ids=["default-scales", "text-only-guidance-eta", "no-guidance"],
)
def test_same_images_as_diffusers_with_our_first_stage(pipelines, kwargs):
    ours, stock = pipelines
    image = input_image()
    mine = edit(ours, INSTRUCTIONS, image, num_images_per_prompt=2, **kwargs)
    theirs = edit(stock, INSTRUCTIONS, image, num_images_per_prompt=2, **kwargs)
    assert mine.shape == (4, 16, 16, 3)
    np.testing.assert_allclose(mine, theirs, atol=1e-6)
    assert np.abs(mine[0] - mine[1]).max() > 1e-3  # each image its own z_T


def test_same_images_as_diffusers_with_stock_autoencoder_kl_one_image_per_prompt():
    """diffusers' own AutoencoderKL and DDIMScheduler; two input images (numpy in [0, 1]), one per instruction."""
    components = edit_components()
    ours, stock = quiet(InstructPix2PixPipeline(**components)), stock_pipeline(components)
    images = np.stack([np.asarray(input_image(seed), dtype=np.float32) / 255 for seed in (1, 2)])  # (2, 16, 16, 3)
    mine = edit(ours, INSTRUCTIONS, images, guidance_scale=5.0, image_guidance_scale=2.0)
    np.testing.assert_allclose(mine, edit(stock, INSTRUCTIONS, images, guidance_scale=5.0, image_guidance_scale=2.0), atol=1e-6)
    # image latents given as `image` are used as they are (diffusers' convention), without scaling
    pixels = ours.image_processor.preprocess(images)
    latents = components["vae"].encode(pixels).latent_dist.mode()
    np.testing.assert_allclose(edit(ours, INSTRUCTIONS, latents, guidance_scale=5.0, image_guidance_scale=2.0), mine, atol=1e-6)


def test_one_image_per_prompt_pairs_each_prompt_with_its_own_image(pipelines):
    """With one image per prompt and num_images_per_prompt > 1, prompt k is edited on image k in all its images
    (prompt-major, as the prompt embeddings; diffusers tiles the images instead, [i0, i1, i0, i1])."""
    ours, _ = pipelines
    images = [input_image(1), input_image(2)]
    z_T = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    both = edit(ours, INSTRUCTIONS, images, num_images_per_prompt=2, latents=z_T)
    for k in range(2):
        alone = edit(ours, INSTRUCTIONS[k], images[k], num_images_per_prompt=2, latents=z_T[2 * k : 2 * k + 2])
        np.testing.assert_allclose(both[2 * k : 2 * k + 2], alone, atol=1e-5)


def test_the_input_image_changes_the_edit(pipelines):
    ours, _ = pipelines
    assert np.abs(edit(ours, "make the circle blue", input_image(1)) - edit(ours, "make the circle blue", input_image(2))).max() > 1e-3


def test_dual_guidance_is_the_papers_equation():
    """ε̃ = ε(∅, ∅) + s_I (ε(c_I, ∅) − ε(∅, ∅)) + s_T (ε(c_I, c_T) − ε(c_I, ∅)) on the batch [(c_I, c_T), (c_I, ∅), (∅, ∅)]."""
    e_text, e_image, e_uncond = torch.randn(3, 2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    s_t, s_i = 7.5, 1.5
    expected = e_uncond + s_i * (e_image - e_uncond) + s_t * (e_text - e_image)
    guided = InstructPix2PixPipeline.dual_guidance(torch.cat([e_text, e_image, e_uncond]), s_t, s_i)
    torch.testing.assert_close(guided, expected, atol=1e-5, rtol=0)
    # s_I = s_T = 1: the image- and text-conditioned prediction alone
    torch.testing.assert_close(InstructPix2PixPipeline.dual_guidance(torch.cat([e_text, e_image, e_uncond]), 1.0, 1.0), e_text, atol=1e-6, rtol=0)


def test_unet_batch_is_text_image_uncond_and_image_latents_are_the_unscaled_mode(pipelines):
    ours, _ = pipelines
    image = input_image()
    seen = {}

    def record(pipe, i, t, tensors):
        seen.update(tensors)
        return {}

    edit(ours, "make the circle blue", image, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["prompt_embeds", "image_latents"])
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]  # (1, 3, 16, 16)
    mode = ours.vae.encode(pixels).latent_dist.mode()
    assert seen["image_latents"].shape == (3, 4, 8, 8)
    torch.testing.assert_close(seen["image_latents"][:2], mode.expand(2, -1, -1, -1), atol=1e-6, rtol=0)  # c_I, c_I
    assert torch.count_nonzero(seen["image_latents"][2]) == 0  # ∅_I = 0
    empty, _ = ours.encode_prompt("", "cpu", 1, False)
    torch.testing.assert_close(seen["prompt_embeds"][1:], empty.expand(2, -1, -1), atol=1e-6, rtol=0)  # ∅_T, ∅_T
    assert not torch.allclose(seen["prompt_embeds"][0], empty[0])  # c_T


# ---- a saved folder in the stock pipeline ------------------------------------------------------------------------------


def test_saved_folder_loads_in_the_stock_pipeline_and_gives_the_same_images(pipelines, tmp_path):
    ours, _ = pipelines
    image = input_image()
    mine = edit(ours, INSTRUCTIONS, image)
    ours.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "import hf_genzoo" in card and "StableDiffusionInstructPix2PixPipeline" in card and "image_guidance_scale" in card
    stock = quiet(StableDiffusionInstructPix2PixPipeline.from_pretrained(tmp_path, safety_checker=None))
    assert isinstance(stock.vae, VAEModel) and isinstance(stock.scheduler, GenZooDDIMScheduler)
    assert stock.unet.config.in_channels == 8
    np.testing.assert_allclose(edit(stock, INSTRUCTIONS, image), mine, atol=1e-6)
    reloaded = quiet(InstructPix2PixPipeline.from_pretrained(tmp_path))
    np.testing.assert_allclose(edit(reloaded, INSTRUCTIONS, image), mine, atol=1e-6)


# ---- widen_conv_in -----------------------------------------------------------------------------------------------------


def test_widened_unet_starts_as_the_text_to_image_unet_and_survives_save_and_load(tmp_path):
    text_to_image = tiny_unet()
    widened = widen_conv_in(copy.deepcopy(text_to_image), 4)
    assert widened.config.in_channels == 8 and widened.conv_in.in_channels == 8
    assert torch.count_nonzero(widened.conv_in.weight[:, 4:]) == 0
    generator = torch.Generator().manual_seed(0)
    z_t = torch.randn(2, 4, 8, 8, generator=generator)
    image_latents = 3 * torch.randn(2, 4, 8, 8, generator=generator)
    text = torch.randn(2, 16, 16, generator=generator)
    t = torch.tensor([999, 10])
    with torch.no_grad():
        expected = text_to_image(z_t, t, encoder_hidden_states=text).sample
        step_0 = widened(torch.cat([z_t, image_latents], dim=1), t, encoder_hidden_states=text).sample
    torch.testing.assert_close(step_0, expected, atol=1e-6, rtol=0)

    widened.save_pretrained(tmp_path)
    loaded = UNet2DConditionModel.from_pretrained(tmp_path).eval()
    assert loaded.config.in_channels == 8
    with torch.no_grad():
        torch.testing.assert_close(loaded(torch.cat([z_t, image_latents], dim=1), t, encoder_hidden_states=text).sample, expected, atol=1e-6, rtol=0)
    assert widen_conv_in(loaded, 4) is loaded and loaded.config.in_channels == 8  # already takes 2C: as is


def test_widen_conv_in_refuses_a_unet_that_does_not_take_the_latents_alone():
    with pytest.raises(ValueError, match=r"in_channels=5, out_channels=4"):
        widen_conv_in(tiny_unet(in_channels=5), 4)
    with pytest.raises(ValueError, match="extra_channels must be ≥ 1, got 0"):
        widen_conv_in(tiny_unet(), 0)


# ---- encode_edit_pair --------------------------------------------------------------------------------------------------


def test_encode_edit_pair_conditions_on_the_unscaled_mode_and_targets_a_scaled_sample():
    vae = our_vae()  # scaling_factor 0.8
    generator = torch.Generator().manual_seed(0)
    before, after = torch.rand(2, 2, 3, 16, 16, generator=generator) * 2 - 1
    pair = encode_edit_pair(vae, before, after, generator=torch.Generator().manual_seed(7))
    assert isinstance(pair, EditPairLatents) and pair.image_latents.shape == pair.target_latents.shape == (2, 4, 8, 8)
    torch.testing.assert_close(pair.image_latents, vae.encode(before).latent_dist.mode(), atol=0, rtol=0)
    with torch.no_grad():
        sample = vae.encode(after).latent_dist.sample(torch.Generator().manual_seed(7))
    torch.testing.assert_close(pair.target_latents, 0.8 * sample, atol=1e-7, rtol=0)
    image_latents, target_latents = pair  # a plain tuple too
    assert not image_latents.requires_grad
    with pytest.raises(ValueError, match="same shape"):
        encode_edit_pair(vae, before, after[:, :, :8])


# ---- the guidance grid ---------------------------------------------------------------------------------------------------


def find_patch(figure: np.ndarray, patch: np.ndarray) -> bool:
    height, width = patch.shape[:2]
    return any(
        np.array_equal(figure[top : top + height, left : left + width], patch)
        for top in range(figure.shape[0] - height + 1)
        for left in range(figure.shape[1] - width + 1)
    )


def test_guidance_grid_has_one_labelled_cell_per_pair_of_scales(pipelines):
    ours, _ = pipelines
    image = input_image()
    kwargs = dict(num_inference_steps=2, generator=torch.Generator().manual_seed(4))
    grid = ours.guidance_grid("make the circle blue", image, guidance_scales=(3, 7.5), image_guidance_scales=(1.0, 1.5, 2.0), **kwargs)
    wider = ours.guidance_grid("make the circle blue", image, guidance_scales=(3, 5, 7.5), image_guidance_scales=(1.0,), **kwargs)
    default = ours.guidance_grid("make the circle blue", image, **kwargs)  # 3 × 4
    assert isinstance(grid, PIL.Image.Image)
    # rows s_I, columns s_T: the default 3 × 4 grid is two cells wider than the 3 × 2 one, the 1 × 3 two cells lower
    assert default.height == grid.height and (default.width - grid.width) % 2 == 0
    assert (default.width - grid.width) // 2 >= 16
    assert (grid.height - wider.height) % 2 == 0 and (grid.height - wider.height) // 2 >= 16
    # every cell is the pipeline's own output from the same seed, e.g. s_I = 2, s_T = 7.5
    cell = ours("make the circle blue", image, guidance_scale=7.5, image_guidance_scale=2.0, num_inference_steps=2,
                generator=torch.Generator().manual_seed(4)).images[0]
    assert find_patch(np.asarray(grid), np.asarray(cell))
    # labels: dark pixels outside the images
    assert (np.asarray(grid.convert("L"))[:10] < 128).any()


# ---- errors ------------------------------------------------------------------------------------------------------------


def test_bad_inputs_are_refused_with_the_value(pipelines, caplog):
    ours, _ = pipelines
    image = input_image()
    with pytest.raises(ValueError, match="got 15×16"):
        ours("make it blue", input_image(size=(15, 16)))
    with pytest.raises(ValueError, match="image_guidance_scale must be ≥ 0, got -0.5"):
        ours("make it blue", image, image_guidance_scale=-0.5)
    with pytest.raises(ValueError, match="image is required"):
        ours("make it blue", None)
    with pytest.raises(ValueError, match="got 2 images for 3 prompts"):
        ours(["a", "b", "c"], [image, image])
    with pytest.raises(ValueError, match="give a prompt"):
        ours(image=image)
    with caplog.at_level(logging.WARNING):
        edit(ours, "make it blue", image, image_guidance_scale=0.5, num_inference_steps=1)
    assert "image_guidance_scale=0.5 < 1 disables image guidance" in caplog.text


def test_a_unet_that_does_not_take_the_image_latents_is_refused():
    components = tiny_text_to_image_components()  # conv_in takes 4 channels
    with pytest.raises(ValueError, match=r"unet.config.in_channels=4 .* 2 × 4 = 8"):
        InstructPix2PixPipeline(**components)
    pipe = InstructPix2PixPipeline(**edit_components())
    pipe.unet = tiny_unet()  # swapped after construction
    with pytest.raises(ValueError, match=r"unet.config.in_channels=4 .* 2 × 4 = 8"):
        pipe("make it blue", input_image())
