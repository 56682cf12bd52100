"""PromptToPromptPipeline: text-guided editing of generated and real images by cross-attention control
(Hertz et al. 2022, arXiv:2208.01626), with DDIM and null-text inversion of real images (Mokady et al. 2023,
arXiv:2211.09794) and two baselines that need no attention control, SDEdit (Meng et al. 2022, arXiv:2108.01073) and
latent inpainting by replacing the known region.

Prompt-to-prompt (../shared/EQUATIONS.md, "Prompt-to-prompt"): the source prompt (prompt 0) and its edits are
denoised in one batch from the same noise z_T; at the early steps the edits' attention uses the source's maps,
M̂_t = Edit(M_t, M*_t, t), so the layout of the source stays and only what the edited words say changes. The maps are
edited by `hf_genzoo.attention`'s controllers through `unet.set_attn_processor`; this pipeline builds the controller
from `edit_type`, installs it for the call and puts the UNet's own processors back afterwards.

Null-text inversion (Mokady et al. 2023, §3.2 and Algorithm 1), with z the latents and ∅ the unconditional
("null-text") embedding of classifier-free guidance:
    1. pivot: z*_0 = E(x), z*_T … z*_1 by DDIM inversion with the prompt's embedding C at guidance w = 1;
    2. z̄_T = z*_T; for t = T … 1: ∅_t = argmin_∅ ‖z*_{t−1} − z_{t−1}(z̄_t, ∅, C)‖²  (eq. 3; N Adam steps, from ∅_{t+1}),
       then z̄_{t−1} = z_{t−1}(z̄_t, ∅_t, C),
where z_{t−1}(z_t, ∅, C) is one DDIM step (Song et al. 2021, eq. 12) with the guided prediction
ε̃ = ε(z_t, ∅) + w (ε(z_t, C) − ε(z_t, ∅)) (Ho & Salimans 2022). Sampling from z*_T with ∅_t at each step then
reconstructs the image under guidance w, and editing the prompt from there edits the real image.

Notation as in hf_genzoo.schedulers and hf_genzoo.attention: z_t `latents` (B, C, h, w) with (h, w) = (H / f, W / f),
f the first stage's factor; S num_inference_steps; P prompts; n images per prompt; L tokens; D the text width.
Batch layout (diffusers'): the guided UNet batch is [∅ rows …, C rows …], each half prompt-major
([p0 i0, p0 i1, …, p1 i0, …]).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput, logging
from diffusers.utils.torch_utils import randn_tensor

from hf_genzoo.attention import (
    AttentionControlEdit,
    AttentionRefine,
    AttentionReplace,
    AttentionReweight,
    AttentionStore,
    LocalBlend,
    attention_layers,
    register_attention_control,
    word_token_indices,
)
from hf_genzoo.attention.prompt_to_prompt import token_ids
from hf_genzoo.schedulers import GenZooDDIMInverseScheduler, GenZooDDIMScheduler

from .pipeline_latent_diffusion import LatentDiffusionPipeline
from .pipeline_utils import check_output_type

logger = logging.get_logger(__name__)

EDIT_TYPES = ("replace", "refine", "reweight")
INVERSION_METHODS = ("ddim", "null_text")
COMPONENT_NAMES = ("vae", "unet", "scheduler", "text_encoder", "tokenizer", "vqvae")


@dataclass
class PromptToPromptPipelineOutput(BaseOutput):
    """Output of `PromptToPromptPipeline.__call__`.

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`): every prompt's images, prompt-major
            (P · n of them: the source's first).
        attention_store ([`AttentionControlEdit`]): the controller that edited the call; it holds the cross-attention
            maps of every row averaged over heads and steps: `attention_store.aggregate(resolution)` gives them per
            token, (P · n, h, w, L).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    attention_store: AttentionControlEdit


@dataclass
class AttentionMapsOutput(BaseOutput):
    """Output of `PromptToPromptPipeline.attention_maps`: one cross-attention map per token, as the paper's figures.

    Args:
        images (`list[PIL.Image.Image]`): per token, its map upsampled (bilinear) to the image size H × W and
            normalised by its maximum, with the token written under it (the figure is H + a label strip high, and widened
            with white margins when the label is wider than W). `diffusers.utils.make_image_grid(images, 1,
            len(images))` puts them side by side.
        maps (`np.ndarray`): the raw maps, (N, h, w) float32: attention averaged over heads, steps and the chosen
            layers, at the resolution of the largest chosen layer.
        tokens (`list[str]`): the N tokens, in prompt order (special tokens included when `words` is None).
        token_indices (`list[int]`): their positions in the text encoder's input.
        image (`PIL.Image.Image`): the image the maps were computed while generating.
    """

    images: list[PIL.Image.Image]
    maps: np.ndarray
    tokens: list[str]
    token_indices: list[int]
    image: PIL.Image.Image


@dataclass
class Inversion:
    """A real image inverted by `PromptToPromptPipeline.invert`; pass it to `__call__(..., inversion=...)` to edit.

    Args:
        latents (`torch.Tensor`): z*_T, (1, C, h, w): the start of sampling.
        null_embeddings (`torch.Tensor` or `None`): the optimised unconditional embeddings ∅_t, (S, L, D) float32, in
            sampling order (row i is used at `scheduler.timesteps[i]`); None for plain DDIM inversion (the empty
            prompt's embedding is ∅ at every step).
        trajectory (`torch.Tensor`): the DDIM inversion's pivot z*_0, z*_1, …, z*_T, (S + 1, 1, C, h, w);
            `trajectory[0]` is the image's latent E(x), `trajectory[-1]` is `latents`.
        reconstruction (`torch.Tensor`): the image sampled back from z*_T under guidance with the prompt (and ∅_t),
            (1, C, H, W) in [0, 1].
        psnr (`float`): PSNR of `reconstruction` against the input image, in dB (pixels in [0, 1]).
        first_stage_psnr (`float`): PSNR of the first stage's own reconstruction D(E(x)) against the input: the
            ceiling of `psnr` (the paper's Fig. 5 plots it beside its curves); the gap is the inversion's.
        prompt (`str`): the prompt the image was inverted with; edits take it as their source prompt.
        method (`"ddim"` or `"null_text"`), guidance_scale (`float`), num_inference_steps (`int`): how it was made.
    """

    latents: torch.Tensor
    null_embeddings: torch.Tensor | None
    trajectory: torch.Tensor
    reconstruction: torch.Tensor
    psnr: float
    first_stage_psnr: float
    prompt: str
    method: str
    guidance_scale: float
    num_inference_steps: int


def psnr(images: torch.Tensor, references: torch.Tensor) -> float:
    """PSNR = 10 log10(1 / MSE) in dB of images in [0, 1] against references in [0, 1], over the whole batch."""
    mse = F.mse_loss(images.float(), references.float()).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


class PromptToPromptPipeline(LatentDiffusionPipeline):
    r"""
    Prompt-to-prompt editing (Hertz et al. 2022) of generated images and, after DDIM or null-text inversion
    (Mokady et al. 2023), of real ones; SDEdit and latent inpainting as baselines.

    A text-conditioned `LatentDiffusionPipeline` (a Stable Diffusion-style folder: `vae`, `text_encoder`, `tokenizer`,
    `unet`, `scheduler`); `from_pipe` builds it on the modules of a `LatentDiffusionPipeline` or a stock
    `StableDiffusionPipeline` without copying them.

    Parameters:
        vae ([`VAEModel`] or [`AutoencoderKL`]): the KL first stage (or pass `vae=None` and a `vqvae`).
        unet ([`UNet2DConditionModel`]): a UNet with cross-attention to the text; prompt-to-prompt edits its maps.
        scheduler ([`SchedulerMixin`]): the sampler; inversion needs a DDIM scheduler (ours or diffusers').
        text_encoder ([`~transformers.CLIPTextModel`]), tokenizer: encode the prompts.
        vqvae ([`VQVAEModel`] or [`VQModel`], *optional*): a VQ first stage instead of `vae`.
    """

    model_card_tags = ("diffusion", "latent-diffusion", "prompt-to-prompt", "ddim")

    def __init__(
        self,
        vae,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        text_encoder=None,
        tokenizer=None,
        vqvae=None,
    ):
        if not isinstance(unet, UNet2DConditionModel):
            raise ValueError(
                f"PromptToPromptPipeline edits cross-attention to a prompt: the UNet must be a UNet2DConditionModel, "
                f"got {type(unet).__name__}"
            )
        if not any(layer.is_cross for layer in attention_layers(unet).values()):
            raise ValueError(
                f"PromptToPromptPipeline edits cross-attention to a prompt, but the UNet ({type(unet).__name__} with "
                f"blocks {list(unet.config.down_block_types)}) has no cross-attention layer"
            )
        super().__init__(vae, unet, scheduler, text_encoder=text_encoder, tokenizer=tokenizer, vqvae=vqvae)

    @classmethod
    def from_pipe(cls, pipeline, **kwargs) -> "PromptToPromptPipeline":
        r"""
        A `PromptToPromptPipeline` on the modules of another text-to-image pipeline: the same objects, not copies.

        diffusers' `DiffusionPipeline.from_pipe` would keep a component only when its exact class is in this
        `__init__`'s annotations (it drops our `VAEModel` and diffusers' `AutoencoderKL` alike, then fails on the
        missing `vae`), and casts the shared modules to float32; this one takes `vae`, `unet`, `scheduler`,
        `text_encoder`, `tokenizer` and `vqvae` as they are. A stock pipeline's safety checker and feature extractor
        are not used.

        Args:
            pipeline ([`LatentDiffusionPipeline`] or [`~diffusers.StableDiffusionPipeline`]): the source pipeline.
            kwargs: components to use instead of the source's (e.g. `scheduler=...`); `torch_dtype` casts the
                (shared) modules, as diffusers' `from_pipe` does.
        """
        torch_dtype = kwargs.pop("torch_dtype", None)
        unknown = set(kwargs) - set(COMPONENT_NAMES)
        if unknown:
            raise ValueError(f"from_pipe takes the components {COMPONENT_NAMES} and torch_dtype, got {sorted(unknown)}")
        components = {name: kwargs.get(name, getattr(pipeline, name, None)) for name in COMPONENT_NAMES}
        new_pipeline = cls(**components)
        new_pipeline.set_progress_bar_config(**getattr(pipeline, "_progress_bar_config", {}))
        if torch_dtype is not None:
            new_pipeline.to(dtype=torch_dtype)
        return new_pipeline

    # ---- prompt-to-prompt ------------------------------------------------------------------------

    def _check_prompts(self, prompts) -> list[str]:
        if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or len(prompts) < 2:
            raise ValueError(f"prompts must be a list of a source prompt and at least one edit, got {prompts!r}")
        if not all(isinstance(prompt, str) for prompt in prompts):
            raise ValueError(f"prompts must be strings, got {prompts!r}")
        return list(prompts)

    def _check_token_for_token(self, prompts: list[str], edit_type: str) -> None:
        """A word swap (and a re-weighting without refinement) maps token j of an edit to token j of the source."""
        source_length = len(token_ids(prompts[0], self.tokenizer))
        for prompt in prompts[1:]:
            length = len(token_ids(prompt, self.tokenizer))
            if length != source_length:
                source_words, words = prompts[0].split(), prompt.split()
                changes = ", ".join(
                    f"{' '.join(source_words[i1:i2])!r} -> {' '.join(words[j1:j2])!r}"
                    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=source_words, b=words).get_opcodes()
                    if tag != "equal"
                )
                raise ValueError(
                    f"edit_type={edit_type!r} maps the prompts token for token, but {prompts[0]!r} has {source_length} "
                    f"tokens and {prompt!r} has {length} ({changes}); use edit_type='refine' to add or remove words"
                )

    def make_controller(
        self,
        prompts: list[str],
        edit_type: str,
        num_inference_steps: int,
        cross_replace_steps=0.8,
        self_replace_steps=0.4,
        equalizer: Mapping[str, float] | None = None,
        local_blend_words=None,
        local_blend_threshold: float = 0.3,
        do_classifier_free_guidance: bool = True,
    ) -> AttentionControlEdit:
        """The controller of an edit, as the paper's code builds it: `AttentionReplace` ("replace") or
        `AttentionRefine` ("refine"), wrapped in an `AttentionReweight` with `prev_controller` when an `equalizer` is
        given; `AttentionReweight` alone for "reweight". The outermost one has the schedule, the local blend and
        stores the cross-attention maps. Arguments as `__call__`."""
        prompts = self._check_prompts(prompts)
        if edit_type not in EDIT_TYPES:
            raise ValueError(f"edit_type must be one of {EDIT_TYPES}, got {edit_type!r}")
        if edit_type == "reweight" and not equalizer:
            raise ValueError("edit_type='reweight' needs an equalizer, e.g. {'red': 2.0}")
        if edit_type in ("replace", "reweight"):
            self._check_token_for_token(prompts, edit_type)
        local_blend = None
        if local_blend_words is not None:
            local_blend = LocalBlend(prompts, self.tokenizer, local_blend_words, threshold=local_blend_threshold)
        schedule = dict(
            cross_replace_steps=cross_replace_steps,
            self_replace_steps=self_replace_steps,
            do_classifier_free_guidance=do_classifier_free_guidance,
        )
        outer = dict(local_blend=local_blend, store_cross_attention=True)
        if edit_type == "reweight":
            return AttentionReweight(prompts, self.tokenizer, num_inference_steps, equalizer, **schedule, **outer)
        edit_class = AttentionReplace if edit_type == "replace" else AttentionRefine
        if not equalizer:
            return edit_class(prompts, self.tokenizer, num_inference_steps, **schedule, **outer)
        inner = edit_class(prompts, self.tokenizer, num_inference_steps, **schedule)
        return AttentionReweight(
            prompts, self.tokenizer, num_inference_steps, equalizer, prev_controller=inner, **schedule, **outer
        )

    def _shared_noise(self, num_prompts, num_images_per_prompt, height, width, generator, latents, inversion):
        """z_T for every row: one draw per image index, the same for every prompt (prompt-major, (P · n, C, h, w)).
        From `inversion.latents`, from `latents` ((n, C, h, w) shared, or (P · n, C, h, w) as given), or drawn as
        `LatentDiffusionPipeline` draws n images of one prompt (so the source's image is its image)."""
        channels, f = self.unet.config.in_channels, self.vae_scale_factor
        if inversion is not None:
            if latents is not None:
                raise ValueError("give latents or inversion, not both: an inversion's latents are its z*_T")
            latents = inversion.latents.expand(num_images_per_prompt, -1, -1, -1)
        elif latents is None:
            if isinstance(generator, list) and len(generator) != num_images_per_prompt:
                raise ValueError(
                    f"got {len(generator)} generators for {num_images_per_prompt} images per prompt: give one per "
                    "image (every prompt starts from the same noise)"
                )
            shape = (num_images_per_prompt, channels, height // f, width // f)
            latents = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=self.unet.dtype)
        if latents.shape[0] == num_images_per_prompt:
            latents = latents.repeat(num_prompts, 1, 1, 1)  # (P · n, C, h, w): prompt p, image i gets noise i
        elif latents.shape[0] != num_prompts * num_images_per_prompt:
            raise ValueError(
                f"latents have {latents.shape[0]} rows: give num_images_per_prompt={num_images_per_prompt} (shared by "
                f"every prompt) or {num_prompts} × {num_images_per_prompt}"
            )
        return latents

    def _generate(
        self,
        prompts: list[str],
        controller,
        *,
        num_inference_steps,
        guidance_scale,
        negative_prompt,
        eta,
        generator,
        latents,
        height,
        width,
        num_images_per_prompt,
        inversion,
        output_type,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=("latents",),
    ):
        """`LatentDiffusionPipeline.__call__` on all prompts with `controller` installed on the UNet; the UNet's
        processors are put back afterwards, even on error. With a null-text `inversion`, ∅_t replaces the
        unconditional half of the UNet's text batch before each step (through `callback_on_step_end`)."""
        do_cfg = guidance_scale > 1.0
        null_embeddings = None
        if inversion is not None:
            if num_inference_steps != inversion.num_inference_steps:
                raise ValueError(
                    f"num_inference_steps={num_inference_steps} but the inversion has "
                    f"{inversion.num_inference_steps} steps: edit it with as many"
                )
            if prompts[0] != inversion.prompt:
                raise ValueError(
                    f"the source prompt {prompts[0]!r} is not the inverted image's prompt {inversion.prompt!r}: "
                    "prompt 0 must be it"
                )
            if inversion.null_embeddings is not None:
                if negative_prompt is not None:
                    raise ValueError("a null-text inversion brings its own unconditional embeddings: drop negative_prompt")
                if guidance_scale != inversion.guidance_scale:
                    logger.warning(
                        f"the null-text embeddings were optimised for guidance_scale={inversion.guidance_scale}; "
                        f"sampling at {guidance_scale} will not reconstruct the image"
                    )
                null_embeddings = inversion.null_embeddings
        if height is None and width is None and (latents is not None or inversion is not None):
            spatial = (inversion.latents if inversion is not None else latents).shape[-2:]
            height, width = spatial[0] * self.vae_scale_factor, spatial[1] * self.vae_scale_factor
        default_height, default_width = self.default_size()
        height, width = height or default_height, width or default_width
        self.check_size(height, width)
        latents = self._shared_noise(len(prompts), num_images_per_prompt, height, width, generator, latents, inversion)
        negative_prompt_embeds = None
        if null_embeddings is not None and do_cfg:
            negative_prompt_embeds = null_embeddings[:1].expand(len(prompts), -1, -1)  # (P, L, D): ∅ of step 0

        def on_step_end(pipe, step, timestep, callback_kwargs):
            callback_kwargs = controller.step_callback(pipe, step, timestep, callback_kwargs)
            if negative_prompt_embeds is not None and step + 1 < len(null_embeddings):
                unconditional, conditional = callback_kwargs["prompt_embeds"].chunk(2)  # (P · n, L, D) each
                null = null_embeddings[step + 1].to(conditional).expand_as(unconditional)  # ∅_t of the next step
                callback_kwargs["prompt_embeds"] = torch.cat([null, conditional])  # (2 · P · n, L, D)
            if callback_on_step_end is not None:
                callback_kwargs.update(callback_on_step_end(pipe, step, timestep, callback_kwargs) or {})
            return callback_kwargs

        tensor_inputs = list(dict.fromkeys(["latents", "prompt_embeds", *callback_on_step_end_tensor_inputs]))
        if isinstance(generator, list):
            generator = generator * len(prompts)  # one per row for the scheduler's noise when eta > 0
        original_processors = dict(self.unet.attn_processors)
        try:
            register_attention_control(self.unet, controller)
            return LatentDiffusionPipeline.__call__(
                self,
                prompt=prompts,
                negative_prompt=negative_prompt,
                num_images_per_prompt=num_images_per_prompt,
                height=height,
                width=width,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                eta=eta,
                generator=generator,
                latents=latents,
                negative_prompt_embeds=negative_prompt_embeds,
                output_type=output_type,
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=tensor_inputs,
            ).images
        finally:
            self.unet.set_attn_processor(original_processors)

    @torch.no_grad()
    def __call__(
        self,
        prompts: list[str],
        edit_type: Literal["replace", "refine", "reweight"] = "replace",
        cross_replace_steps: float | tuple[float, float] | dict[str, float | tuple[float, float]] = 0.8,
        self_replace_steps: float | tuple[float, float] = 0.4,
        equalizer: dict[str, float] | None = None,
        local_blend_words: Sequence[str | Sequence[str] | None] | None = None,
        local_blend_threshold: float = 0.3,
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float = 7.5,
        height: int | None = None,
        width: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        num_images_per_prompt: int = 1,
        output_type: str = "pil",
        return_dict: bool = True,
        inversion: Inversion | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> PromptToPromptPipelineOutput | tuple:
        r"""
        Generate the source prompt and its edits in one batch from the same noise, the edits' attention controlled
        by the source's (Hertz et al. 2022, §3.2).

        Args:
            prompts (`list[str]`): the source prompt, then one or more edited prompts.
            edit_type (`"replace"`, `"refine"` or `"reweight"`, defaults to `"replace"`): word swap ("a red circle" →
                "a blue circle", prompts of as many tokens), adding words ("a circle" → "a red circle"), or
                re-weighting the `equalizer`'s words alone.
            cross_replace_steps (`float`, `(start, end)` or `dict`, defaults to 0.8): fraction of the steps, from the
                first, at which the edits use the source's cross-attention maps (the paper's τ); a dict gives a
                fraction per word of the edited prompts, `"default_"` for the other tokens. In [0, 1].
            self_replace_steps (`float` or `(start, end)`, defaults to 0.4): fraction of the steps at which the edits
                use the source's self-attention maps (on maps of at most 16 pixels a side at the UNet's sample size).
            equalizer (`dict[str, float]`, *optional*): word → scale c of its cross-attention maps, (M̂_t)_{i,j} =
                c_j (M_t)_{i,j}; needed by "reweight"; with "replace" or "refine" it re-weights that edit's maps
                (`AttentionReweight(prev_controller=...)`, as the paper composes them).
            local_blend_words (*optional*): one entry per prompt, the word(s) whose attention masks the edit, e.g.
                `("circle", "square")`: outside the mask the edits' latents are the source's.
            local_blend_threshold (`float`, defaults to 0.3): the mask keeps pixels whose normalised map exceeds it.
            negative_prompt (`str` or `list[str]`, *optional*): ∅ of guidance instead of the empty prompt.
            num_inference_steps (`int`, *optional*): S; defaults to the inversion's, or 50.
            guidance_scale (`float`, defaults to 7.5): w of classifier-free guidance; > 1 turns it on.
            height, width (`int`, *optional*): image size; defaults to the latents', or the UNet's sample size × f.
            eta (`float`, defaults to 0.0): η of DDIM.
            generator (`torch.Generator` or a list of n, *optional*): draws z_T, the same for every prompt, as
                `LatentDiffusionPipeline` draws n images of one prompt (so the source's image is its image).
            latents (`torch.Tensor`, *optional*): z_T, (n, C, h, w) shared by every prompt, or (P · n, C, h, w).
            num_images_per_prompt (`int`, defaults to 1): n.
            output_type (`"pil"`, `"np"`, `"pt"` or `"latent"`, defaults to `"pil"`).
            return_dict (`bool`, defaults to `True`): a `PromptToPromptPipelineOutput` rather than a tuple
                `(images, attention_store)`.
            inversion ([`Inversion`], *optional*): edit a real image: z*_T of `invert` for every prompt and, after a
                null-text inversion, its ∅_t as every prompt's unconditional embedding at step t. `prompts[0]` must be
                the inverted prompt and `num_inference_steps` the inversion's.
            callback_on_step_end (`Callable`, *optional*): `callback(pipe, step, timestep, callback_kwargs)` after the
                controller's own step callback; it sees "latents" and "prompt_embeds" and may return new ones.
            callback_on_step_end_tensor_inputs (`Sequence[str]`, defaults to `("latents",)`): further tensors for it.

        Returns:
            [`PromptToPromptPipelineOutput`] or `(images, attention_store)`: P · n images, prompt-major.

        Examples:
            ```py
            >>> pipe = PromptToPromptPipeline.from_pipe(StableDiffusionPipeline.from_pretrained(...))
            >>> out = pipe(["a cat riding a bicycle", "a dog riding a bicycle"], generator=torch.manual_seed(0))
            >>> out = pipe(["a cat", "a striped cat"], edit_type="refine", equalizer={"striped": 2.0})
            >>> inversion = pipe.invert(image, "a cat sitting", method="null_text")
            >>> out = pipe(["a cat sitting", "a dog sitting"], inversion=inversion, local_blend_words=("cat", "dog"))
            ```
        """
        # 1. validate and build the controller (every bad argument raises here, before the UNet is touched)
        prompts = self._check_prompts(prompts)
        if num_inference_steps is None:
            num_inference_steps = inversion.num_inference_steps if inversion is not None else 50
        self.check_num_inference_steps(num_inference_steps)
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
        controller = self.make_controller(
            prompts,
            edit_type,
            num_inference_steps,
            cross_replace_steps=cross_replace_steps,
            self_replace_steps=self_replace_steps,
            equalizer=equalizer,
            local_blend_words=local_blend_words,
            local_blend_threshold=local_blend_threshold,
            do_classifier_free_guidance=guidance_scale > 1.0,
        )

        # 2. encode, timesteps, z_T, denoising loop and decoding: LatentDiffusionPipeline's, with the controller
        images = self._generate(
            prompts,
            controller,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            negative_prompt=negative_prompt,
            eta=eta,
            generator=generator,
            latents=latents,
            height=height,
            width=width,
            num_images_per_prompt=num_images_per_prompt,
            inversion=inversion,
            output_type=output_type,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        if not return_dict:
            return images, controller
        return PromptToPromptPipelineOutput(images=images, attention_store=controller)

    @torch.no_grad()
    def attention_maps(
        self,
        prompt: str,
        resolution: int | tuple[int, int] | None = None,
        words: Sequence[str] | None = None,
        places: Sequence[str] = ("down", "mid", "up"),
        num_inference_steps: int | None = None,
        guidance_scale: float = 7.5,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        inversion: Inversion | None = None,
    ) -> AttentionMapsOutput:
        r"""
        Generate `prompt` and show which pixels each of its tokens attends to: the cross-attention maps of the
        conditional pass, averaged over heads, layers and steps (Hertz et al. 2022, §3.1, Fig. 4).

        Args:
            prompt (`str`): the prompt.
            resolution (`int` or `(h, w)`, *optional*): average only the layers whose map has this shorter side (or is
                exactly (h, w)) at the generated latent size, e.g. 16 for the paper's 16 × 16 maps of 64 × 64 latents;
                every layer, resized to the largest map, if None.
            words (`Sequence[str]`, *optional*): only these words' tokens; every token of the prompt (special tokens
                included) if None.
            places (`Sequence[str]`, defaults to all): `"down"`, `"mid"`, `"up"` parts of the UNet.
            num_inference_steps, guidance_scale, generator, latents, height, width, inversion: as `__call__` (with
                `inversion`, the maps of the real image's reconstruction).

        Returns:
            [`AttentionMapsOutput`]: labelled images at the image size, the raw (N, h, w) maps, the tokens.
        """
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {prompt!r}")
        ids = token_ids(prompt, self.tokenizer)
        if words is None:
            indices = list(range(len(ids)))
        else:
            indices = []
            for word in [words] if isinstance(words, str) else words:
                found = word_token_indices(prompt, word, self.tokenizer)
                if not found:
                    raise ValueError(f"word {word!r} is not in the prompt {prompt!r}")
                indices += [i for i in found if i not in indices]
        if num_inference_steps is None:
            num_inference_steps = inversion.num_inference_steps if inversion is not None else 50
        self.check_num_inference_steps(num_inference_steps)

        store = AttentionStore(do_classifier_free_guidance=guidance_scale > 1.0)
        image = self._generate(
            [prompt],
            store,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            negative_prompt=None,
            eta=0.0,
            generator=generator,
            latents=latents,
            height=height,
            width=width,
            num_images_per_prompt=1,
            inversion=inversion,
            output_type="pil",
        )[0]
        maps = store.aggregate(resolution, places=places)[0]  # (h, w, L): the prompt's row
        maps = maps[..., indices].permute(2, 0, 1).cpu()  # (N, h, w)
        tokens = [self.tokenizer.decode([ids[i]]) for i in indices]
        return AttentionMapsOutput(
            images=label_maps(maps, tokens, size=(image.height, image.width)),
            maps=maps.numpy(),
            tokens=tokens,
            token_indices=indices,
            image=image,
        )

    # ---- real images: inversion ------------------------------------------------------------------

    def _check_inversion_scheduler(self, num_inference_steps: int) -> None:
        """Inversion runs DDIM (η = 0) back and forth on the same steps: the sampler must be DDIM and its steps those
        of the inverse scheduler (t' = t − T // S: "leading" or "trailing" spacing)."""
        if not isinstance(self.scheduler, (DDIMScheduler, GenZooDDIMScheduler)):
            raise ValueError(
                f"inversion needs a DDIM scheduler, got {type(self.scheduler).__name__}: set "
                "pipe.scheduler = GenZooDDIMScheduler.from_config(pipe.scheduler.config)"
            )
        sampler = type(self.scheduler).from_config(self.scheduler.config)
        sampler.set_timesteps(num_inference_steps)
        inverse = GenZooDDIMInverseScheduler.from_config(self._inversion_config())
        inverse.set_timesteps(num_inference_steps)
        if sampler.timesteps.tolist() != inverse.timesteps.flip(0).tolist():
            raise ValueError(
                f"the scheduler's timestep_spacing={self.scheduler.config.get('timestep_spacing')!r} gives steps that "
                "DDIM inversion cannot retrace; use 'leading' or 'trailing'"
            )

    def _guided_step(self, latents, t, encoder_hidden_states, guidance_scale, extra_step_kwargs):
        """One step of `LatentDiffusionPipeline`'s loop: ε̃ = ε(z_t, ∅) + w (ε(z_t, C) − ε(z_t, ∅)) on the batch
        [∅ …, C …] when w > 1, ε(z_t, C) otherwise, then `scheduler.step`."""
        do_cfg = guidance_scale > 1.0
        model_input = torch.cat([latents] * 2) if do_cfg else latents  # (2B or B, C, h, w)
        model_input = self.scheduler.scale_model_input(model_input, t)
        noise_pred = self.unet(model_input, t, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
        if do_cfg:
            noise_pred = self.classifier_free_guidance(noise_pred, guidance_scale, latents.shape[1])
        return self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]

    def ddim_trajectory(self, z_0: torch.Tensor, prompt_embeds: torch.Tensor, num_inference_steps: int) -> torch.Tensor:
        """z*_0, z*_1, …, z*_T by DDIM inversion (Song et al. 2021, §4.3) conditioned on `prompt_embeds` without
        guidance (w = 1, the pivot of Mokady et al. 2023, §3.1): (S + 1, B, C, h, w). Each step is
        `GenZooDDIMInverseScheduler.step` with ε(z*_{t_s}, t), as `hf_genzoo.schedulers.ddim_invert`."""
        inverse = GenZooDDIMInverseScheduler.from_config(self._inversion_config())
        inverse.set_timesteps(num_inference_steps, device=z_0.device)
        trajectory = [z_0]
        for t in inverse.timesteps:
            noise_pred = self.unet(trajectory[-1], t, encoder_hidden_states=prompt_embeds, return_dict=False)[0]
            trajectory.append(inverse.step(noise_pred[:, : z_0.shape[1]], t, trajectory[-1]).prev_sample)
        return torch.stack(trajectory)  # (S + 1, B, C, h, w)

    def optimize_null_embedding(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        target: torch.Tensor,
        prompt_embeds: torch.Tensor,
        null_embedding: torch.Tensor,
        guidance_scale: float,
        num_inner_steps: int,
        learning_rate: float,
        early_stop_threshold: float,
    ) -> torch.Tensor:
        """∅_t = argmin_∅ ‖z*_{t−1} − z_{t−1}(z̄_t, ∅, C)‖² (Mokady et al. 2023, eq. 3) by `num_inner_steps` Adam steps
        from `null_embedding`, stopping once the loss is below `early_stop_threshold`.

        z_{t−1}(z̄_t, ∅, C) is the scheduler's own DDIM step (so the model's prediction type, ε or v, and its
        clipping are the sampler's) on ε̃ = ε(z̄_t, ∅) + w (ε(z̄_t, C) − ε(z̄_t, ∅)). ∅, Adam's state, ε̃, the step and
        the loss are float32 with autocast off, whatever the UNet's dtype or an enclosing autocast; gradients reach
        only ∅ (`torch.autograd.grad`), the UNet's `.grad` stay untouched.

        Args:
            latents: z̄_t (1, C, h, w); t: the step; target: z*_{t−1} (1, C, h, w).
            prompt_embeds: C (1, L, D); null_embedding: the starting ∅ (1, L, D).
        Returns:
            ∅_t (1, L, D) float32.
        """
        device_type = latents.device.type
        with torch.enable_grad(), torch.autocast(device_type=device_type, enabled=False):
            with torch.no_grad():
                noise_pred_text = self.unet(latents, t, encoder_hidden_states=prompt_embeds, return_dict=False)[0]
            null = null_embedding.detach().float().clone().requires_grad_(True)  # (1, L, D)
            optimizer = torch.optim.Adam([null], lr=learning_rate)
            sample, target = latents.float(), target.float()
            for _ in range(num_inner_steps):
                noise_pred_null = self.unet(latents, t, encoder_hidden_states=null.to(self.unet.dtype), return_dict=False)[0]
                noise_pred_null = noise_pred_null.float()
                # ε̃ = ε(z̄_t, ∅) + w (ε(z̄_t, C) − ε(z̄_t, ∅)) (Ho & Salimans 2022)
                noise_pred = noise_pred_null + guidance_scale * (noise_pred_text.float() - noise_pred_null)
                prev_sample = self.scheduler.step(noise_pred, t, sample, eta=0.0, return_dict=False)[0]
                loss = F.mse_loss(prev_sample, target)  # ‖z*_{t−1} − z_{t−1}(z̄_t, ∅, C)‖², eq. (3)
                (null.grad,) = torch.autograd.grad(loss, [null])
                optimizer.step()
                if loss.item() < early_stop_threshold:
                    break
        return null.detach()

    @torch.no_grad()
    def invert(
        self,
        image,
        prompt: str,
        method: Literal["ddim", "null_text"] = "ddim",
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        num_inner_steps: int = 10,
        learning_rate: float = 1e-2,
        early_stop_epsilon: float = 1e-5,
    ) -> Inversion:
        r"""
        Invert a real image so that `__call__(..., inversion=...)` edits it.

        "ddim": z*_T by DDIM inversion with the prompt at w = 1; sampling back under guidance w > 1 then drifts from
        the image. "null_text" (Mokady et al. 2023, Algorithm 1): the same pivot z*_0 … z*_T, then for t = T … 1 the
        unconditional embedding ∅_t is optimised so that one guided DDIM step from z̄_t lands on z*_{t−1}
        (eq. 3; Adam, `num_inner_steps` steps from ∅_{t+1}, the empty prompt's embedding at t = T), and the step is
        taken with it. As in the paper's code, the learning rate of the i-th step (i = 0 … S − 1, from t = T) is
        `learning_rate · (1 − i / (2S))` and it stops early once the loss is below
        `early_stop_epsilon + 1e-3 · i / S` (1 − i/100 and ε + 2e-5 · i at the paper's S = 50).

        Args:
            image: one image: PIL, numpy or a tensor in [0, 1] (diffusers' convention), H and W multiples of the
                first stage's factor f.
            prompt (`str`): the prompt that describes it: the source prompt of later edits.
            method (`"ddim"` or `"null_text"`, defaults to `"ddim"`).
            num_inference_steps (`int`, defaults to 50): S; edits must use the same.
            guidance_scale (`float`, defaults to 7.5): w of the reconstruction (and of the edits).
            num_inner_steps (`int`, defaults to 10): N, Adam steps per t (null-text).
            learning_rate (`float`, defaults to 1e-2): Adam's learning rate at t = T (null-text).
            early_stop_epsilon (`float`, defaults to 1e-5): the loss at which optimisation stops at t = T (null-text).

        Returns:
            [`Inversion`]: z*_T, the ∅_t (null-text), the pivot trajectory, the reconstruction and its PSNR.
        """
        # 1. validate
        if method not in INVERSION_METHODS:
            raise ValueError(f"method must be one of {INVERSION_METHODS}, got {method!r}")
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {prompt!r}")
        self.check_num_inference_steps(num_inference_steps)
        if method == "null_text":
            if guidance_scale <= 1.0:
                raise ValueError(
                    f"null-text inversion optimises the unconditional embedding of guidance, which guidance_scale="
                    f"{guidance_scale} (<= 1) does not use: use method='ddim'"
                )
            if not isinstance(num_inner_steps, int) or num_inner_steps < 1:
                raise ValueError(f"num_inner_steps must be a positive int, got {num_inner_steps!r}")
            if not learning_rate > 0:
                raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
        self._check_inversion_scheduler(num_inference_steps)
        device = self._execution_device

        # 2. encode the image and the prompt: z*_0 = scaling_factor · E(x), C and the empty prompt's ∅
        pixels = self.preprocess(image)  # (1, C, H, W) in [-1, 1]; the size is checked against f
        if pixels.shape[0] != 1:
            raise ValueError(f"invert takes one image, got {pixels.shape[0]}")
        z_0 = self.encode_pixels(pixels).to(self.unet.dtype)  # (1, C, h, w)
        prompt_embeds, null_embedding = self.encode_prompt(prompt, device, 1, True)  # (1, L, D) each

        # 3. the pivot: DDIM inversion with C at w = 1
        trajectory = self.ddim_trajectory(z_0, prompt_embeds, num_inference_steps)  # (S + 1, 1, C, h, w)

        # 4. back under guidance from z*_T; null-text optimises ∅_t before each step
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        extra_step_kwargs = self.prepare_extra_step_kwargs(None, 0.0)
        latents = trajectory[-1]
        null_embeddings = []
        for i, t in enumerate(self.progress_bar(timesteps)):
            if method == "null_text":
                null_embedding = self.optimize_null_embedding(
                    latents,
                    t,
                    target=trajectory[num_inference_steps - i - 1],  # z*_{t−1}
                    prompt_embeds=prompt_embeds,
                    null_embedding=null_embedding,
                    guidance_scale=guidance_scale,
                    num_inner_steps=num_inner_steps,
                    learning_rate=learning_rate * (1 - i / (2 * num_inference_steps)),
                    early_stop_threshold=early_stop_epsilon + 1e-3 * i / num_inference_steps,
                )
                null_embeddings.append(null_embedding)
            encoder_hidden_states = prompt_embeds
            if guidance_scale > 1.0:
                encoder_hidden_states = torch.cat([null_embedding.to(prompt_embeds), prompt_embeds])  # (2, L, D)
            latents = self._guided_step(latents, t, encoder_hidden_states, guidance_scale, extra_step_kwargs)

        # 5. the reconstruction and its PSNR against the input, beside the first stage's own
        reconstruction = (self.decode_latents(latents.to(self.first_stage.dtype)) / 2 + 0.5).clamp(0, 1)
        first_stage = (self.decode_latents(z_0.to(self.first_stage.dtype)) / 2 + 0.5).clamp(0, 1)
        return Inversion(
            latents=trajectory[-1],
            null_embeddings=torch.cat(null_embeddings) if null_embeddings else None,  # (S, L, D)
            trajectory=trajectory,
            reconstruction=reconstruction.float(),
            psnr=psnr(reconstruction, pixels / 2 + 0.5),
            first_stage_psnr=psnr(first_stage, pixels / 2 + 0.5),
            prompt=prompt,
            method=method,
            guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps,
        )

    # ---- baselines that need no attention control ------------------------------------------------

    def _encode_for_images(self, prompt, num_images, guidance_scale, negative_prompt):
        """The UNet's text batch for `num_images` images: [∅ …, C …] (2B, L, D) with guidance, C (B, L, D) without."""
        prompts = [prompt] * num_images if isinstance(prompt, str) else list(prompt)
        if len(prompts) != num_images:
            raise ValueError(f"{len(prompts)} prompts for {num_images} images: give one, or one per image")
        do_cfg = guidance_scale > 1.0
        embeds, negative = self.encode_prompt(prompts, self._execution_device, 1, do_cfg, negative_prompt)
        return torch.cat([negative, embeds]) if do_cfg else embeds

    def _finish(self, latents, output_type, generator, return_dict):
        if output_type == "latent":
            images = latents
        else:
            images = self.decode_latents(latents.to(self.first_stage.dtype), generator=generator)
            images = self.postprocess(images, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    @torch.no_grad()
    def sdedit(
        self,
        image,
        prompt: str | list[str],
        strength: float = 0.6,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        SDEdit (Meng et al. 2022): noise the image's latent by the forward process to t_0 ≈ strength · T,
        z_{t_0} = √ᾱ_{t_0} z_0 + √(1 − ᾱ_{t_0}) ε, and denoise it with the new prompt from there. The start is the
        step of the DDIM schedule that matches: the last ⌊strength · S⌋ of the S steps are run, as diffusers'
        img2img does. strength 0 returns the image through the first stage; 1 starts from (almost) pure noise.

        Args:
            image: PIL, numpy or tensors in [0, 1]; one or a batch.
            prompt (`str` or `list[str]`): one prompt, or one per image.
            strength (`float`, defaults to 0.6): in [0, 1].
            num_inference_steps, guidance_scale, negative_prompt, eta, generator, output_type, return_dict: as
                `LatentDiffusionPipeline.__call__` (`"latent"` returns z_0).
        """
        if output_type != "latent":
            check_output_type(output_type)
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength!r}")
        self.check_num_inference_steps(num_inference_steps)
        z_0 = self.encode_images(image).to(self.unet.dtype)  # (B, C, h, w)
        encoder_hidden_states = self._encode_for_images(prompt, z_0.shape[0], guidance_scale, negative_prompt)

        # the last ⌊strength · S⌋ steps of the schedule, from t_0 = their first
        self.scheduler.set_timesteps(num_inference_steps, device=z_0.device)
        num_steps = min(int(num_inference_steps * strength), num_inference_steps)
        timesteps = self.scheduler.timesteps[num_inference_steps - num_steps :]
        latents = z_0
        if num_steps > 0:
            noise = randn_tensor(z_0.shape, generator=generator, device=z_0.device, dtype=z_0.dtype)
            latents = self.scheduler.add_noise(z_0, noise, timesteps[:1].repeat(z_0.shape[0]))  # q(z_{t_0} | z_0)
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        for t in self.progress_bar(timesteps):
            latents = self._guided_step(latents, t, encoder_hidden_states, guidance_scale, extra_step_kwargs)
        return self._finish(latents, output_type, generator, return_dict)

    def prepare_mask(self, mask, image_shape) -> torch.Tensor:
        """A mask in pixels (PIL, numpy or a tensor; 1 / white = repaint, 0 / black = keep; binarised at 0.5) →
        (B or 1, 1, h, w) on the latent grid: a latent pixel is repainted if any image pixel it covers is
        (max-pooling over its f × f pixels)."""
        processor = VaeImageProcessor(
            vae_scale_factor=self.vae_scale_factor,
            do_resize=False,
            do_normalize=False,
            do_binarize=True,
            do_convert_grayscale=True,
        )
        if isinstance(mask, torch.Tensor) and mask.ndim == 2:
            mask = mask[None, None]  # (H, W) → (1, 1, H, W)
        pixels = processor.preprocess(mask)  # (B, 1, H, W) in {0, 1}
        if pixels.shape[-2:] != tuple(image_shape[-2:]) or pixels.shape[0] not in (1, image_shape[0]):
            raise ValueError(
                f"mask has shape {tuple(pixels.shape)}; it must cover the image, {tuple(image_shape[-2:])} pixels, one "
                f"mask or one per image ({image_shape[0]})"
            )
        f = self.vae_scale_factor
        return F.max_pool2d(pixels, kernel_size=f, stride=f).to(self._execution_device)  # (B, 1, h, w)

    @torch.no_grad()
    def inpaint(
        self,
        image,
        mask,
        prompt: str | list[str],
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Repaint the masked region with a text-to-image model, no inpainting training: at every step the latents
        outside the mask are replaced by the source's latents noised to that step, z_t ← m ⊙ z_t + (1 − m) ⊙
        (√ᾱ_t z_0 + √(1 − ᾱ_t) ε) with `scheduler.add_noise` (one ε for the whole run), and by z_0 itself after the
        last step, so outside the mask the result is the source's latent exactly.

        Args:
            image: PIL, numpy or tensors in [0, 1]; one or a batch.
            mask: in pixels, the image's size: 1 (white) where to repaint, 0 (black) where to keep; downsampled to the
                latent grid by `prepare_mask`.
            prompt (`str` or `list[str]`): what to paint, one prompt or one per image.
            num_inference_steps, guidance_scale, negative_prompt, eta, generator, output_type, return_dict: as
                `LatentDiffusionPipeline.__call__` (`"latent"` returns z_0).
        """
        if output_type != "latent":
            check_output_type(output_type)
        self.check_num_inference_steps(num_inference_steps)
        pixels = self.preprocess(image)  # (B, C, H, W) in [-1, 1]
        z_0 = self.encode_pixels(pixels).to(self.unet.dtype)  # (B, C, h, w)
        repaint = self.prepare_mask(mask, pixels.shape).bool()  # (B or 1, 1, h, w): m
        encoder_hidden_states = self._encode_for_images(prompt, z_0.shape[0], guidance_scale, negative_prompt)

        self.scheduler.set_timesteps(num_inference_steps, device=z_0.device)
        timesteps = self.scheduler.timesteps
        noise = randn_tensor(z_0.shape, generator=generator, device=z_0.device, dtype=z_0.dtype)  # ε

        def known(step: int) -> torch.Tensor:
            """The source's latents at timesteps[step]: q(z_t | z_0) with ε; z_0 past the last step."""
            if step >= len(timesteps):
                return z_0
            return self.scheduler.add_noise(z_0, noise, timesteps[step : step + 1].repeat(z_0.shape[0]))

        latents = torch.where(repaint, noise * self.scheduler.init_noise_sigma, known(0))  # z_T
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        for i, t in enumerate(self.progress_bar(timesteps)):
            latents = self._guided_step(latents, t, encoder_hidden_states, guidance_scale, extra_step_kwargs)
            latents = torch.where(repaint, latents, known(i + 1))  # z_{t'} ← m ⊙ z_{t'} + (1 − m) ⊙ q(z_{t'} | z_0)
        return self._finish(latents, output_type, generator, return_dict)


def label_maps(maps: torch.Tensor, labels: Sequence[str], size: tuple[int, int]) -> list[PIL.Image.Image]:
    """Maps (N, h, w) → N RGB figures: each map upsampled (bilinear) to `size` = (H, W) and divided by its maximum, in
    grey levels, with its label centred in a white strip under it (the paper's `text_under_image`). Every figure has
    the same size, widened with white margins if a label is wider than W."""
    height, width = size
    maps = F.interpolate(maps.float()[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]  # (N, H, W)
    maps = maps / maps.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny)
    grey = (maps.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    font = PIL.ImageFont.load_default()
    measure = PIL.ImageDraw.Draw(PIL.Image.new("RGB", (1, 1)))
    boxes = [measure.textbbox((0, 0), label, font=font) for label in labels]
    text_height = max((box[3] - box[1] for box in boxes), default=0)
    figure_width = max([width] + [box[2] - box[0] + 4 for box in boxes])
    figures = []
    for map_, label, box in zip(grey, labels, boxes):
        figure = PIL.Image.new("RGB", (figure_width, height + text_height + 4), "white")
        figure.paste(PIL.Image.fromarray(map_).convert("RGB"), ((figure_width - width) // 2, 0))
        draw = PIL.ImageDraw.Draw(figure)
        draw.text(((figure_width - (box[2] - box[0])) // 2 - box[0], height + 2 - box[1]), label, fill="black", font=font)
        figures.append(figure)
    return figures
