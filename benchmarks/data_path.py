#!/usr/bin/env python
"""What the memory-mapped data path costs and saves (`hf_genzoo.data.image_cache`, the latent cache).

    python benchmarks/data_path.py rss --num_images 10000 200000 --output data-path-rss.json
    python benchmarks/data_path.py rss --script latent_diffusion --vae FIRST_STAGE --num_images 10000 100000
    python benchmarks/data_path.py throughput --output data-path-throughput.json

`rss`: peak resident memory (the kernel's ru_maxrss of the child process) of a short training run on N shapes-world
images, run twice: once building the cache (the images generated, preprocessed and written), once reading it. The
training itself is a few steps; what grows with N, if anything, is the data path. Beside each, the size a float32
tensor of the split would have (what the scripts held in RAM before the cache).

`throughput`: images/s of train_autoencoder.py's training step fed two ways in one process, interleaved rounds:
the former path (the whole split as one float32 tensor in RAM, a batch indexed from it) and the cache (a batch read
by the script's DataLoader from the memory-mapped uint8 file and converted to float). The ratio is the data path's
cost; the target is ≥ 0.95.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rss = sub.add_parser("rss", help="peak RSS of short training runs at several dataset sizes")
    rss.add_argument("--num_images", type=int, nargs="+", default=[10_000, 200_000], help="training images, one run pair each")
    rss.add_argument("--script", choices=("autoencoder", "latent_diffusion"), default="autoencoder", help="which training script")
    rss.add_argument("--vae", default=None, help="the first-stage folder (--script latent_diffusion)")
    rss.add_argument("--max_train_steps", type=int, default=20, help="steps per run: the data path is what is measured")
    rss.add_argument("--cache_dir", default=None, help="where the caches go (default: a temporary folder, removed)")
    speed = sub.add_parser("throughput", help="images/s, whole split in RAM against the memory-mapped cache")
    speed.add_argument("--num_images", type=int, default=10_000)
    speed.add_argument("--batch_size", type=int, default=64)
    speed.add_argument("--steps", type=int, default=40, help="timed steps per round")
    speed.add_argument("--rounds", type=int, default=3)
    speed.add_argument("--mixed_precision", default="auto", choices=("auto", "no", "bf16"))
    speed.add_argument("--dataloader_num_workers", type=int, default=0)
    for p in (rss, speed):
        p.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.command == "rss" and args.script == "latent_diffusion" and not args.vae:
        parser.error("--script latent_diffusion needs --vae, a first-stage folder")
    if min(args.num_images if isinstance(args.num_images, list) else [args.num_images]) < 100:
        parser.error(f"--num_images must be ≥ 100, got {args.num_images}")
    return args


# ---- peak RSS -------------------------------------------------------------------------------------------------


def run_command(argv: list[str], log_path: str) -> tuple[float, float]:
    """Run `argv` (cwd: the repository) with its output to `log_path`; (peak RSS in MiB, wall seconds). A failed run
    is an error that shows the log's end."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        with open(log_path) as log:
            raise RuntimeError(f"{' '.join(argv[:3])} ... failed:\n{log.read()[-3000:]}")
    return usage.ru_maxrss / 1024, seconds  # ru_maxrss is in KiB on Linux


def training_argv(args, num_images: int, cache_dir: str, output_dir: str) -> list[str]:
    common = [
        "--max_train_samples", str(num_images), "--max_train_steps", str(args.max_train_steps), "--max_eval_samples", "100",
        "--checkpointing_steps", "100000", "--validation_steps", "100000", "--cache_dir", cache_dir,
        "--output_dir", output_dir, "--mixed_precision", "auto",
    ]
    if args.script == "autoencoder":
        return [sys.executable, "training_scripts/train_autoencoder.py", "--model", "ae", *common, "--num_generated", "0"]
    return [
        sys.executable, "training_scripts/train_latent_diffusion.py", "--vae", args.vae, "--conditioning", "text",
        "--unet_preset", "tiny", *common, "--num_generated", "0", "--num_likelihood_images", "0",
        "--num_validation_images", "1",
    ]


