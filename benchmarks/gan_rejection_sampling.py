"""The shapes oracle's judgement of a GAN's samples drawn directly and by each of GANPipeline's rejection scores, on
one draw: validity, coverage of the (shape, colour) pairs, distinct valid scenes, and how the valid samples' shapes
spread over the three sizes (the shapes world draws a third of each), which shows modes a rejection drops.

    python benchmarks/gan_rejection_sampling.py FOLDER [--num_samples 5000] [--seed 1] [--oversample 5]
        [--rejection jacobian discriminator jacobian+discriminator] [--output rejection.json]

FOLDER is a train_gan.py output folder of an unconditional run on the shapes world; the discriminator's scores
need it saved with --save_discriminator. Candidates are drawn in batches of 256 kept samples, as train_gan.py's
evaluation draws them.
"""

from __future__ import annotations

import argparse
import time

import torch

from hf_genzoo import GANPipeline
from hf_genzoo.data.shapes import SIZES, ShapesOracle
from hf_genzoo.metrics.evaluate import reading_metrics
from hf_genzoo.pipelines.pipeline_gan import REJECTION_SCORES
from throughput import load_training_script, write_report


def judge(readings: list[dict]) -> dict:
    sizes = [obj["size"] for reading in readings if reading["valid"] for obj in reading["objects"]]
    return {**reading_metrics(readings), "valid shapes by size": {name: sizes.count(i) for i, name in enumerate(SIZES)}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--num_samples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1, help="train_gan.py's evaluation draws with its --seed + 1 (1 by default)")
    parser.add_argument("--oversample", type=int, nargs="+", default=[5])
    parser.add_argument("--rejection", nargs="+", default=list(REJECTION_SCORES), choices=REJECTION_SCORES)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    script = load_training_script("train_gan")
    pipe = GANPipeline.from_pretrained(args.folder)
    pipe.set_progress_bar_config(disable=True)
    if pipe.generator_model.config.num_classes:
        raise ValueError(f"{args.folder} is class-conditional; this report is for unconditional runs")
    oracle = ShapesOracle(pipe.generator_model.config.sample_size)
    samplers = [("direct", {})] + [
        (f"{rejection}, oversample {k}", {"rejection": rejection, "oversample": k}) for rejection in args.rejection for k in args.oversample
    ]
    result = {"folder": args.folder, "num_samples": args.num_samples, "seed": args.seed, "samplers": {}}
    for name, sampling in samplers:
        start = time.perf_counter()
        samples = script.generate(pipe, args.num_samples, None, seed=args.seed, **sampling)
        row = {**judge(oracle.read_batch(samples)), "seconds": round(time.perf_counter() - start, 1)}
        result["samplers"][name] = row
        print(
            f"{name}: valid {row['oracle_validity']:.3f}, coverage {row['oracle_coverage']:.3f}, distinct "
            f"{row['oracle_distinct_scenes']}, sizes {row['valid shapes by size']}, {row['seconds']} s",
            flush=True,
        )
    write_report(result, args.output)


if __name__ == "__main__":
    main()
