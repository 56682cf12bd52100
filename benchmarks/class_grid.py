"""A grid per class of a class-conditional diffusion folder (pixel or latent): one labelled row per class, one column
per seed, the same initial noise in every row, so a reader sees at a glance which classes the model draws well.

    python benchmarks/class_grid.py shapes-ldm-class --per_class 8 --output class-grid.png [--class_names shapes]
        [--guidance_scale 3] [--num_inference_steps 50]
"""

from __future__ import annotations

import argparse

import torch

from diffusion_time_to_accuracy import load_pipeline
from hf_genzoo.utils import enlarged_grid


def class_names(kind: str, num_classes: int) -> list[str]:
    """Row labels: the shapes world's (colour, shape) names, or the class index (MNIST's digits)."""
    if kind == "shapes":
        from hf_genzoo.data.shapes import LABEL_NAMES

        if num_classes != len(LABEL_NAMES):
            raise ValueError(f"--class_names shapes needs {len(LABEL_NAMES)} classes, the UNet has {num_classes}")
        return list(LABEL_NAMES)
    return [str(i) for i in range(num_classes)]


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a class-conditional LatentDiffusionPipeline or PixelDiffusionPipeline folder")
    parser.add_argument("--per_class", type=int, default=8, help="images per class (columns)")
    parser.add_argument("--class_names", default="index", choices=("index", "shapes"), help="row labels")
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="the PNG to write")
    args = parser.parse_args()
    pipe = load_pipeline(args.folder)
    num_classes = pipe.num_classes  # the null label ∅ excluded
    names = class_names(args.class_names, num_classes)
    rows = []
    for label in range(num_classes):  # the same generator seed per row: column j starts from the same noise in every row
        images = pipe(
            batch_size=args.per_class, class_labels=[label] * args.per_class, guidance_scale=args.guidance_scale,
            num_inference_steps=args.num_inference_steps, generator=torch.Generator().manual_seed(args.seed), output_type="pt",
        ).images
        rows.append(images.float().cpu() * 2 - 1)
    enlarged_grid(torch.cat(rows), nrow=args.per_class, row_labels=names, min_tile=64).save(args.output)
    print(f"wrote {args.output}: {num_classes} classes × {args.per_class}")


if __name__ == "__main__":
    main()
