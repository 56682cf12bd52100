"""Deterministic autoencoders: plain, denoising, sparse and masked (../shared/EQUATIONS.md, "Autoencoders").

    plain      E(θ) = Σ_n ‖y(x_n, θ) − x_n‖²
    denoising  E(θ) = Σ_n ‖y(x̃_n, θ) − x_n‖², x̃ = x + N(0, σ²) or x with a random fraction ρ set to 0
    masked     x̃ keeps a random subset of patches (He et al. 2021); the rest are replaced by a learned,
               position-dependent mask token and reconstructed
    sparse     Ẽ(θ) = E(θ) + λ Σ_k |z_k| over the latent activations

Sampling from a deterministic autoencoder (Bojanowski et al. 2017, GLO): fit a Gaussian to the latent
codes of the training set (`fit_latent_gaussian`), sample it, decode. The fitted mean and Cholesky
factor are buffers, so they are saved and loaded with the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' loader looks it up in this module)
from .modeling_utils import GenZooModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
import torch.nn.functional as F

from .conv import ConvAutoencoderMixin, ConvDecoder, ConvEncoder, check_latent_config

CORRUPTIONS = ("none", "gaussian", "dropout", "patch_mask")
MAX_FULL_COVARIANCE_DIMS = 4096


@dataclass
class AutoencoderOutput(BaseOutput):
    """latents: the code z(x), (B, C, h, w) or (B, C)."""

    latents: torch.Tensor = None


@dataclass
class AutoencoderLossOutput(BaseOutput):
    """loss: (Σ‖y − x‖² + λ Σ_k |z_k|) / D averaged over the batch; reconstruction: the MSE per pixel value;
    sparsity: Σ_k |z_k| per image."""

    loss: torch.Tensor = None
    reconstruction: torch.Tensor = None
    sparsity: torch.Tensor = None


class AutoencoderModel(GenZooModelMixin, ConfigMixin, ConvAutoencoderMixin):
    r"""
    A convolutional autoencoder; the variant is chosen by config.

    Parameters:
        in_channels, out_channels, block_out_channels, layers_per_block, norm_num_groups, latent_channels,
        latent_type, sample_size: as in [`VAEModel`].
        corruption (`"none" | "gaussian" | "dropout" | "patch_mask"`, defaults to `"none"`): what the training
            loss does to the input before encoding (the target is always the clean input).
        noise_std (`float`, defaults to 0.1): σ of the Gaussian corruption, in [-1, 1] pixel units.
        drop_prob (`float`, defaults to 0.25): ρ, the fraction of input values set to 0 by the dropout corruption.
        mask_ratio (`float`, defaults to 0.75): fraction of patches hidden by the patch-mask corruption.
        patch_size (`int`, defaults to 4): side of a masked patch, in pixels.
        sparsity_weight (`float`, defaults to 0.0): λ of the L1 penalty on the latent activations.
        latent_gaussian (`"full"` or `"diagonal"`, defaults to `"full"`): covariance of the Gaussian fitted to
            the training latents for sampling.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        latent_channels: int = 4,
        latent_type: Literal["spatial", "vector"] = "spatial",
        sample_size: int = 32,
        corruption: Literal["none", "gaussian", "dropout", "patch_mask"] = "none",
        noise_std: float = 0.1,
        drop_prob: float = 0.25,
        mask_ratio: float = 0.75,
        patch_size: int = 4,
        sparsity_weight: float = 0.0,
        latent_gaussian: Literal["full", "diagonal"] = "full",
    ):
        super().__init__()
        check_latent_config(latent_type, block_out_channels, sample_size)
        if corruption not in CORRUPTIONS:
            raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")
        for name, value in (("drop_prob", drop_prob), ("mask_ratio", mask_ratio)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if noise_std < 0 or sparsity_weight < 0:
            raise ValueError(f"noise_std and sparsity_weight must be ≥ 0, got {noise_std} and {sparsity_weight}")
        if corruption == "patch_mask" and sample_size % patch_size:
            raise ValueError(f"sample_size {sample_size} is not divisible by patch_size {patch_size}")
        if latent_gaussian not in ("full", "diagonal"):
            raise ValueError(f"latent_gaussian must be 'full' or 'diagonal', got {latent_gaussian!r}")
        block_out_channels = tuple(block_out_channels)
        shape_args = dict(
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            latent_type=latent_type,
            sample_size=sample_size,
        )
        masked = corruption == "patch_mask"
        # the masked autoencoder's encoder also sees the visibility mask as one more channel
        self.encoder = ConvEncoder(in_channels + int(masked), latent_channels, **shape_args)
        self.decoder = ConvDecoder(latent_channels, out_channels, **shape_args)
        if masked:
            # the mask token: one learned value per channel and position, so it carries position (He et al. 2021)
            self.mask_token = nn.Parameter(torch.zeros(in_channels, sample_size, sample_size))

        # GLO sampling: N(latent_mean, L Lᵀ) fitted to the training latents
        num_latent = math.prod(self.latent_shape)
        if latent_gaussian == "full" and num_latent > MAX_FULL_COVARIANCE_DIMS:
            raise ValueError(
                f"a full latent covariance over {num_latent} dimensions is too large (at most "
                f"{MAX_FULL_COVARIANCE_DIMS}); use latent_gaussian='diagonal'"
            )
        scale_shape = (num_latent, num_latent) if latent_gaussian == "full" else (num_latent,)
        self.register_buffer("latent_mean", torch.zeros(num_latent))
        self.register_buffer("latent_scale", torch.zeros(scale_shape))

    # ---- encode / decode --------------------------------------------------------------------------

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderOutput | tuple:
        """x (B, C, H, W) in [-1, 1] → z(x). No corruption: that is for training (`loss`, `corrupt`)."""
        self._check_images(x)
        if self.config.corruption == "patch_mask":
            x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # everything visible
        latents = self.encoder(x)
        return AutoencoderOutput(latents=latents) if return_dict else (latents,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None) -> DecoderOutput | tuple:
        c = self.config.latent_channels
        expected_ndim = 2 if self.config.latent_type == "vector" else 4
        if z.ndim != expected_ndim or z.shape[1] != c:
            raise ValueError(f"expected {self.config.latent_type} latents with {c} channels, got shape {tuple(z.shape)}")
        image = self.decoder(z)
        return DecoderOutput(sample=image) if return_dict else (image,)

    def forward(
        self,
        sample: torch.Tensor,
        return_dict: bool = True,
        return_loss: bool = False,
        generator: torch.Generator | None = None,
    ) -> DecoderOutput | AutoencoderLossOutput | tuple:
        """Reconstruct the (uncorrupted) input. With `return_loss=True`, the training loss instead (`loss`),
        so that a DDP-wrapped model all-reduces its gradients."""
        if return_loss:
            return self.loss(sample, generator=generator)
        return self.decode(self.encode(sample).latents, return_dict=return_dict)

    # ---- training objective -----------------------------------------------------------------------

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x̃ for the configured corruption; for `patch_mask`, the encoder input with the mask channel."""
        kind = self.config.corruption
        if kind == "gaussian":
            noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return x + self.config.noise_std * noise
        if kind == "dropout":
            keep = _uniform(x.shape, generator, x) >= self.config.drop_prob  # each value dropped with prob. ρ
            return x * keep
        if kind == "patch_mask":
            visible = self.patch_mask(x, generator)  # (B, 1, H, W), 1 = seen
            token = self.mask_token
            if token.shape[-2:] != x.shape[-2:]:
                token = F.interpolate(token[None], size=x.shape[-2:], mode="nearest")[0]
            x = visible * x + (1 - visible) * token.to(x.dtype)
            return torch.cat([x, visible], dim=1)
        return x

    def patch_mask(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random visibility mask (B, 1, H, W) that shows round((1 − mask_ratio)·P) of the P patches."""
        batch, _, height, width = x.shape
        p = self.config.patch_size
        if height % p or width % p:
            raise ValueError(f"resolution {height}×{width} is not divisible by patch_size {p}")
        rows, cols = height // p, width // p
        num_patches = rows * cols
        num_visible = max(1, round((1 - self.config.mask_ratio) * num_patches))
        ranks = _uniform((batch, num_patches), generator, x).argsort(dim=1).argsort(dim=1)  # random permutation
        visible = (ranks < num_visible).to(x.dtype).view(batch, 1, rows, cols)  # (B, 1, rows, cols)
        return visible.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)  # (B, 1, H, W)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> AutoencoderLossOutput:
        """E(θ) (+ λ Σ|z_k|) for one batch: reconstruct the clean x from the corrupted x̃."""
        self._check_images(x)
        latents = self.encoder(self.corrupt(x, generator))
        y = self.decoder(latents).float()
        squared_error = (y - x.float()).pow(2).flatten(1).sum(1)  # ‖y(x̃) − x‖², (B,)
        l1 = latents.float().abs().flatten(1).sum(1)  # Σ_k |z_k|, (B,)
        num_dims = x[0].numel()
        loss = (squared_error + self.config.sparsity_weight * l1).mean() / num_dims
        return AutoencoderLossOutput(loss=loss, reconstruction=squared_error.mean() / num_dims, sparsity=l1.mean())

    # ---- sampling (GLO) ---------------------------------------------------------------------------

    @torch.no_grad()
    def fit_latent_gaussian(self, latents: torch.Tensor) -> None:
        """Fit N(μ, Σ) to training latents (N, ...) and store it in the `latent_mean`/`latent_scale` buffers."""
        flat = latents.detach().double().flatten(1)  # (N, d)
        if flat.shape[1] != self.latent_mean.numel():
            raise ValueError(f"expected latents with {self.latent_mean.numel()} values each, got {flat.shape[1]}")
        if flat.shape[0] < 2:
            raise ValueError(f"need at least 2 latents to fit a Gaussian, got {flat.shape[0]}")
        mean = flat.mean(0)
        centered = flat - mean
        if self.config.latent_gaussian == "full":
            covariance = centered.T @ centered / (flat.shape[0] - 1)  # (d, d)
            jitter = 1e-6 * covariance.diagonal().mean().clamp_min(1e-12)
            eye = torch.eye(covariance.shape[0], dtype=covariance.dtype, device=covariance.device)
            scale = torch.linalg.cholesky(covariance + jitter * eye)  # Σ = L Lᵀ
        else:
            scale = centered.std(0)
        self.latent_mean.copy_(mean.to(self.latent_mean))
        self.latent_scale.copy_(scale.to(self.latent_scale))

    @property
    def latent_gaussian_fitted(self) -> bool:
        return bool(self.latent_scale.abs().sum() > 0)

    def sample_prior(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(μ, Σ) fitted to the training latents."""
        if not self.latent_gaussian_fitted:
            raise ValueError(
                "this autoencoder has no latent Gaussian to sample from: call fit_latent_gaussian(train_latents) "
                "first (the training script does it at the end of training)"
            )
        d = self.latent_mean.numel()
        eps = randn_tensor((batch_size, d), generator=generator, device=self.device, dtype=self.latent_mean.dtype)
        if self.config.latent_gaussian == "full":
            flat = self.latent_mean + eps @ self.latent_scale.T  # μ + L ε
        else:
            flat = self.latent_mean + eps * self.latent_scale
        return flat.view(batch_size, *self.latent_shape).to(self.dtype)


def _uniform(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """U[0, 1) on the generator's device, moved to `like`'s device (same rule as diffusers' randn_tensor)."""
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device, dtype=torch.float32).to(like.device)
