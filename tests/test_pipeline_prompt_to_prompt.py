"""PromptToPromptPipeline on tiny Stable Diffusion components: the source image is LatentDiffusionPipeline's own, no
injection gives the plain edited image, every edit type changes the edit and not the source, from_pipe shares modules,
the UNet's processors come back, per-token attention maps, DDIM and null-text inversion (and editing from them),
SDEdit and inpainting, and every bad-input error."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from hf_genzoo import (
    AttentionRefine,
    AttentionReplace,
    AttentionReweight,
    GenZooDDIMScheduler,
    Inversion,
    LatentDiffusionPipeline,
    PromptToPromptPipeline,
    PromptToPromptPipelineOutput,
)
from hf_genzoo.attention import LocalBlend
from tiny_components import tiny_text_to_image_components, tiny_unet

STEPS = 4
SOURCE, SWAP = "a red circle", "a blue circle"  # a word swap
SHORT, LONGER = "a circle", "a red circle"  # a refinement: "red" is added
ATOL = 1e-5  # the controller's explicit softmax against SDPA, and batches of different sizes


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def components():
    return tiny_text_to_image_components()


@pytest.fixture(scope="module")
def pipe(components):
    pipe = PromptToPromptPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def plain(components):
    """LatentDiffusionPipeline on the same modules: the images without attention control."""
    plain = LatentDiffusionPipeline(**components)
    plain.set_progress_bar_config(disable=True)
    return plain


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))  # [0, 1], diffusers' convention


@pytest.fixture(scope="module")
def ddim_inversion(pipe, image):
    return pipe.invert(image, SOURCE, method="ddim", num_inference_steps=STEPS)


def seed(value=0):
    return torch.Generator().manual_seed(value)


def edit(pipe, prompts, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    return pipe(prompts, generator=seed(), output_type="np", **kwargs).images


def plain_images(plain, prompt, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    return plain(prompt, generator=seed(), output_type="np", **kwargs).images


# ---- editing generated images -----------------------------------------------------------------------------------


def test_the_source_image_is_latent_diffusion_pipelines_own(pipe, plain):
    out = pipe([SOURCE, SWAP], num_inference_steps=STEPS, generator=seed(), output_type="np", num_images_per_prompt=2)
    assert isinstance(out, PromptToPromptPipelineOutput) and out.images.shape == (4, 16, 16, 3)
    np.testing.assert_allclose(out.images[:2], plain_images(plain, SOURCE, num_images_per_prompt=2), rtol=0, atol=ATOL)
    assert np.abs(out.images[2:] - out.images[:2]).max() > 1e-2  # the edits start from the same noise, image by image
    assert isinstance(out.attention_store, AttentionReplace) and out.attention_store.cur_step == STEPS
    assert out.attention_store.aggregate().shape == (4, 8, 8, 16)  # (P · n, h, w, L): every row's maps

    images, controller = pipe([SOURCE, SWAP], num_inference_steps=STEPS, generator=seed(), output_type="pil", return_dict=False)
    assert len(images) == 2 and images[0].size == (16, 16) and isinstance(controller, AttentionReplace)
    noise = torch.randn(1, 4, 8, 8, generator=seed(3))  # given z_T is shared by every prompt
    shared = edit(pipe, [SOURCE, SWAP], latents=noise)
    np.testing.assert_allclose(shared, edit(pipe, [SOURCE, SWAP], latents=noise.repeat(2, 1, 1, 1)), rtol=0, atol=0)
    np.testing.assert_allclose(shared[:1], plain(SOURCE, latents=noise, num_inference_steps=STEPS, output_type="np").images, atol=ATOL)


@pytest.mark.parametrize("edit_type, prompts", [("replace", [SOURCE, SWAP]), ("refine", [SHORT, LONGER])])
def test_no_injection_gives_the_plain_image_of_the_edited_prompt(pipe, plain, edit_type, prompts):
    images = edit(pipe, prompts, edit_type=edit_type, cross_replace_steps=0.0, self_replace_steps=0.0)
    np.testing.assert_allclose(images[0], plain_images(plain, prompts[0])[0], rtol=0, atol=ATOL)
    np.testing.assert_allclose(images[1], plain_images(plain, prompts[1])[0], rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    "prompts, kwargs, controller_class",
    [
        ([SOURCE, SWAP], dict(edit_type="replace"), AttentionReplace),
        ([SHORT, LONGER], dict(edit_type="refine"), AttentionRefine),
        ([SOURCE, SOURCE], dict(edit_type="reweight", equalizer={"red": 3.0}), AttentionReweight),
        ([SOURCE, SWAP], dict(edit_type="replace", equalizer={"blue": 3.0}), AttentionReweight),
        ([SHORT, LONGER], dict(edit_type="refine", equalizer={"red": 3.0}), AttentionReweight),
        ([SOURCE, SWAP], dict(edit_type="replace", local_blend_words=("red", "blue"), local_blend_threshold=0.9), AttentionReplace),
    ],
    ids=["replace", "refine", "reweight", "replace+reweight", "refine+reweight", "replace+local_blend"],
)
def test_each_edit_type_changes_the_edit_and_keeps_the_source(pipe, plain, prompts, kwargs, controller_class):
    out = pipe(prompts, num_inference_steps=STEPS, generator=seed(), output_type="np", **kwargs)
    assert type(out.attention_store) is controller_class
    if "equalizer" in kwargs and kwargs["edit_type"] != "reweight":  # composed as the paper: the edit inside
        inner = {"replace": AttentionReplace, "refine": AttentionRefine}[kwargs["edit_type"]]
        assert type(out.attention_store.prev_controller) is inner
    if "local_blend_words" in kwargs:
        assert isinstance(out.attention_store.local_blend, LocalBlend)
    np.testing.assert_allclose(out.images[0], plain_images(plain, prompts[0])[0], rtol=0, atol=ATOL)
    assert np.abs(out.images[1] - out.images[0]).max() > 1e-3  # the edit changes the image
    assert np.abs(out.images[1] - plain_images(plain, prompts[1])[0]).max() > 1e-3  # and is not the plain edited prompt
    if kwargs["edit_type"] == "reweight":  # the same prompt twice: only the scale changed it
        unit = edit(pipe, prompts, edit_type="reweight", equalizer={"red": 1.0})
        np.testing.assert_allclose(unit[1], unit[0], rtol=0, atol=ATOL)


def test_from_pipe_shares_the_modules(components):
    stock = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    for source in (stock, LatentDiffusionPipeline(**components)):
        pipe = PromptToPromptPipeline.from_pipe(source)
        assert isinstance(pipe, PromptToPromptPipeline)
        for name in ("vae", "unet", "scheduler", "text_encoder", "tokenizer"):
            assert getattr(pipe, name) is getattr(source, name), name
        assert pipe.vqvae is None
    other = GenZooDDIMScheduler.from_config(stock.scheduler.config)
    assert PromptToPromptPipeline.from_pipe(stock, scheduler=other).scheduler is other
    with pytest.raises(ValueError, match=r"got \['safety_checker'\]"):
        PromptToPromptPipeline.from_pipe(stock, safety_checker=None)


def test_a_unet_without_cross_attention_is_refused(components):
    torch.manual_seed(0)
    unconditional = UNet2DModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )
    ldm = LatentDiffusionPipeline(vae=components["vae"], unet=unconditional, scheduler=components["scheduler"])
    with pytest.raises(ValueError, match="must be a UNet2DConditionModel, got UNet2DModel"):
        PromptToPromptPipeline.from_pipe(ldm)
    self_attention_only = tiny_unet(
        down_block_types=("AttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "AttnUpBlock2D"), mid_block_type=None
    )
    with pytest.raises(ValueError, match=r"UNet2DConditionModel with blocks \['AttnDownBlock2D', 'DownBlock2D'\]\) has no cross"):
        PromptToPromptPipeline(**{**components, "unet": self_attention_only})


def test_the_unets_processors_are_restored_even_on_error(pipe):
    pipe.unet.set_attn_processor(AttnProcessor())  # not diffusers' default: must come back as it was
    before = dict(pipe.unet.attn_processors)
    try:
        edit(pipe, [SOURCE, SWAP])
        assert pipe.unet.attn_processors == before  # the same processor objects, layer by layer

        def failing(pipe, step, timestep, callback_kwargs):
            if step == 1:
                raise RuntimeError("stop at step 1")

        with pytest.raises(RuntimeError, match="stop at step 1"):
            edit(pipe, [SOURCE, SWAP], callback_on_step_end=failing)
        assert pipe.unet.attn_processors == before
        pipe.attention_maps(SOURCE, num_inference_steps=STEPS, generator=seed())
        assert pipe.unet.attn_processors == before
    finally:
        pipe.unet.set_attn_processor(AttnProcessor2_0())


def test_a_users_callback_runs_after_the_controllers(pipe):
    seen = []

    def record(pipe, step, timestep, callback_kwargs):
        seen.append((step, tuple(callback_kwargs["latents"].shape), tuple(callback_kwargs["prompt_embeds"].shape)))

    edit(pipe, [SOURCE, SWAP], callback_on_step_end=record)
    assert seen == [(step, (2, 4, 8, 8), (4, 16, 16)) for step in range(STEPS)]  # [∅ ∅ C C] text batch


def test_attention_maps_one_labelled_map_per_token(pipe):
    maps = pipe.attention_maps(SOURCE, num_inference_steps=STEPS, generator=seed())
    assert maps.tokens == ["<s>", "a", "red", "circle", "</s>"] and maps.token_indices == [0, 1, 2, 3, 4]
    assert maps.maps.shape == (5, 8, 8) and maps.maps.dtype == np.float32  # every layer, at the largest map (8×8)
    assert maps.image.size == (16, 16)
    assert len(maps.images) == 5 and len({figure.size for figure in maps.images}) == 1
    width, height = maps.images[0].size
    assert width >= 16 and height > 16  # the map at the image size, its label in a strip under it
    for figure, raw in zip(maps.images, maps.maps):
        left = (width - 16) // 2
        heatmap = np.asarray(figure.crop((left, 0, left + 16, 16)).convert("L"))
        assert heatmap.max() == 255  # normalised by its maximum
        label = np.asarray(figure.crop((0, 16, width, height)).convert("L"))
        assert label.min() < 128  # the token is written
    # the same maps as the store of a generation of the prompt, and a word's maps alone
    out = pipe([SOURCE, SWAP], num_inference_steps=STEPS, generator=seed(), cross_replace_steps=0.0, self_replace_steps=0.0)
    np.testing.assert_allclose(maps.maps, out.attention_store.aggregate()[0, ..., :5].permute(2, 0, 1).numpy(), atol=1e-5)
    red = pipe.attention_maps(SOURCE, words=["red"], resolution=4, num_inference_steps=STEPS, generator=seed())
    assert red.tokens == ["red"] and red.token_indices == [2] and red.maps.shape == (1, 4, 4)
    assert red.images[0].size[1] > 16


# ---- real images --------------------------------------------------------------------------------------------------


def test_ddim_inversion_round_trip(components, image):
    """The pivot is LatentDiffusionPipeline's DDIM inversion; at w = 1 the reconstruction is its `reconstruct`, and
    on a 20-step schedule run whole the round trip returns the latents (a random UNet is far from the ODE's
    smoothness on long strides)."""
    scheduler = GenZooDDIMScheduler(num_train_timesteps=20, clip_sample=False, timestep_spacing="trailing")
    pipe = PromptToPromptPipeline(**{**components, "scheduler": scheduler})
    pipe.set_progress_bar_config(disable=True)
    inversion = pipe.invert(image, SOURCE, method="ddim", num_inference_steps=20, guidance_scale=1.0)
    assert isinstance(inversion, Inversion) and inversion.null_embeddings is None
    assert inversion.trajectory.shape == (21, 1, 4, 8, 8) and inversion.latents.shape == (1, 4, 8, 8)
    z_0 = pipe.encode_images(image)
    torch.testing.assert_close(inversion.trajectory[0], z_0, rtol=0, atol=0)
    torch.testing.assert_close(inversion.latents, LatentDiffusionPipeline.invert(pipe, image, SOURCE, num_inference_steps=20))
    reconstruct = pipe.reconstruct(image, SOURCE, num_inference_steps=20, output_type="pt").images
    torch.testing.assert_close(inversion.reconstruction, reconstruct, rtol=0, atol=1e-5)
    edited = pipe([SOURCE, SWAP], inversion=inversion, guidance_scale=1.0, output_type="latent").images
    assert (edited[0] - z_0).abs().max() < 0.3 * z_0.abs().max()  # back to z*_0 up to DDIM inversion's error
    assert np.isfinite(inversion.psnr) and np.isfinite(inversion.first_stage_psnr)


@pytest.fixture(scope="module")
def v_pipe(components):
    """The same modules with a v-prediction DDIM scheduler: what the inversion steps with comes from the model."""
    scheduler = GenZooDDIMScheduler.from_config(components["scheduler"].config, prediction_type="v_prediction")
    pipe = PromptToPromptPipeline(**{**components, "scheduler": scheduler})
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("pipe_name", ["pipe", "v_pipe"])
def test_null_text_inversion_reconstructs_under_guidance(pipe_name, request, image):
    """Mokady et al. 2023: under w = 7.5 DDIM inversion drifts; optimising ∅_t per step brings the reconstruction
    closer to the image (and to the first stage's own reconstruction D(E(x)), the part of the error that inversion
    can remove). Editing from the inversion with the source prompt reproduces the reconstruction. Both for an
    ε- and a v-prediction model: the optimised step is the scheduler's own."""
    pipe = request.getfixturevalue(pipe_name)
    ddim = pipe.invert(image, SOURCE, method="ddim", num_inference_steps=STEPS, guidance_scale=7.5)
    null = pipe.invert(
        image, SOURCE, method="null_text", num_inference_steps=STEPS, guidance_scale=7.5, num_inner_steps=10, learning_rate=0.1
    )
    assert null.method == "null_text" and null.null_embeddings.shape == (STEPS, 16, 16)
    assert null.null_embeddings.dtype == torch.float32
    torch.testing.assert_close(null.trajectory, ddim.trajectory, rtol=0, atol=0)  # the same pivot
    if pipe_name == "pipe":  # against the image itself; the random first stage's own error (9 dB) dominates both
        assert null.psnr >= ddim.psnr
    first_stage = (pipe.decode_latents(pipe.encode_images(image)) / 2 + 0.5).clamp(0, 1)

    def psnr(x):
        return 10 * np.log10(1 / ((x - first_stage) ** 2).mean().item())

    assert psnr(null.reconstruction) > psnr(ddim.reconstruction) + 1.0
    assert null.first_stage_psnr == ddim.first_stage_psnr

    for inversion in (null, ddim):
        out = pipe([SOURCE, SWAP], inversion=inversion, output_type="pt")
        torch.testing.assert_close(out.images[:1], inversion.reconstruction, rtol=0, atol=1e-4)
        assert (out.images[1] - out.images[0]).abs().max() > 1e-2


