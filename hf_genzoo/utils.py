"""Small helpers shared by the training scripts and benchmarks: image grids and atomic folder writes."""

from __future__ import annotations

import os
import shutil
from typing import Sequence

import numpy as np
import PIL.Image
import torch


def image_grid(
    images: torch.Tensor,
    nrow: int = 8,
    padding: int = 1,
    scale: int = 1,
    row_labels: Sequence[str] | None = None,
) -> PIL.Image.Image:
    """(B, C, H, W) in [-1, 1] → one PIL image, `nrow` images per row, separated by `padding` grey pixels; the
    whole grid enlarged `scale` times by nearest neighbour (pixels stay sharp squares). `row_labels` (one per row)
    are written in a white column on the left, saying what each row shows."""
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    batch, channels, height, width = images.shape
    ncol = min(nrow, batch)
    nrows = -(-batch // ncol)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if row_labels is not None and len(row_labels) != nrows:
        raise ValueError(f"row_labels: {len(row_labels)} labels for {nrows} rows")
    grid = np.full(
        (nrows * (height + padding) + padding, ncol * (width + padding) + padding, channels), 128, dtype=np.uint8
    )
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):  # (H, W, C) each
        r, c = divmod(i, ncol)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        grid[top : top + height, left : left + width] = image
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)  # nearest-neighbour enlargement
    picture = PIL.Image.fromarray(grid[..., 0] if channels == 1 else grid)
    if row_labels is None:
        return picture
    return _label_rows(picture, row_labels, row_height=(height + padding) * scale, top=padding * scale)


def _label_rows(picture: PIL.Image.Image, labels: Sequence[str], row_height: int, top: int) -> PIL.Image.Image:
    """`picture` with a white column on its left holding `labels[r]`, vertically centred on row r."""
    import PIL.ImageDraw
    import PIL.ImageFont

    try:
        font = PIL.ImageFont.load_default(size=max(10, min(24, row_height // 6)))
    except TypeError:  # Pillow < 10.1: the fixed bitmap font only
        font = PIL.ImageFont.load_default()
    measure = PIL.ImageDraw.Draw(PIL.Image.new("L", (1, 1)))
    widths = [measure.textbbox((0, 0), label, font=font)[2] for label in labels]
    margin = 6
    labelled = PIL.Image.new(picture.mode, (picture.width + max(widths) + 2 * margin, picture.height), "white" if picture.mode == "RGB" else 255)
    labelled.paste(picture, (max(widths) + 2 * margin, 0))
    draw = PIL.ImageDraw.Draw(labelled)
    for r, label in enumerate(labels):
        box = draw.textbbox((0, 0), label, font=font)
        y = top + r * row_height + (row_height - (box[3] - box[1])) // 2 - box[1]
        draw.text((margin, y), label, fill="black" if picture.mode == "RGB" else 0, font=font)
    return labelled


def enlarged_grid(
    images: torch.Tensor, nrow: int = 8, row_labels: Sequence[str] | None = None, min_tile: int = 128
) -> PIL.Image.Image:
    """`image_grid` for a picture people look at (samples.png, validation grids): small images enlarged by an
    integer nearest-neighbour factor to at least `min_tile` pixels a tile (32×32 → 128×128), rows labelled."""
    height = images.shape[-2]
    return image_grid(images, nrow=nrow, scale=max(1, -(-min_tile // height)), row_labels=row_labels)


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
