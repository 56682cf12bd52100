#!/usr/bin/env python
"""Word-swap edits on the shapes world, read by the oracle: prompt-to-prompt (Hertz et al. 2022) against the
baselines that need no method — the edited prompt from the same noise (naive), SDEdit (Meng et al. 2022) from the
source image, and inpainting of a box around the source's object with the edited prompt (`PromptToPromptPipeline.
inpaint`, the box as a user would draw it: the object's pixels plus `--inpaint_margin`) — on a text-to-image folder of
train_latent_diffusion.py.

For each held-out one-object caption, one attribute word is swapped (colour, shape, size in turn: "a small red circle
at the top" → "a small blue circle at the top"). A pair counts when the source image is valid with one object. Then:
    edit success  the edited image is valid, one object, and the swapped attribute reads the asked value;
    preservation  of the successful edits, every other attribute (shape, colour, size, x, y) reads as in the source.

With `--refine_pairs N`, also N added-words edits (`edit_type="refine"`): a held-out two-object scene's first object
is the source caption ("a small red circle at the top"), the edit adds the second ("... and a large blue square at the
bottom"). Counted when the source is valid with one object:
    edit success  the edited image is valid with two objects, one of them of the added shape and colour;
    preservation  of the successful edits, the other object reads as the source's (shape, colour, size, x, y).

    python benchmarks/prompt_to_prompt_shapes.py shapes-ldm-text --num_pairs 300 --output p2p.json
"""

from __future__ import annotations

import argparse
import json

ATTRIBUTES = ("color", "shape", "size")


def object_box(image, margin: int):
    """A (1, H, W) mask in {0, 1}: the bounding box of the image's lit pixels (the object on black), grown by `margin`
    pixels on each side and clipped to the image; the whole image when nothing is lit."""
    import torch

    lit = image.amax(0) > 0.2  # (H, W)
    mask = torch.zeros_like(lit, dtype=torch.float32)
    if not lit.any():
        return mask.fill_(1.0)[None]
    rows, cols = lit.any(1).nonzero().flatten(), lit.any(0).nonzero().flatten()
    height, width = lit.shape
    top, bottom = max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, height)
    left, right = max(int(cols[0]) - margin, 0), min(int(cols[-1]) + margin + 1, width)
    mask[top:bottom, left:right] = 1.0
    return mask[None]


