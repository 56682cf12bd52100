"""genzoo-demo: a browser page over saved hf_genzoo pipelines (Gradio; `pip install "hf_genzoo[demo]"`).

    genzoo-demo shapes-vae you/shapes-ldm        # one tab per saved folder or Hub repo id
    genzoo-demo --train-shapes                    # train a small shapes-world VAE first (a few minutes), then open it

What a tab offers is read off the loaded pipeline (`capabilities`), not from a list kept per class:

    sample            `__call__` draws images from nothing but noise; its controls are the parameters `__call__` takes
                      (seed, batch, steps, guidance, prompt or class label, temperature, truncation, decode/re-encode
                      chain)
    reconstruct       a `reconstruct(images, ...)` method: encode–decode, or DDIM inversion and back
    interpolate       between two seeds: an `interpolate` method over latents, or a `__call__` that takes `latents`
                      (their path slerped); between two images: `interpolate` and `encode`. An animated GIF
    likelihood        `likelihood(images, ...)` (the diffusion bound), `code_likelihood` (a VQ-VAE's prior), or a VAE's
                      ELBO and importance-weighted bound; in bits per dimension
    prompt-to-prompt  a text-conditioned UNet with cross-attention: edits through `PromptToPromptPipeline.from_pipe`,
                      with the cross-attention map of every word
    instruction edit  a `__call__` that takes an input `image` (InstructPix2Pix)

Everything but the page is plain Python without Gradio and raises a ValueError naming the bad input; the page shows
that sentence (`gr.Error`) instead of a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch

logger = logging.getLogger(__name__)

DISPLAY_TILE = 128  # smallest displayed side of one image: 32×32 samples are upscaled (nearest) to be seen
MAX_BATCH = 16
MAX_FRAMES = 32
EDIT_TYPES = ("replace", "refine", "reweight")
# an uploaded 32×32 image is previewed filling its box, its pixels kept sharp
CSS = ".genzoo-upload img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"
# numeric sampling options a `__call__` may take: name → (label, minimum, maximum, step, default when it has none)
SAMPLING_OPTIONS = {
    "temperature": ("temperature (< 1: safer, less varied)", 0.1, 2.0, 0.05, 1.0),
    "truncation": ("truncation τ (0: none)", 0.0, 3.0, 0.1, 0.0),
    "markov_chain_steps": ("decode/re-encode chain steps", 0, 50, 1, 0),
}
# what `genzoo-demo --train-shapes` runs: the README's main job (training_scripts/train_autoencoder.py --model vae,
# widths 16-32-64, batch 16) for 1,500 steps instead of 30 epochs, a 20-component latent mixture instead of 300 (its EM,
# full covariances in float64, is most of a short run's evaluation) and a cheap final evaluation
TRAIN_SHAPES_STEPS = 1500
TRAIN_SHAPES_ARGS = (
    "--model", "vae", "--mixed_precision", "auto", "--train_batch_size", "16", "--block_out_channels", "16", "32", "64",
    "--latent_prior_components", "20", "--num_generated", "200", "--max_eval_samples", "200", "--iwae_samples", "0",
    "--checkpointing_steps", "1000000", "--validation_steps", "1000000",
)


# ---- loading ---------------------------------------------------------------------------------------------------------


def load_pipeline(name_or_path: str | os.PathLike, device: str | torch.device | None = None):
    """The hf_genzoo pipeline saved in a folder or a Hub repo: the class named in its `model_index.json`, loaded with
    that class's `from_pretrained`. A ValueError says why a folder or id is not one."""
    import hf_genzoo  # noqa: F401  (binds the component classes diffusers' loader looks up)
    from hf_genzoo import pipelines
    from hf_genzoo.hub import resolve_pretrained_folder

    name = str(name_or_path)
    if not os.path.isdir(name) and (name.count("/") != 1 or name.startswith((".", "/", "~"))):
        raise ValueError(f"{name!r} is neither a saved pipeline folder nor a Hub repo id of the form 'user/name'")
    try:
        folder = resolve_pretrained_folder(name)
    except ValueError:
        raise
    except Exception as error:  # no network, no such repo, no access: one sentence, not the client's traceback
        raise ValueError(f"{name!r} is not a folder here and could not be downloaded from the Hub ({type(error).__name__})") from error
    index = Path(folder) / "model_index.json"
    if not index.is_file():
        raise ValueError(
            f"{name!r} is not a saved pipeline: it has no model_index.json (give a folder written by a training script "
            "or by save_pretrained)"
        )
    try:
        class_name = json.loads(index.read_text()).get("_class_name")
    except json.JSONDecodeError as error:
        raise ValueError(f"{index} is not valid JSON ({error})") from error
    known = sorted(n for n in pipelines.__all__ if n.endswith("Pipeline") and n != "GenZooPipeline")
    pipeline_class = getattr(pipelines, class_name, None) if isinstance(class_name, str) else None
    if pipeline_class is None or not issubclass(pipeline_class, pipelines.GenZooPipeline):
        raise ValueError(f"{name!r} holds a {class_name}, not an hf_genzoo pipeline (one of {known})")
    try:
        pipe = pipeline_class.from_pretrained(folder)
    except Exception as error:
        raise ValueError(f"{name!r} could not be loaded as a {class_name}: {error}") from error
    if device is not None:
        pipe.to(device)
    return pipe


