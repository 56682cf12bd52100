"""Reconstruction error on held-out images, in [-1, 1] pixel units."""

from __future__ import annotations

import math

import torch


def mse(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, (B,), images in [-1, 1]."""
    return (images.float() - reconstructions.float()).pow(2).flatten(1).mean(1)


def psnr(images: torch.Tensor, reconstructions: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, 10 log10(range² / MSE); the range of [-1, 1] is 2."""
    return 10 * torch.log10(data_range**2 / mse(images, reconstructions.clamp(-1, 1)).clamp_min(1e-12))


def nats_to_bits_per_dim(nats: float, num_dims: int) -> float:
    """A negative log-likelihood in nats per image → bits per dimension: nats / (D ln 2)."""
    return nats / (num_dims * math.log(2))
