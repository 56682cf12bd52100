#!/usr/bin/env python
"""Measure a saved PixelDiffusionPipeline again, e.g. with another guidance scale or sampler length, and merge the
numbers into its metrics.json (the keys it recomputes are replaced; the others, such as the training time, stay);
`--sample_grid` redraws samples.png. The model card is not rewritten.

    python training_scripts/evaluate_diffusion.py shapes-ddpm --guidance_scale 1.0 --num_generated 500

The metrics are the ones `train_diffusion.py` computes at the end of training (the same functions): the shapes
oracle (validity, coverage, attribute accuracy when class-conditional) for the shapes world, and with
`--fid_classifier` the FID on a domain classifier's features and the class histogram; `--num_likelihood_images N`
recomputes bits/dim too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

from script_args import description

import torch

import hf_genzoo  # noqa: F401  (binds our classes for diffusers' loader)
from hf_genzoo import PixelDiffusionPipeline

HERE = os.path.dirname(os.path.abspath(__file__))


def load_training_script():
    spec = importlib.util.spec_from_file_location("train_diffusion", os.path.join(HERE, "train_diffusion.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("pipeline", help="a saved PixelDiffusionPipeline folder (its metrics.json is updated)")
    parser.add_argument("--dataset_name", default="shapes", help="the data it was trained on (for the oracle / real images)")
    parser.add_argument("--eval_split", default="test")
    parser.add_argument("--max_eval_samples", type=int, default=1000)
    parser.add_argument("--guidance_scale", type=float, default=1.0)
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--num_generated", type=int, default=500)
    parser.add_argument("--num_likelihood_images", type=int, default=0)
    parser.add_argument("--likelihood_timesteps", type=int, default=None)
    parser.add_argument("--fid_classifier", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample_grid", action="store_true", help="also redraw samples.png with these settings")
    args = parser.parse_args(argv)

    script = load_training_script()
    pipe = PixelDiffusionPipeline.from_pretrained(args.pipeline)
    unet = pipe.unet.config
    train_args = script.parse_args([
        "--dataset_name", args.dataset_name, "--eval_split", args.eval_split, "--resolution", str(unet.sample_size),
        "--num_channels", str(unet.in_channels), "--max_eval_samples", str(args.max_eval_samples),
        "--guidance_scale", str(args.guidance_scale), "--num_inference_steps", str(args.num_inference_steps),
        "--num_generated", str(args.num_generated), "--num_likelihood_images", str(args.num_likelihood_images),
        "--seed", str(args.seed),
        *(["--likelihood_timesteps", str(args.likelihood_timesteps)] if args.likelihood_timesteps else []),
        *(["--fid_classifier", args.fid_classifier] if args.fid_classifier else []),
    ])
    eval_images, _, _ = script.load_split(train_args, args.eval_split, args.max_eval_samples)
    start = time.perf_counter()
    with torch.no_grad():
        metrics = script.evaluate(pipe, eval_images, pipe.num_classes, train_args)
    metrics["eval_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(metrics))
    if args.sample_grid:
        script.sample_grid(pipe, pipe.num_classes, train_args, count=64).save(os.path.join(args.pipeline, "samples.png"))
    path = os.path.join(args.pipeline, "metrics.json")
    merged = json.load(open(path)) if os.path.exists(path) else {}
    merged.update(metrics)
    with open(path, "w") as f:
        json.dump(merged, f, indent=2, sort_keys=True)
    return metrics


if __name__ == "__main__":
    main()
