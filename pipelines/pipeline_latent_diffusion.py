"""LatentDiffusionPipeline: DDPM / DDIM sampling in the latent space of a frozen first stage (Rombach et al. 2022,
arXiv:2112.10752), unconditional, class-conditional or text-conditional, with classifier-free guidance (Ho & Salimans
2022); the variational bound of the latents in bits/dim; DDIM inversion of images into latents.

The pipeline is laid out so that one saved folder behaves the same here and in stock diffusers pipelines:

- a KL first stage (our `VAEModel` with spatial latents, diffusers' `AutoencoderKL`) is the component `vae`, as in
  `StableDiffusionPipeline`; a VQ first stage (our `VQVAEModel`, diffusers' `VQModel`) is `vqvae`, as in `LDMPipeline`;
- a text-conditioned folder has the components of a Stable Diffusion folder (`vae`, `text_encoder`, `tokenizer`,
  `unet`, `scheduler`), so `StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)` loads it (after
  `import hf_genzoo`) and gives the same images for the same prompt, seed and scheduler;
- latents are multiplied by the first stage's `scaling_factor` after encoding and divided by it before decoding,
  exactly where diffusers does (`latents = vae.encode(x).latent_dist.sample() * scaling_factor` in its training
  examples, `vae.decode(latents / scaling_factor)` in its pipelines).

Classifier-free guidance (../shared/EQUATIONS.md, "Latent diffusion"):
    ε̂ = ε(z_t, ∅) + s (ε(z_t, c) − ε(z_t, ∅)),   s = guidance_scale,
with ∅ the empty prompt's embedding (text) or the null label `num_class_embeds − 1` (class), both passes batched as
diffusers batches them: [∅ …, c …].

Notation as in hf_genzoo.schedulers: z_t `latents`, T num_train_timesteps, S num_inference_steps, f the first stage's
downsampling factor 2^(len(block_out_channels) − 1).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor

from hf_genzoo.schedulers import GenZooDDPMScheduler, ddim_invert, ddim_sample

from .pipeline_pixel_diffusion import PixelDiffusionPipeline
from .pipeline_utils import GenZooImageProcessor, check_output_type

logger = logging.get_logger(__name__)

LN2 = math.log(2.0)


def is_vq_first_stage(model) -> bool:
    """Whether a first stage quantises its latents (our `VQVAEModel`, diffusers' `VQModel`): it has `vq_embed_dim`
    and `num_vq_embeddings` in its config."""
    return model is not None and "num_vq_embeddings" in model.config


def first_stage_latent_channels(model) -> int:
    """Channels of the latents the diffusion model sees: `vq_embed_dim` (or `latent_channels`) for a VQ first stage,
    `latent_channels` for a KL one."""
    if is_vq_first_stage(model):
        return model.config.get("vq_embed_dim") or model.config.latent_channels
    return model.config.latent_channels


def check_first_stage(model) -> None:
    """A first stage has diffusers' VAE interface (`encode`, `decode`, `config.scaling_factor`, `latent_channels`,
    `block_out_channels`); our vector-latent VAEs are refused (a diffusion UNet needs a spatial latent)."""
    config = getattr(model, "config", None)
    missing = [key for key in ("latent_channels", "block_out_channels", "scaling_factor") if config is None or key not in config]
    if missing or not (hasattr(model, "encode") and hasattr(model, "decode")):
        raise ValueError(
            f"{type(model).__name__} is not a first stage: expected VAEModel (spatial latents), VQVAEModel, "
            f"AutoencoderKL or VQModel (a model with encode/decode and config keys {missing or 'encode/decode'})"
        )
    if config.get("latent_type", "spatial") != "spatial":
        raise ValueError(
            f"{type(model).__name__} has latent_type={config.latent_type!r}; latent diffusion needs spatial latents "
            "(train it with --latent_type spatial)"
        )


class LatentDiffusionPipeline(PixelDiffusionPipeline):
    r"""
    Sampling, likelihood and inversion with a latent diffusion model.

    Parameters:
        vae ([`VAEModel`] or [`AutoencoderKL`], *optional*): a KL first stage (frozen); latents are its posterior
            times `vae.config.scaling_factor`.
        unet ([`UNet2DModel`] or [`UNet2DConditionModel`]): predicts ε, x_0 or v in latent space (as the scheduler's
            `prediction_type` says). A `UNet2DModel` is unconditional, or class-conditional when
            `num_class_embeds` is set (the last index is the null label ∅); a `UNet2DConditionModel` is
            text-conditional through cross-attention to `text_encoder`'s last hidden state.
        scheduler ([`SchedulerMixin`]): any DDPM/DDIM-family scheduler, ours or diffusers'.
        text_encoder ([`~transformers.CLIPTextModel`], *optional*): encodes prompts (text conditioning only).
        tokenizer ([`~transformers.PreTrainedTokenizerFast`] or any transformers tokenizer, *optional*).
        vqvae ([`VQVAEModel`] or [`VQModel`], *optional*): a VQ first stage instead of `vae` (the name diffusers'
            `LDMPipeline` gives it). Exactly one of `vae` and `vqvae`; pass `vae=None` with a `vqvae`.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["vae", "text_encoder", "tokenizer", "vqvae"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    model_card_template = "latent_diffusion"
    model_card_tags = ("diffusion", "latent-diffusion", "ddim")

    def __init__(
        self,
        vae,
        unet: UNet2DModel | UNet2DConditionModel,
        scheduler: SchedulerMixin,
        text_encoder=None,
        tokenizer=None,
        vqvae=None,
    ):
        # skip PixelDiffusionPipeline.__init__: its components are (unet, scheduler)
        super(PixelDiffusionPipeline, self).__init__()
        if (vae is None) == (vqvae is None):
            raise ValueError("give exactly one first stage: vae (a KL autoencoder) or vqvae (a VQ autoencoder)")
        first_stage = vae if vae is not None else vqvae
        check_first_stage(first_stage)
        latent_channels = first_stage_latent_channels(first_stage)
        if unet.config.in_channels != latent_channels:
            raise ValueError(
                f"unet.config.in_channels={unet.config.in_channels} differs from the first stage's latent channels "
                f"({latent_channels}, {type(first_stage).__name__}): the UNet must take the first stage's latents"
            )
        text_conditioned = isinstance(unet, UNet2DConditionModel)
        if text_conditioned and (text_encoder is None or tokenizer is None):
            raise ValueError("a UNet2DConditionModel needs a text_encoder and a tokenizer")
        if not text_conditioned and (text_encoder is not None or tokenizer is not None):
            raise ValueError(f"text_encoder/tokenizer given but the UNet ({type(unet).__name__}) takes no text")
        self.register_modules(
            vae=vae, unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer, vqvae=vqvae
        )
        self.vae_scale_factor = 2 ** (len(first_stage.config.block_out_channels) - 1)
        self.image_processor = GenZooImageProcessor(
            num_channels=first_stage.config.get("in_channels", 3), vae_scale_factor=self.vae_scale_factor
        )

    # ---- building blocks -------------------------------------------------------------------------

    @property
    def first_stage(self):
        """The frozen autoencoder: `vae` or `vqvae`."""
        return self.vae if self.vae is not None else self.vqvae

    @property
    def is_text_conditioned(self) -> bool:
        return isinstance(self.unet, UNet2DConditionModel)

    @property
    def scaling_factor(self) -> float:
        return float(self.first_stage.config.scaling_factor)

    def model_card_fields(self) -> dict:
        if self.is_text_conditioned:
            conditioning = "text"
        else:
            conditioning = "class" if self.num_classes is not None else "none"
        return {
            "conditioning": conditioning,
            "num_classes": self.num_classes,
            "first_stage_class": type(self.first_stage).__name__,
            "model_class": type(self.unet).__name__,
        }

    def encode_prompt(
        self,
        prompt,
        device,
        num_images_per_prompt: int,
        do_classifier_free_guidance: bool,
        negative_prompt=None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        r"""
        Encode prompts into the text encoder's last hidden state, as `StableDiffusionPipeline.encode_prompt` does:
        padded to `tokenizer.model_max_length` and truncated there (with a warning naming what was cut), repeated
        `num_images_per_prompt` times (prompt-major), and, with guidance, the negative prompt's (default the empty
        prompt "") embedding padded to the same length.

        Returns:
            `(prompt_embeds, negative_prompt_embeds)`, each (B · num_images_per_prompt, L, D); the second is None
            without guidance.
        """
        if prompt is not None and isinstance(prompt, str):
            batch_size = 1
        elif prompt is not None and isinstance(prompt, list):
            batch_size = len(prompt)
        else:
            batch_size = prompt_embeds.shape[0]

        if prompt_embeds is None:
            prompt_embeds = self._encode_text(prompt, device)
        dtype = self.text_encoder.dtype if self.text_encoder is not None else self.unet.dtype
        prompt_embeds = prompt_embeds.to(dtype=dtype, device=device)
        bs_embed, seq_len, _ = prompt_embeds.shape
        prompt_embeds = prompt_embeds.repeat(1, num_images_per_prompt, 1).view(bs_embed * num_images_per_prompt, seq_len, -1)

        if do_classifier_free_guidance and negative_prompt_embeds is None:
            if negative_prompt is None:
                uncond_tokens = [""] * batch_size
            elif isinstance(negative_prompt, str):
                uncond_tokens = [negative_prompt] * batch_size
            elif len(negative_prompt) != batch_size:
                raise ValueError(
                    f"negative_prompt has {len(negative_prompt)} prompts for {batch_size} prompts: give one, or one per prompt"
                )
            else:
                uncond_tokens = list(negative_prompt)
            negative_prompt_embeds = self._encode_text(uncond_tokens, device, max_length=prompt_embeds.shape[1])
        if do_classifier_free_guidance:
            negative_prompt_embeds = negative_prompt_embeds.to(dtype=dtype, device=device)
            seq_len = negative_prompt_embeds.shape[1]
            negative_prompt_embeds = negative_prompt_embeds.repeat(1, num_images_per_prompt, 1).view(
                batch_size * num_images_per_prompt, seq_len, -1
            )
        return prompt_embeds, negative_prompt_embeds

    def _encode_text(self, prompts, device, max_length: int | None = None) -> torch.Tensor:
        """Token ids padded to `max_length` (default the tokenizer's limit), truncated with a warning → the text
        encoder's last hidden state (B, L, D)."""
        max_length = max_length or self.tokenizer.model_max_length
        text_inputs = self.tokenizer(
            prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        )
        text_input_ids = text_inputs.input_ids  # (B, L)
        untruncated_ids = self.tokenizer(prompts, padding="longest", return_tensors="pt").input_ids
        if untruncated_ids.shape[-1] >= text_input_ids.shape[-1] and not torch.equal(text_input_ids, untruncated_ids):
            removed_text = self.tokenizer.batch_decode(untruncated_ids[:, max_length - 1 : -1])
            logger.warning(
                f"The following part of your input was truncated because the tokenizer takes up to {max_length} "
                f"tokens: {removed_text}"
            )
        use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
        attention_mask = text_inputs.attention_mask.to(device) if use_mask else None
        return self.text_encoder(text_input_ids.to(device), attention_mask=attention_mask)[0]

    def check_size(self, height: int, width: int) -> None:
        f = self.vae_scale_factor
        if height % f or width % f or height < f or width < f:
            raise ValueError(
                f"height and width must be positive multiples of {f}, the first stage's downsampling factor; "
                f"got {height}×{width}"
            )

    def default_size(self) -> tuple[int, int]:
        sample_size = self.unet.config.sample_size
        sample_size = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        return sample_size[0] * self.vae_scale_factor, sample_size[1] * self.vae_scale_factor

    def prepare_latents(self, batch_size, num_channels_latents, height, width, dtype, device, generator, latents=None):
        """z_T ~ N(0, I) of shape (B, C, H / f, W / f), times the scheduler's `init_noise_sigma`; drawn as
        `StableDiffusionPipeline.prepare_latents` draws it, so both give the same images."""
        shape = (batch_size, num_channels_latents, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch_size} images: give one per image")
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
            latents = latents.to(device=device, dtype=dtype)
        return latents * self.scheduler.init_noise_sigma

    def preprocess(self, images) -> torch.Tensor:
        """PIL images, numpy arrays or tensors in [0, 1] (diffusers' `VaeImageProcessor` rules, `GenZooImageProcessor`;
        a tensor with negative values is taken as [-1, 1], with its warning) → (B, C, H, W) in [-1, 1] on the execution
        device, checked against the first stage's downsampling factor."""
        x = self.image_processor.preprocess(images)  # (B, C, H, W) in [-1, 1]
        self.check_size(*x.shape[-2:])
        return x.to(device=self._execution_device, dtype=self.first_stage.dtype)

    def encode_images(self, images, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (PIL, numpy or tensors in [0, 1]) → z_0, see `encode_pixels`."""
        return self.encode_pixels(self.preprocess(images), sample=sample, generator=generator)

    def encode_pixels(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (B, C, H, W) in [-1, 1] → z_0 = scaling_factor · (the posterior's mode, or a sample with `sample=True`;
        a VQ first stage's pre-quantisation latents), (B, C, H / f, W / f)."""
        if is_vq_first_stage(self.first_stage):
            latents = self.first_stage.encode(x).latents
        else:
            posterior = self.first_stage.encode(x).latent_dist
            latents = posterior.sample(generator) if sample else posterior.mode()
        return latents * self.scaling_factor

    def decode_latents(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z_0 → images (B, C, H, W) in [-1, 1] units: the first stage's decoder applied to z_0 / scaling_factor."""
        latents = latents / self.scaling_factor
        if is_vq_first_stage(self.first_stage):
            return self.first_stage.decode(latents).sample
        return self.first_stage.decode(latents, generator=generator).sample

    def _conditioning(self, prompt, class_labels, batch_size, num_images_per_prompt, guidance_scale, negative_prompt, prompt_embeds, negative_prompt_embeds, device):
        """The UNet's keyword arguments for the (possibly doubled) batch: `encoder_hidden_states` (text),
        `class_labels` (class) or nothing (unconditional); and the number of images and whether guidance is on."""
        has_prompt = prompt is not None or prompt_embeds is not None
        if has_prompt and class_labels is not None:
            raise ValueError("give a prompt or class_labels, not both")
        if self.is_text_conditioned:
            if class_labels is not None:
                raise ValueError("class_labels were given but the UNet is text-conditioned: give a prompt")
            if not has_prompt:
                raise ValueError("this pipeline is text-conditioned: give a prompt (or prompt_embeds)")
            if prompt is not None and not isinstance(prompt, (str, list)):
                raise ValueError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
            do_cfg = guidance_scale > 1.0
            embeds, negative = self.encode_prompt(
                prompt, device, num_images_per_prompt, do_cfg, negative_prompt, prompt_embeds, negative_prompt_embeds
            )
            if do_cfg:
                embeds = torch.cat([negative, embeds])  # (2B, L, D): ∅ first, then c
            return {"encoder_hidden_states": embeds}, len(embeds) // (2 if do_cfg else 1), do_cfg, (embeds, negative)
        if has_prompt:
            raise ValueError(
                f"a prompt was given but the UNet ({type(self.unet).__name__}) is not text-conditioned: "
                + ("give class_labels" if self.num_classes is not None else "it is unconditional")
            )
        if negative_prompt is not None:
            raise ValueError("negative_prompt needs a text-conditioned UNet")
        if class_labels is not None and torch.as_tensor(class_labels).numel() > 1:
            batch_size = torch.as_tensor(class_labels).numel()  # one image per label, as one per prompt
            class_labels = torch.as_tensor(class_labels).flatten().repeat_interleave(num_images_per_prompt)
        num_images = batch_size * num_images_per_prompt
        labels = self.prepare_class_labels(class_labels, num_images)
        do_cfg = labels is not None and guidance_scale > 1.0
        if do_cfg:
            model_labels = torch.cat([self._class_labels_or_null(None, num_images), labels])  # (2B,)
        else:
            model_labels = self._class_labels_or_null(labels, num_images)
        kwargs = {} if model_labels is None else {"class_labels": model_labels}
        return kwargs, num_images, do_cfg, (None, None)

    # ---- sampling --------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        negative_prompt: str | list[str] | None = None,
        batch_size: int = 1,
        num_images_per_prompt: int = 1,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ) -> ImagePipelineOutput | tuple:
        r"""
        Sample: z_T ~ N(0, I), `num_inference_steps` reverse steps of the scheduler in latent space, then one
        decoder pass, z_0 / scaling_factor → image.

        Args:
            prompt (`str` or `list[str]`): the text condition (text-conditioned UNet only); one image per prompt
                times `num_images_per_prompt`.
            class_labels (`int`, a list or a tensor, *optional*): class condition (class-conditional `UNet2DModel`):
                one label for all `batch_size` images, or a list giving one image per label (times
                `num_images_per_prompt`); None samples the unconditional (∅) model.
            negative_prompt (`str` or `list[str]`, *optional*): the ∅ of guidance instead of the empty prompt.
            batch_size (`int`, defaults to 1): images per call for unconditional and class-conditional sampling (a
                prompt list sets the batch for text).
            num_images_per_prompt (`int`, defaults to 1): images per prompt (or per batch entry).
            height, width (`int`, *optional*): image size, multiples of the first stage's factor f; default the
                UNet's `sample_size` × f.
            num_inference_steps (`int`, defaults to 50): S.
            guidance_scale (`float`, defaults to 7.5): s of classifier-free guidance; > 1 turns it on (as diffusers);
                ignored without a condition.
            eta (`float`, defaults to 0.0): η of DDIM (passed to `scheduler.step` if it takes it).
            generator (`torch.Generator` or a list, *optional*): makes sampling deterministic; z_T is drawn exactly
                as `StableDiffusionPipeline` draws it.
            latents (`torch.Tensor`, *optional*): z_T, (B, C, H / f, W / f), instead of drawing it.
            prompt_embeds, negative_prompt_embeds (`torch.Tensor`, *optional*): precomputed text embeddings.
            output_type (`"pil" | "np" | "pt"`, defaults to `"pil"`): as in diffusers; `"latent"` returns z_0.
            return_dict (`bool`, defaults to `True`): an `ImagePipelineOutput` rather than a tuple.
            callback_on_step_end (`Callable`, *optional*): `callback(pipe, i, t, callback_kwargs)` after each step,
                as in diffusers; it may return new values for the tensors named in
                `callback_on_step_end_tensor_inputs` (e.g. `latents`).
        """
        # 1. validate
        if output_type != "latent":
            check_output_type(output_type)
        if batch_size < 1 or num_images_per_prompt < 1:
            raise ValueError(f"batch_size and num_images_per_prompt must be ≥ 1, got {batch_size}, {num_images_per_prompt}")
        self.check_num_inference_steps(num_inference_steps)
        default_height, default_width = self.default_size()
        height, width = height or default_height, width or default_width
        self.check_size(height, width)
        bad_inputs = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if bad_inputs:
            raise ValueError(f"callback_on_step_end_tensor_inputs {bad_inputs} not in {self._callback_tensor_inputs}")
        device = self._execution_device

        # 2. encode the condition
        unet_kwargs, num_images, do_cfg, (prompt_embeds, negative_prompt_embeds) = self._conditioning(
            prompt, class_labels, batch_size, num_images_per_prompt, guidance_scale, negative_prompt,
            prompt_embeds, negative_prompt_embeds, device,
        )

        # 3. timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 4. z_T
        dtype = prompt_embeds.dtype if prompt_embeds is not None else self.unet.dtype
        latents = self.prepare_latents(
            num_images, self.unet.config.in_channels, height, width, dtype, device, generator, latents
        )
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # 5. denoising loop
        for i, t in enumerate(self.progress_bar(timesteps)):
            latent_model_input = torch.cat([latents] * 2) if do_cfg else latents  # (2B or B, C, h, w)
            latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)
            noise_pred = self.unet(latent_model_input, t, **unet_kwargs, return_dict=False)[0]
            if do_cfg:
                noise_pred = self.classifier_free_guidance(noise_pred, guidance_scale, latents.shape[1])
            latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
            if callback_on_step_end is not None:
                callback_kwargs = {
                    "latents": latents,
                    "prompt_embeds": unet_kwargs.get("encoder_hidden_states"),
                    "negative_prompt_embeds": negative_prompt_embeds,
                }
                callback_kwargs = {k: callback_kwargs[k] for k in callback_on_step_end_tensor_inputs}
                outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                latents = outputs.pop("latents", latents)
                if "prompt_embeds" in outputs and "encoder_hidden_states" in unet_kwargs:
                    unet_kwargs["encoder_hidden_states"] = outputs.pop("prompt_embeds")

        # 6. decode: z_0 / scaling_factor → [-1, 1] → output_type
        if output_type == "latent":
            images = latents
        else:
            images = self.decode_latents(latents.to(self.first_stage.dtype), generator=generator)
            images = self.postprocess(images, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    # ---- likelihood and inversion ------------------------------------------------------------------

    def model_output_fn(self, class_labels: torch.Tensor | None = None, keep_variance: bool = True, prompt_embeds: torch.Tensor | None = None):
        """`fn(z_t, t)` → the UNet's output for the latents z_t at steps t, conditioned on `prompt_embeds` (text,
        (B, L, D)) or `class_labels` (∅ if None) — the callable of `variational_bound`, `ddim_invert`, `ddim_sample`."""
        if not self.is_text_conditioned:
            return super().model_output_fn(class_labels, keep_variance)

        def fn(sample: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            output = self.unet(sample, timesteps, encoder_hidden_states=prompt_embeds).sample
            return output if keep_variance else output[:, : sample.shape[1]]

        return fn

    def _condition_for(self, prompt, class_labels, num_images: int):
        """(prompt_embeds or None, class_labels or None) for `num_images` images, no guidance."""
        if self.is_text_conditioned:
            prompt = "" if prompt is None else prompt
            prompts = [prompt] * num_images if isinstance(prompt, str) else list(prompt)
            if len(prompts) != num_images:
                raise ValueError(f"{len(prompts)} prompts for {num_images} images: give one, or one per image")
            embeds, _ = self.encode_prompt(prompts, self._execution_device, 1, False)
            return embeds, None
        if prompt is not None:
            raise ValueError(f"a prompt was given but the UNet ({type(self.unet).__name__}) is not text-conditioned")
        return None, self.prepare_class_labels(class_labels, num_images)

    @torch.no_grad()
    def likelihood(
        self,
        images,
        prompt: str | list[str] | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        num_sampled_timesteps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The variational bound L ≥ −log p_θ(z_0) of the latents z_0 = scaling_factor · mode of q(z | x), in bits per
        latent dimension (Ho et al. 2020, eq. 5), per image. It is a bound on the density of the first stage's
        latents, not on the pixels: the first stage's own reconstruction term is not in it, and the density of
        continuous latents depends on their scale, so compare it only between models over the same first stage.

        The decoder term L_0 is a continuous Gaussian, −log N(z_0; μ_θ(z_1, 1), σ_1²): latents have no 256-level
        grid. The rest is `GenZooDDPMScheduler.variational_bound` on this pipeline's scheduler config.

        Args:
            images: PIL images, numpy arrays or tensors in [0, 1] (diffusers' convention).
            prompt / class_labels: the condition (no guidance); None: the ∅ model (the empty prompt).
            num_sampled_timesteps: None: all T terms; K: an unbiased estimate from K sampled steps.
            generator: for the noise of each z_t.
        Returns:
            bits per latent dimension, a (B,) tensor.
        """
        z_0 = self.encode_images(images).to(self.unet.dtype)
        prompt_embeds, labels = self._condition_for(prompt, class_labels, z_0.shape[0])
        bound_scheduler = GenZooDDPMScheduler.from_config(self.scheduler.config, clip_sample=False, thresholding=False)
        bound = bound_scheduler.variational_bound(
            self.model_output_fn(labels, prompt_embeds=prompt_embeds),
            z_0,
            generator=generator,
            num_sampled_timesteps=num_sampled_timesteps,
            decoder="gaussian",
        )
        return bound.bits_per_dim

    @torch.no_grad()
    def invert(
        self,
        images,
        prompt: str | list[str] | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        num_inference_steps: int = 50,
    ) -> torch.Tensor:
        """z_T from images by deterministic DDIM inversion of their latents (Song et al. 2021, §4.3), conditioned
        on `prompt` / `class_labels` without guidance; (B, C, H / f, W / f)."""
        self.check_num_inference_steps(num_inference_steps)
        z_0 = self.encode_images(images).to(self.unet.dtype)
        prompt_embeds, labels = self._condition_for(prompt, class_labels, z_0.shape[0])
        fn = self.model_output_fn(labels, keep_variance=False, prompt_embeds=prompt_embeds)
        return ddim_invert(fn, z_0, self._inversion_config(), num_inference_steps)

    @torch.no_grad()
    def reconstruct(
        self,
        images,
        prompt: str | list[str] | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        num_inference_steps: int = 50,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """`invert`, then DDIM back with η = 0 and the same S steps, then decode."""
        check_output_type(output_type)
        self.check_num_inference_steps(num_inference_steps)
        z_0 = self.encode_images(images).to(self.unet.dtype)
        prompt_embeds, labels = self._condition_for(prompt, class_labels, z_0.shape[0])
        fn = self.model_output_fn(labels, keep_variance=False, prompt_embeds=prompt_embeds)
        config = self._inversion_config()
        z_T = ddim_invert(fn, z_0, config, num_inference_steps)
        reconstruction = self.decode_latents(ddim_sample(fn, z_T, config, num_inference_steps).to(self.first_stage.dtype))
        images = self.postprocess(reconstruction, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)
