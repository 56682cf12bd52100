"""InstructPix2PixPipeline: edit an image by following a written instruction (Brooks et al. 2023, arXiv:2211.09800),
with the paper's classifier-free guidance over two conditions.

The UNet ε_θ(z_t, c_I, c_T) is a text-to-image latent diffusion UNet widened (`hf_genzoo.widen_conv_in`) to take
the input image's latents E(c_I) = mode q(z | c_I) (unscaled) concatenated to z_t along channels; c_T is the
instruction's text embedding. Sampling starts from z_T ~ N(0, I) and guides every step with
(../shared/EQUATIONS.md, "InstructPix2Pix"; paper §3.2.1, eq. 3):

    ε̃ = ε(z_t, ∅, ∅) + s_I (ε(z_t, c_I, ∅) − ε(z_t, ∅, ∅)) + s_T (ε(z_t, c_I, c_T) − ε(z_t, c_I, ∅)),

with s_I = `image_guidance_scale`, s_T = `guidance_scale`, ∅_I = zero latents and ∅_T = the empty (or negative)
prompt's embedding. s_I pulls the output towards the input image (fidelity to it); s_T towards the instruction
(strength of the edit).

Compatibility: the pipeline is laid out as diffusers' `StableDiffusionInstructPix2PixPipeline` and gives its images
for the same components, prompt, image and seed: its components (`vae`, `text_encoder`, `tokenizer`, `unet`,
`scheduler`), its UNet batch [text, image-only, uncond] = [(c_I, c_T), (c_I, ∅), (∅, ∅)], its image latents
`vae.encode(image).latent_dist.mode()` unscaled, its z_T drawn after encoding with the same `randn_tensor` call, and
its rule that guidance is on only when `guidance_scale > 1` and `image_guidance_scale ≥ 1`. A saved folder loads in
the stock pipeline (after `import hf_genzoo`).

Notation as in `LatentDiffusionPipeline`: z_t `latents` (B, C, h, w), (h, w) = (H / f, W / f) with f the first
stage's downsampling factor; B = prompts × `num_images_per_prompt`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch
from diffusers import UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import logging

from hf_genzoo.models.instruct_pix2pix import check_kl_first_stage, image_conditioning_latents

from .pipeline_latent_diffusion import LatentDiffusionPipeline, check_first_stage
from .pipeline_pixel_diffusion import PixelDiffusionPipeline
from .pipeline_utils import GenZooImageProcessor, check_output_type

logger = logging.get_logger(__name__)


class InstructPix2PixPipeline(LatentDiffusionPipeline):
    r"""
    Instruction-following image editing with InstructPix2Pix (Brooks et al. 2023).

    A `LatentDiffusionPipeline` whose UNet also sees the input image's latents; the folder it saves has the components
    of diffusers' `StableDiffusionInstructPix2PixPipeline`, which loads it (after `import hf_genzoo`) and gives the
    same images.

    Parameters:
        vae ([`VAEModel`] or [`AutoencoderKL`]): the frozen KL first stage. The input image enters the UNet as its
            posterior mode, unscaled; z_0 is decoded as `vae.decode(z_0 / scaling_factor)`.
        text_encoder ([`~transformers.CLIPTextModel`]): encodes the instruction c_T.
        tokenizer ([`~transformers.PreTrainedTokenizerFast`] or any transformers tokenizer).
        unet ([`UNet2DConditionModel`]): ε_θ([z_t, E(c_I)], t, c_T), taking 2C channels and giving C
            (`hf_genzoo.widen_conv_in` makes one from a text-to-image UNet).
        scheduler ([`SchedulerMixin`]): any DDPM/DDIM-family scheduler, ours or diffusers'.
    """

    _optional_components: list[str] = []
    _callback_tensor_inputs = ["latents", "prompt_embeds", "image_latents"]
    model_card_template = "instruct_pix2pix"
    model_card_tags = ("diffusion", "latent-diffusion", "instruct-pix2pix", "image-to-image", "image-editing")

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
    ):
        # skip LatentDiffusionPipeline.__init__: it asks the UNet to take the latents alone (C channels, not 2C)
        super(PixelDiffusionPipeline, self).__init__()
        check_first_stage(vae)
        check_kl_first_stage(vae)
        if not isinstance(unet, UNet2DConditionModel):
            raise ValueError(f"InstructPix2PixPipeline needs a UNet2DConditionModel (text c_T), got {type(unet).__name__}")
        if text_encoder is None or tokenizer is None:
            raise ValueError("InstructPix2PixPipeline needs a text_encoder and a tokenizer for the instruction")
        check_image_channels(unet, vae.config.latent_channels)
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_processor = GenZooImageProcessor(num_channels=vae.config.get("in_channels", 3), vae_scale_factor=self.vae_scale_factor)

    @property
    def first_stage(self):
        return self.vae

    @property
    def latent_channels(self) -> int:
        """C, the channels of z_t and of E(c_I)."""
        return self.vae.config.latent_channels

    def model_card_fields(self) -> dict:
        return {"first_stage_class": type(self.vae).__name__, "model_class": type(self.unet).__name__}

    # ---- building blocks -------------------------------------------------------------------------

    def prepare_image_latents(self, image, batch_size: int, num_images_per_prompt: int) -> torch.Tensor:
        r"""
        E(c_I) for each of the B = `batch_size` · `num_images_per_prompt` images, (B, C, h, w).

        `image` is one image for all prompts or one per prompt: PIL images, numpy arrays or tensors in [0, 1]
        (diffusers' `VaeImageProcessor` rules), encoded as `vae.encode(x).latent_dist.mode()` without
        `scaling_factor`; or, as in diffusers, a (N, C, h, w) tensor of image latents, taken as they are. Each is
        repeated `num_images_per_prompt` times, prompt-major like the prompt embeddings.
        """
        if image is None:
            raise ValueError("image is required: the picture to edit")
        image_channels = self.vae.config.get("in_channels", 3)
        is_latents = (
            isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[1] == self.latent_channels
            and self.latent_channels != image_channels
        )
        if is_latents:
            image_latents = image.to(device=self._execution_device, dtype=self.vae.dtype)
        else:
            pixels = self.preprocess(image)  # (N, C_img, H, W) in [-1, 1]; H and W checked against f
            image_latents = image_conditioning_latents(self.vae, pixels)  # (N, C, h, w), unscaled
        num_images = image_latents.shape[0]
        if num_images == 1:
            image_latents = image_latents.repeat(batch_size * num_images_per_prompt, 1, 1, 1)
        elif num_images == batch_size:
            image_latents = image_latents.repeat_interleave(num_images_per_prompt, dim=0)
        else:
            raise ValueError(f"got {num_images} images for {batch_size} prompts: give one image, or one per prompt")
        return image_latents

    @staticmethod
    def dual_guidance(noise_pred: torch.Tensor, guidance_scale: float, image_guidance_scale: float) -> torch.Tensor:
        """ε̃ from the UNet's output on the batch [(c_I, c_T), (c_I, ∅), (∅, ∅)] (3B, C, h, w) → (B, C, h, w)."""
        noise_pred_text, noise_pred_image, noise_pred_uncond = noise_pred.chunk(3)  # ε(c_I, c_T), ε(c_I, ∅), ε(∅, ∅)
        # §3.2.1, eq. 3: ε̃ = ε(∅, ∅) + s_I (ε(c_I, ∅) − ε(∅, ∅)) + s_T (ε(c_I, c_T) − ε(c_I, ∅));
        # the two terms are added in diffusers' order, so that the images are the same to the last bit
        return (
            noise_pred_uncond
            + guidance_scale * (noise_pred_text - noise_pred_image)
            + image_guidance_scale * (noise_pred_image - noise_pred_uncond)
        )

    def likelihood(self, *args, **kwargs):
        raise NotImplementedError("InstructPix2PixPipeline has no likelihood: its UNet models edits given an image")

    def invert(self, *args, **kwargs):
        raise NotImplementedError("InstructPix2PixPipeline has no inversion: its UNet models edits given an image")

    def reconstruct(self, *args, **kwargs):
        raise NotImplementedError("InstructPix2PixPipeline has no inversion: its UNet models edits given an image")

    # ---- sampling --------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image=None,
        num_inference_steps: int = 100,
        guidance_scale: float = 7.5,
        image_guidance_scale: float = 1.5,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> ImagePipelineOutput | tuple:
        r"""
        Edit `image` as `prompt` says: z_T ~ N(0, I), `num_inference_steps` steps of the scheduler with the guided
        ε̃ of §3.2.1 (eq. 3) computed from the UNet on [z_t, E(c_I)], then one decoder pass.

        Args:
            prompt (`str` or `list[str]`): the instruction(s) c_T, e.g. "make the circle blue".
            image (PIL image, numpy array, tensor in [0, 1], or a list; or image latents (N, C, h, w)): the input
                image c_I, one for all prompts or one per prompt. Its height and width must be multiples of the first
                stage's factor f; the output has its size.
            num_inference_steps (`int`, defaults to 100): S.
            guidance_scale (`float`, defaults to 7.5): s_T, text guidance. Larger follows the instruction more
                strongly (a stronger edit), at some cost in fidelity to the input; 1 adds nothing beyond the image-
                conditioned prediction.
            image_guidance_scale (`float`, defaults to 1.5): s_I, image guidance. Larger keeps the output closer to
                the input image (a weaker edit); 1 adds no image guidance. Guidance (both scales) is on only when
                `guidance_scale > 1` and `image_guidance_scale ≥ 1`, as in diffusers; below 1 it is off (with a
                warning) and each step uses ε(z_t, c_I, c_T) alone. Negative values are refused.
            negative_prompt (`str` or `list[str]`, *optional*): ∅_T instead of the empty prompt.
            num_images_per_prompt (`int`, defaults to 1): images per prompt (each with its own z_T).
            eta (`float`, defaults to 0.0): η of DDIM (passed to `scheduler.step` if it takes it).
            generator (`torch.Generator` or a list, *optional*): makes sampling deterministic; z_T is drawn exactly
                as `StableDiffusionInstructPix2PixPipeline` draws it.
            latents (`torch.Tensor`, *optional*): z_T (B, C, h, w) instead of drawing it.
            prompt_embeds, negative_prompt_embeds (`torch.Tensor`, *optional*): precomputed c_T and ∅_T.
            output_type (`"pil" | "np" | "pt" | "latent"`, defaults to `"pil"`).
            return_dict (`bool`, defaults to `True`): an `ImagePipelineOutput` rather than a tuple.
            callback_on_step_end (`Callable`, *optional*): `callback(pipe, i, t, callback_kwargs)` after each step,
                as in diffusers, with the tensors named in `callback_on_step_end_tensor_inputs` (`latents`,
                `prompt_embeds` — the UNet's (3B or B, L, D) batch — and `image_latents`); it may return new ones.

        Returns:
            [`ImagePipelineOutput`] with the edited images, or a tuple `(images,)`.
        """
        # 1. validate
        if output_type != "latent":
            check_output_type(output_type)
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be ≥ 1, got {num_images_per_prompt}")
        self.check_num_inference_steps(num_inference_steps)
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("give prompt or prompt_embeds, not both")
        if prompt is None and prompt_embeds is None:
            raise ValueError("give a prompt (the instruction) or prompt_embeds")
        if prompt is not None and not isinstance(prompt, (str, list)):
            raise ValueError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
        do_guidance = check_guidance_scales(guidance_scale, image_guidance_scale)
        bad_inputs = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if bad_inputs:
            raise ValueError(f"callback_on_step_end_tensor_inputs {bad_inputs} not in {self._callback_tensor_inputs}")
        check_image_channels(self.unet, self.latent_channels)
        device = self._execution_device
        batch_size = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]

        # 2. encode the conditions: c_T (and ∅_T), then E(c_I)
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, device, num_images_per_prompt, do_guidance, negative_prompt, prompt_embeds, negative_prompt_embeds
        )
        image_latents = self.prepare_image_latents(image, batch_size, num_images_per_prompt)  # (B, C, h, w)
        image_latents = image_latents.to(dtype=prompt_embeds.dtype)
        if do_guidance:
            # the UNet batch [(c_I, c_T), (c_I, ∅), (∅, ∅)]: text [c_T, ∅_T, ∅_T], image [E(c_I), E(c_I), 0]
            prompt_embeds = torch.cat([prompt_embeds, negative_prompt_embeds, negative_prompt_embeds])  # (3B, L, D)
            image_latents = torch.cat([image_latents, image_latents, torch.zeros_like(image_latents)])  # (3B, C, h, w)

        # 3. timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 4. z_T, the size of the input image's latents
        num_images = batch_size * num_images_per_prompt
        height, width = (size * self.vae_scale_factor for size in image_latents.shape[-2:])
        latents = self.prepare_latents(
            num_images, self.latent_channels, height, width, prompt_embeds.dtype, device, generator, latents
        )
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # 5. denoising loop
        for i, t in enumerate(self.progress_bar(timesteps)):
            latent_model_input = torch.cat([latents] * 3) if do_guidance else latents  # (3B or B, C, h, w)
            latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)
            latent_model_input = torch.cat([latent_model_input, image_latents], dim=1)  # [z_t, E(c_I)]: (·, 2C, h, w)
            noise_pred = self.unet(latent_model_input, t, encoder_hidden_states=prompt_embeds, return_dict=False)[0]
            if do_guidance:
                noise_pred = self.dual_guidance(noise_pred, guidance_scale, image_guidance_scale)  # §3.2.1, eq. 3
            latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
            if callback_on_step_end is not None:
                callback_kwargs = {"latents": latents, "prompt_embeds": prompt_embeds, "image_latents": image_latents}
                callback_kwargs = {k: callback_kwargs[k] for k in callback_on_step_end_tensor_inputs}
                outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                latents = outputs.pop("latents", latents)
                prompt_embeds = outputs.pop("prompt_embeds", prompt_embeds)
                image_latents = outputs.pop("image_latents", image_latents)

        # 6. decode: z_0 / scaling_factor → [-1, 1] → output_type
        if output_type == "latent":
            images = latents
        else:
            images = self.decode_latents(latents.to(self.vae.dtype), generator=generator)
            images = self.postprocess(images, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    @torch.no_grad()
    def guidance_grid(
        self,
        prompt: str,
        image,
        guidance_scales: Sequence[float] = (3, 5, 7.5, 10),
        image_guidance_scales: Sequence[float] = (1.0, 1.5, 2.0),
        num_inference_steps: int = 100,
        negative_prompt: str | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
    ) -> PIL.Image.Image:
        r"""
        One edit over a grid of guidance scales, as in the paper's figure of the two scales: rows s_I
        (`image_guidance_scales`, top to bottom), columns s_T (`guidance_scales`, left to right), every cell from the
        same z_T (and, with η > 0, the same step noise), each row and column labelled with its scale.

        Args:
            prompt (`str`): one instruction.
            image: one input image (as in `__call__`).
            guidance_scales (sequence of `float`, defaults to `(3, 5, 7.5, 10)`): the s_T of the columns.
            image_guidance_scales (sequence of `float`, defaults to `(1.0, 1.5, 2.0)`): the s_I of the rows.
            num_inference_steps, negative_prompt, eta, latents: as in `__call__`.
            generator (`torch.Generator`, *optional*): its state when called seeds every cell alike; None draws a
                seed from torch's global generator.

        Returns:
            `PIL.Image.Image`: the labelled grid.
        """
        if not isinstance(prompt, str):
            raise ValueError(
                f"guidance_grid edits one image with one instruction: prompt must be a string, got {type(prompt).__name__}"
            )
        if isinstance(image, list) and len(image) != 1:
            raise ValueError(f"guidance_grid edits one image: got a list of {len(image)}")
        if len(guidance_scales) == 0 or len(image_guidance_scales) == 0:
            raise ValueError(
                f"give at least one scale of each kind, got guidance_scales={tuple(guidance_scales)}, "
                f"image_guidance_scales={tuple(image_guidance_scales)}"
            )
        for image_guidance_scale in image_guidance_scales:
            if image_guidance_scale < 0:
                raise ValueError(f"image_guidance_scale must be ≥ 0, got {image_guidance_scale}")
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        elif not isinstance(generator, torch.Generator):
            raise ValueError(f"guidance_grid takes one torch.Generator, got {type(generator).__name__}")
        state = generator.get_state()
        rows = []
        for image_guidance_scale in image_guidance_scales:
            row = []
            for guidance_scale in guidance_scales:
                generator.set_state(state)  # the same z_T in every cell
                output = self(
                    prompt,
                    image,
                    num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale,
                    image_guidance_scale=image_guidance_scale,
                    negative_prompt=negative_prompt,
                    eta=eta,
                    generator=generator,
                    latents=latents,
                    output_type="pil",
                )
                row.append(output.images[0])
            rows.append(row)
        return labelled_grid(
            rows,
            row_labels=[f"s_I = {scale:g}" for scale in image_guidance_scales],
            column_labels=[f"s_T = {scale:g}" for scale in guidance_scales],
        )


def check_image_channels(unet, latent_channels: int) -> None:
    """The UNet takes [z_t, E(c_I)] (2C channels) and predicts C."""
    if unet.config.in_channels != 2 * latent_channels:
        raise ValueError(
            f"unet.config.in_channels={unet.config.in_channels} does not take the image latents: InstructPix2Pix needs "
            f"2 × {latent_channels} = {2 * latent_channels} (2 × the first stage's latent channels, [z_t, E(c_I)]); "
            f"widen a text-to-image UNet with hf_genzoo.widen_conv_in(unet, {latent_channels})"
        )
    if unet.config.out_channels != latent_channels:
        raise ValueError(
            f"unet.config.out_channels={unet.config.out_channels} differs from the first stage's latent channels "
            f"({latent_channels})"
        )


def check_guidance_scales(guidance_scale: float, image_guidance_scale: float) -> bool:
    """Whether guidance is on (diffusers' rule: s_T > 1 and s_I ≥ 1); negative s_I refused, s_I < 1 warned."""
    if image_guidance_scale < 0:
        raise ValueError(f"image_guidance_scale must be ≥ 0, got {image_guidance_scale}")
    if image_guidance_scale < 1:
        logger.warning(
            f"image_guidance_scale={image_guidance_scale} < 1 disables image guidance, and with it classifier-free "
            "guidance (as in diffusers): each step uses ε(z_t, c_I, c_T) alone"
        )
    elif guidance_scale <= 1 and image_guidance_scale != 1:
        logger.warning(
            f"guidance_scale={guidance_scale} ≤ 1 disables classifier-free guidance (as in diffusers): "
            f"image_guidance_scale={image_guidance_scale} has no effect"
        )
    return guidance_scale > 1.0 and image_guidance_scale >= 1.0


def labelled_grid(
    rows: Sequence[Sequence[PIL.Image.Image]], row_labels: Sequence[str], column_labels: Sequence[str]
) -> PIL.Image.Image:
    """Images rows × columns pasted into one white figure, with `column_labels` above the columns and `row_labels`
    left of the rows (every cell as wide and high as needed for the widest label and the largest image)."""
    font = PIL.ImageFont.load_default()
    measure = PIL.ImageDraw.Draw(PIL.Image.new("RGB", (1, 1)))

    def text_size(text: str) -> tuple[int, int]:
        left, top, right, bottom = measure.textbbox((0, 0), text, font=font)
        return right - left, bottom - top

    image_width = max(image.width for row in rows for image in row)
    image_height = max(image.height for row in rows for image in row)
    margin = 2
    cell_width = max([image_width] + [text_size(label)[0] for label in column_labels]) + 2 * margin
    cell_height = image_height + 2 * margin
    header_height = max(text_size(label)[1] for label in column_labels) + 2 * margin
    label_width = max(text_size(label)[0] for label in row_labels) + 2 * margin
    figure_size = (label_width + cell_width * len(column_labels), header_height + cell_height * len(rows))
    figure = PIL.Image.new("RGB", figure_size, "white")
    draw = PIL.ImageDraw.Draw(figure)
    for j, label in enumerate(column_labels):
        width, _ = text_size(label)
        draw.text((label_width + j * cell_width + (cell_width - width) // 2, margin), label, fill="black", font=font)
    for i, (row, label) in enumerate(zip(rows, row_labels)):
        top = header_height + i * cell_height
        _, height = text_size(label)
        draw.text((margin, top + (cell_height - height) // 2), label, fill="black", font=font)
        for j, image in enumerate(row):
            left = label_width + j * cell_width + (cell_width - image.width) // 2
            figure.paste(image.convert("RGB"), (left, top + (cell_height - image.height) // 2))
    return figure