# ---- what a pipeline can do ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What the page offers for one pipeline, found by `capabilities`."""

    sample: bool = False
    batch_argument: str | None = None  # "batch_size" or "num_images_per_prompt"
    num_inference_steps: int | None = None  # `__call__`'s default; None: it takes no steps
    guidance_scale: float | None = None  # the default of a conditioned pipeline's guidance
    prompt: bool = False  # text-conditioned
    num_classes: int | None = None  # class-conditional
    sampling_options: dict[str, float] = field(default_factory=dict)  # SAMPLING_OPTIONS it takes → default
    reconstruct: bool = False
    reconstruct_steps: int | None = None  # `reconstruct` inverts with DDIM over this many steps by default
    interpolate_seeds: bool = False
    interpolate_images: bool = False
    likelihood: str | None = None  # "bound" (`likelihood`), "codes" (`code_likelihood`), "elbo" (a VAE)
    prompt_to_prompt: bool = False
    instruction_edit: bool = False
    image_size: tuple[int, int] | None = None  # (height, width) of the images it takes and makes
    image_channels: int = 3

    def summary(self) -> list[str]:
        """The page's one-line names of what this pipeline offers."""
        names = {
            "sample": self.sample,
            "reconstruct": self.reconstruct,
            "interpolate": self.interpolate_seeds or self.interpolate_images,
            "likelihood": self.likelihood is not None,
            "prompt-to-prompt": self.prompt_to_prompt,
            "instruction edit": self.instruction_edit,
        }
        return [name for name, offered in names.items() if offered]


def _parameters(function) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(function).parameters) if callable(function) else {}


def _takes_images(method) -> bool:
    """A method that takes images by name (`images`): a stub with `*args, **kwargs` that raises does not count."""
    return "images" in _parameters(method)


def _default(parameters: dict[str, inspect.Parameter], name: str):
    parameter = parameters.get(name)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def _has_prior(pipe) -> bool:
    """Whether the pipeline draws its latents itself: a model with a (fitted) prior, a generator, or a sampler."""
    model = getattr(pipe, "model", None)
    if model is None:
        return True  # diffusion, GAN, VQ prior: `__call__` starts from noise
    if not hasattr(model, "sample_prior"):
        return False  # a VQ-VAE in AutoencoderPipeline: its prior lives in VQVAEPipeline
    return getattr(model, "latent_gaussian_fitted", True)  # an autoencoder samples only once its Gaussian is fitted


def _num_classes(pipe, call: dict) -> int | None:
    """Classes of a `__call__` that takes `class_labels`: the pipeline's `num_classes`, else the first component
    config's (a class-conditional GAN generator)."""
    if "class_labels" not in call:
        return None
    if hasattr(type(pipe), "num_classes"):
        return pipe.num_classes
    for component in pipe.components.values():
        config = getattr(component, "config", None)
        if isinstance(config, dict) and config.get("num_classes"):
            return int(config["num_classes"])
    return None


def is_text_conditioned(pipe) -> bool:
    return bool(getattr(pipe, "is_text_conditioned", False)) and getattr(pipe, "tokenizer", None) is not None


def expected_image_size(pipe) -> tuple[tuple[int, int], int] | None:
    """((height, width), channels) of the images the pipeline takes, or None if it takes none."""
    first_stage = getattr(pipe, "first_stage", None)
    if first_stage is not None and hasattr(pipe, "default_size"):
        return tuple(pipe.default_size()), first_stage.config.get("in_channels", 3)
    for name in ("model", "vqvae", "unet", "generator_model"):
        module = getattr(pipe, name, None)
        config = getattr(module, "config", None)
        if config is not None and "sample_size" in config:
            size = config.sample_size
            size = (size, size) if isinstance(size, int) else tuple(size)
            return size, config.get("in_channels", config.get("out_channels", 3))
    return None