def refine_edits(pipe, args, read) -> dict:
    """Added-words edits (the object of a two-object caption added to a one-object one), prompt-to-prompt's refine
    against the edited prompt from the same noise; success and preservation as the module's docstring says."""
    import numpy as np
    import torch

    from hf_genzoo.data.shapes import make_shapes_dataset, scene_caption

    resolution = pipe.default_size()[0]
    rows = make_shapes_dataset(args.refine_pairs, resolution=resolution, num_shapes=2, seed=args.seed + 3_000_017)
    common = dict(num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale, output_type="pt")
    results = {"prompt_to_prompt": [], "naive": []}
    for i, row in enumerate(rows):
        first, added = ({f: row[f"{f}_{k}"] for f in ("shape", "color", "size", "x", "y", "angle")} for k in (0, 1))
        source, target = scene_caption([first], resolution), scene_caption([first, added], resolution)
        latents = torch.randn((1, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size),
                              generator=torch.Generator().manual_seed(args.seed + 10_000 + i))
        edit = pipe([source, target], edit_type="refine", latents=latents, cross_replace_steps=args.cross_replace_steps,
                    self_replace_steps=args.self_replace_steps, **common).images
        naive = super(type(pipe), pipe).__call__(target, latents=latents, **common).images[0]
        source_reading = read(edit[0])
        if not (source_reading["valid"] and len(source_reading["objects"]) == 1):
            continue
        kept = source_reading["objects"][0]
        for name, image in (("prompt_to_prompt", edit[1]), ("naive", naive)):
            reading = read(image)
            objects = reading["objects"] if reading["valid"] and len(reading["objects"]) == 2 else []
            new = [o for o in objects if (o["shape"], o["color"]) == (added["shape"], added["color"])]
            ok = bool(new)
            other = [o for o in objects if o is not new[0]] if ok else []
            preserved = ok and all(other[0][f] == kept[f] for f in ("shape", "color", "size", "x", "y"))
            results[name].append((ok, preserved))
    return {
        "pairs": args.refine_pairs,
        **{name: {
            "pairs_with_valid_source": len(r),
            "edit_success": float(np.mean([ok for ok, _ in r])) if r else None,
            "preservation": float(np.mean([p for ok, p in r if ok])) if any(ok for ok, _ in r) else None,
        } for name, r in results.items()},
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a text-conditioned LatentDiffusionPipeline folder")
    parser.add_argument("--num_pairs", type=int, default=300)
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--cross_replace_steps", type=float, default=0.8)
    parser.add_argument("--self_replace_steps", type=float, default=0.4)
    parser.add_argument("--sdedit_strengths", type=float, nargs="*", default=[0.4, 0.6, 0.8])
    parser.add_argument("--inpaint_margin", type=int, default=4, help="pixels added around the object's box for the inpainting baseline; negative: no inpainting")
    parser.add_argument("--refine_pairs", type=int, default=0, help="added-words (refine) edits to measure as well")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from hf_genzoo import PromptToPromptPipeline
    from hf_genzoo.data.shapes import COLORS, SHAPES, SIZES, ShapesOracle, make_shapes_dataset, scene_caption

    pipe = PromptToPromptPipeline.from_pretrained(args.folder)
    pipe.set_progress_bar_config(disable=True)
    resolution = pipe.default_size()[0]
    oracle = ShapesOracle(resolution)
    rows = make_shapes_dataset(args.num_pairs, resolution=resolution, num_shapes=1, seed=args.seed + 2_000_003)
    rng = np.random.default_rng(args.seed)
    names = {"color": COLORS, "shape": SHAPES, "size": SIZES}

    pairs = []
    for i in range(args.num_pairs):
        obj = {f: rows[i][f"{f}_0"] for f in ("shape", "color", "size", "x", "y", "angle")}
        attribute = ATTRIBUTES[i % len(ATTRIBUTES)]
        new_value = int(rng.choice([v for v in range(len(names[attribute])) if v != obj[attribute]]))
        edited = {**obj, attribute: new_value, "angle": 0 if attribute == "shape" else obj["angle"]}
        pairs.append((scene_caption([obj], resolution), scene_caption([edited], resolution), attribute, new_value))

    def read(image):  # (3, H, W) in [0, 1] → the oracle's reading
        return oracle.read_batch((image[None].float() * 2 - 1).clamp(-1, 1))[0]

    methods = {"prompt_to_prompt": [], "naive": [], **{f"sdedit_{s}": [] for s in args.sdedit_strengths}, **({"inpaint": []} if args.inpaint_margin >= 0 else {})}
    for i, (source, target, attribute, value) in enumerate(pairs):
        generator = torch.Generator().manual_seed(args.seed + i)
        latents = torch.randn((1, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size), generator=generator)
        common = dict(num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale, output_type="pt")
        edit = pipe([source, target], latents=latents, cross_replace_steps=args.cross_replace_steps, self_replace_steps=args.self_replace_steps, **common).images
        source_image = edit[0]
        naive = super(PromptToPromptPipeline, pipe).__call__(target, latents=latents, **common).images[0]
        outputs = {"prompt_to_prompt": edit[1], "naive": naive}
        for strength in args.sdedit_strengths:
            outputs[f"sdedit_{strength}"] = pipe.sdedit(source_image[None], target, strength=strength, generator=torch.Generator().manual_seed(i), **common).images[0]
        if args.inpaint_margin >= 0:
            outputs["inpaint"] = pipe.inpaint(source_image[None], object_box(source_image, args.inpaint_margin)[None], target, generator=torch.Generator().manual_seed(i), **common).images[0]
        source_reading = read(source_image)
        for name, image in outputs.items():
            methods[name].append((source_reading, read(image), attribute, value))

    report = {"folder": args.folder, "pairs": args.num_pairs, "num_inference_steps": args.num_inference_steps,
              "guidance_scale": args.guidance_scale, "cross_replace_steps": args.cross_replace_steps,
              "self_replace_steps": args.self_replace_steps, "methods": {}}
    for name, results in methods.items():
        counted = [r for r in results if r[0]["valid"] and len(r[0]["objects"]) == 1]
        success, preserved, by_attribute = [], [], {a: [] for a in ATTRIBUTES}
        for source, edited, attribute, value in counted:
            ok = edited["valid"] and len(edited["objects"]) == 1 and edited["objects"][0][attribute] == value
            success.append(ok)
            by_attribute[attribute].append(ok)
            if ok:
                others = [f for f in ("shape", "color", "size", "x", "y") if f != attribute]
                preserved.append(all(edited["objects"][0][f] == source["objects"][0][f] for f in others))
        report["methods"][name] = {
            "pairs_with_valid_source": len(counted),
            "edit_success": float(np.mean(success)) if success else None,
            "preservation": float(np.mean(preserved)) if preserved else None,
            **{f"edit_success_{a}": float(np.mean(v)) if v else None for a, v in by_attribute.items()},
        }
    if args.refine_pairs > 0:
        report["refine"] = refine_edits(pipe, args, read)
    print(json.dumps(report, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
