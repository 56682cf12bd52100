"""Does `torch.compile` give train_diffusion.py's UNet the gradients eager mode gives it, and how much faster is it?

One training batch loaded as the script loads it (`load_split`: the shapes world by default, with its labels when
--class_conditional), the script's loss (`diffusion_loss`, bf16 autocast as the script runs it on the CPU),
backward through the eager UNet and through a compiled copy with the same weights; then forward + backward timed for
each. Reported: the loss of each, the relative difference of the whole gradient, the parameter tensors whose
gradient differs by more than 10 % (and how many of them the compiled backward leaves at zero), and the seconds per
forward + backward. Flags it does not know go to the training script (e.g. --class_conditional).

    python benchmarks/compiled_gradients.py --class_conditional
    python benchmarks/compiled_gradients.py --class_conditional --no_layout_optimization
    python benchmarks/compiled_gradients.py --class_conditional --backend aot_eager
    python benchmarks/compiled_gradients.py --class_conditional --fp32   # or --stock_attention
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from throughput import load_training_script, write_report


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="inductor", help="torch.compile's backend")
    parser.add_argument(
        "--no_layout_optimization",
        action="store_true",
        help="inductor's layout_optimization off (it turns the convolutions channels-last inside the graph)",
    )
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    parser.add_argument(
        "--stock_attention",
        action="store_true",
        help="diffusers' default attention processor instead of the one prepare_for_training sets on the CPU",
    )
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed forward + backward passes of each")
    parser.add_argument("--output", default=None, help="write the result as JSON here")
    args, script_flags = parser.parse_known_args()
    return args, script_flags


def main():
    args, script_flags = parse_args()
    script = load_training_script("train_diffusion")
    script_args = script.parse_args(script_flags)
    x_0, labels, num_classes = script.load_split(script_args, "train", args.batch_size)

    torch.manual_seed(0)
    eager = script.build_unet(script_args, num_classes)
    if not args.stock_attention:
        eager = script.prepare_for_training(eager, script_args, "cpu")
    eager.train()
    twin = copy.deepcopy(eager)
    options = {"layout_optimization": False} if args.no_layout_optimization else None
    compiled = torch.compile(twin, backend=args.backend, dynamic=False, options=options)
    noise_scheduler = script.build_noise_scheduler(script_args)

    def forward_backward(unet, params) -> float:
        for p in params.parameters():
            p.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.fp32):
            loss = script.diffusion_loss(
                unet, noise_scheduler, x_0, torch.Generator().manual_seed(1), labels, num_classes, 0.0, script_args.snr_gamma
            )
        loss.backward()
        return loss.item()

    compile_start = time.perf_counter()
    compiled_loss = forward_backward(compiled, twin)
    compile_seconds = time.perf_counter() - compile_start
    eager_loss = forward_backward(eager, eager)

    differing, zeroed, pairs = [], [], []
    for (name, p_eager), p_compiled in zip(eager.named_parameters(), twin.parameters()):
        g_eager = torch.zeros_like(p_eager) if p_eager.grad is None else p_eager.grad
        g_compiled = torch.zeros_like(p_compiled) if p_compiled.grad is None else p_compiled.grad
        pairs.append((g_eager.flatten(), g_compiled.flatten()))
        if g_eager.norm() == 0:
            continue
        relative = float((g_compiled - g_eager).norm() / g_eager.norm())
        if relative > 0.1:
            differing.append((name, round(relative, 3)))
            if g_compiled.norm() == 0:
                zeroed.append(name)
    g_eager, g_compiled = (torch.cat(side) for side in zip(*pairs))

    seconds = {}
    for label, unet, params in (("eager", eager, eager), ("compiled", compiled, twin)):
        forward_backward(unet, params)
        start = time.perf_counter()
        for _ in range(args.steps):
            forward_backward(unet, params)
        seconds[label] = round((time.perf_counter() - start) / args.steps, 4)

    result = {
        "backend": args.backend,
        "layout_optimization": not args.no_layout_optimization,
        "autocast": "no" if args.fp32 else "bf16",
        "attention_processor": "diffusers' default" if args.stock_attention else "the script's (AttnProcessor)",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "loss_eager": eager_loss,
        "loss_compiled": compiled_loss,
        "gradient_relative_difference": round(float((g_compiled - g_eager).norm() / g_eager.norm()), 5),
        "parameter_tensors": len(pairs),
        "tensors_differing_over_10_percent": len(differing),
        "of_them_zero_in_the_compiled_backward": len(zeroed),
        "first_differing": differing[:3],
        "first_zeroed": zeroed[:3],
        "first_compiled_pass_seconds": round(compile_seconds, 1),
        "forward_backward_seconds": seconds,
    }
    write_report(result, args.output)


if __name__ == "__main__":
    main()
