"""`step` time of hf_genzoo's DDPM / DDIM / DDIM-inverse schedulers against diffusers', same tensors, same process.

Each case runs a full loop over `timesteps` (one `step` per timestep, a fixed model output) for ours and for
diffusers', alternating which goes first, for `--rounds` rounds; the reported time is the median over rounds of the
mean time per `step` call, and the ratio is ours / diffusers' (below 1: ours is faster). Before timing, one loop of
each is checked to give the same numbers.

    python benchmarks/bench_schedulers.py --batch 1 --channels 4 --size 16 --steps 20 --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import diffusers
import torch

from hf_genzoo.schedulers import GenZooDDIMInverseScheduler, GenZooDDIMScheduler, GenZooDDPMScheduler

CASES = {  # name: (ours, diffusers', config, step kwargs)
    "ddpm": (GenZooDDPMScheduler, diffusers.DDPMScheduler, {}, {}),
    "ddpm_v_threshold": (
        GenZooDDPMScheduler, diffusers.DDPMScheduler, dict(prediction_type="v_prediction", thresholding=True), {},
    ),
    "ddim_eta0": (GenZooDDIMScheduler, diffusers.DDIMScheduler, {}, dict(eta=0.0)),
    "ddim_eta1_clipped_eps": (
        GenZooDDIMScheduler, diffusers.DDIMScheduler, {}, dict(eta=1.0, use_clipped_model_output=True),
    ),
    "ddim_inverse": (GenZooDDIMInverseScheduler, diffusers.DDIMInverseScheduler, dict(clip_sample=False), {}),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--size", type=int, default=16, help="height = width of the sample")
    parser.add_argument("--steps", type=int, default=20, help="num_inference_steps")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--loops", type=int, default=5, help="full sampling loops per scheduler per round")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    return parser.parse_args()


def sampling_loop(scheduler, model_output, sample, step_kwargs, seed=0):
    """One pass over `scheduler.timesteps`; the same x_t and model output at every step (we time `step`)."""
    generator = None if isinstance(scheduler, (GenZooDDIMInverseScheduler, diffusers.DDIMInverseScheduler)) else (
        torch.Generator(device=sample.device).manual_seed(seed)
    )
    kwargs = dict(step_kwargs, generator=generator) if generator is not None else step_kwargs
    outputs = []
    for t in scheduler.timesteps:
        outputs.append(scheduler.step(model_output, t, sample, **kwargs).prev_sample)
    return outputs


def time_per_step(scheduler, model_output, sample, step_kwargs, loops: int) -> float:
    """Mean seconds per `step` call over `loops` full sampling loops."""
    if sample.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for loop in range(loops):
        sampling_loop(scheduler, model_output, sample, step_kwargs, seed=loop)
    if sample.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / (loops * len(scheduler.timesteps))


def main(args):
    torch.set_num_threads(args.threads)
    shape = (args.batch, args.channels, args.size, args.size)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(shape, generator=generator).to(args.device)
    model_output = torch.randn(shape, generator=generator).to(args.device)
    print(
        f"sample {tuple(shape)} float32 on {args.device}, {args.steps} steps, {args.rounds} rounds x {args.loops} "
        f"loops, {args.threads} thread(s), torch {torch.__version__}, diffusers {diffusers.__version__}"
    )
    print(f"{'case':24s} {'ours us/step':>13s} {'diffusers us/step':>18s} {'ours/diffusers':>15s}")
    for name in args.cases:
        ours_cls, their_cls, config, step_kwargs = CASES[name]
        ours, theirs = ours_cls(**config), their_cls(**config)
        ours.set_timesteps(args.steps, device=args.device)
        theirs.set_timesteps(args.steps, device=args.device)
        # same numbers first (also the warm-up)
        expected = sampling_loop(theirs, model_output, sample, step_kwargs)
        for actual, reference in zip(sampling_loop(ours, model_output, sample, step_kwargs), expected):
            torch.testing.assert_close(actual, reference, rtol=1e-5, atol=1e-4)
        times = {"ours": [], "diffusers": []}
        for round_index in range(args.rounds):
            order = [("ours", ours), ("diffusers", theirs)]
            for label, scheduler in order if round_index % 2 == 0 else order[::-1]:
                times[label].append(time_per_step(scheduler, model_output, sample, step_kwargs, args.loops))
        ours_us = statistics.median(times["ours"]) * 1e6
        their_us = statistics.median(times["diffusers"]) * 1e6
        print(f"{name:24s} {ours_us:13.1f} {their_us:18.1f} {ours_us / their_us:15.2f}")


if __name__ == "__main__":
    main(parse_args())
