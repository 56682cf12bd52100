"""Convolutional encoder and decoder shared by the autoencoder family (AE, VAE, later VQ-VAE).

The layout follows diffusers' `Encoder`/`Decoder` convention so that a model built from these
presents the same `block_out_channels` semantics to diffusers pipelines: the image is
downsampled by 2 between consecutive blocks, so the spatial scale factor is
`2 ** (len(block_out_channels) - 1)`.

A latent is either spatial, (B, C_lat, h, w) with h = H / f, or a vector, (B, C_lat), produced by a
linear layer over the flattened last feature map (this needs a fixed `sample_size`).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class ResnetBlock(nn.Module):
    """GroupNorm → SiLU → conv3×3, twice, with a residual connection (1×1 conv when widths differ)."""

    def __init__(self, in_channels: int, out_channels: int, norm_num_groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(norm_num_groups, in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(norm_num_groups, out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def _groups(norm_num_groups: int, channels: int) -> int:
    """The largest group count ≤ norm_num_groups that divides `channels`."""
    groups = min(norm_num_groups, channels)
    while channels % groups:
        groups -= 1
    return groups


class ConvEncoder(nn.Module):
    """x (B, C_in, H, W) → features (B, out_channels, H/f, W/f), or (B, out_features) for vector latents."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block_out_channels: tuple[int, ...],
        layers_per_block: int,
        norm_num_groups: int,
        latent_type: str,
        sample_size: int,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        blocks = []
        channels = block_out_channels[0]
        for i, width in enumerate(block_out_channels):
            for _ in range(layers_per_block):
                blocks.append(ResnetBlock(channels, width, norm_num_groups))
                channels = width
            if i < len(block_out_channels) - 1:
                blocks.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))  # downsample ×2
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = nn.GroupNorm(_groups(norm_num_groups, channels), channels)
        self.latent_type = latent_type
        if latent_type == "spatial":
            self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)
        else:
            h = sample_size // 2 ** (len(block_out_channels) - 1)
            self.conv_out = nn.Linear(channels * h * h, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm_out(self.blocks(self.conv_in(x))))  # (B, C_last, H/f, W/f)
        if self.latent_type == "vector":
            h = h.flatten(1)  # (B, C_last·h·w)
        return self.conv_out(h)


class ConvDecoder(nn.Module):
    """latent (B, in_channels, h, w) or (B, in_channels) → image (B, out_channels, H, W)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block_out_channels: tuple[int, ...],
        layers_per_block: int,
        norm_num_groups: int,
        latent_type: str,
        sample_size: int,
    ):
        super().__init__()
        widths = tuple(reversed(block_out_channels))
        self.latent_type = latent_type
        if latent_type == "spatial":
            self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        else:
            self.latent_hw = sample_size // 2 ** (len(block_out_channels) - 1)
            self.conv_in = nn.Linear(in_channels, widths[0] * self.latent_hw**2)
        blocks = []
        channels = widths[0]
        for i, width in enumerate(widths):
            for _ in range(layers_per_block):
                blocks.append(ResnetBlock(channels, width, norm_num_groups))
                channels = width
            if i < len(widths) - 1:
                # nearest-neighbour ×2 then conv3×3 (avoids the checkerboard of a stride-2 transposed conv)
                blocks.append(nn.Upsample(scale_factor=2.0, mode="nearest"))
                blocks.append(nn.Conv2d(channels, channels, 3, padding=1))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = nn.GroupNorm(_groups(norm_num_groups, channels), channels)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        if self.latent_type == "vector":
            h = h.view(z.shape[0], -1, self.latent_hw, self.latent_hw)  # (B, C_last, h, w)
        h = self.blocks(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class ConvAutoencoderMixin:
    """What models built on `ConvEncoder`/`ConvDecoder` share; needs `config.block_out_channels`,
    `latent_type`, `latent_channels`, `sample_size` and `in_channels`."""

    # the children that map latents (or codes) to images: all that decoder-only fine-tuning trains, and all that
    # may differ between two models sharing one encoder (and codebook)
    decoder_modules: tuple[str, ...] = ("decoder",)

    @property
    def scale_factor(self) -> int:
        """Spatial downsampling of the encoder, 2 ** (len(block_out_channels) − 1)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent at the training resolution."""
        if self.config.latent_type == "vector":
            return (self.config.latent_channels,)
        h = self.config.sample_size // self.scale_factor
        return (self.config.latent_channels, h, h)

    def _check_images(self, x: torch.Tensor) -> None:
        fixed = self.config.sample_size if self.config.latent_type == "vector" else None
        check_images(x, self.config.in_channels, self.scale_factor, fixed)


def check_images(images: torch.Tensor, in_channels: int, scale_factor: int, sample_size: int | None) -> None:
    """Raise a ValueError naming the value when `images` can't go through the encoder."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (batch, channels, height, width), got shape {tuple(images.shape)}")
    channels, height, width = images.shape[1:]
    if channels != in_channels:
        raise ValueError(f"expected {in_channels} input channel(s), got {channels} (images of shape {tuple(images.shape)})")
    if sample_size is not None and (height, width) != (sample_size, sample_size):
        raise ValueError(
            f"this model has vector latents and takes {sample_size}×{sample_size} images only, got {height}×{width}"
        )
    if height % scale_factor or width % scale_factor:
        raise ValueError(
            f"resolution {height}×{width} is not divisible by the model's downsampling factor {scale_factor}; "
            f"height and width must be multiples of {scale_factor}"
        )


def check_latent_config(latent_type: str, block_out_channels, sample_size: int) -> None:
    if latent_type not in ("spatial", "vector"):
        raise ValueError(f"latent_type must be 'spatial' or 'vector', got {latent_type!r}")
    if len(block_out_channels) < 1:
        raise ValueError("block_out_channels needs at least one width")
    scale = 2 ** (len(block_out_channels) - 1)
    if latent_type == "vector" and sample_size % scale:
        raise ValueError(f"sample_size {sample_size} is not divisible by the downsampling factor {scale}")
