"""Wall time to a target oracle attribute accuracy, for class-conditional diffusion runs on the shapes world: the
EMA weights of every `checkpoint-N` of each run are sampled (every class in turn, the same noise for every
checkpoint) and read by the shapes oracle; a checkpoint's time is its step times the run's measured seconds per
training step (metrics.json: train_seconds / train_steps, so grids and checkpoint writes are counted as the run paid
them). Pixel (`train_diffusion.py --class_conditional`) and latent (`train_latent_diffusion.py --conditioning
class`) folders are read alike, which is how the latent-against-pixel table of docs/latent-diffusion.md is made.

    python benchmarks/diffusion_time_to_accuracy.py shapes-ldm-class shapes-ddpm [--target 0.9]
        [--samples_per_class 20] [--guidance_scale 3] [--setup_seconds 402 0] [--output table.json]
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from diffusers.training_utils import EMAModel

import hf_genzoo
from hf_genzoo.metrics import sample_quality_metrics
from hf_genzoo.training_utils import checkpoint_steps

PIPELINES = ("LatentDiffusionPipeline", "PixelDiffusionPipeline")


def load_pipeline(folder: str):
    with open(os.path.join(folder, "model_index.json")) as f:
        name = json.load(f)["_class_name"]
    if name not in PIPELINES:
        raise ValueError(f"{folder} holds a {name}; this benchmark reads {' or '.join(PIPELINES)} folders")
    pipe = getattr(hf_genzoo, name).from_pretrained(folder)
    if pipe.num_classes is None:
        raise ValueError(f"{folder}'s UNet is not class-conditional (num_class_embeds is None)")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def accuracy(pipe, labels: list[int], guidance_scale: float, num_inference_steps: int, seed: int, batch_size: int = 210) -> dict:
    """The oracle's reading of one sample per label; the same seed gives the same initial noise every call."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for start in range(0, len(labels), batch_size):
        batch = labels[start : start + batch_size]
        out = pipe(
            batch_size=len(batch), class_labels=batch, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, generator=generator, output_type="pt",
        ).images
        images.append(out.float().cpu() * 2 - 1)
    metrics = sample_quality_metrics(torch.cat(images), labels, shapes_resolution=images[0].shape[-1])
    return {k: metrics[k] for k in ("oracle_attribute_accuracy", "oracle_validity")}


def curve(folder: str, args, setup_seconds: float) -> dict:
    pipe = load_pipeline(folder)
    with open(os.path.join(folder, "metrics.json")) as f:
        run = json.load(f)
    seconds_per_step = run["train_seconds"] / run["train_steps"]
    guidance_scale = run["guidance_scale"] if args.guidance_scale is None else args.guidance_scale
    labels = [i % pipe.num_classes for i in range(args.samples_per_class * pipe.num_classes)]  # every class in turn
    steps = checkpoint_steps(folder)
    if not steps:
        raise ValueError(f"no checkpoint-N folders in {folder}")
    ema = EMAModel(pipe.unet.parameters())
    points, reached = [], None
    for step in steps:
        ema.load_state_dict(torch.load(os.path.join(folder, f"checkpoint-{step}", "custom_checkpoint_0.pkl"), weights_only=False))
        ema.copy_to(pipe.unet.parameters())
        point = {"step": step, "train_seconds": round(step * seconds_per_step, 1), **accuracy(pipe, labels, guidance_scale, args.num_inference_steps, args.seed)}
        points.append(point)
        print(f"{os.path.basename(folder.rstrip('/'))} step {step} ({point['train_seconds']:.0f} s): "
              f"attribute accuracy {point['oracle_attribute_accuracy']:.3f}, validity {point['oracle_validity']:.3f}", flush=True)
        if reached is None and point["oracle_attribute_accuracy"] >= args.target:
            reached = point
            if not args.full_curve:
                break
    return {
        "folder": folder,
        "pipeline": type(pipe).__name__,
        "unet_parameters": sum(p.numel() for p in pipe.unet.parameters()),
        "seconds_per_step": round(seconds_per_step, 4),
        "guidance_scale": guidance_scale,
        "setup_seconds": setup_seconds,
        "curve": points,
        "reached_at_step": None if reached is None else reached["step"],
        "seconds_to_target": None if reached is None else round(reached["train_seconds"] + setup_seconds, 1),
        # a run that never reached it took longer than its last checkpoint: a lower bound
        "seconds_to_target_at_least": round(points[-1]["train_seconds"] + setup_seconds, 1) if reached is None else None,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="class-conditional pixel or latent diffusion output folders with checkpoint-N folders")
    parser.add_argument("--target", type=float, default=0.9, help="oracle attribute accuracy to reach (default 0.9)")
    parser.add_argument("--samples_per_class", type=int, default=20)
    parser.add_argument("--num_inference_steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--guidance_scale", type=float, default=None, help="default: each run's own (its metrics.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--setup_seconds", type=float, nargs="+", default=None,
        help="seconds paid before each run's training, one per folder (a latent run's first-stage training): added to its time",
    )
    parser.add_argument("--full_curve", action="store_true", help="read every checkpoint, not only up to the first that reaches --target")
    parser.add_argument("--output", default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)
    setup = args.setup_seconds or [0.0] * len(args.folders)
    if len(setup) != len(args.folders):
        parser.error(f"--setup_seconds has {len(setup)} values for {len(args.folders)} folders: give one per folder")
    rows = [curve(folder, args, seconds) for folder, seconds in zip(args.folders, setup)]
    for row in rows:
        time = f"{row['seconds_to_target']:.0f} s" if row["seconds_to_target"] is not None else f"> {row['seconds_to_target_at_least']:.0f} s"
        print(f"{row['pipeline']} ({row['folder']}): {args.target:.0%} attribute accuracy after {time}")
    report = {"target": args.target, "samples_per_class": args.samples_per_class, "seed": args.seed, "runs": rows}
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
