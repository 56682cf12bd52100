"""Nearest-code search: the quantiser's one matrix product (‖z‖² − 2 z·e + ‖e‖², hf_genzoo.models.nearest_codes)
against the naive broadcasted distance (z[:, None] − e[None]).pow(2).sum(−1), same tensors, same process.

    python benchmarks/bench_quantize.py --rounds 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hf_genzoo.models import nearest_codes
from throughput import write_report


def naive_codes(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return (z[:, None, :] - codebook[None, :, :]).pow(2).sum(-1).argmin(1)  # an (N, K, D) tensor


def seconds(fn, *tensors, repeats: int) -> float:
    fn(*tensors)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn(*tensors)
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    # (images in a batch × codes per image, K, D): the shapes-world VQ-VAE's batch, and a larger codebook
    cases = [(64 * 64, 256, 16), (64 * 64, 512, 64), (256 * 64, 512, 64)]
    results = []
    for n, k, d in cases:
        torch.manual_seed(0)
        z, codebook = torch.randn(n, d), torch.randn(k, d)
        assert torch.equal(nearest_codes(z, codebook), naive_codes(z, codebook))
        repeats = max(1, int(2e8 // (n * k * d)))
        ours = [seconds(nearest_codes, z, codebook, repeats=repeats) for _ in range(args.rounds)]
        naive = [seconds(naive_codes, z, codebook, repeats=repeats) for _ in range(args.rounds)]
        results.append({
            "vectors": n, "codes": k, "dim": d,
            "matmul_ms": round(1e3 * float(np.median(ours)), 2),
            "naive_ms": round(1e3 * float(np.median(naive)), 2),
            "speedup": round(float(np.median(naive) / np.median(ours)), 1),
            "naive_peak_tensor_mib": round(n * k * d * 4 / 2**20),
        })
    result = {"threads": torch.get_num_threads(), "cases": results}
    write_report(result, args.output)


if __name__ == "__main__":
    main()
