"""GANPipeline: sampling and latent interpolation with a DCGAN generator (Radford et al. 2016)."""

from __future__ import annotations

from typing import Literal

import torch
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from hf_genzoo.models.gan import DCGANDiscriminator, DCGANGenerator, check_class_labels

from .pipeline_autoencoder import lerp, slerp
from .pipeline_utils import GenZooImageProcessor, GenZooPipeline, check_output_type

REJECTION_SCORES = ("jacobian", "discriminator", "jacobian+discriminator")


@torch.no_grad()
def jacobian_sensitivity(
    generator_model: DCGANGenerator,
    latents: torch.Tensor,
    class_labels: torch.Tensor | None = None,
    images: torch.Tensor | None = None,
    num_directions: int = 4,
    eps: float = 1e-2,
    generator: torch.Generator | None = None,
    chunk_size: int = 256,
) -> torch.Tensor:
    """How fast the generator's image changes around each latent: the mean over random directions v ~ N(0, I) of
    ‖G(z + εv) − G(z)‖² / ε², a finite-difference estimate of ‖J_G(z)‖²_F (E_v ‖J v‖² = ‖J‖²_F). Latents that
    land between two of the data's separate modes sit where G changes fast (Tanielian et al. 2020, "Learning
    disconnected manifolds: a no GAN's land", who reject samples by this norm). `images`, G(z) when already
    computed, saves one forward pass. Returns (B,) float32; v is drawn from the CPU `generator`."""
    scores = []
    for start in range(0, latents.shape[0], chunk_size):
        z = latents[start : start + chunk_size]
        labels = None if class_labels is None else class_labels[start : start + chunk_size]
        base = (generator_model(z, labels) if images is None else images[start : start + chunk_size]).float()
        total = torch.zeros(z.shape[0], device=z.device)
        for _ in range(num_directions):
            v = torch.randn(z.shape, generator=generator).to(z.device, z.dtype)
            total += (generator_model(z + eps * v, labels).float() - base).flatten(1).pow(2).sum(1) / eps**2
        scores.append(total / num_directions)
    return torch.cat(scores)


def _chunked(module, inputs: torch.Tensor, labels: torch.Tensor | None, chunk_size: int = 256) -> torch.Tensor:
    """module(inputs, labels) over consecutive chunks, concatenated (bounded memory for a large candidate pool)."""
    return torch.cat([
        module(inputs[i : i + chunk_size], None if labels is None else labels[i : i + chunk_size])
        for i in range(0, inputs.shape[0], chunk_size)
    ])


def _ranks(scores: torch.Tensor) -> torch.Tensor:
    """0 for the smallest score, n − 1 for the largest."""
    return scores.argsort().argsort().float()


