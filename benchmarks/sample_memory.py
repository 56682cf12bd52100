"""Peak resident memory of sampling: a saved PixelDiffusionPipeline draws one batch (default 64 images, 50 DDIM
steps). Run it as its own process so the peak belongs to sampling alone:

    python benchmarks/sample_memory.py runs/shapes-ddpm --batch_size 64
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

import hf_genzoo  # noqa: F401  (binds our classes for diffusers' loader)
from hf_genzoo import PixelDiffusionPipeline


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pipeline", help="a saved PixelDiffusionPipeline folder or Hub repo id")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB, after imports
    pipe = PixelDiffusionPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    labels = None if pipe.num_classes is None else [i % pipe.num_classes for i in range(args.batch_size)]
    start = time.perf_counter()
    pipe(batch_size=args.batch_size, class_labels=labels, num_inference_steps=args.num_inference_steps,
         generator=torch.Generator().manual_seed(0), output_type="np")
    result = {
        "pipeline": args.pipeline,
        "batch_size": args.batch_size,
        "num_inference_steps": args.num_inference_steps,
        "resolution": pipe.unet.config.sample_size,
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mib_after_imports": round(baseline),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
