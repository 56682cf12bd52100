"""InstructPix2Pix building blocks (Brooks et al. 2023, arXiv:2211.09800): the text-to-image UNet widened to take the
input image's latents, and the latents of one training pair.

The model (../shared/EQUATIONS.md, "InstructPix2Pix"; paper §3.2) is a latent diffusion UNet ε_θ(z_t, c_I, c_T)
whose first convolution sees the noisy latent z_t and the encoded input image E(c_I) concatenated along channels:

    ε_θ([z_t, E(c_I)], t, c_T),    [z_t, E(c_I)] of shape (B, 2C, h, w).

It is initialised from a text-to-image checkpoint; "weights that operate on the newly added input channels are
initialized to zero" (§3.2), so at step 0 the widened UNet computes exactly what the text-to-image UNet computes on
z_t, whatever E(c_I) is.

Latent conventions (the paper's code and diffusers' examples/instruct_pix2pix/train_instruct_pix2pix.py):

- the conditioning image enters as the first stage's posterior *mode*, *unscaled*: E(c_I) = mode q(z | c_I);
- the target (edited) image is diffused like any latent-diffusion latent: z_0 = scaling_factor · z, z ~ q(z | x_edit).

`StableDiffusionInstructPix2PixPipeline` (and our `InstructPix2PixPipeline`) encode the input image the same way at
sampling time, so a UNet trained on `encode_edit_pair`'s latents samples correctly there.

Notation: C the first stage's latent channels, (h, w) = (H / f, W / f) with f its downsampling factor.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


def widen_conv_in(unet, extra_channels: int):
    r"""
    Widen a UNet's first convolution to take `extra_channels` more input channels, as InstructPix2Pix does to feed
    the input image's latents E(c_I) beside z_t (Brooks et al. 2023, §3.2).

    The new `conv_in` keeps the old kernel on the first `in_channels` inputs and its bias, and has **zero** weights on
    the new ones, so `unet([z_t, anything], t, ...) == unet_before(z_t, t, ...)` exactly: the widened model starts as
    the text-to-image model. (diffusers' train_instruct_pix2pix.py zeroes the new weights too but leaves the new
    layer's bias at its random initialisation; here the bias is copied, so step 0 is the text-to-image model.)
    `unet.config.in_channels` is registered to the new width, so `save_pretrained` / `from_pretrained` rebuild it.

    The UNet is modified in place (no copy of a large model is made) and returned.

    Args:
        unet ([`UNet2DConditionModel`] or [`UNet2DModel`]): a UNet that takes the latents alone
            (`in_channels == out_channels`, an ε / x_0 / v prediction of its input); a UNet that already takes
            `out_channels + extra_channels` inputs is returned unchanged.
        extra_channels (`int`): channels to add, the input image's latent channels C (so the result takes 2C).

    Returns:
        the same `unet`, whose `conv_in` takes `in_channels + extra_channels` channels.

    Raises:
        ValueError: `extra_channels` < 1, or a UNet whose `in_channels` is neither `out_channels` (the latents alone)
            nor `out_channels + extra_channels` (already widened).
    """
    if extra_channels < 1:
        raise ValueError(f"extra_channels must be ≥ 1, got {extra_channels}")
    in_channels, out_channels = unet.config.in_channels, unet.config.out_channels
    if in_channels == out_channels + extra_channels:
        return unet  # already takes [z_t, E(c_I)]
    if in_channels != out_channels:
        raise ValueError(
            f"widen_conv_in needs a UNet that takes the latents alone (in_channels == out_channels) or one already "
            f"widened (in_channels == out_channels + {extra_channels}); got in_channels={in_channels}, "
            f"out_channels={out_channels}"
        )
    old = unet.conv_in
    new = nn.Conv2d(
        in_channels + extra_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()  # (out, in + extra, k, k): zero on the new inputs (§3.2)
        new.weight[:, :in_channels].copy_(old.weight)  # the text-to-image kernel on z_t
        if old.bias is not None:
            new.bias.copy_(old.bias)
    new.weight.requires_grad_(old.weight.requires_grad)
    if new.bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels + extra_channels)
    return unet


class EditPairLatents(NamedTuple):
    """The latents of one InstructPix2Pix training pair (a tuple: `image_latents, target_latents = ...`)."""

    image_latents: torch.Tensor
    """E(c_I): the input image's posterior mode, unscaled, (B, C, h, w) — concatenated to z_t."""
    target_latents: torch.Tensor
    """z_0: a posterior sample of the edited image times `scaling_factor`, (B, C, h, w) — what is diffused."""


def image_conditioning_latents(first_stage, pixels: torch.Tensor) -> torch.Tensor:
    """E(c_I) = mode of q(z | c_I), **not** multiplied by `scaling_factor` (the paper's and diffusers' convention for
    the image condition of InstructPix2Pix). `pixels` (B, C_img, H, W) in [-1, 1] → (B, C, H / f, W / f)."""
    check_kl_first_stage(first_stage)
    return first_stage.encode(pixels).latent_dist.mode()


def check_kl_first_stage(first_stage) -> None:
    """InstructPix2Pix encodes through a KL first stage (`encode(x).latent_dist` with `mode` and `sample`)."""
    config = getattr(first_stage, "config", None)
    if config is None or "num_vq_embeddings" in config or "scaling_factor" not in config or not hasattr(first_stage, "encode"):
        raise ValueError(
            f"InstructPix2Pix needs a KL first stage (VAEModel or AutoencoderKL: encode(x).latent_dist and "
            f"config.scaling_factor), got {type(first_stage).__name__}"
        )


@torch.no_grad()
def encode_edit_pair(
    first_stage,
    input_pixels: torch.Tensor,
    edited_pixels: torch.Tensor,
    generator: torch.Generator | None = None,
) -> EditPairLatents:
    r"""
    Encode one batch of InstructPix2Pix training pairs (input image, edited image) with the frozen first stage, with
    the conventions of the paper's code and diffusers' `train_instruct_pix2pix.py`:

        image_latents  = mode q(z | x_input)                          (unscaled; the condition E(c_I))
        target_latents = scaling_factor · z,  z ~ q(z | x_edited)     (the z_0 that training noises)

    The training step then feeds `torch.cat([noisy_target_latents, image_latents], dim=1)` to a UNet widened by
    `widen_conv_in(unet, C)` (with c_I replaced by zeros when the image condition is dropped for classifier-free
    guidance). `InstructPix2PixPipeline` encodes its input image exactly as `image_latents` here.

    Args:
        first_stage ([`VAEModel`] or [`AutoencoderKL`]): the frozen KL autoencoder (no gradients are taken).
        input_pixels (`torch.Tensor`): the unedited images c_I, (B, C_img, H, W) in [-1, 1].
        edited_pixels (`torch.Tensor`): the edited images, the same shape, in [-1, 1].
        generator (`torch.Generator`, *optional*): for the posterior sample of the edited images.

    Returns:
        [`EditPairLatents`] `(image_latents, target_latents)`, each (B, C, H / f, W / f).
    """
    if input_pixels.shape != edited_pixels.shape:
        raise ValueError(
            f"input and edited images must have the same shape, got {tuple(input_pixels.shape)} and "
            f"{tuple(edited_pixels.shape)}"
        )
    image_latents = image_conditioning_latents(first_stage, input_pixels)
    target_posterior = first_stage.encode(edited_pixels).latent_dist
    target_latents = target_posterior.sample(generator) * first_stage.config.scaling_factor
    return EditPairLatents(image_latents=image_latents, target_latents=target_latents)
