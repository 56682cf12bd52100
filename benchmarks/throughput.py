"""What the training-throughput benchmarks share: loading a training script as a module, a clean Accelerator per
loop, the command line, interleaved timed rounds and the JSON report. Each benchmark supplies its two loops."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

HERE = os.path.dirname(os.path.abspath(__file__))


def load_training_script(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, "..", "training_scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fresh_accelerator(mixed_precision: str) -> Accelerator:
    """The two loops run different precisions in one process: start each from a clean accelerate state."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return Accelerator(mixed_precision=mixed_precision)


def parse_args(description: str, steps: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--mixed_precision", default="bf16", choices=("no", "bf16", "fp16"))
    parser.add_argument("--output", default=None, help="write the result as JSON here")
    return parser.parse_args()


def compare(reference: Callable[[int], float], ours: Callable[[int], float], args, model: str, warmup_steps: int = 2) -> dict:
    """Warm both loops up (allocator, autocast kernels), then time `args.rounds` interleaved rounds of each.

    `reference(steps)` and `ours(steps)` each build their model afresh (same seed), run `steps` steps and return
    images/s. The report holds the medians and their ratio; it is printed and written to `args.output`."""
    reference(warmup_steps)
    ours(warmup_steps)
    reference_speeds, our_speeds = [], []
    for _ in range(args.rounds):
        torch.manual_seed(0)
        reference_speeds.append(reference(args.steps))
        torch.manual_seed(0)
        our_speeds.append(ours(args.steps))
    result = {
        "model": model,
        "batch_size": args.batch_size,
        "resolution": args.resolution,
        "threads": torch.get_num_threads(),
        "reference_fp32_images_per_s": round(float(np.median(reference_speeds)), 1),
        f"ours_{args.mixed_precision}_images_per_s": round(float(np.median(our_speeds)), 1),
        "speedup": round(float(np.median(our_speeds) / np.median(reference_speeds)), 2),
        "speedup_per_round": [round(o / r, 2) for r, o in zip(reference_speeds, our_speeds)],
    }
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return result
