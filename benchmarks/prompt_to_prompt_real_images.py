#!/usr/bin/env python
"""Prompt-to-prompt on real images and with a local blend, on the shapes world, read by the oracle.

Real images: one-object scenes rendered by the shapes world from a seed the text-to-image model never saw, each
inverted with its own caption by DDIM inversion and by null-text inversion (Mokady et al. 2023). Reported per method:
the reconstruction's PSNR against the image (and the first stage's own D(E(x)) PSNR, its ceiling) and oracle
agreement (the reconstruction reads as the rendered scene); then a word swap of its colour, shape or size word from
that inversion (Hertz et al. 2022): edit success (valid, one object, the asked value) and preservation (every other
attribute as in the rendered scene).

Local blend: generated two-object scenes ("a small red circle at the top and a large blue square at the bottom"),
the first object's colour word swapped, `local_blend_words` on that object's words. Reported: the other object's
pixels against the source image's (PSNR over the other object's mask, read by the oracle from the source, grown by
one pixel) and its factors preserved, with and without the blend.

    python benchmarks/prompt_to_prompt_real_images.py shapes-ldm-text --num_images 40 --num_pairs 60 --output out.json
"""

from __future__ import annotations

import argparse
import json
import time

ATTRIBUTES = ("color", "shape", "size")
FACTORS = ("shape", "color", "size", "x", "y")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a text-conditioned LatentDiffusionPipeline folder")
    parser.add_argument("--num_images", type=int, default=40, help="real images to invert and edit")
    parser.add_argument("--num_pairs", type=int, default=60, help="two-object local-blend edits")
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--num_inner_steps", type=int, default=10, help="null-text Adam steps per timestep")
    parser.add_argument("--cross_replace_steps", type=float, default=0.8)
    parser.add_argument("--self_replace_steps", type=float, default=0.4)
    parser.add_argument("--local_blend_threshold", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F

    from hf_genzoo import PromptToPromptPipeline
    from hf_genzoo.data.shapes import COLORS, SHAPES, SIZES, ShapesOracle, make_shapes_dataset, scene_caption, shape_mask

    pipe = PromptToPromptPipeline.from_pretrained(args.folder)
    pipe.set_progress_bar_config(disable=True)
    resolution = pipe.default_size()[0]
    oracle = ShapesOracle(resolution)
    names = {"color": COLORS, "shape": SHAPES, "size": SIZES}
    rng = np.random.default_rng(args.seed)
    common = dict(num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale, output_type="pt")
    edit_kwargs = dict(cross_replace_steps=args.cross_replace_steps, self_replace_steps=args.self_replace_steps)

    def read(image):  # (3, H, W) in [0, 1] → the oracle's reading
        return oracle.read_batch((image[None].float() * 2 - 1).clamp(-1, 1))[0]

    def objects_of(row, slots):
        return [{f: row[f"{f}_{k}"] for f in ("shape", "color", "size", "x", "y", "angle")} for k in slots]

    def swap(obj, attribute):
        value = int(rng.choice([v for v in range(len(names[attribute])) if v != obj[attribute]]))
        return {**obj, attribute: value, "angle": 0 if attribute == "shape" else obj["angle"]}, value

    def same(reading, objects):
        return reading["valid"] and len(reading["objects"]) == len(objects) and all(
            all(read_obj[f] == obj[f] for f in FACTORS) for read_obj, obj in zip(reading["objects"], objects)
        )

    # 1. real images: inversion, reconstruction, word swap from the inversion
    rows = make_shapes_dataset(args.num_images, resolution=resolution, num_shapes=1, seed=args.seed + 3_000_017)
    real = {method: {"psnr": [], "first_stage_psnr": [], "agreement": [], "success": [], "preserved": [],
                     "seconds": 0.0} for method in ("ddim", "null_text")}
    for i in range(args.num_images):
        row = rows[i]
        (obj,) = objects_of(row, [0])
        caption = row["caption"]
        attribute = ATTRIBUTES[i % len(ATTRIBUTES)]
        edited_obj, value = swap(obj, attribute)
        target = scene_caption([edited_obj], resolution)
        for method, results in real.items():
            start = time.perf_counter()
            inversion = pipe.invert(row["image"], caption, method=method, num_inference_steps=args.num_inference_steps,
                                    guidance_scale=args.guidance_scale, num_inner_steps=args.num_inner_steps)
            results["seconds"] += time.perf_counter() - start
            results["psnr"].append(inversion.psnr)
            results["first_stage_psnr"].append(inversion.first_stage_psnr)
            results["agreement"].append(same(read(inversion.reconstruction[0]), [obj]))
            edited = pipe([caption, target], inversion=inversion, **edit_kwargs, **common).images[1]
            reading = read(edited)
            ok = reading["valid"] and len(reading["objects"]) == 1 and reading["objects"][0][attribute] == value
            results["success"].append(ok)
            if ok:
                others = [f for f in FACTORS if f != attribute]
                results["preserved"].append(all(reading["objects"][0][f] == obj[f] for f in others))

    def mean(values):
        return float(np.mean(values)) if len(values) else None

    report = {"folder": args.folder, "num_inference_steps": args.num_inference_steps,
              "guidance_scale": args.guidance_scale, "cross_replace_steps": args.cross_replace_steps,
              "self_replace_steps": args.self_replace_steps, "real_images": args.num_images, "inversion": {}}
    for method, results in real.items():
        report["inversion"][method] = {
            "reconstruction_psnr": mean(results["psnr"]),
            "first_stage_psnr": mean(results["first_stage_psnr"]),
            "oracle_agreement": mean(results["agreement"]),
            "edit_success": mean(results["success"]),
            "preservation": mean(results["preserved"]),
            "inversion_seconds_per_image": results["seconds"] / max(args.num_images, 1),
        }

    # 2. two-object scenes: swap the first object's colour, blend on its words
    rows = make_shapes_dataset(args.num_pairs, resolution=resolution, num_shapes=2, seed=args.seed + 4_000_037)
    blend = {name: {"other_psnr": [], "other_preserved": [], "success": []} for name in ("local_blend", "no_blend")}
    counted = 0
    for i in range(args.num_pairs):
        objects = objects_of(rows[i], [0, 1])
        edited_obj, value = swap(objects[0], "color")
        source, target = rows[i]["caption"], scene_caption([edited_obj, objects[1]], resolution)
        words_source = f"{COLORS[objects[0]['color']]} {SHAPES[objects[0]['shape']]}"
        words_target = f"{COLORS[value]} {SHAPES[objects[0]['shape']]}"
        latents = torch.randn((1, pipe.unet.config.in_channels, pipe.unet.config.sample_size,
                               pipe.unet.config.sample_size), generator=torch.Generator().manual_seed(args.seed + i))
        outputs = {
            "local_blend": pipe([source, target], latents=latents, local_blend_words=[words_source, words_target],
                                local_blend_threshold=args.local_blend_threshold, **edit_kwargs, **common).images,
            "no_blend": pipe([source, target], latents=latents, **edit_kwargs, **common).images,
        }
        source_reading = read(outputs["local_blend"][0])
        if not (source_reading["valid"] and len(source_reading["objects"]) == 2):
            continue
        # which read object is the untouched one: the one whose colour and shape match the second object's words
        other = [o for o in source_reading["objects"] if (o["color"], o["shape"]) == (objects[1]["color"], objects[1]["shape"])]
        if len(other) != 1:
            continue
        counted += 1
        other = other[0]
        mask = torch.from_numpy(shape_mask(other["shape"], other["size"], other["x"], other["y"], other["angle"], resolution))
        mask = F.max_pool2d(mask[None, None].float(), 3, stride=1, padding=1)[0, 0].bool()  # grown by one pixel
        for name, images in outputs.items():
            difference = (images[1] - images[0])[:, mask]
            mse = float(difference.pow(2).mean())
            blend[name]["other_psnr"].append(10 * np.log10(1.0 / max(mse, 1e-12)))
            reading = read(images[1])
            kept = [o for o in reading["objects"] if all(o[f] == other[f] for f in FACTORS)]
            blend[name]["other_preserved"].append(reading["valid"] and len(kept) == 1)
            moved = [o for o in reading["objects"] if o is not (kept[0] if kept else None)]
            blend[name]["success"].append(
                reading["valid"] and len(reading["objects"]) == 2 and len(kept) == 1
                and len(moved) == 1 and moved[0]["color"] == value
            )
    report["local_blend"] = {"pairs": args.num_pairs, "pairs_with_valid_source": counted}
    for name, results in blend.items():
        report["local_blend"][name] = {
            "other_object_psnr_median": float(np.median(results["other_psnr"])) if results["other_psnr"] else None,
            "other_object_psnr_mean": mean([min(p, 100.0) for p in results["other_psnr"]]),
            "other_object_preserved": mean(results["other_preserved"]),
            "edit_success": mean(results["success"]),
        }
    print(json.dumps(report, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
