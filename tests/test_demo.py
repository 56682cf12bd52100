"""genzoo-demo (hf_genzoo/demo.py): what it offers for each kind of pipeline, its actions without a browser, and the
page itself in a real headless Chromium (Debian's `chromium` driven by Playwright; skipped where either is missing)."""

from __future__ import annotations

import json
import os
import shutil
import socket

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import UNet2DModel

from hf_genzoo import (
    AutoencoderModel,
    AutoencoderPipeline,
    DCGANGenerator,
    GANPipeline,
    GenZooDDIMScheduler,
    InstructPix2PixPipeline,
    LatentDiffusionPipeline,
    PixelDiffusionPipeline,
    VAEModel,
    VQVAEModel,
    VQVAEPipeline,
    widen_conv_in,
)
from hf_genzoo import demo
from hf_genzoo.models.code_prior import build_code_prior

try:  # works whether or not tests/ is a package
    from .scripts import load_script
    from .tiny_components import tiny_text_to_image_components
except ImportError:
    from scripts import load_script
    from tiny_components import tiny_text_to_image_components

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TINY = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=16)


# ---- tiny pipelines, one of each kind ----------------------------------------------------------------------------------


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def vae_pipeline():
    torch.manual_seed(0)
    return quiet(AutoencoderPipeline(model=VAEModel(**TINY, latent_channels=4).eval()))


def ae_pipeline(fitted=True):
    torch.manual_seed(0)
    model = AutoencoderModel(**TINY).eval()
    if fitted:
        model.fit_latent_gaussian(model.encode(torch.rand(32, 3, 16, 16) * 2 - 1).latents)
    return quiet(AutoencoderPipeline(model=model))


def vq_model():
    """16×16 images ↔ a 4×4 grid of codes."""
    torch.manual_seed(0)
    return VQVAEModel(**{**TINY, "block_out_channels": (8, 16, 16)}, latent_channels=4, num_vq_embeddings=16).eval()


def vq_pipeline():
    torch.manual_seed(0)
    prior = build_code_prior(16, (4, 4), n_layer=1, n_head=2, n_embd=16).eval()
    return quiet(VQVAEPipeline(vqvae=vq_model(), prior=prior))


def gan_pipeline():
    torch.manual_seed(0)
    return quiet(GANPipeline(generator_model=DCGANGenerator(latent_dim=8, sample_size=16, block_out_channels=(16, 8, 8)).eval()))


def class_gan_pipeline():
    torch.manual_seed(0)
    generator = DCGANGenerator(latent_dim=8, sample_size=16, block_out_channels=(16, 8, 8), num_classes=3, class_embed_dim=4)
    return quiet(GANPipeline(generator_model=generator.eval()))