def capabilities(pipe) -> Capabilities:
    """Read what `pipe` can do off its methods and their signatures (see the module's docstring)."""
    call = _parameters(pipe.__call__)
    required = [n for n, p in call.items() if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
    instruction_edit = "image" in call and "prompt" in call
    sample = not required and not instruction_edit and _has_prior(pipe)
    text = is_text_conditioned(pipe)
    num_classes = _num_classes(pipe, call)
    conditioned = text or num_classes is not None
    options = {}
    for name, (_, _, _, _, fallback) in SAMPLING_OPTIONS.items():
        if name in call:
            options[name] = _default(call, name) or fallback
    if "markov_chain_steps" in options and not hasattr(getattr(pipe, "model", None), "markov_chain"):
        del options["markov_chain_steps"]  # only a VAE re-encodes through its posterior
    reconstruct = _takes_images(getattr(pipe, "reconstruct", None))
    interpolate = getattr(pipe, "interpolate", None)
    # between seeds: the pipeline's own `interpolate` over latents (autoencoder family, GAN), or a sampler that takes
    # its starting noise as `latents` (latent diffusion), through which the slerped path is sampled
    seeds = sample and (callable(interpolate) or "latents" in call)
    if _takes_images(getattr(pipe, "likelihood", None)):
        likelihood = "bound"
    elif _takes_images(getattr(pipe, "code_likelihood", None)):
        likelihood = "codes"
    elif hasattr(getattr(pipe, "model", None), "log_likelihood"):
        likelihood = "elbo"
    else:
        likelihood = None
    size = expected_image_size(pipe)
    # a text pipeline's batch is its prompts times `num_images_per_prompt`; the others take `batch_size`
    batch_names = ("num_images_per_prompt", "batch_size") if text else ("batch_size", "num_images_per_prompt")
    return Capabilities(
        sample=sample,
        batch_argument=next((n for n in batch_names if n in call), None) if sample else None,
        num_inference_steps=_default(call, "num_inference_steps") if sample or instruction_edit else None,
        guidance_scale=(_default(call, "guidance_scale") if conditioned or instruction_edit else None),
        prompt=text,
        num_classes=num_classes,
        sampling_options=options if sample else {},
        reconstruct=reconstruct,
        reconstruct_steps=_default(_parameters(getattr(pipe, "reconstruct", None)), "num_inference_steps") if reconstruct else None,
        interpolate_seeds=seeds,
        interpolate_images=callable(interpolate) and callable(getattr(pipe, "encode", None)),
        likelihood=likelihood,
        prompt_to_prompt=prompt_to_prompt_pipeline(pipe) is not None,
        instruction_edit=instruction_edit,
        image_size=None if size is None else size[0],
        image_channels=3 if size is None else size[1],
    )


def prompt_to_prompt_pipeline(pipe):
    """A `PromptToPromptPipeline` on `pipe`'s modules (not copies) when its UNet cross-attends to text, else None."""
    from hf_genzoo.pipelines import InstructPix2PixPipeline, PromptToPromptPipeline

    if isinstance(pipe, PromptToPromptPipeline):
        return pipe
    if not is_text_conditioned(pipe) or isinstance(pipe, InstructPix2PixPipeline):
        return None
    cached = getattr(pipe, "_demo_prompt_to_prompt", None)
    if cached is None:
        try:
            cached = PromptToPromptPipeline.from_pipe(pipe)
        except ValueError:  # no cross-attention layer
            cached = False
        pipe._demo_prompt_to_prompt = cached
    return cached or None


# ---- the actions, without Gradio -------------------------------------------------------------------------------------


def _generator(seed) -> torch.Generator:
    if seed is None or float(seed) != int(float(seed)) or int(float(seed)) < 0:
        raise ValueError(f"seed must be a whole number ≥ 0, got {seed!r}")
    return torch.Generator().manual_seed(int(float(seed)))


def _whole(value, name: str, low: int, high: int) -> int:
    if value is None or float(value) != int(float(value)) or not low <= int(float(value)) <= high:
        raise ValueError(f"{name} must be a whole number in [{low}, {high}], got {value!r}")
    return int(float(value))


def check_image(image, pipe, what: str = "the image") -> PIL.Image.Image:
    """An uploaded image (a PIL image or a file path) checked against the pipeline's image size, in its mode."""
    if image is None:
        raise ValueError(f"upload {what} first")
    if isinstance(image, (str, os.PathLike)):
        try:
            with PIL.Image.open(image) as opened:
                opened.load()
                image = opened.copy()
        except (PIL.UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{what} ({Path(image).name}) is not an image file that can be read (PNG, JPEG, WebP, ...)") from error
    if not isinstance(image, PIL.Image.Image):
        raise ValueError(f"{what} must be an image, got {type(image).__name__}")
    size = expected_image_size(pipe)
    if size is not None:
        (height, width), channels = size
        if image.size != (width, height):
            raise ValueError(
                f"{what} is {image.width}×{image.height} pixels; this model takes {width}×{height} images "
                "(resize or crop it first)"
            )
    else:
        channels = 3
    return image.convert("L" if channels == 1 else "RGB")


def _condition(pipe, caps: Capabilities, prompt=None, class_label=None) -> dict:
    """`__call__`'s condition keywords: a prompt (text) or a class label; nothing for ∅."""
    if caps.prompt:
        if prompt is None or not str(prompt).strip():
            raise ValueError("this model is text-conditioned: write a prompt")
        return {"prompt": str(prompt)}
    if prompt:
        raise ValueError(f"this {type(pipe).__name__} takes no prompt")
    if class_label in (None, "", "none"):
        return {}
    if caps.num_classes is None:
        raise ValueError(f"this {type(pipe).__name__} takes no class label")
    return {"class_labels": _whole(class_label, "class label", 0, caps.num_classes - 1)}


def sample(
    pipe,
    caps: Capabilities,
    seed=0,
    batch_size=4,
    num_inference_steps=None,
    guidance_scale=None,
    prompt=None,
    class_label=None,
    **options,
) -> list[PIL.Image.Image]:
    """Sample `batch_size` images with the controls the page shows for this pipeline."""
    if not caps.sample:
        raise ValueError(f"this {type(pipe).__name__} does not sample on its own")
    kwargs = dict(generator=_generator(seed), **_condition(pipe, caps, prompt, class_label))
    if caps.batch_argument is not None:
        kwargs[caps.batch_argument] = _whole(batch_size, "batch size", 1, MAX_BATCH)
    if caps.num_inference_steps is not None and num_inference_steps is not None:
        kwargs["num_inference_steps"] = _whole(num_inference_steps, "steps", 1, 1000)
    if caps.guidance_scale is not None and guidance_scale is not None and ("prompt" in kwargs or "class_labels" in kwargs):
        kwargs["guidance_scale"] = float(guidance_scale)
    for name, value in options.items():
        if name not in caps.sampling_options:
            raise ValueError(f"this {type(pipe).__name__} takes no {name}")
        if name == "truncation":
            value = float(value) or None
        elif name == "markov_chain_steps":
            value = _whole(value, name, 0, 1000)
        kwargs[name] = value
    return pipe(**kwargs).images


def reconstruct(pipe, caps: Capabilities, image, num_inference_steps=None, prompt=None, class_label=None):
    """(the input, its reconstruction, PSNR in dB)."""
    from hf_genzoo.metrics.reconstruction import psnr

    if not caps.reconstruct:
        raise ValueError(f"this {type(pipe).__name__} does not reconstruct images")
    image = check_image(image, pipe)
    kwargs = {}
    if caps.reconstruct_steps is not None:
        kwargs["num_inference_steps"] = _whole(num_inference_steps or caps.reconstruct_steps, "steps", 1, 1000)
    if caps.prompt and prompt:
        kwargs["prompt"] = str(prompt)
    elif class_label not in (None, "", "none") and caps.num_classes is not None:
        kwargs.update(_condition(pipe, caps, None, class_label))
    output = pipe.reconstruct([image], **kwargs)
    result = output.images[0] if hasattr(output, "images") else output[0]
    to_tensor = lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1)[None]  # noqa: E731
    return image, result, float(psnr(to_tensor(image), to_tensor(result))[0])


def seed_latent(pipe, caps: Capabilities, seed) -> torch.Tensor:
    """The latent that `seed` gives: a draw from the model's prior (autoencoder family, GAN) or z_T (diffusion)."""
    generator = _generator(seed)
    model = getattr(pipe, "model", None)
    if model is not None and hasattr(model, "sample_prior"):
        return model.sample_prior(1, generator=generator)
    if hasattr(pipe, "generator_model"):
        return pipe.prepare_latents(1, generator)
    from diffusers.utils.torch_utils import randn_tensor

    height, width = pipe.default_size() if hasattr(pipe, "default_size") else caps.image_size
    f = getattr(pipe, "vae_scale_factor", 1)
    shape = (1, pipe.unet.config.in_channels, height // f, width // f)
    return randn_tensor(shape, generator=generator, dtype=pipe.unet.dtype)


def interpolate_seeds(
    pipe,
    caps: Capabilities,
    seed_a=0,
    seed_b=1,
    num_frames=16,
    num_inference_steps=None,
    guidance_scale=None,
    prompt=None,
    class_label=None,
) -> list[PIL.Image.Image]:
    """Frames along the slerp path between the latents of two seeds, both ends included."""
    from hf_genzoo.pipelines.pipeline_autoencoder import slerp

    if not caps.interpolate_seeds:
        raise ValueError(f"this {type(pipe).__name__} does not interpolate between seeds")
    num_frames = _whole(num_frames, "frames", 2, MAX_FRAMES)
    z_a, z_b = seed_latent(pipe, caps, seed_a), seed_latent(pipe, caps, seed_b)
    condition = _condition(pipe, caps, prompt, class_label)
    if callable(getattr(pipe, "interpolate", None)):
        return pipe.interpolate(z_a, z_b, num_steps=num_frames, **condition).images
    path = slerp(z_a.float(), z_b.float(), torch.linspace(0, 1, num_frames)).to(z_a.dtype)  # (frames, C, h, w)
    kwargs = dict(latents=path, **condition)
    kwargs["num_images_per_prompt" if caps.prompt else "batch_size"] = num_frames
    if caps.num_inference_steps is not None and num_inference_steps is not None:
        kwargs["num_inference_steps"] = _whole(num_inference_steps, "steps", 1, 1000)
    if guidance_scale is not None and condition:
        kwargs["guidance_scale"] = float(guidance_scale)
    return pipe(**kwargs).images


def interpolate_images(pipe, caps: Capabilities, image_a, image_b, num_frames=16) -> list[PIL.Image.Image]:
    """Frames decoded along the path between the latents of two uploaded images."""
    if not caps.interpolate_images:
        raise ValueError(f"this {type(pipe).__name__} does not interpolate between images")
    a, b = check_image(image_a, pipe, "the first image"), check_image(image_b, pipe, "the second image")
    return pipe.interpolate(a, b, num_steps=_whole(num_frames, "frames", 2, MAX_FRAMES)).images


def likelihood(pipe, caps: Capabilities, image, num_sampled_timesteps=50, prompt=None, class_label=None, seed=0, iwae_samples=64) -> dict:
    """{name: bits per dimension} for one image: the negative of the pipeline's bound(s) on log p (a diffusion bound
    from `num_sampled_timesteps` sampled terms, 0 for all; a VAE's ELBO and its `iwae_samples`-sample IWAE bound)."""
    image = check_image(image, pipe)
    generator = _generator(seed)
    if caps.likelihood == "bound":
        condition = _condition(pipe, caps, prompt, class_label) if (prompt or class_label not in (None, "", "none")) else {}
        k = _whole(num_sampled_timesteps, "sampled timesteps", 0, 100000) or None
        bits = pipe.likelihood([image], num_sampled_timesteps=k, generator=generator, **condition)
        what = "variational bound of the first stage's latents" if hasattr(pipe, "first_stage") else "variational bound"
        estimate = "all timesteps" if k is None else f"an unbiased estimate from {k} sampled timesteps"
        return {f"{what} ({estimate}), bits/dim": float(bits[0])}
    if caps.likelihood == "codes":
        result = pipe.code_likelihood([image], **({"class_labels": int(class_label)} if class_label not in (None, "", "none") else {}))
        return {"−log p(codes) under the prior, bits/dim": float(result["bits_per_dim"][0])}
    if caps.likelihood == "elbo":
        from hf_genzoo.metrics.likelihood import iwae_bound, vae_elbo
        from hf_genzoo.metrics.reconstruction import nats_to_bits_per_dim

        x = pipe._to_tensor([image])  # (1, C, H, W) in [-1, 1]
        dims = x[0].numel()
        elbo = float(vae_elbo(pipe.model, x, generator=generator)[0])
        k = _whole(iwae_samples, "IWAE samples", 1, 100000)
        iwae = float(iwae_bound(pipe.model, x, num_samples=k, generator=generator)[0])
        return {
            "negative ELBO (an upper bound on −log p(x)), bits/dim": nats_to_bits_per_dim(-elbo, dims),
            f"negative IWAE bound, k = {k} (tighter), bits/dim": nats_to_bits_per_dim(-iwae, dims),
        }
    raise ValueError(f"this {type(pipe).__name__} has no likelihood")


def parse_reweight(text: str | None) -> dict[str, float] | None:
    """'word: 2.0, other: 0.5' → {'word': 2.0, 'other': 0.5}; empty → None."""
    if not text or not text.strip():
        return None
    weights = {}
    for item in text.split(","):
        word, sep, value = item.partition(":")
        try:
            weights[word.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not word.strip():
            raise ValueError(f"re-weighting must read 'word: weight, ...' (e.g. 'red: 2'), got {text!r}")
    return weights


def prompt_to_prompt(
    pipe,
    source_prompt: str,
    edited_prompt: str,
    edit_type: str = "replace",
    reweight: str | None = None,
    seed=0,
    num_inference_steps=50,
    guidance_scale=7.5,
    cross_replace_steps=0.8,
    self_replace_steps=0.4,
) -> tuple[list[PIL.Image.Image], list[list[PIL.Image.Image]]]:
    """(the source's and the edit's images, each prompt's per-word cross-attention maps) from one call."""
    from hf_genzoo.attention.prompt_to_prompt import token_ids
    from hf_genzoo.pipelines.pipeline_prompt_to_prompt import label_maps

    editor = prompt_to_prompt_pipeline(pipe)
    if editor is None:
        raise ValueError(f"this {type(pipe).__name__} has no cross-attention to a prompt to edit")
    prompts = [str(source_prompt or "").strip(), str(edited_prompt or "").strip()]
    if not all(prompts):
        raise ValueError("write a source prompt and an edited prompt")
    output = editor(
        prompts,
        edit_type=edit_type,
        equalizer=parse_reweight(reweight),
        cross_replace_steps=float(cross_replace_steps),
        self_replace_steps=float(self_replace_steps),
        num_inference_steps=_whole(num_inference_steps, "steps", 1, 1000),
        guidance_scale=float(guidance_scale),
        generator=_generator(seed),
    )
    maps = output.attention_store.aggregate()  # (P, h, w, L)
    special = set(editor.tokenizer.all_special_ids)
    figures = []
    for row, prompt in enumerate(prompts):
        ids = token_ids(prompt, editor.tokenizer)
        words = [i for i, token in enumerate(ids) if token not in special] or list(range(len(ids)))
        labels = [editor.tokenizer.decode([ids[i]]) for i in words]
        image = output.images[row]
        figures.append(label_maps(maps[row][..., words].permute(2, 0, 1).cpu(), labels, (image.height, image.width)))
    return list(output.images), figures


def instruction_edit(pipe, caps: Capabilities, image, instruction: str, seed=0, num_inference_steps=None, guidance_scale=7.5, image_guidance_scale=1.5):
    """(the input, the edited image)."""
    if not caps.instruction_edit:
        raise ValueError(f"this {type(pipe).__name__} does not edit images by instruction")
    image = check_image(image, pipe)
    if not instruction or not str(instruction).strip():
        raise ValueError("write an instruction, e.g. 'make the circle blue'")
    kwargs = dict(generator=_generator(seed), guidance_scale=float(guidance_scale), image_guidance_scale=float(image_guidance_scale))
    if num_inference_steps is not None:
        kwargs["num_inference_steps"] = _whole(num_inference_steps, "steps", 1, 1000)
    return image, pipe(str(instruction), image, **kwargs).images[0]


# ---- pictures --------------------------------------------------------------------------------------------------------


def upscale(image: PIL.Image.Image, tile: int = DISPLAY_TILE) -> PIL.Image.Image:
    """Nearest-neighbour upscaling by a whole factor until the shorter side is at least `tile` pixels."""
    factor = max(1, math.ceil(tile / min(image.size)))
    return image.resize((image.width * factor, image.height * factor), PIL.Image.NEAREST) if factor > 1 else image


def grid(images, columns: int | None = None, tile: int = DISPLAY_TILE, labels: list[str] | None = None) -> PIL.Image.Image:
    """Images (upscaled to `tile`) in a grid with 4-pixel white gaps, an optional caption above each column."""
    images = [upscale(image.convert("RGB"), tile) for image in images]
    if not images:
        raise ValueError("no images to show")
    columns = columns or min(len(images), 4)
    rows = math.ceil(len(images) / columns)
    width, height = max(i.width for i in images), max(i.height for i in images)
    caption = 16 if labels else 0
    sheet = PIL.Image.new("RGB", (columns * (width + 4) + 4, caption + rows * (height + 4) + 4), "white")
    draw = PIL.ImageDraw.Draw(sheet)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        sheet.paste(image, (4 + column * (width + 4), caption + 4 + row * (height + 4)))
    for column, label in enumerate(labels or []):
        draw.text((4 + column * (width + 4), 2), label, fill="black", font=PIL.ImageFont.load_default())
    return sheet


def save_animation(frames, folder: str) -> str:
    """The frames (upscaled) as a looping animated GIF in `folder`; its path."""
    from hf_genzoo.pipelines import save_gif

    handle, path = tempfile.mkstemp(suffix=".gif", dir=folder)
    os.close(handle)
    return save_gif([upscale(frame.convert("RGB"), 2 * DISPLAY_TILE) for frame in frames], path, duration_ms=80)


# ---- the page --------------------------------------------------------------------------------------------------------


def _gradio():
    try:
        import gradio
    except ImportError as error:
        raise ImportError('the demo needs Gradio: pip install "hf_genzoo[demo]"') from error
    return gradio


@contextlib.contextmanager
def errors_on_page():
    """A ValueError (bad input) becomes `gr.Error`, which the page shows as a message instead of a traceback."""
    gr = _gradio()
    try:
        yield
    except gr.Error:
        raise
    except (ValueError, NotImplementedError) as error:
        raise gr.Error(str(error)) from error


def _image_input(label: str, elem_id: str):
    """An image upload that says in words when the file is not an image (Gradio's own would fail in PIL)."""
    gr = _gradio()

    class ImageUpload(gr.Image):
        is_template = True  # the page draws it as a gr.Image

        def preprocess(self, payload):
            try:
                return super().preprocess(payload)
            except (PIL.UnidentifiedImageError, OSError) as error:
                name = getattr(payload, "orig_name", None) or "the file"
                raise gr.Error(f"{name} is not an image file that can be read (PNG, JPEG, WebP, ...)") from error

    return ImageUpload(
        label=label, type="pil", image_mode=None, sources=["upload", "clipboard"], elem_id=elem_id, elem_classes="genzoo-upload", height=200
    )


def _short_name(name: str) -> str:
    return Path(str(name).rstrip("/")).name or str(name)


def _model_tab(gr, name: str, pipe, prefix: str, workdir: str) -> None:
    """The controls of one loaded pipeline (inside its tab)."""
    caps = capabilities(pipe)
    size = "×".join(map(str, caps.image_size[::-1])) if caps.image_size else "?"
    condition = "text prompt" if caps.prompt else (f"{caps.num_classes} classes" if caps.num_classes else "unconditional")
    gr.Markdown(
        f"**{type(pipe).__name__}** from `{name}` · {size} images, {condition} · offers: {', '.join(caps.summary()) or 'nothing'}",
        elem_id=f"{prefix}-header",
    )
    progress = gr.Progress(track_tqdm=True)

    def condition_inputs(tab):
        prompt = gr.Textbox(label="prompt", placeholder="a large red circle at the top left", visible=caps.prompt, elem_id=f"{prefix}-{tab}-prompt")
        classes = ["none"] + [str(i) for i in range(caps.num_classes or 0)]
        label = gr.Dropdown(classes, value="none", label="class label (none: unconditional)", visible=caps.num_classes is not None)
        return prompt, label

    def steps_input(default, tab):
        return gr.Slider(1, max(200, default or 0), value=min(default or 50, 50), step=1, label="steps", visible=default is not None, elem_id=f"{prefix}-{tab}-steps")

    def guidance_input(default, tab, label="guidance scale"):
        return gr.Slider(0.0, 15.0, value=default if default is not None else 1.0, step=0.5, label=label, visible=default is not None, elem_id=f"{prefix}-{tab}-guidance")

    with gr.Tabs():
        if caps.sample:
            with gr.Tab("Sample"):
                with gr.Row():
                    with gr.Column(scale=1):
                        prompt, label = condition_inputs("sample")
                        seed = gr.Number(0, precision=0, label="seed", minimum=0, elem_id=f"{prefix}-sample-seed")
                        batch = gr.Slider(1, MAX_BATCH, value=8, step=1, label="images", visible=caps.batch_argument is not None)
                        steps = steps_input(caps.num_inference_steps, "sample")
                        guidance = guidance_input(caps.guidance_scale, "sample")
                        options = [
                            gr.Slider(low, high, value=caps.sampling_options[name], step=step, label=text)
                            for name, (text, low, high, step, _) in SAMPLING_OPTIONS.items()
                            if name in caps.sampling_options
                        ]
                        button = gr.Button("Sample", variant="primary", elem_id=f"{prefix}-sample-button")
                    output = gr.Image(label="samples", type="pil", format="png", elem_id=f"{prefix}-sample-output", scale=2)
                option_names = [name for name in SAMPLING_OPTIONS if name in caps.sampling_options]

                def on_sample(prompt, label, seed, batch, steps, guidance, *values, progress=progress):
                    with errors_on_page():
                        progress(0, desc="sampling")
                        images = sample(
                            pipe, caps, seed, batch, steps, guidance, prompt, label, **dict(zip(option_names, values))
                        )
                        return grid(images)

                button.click(on_sample, [prompt, label, seed, batch, steps, guidance, *options], output)

        if caps.reconstruct:
            with gr.Tab("Reconstruct"):
                with gr.Row():
                    with gr.Column(scale=1):
                        image = _image_input(f"an image ({size})", f"{prefix}-reconstruct-input")
                        prompt, label = condition_inputs("reconstruct")
                        steps = steps_input(caps.reconstruct_steps, "reconstruct")
                        button = gr.Button("Reconstruct", variant="primary", elem_id=f"{prefix}-reconstruct-button")
                    with gr.Column(scale=2):
                        output = gr.Image(label="input | reconstruction", type="pil", format="png", elem_id=f"{prefix}-reconstruct-output")
                        score = gr.Markdown()

                def on_reconstruct(image, prompt, label, steps, progress=progress):
                    with errors_on_page():
                        progress(0, desc="reconstructing")
                        original, result, quality = reconstruct(pipe, caps, image, steps, prompt, label)
                        return grid([original, result], labels=["input", "reconstruction"]), f"PSNR {quality:.2f} dB"

                button.click(on_reconstruct, [image, prompt, label, steps], [output, score])

        if caps.interpolate_seeds or caps.interpolate_images:
            with gr.Tab("Interpolate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        frames = gr.Slider(2, MAX_FRAMES, value=16, step=1, label="frames")
                        if caps.interpolate_seeds:
                            prompt, label = condition_inputs("interpolate")
                            with gr.Row():
                                seed_a = gr.Number(0, precision=0, label="seed A", minimum=0)
                                seed_b = gr.Number(1, precision=0, label="seed B", minimum=0)
                            steps = steps_input(caps.num_inference_steps, "interpolate")
                            guidance = guidance_input(caps.guidance_scale, "interpolate")
                            seeds_button = gr.Button("Interpolate between seeds", variant="primary", elem_id=f"{prefix}-interpolate-seeds-button")
                        if caps.interpolate_images:
                            with gr.Row():
                                image_a = _image_input("image A", f"{prefix}-interpolate-a")
                                image_b = _image_input("image B", f"{prefix}-interpolate-b")
                            images_button = gr.Button("Interpolate between images", elem_id=f"{prefix}-interpolate-images-button")
                    output = gr.Image(label="animation", type="filepath", elem_id=f"{prefix}-interpolate-output", scale=2)

                if caps.interpolate_seeds:

                    def on_seeds(frames, prompt, label, seed_a, seed_b, steps, guidance, progress=progress):
                        with errors_on_page():
                            progress(0, desc="interpolating")
                            path = interpolate_seeds(pipe, caps, seed_a, seed_b, frames, steps, guidance, prompt, label)
                            return save_animation(path, workdir)

                    seeds_button.click(on_seeds, [frames, prompt, label, seed_a, seed_b, steps, guidance], output)
                if caps.interpolate_images:

                    def on_images(frames, image_a, image_b, progress=progress):
                        with errors_on_page():
                            return save_animation(interpolate_images(pipe, caps, image_a, image_b, frames), workdir)

                    images_button.click(on_images, [frames, image_a, image_b], output)

        if caps.likelihood is not None:
            with gr.Tab("Likelihood"):
                with gr.Row():
                    with gr.Column(scale=1):
                        image = _image_input(f"an image ({size})", f"{prefix}-likelihood-input")
                        prompt, label = condition_inputs("likelihood")
                        timesteps = gr.Slider(0, 1000, value=50, step=10, label="sampled timesteps (0: all, exact but slow)", visible=caps.likelihood == "bound")
                        button = gr.Button("Bits per dimension", variant="primary", elem_id=f"{prefix}-likelihood-button")
                    output = gr.Markdown(elem_id=f"{prefix}-likelihood-output")

                def on_likelihood(image, prompt, label, timesteps, progress=progress):
                    with errors_on_page():
                        progress(0, desc="computing the bound")
                        values = likelihood(pipe, caps, image, timesteps, prompt, label)
                        return "\n".join(f"- {name}: **{value:.4f}**" for name, value in values.items())

                button.click(on_likelihood, [image, prompt, label, timesteps], output)

        if caps.prompt_to_prompt:
            with gr.Tab("Prompt-to-prompt"):
                with gr.Row():
                    with gr.Column(scale=1):
                        source = gr.Textbox(label="source prompt", placeholder="a large red circle at the top left", elem_id=f"{prefix}-p2p-source")
                        edited = gr.Textbox(label="edited prompt", placeholder="a large blue circle at the top left", elem_id=f"{prefix}-p2p-edited")
                        edit_type = gr.Radio(list(EDIT_TYPES), value="replace", label="edit (replace: swap words of as many tokens; refine: add words; reweight: scale words)")
                        reweight = gr.Textbox(label="re-weight words (optional), e.g. 'red: 2'")
                        seed = gr.Number(0, precision=0, label="seed", minimum=0)
                        steps = steps_input(50, "p2p")
                        guidance = guidance_input(7.5, "p2p")
                        cross = gr.Slider(0.0, 1.0, value=0.8, step=0.05, label="cross-attention replaced for this fraction of steps")
                        self_ = gr.Slider(0.0, 1.0, value=0.4, step=0.05, label="self-attention replaced for this fraction of steps")
                        button = gr.Button("Edit", variant="primary", elem_id=f"{prefix}-p2p-button")
                    with gr.Column(scale=2):
                        output = gr.Image(label="source | edit", type="pil", format="png", elem_id=f"{prefix}-p2p-output")
                        maps = gr.Image(label="cross-attention of each word (top: source, bottom: edit)", type="pil", format="png", elem_id=f"{prefix}-p2p-maps")

                def on_p2p(source, edited, edit_type, reweight, seed, steps, guidance, cross, self_, progress=progress):
                    with errors_on_page():
                        progress(0, desc="editing")
                        images, figures = prompt_to_prompt(pipe, source, edited, edit_type, reweight, seed, steps, guidance, cross, self_)
                        columns = max(len(row) for row in figures)
                        cells = [cell for row in figures for cell in row + [PIL.Image.new("RGB", row[0].size, "white")] * (columns - len(row))]
                        return grid(images, labels=["source", "edit"]), grid(cells, columns=columns, tile=96)

                button.click(on_p2p, [source, edited, edit_type, reweight, seed, steps, guidance, cross, self_], [output, maps])

        if caps.instruction_edit:
            with gr.Tab("Instruction edit"):
                with gr.Row():
                    with gr.Column(scale=1):
                        image = _image_input(f"an image ({size})", f"{prefix}-instruct-input")
                        instruction = gr.Textbox(label="instruction", placeholder="make the circle blue")
                        seed = gr.Number(0, precision=0, label="seed", minimum=0)
                        steps = steps_input(caps.num_inference_steps, "instruct")
                        guidance = guidance_input(caps.guidance_scale if caps.guidance_scale is not None else 7.5, "instruct", "text guidance s_T")
                        image_guidance = gr.Slider(0.0, 5.0, value=1.5, step=0.1, label="image guidance s_I")
                        button = gr.Button("Edit", variant="primary", elem_id=f"{prefix}-instruct-button")
                    output = gr.Image(label="input | edit", type="pil", format="png", elem_id=f"{prefix}-instruct-output", scale=2)

                def on_instruct(image, instruction, seed, steps, guidance, image_guidance, progress=progress):
                    with errors_on_page():
                        progress(0, desc="editing")
                        original, result = instruction_edit(pipe, caps, image, instruction, seed, steps, guidance, image_guidance)
                        return grid([original, result], labels=["input", "edit"])

                button.click(on_instruct, [image, instruction, seed, steps, guidance, image_guidance], output)


def build_app(names, device: str | None = None):
    """The page: one tab per folder or Hub repo id; a tab that cannot be loaded says why."""
    gr = _gradio()
    workdir = tempfile.mkdtemp(prefix="genzoo-demo-")
    with gr.Blocks(title="hf_genzoo demo", analytics_enabled=False) as app:
        gr.Markdown("## hf_genzoo demo")
        with gr.Tabs():
            for index, name in enumerate(names):
                prefix = f"m{index}"
                with gr.Tab(_short_name(name), id=prefix, elem_id=f"{prefix}-tab"):
                    try:
                        pipe = load_pipeline(name, device)
                    except ValueError as error:
                        logger.warning("%s", error)
                        gr.Markdown(f"**Could not open `{name}`.** {error}", elem_id=f"{prefix}-error")
                        continue
                    pipe.set_progress_bar_config(desc=_short_name(name))
                    _model_tab(gr, str(name), pipe, prefix, workdir)
    app.genzoo_workdir = workdir
    return app


def launch_kwargs() -> dict:
    """`Blocks.launch` keywords shared by the command and the tests: a theme with local fonts (no font download), no
    server-side rendering."""
    gr = _gradio()
    fonts = dict(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    return dict(theme=gr.themes.Default(**fonts), css=CSS, ssr_mode=False, show_error=True, allowed_paths=[tempfile.gettempdir()])


# ---- --train-shapes and the command ----------------------------------------------------------------------------------


def train_shapes(output_dir: str, max_train_steps: int = TRAIN_SHAPES_STEPS) -> str:
    """Train the README's main-job VAE for `max_train_steps` steps into `output_dir` (kept if it holds a pipeline)."""
    if (Path(output_dir) / "model_index.json").is_file():
        print(f"{output_dir} already holds a trained pipeline: opening it (delete it to train again)")
        return output_dir
    script = Path(__file__).resolve().parents[1] / "training_scripts" / "train_autoencoder.py"
    if not script.is_file():
        raise ValueError(
            f"--train-shapes runs training_scripts/train_autoencoder.py of a clone of the repository "
            f"(pip install -e .), and this install has none at {script}"
        )
    command = [sys.executable, str(script), *TRAIN_SHAPES_ARGS, "--max_train_steps", str(max_train_steps), "--output_dir", output_dir]
    print("training:", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)
    return output_dir


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="genzoo-demo",
        description="Open saved hf_genzoo pipelines (folders or Hub repo ids) in a browser page, one tab each.",
    )
    parser.add_argument("models", nargs="*", metavar="FOLDER_OR_REPO_ID", help="saved pipeline folders or Hub repo ids")
    parser.add_argument("--train-shapes", action="store_true", help=f"first train a small shapes-world VAE (the README's main job for {TRAIN_SHAPES_STEPS} steps, a few minutes on a CPU) and open it")
    parser.add_argument("--shapes-dir", default="shapes-vae-demo", help="where --train-shapes writes (and finds) its folder")
    parser.add_argument("--shapes-steps", type=int, default=TRAIN_SHAPES_STEPS, help="training steps of --train-shapes")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    parser.add_argument("--device", default=None, help="torch device for the models (default: cuda if available, else cpu)")
    args = parser.parse_args(argv)
    if not args.models and not args.train_shapes:
        parser.error("give at least one saved pipeline folder or Hub repo id, or --train-shapes")
    if args.shapes_steps < 1:
        parser.error(f"--shapes-steps must be ≥ 1, got {args.shapes_steps}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    models = list(args.models)
    if args.train_shapes:
        try:
            models.insert(0, train_shapes(args.shapes_dir, args.shapes_steps))
        except (ValueError, subprocess.CalledProcessError) as error:
            sys.exit(f"genzoo-demo: {error}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    app = build_app(models, device=device)
    app.queue().launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs())


if __name__ == "__main__":
    main()