def peak_rss(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="data-path-") as scratch:
        cache_dir = args.cache_dir or os.path.join(scratch, "cache")
        rows = []
        for n in args.num_images:
            row = {"num_images": n}
            for run in ("building the cache", "reading the cache"):
                out = os.path.join(scratch, f"run-{n}")
                rss_mib, seconds = run_command(training_argv(args, n, cache_dir, out), os.path.join(scratch, f"{n}.log"))
                row[run] = {"peak_rss_mib": round(rss_mib), "wall_s": round(seconds, 1)}
                print(f"{n} images, {run}: peak RSS {rss_mib:.0f} MiB, {seconds:.0f} s", flush=True)
            if args.script == "autoencoder":
                row["float32_split_mib"] = round(n * 3 * 32 * 32 * 4 / 2**20)  # what the former path held in RAM
            rows.append(row)
    return {"command": "rss", "script": f"train_{args.script}.py", "max_train_steps": args.max_train_steps, "runs": rows}


# ---- throughput ----------------------------------------------------------------------------------------------


def throughput(args) -> dict:
    import numpy as np
    import torch
    from diffusers.optimization import get_scheduler

    from throughput import fresh_accelerator, load_training_script

    from hf_genzoo.data.image_cache import training_batches
    from hf_genzoo.training_utils import resolve_mixed_precision

    script = load_training_script("train_autoencoder")
    script_args = script.parse_args(["--model", "vae", "--train_batch_size", str(args.batch_size)])
    mixed_precision = resolve_mixed_precision(args.mixed_precision, torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="data-path-") as cache:
        script_args.cache_dir = cache
        split = script.load_split(script_args, "train", args.num_images)
        in_ram = split[:]  # the former path: the whole split as one float32 tensor

        def rounds(from_cache: bool, steps: int) -> float:
            accelerator = fresh_accelerator(mixed_precision)
            torch.manual_seed(0)
            model = script.build_model(script_args)
            optimizer = torch.optim.AdamW(model.parameters(), lr=script_args.learning_rate)
            lr_scheduler = get_scheduler("constant", optimizer=optimizer)
            model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
            model.train()
            order = torch.randperm(len(split), generator=torch.Generator().manual_seed(steps))
            micro = [(i, order[i * args.batch_size : (i + 1) * args.batch_size]) for i in range(steps)]
            start = time.perf_counter()
            if from_cache:
                batches = ((i, b["pixel_values"]) for i, b in training_batches(split, micro, steps, 0, num_workers=args.dataloader_num_workers))
            else:
                batches = ((i, in_ram[rows]) for i, rows in micro)
            for i, x in batches:
                script.training_step(accelerator, model, optimizer, lr_scheduler, x, torch.Generator().manual_seed(i), 1.0)
            return steps * args.batch_size / (time.perf_counter() - start)

        rounds(False, 2), rounds(True, 2)  # warm-up
        in_ram_speeds, cache_speeds = [], []
        for _ in range(args.rounds):
            in_ram_speeds.append(rounds(False, args.steps))
            cache_speeds.append(rounds(True, args.steps))
    return {
        "command": "throughput",
        "model": "train_autoencoder.py --model vae (defaults)",
        "mixed_precision": mixed_precision,
        "batch_size": args.batch_size,
        "num_images": args.num_images,
        "dataloader_num_workers": args.dataloader_num_workers,
        "threads": torch.get_num_threads(),
        "in_ram_images_per_s": round(float(np.median(in_ram_speeds)), 1),
        "cache_images_per_s": round(float(np.median(cache_speeds)), 1),
        "ratio": round(float(np.median(cache_speeds) / np.median(in_ram_speeds)), 3),
        "ratio_per_round": [round(c / r, 3) for r, c in zip(in_ram_speeds, cache_speeds)],
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if HERE not in sys.path:  # as when run: the benchmarks import their folder's throughput.py
        sys.path.insert(0, HERE)
    result = peak_rss(args) if args.command == "rss" else throughput(args)
    from throughput import write_report

    write_report(result, args.output)
    return result


if __name__ == "__main__":
    main()
