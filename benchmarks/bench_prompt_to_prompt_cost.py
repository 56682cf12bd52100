#!/usr/bin/env python
"""What attention control costs: the time of a prompt-to-prompt edit (source and edited prompt in one batch, the
controller installed) against plain generation of the same two prompts with the UNet's default processors, same
steps, same process (rounds alternate, medians); and the memory an `AttentionStore` holds at 64 × 64 latents for
the edit's two prompts (the store keeps each prompt's maps, so it grows with the number of prompts).

    python benchmarks/bench_prompt_to_prompt_cost.py shapes-ldm-text --num_inference_steps 50 --rounds 5

The time ratio is the issue's target (≤ 1.3×). The store's memory is counted from its own tensors (the running
averages and the step's maps, measured at their peak, just before a step folds into the averages), for cross-attention
maps alone and with self-attention maps, in float32 and float16, at every resolution and limited to the UNet's coarsest maps.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a text-conditioned LatentDiffusionPipeline folder")
    parser.add_argument("--source", default="a large red circle at the center")
    parser.add_argument("--edited", default="a large blue circle at the center")
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory_latent_size", type=int, default=64, help="latent side at which the store is measured")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    import torch

    from hf_genzoo import LatentDiffusionPipeline
    from hf_genzoo.attention import AttentionStore, register_attention_control
    from hf_genzoo.attention.attention_processor import attention_layers
    from hf_genzoo.pipelines import PromptToPromptPipeline
    from throughput import write_report

    plain = LatentDiffusionPipeline.from_pretrained(args.folder)
    plain.set_progress_bar_config(disable=True)
    edit = PromptToPromptPipeline.from_pipe(plain)
    edit.set_progress_bar_config(disable=True)
    prompts = [args.source, args.edited]
    common = dict(num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale, output_type="np")

    def run_plain():
        return plain(prompts, generator=torch.Generator().manual_seed(0), **common).images

    def run_edit():
        return edit(prompts, edit_type="replace", generator=torch.Generator().manual_seed(0), **common).images

    run_plain(), run_edit()  # warm-up
    times = {"plain": [], "edit": []}
    for _ in range(args.rounds):
        for name, run in (("plain", run_plain), ("edit", run_edit)):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    plain_s, edit_s = statistics.median(times["plain"]), statistics.median(times["edit"])

    # memory of the store at a large latent: two steps are enough, the store's size does not grow with steps
    side = args.memory_latent_size
    size = side * plain.vae_scale_factor
    smallest = min(min(layer.map_shape((side, side))) for layer in attention_layers(plain.unet, side).values())
    memory = {}
    for label, kwargs, resolutions in (
        ("cross_fp32_all", dict(), None),
        ("cross_fp16_all", dict(store_dtype=torch.float16), None),
        (f"cross_fp32_{smallest}x{smallest}", dict(), (smallest,)),
        ("cross_and_self_fp32_all", dict(store_self=True), None),
        (f"cross_and_self_fp16_{smallest}x{smallest}", dict(store_self=True, store_dtype=torch.float16), (smallest,)),
    ):
        store = AttentionStore(**kwargs)
        peak = [0]
        fold = store.between_steps

        def between_steps(store=store, peak=peak, fold=fold):
            held = list(store.step_store.values()) + list(store.attention_store.values())
            peak[0] = max(peak[0], sum(t.numel() * t.element_size() for t in held))
            fold()

        store.between_steps = between_steps
        original = dict(plain.unet.attn_processors)
        try:
            layers = register_attention_control(plain.unet, store, resolutions=resolutions, latent_shape=side)
            plain(prompts, height=size, width=size, num_inference_steps=2, guidance_scale=args.guidance_scale,
                  generator=torch.Generator().manual_seed(0), output_type="latent",
                  callback_on_step_end=store.step_callback)
        finally:
            plain.unet.set_attn_processor(original)
        memory[label] = {"layers": len(layers), "peak_mib": peak[0] / 2**20}

    report = {
        "folder": args.folder,
        "num_inference_steps": args.num_inference_steps,
        "threads": torch.get_num_threads(),
        "plain_two_prompts_s": plain_s,
        "edit_two_prompts_s": edit_s,
        "edit_over_plain": edit_s / plain_s,
        "times": times,
        "attention_store_latent_side": side,
        "attention_store_prompts": len(prompts),
        "attention_store_memory": memory,
    }
    write_report(report, args.output)
    return report


if __name__ == "__main__":
    main()
