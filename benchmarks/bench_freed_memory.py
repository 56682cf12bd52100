"""The diffusion training step with glibc's malloc defaults against the training scripts' setting
(`hf_genzoo.training_utils.keep_freed_cpu_memory`): median step time and minor page faults per step.

The setting is process-wide and cannot be undone, so each measurement runs in a fresh process; `--pairs N` runs N
pairs of them, alternating (defaults first).

    python benchmarks/bench_freed_memory.py --pairs 3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def one_process(keep: bool, steps: int, batch_size: int) -> dict:
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from throughput import fresh_accelerator, load_training_script

    from hf_genzoo.training_utils import keep_freed_cpu_memory

    if keep and not keep_freed_cpu_memory():
        raise RuntimeError("the malloc setting could not be applied (not glibc, another allocator preloaded, or malloc tuned by the user)")
    script = load_training_script("train_diffusion")
    args = script.parse_args(["--prediction_type", "epsilon", "--snr_gamma", "0"])
    accelerator = fresh_accelerator("bf16")
    torch.manual_seed(0)
    unet = script.prepare_for_training(script.build_unet(args, None), args, accelerator.device)
    noise_scheduler = script.build_noise_scheduler(args)
    optimizer = script.build_optimizer(unet, args)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, power=0.75, foreach=True)
    unet.train()
    x_0 = torch.rand(batch_size, 3, 32, 32) * 2 - 1

    def step(i: int) -> None:
        script.training_step(accelerator, unet, noise_scheduler, optimizer, lr_scheduler, x_0, torch.Generator().manual_seed(i), args)
        ema.step(unet.parameters())

    for i in range(3):  # warm-up
        step(i)
    before = resource.getrusage(resource.RUSAGE_SELF)
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "malloc": "kept" if keep else "glibc defaults",
        "median_step_s": round(sorted(times)[len(times) // 2], 3),
        "minor_faults_per_step": round((after.ru_minflt - before.ru_minflt) / steps),
        "kernel_s_per_step": round((after.ru_stime - before.ru_stime) / steps, 4),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--output", default=None)
    parser.add_argument("--one", choices=("default", "kept"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_process(args.one == "kept", args.steps, args.batch_size)))
        return
    results = []
    for _ in range(args.pairs):
        for mode in ("default", "kept"):
            command = [sys.executable, sys.argv[0], "--one", mode, "--steps", str(args.steps), "--batch_size", str(args.batch_size)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout.split("RESULT ")[-1]))
            print(json.dumps(results[-1]), flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
