"""PixelDiffusionPipeline: DDPM / DDIM sampling in pixel space (Ho et al. 2020; Song et al. 2021), optionally
class-conditional with classifier-free guidance (Ho & Salimans 2022), plus the variational bound in bits/dim and
deterministic DDIM inversion.

Class-conditional convention. A class-conditional `UNet2DModel` is built with `num_class_embeds = num_classes + 1`:
labels 0 … num_classes − 1 are the classes and the last index, `num_class_embeds − 1`, is the null label ∅ that
training substitutes when it drops the condition. Classifier-free guidance (../shared/EQUATIONS.md, "Latent
diffusion") is then
    ε̂ = ε(x_t, ∅) + s (ε(x_t, c) − ε(x_t, ∅)),   s = guidance_scale,
and sampling a class-conditional UNet without labels uses ∅ for every image (the unconditional model).

Notation as in hf_genzoo.schedulers: x_t `latents` (here pixels), T num_train_timesteps, S num_inference_steps.
"""

from __future__ import annotations

import inspect

import torch
from diffusers import UNet2DModel
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from hf_genzoo.schedulers import GenZooDDPMScheduler, ddim_invert, ddim_sample
from hf_genzoo.schedulers.schedules import check_num_inference_steps

from .pipeline_utils import GenZooImageProcessor, GenZooPipeline, check_output_type


