#!/usr/bin/env python
"""Sampling speed of LatentDiffusionPipeline against the stock StableDiffusionPipeline on the same components (a saved
text-to-image folder), in one process: both draw the same images (checked), rounds alternate, the median is reported.

    python benchmarks/bench_latent_sampling.py shapes-ldm-text --batch_size 64 --num_inference_steps 50 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a saved text-conditioned LatentDiffusionPipeline (train_latent_diffusion.py --conditioning text)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    import hf_genzoo  # noqa: F401  (diffusers' loader finds our first stage through it)
    from hf_genzoo import LatentDiffusionPipeline
    from throughput import write_report

    ours = LatentDiffusionPipeline.from_pretrained(args.folder)
    stock = StableDiffusionPipeline(
        vae=ours.vae, text_encoder=ours.text_encoder, tokenizer=ours.tokenizer, unet=ours.unet, scheduler=ours.scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    prompts = ["a large red circle at the center"] * args.batch_size

    def sample(pipe):
        pipe.set_progress_bar_config(disable=True)
        start = time.perf_counter()
        images = pipe(prompts, num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale,
                      generator=torch.Generator().manual_seed(0), output_type="np").images
        return time.perf_counter() - start, images

    _, a = sample(ours)  # warm-up, and the equality check
    _, b = sample(stock)
    max_difference = float(np.abs(a - b).max())
    times = {"ours": [], "stock": []}
    for _ in range(args.rounds):
        for name, pipe in (("ours", ours), ("stock", stock)):
            times[name].append(sample(pipe)[0])
    report = {
        "folder": args.folder,
        "batch_size": args.batch_size,
        "num_inference_steps": args.num_inference_steps,
        "threads": torch.get_num_threads(),
        "max_abs_difference": max_difference,
        "ours_images_per_second": args.batch_size / statistics.median(times["ours"]),
        "stock_images_per_second": args.batch_size / statistics.median(times["stock"]),
        "seconds": times,
    }
    report["ratio"] = report["ours_images_per_second"] / report["stock_images_per_second"]
    write_report(report, args.output)
    return report


if __name__ == "__main__":
    main()