class GANPipeline(GenZooPipeline):
    r"""
    Sampling with a trained GAN generator: z ~ N(0, I) (optionally truncated), one forward pass.

    Parameters:
        generator_model ([`DCGANGenerator`]): the generator (the EMA weights when the training script saved them).
        discriminator ([`DCGANDiscriminator`], *optional*): kept only when training was asked to publish it.
    """

    model_cpu_offload_seq = "generator_model"
    model_card_template = "gan"
    model_card_tags = ("gan", "dcgan")
    _optional_components = ["discriminator"]

    def __init__(self, generator_model: DCGANGenerator, discriminator: DCGANDiscriminator | None = None):
        super().__init__()
        self.register_modules(generator_model=generator_model, discriminator=discriminator)
        self.image_processor = GenZooImageProcessor(num_channels=generator_model.config.out_channels)

    @property
    def latent_dim(self) -> int:
        return self.generator_model.config.latent_dim

    def prepare_latents(self, batch_size: int, generator=None, truncation: float | None = None) -> torch.Tensor:
        """z ~ N(0, I) of shape (B, latent_dim); with `truncation` τ, entries with |z| > τ are redrawn until all lie
        within τ (the truncation trick, Brock et al. 2019: less variety, higher fidelity)."""
        if truncation is not None and truncation <= 0:
            raise ValueError(f"truncation must be > 0 (or None for no truncation), got {truncation}")
        z = torch.randn((batch_size, self.latent_dim), generator=generator)
        if truncation is not None:
            outside = z.abs() > truncation
            while outside.any():
                z[outside] = torch.randn((int(outside.sum()),), generator=generator)
                outside = z.abs() > truncation
        return z.to(self.device, self.generator_model.dtype)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        truncation: float | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        rejection: str | None = None,
        oversample: int = 5,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Sample images, optionally by rejection: draw `oversample` × `batch_size` latents and keep the `batch_size`
        whose images score best (for a class-conditional generator, the best of each asked-for label's
        `oversample` × count candidates), returned in the order they were drawn.

        Args:
            batch_size (`int`, defaults to 1): number of images (ignored when `latents` are given).
            generator (`torch.Generator`, *optional*): a CPU generator for z, for reproducible samples.
            class_labels (`int`, a list or a tensor, *optional*): one label for all images or one per image, for a
                class-conditional generator (required there; refused for an unconditional one).
            truncation (`float`, *optional*): τ of the truncation trick; None samples the full Gaussian.
            latents (`torch.Tensor`, *optional*): z of shape (B, latent_dim) to use instead of drawing them.
            output_type (`"pil" | "np" | "pt"`, defaults to `"pil"`).
            return_dict (`bool`, defaults to `True`): an `ImagePipelineOutput` rather than a tuple.
            rejection (`str`, *optional*): how candidates are scored, lowest kept: `"jacobian"`, the generator's
                local sensitivity (`jacobian_sensitivity`; Tanielian et al. 2020); `"discriminator"`, minus the
                pipeline's discriminator logit (as in discriminator rejection sampling, Azadi et al. 2019; needs a
                pipeline saved with its discriminator, `train_gan.py --save_discriminator`);
                `"jacobian+discriminator"`, the sum of the two scores' ranks among the candidates. None samples
                directly.
            oversample (`int`, defaults to 5): candidates drawn per kept image, with `rejection`.
        """
        check_output_type(output_type)
        if latents is None and batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if rejection is not None:
            images = self._rejection_sample(batch_size, generator, class_labels, truncation, latents, rejection, oversample)
        else:
            if latents is None:
                latents = self.prepare_latents(batch_size, generator, truncation)
            else:
                self.generator_model.check_latents(latents)
                latents = latents.to(self.device, self.generator_model.dtype)
            labels = check_class_labels(class_labels, self.generator_model.config.num_classes, latents.shape[0], self.device)
            self.generator_model.eval()
            images = self.generator_model(latents, labels)  # (B, C, H, W) in [-1, 1]
        images = self.postprocess(images, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _rejection_sample(self, batch_size, generator, class_labels, truncation, latents, rejection, oversample) -> torch.Tensor:
        """The kept images (batch_size, C, H, W) in [-1, 1], in draw order (`__call__`'s `rejection`)."""
        if rejection not in REJECTION_SCORES:
            raise ValueError(f"rejection must be one of {REJECTION_SCORES} or None, got {rejection!r}")
        if isinstance(oversample, bool) or not isinstance(oversample, int) or oversample < 1:
            raise ValueError(f"oversample must be an integer ≥ 1 (candidates per kept image), got {oversample!r}")
        if latents is not None:
            raise ValueError("rejection draws its own candidate latents: pass batch_size (and generator), not latents")
        if "discriminator" in rejection and self.discriminator is None:
            raise ValueError(
                f"rejection={rejection!r} needs the pipeline's discriminator, and this pipeline has none "
                "(train_gan.py publishes it with --save_discriminator); rejection='jacobian' needs only the generator"
            )
        labels = check_class_labels(class_labels, self.generator_model.config.num_classes, batch_size, self.device)
        z = self.prepare_latents(batch_size * oversample, generator, truncation)  # the candidates
        pool_labels = None if labels is None else labels.repeat_interleave(oversample)  # each asked-for label's own
        self.generator_model.eval()
        images = _chunked(self.generator_model, z, pool_labels)  # (B · oversample, C, H, W)
        scores = []
        if "jacobian" in rejection:
            scores.append(jacobian_sensitivity(self.generator_model, z, pool_labels, images, generator=generator))
        if "discriminator" in rejection:
            self.discriminator.eval()
            scores.append(-_chunked(self.discriminator, images.to(self.discriminator.dtype), pool_labels).float())
        score = scores[0] if len(scores) == 1 else sum(_ranks(s) for s in scores)
        if labels is None:
            chosen = score.argsort()[:batch_size].sort().values
        else:  # for each label, its best candidates fill the places it was asked for, in draw order
            chosen = torch.empty(batch_size, dtype=torch.int64, device=labels.device)
            for label in labels.unique():
                places = torch.nonzero(labels == label).flatten()
                candidates = torch.nonzero(pool_labels == label).flatten()
                chosen[places] = candidates[score[candidates].argsort()[: len(places)]].sort().values
        return images[chosen]

    @torch.no_grad()
    def interpolate(
        self,
        z_a: torch.Tensor,
        z_b: torch.Tensor,
        num_steps: int = 8,
        method: Literal["slerp", "linear"] = "slerp",
        class_labels: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Frames generated along the path from z_a to z_b (each (latent_dim,) or (1, latent_dim)), both ends
        included: "linear" is (1 − t) z_a + t z_b, "slerp" follows the great circle, which keeps the norm typical
        of Gaussian latents (White 2016). A class-conditional generator takes one label for every frame."""
        if num_steps < 2:
            raise ValueError(f"num_steps must be ≥ 2 (both ends are included), got {num_steps}")
        if method not in ("slerp", "linear"):
            raise ValueError(f"method must be 'slerp' or 'linear', got {method!r}")
        ends = []
        for z in (z_a, z_b):
            z = torch.as_tensor(z)
            z = z[None] if z.ndim == 1 else z
            if z.shape[0] != 1:
                raise ValueError(f"interpolate takes one latent at each end, got a batch of {z.shape[0]}")
            self.generator_model.check_latents(z)
            ends.append(z.float())
        t = torch.linspace(0, 1, num_steps)
        path = lerp(*ends, t) if method == "linear" else slerp(*ends, t)  # (num_steps, latent_dim)
        return self(latents=path, class_labels=class_labels, output_type=output_type, return_dict=return_dict)


def save_gif(frames, path: str, duration_ms: int = 100, loop: int = 0, boomerang: bool = True) -> str:
    """Write PIL frames (e.g. `pipe.interpolate(..., output_type="pil").images`) as an animated GIF; `boomerang`
    plays them forth and back so the loop has no jump."""
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    sequence = list(frames) + (list(frames)[-2:0:-1] if boomerang else [])
    sequence[0].save(path, save_all=True, append_images=sequence[1:], duration=duration_ms, loop=loop)
    return path