class PixelDiffusionPipeline(GenZooPipeline):
    r"""
    Sampling, likelihood and inversion with a pixel-space diffusion model.

    Parameters:
        unet ([`UNet2DModel`]): predicts ε, x_0 or v (as the scheduler's `prediction_type` says) from (x_t, t), and,
            if `unet.config.num_class_embeds` is set, from a class label (the last index is the null label ∅).
        scheduler ([`SchedulerMixin`]): any DDPM/DDIM-family scheduler, ours (`GenZooDDPMScheduler`,
            `GenZooDDIMScheduler`) or diffusers' (`DDPMScheduler`, `DDIMScheduler`, ...).
    """

    model_cpu_offload_seq = "unet"
    model_card_template = "pixel_diffusion"
    model_card_tags = ("diffusion", "ddpm", "ddim")

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.image_processor = GenZooImageProcessor(num_channels=unet.config.in_channels)

    # ---- building blocks -------------------------------------------------------------------------

    @property
    def num_classes(self) -> int | None:
        """Number of real classes (the null label excluded), or None for an unconditional UNet."""
        num_class_embeds = self.unet.config.num_class_embeds
        return None if num_class_embeds is None else num_class_embeds - 1

    @property
    def null_class_label(self) -> int | None:
        """∅, the label of the dropped condition: `num_class_embeds − 1`."""
        return self.num_classes

    def check_num_inference_steps(self, num_inference_steps: int) -> None:
        check_num_inference_steps(num_inference_steps, self.scheduler.config.num_train_timesteps)

    def prepare_class_labels(self, class_labels, batch_size: int) -> torch.Tensor | None:
        """int / sequence / tensor → (B,) int64 labels on the execution device; None stays None (and ∅ is used for a
        class-conditional UNet). Raises for labels on an unconditional UNet, out of [0, num_classes − 1], or of the
        wrong length."""
        if class_labels is None:
            return None
        if self.num_classes is None:
            raise ValueError(
                "class_labels were given but the UNet is unconditional (unet.config.num_class_embeds is None)"
            )
        labels = torch.as_tensor(class_labels, dtype=torch.int64).flatten()
        if labels.numel() == 1:
            labels = labels.expand(batch_size)
        if labels.numel() != batch_size:
            raise ValueError(
                f"class_labels has {labels.numel()} labels for a batch of {batch_size}: give one, or one per image"
            )
        if labels.min() < 0 or labels.max() > self.num_classes - 1:
            raise ValueError(
                f"class_labels must lie in [0, {self.num_classes - 1}] ({self.num_classes} classes; "
                f"{self.null_class_label} is the null label), got {labels.tolist()}"
            )
        return labels.to(self._execution_device)

    def _class_labels_or_null(self, class_labels: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
        if self.num_classes is None:
            return None
        if class_labels is None:
            return torch.full((batch_size,), self.null_class_label, dtype=torch.int64, device=self._execution_device)
        return class_labels

    def model_output_fn(self, class_labels: torch.Tensor | None = None, keep_variance: bool = True):
        """`fn(x_t, t)` → the UNet's output for the batch x_t at steps t, conditioned on `class_labels` (∅ if None)
        — the callable that `variational_bound`, `ddim_invert` and `ddim_sample` take. `keep_variance=False` drops
        the variance channels of a UNet that predicts its variance (2C outputs), as DDIM does not use them."""

        def fn(sample: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            labels = self._class_labels_or_null(class_labels, sample.shape[0])
            output = self.unet(sample, timesteps, class_labels=labels).sample  # (B, C or 2C, H, W)
            return output if keep_variance else output[:, : sample.shape[1]]

        return fn

    def _to_tensor(self, images) -> torch.Tensor:
        """Images in diffusers' convention (`GenZooImageProcessor`) → x_0 (B, C, H, W) in [-1, 1], the UNet's dtype."""
        return self.preprocess(images).to(self.unet.dtype)

    def prepare_extra_step_kwargs(self, generator, eta: float) -> dict:
        """`eta` and `generator` for `scheduler.step`, each only if its signature takes it (as diffusers does)."""
        parameters = set(inspect.signature(self.scheduler.step).parameters)
        extra_step_kwargs = {}
        if "eta" in parameters:
            extra_step_kwargs["eta"] = eta
        if "generator" in parameters:
            extra_step_kwargs["generator"] = generator
        return extra_step_kwargs

    def _inversion_config(self) -> dict:
        """The pipeline's noise schedule and prediction type for deterministic DDIM both ways: no clipping or
        thresholding of x̂_0 (they break invertibility), and "linspace" spacing replaced by "trailing" (DDIM steps
        t → t − T // S, which matches only "leading" and "trailing" steps)."""
        config = dict(self.scheduler.config)
        config.update(clip_sample=False, thresholding=False)
        if config.get("timestep_spacing", "leading") not in ("leading", "trailing"):
            config["timestep_spacing"] = "trailing"
        return config

    # ---- sampling --------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 50,
        eta: float = 0.0,
        class_labels: int | list[int] | torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Sample images: x_T ~ N(0, I), then `num_inference_steps` reverse steps of the scheduler.

        Args:
            batch_size (`int`, defaults to 1): number of images.
            generator (`torch.Generator` or a list of them, *optional*): makes sampling deterministic. x_T is drawn
                first, exactly as diffusers' `DDPMPipeline` draws it, so both give the same images.
            num_inference_steps (`int`, defaults to 50): S, between 1 and the scheduler's num_train_timesteps.
            eta (`float`, defaults to 0.0): η of DDIM (0 deterministic, 1 DDPM-like); passed to `scheduler.step` only
                if it takes it.
            class_labels (`int`, a list or a tensor, *optional*): one label for all images or one per image, in
                [0, num_classes − 1], for a class-conditional UNet. None: the null label ∅ (unconditional samples).
            guidance_scale (`float`, defaults to 1.0): s of classifier-free guidance; 1 is the plain conditional
                model, other values need class_labels and run the conditional and ∅ passes in one batch.
            output_type (`"pil" | "np" | "pt"`, defaults to `"pil"`): PIL images, a numpy array (B, H, W, C) in
                [0, 1], or a tensor (B, C, H, W) in [0, 1].
            return_dict (`bool`, defaults to `True`): an `ImagePipelineOutput` rather than a tuple.
        """
        # 1. validate
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.check_num_inference_steps(num_inference_steps)
        check_output_type(output_type)
        if guidance_scale != 1.0 and class_labels is None:
            raise ValueError(
                f"guidance_scale={guidance_scale} needs class_labels (classifier-free guidance); "
                "use guidance_scale=1.0 for unconditional sampling"
            )
        class_labels = self.prepare_class_labels(class_labels, batch_size)
        do_classifier_free_guidance = class_labels is not None and guidance_scale != 1.0
        device = self._execution_device
        if do_classifier_free_guidance:
            null_labels = self._class_labels_or_null(None, batch_size)
            model_class_labels = torch.cat([null_labels, class_labels])  # (2B,): ∅ first, then c
        else:
            model_class_labels = self._class_labels_or_null(class_labels, batch_size)

        # 2. timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)

        # 3. x_T ~ N(0, I), as DDPMPipeline draws it
        sample_size = self.unet.config.sample_size
        sample_size = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        shape = (batch_size, self.unet.config.in_channels, *sample_size)  # (B, C, H, W)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        latents = latents * self.scheduler.init_noise_sigma
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # 4. denoising loop
        for t in self.progress_bar(self.scheduler.timesteps):
            latent_model_input = (
                torch.cat([latents] * 2) if do_classifier_free_guidance else latents
            )  # (2B or B, C, H, W)
            latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)
            model_output = self.unet(latent_model_input, t, class_labels=model_class_labels).sample
            if do_classifier_free_guidance:
                model_output = self.classifier_free_guidance(model_output, guidance_scale, latents.shape[1])
            latents = self.scheduler.step(model_output, t, latents, **extra_step_kwargs).prev_sample

        # 5. decode: [-1, 1] → output_type
        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    @staticmethod
    def classifier_free_guidance(model_output: torch.Tensor, guidance_scale: float, channels: int) -> torch.Tensor:
        """ε̂ = ε(x, ∅) + s (ε(x, c) − ε(x, ∅)) (Ho & Salimans 2022) on the (2B, …) output of the batched ∅ / c passes.

        For a UNet that also predicts its variance (2C output channels), the guidance acts on the first C channels
        and the conditional variance is kept.
        """
        output_uncond, output_cond = model_output.chunk(2)  # (B, C or 2C, H, W) each
        if output_cond.shape[1] == 2 * channels:
            (output_uncond, _), (output_cond, variance_cond) = (
                o.split(channels, dim=1) for o in (output_uncond, output_cond)
            )
            guided = output_uncond + guidance_scale * (output_cond - output_uncond)
            return torch.cat([guided, variance_cond], dim=1)
        return output_uncond + guidance_scale * (output_cond - output_uncond)

    # ---- likelihood ------------------------------------------------------------------------------

    @torch.no_grad()
    def likelihood(
        self,
        images,
        num_sampled_timesteps: int | None = None,
        generator: torch.Generator | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The variational bound L ≥ −log p_θ(x_0) in bits/dim, per image (Ho et al. 2020, eq. 5 and §3.3).

        Computed by `GenZooDDPMScheduler.variational_bound` built from this pipeline's scheduler config (so the same
        β schedule, prediction type and variance type, whichever scheduler the pipeline holds).

        Args:
            images: PIL images, numpy arrays (H, W, C) / (B, H, W, C) or tensors (B, C, H, W) in [0, 1] (diffusers'
                convention, so `pipe(output_type=...)` output reads back as it is), on the 256-level grid for a
                bound of the data; a tensor with negative values is taken as [-1, 1], with diffusers' warning.
            num_sampled_timesteps: None for all T terms (exact); K for an unbiased estimate from K sampled steps.
            generator: for the noise of each x_t (and the sampled steps).
            class_labels: for a class-conditional UNet, the bound of p_θ(x_0 | c); None: of the ∅ model.

        Returns:
            bits/dim, a (B,) tensor.
        """
        x_0 = self._to_tensor(images)
        class_labels = self.prepare_class_labels(class_labels, x_0.shape[0])
        bound_scheduler = GenZooDDPMScheduler.from_config(self.scheduler.config)
        bound = bound_scheduler.variational_bound(
            self.model_output_fn(class_labels), x_0, generator=generator, num_sampled_timesteps=num_sampled_timesteps
        )
        return bound.bits_per_dim

    # ---- DDIM inversion --------------------------------------------------------------------------

    @torch.no_grad()
    def invert(
        self,
        images,
        num_inference_steps: int = 50,
        class_labels: int | list[int] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_T from images by deterministic DDIM inversion (Song et al. 2021, §4.3), (B, C, H, W).

        Uses `_inversion_config` (the pipeline's schedule without clipping). Deterministic: the same images give the
        same x_T. Images as `likelihood` takes them; `class_labels` condition the UNet (no guidance).
        """
        self.check_num_inference_steps(num_inference_steps)
        x_0 = self._to_tensor(images)
        class_labels = self.prepare_class_labels(class_labels, x_0.shape[0])
        return ddim_invert(
            self.model_output_fn(class_labels, keep_variance=False), x_0, self._inversion_config(), num_inference_steps
        )

    @torch.no_grad()
    def reconstruct(
        self,
        images,
        num_inference_steps: int = 50,
        class_labels: int | list[int] | torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """`invert`, then DDIM-sample back with η = 0 and the same S steps; images as `likelihood` takes them.

        Plain DDIM inversion evaluates ε_θ at the less noisy end of each step, so the reconstruction error is first
        order in the step size (∝ 1/S, and to how fast ε_θ changes with x_t): more steps, smaller error.
        """
        check_output_type(output_type)
        self.check_num_inference_steps(num_inference_steps)
        x_0 = self._to_tensor(images)
        class_labels = self.prepare_class_labels(class_labels, x_0.shape[0])
        model_output_fn, config = self.model_output_fn(class_labels, keep_variance=False), self._inversion_config()
        x_T = ddim_invert(model_output_fn, x_0, config, num_inference_steps)
        reconstruction = ddim_sample(model_output_fn, x_T, config, num_inference_steps)
        images = self.postprocess(reconstruction, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)
