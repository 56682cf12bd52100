"""Small helpers shared by the training scripts and benchmarks: image grids and atomic folder writes."""

from __future__ import annotations

import os
import shutil

import numpy as np
import PIL.Image
import torch


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 1) -> PIL.Image.Image:
    """(B, C, H, W) in [-1, 1] → one PIL image, `nrow` images per row, separated by `padding` grey pixels."""
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    batch, channels, height, width = images.shape
    ncol = min(nrow, batch)
    nrows = -(-batch // ncol)
    grid = np.full(
        (nrows * (height + padding) + padding, ncol * (width + padding) + padding, channels), 128, dtype=np.uint8
    )
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):  # (H, W, C) each
        r, c = divmod(i, ncol)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        grid[top : top + height, left : left + width] = image
    return PIL.Image.fromarray(grid[..., 0] if channels == 1 else grid)


def save_atomically(staging: str, destination: str, last: str | None = None) -> None:
    """Move every entry of `staging` into `destination`, replacing what is there, `last` moved last; then
    remove `staging`. Each entry is replaced by a rename, so a kill leaves either the old or the new entry."""
    os.makedirs(destination, exist_ok=True)
    names = sorted(os.listdir(staging), key=lambda name: name == last)
    for name in names:
        source, target = os.path.join(staging, name), os.path.join(destination, name)
        if os.path.isdir(target) and not os.path.islink(target):
            old = target + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(source, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(source, target)
    shutil.rmtree(staging, ignore_errors=True)
