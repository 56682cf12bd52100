#!/usr/bin/env python
"""The README's first picture: one row of eight images per model family, cut from the sample grids of the reported
runs in docs/results/ (each written by a run of benchmarks/reported_runs.sh) and labelled. No model is loaded.

    python benchmarks/make_readme_figure.py            # writes docs/results/readme-families.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"

# (label, grid file, columns of the grid, pixel scale of the file, tiles as (row, column))
ROWS = (
    ("autoencoder: input | reconstruction", "shapes-vae-samples.png", 8, 1,
     [(r, c) for c in range(4) for r in (0, 1)]),
    ("VAE: samples, mixture + 20-step chain", "shapes-vae-samples.png", 8, 1, [(6, c) for c in range(8)]),
    ("VQ-VAE + GPT-2 prior: samples", "shapes-vqvae-prior-samples.png", 8, 1, [(0, c) for c in range(8)]),
    ("DCGAN (resize-conv, R1): samples", "shapes-gan-resize-20k-samples.png", 8, 1, [(0, c) for c in range(8)]),
    ("pixel diffusion, one class each", "shapes-ddpm-13k-samples.png", 8, 1, [(0, c) for c in range(8)]),
    ("latent diffusion, one caption each", "shapes-ldm-text-cpu-samples.png", 8, 2, [(r, 0) for r in range(8)]),
    ("pixel diffusion on MNIST", "mnist-ddpm-samples.png", 8, 1, [(0, c) for c in range(8)]),
)


def grid_tiles(path: Path, columns: int, scale: int):
    """The tiles of a sample grid written with a 1-pixel border (torchvision's make_grid, padding 1), as PIL images;
    a grid saved at `scale`× is shrunk back first."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    if scale != 1:
        image = image.resize((image.width // scale, image.height // scale), Image.NEAREST)
    tile = (image.width - 1) // columns - 1
    if columns * (tile + 1) + 1 != image.width:
        raise ValueError(f"{path.name}: width {image.width} is not {columns} tiles with a 1-pixel border")
    rows = (image.height - 1) // (tile + 1)
    return [[image.crop((1 + c * (tile + 1), 1 + r * (tile + 1), 1 + c * (tile + 1) + tile, 1 + r * (tile + 1) + tile))
             for c in range(columns)] for r in range(rows)]


def make_figure(tile_size: int = 64, label_width: int = 300):
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=15)
    except TypeError:  # Pillow < 10.1: one bitmap size
        font = ImageFont.load_default()
    gap = 4
    width = label_width + 8 * (tile_size + gap)
    height = len(ROWS) * (tile_size + gap) + gap
    figure = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(figure)
    for i, (label, name, columns, scale, positions) in enumerate(ROWS):
        tiles = grid_tiles(RESULTS / name, columns, scale)
        y = gap + i * (tile_size + gap)
        draw.text((8, y + tile_size // 2), label, fill=(0, 0, 0), font=font, anchor="lm")
        for j, (r, c) in enumerate(positions):
            tile = tiles[r][c]
            factor = max(1, tile_size // tile.width)  # integer nearest-neighbour upscaling, centred
            tile = tile.resize((tile.width * factor, tile.height * factor), Image.NEAREST)
            x = label_width + j * (tile_size + gap)
            canvas = Image.new("RGB", (tile_size, tile_size), (0, 0, 0))
            canvas.paste(tile, ((tile_size - tile.width) // 2, (tile_size - tile.height) // 2))
            figure.paste(canvas, (x, y))
    return figure


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=str(RESULTS / "readme-families.png"))
    parser.add_argument("--tile_size", type=int, default=64, help="pixels per image in the figure (nearest-neighbour upscaling)")
    args = parser.parse_args(argv)
    if args.tile_size < 16:
        raise ValueError(f"--tile_size {args.tile_size}: must be at least 16 pixels")
    make_figure(args.tile_size).save(args.output)
    print(args.output)
    return Path(args.output)


if __name__ == "__main__":
    main()
