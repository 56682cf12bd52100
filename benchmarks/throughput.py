"""What the training-throughput benchmarks share: loading a training script as a module, a clean Accelerator per
loop, the command line, interleaved timed rounds and the JSON report. Each benchmark supplies its two loops."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import time
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, GradientState

from hf_genzoo.training_utils import resolve_mixed_precision

HERE = os.path.dirname(os.path.abspath(__file__))


def load_training_script(name: str):
    folder = os.path.normpath(os.path.join(HERE, "..", "training_scripts"))
    if folder not in sys.path:  # as when run: the scripts import their folder's script_args
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fresh_accelerator(mixed_precision: str) -> Accelerator:
    """The two loops run different precisions in one process: start each from a clean accelerate state."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return Accelerator(mixed_precision=mixed_precision)


def script_memory_format(script_args: argparse.Namespace) -> torch.memory_format:
    """The memory format a training script's `--channels_last` flag gives its tensors."""
    return torch.channels_last if script_args.channels_last else torch.contiguous_format


def parse_args(description: str, steps: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument(
        "--mixed_precision",
        default="bf16",
        choices=("auto", "no", "bf16", "fp16"),
        help="our side's precision; auto: bf16 where the device runs it natively, else no (fp32)",
    )
    parser.add_argument(
        "--allocator",
        default="default",
        choices=ALLOCATOR_MODES,
        help="default: glibc's malloc defaults on both sides, one process; kept: both sides with the training "
        "scripts' setting (hf_genzoo.training_utils.keep_freed_cpu_memory), one process; as_run: each side as it is "
        "run in practice, the example with glibc's defaults and ours with the scripts' setting: a setting that is "
        "process-wide and cannot be undone, so each round of each side runs in a fresh process, alternating",
    )
    parser.add_argument("--one_side", choices=("reference", "ours"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help="write the result as JSON here")
    parser.epilog = (
        "Any other flag goes to the training script's own parser and configures the model and step both loops run "
        "(e.g. --block_out_channels 16 32 64, --channels_last)."
    )
    args, args.script_flags = parser.parse_known_args()
    args.mixed_precision = resolve_mixed_precision(args.mixed_precision, PartialState().device)
    return args


ALLOCATOR_MODES = ("default", "kept", "as_run")


def keep_freed_memory() -> None:
    """The training scripts' malloc setting (`hf_genzoo.training_utils.keep_freed_cpu_memory`), or an error: a
    benchmark that asked for it must not time the defaults instead."""
    from hf_genzoo.training_utils import keep_freed_cpu_memory

    if not keep_freed_cpu_memory():
        raise RuntimeError("the malloc setting could not be applied (not glibc, another allocator preloaded, or malloc tuned by the user)")


def _one_side_in_own_process(side: str) -> float:
    """Run this benchmark's command again with `--one_side side` (warm-up and one timed round) and read its
    images/s."""
    import subprocess
    import sys

    argv = sys.argv[1:]
    if "--output" in argv:
        i = argv.index("--output")
        del argv[i : i + 2]
    done = subprocess.run([sys.executable, sys.argv[0], *argv, "--one_side", side], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("IMAGES_PER_S ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the {side} round failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return float(lines[-1].split()[1])


def compare(reference: Callable[[int], float], ours: Callable[[int], float], args, model: str, warmup_steps: int = 2) -> dict:
    """Warm both loops up (allocator, autocast kernels), then time `args.rounds` interleaved rounds of each.

    `reference(steps)` and `ours(steps)` each build their model afresh (same seed), run `steps` steps and return
    images/s. The report holds the medians and their ratio; it is printed and written to `args.output`.
    `args.allocator` picks glibc's malloc setting of each side (see `parse_args`)."""
    allocator = getattr(args, "allocator", "default")
    if args.one_side is not None:  # one round of one side, in a process of its own (--allocator as_run)
        if args.one_side == "ours":
            keep_freed_memory()
        loop = ours if args.one_side == "ours" else reference
        loop(warmup_steps)
        torch.manual_seed(0)
        print(f"IMAGES_PER_S {loop(args.steps)}")
        return {}
    if allocator == "kept":
        keep_freed_memory()
    reference_speeds, our_speeds = [], []
    if allocator == "as_run":
        for _ in range(args.rounds):
            reference_speeds.append(_one_side_in_own_process("reference"))
            our_speeds.append(_one_side_in_own_process("ours"))
    else:
        reference(warmup_steps)
        ours(warmup_steps)
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
        "allocator": allocator,
        "reference_fp32_images_per_s": round(float(np.median(reference_speeds)), 1),
        f"ours_{args.mixed_precision}_images_per_s": round(float(np.median(our_speeds)), 1),
        "speedup": round(float(np.median(our_speeds) / np.median(reference_speeds)), 2),
        "speedup_per_round": [round(o / r, 2) for r, o in zip(reference_speeds, our_speeds)],
    }
    write_report(result, args.output)
    return result


def time_steps(step: Callable[[torch.Tensor, int], None], x_0: torch.Tensor, steps: int, warmup: int = 3) -> dict:
    """`step(x_0, i)` run `warmup` times, then `steps` timed times: the median seconds per step, and the minor page
    faults and kernel seconds per timed step (`getrusage`)."""
    for i in range(warmup):
        step(x_0, i)
    before = resource.getrusage(resource.RUSAGE_SELF)
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(x_0, i)
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "median_step_s": round(sorted(times)[len(times) // 2], 3),
        "minor_faults_per_step": round((after.ru_minflt - before.ru_minflt) / steps),
        "kernel_s_per_step": round((after.ru_stime - before.ru_stime) / steps, 4),
    }


def write_report(result: dict, output: str | None, indent: int = 2) -> None:
    """Print a benchmark's result as JSON and, given a path, write it there too."""
    print(json.dumps(result, indent=indent))
    if output:
        with open(output, "w") as f:
            json.dump(result, f, indent=indent)
