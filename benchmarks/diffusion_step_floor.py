"""Where the time of train_diffusion.py's bf16 training step goes on this CPU, and the least it could take.

One step of `bench_diffusion_train.py`'s "ours" (the script's step, EMA included) runs under oneDNN's verbose log,
which times every convolution, matmul and layout reorder it runs with its problem size. From that log:

- the step's arithmetic (GFLOP of its convolutions and matmuls: forward, backward-data, backward-weights);
- the time oneDNN's kernels took for it, and so their rate;
- the time of the reorders between PyTorch's contiguous (NCHW) tensors and oneDNN's blocked layout;
- the time outside oneDNN (normalisation, activations, copies, optimiser, autograd).

Beside it: the median step time in bf16 and in fp32 (the same step under `--mixed_precision no`), and the machine's
bf16 rate on a 2048³ matrix product, so `floor_s` (the arithmetic at that rate) is the step with nothing but its
matrix work. The freed-memory setting of the training scripts is on, as they run.

    python benchmarks/diffusion_step_floor.py --output docs/results/diffusion_step_floor.json
    python benchmarks/diffusion_step_floor.py --channels_last     # flags it does not know go to the script
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import re
import sys
import tempfile
import time
from collections import defaultdict

import torch

from bench_diffusion_train import our_step
from throughput import keep_freed_memory, load_training_script, script_memory_format, time_steps, write_report


def onednn_log(fn) -> list[str]:
    """oneDNN's verbose lines (written by C to file descriptor 1) for the primitives `fn()` executes."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                fn()
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        return [line.strip() for line in log if line.startswith("onednn_verbose") and ",exec," in line]


def problem_flops(kind: str, problem: str) -> int:
    """Multiply-adds × 2 of one primitive from its verbose problem descriptor."""
    if kind == "convolution":
        dims = {key: int(value) for key, value in re.findall(r"([a-z]+?)(\d+)", problem.replace("_", ""))}
        groups = dims.get("g", 1)
        return 2 * dims["mb"] * dims["ic"] // groups * dims["oc"] * dims["kh"] * dims["kw"] * dims["oh"] * dims["ow"]
    a, b = ([int(d) for d in side.split("x")] for side in problem.split(":"))  # [..., M, K] : [..., K, N]
    return 2 * math.prod(a[:-2]) * a[-2] * a[-1] * b[-1]


def summarise(lines: list[str]) -> dict:
    time_ms, flops, calls = defaultdict(float), defaultdict(int), defaultdict(int)
    for line in lines:
        fields = line.split(",")
        kind, prop, problem, ms = fields[5], fields[7], fields[-2], float(fields[-1])
        key = kind if kind != "convolution" else f"convolution {prop}"
        time_ms[key] += ms
        calls[key] += 1
        if kind in ("convolution", "matmul"):
            flops[key] += problem_flops(kind, problem)
    kernel_ms = sum(ms for key, ms in time_ms.items() if key != "reorder")
    gflop = sum(flops.values()) / 1e9
    return {
        "gflop": round(gflop, 2),
        "kernel_ms": round(kernel_ms, 1),
        "kernel_gflops": round(gflop / (kernel_ms / 1e3), 1),
        "reorder_ms": round(time_ms["reorder"], 1),
        "onednn_ms": round(sum(time_ms.values()), 1),
        "by_primitive": {
            key: {"calls": calls[key], "ms": round(time_ms[key], 1), "gflop": round(flops[key] / 1e9, 2)}
            for key in sorted(time_ms, key=time_ms.get, reverse=True)
        },
    }


def matmul_bf16_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--steps", type=int, default=9, help="timed steps for each median")
    parser.add_argument("--output", default=None, help="write the result as JSON here")
    args, script_flags = parser.parse_known_args()

    keep_freed_memory()
    script = load_training_script("train_diffusion")
    script_args = script.parse_args(["--resolution", str(args.resolution), "--prediction_type", "epsilon", "--snr_gamma", "0", *script_flags])
    torch.manual_seed(0)
    x_0 = (torch.rand(args.batch_size, 3, args.resolution, args.resolution) * 2 - 1).contiguous(memory_format=script_memory_format(script_args))

    step_fp32_s = time_steps(our_step(script, script_args, "no"), x_0, args.steps)["median_step_s"]
    step = our_step(script, script_args, "bf16")
    step_s = time_steps(step, x_0, args.steps)["median_step_s"]
    lines = onednn_log(lambda: step(x_0, 0))
    if not lines:
        raise SystemExit("oneDNN ran no primitives in the step (torch.backends.mkldnn.is_available() is "
                         f"{torch.backends.mkldnn.is_available()}): there is no log to read")
    log = summarise(lines)
    rate = matmul_bf16_gflops()
    result = {
        "batch_size": args.batch_size,
        "resolution": args.resolution,
        "script_flags": script_flags,
        "threads": torch.get_num_threads(),
        "step_bf16_s": round(step_s, 3),
        "step_fp32_s": round(step_fp32_s, 3),
        "matmul_bf16_gflops": round(rate, 1),
        "floor_s": round(log["gflop"] / rate, 3),
        "outside_onednn_ms": round(step_s * 1e3 - log["onednn_ms"], 1),
        **log,
    }
    write_report(result, args.output)


if __name__ == "__main__":
    main()
