"""AutoencoderPipeline: reconstruct, encode, decode, interpolate and sample with any model of the
autoencoder family (`AutoencoderModel` in all its variants, `VAEModel`; a `VQVAEModel` all but sample)."""

from __future__ import annotations

from typing import Literal

import torch
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from hf_genzoo.metrics.likelihood import iwae_bound, vae_elbo
from hf_genzoo.metrics.reconstruction import mse
from hf_genzoo.models import AutoencoderModel, VAEModel, VQVAEModel

from .pipeline_utils import GenZooImageProcessor, GenZooPipeline, check_output_type


class AutoencoderPipeline(GenZooPipeline):
    r"""
    Inference with an autoencoder or VAE.

    Sampling (`__call__`) draws z from the VAE's sampling prior (N(0, I), or the Gaussian mixture fitted to its
    training latents when the VAE has one: `latent_prior="mixture"`), or, for a deterministic autoencoder, from
    the Gaussian fitted to its training latents (GLO), and decodes it; fitted distributions are stored with the
    model. A `VQVAEModel` encodes (to z_e), decodes (quantising first) and reconstructs here; it samples through
    `VQVAEPipeline` with its prior.

    Parameters:
        model ([`AutoencoderModel`], [`VAEModel`] or [`VQVAEModel`]): the trained model.
    """

    model_cpu_offload_seq = "model"
    model_card_template = "autoencoder"
    model_card_tags = ("autoencoder",)

    def __init__(self, model: AutoencoderModel | VAEModel | VQVAEModel):
        super().__init__()
        if not isinstance(model, (AutoencoderModel, VAEModel, VQVAEModel)):
            raise ValueError(f"model must be an AutoencoderModel, a VAEModel or a VQVAEModel, got {type(model).__name__}")
        self.register_modules(model=model)
        self.image_processor = GenZooImageProcessor(num_channels=model.config.in_channels)

    # ---- building blocks -------------------------------------------------------------------------

    def _to_tensor(self, images) -> torch.Tensor:
        """Images in diffusers' convention (`GenZooImageProcessor`) → (B, C, H, W) in [-1, 1], the model's dtype."""
        return self.preprocess(images).to(self.model.dtype)

    @torch.no_grad()
    def encode(self, images, sample_posterior: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images → latents: z(x), or the VAE posterior's mean (a posterior sample with `sample_posterior=True`).

        Images as diffusers' pipelines take them (`GenZooImageProcessor`): PIL, numpy (H, W, C) / (N, H, W, C) or
        tensors (N, C, H, W) in [0, 1], so `pipe(output_type=...)` output reads back as it is; a tensor with negative
        values is taken as [-1, 1], with diffusers' warning."""
        x = self._to_tensor(images)
        output = self.model.encode(x)
        if isinstance(self.model, VAEModel):
            posterior = output.latent_dist
            return posterior.sample(generator) if sample_posterior else posterior.mode()
        return output.latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, output_type: str = "pil", return_dict: bool = True):
        """Latents → images (the mean of p(x|z) for a VAE)."""
        check_output_type(output_type)
        images = self.model.decode(latents.to(device=self.device, dtype=self.model.dtype)).sample
        images = self.postprocess(images, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    @torch.no_grad()
    def reconstruct(self, images, output_type: str = "pil", return_dict: bool = True):
        """decode(encode(x)), no corruption and no posterior sampling; images as `encode` takes them."""
        return self.decode(self.encode(images), output_type=output_type, return_dict=return_dict)

    @torch.no_grad()
    def interpolate(
        self,
        a,
        b,
        num_steps: int = 8,
        method: Literal["slerp", "linear"] = "slerp",
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Frames decoded along the path from z(a) to z(b), both ends included.

        `a` and `b` are images (encoded first, as `encode` takes them) or latent tensors of the model's latent shape. `"linear"`
        is (1 − t) z_a + t z_b; `"slerp"` interpolates along the great circle around the prior's centre
        (0 for the VAE, the fitted latent mean for an autoencoder), as suits Gaussian latents.
        """
        if num_steps < 2:
            raise ValueError(f"num_steps must be ≥ 2 (both ends are included), got {num_steps}")
        if method not in ("slerp", "linear"):
            raise ValueError(f"method must be 'slerp' or 'linear', got {method!r}")
        z_a, z_b = (self._as_latent(v) for v in (a, b))
        center = torch.zeros_like(z_a)
        if isinstance(self.model, AutoencoderModel) and self.model.latent_gaussian_fitted:
            center = self.model.latent_mean.view_as(z_a[0])[None].to(z_a)
        t = torch.linspace(0, 1, num_steps, device=z_a.device, dtype=torch.float32)
        path = lerp(z_a - center, z_b - center, t) if method == "linear" else slerp(z_a - center, z_b - center, t)
        return self.decode((path + center).to(self.model.dtype), output_type=output_type, return_dict=return_dict)

    def _as_latent(self, value) -> torch.Tensor:
        shape = tuple(self.model.latent_shape)
        if isinstance(value, torch.Tensor) and tuple(value.shape[-len(shape):]) == shape and value.ndim in (len(shape), len(shape) + 1):
            latent = value if value.ndim == len(shape) + 1 else value[None]
        else:
            latent = self.encode(value)
        if latent.shape[0] != 1:
            raise ValueError(f"interpolate takes one image or latent at each end, got a batch of {latent.shape[0]}")
        return latent.float()

    # ---- anomaly detection -----------------------------------------------------------------------

    @torch.no_grad()
    def anomaly_score(
        self,
        images,
        method: Literal["reconstruction", "elbo", "iwae"] = "reconstruction",
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 256,
    ) -> torch.Tensor:
        r"""
        A score per image, higher = less like the training data (more anomalous).

        Args:
            images: PIL image(s), numpy (H, W, C) / (B, H, W, C) or tensors (B, C, H, W) in [0, 1], as `encode`
                takes them (diffusers' convention; a tensor with negative values is taken as [-1, 1], with a warning).
            method (`"reconstruction" | "elbo" | "iwae"`, defaults to `"reconstruction"`):
                - `"reconstruction"`: the mean squared error of `reconstruct(x)` (clamped to [-1, 1]) per image, in
                  [-1, 1] pixel units (any model: no corruption, the posterior mean for a VAE);
                - `"elbo"` (VAE only): −ELBO in nats, the mean of `num_samples` (default 1) one-sample estimates of
                  −(E_q log p(x|z) − KL(q(z|x) ‖ p(z))) (Kingma & Welling 2014), as `vae_elbo`;
                - `"iwae"` (VAE only): −(the importance-weighted bound) in nats with k = `num_samples` (default 64),
                  log p(x) ≥ E log (1/k) Σ_i p(x, z_i)/q(z_i|x) (Burda et al. 2016), as `iwae_bound`.
            num_samples (`int`, *optional*): posterior draws per image for `"elbo"` / `"iwae"`.
            generator (`torch.Generator`, *optional*): makes the posterior draws deterministic.
            batch_size (`int`, defaults to 256): images per model call.

        Returns:
            `torch.Tensor` (B,) float32 on the CPU.
        """
        # 1. validate
        if method not in ("reconstruction", "elbo", "iwae"):
            raise ValueError(f"method must be 'reconstruction', 'elbo' or 'iwae', got {method!r}")
        if method != "reconstruction" and not isinstance(self.model, VAEModel):
            raise ValueError(
                f"method={method!r} is a VAE's likelihood bound; this {type(self.model).__name__} has none: use "
                "method='reconstruction'"
            )
        if num_samples is not None and method == "reconstruction":
            raise ValueError(f"num_samples={num_samples!r} counts posterior draws of 'elbo' / 'iwae'; 'reconstruction' takes none")
        num_samples = num_samples if num_samples is not None else (64 if method == "iwae" else 1)
        if num_samples < 1:
            raise ValueError(f"num_samples must be ≥ 1, got {num_samples}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        # 2. score in batches
        scores = []
        for x in self._to_tensor(images).split(batch_size):  # (b, C, H, W) in [-1, 1]
            if method == "reconstruction":
                latents = self.model.encode(x)
                latents = latents.latent_dist.mode() if isinstance(self.model, VAEModel) else latents.latents
                score = mse(x, self.model.decode(latents).sample.clamp(-1, 1))  # the images `reconstruct` gives
            else:
                posterior = self.model.encode(x).latent_dist  # one encoder pass for every draw
                if method == "elbo":
                    score = -torch.stack([vae_elbo(self.model, x, generator, posterior=posterior) for _ in range(num_samples)]).mean(0)
                else:
                    score = -iwae_bound(self.model, x, num_samples, generator, posterior=posterior)
            scores.append(score.float().cpu())
        return torch.cat(scores)

    # ---- sampling --------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        prior: str | None = None,
        markov_chain_steps: int = 0,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Sample new images.

        Args:
            batch_size (`int`, defaults to 1): number of images.
            generator (`torch.Generator`, *optional*): makes sampling deterministic.
            prior (`"normal" | "mixture"`, *optional*): a VAE's latent distribution to sample, N(0, I) or its
                fitted mixture; defaults to the VAE's `latent_prior`. Autoencoders take no `prior`.
            markov_chain_steps (`int`, defaults to 0): a VAE's draws are decoded and re-encoded (to the posterior
                mean) this many times before the final decode, which moves them onto the latents of real images
                (`VAEModel.markov_chain`; e.g. 20).
            output_type (`"pil" | "np" | "pt"`, defaults to `"pil"`): PIL images, a numpy array (B, H, W, C) in
                [0, 1], or a tensor (B, C, H, W) in [0, 1].
            return_dict (`bool`, defaults to `True`): an `ImagePipelineOutput` rather than a tuple.
        """
        # 1. validate
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        check_output_type(output_type)
        if isinstance(self.model, VQVAEModel):
            raise ValueError(
                "a VQ-VAE samples through a prior over its codes: train one with training_scripts/train_vq_prior.py "
                "and sample with VQVAEPipeline; AutoencoderPipeline only encodes, decodes and reconstructs with it"
            )
        if prior is not None and not isinstance(self.model, VAEModel):
            raise ValueError(f"prior={prior!r} chooses a VAE's latent distribution; this {type(self.model).__name__} has none to choose")
        if markov_chain_steps and not isinstance(self.model, VAEModel):
            raise ValueError(
                f"markov_chain_steps={markov_chain_steps!r} re-encodes through a VAE's posterior; this "
                f"{type(self.model).__name__} has none"
            )
        # 2. latents from the prior (VAE) or the fitted latent Gaussian (autoencoders)
        latents = self.model.sample_prior(batch_size, generator=generator, **({} if prior is None else {"prior": prior}))
        if isinstance(self.model, VAEModel):
            latents = self.model.markov_chain(latents, markov_chain_steps)
        # 3. decode
        return self.decode(latents, output_type=output_type, return_dict=return_dict)


def lerp(z_a: torch.Tensor, z_b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(1 − t) z_a + t z_b for each t: (1, ...) × (T,) → (T, ...)."""
    t = t.view(-1, *([1] * (z_a.ndim - 1)))  # (T, 1, ...)
    return (1 - t) * z_a + t * z_b


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation sin((1−t)Ω)/sin Ω · z_a + sin(tΩ)/sin Ω · z_b, cos Ω = ẑ_a·ẑ_b (Shoemake 1985)."""
    a, b = z_a.flatten(1), z_b.flatten(1)  # (1, d)
    cos_omega = (a / a.norm(dim=1, keepdim=True) * b / b.norm(dim=1, keepdim=True)).sum(1).clamp(-1, 1)
    omega = torch.arccos(cos_omega)  # (1,)
    if omega.abs().item() < 1e-4:  # (anti-)parallel ends: the great circle is undefined, fall back to a line
        return lerp(z_a, z_b, t)
    t = t.view(-1, 1)  # (T, 1)
    path = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)  # (T, d)
    return path.view(-1, *z_a.shape[1:])  # (T, ...)
