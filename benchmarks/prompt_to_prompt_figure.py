#!/usr/bin/env python
"""A picture of word-swap edits on the shapes world: for the first pairs that benchmarks/prompt_to_prompt_shapes.py
measures (the same held-out captions, swaps and noise), one row each: the source image, the prompt-to-prompt edit,
the edited prompt from the same noise, SDEdit of the source, and the cross-attention maps (averaged over heads, layers
and steps, brighter = more attention) of the swapped word while generating the source, and of its replacement while generating the edited prompt from the
same noise;
the two captions beside it.

    python benchmarks/prompt_to_prompt_figure.py shapes-ldm-text-cpu --output docs/results/shapes-ldm-text-cpu-p2p-examples.png
"""

from __future__ import annotations

import argparse

ATTRIBUTES = ("color", "shape", "size")  # as prompt_to_prompt_shapes.py: colour, shape, size in turn
COLUMNS = ("source", "prompt-to-prompt", "edited prompt", "SDEdit", "map: old word", "map: new word")  # the edited prompt: from the same noise


def edit_pairs(num_pairs: int, resolution: int, seed: int):
    """(source caption, edited caption) of prompt_to_prompt_shapes.py's first `num_pairs` pairs."""
    import numpy as np

    from hf_genzoo.data.shapes import COLORS, SHAPES, SIZES, make_shapes_dataset, scene_caption

    # the benchmark draws its held-out scenes and swaps for all of its pairs; the first ones do not depend on how many
    rows = make_shapes_dataset(num_pairs, resolution=resolution, num_shapes=1, seed=seed + 2_000_003)
    rng = np.random.default_rng(seed)
    names = {"color": COLORS, "shape": SHAPES, "size": SIZES}
    pairs = []
    for i in range(num_pairs):
        obj = {f: rows[i][f"{f}_0"] for f in ("shape", "color", "size", "x", "y", "angle")}
        attribute = ATTRIBUTES[i % len(ATTRIBUTES)]
        value = int(rng.choice([v for v in range(len(names[attribute])) if v != obj[attribute]]))
        edited = {**obj, attribute: value, "angle": 0 if attribute == "shape" else obj["angle"]}
        pairs.append((scene_caption([obj], resolution), scene_caption([edited], resolution)))
    return pairs


def swapped_words(source: str, target: str) -> tuple[str, str]:
    """The word of `source` a swap replaced, and its replacement (the captions differ in one word)."""
    changed = [(a, b) for a, b in zip(source.split(), target.split()) if a != b]
    if len(changed) != 1 or len(source.split()) != len(target.split()):
        raise ValueError(f"{source!r} → {target!r} is not a one-word swap")
    return changed[0]


def map_image(maps):
    """The maps of one word's tokens (N, h, w), averaged and normalised by their maximum, as a grey PIL image."""
    import numpy as np
    from PIL import Image

    average = maps.mean(0)
    return Image.fromarray((255 * average / max(float(average.max()), 1e-12)).astype(np.uint8))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a text-conditioned LatentDiffusionPipeline folder")
    parser.add_argument("--num_pairs", type=int, default=6)
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--sdedit_strength", type=float, default=0.5)
    parser.add_argument("--tile_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    if args.num_pairs < 1:
        raise ValueError(f"--num_pairs {args.num_pairs}: must be at least 1")

    import torch
    from PIL import Image, ImageDraw, ImageFont

    from hf_genzoo import PromptToPromptPipeline

    pipe = PromptToPromptPipeline.from_pretrained(args.folder)
    pipe.set_progress_bar_config(disable=True)
    resolution = pipe.default_size()[0]
    common = dict(num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale, output_type="pil")
    rows = []
    for i, (source, target) in enumerate(edit_pairs(args.num_pairs, resolution, args.seed)):
        generator = torch.Generator().manual_seed(args.seed + i)
        shape = (1, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
        latents = torch.randn(shape, generator=generator)
        edit = pipe([source, target], latents=latents, **common).images
        naive = super(PromptToPromptPipeline, pipe).__call__(target, latents=latents, **common).images[0]
        sdedit = pipe.sdedit(edit[0], target, strength=args.sdedit_strength,
                             generator=torch.Generator().manual_seed(i), **common).images[0]
        old_word, new_word = swapped_words(source, target)
        maps = [map_image(pipe.attention_maps(prompt, words=[word], latents=latents, num_inference_steps=args.num_inference_steps,
                                              guidance_scale=args.guidance_scale).maps) for prompt, word in ((source, old_word), (target, new_word))]
        rows.append((source, target, [edit[0], edit[1], naive, sdedit, *maps]))

    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    tile, gap, label = args.tile_size, 4, 370
    header = 22
    figure = Image.new("RGB", (len(COLUMNS) * (tile + gap) + label, header + len(rows) * (tile + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(figure)
    for j, name in enumerate(COLUMNS):
        draw.text((j * (tile + gap) + tile // 2, header // 2), name, fill=(0, 0, 0), font=font, anchor="mm")
    for i, (source, target, images) in enumerate(rows):
        y = header + i * (tile + gap)
        for j, image in enumerate(images):
            figure.paste(image.convert("RGB").resize((tile, tile), Image.NEAREST), (j * (tile + gap), y))
        x = len(COLUMNS) * (tile + gap) + 6
        draw.text((x, y + tile // 3), "from: " + source, fill=(0, 0, 0), font=font, anchor="lm")
        draw.text((x, y + 2 * tile // 3), "to: " + target, fill=(0, 0, 0), font=font, anchor="lm")
    figure.save(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