def pixel_pipeline():
    """Class-conditional: 2 classes and the null label."""
    torch.manual_seed(0)
    unet = UNet2DModel(
        block_out_channels=(4, 8), norm_num_groups=4, sample_size=16, layers_per_block=1, num_class_embeds=3,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()
    return quiet(PixelDiffusionPipeline(unet=unet, scheduler=GenZooDDIMScheduler(num_train_timesteps=100)))


def text_pipeline():
    components = tiny_text_to_image_components()
    components["scheduler"] = GenZooDDIMScheduler.from_config(components["scheduler"].config)
    return quiet(LatentDiffusionPipeline(**components))


def instruct_pipeline():
    components = tiny_text_to_image_components()
    components["unet"] = widen_conv_in(components["unet"], 4)
    return quiet(InstructPix2PixPipeline(**components))


PIPELINES = {
    "vae": vae_pipeline,
    "ae": ae_pipeline,
    "ae_unfitted": lambda: ae_pipeline(fitted=False),
    "vq_in_autoencoder_pipeline": lambda: quiet(AutoencoderPipeline(model=vq_model())),
    "vq_prior": vq_pipeline,
    "gan": gan_pipeline,
    "gan_class": class_gan_pipeline,
    "pixel_class": pixel_pipeline,
    "latent_text": text_pipeline,
    "instruct_pix2pix": instruct_pipeline,
}
# what the page offers for each: Capabilities.summary(), then the sampling controls
OFFERS = {
    "vae": (["sample", "reconstruct", "interpolate", "likelihood"], dict(batch_argument="batch_size", likelihood="elbo", sampling_options={"markov_chain_steps": 0})),
    "ae": (["sample", "reconstruct", "interpolate"], dict(batch_argument="batch_size", likelihood=None, sampling_options={})),
    "ae_unfitted": (["reconstruct", "interpolate"], dict(sample=False, interpolate_seeds=False, interpolate_images=True)),
    "vq_in_autoencoder_pipeline": (["reconstruct", "interpolate"], dict(sample=False, interpolate_seeds=False, likelihood=None)),
    "vq_prior": (["sample", "reconstruct", "likelihood"], dict(likelihood="codes", sampling_options={"temperature": 1.0}, num_inference_steps=None)),
    "gan": (["sample", "interpolate"], dict(interpolate_seeds=True, interpolate_images=False, sampling_options={"truncation": 0.0})),
    "gan_class": (["sample", "interpolate"], dict(num_classes=3, prompt=False, guidance_scale=None)),
    "pixel_class": (["sample", "reconstruct", "likelihood"], dict(num_classes=2, num_inference_steps=50, guidance_scale=1.0, reconstruct_steps=50, likelihood="bound", interpolate_seeds=False)),
    "latent_text": (["sample", "reconstruct", "interpolate", "likelihood", "prompt-to-prompt"], dict(prompt=True, batch_argument="num_images_per_prompt", guidance_scale=7.5, interpolate_seeds=True, interpolate_images=False)),
    "instruct_pix2pix": (["instruction edit"], dict(sample=False, reconstruct=False, likelihood=None, prompt_to_prompt=False, num_inference_steps=100)),
}


@pytest.fixture(scope="module")
def pipelines():
    return {}


def get(pipelines, name):
    if name not in pipelines:
        pipelines[name] = PIPELINES[name]()
    return pipelines[name]


def solid(size=(16, 16), color=(200, 40, 40)) -> PIL.Image.Image:
    image = PIL.Image.new("RGB", size, "black")
    image.paste(PIL.Image.new("RGB", (size[0] // 2, size[1] // 2), color), (size[0] // 4, size[1] // 4))
    return image


# ---- what each pipeline offers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_capabilities_are_read_off_the_pipeline(pipelines, name):
    caps = demo.capabilities(get(pipelines, name))
    summary, fields = OFFERS[name]
    assert caps.summary() == summary
    assert {key: getattr(caps, key) for key in fields} == fields
    assert caps.image_size == (16, 16) and caps.image_channels == 3


def test_offered_actions_run_with_the_page_controls(pipelines):
    """Each offered action of three kinds of pipeline gives images of the model's size."""
    vae = get(pipelines, "vae")
    caps = demo.capabilities(vae)
    images = demo.sample(vae, caps, seed=0, batch_size=3, markov_chain_steps=2)
    assert [image.size for image in images] == [(16, 16)] * 3
    original, reconstruction, quality = demo.reconstruct(vae, caps, solid())
    assert reconstruction.size == (16, 16) and np.isfinite(quality)
    assert len(demo.interpolate_images(vae, caps, solid(), solid(color=(40, 40, 200)), num_frames=5)) == 5
    elbo, iwae = demo.likelihood(vae, caps, solid(), iwae_samples=4).values()
    assert np.isfinite([elbo, iwae]).all() and min(elbo, iwae) > 0  # upper bounds on −log₂ p(x) per dimension

    pixel = get(pipelines, "pixel_class")
    caps = demo.capabilities(pixel)
    images = demo.sample(pixel, caps, seed=1, batch_size=2, num_inference_steps=3, guidance_scale=2.0, class_label="1")
    assert len(images) == 2
    (value,) = demo.likelihood(pixel, caps, solid(), num_sampled_timesteps=4).values()
    assert value > 0

    vq = get(pipelines, "vq_prior")
    caps = demo.capabilities(vq)
    assert len(demo.sample(vq, caps, seed=0, batch_size=2, temperature=0.8)) == 2
    (value,) = demo.likelihood(vq, caps, solid()).values()
    assert value > 0


@pytest.mark.parametrize("name", ["gan", "gan_class", "latent_text", "vae"])
def test_the_first_frame_between_two_seeds_is_the_first_seeds_sample(pipelines, name):
    pipe = get(pipelines, name)
    caps = demo.capabilities(pipe)
    condition = dict(prompt="a red circle") if caps.prompt else dict(class_label="2") if caps.num_classes else {}
    steps = dict(num_inference_steps=3) if caps.num_inference_steps else {}
    frames = demo.interpolate_seeds(pipe, caps, seed_a=5, seed_b=6, num_frames=3, **steps, **condition)
    first = demo.sample(pipe, caps, seed=5, batch_size=1, **steps, **condition)[0]
    last = demo.sample(pipe, caps, seed=6, batch_size=1, **steps, **condition)[0]
    assert len(frames) == 3
    for frame, end in ((frames[0], first), (frames[-1], last)):
        difference = np.abs(np.asarray(frame, dtype=int) - np.asarray(end, dtype=int))
        assert difference.max() <= 1  # equal up to a rounding of the last float bit into a uint8 level


def test_prompt_to_prompt_gives_both_images_and_each_words_attention(pipelines):
    pipe = get(pipelines, "latent_text")
    images, maps = demo.prompt_to_prompt(pipe, "a red circle", "a blue circle", num_inference_steps=3, guidance_scale=3.0)
    assert [image.size for image in images] == [(16, 16)] * 2
    assert [len(row) for row in maps] == [3, 3]  # "a", the colour, "circle": the special tokens left out
    assert demo.prompt_to_prompt_pipeline(pipe).unet is pipe.unet  # the same modules, not a copy
    with pytest.raises(ValueError, match="token for token"):
        demo.prompt_to_prompt(pipe, "a red circle", "a big blue circle", edit_type="replace", num_inference_steps=2)
    with pytest.raises(ValueError, match="'word: weight"):
        demo.prompt_to_prompt(pipe, "a red circle", "a red circle", edit_type="reweight", reweight="red 2")
    assert demo.parse_reweight(" red: 2, circle:0.5 ") == {"red": 2.0, "circle": 0.5}


def test_instruction_edit_keeps_the_input_size(pipelines):
    pipe = get(pipelines, "instruct_pix2pix")
    caps = demo.capabilities(pipe)
    original, edited = demo.instruction_edit(pipe, caps, solid(), "make the circle blue", num_inference_steps=2)
    assert edited.size == original.size == (16, 16)
    with pytest.raises(ValueError, match="write an instruction"):
        demo.instruction_edit(pipe, caps, solid(), "  ")


def test_bad_input_is_a_sentence(pipelines, tmp_path):
    pipe = get(pipelines, "vae")
    caps = demo.capabilities(pipe)
    with pytest.raises(ValueError, match=r"is 20×12 pixels; this model takes 16×16 images"):
        demo.reconstruct(pipe, caps, solid(size=(20, 12)))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ValueError, match=r"notes.txt\) is not an image file"):
        demo.check_image(str(text), pipe)
    with pytest.raises(ValueError, match="upload the image first"):
        demo.reconstruct(pipe, caps, None)
    with pytest.raises(ValueError, match="seed must be a whole number"):
        demo.sample(pipe, caps, seed=-1)
    with pytest.raises(ValueError, match=r"batch size must be a whole number in \[1, 16\]"):
        demo.sample(pipe, caps, batch_size=0)
    text_pipe = get(pipelines, "latent_text")
    with pytest.raises(ValueError, match="text-conditioned: write a prompt"):
        demo.sample(text_pipe, demo.capabilities(text_pipe), prompt=" ")
    gan = get(pipelines, "gan")
    with pytest.raises(ValueError, match="does not reconstruct"):
        demo.reconstruct(gan, demo.capabilities(gan), solid())


def test_load_pipeline_opens_saved_folders_and_says_what_is_not_one(tmp_path):
    vae_pipeline().save_pretrained(tmp_path / "vae")
    loaded = demo.load_pipeline(tmp_path / "vae")
    assert type(loaded) is AutoencoderPipeline and type(loaded.model) is VAEModel
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not a saved pipeline: it has no model_index.json"):
        demo.load_pipeline(tmp_path / "empty")
    with pytest.raises(ValueError, match="neither a saved pipeline folder nor a Hub repo id"):
        demo.load_pipeline("no-such-folder")
    (tmp_path / "stock").mkdir()
    (tmp_path / "stock" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="holds a StableDiffusionPipeline, not an hf_genzoo pipeline"):
        demo.load_pipeline(tmp_path / "stock")


def test_load_pipeline_takes_a_hub_repo_id_and_names_a_missing_one(hub, hub_cache):
    gan_pipeline().push_to_hub("genzoo-tests/demo-gan")
    loaded = demo.load_pipeline("genzoo-tests/demo-gan")
    assert type(loaded) is GANPipeline and demo.capabilities(loaded).summary() == ["sample", "interpolate"]
    with pytest.raises(ValueError, match=r"'genzoo-tests/no-such-model' is (neither a saved folder|not a folder here)") as error:
        demo.load_pipeline("genzoo-tests/no-such-model")
    assert "Hub" in str(error.value) and len(str(error.value).splitlines()) == 1


def test_command_line_and_train_shapes_flags():
    with pytest.raises(SystemExit):
        demo.parse_args([])
    args = demo.parse_args(["a", "user/b", "--port", "7861", "--host", "0.0.0.0"])
    assert args.models == ["a", "user/b"] and args.port == 7861 and not args.share
    assert demo.parse_args(["--train-shapes"]).train_shapes
    # --train-shapes's flags are the training script's own (and keep the main job's model)
    script_args = load_script("train_autoencoder").parse_args([*demo.TRAIN_SHAPES_ARGS, "--max_train_steps", "10"])
    assert script_args.model == "vae" and script_args.block_out_channels == [16, 32, 64] and script_args.train_batch_size == 16


# ---- the page in a real browser ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    pytest.importorskip("gradio", reason='the demo needs Gradio: pip install "hf_genzoo[demo]"')
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs Playwright: pip install playwright")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"the browser test needs Debian's chromium at {CHROMIUM}: apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def test_page_loads_samples_and_shows_bad_uploads_in_words(browser, tmp_path):
    vae_pipeline().save_pretrained(tmp_path / "tiny-vae")
    (tmp_path / "not-a-pipeline").mkdir()
    solid(size=(20, 20)).save(tmp_path / "wrong-size.png")
    (tmp_path / "notes.png").write_text("not an image")
    app = demo.build_app([str(tmp_path / "tiny-vae"), str(tmp_path / "not-a-pipeline")], device="cpu")
    _, url, _ = app.queue().launch(
        server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True, **demo.launch_kwargs()
    )
    try:
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        assert "AutoencoderPipeline" in page.inner_text("#m0-header")

        page.click("#m0-sample-button")  # a click on sample shows an image
        image = page.wait_for_selector("#m0-sample-output img")
        page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=image)
        assert image.evaluate("i => i.naturalWidth") >= 4 * demo.DISPLAY_TILE  # 8 images, 4 a row, at least 128 px each

        page.get_by_role("tab", name="Reconstruct").click()
        for upload, message in (("wrong-size.png", "is 20×20 pixels; this model takes 16×16 images"), ("notes.png", "is not an image file")):
            page.set_input_files("#m0-reconstruct-input input[type=file]", str(tmp_path / upload))
            page.click("#m0-reconstruct-button")
            page.get_by_text(message).first.wait_for()  # the sentence on the page, not a traceback
            page.keyboard.press("Escape")

        page.get_by_role("tab", name="not-a-pipeline").click()
        assert "no model_index.json" in page.inner_text("#m1-error")
        if os.environ.get("GENZOO_DEMO_SCREENSHOT"):
            page.screenshot(path=os.environ["GENZOO_DEMO_SCREENSHOT"], full_page=True)
    finally:
        app.close()
