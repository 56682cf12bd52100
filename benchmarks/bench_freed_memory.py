"""The diffusion training step with glibc's malloc defaults against the training scripts' setting
(`hf_genzoo.training_utils.keep_freed_cpu_memory`): median step time and minor page faults per step.

The setting is process-wide and cannot be undone, so each measurement runs in a fresh process; `--pairs N` runs N
pairs of them, alternating (defaults first).

    python benchmarks/bench_freed_memory.py --pairs 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch


def one_process(keep: bool, steps: int, batch_size: int) -> dict:
    from bench_diffusion_train import our_step
    from throughput import keep_freed_memory, load_training_script, time_steps

    if keep:
        keep_freed_memory()
    script = load_training_script("train_diffusion")
    args = script.parse_args(["--prediction_type", "epsilon", "--snr_gamma", "0"])
    torch.manual_seed(0)
    step = our_step(script, args, "bf16")
    x_0 = torch.rand(batch_size, 3, 32, 32) * 2 - 1
    return {"malloc": "kept" if keep else "glibc defaults", **time_steps(step, x_0, steps)}


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
