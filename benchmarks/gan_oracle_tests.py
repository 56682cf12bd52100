"""Which of the shapes oracle's tests reject a GAN's samples: the validity of one draw of samples with each test
relaxed on its own, and with every test but the component count relaxed (hf_genzoo.data.ShapesOracle's rules); and
how the shapes the oracle reads in the samples with one or two components spread over sizes, colours and shapes
(the shapes world draws each factor uniformly), which shows modes a generator drops.

    python benchmarks/gan_oracle_tests.py shapes-gan [--num_samples 1000] [--seed 0] [--output tests.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from hf_genzoo import GANPipeline
from hf_genzoo.data.shapes import COLORS, SHAPES, SIZES, ShapesOracle

ANY_COLOUR = {"color_tolerance": 10.0, "color_purity": 0.0, "max_foreign_fraction": 1.0}  # every pixel passes
RELAXED = {
    "all tests": {},
    "IoU relaxed": {"iou_threshold": 0.0},
    "colour relaxed": ANY_COLOUR,
    "background relaxed": {"background_fraction": 0.0},
    "all but the component count": {"iou_threshold": 0.0, "background_fraction": 0.0, **ANY_COLOUR},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a saved GANPipeline (train_gan.py's output folder) trained on the shapes world")
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the result as JSON here")
    args = parser.parse_args()
    pipe = GANPipeline.from_pretrained(args.folder)
    generator = torch.Generator().manual_seed(args.seed)
    images = pipe(batch_size=args.num_samples, generator=generator, output_type="pt").images * 2 - 1  # [-1, 1]
    resolution = images.shape[-1]
    result = {name: ShapesOracle(resolution, **relaxed).validity(images) for name, relaxed in RELAXED.items()}
    objects = [obj for reading in ShapesOracle(resolution).read_batch(images) for obj in reading["objects"]]
    result["objects read"] = len(objects)
    for factor, names in (("size", SIZES), ("color", COLORS), ("shape", SHAPES)):
        result[f"objects by {factor}"] = {name: sum(obj[factor] == i for obj in objects) for i, name in enumerate(names)}
    print(json.dumps(result, indent=1))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