def test_null_text_optimisation_is_float32_under_autocast(pipe, image):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inversion = pipe.invert(image, SOURCE, method="null_text", num_inference_steps=2, num_inner_steps=2)
    assert inversion.null_embeddings.dtype == torch.float32 and torch.isfinite(inversion.null_embeddings).all()
    assert all(parameter.grad is None for parameter in pipe.unet.parameters())  # gradients reach ∅ only
    # one step's optimisation gives the same ∅ bit for bit with and without an enclosing bf16 autocast
    pipe.scheduler.set_timesteps(STEPS)
    t = pipe.scheduler.timesteps[1]
    generator = seed(3)
    latents, target = torch.randn(2, 1, 4, 8, 8, generator=generator)
    prompt_embeds, null = pipe.encode_prompt(SOURCE, "cpu", 1, True)
    kwargs = dict(prompt_embeds=prompt_embeds, null_embedding=null, guidance_scale=7.5, num_inner_steps=3, learning_rate=0.1, early_stop_threshold=0.0)
    plain = pipe.optimize_null_embedding(latents, t, target, **kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = pipe.optimize_null_embedding(latents, t, target, **kwargs)
    assert autocast.dtype == torch.float32 and torch.equal(autocast, plain)
    assert not torch.equal(plain, null)  # it did optimise


def test_inversion_writes_no_files(pipe, tmp_path, monkeypatch):
    """Inverting a user's image file leaves its folder (and the working directory) as it was: no cache files."""
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(photo)
    monkeypatch.chdir(tmp_path)
    inversion = pipe.invert(Image.open(photo), SOURCE, method="null_text", num_inference_steps=2, num_inner_steps=2)
    pipe([SOURCE, SWAP], inversion=inversion, num_inference_steps=2, output_type="np")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_sdedit(pipe, image):
    first_stage = pipe.sdedit(image, SWAP, strength=0.0, num_inference_steps=STEPS, output_type="pt").images
    direct = (pipe.decode_latents(pipe.encode_images(image)) / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(first_stage, direct, rtol=0, atol=1e-6)
    small = pipe.sdedit(image, SWAP, strength=0.1, num_inference_steps=STEPS, generator=seed(), output_type="pt").images
    torch.testing.assert_close(small, direct, rtol=0, atol=1e-6)  # ⌊0.1 · 4⌋ = 0 steps: nothing to denoise
    half = pipe.sdedit(image, SWAP, strength=0.5, num_inference_steps=STEPS, generator=seed(), output_type="pt").images
    full = pipe.sdedit(image, SWAP, strength=1.0, num_inference_steps=STEPS, generator=seed(), output_type="pt").images
    assert (half - direct).abs().max() > 1e-2 and (full - direct).abs().max() > 1e-2
    # strength 1 is sampling from the first step: z_{t_0} = √ᾱ z_0 + √(1 − ᾱ) ε at the noisiest step of the schedule
    pipe.scheduler.set_timesteps(STEPS)
    noise = torch.randn(1, 4, 8, 8, generator=seed())
    z_start = pipe.scheduler.add_noise(pipe.encode_images(image), noise, pipe.scheduler.timesteps[:1])
    sampled = pipe([SWAP, SWAP], latents=z_start, num_inference_steps=STEPS, cross_replace_steps=0.0, self_replace_steps=0.0, output_type="pt")
    torch.testing.assert_close(full, sampled.images[:1], rtol=0, atol=1e-5)


def test_inpaint_keeps_the_source_outside_the_mask(pipe, image):
    mask = np.zeros((16, 16), np.float32)
    mask[2:7, 3:12] = 1  # repaint here
    latent_mask = pipe.prepare_mask(mask, (1, 3, 16, 16))
    assert latent_mask.shape == (1, 1, 8, 8)
    expected = torch.zeros(8, 8)
    expected[1:4, 1:6] = 1  # any covered pixel makes its latent pixel repainted
    torch.testing.assert_close(latent_mask[0, 0], expected)

    z_0 = pipe.encode_images(image)
    latents = pipe.inpaint(image, mask, SWAP, num_inference_steps=STEPS, generator=seed(), output_type="latent").images
    keep = ~latent_mask.bool().expand_as(latents)
    assert torch.equal(latents[keep], z_0[keep])  # exactly the source's latents outside the mask
    assert (latents[~keep] - z_0[~keep]).abs().max() > 1e-2
    nothing = pipe.inpaint(image, np.zeros((16, 16)), SWAP, num_inference_steps=STEPS, generator=seed(), output_type="pt").images
    torch.testing.assert_close(nothing, (pipe.decode_latents(z_0) / 2 + 0.5).clamp(0, 1), rtol=0, atol=1e-6)


# ---- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p, inv: p([SHORT, LONGER]), r"edit_type='replace' maps the prompts token for token.*'' -> 'red'.*edit_type='refine'"),
        (lambda p, inv: p([SHORT, LONGER], edit_type="reweight", equalizer={"red": 2.0}), r"edit_type='reweight' maps .*edit_type='refine'"),
        (lambda p, inv: p([SOURCE, SWAP], local_blend_words=("red", "red")), "local blend word 'red' is not in prompt 1, 'a blue circle'"),
        (lambda p, inv: p([SOURCE, SWAP], local_blend_words=("red",)), "one entry per prompt"),
        (lambda p, inv: p([SOURCE, SWAP], cross_replace_steps=1.5), r"cross_replace_steps must be .*1\.5"),
        (lambda p, inv: p([SOURCE, SWAP], cross_replace_steps=-0.1), r"cross_replace_steps must be .*-0\.1"),
        (lambda p, inv: p([SOURCE, SWAP], equalizer={"square": 2.0}), "equalizer word 'square' is not in the edited prompt"),
        (lambda p, inv: p([SOURCE, SWAP], edit_type="reweight"), "edit_type='reweight' needs an equalizer"),
        (lambda p, inv: p([SOURCE, SWAP], edit_type="swap"), r"edit_type must be one of .*'swap'"),
        (lambda p, inv: p([SOURCE]), r"a source prompt and at least one edit, got \['a red circle'\]"),
        (lambda p, inv: p(SOURCE), "a source prompt and at least one edit, got 'a red circle'"),
        (lambda p, inv: p.invert(torch.rand(1, 3, 15, 16), SOURCE), r"multiples of 2, .*got 15×16"),
        (lambda p, inv: p.invert(torch.rand(1, 3, 16, 16), SOURCE, method="exact"), r"method must be one of .*'exact'"),
        (lambda p, inv: p.invert(torch.rand(1, 3, 16, 16), SOURCE, method="null_text", guidance_scale=1.0), "use method='ddim'"),
        (lambda p, inv: p.invert(torch.rand(2, 3, 16, 16), SOURCE), "invert takes one image, got 2"),
        (lambda p, inv: p([SOURCE, SWAP], inversion=inv, latents=inv.latents), "give latents or inversion, not both"),
        (lambda p, inv: p([SWAP, SOURCE], inversion=inv), "'a blue circle' is not the inverted image's prompt 'a red circle'"),
        (lambda p, inv: p([SOURCE, SWAP], inversion=inv, num_inference_steps=5), "num_inference_steps=5 but the inversion has 4"),
        (lambda p, inv: p([SOURCE, SWAP], latents=torch.randn(3, 4, 8, 8)), "latents have 3 rows"),
        (lambda p, inv: p.attention_maps(SOURCE, words=["square"]), "word 'square' is not in the prompt 'a red circle'"),
        (lambda p, inv: p.sdedit(torch.rand(1, 3, 16, 16), SWAP, strength=1.5), r"strength must be in \[0, 1\], got 1.5"),
        (lambda p, inv: p.inpaint(torch.rand(1, 3, 16, 16), np.zeros((8, 8)), SWAP), r"mask has shape \(1, 1, 8, 8\)"),
    ],
)
def test_bad_input(pipe, ddim_inversion, call, message):
    before = dict(pipe.unet.attn_processors)
    with pytest.raises(ValueError, match=message):
        call(pipe, ddim_inversion)
    assert pipe.unet.attn_processors == before


def test_inversion_needs_a_ddim_scheduler(components, image):
    pipe = PromptToPromptPipeline(**{**components, "scheduler": DDPMScheduler()})
    with pytest.raises(ValueError, match="inversion needs a DDIM scheduler, got DDPMScheduler"):
        pipe.invert(image, SOURCE)
    linspace = GenZooDDIMScheduler.from_config(components["scheduler"].config, timestep_spacing="linspace")
    pipe = PromptToPromptPipeline(**{**components, "scheduler": linspace})
    with pytest.raises(ValueError, match="timestep_spacing='linspace' gives steps that DDIM inversion cannot retrace"):
        pipe.invert(image, SOURCE, num_inference_steps=7)
