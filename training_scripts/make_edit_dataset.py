#!/usr/bin/env python
"""Make an InstructPix2Pix training set (Brooks et al. 2023, arXiv:2211.09800) of (input image, instruction, edited
image) on the shapes world, as a 🤗 `datasets` dataset with the column names of diffusers'
`examples/instruct_pix2pix/train_instruct_pix2pix.py` (`input_image`, `edit_prompt`, `edited_image`).

    python training_scripts/make_edit_dataset.py --source exact --num_samples 10000 --output_dir shapes-edits
    python training_scripts/make_edit_dataset.py --source prompt_to_prompt --text_to_image shapes-ldm \\
        --num_samples 1000 --num_seeds 4 --output_dir shapes-edits-p2p

Sources:
    exact             the shapes world's `edits` configuration (hf_genzoo.data.shapes): both images rendered exactly
                      from their factors; instructions recolour, move, reshape, resize, and remove one object of a
                      two-object scene.
    prompt_to_prompt  the paper's recipe (§3.1), with the shapes world standing in for its fine-tuned GPT-3: each
                      (input caption, instruction, edited caption) of the `edits` configuration becomes an image
                      pair by prompt-to-prompt (Hertz et al. 2022) through `PromptToPromptPipeline` on a
                      text-to-image folder (`--text_to_image`). Each triplet is tried with `--num_seeds` seeds, each
                      with its own strengths cross_replace_steps ~ U(--cross_replace_range) and self_replace_steps ~
                      U(--self_replace_range) (the paper draws its fraction of shared-attention steps p ~ U(0.1, 0.9)).
                      Word swaps of as many tokens use edit_type="replace", everything else "refine" (a move that
                      changes the number of position words, and a removal: the two-object caption refined into the
                      one-object caption, which drops the removed object's words). The paper filters pairs by the
                      CLIP directional similarity; here the shapes oracle filters (`judge_pair`): it must read the
                      input caption in the input image, the edited caption in the edited image, and every factor the
                      instruction does not touch unchanged (the other object entirely). The first passing attempt of
                      a triplet is kept and its remaining seeds are not tried (at most one pair per triplet, as the
                      paper keeps). The factor columns are the oracle's readings of the two images, which are scenes
                      of the two captions (a caption names a 3×3 cell, a reading the exact grid position).

Columns (both sources): `input_image`, `edit_prompt` (the instruction), `edited_image` (RGB `datasets.Image`),
`edit_type` (recolor, move, reshape, resize, remove), `input_caption`, `edited_caption`, `num_shapes` (of the input)
and the factors of both images, `input_{shape,color,size,x,y,angle}_{0,1}` and `edited_…` (indices into
hf_genzoo.data.shapes' grids, -1 in an absent slot). The dataset is saved with `save_to_disk` in `--output_dir`
with a dataset card (README.md) and `stats.json`; `--push_to_hub` uploads it (one Parquet shard under data/, and the card) to the dataset repo `--hub_model_id`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import time

SOURCES = ("exact", "prompt_to_prompt")
OBJECT_FACTORS = ("shape", "color", "size", "x", "y", "angle")
# what an edit may change in its target object; everything else of every object must stay (preservation)
CHANGED_BY = {"recolor": {"color"}, "move": {"x", "y"}, "reshape": {"shape", "angle"}, "resize": {"size"}}
REJECTIONS = ("input_invalid", "input_caption", "edited_invalid", "edited_caption", "not_preserved")


def _fraction_range(parser, name: str, values: list[float]) -> tuple[float, float]:
    low, high = values
    if not 0.0 <= low <= high <= 1.0:
        parser.error(f"--{name} must be two fractions 0 ≤ low ≤ high ≤ 1, got {low} {high}")
    return low, high


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Make an InstructPix2Pix dataset of shapes-world edits: exact renders, or prompt-to-prompt pairs of a text-to-image model filtered by the shapes oracle."
    )
    parser.add_argument("--source", default="exact", help=f"one of {', '.join(SOURCES)} (default exact)")
    parser.add_argument("--text_to_image", default=None, help="--source prompt_to_prompt: a text-to-image pipeline folder (or Hub id), e.g. of train_latent_diffusion.py")
    parser.add_argument("--num_samples", type=int, default=1000, help="triplets drawn from the shapes world's edits (rows of --source exact)")
    parser.add_argument("--resolution", type=int, default=None, help="image side (default 32; for prompt_to_prompt the pipeline's, which a given value must equal)")
    parser.add_argument("--num_shapes", type=int, nargs="+", default=[1, 2], choices=(1, 2), help="objects per input scene (default: 1 2, each row draws one; removal needs 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the triplets (row i depends on (seed, i) only) and of the attempts' noise and strengths")
    # prompt-to-prompt
    parser.add_argument("--num_seeds", type=int, default=4, help="attempts per triplet, each with its own noise and strengths (prompt_to_prompt)")
    parser.add_argument("--cross_replace_range", type=float, nargs=2, default=[0.1, 0.9], metavar=("LOW", "HIGH"), help="cross_replace_steps ~ U(LOW, HIGH) per attempt (default 0.1 0.9)")
    parser.add_argument("--self_replace_range", type=float, nargs=2, default=[0.1, 0.9], metavar=("LOW", "HIGH"), help="self_replace_steps ~ U(LOW, HIGH) per attempt (default 0.1 0.9, the paper's p)")
    parser.add_argument("--num_inference_steps", type=int, default=50, help="DDIM steps (prompt_to_prompt)")
    parser.add_argument("--guidance_scale", type=float, default=3.0, help="classifier-free guidance of both images (prompt_to_prompt; 3.0 as train_latent_diffusion.py's samples)")
    parser.add_argument("--max_seconds", type=float, default=None, help="stop drawing triplets after this many seconds of generation (prompt_to_prompt; the stats count the triplets reached): for runs on a time budget")
    # outputs
    parser.add_argument("--output_dir", default="shapes-edits", help="where the dataset is saved (save_to_disk), with README.md and stats.json")
    parser.add_argument("--push_to_hub", action="store_true", help="upload the dataset and its card to the dataset repo --hub_model_id")
    parser.add_argument("--hub_model_id", default=None, help="the dataset repo, e.g. your-name/shapes-edits")
    parser.add_argument("--hub_token", default=None)
    parser.add_argument("--private", action="store_true", help="create the dataset repo private")
    args = parser.parse_args(argv)

    if args.source not in SOURCES:
        parser.error(f"--source {args.source!r} is not one of {list(SOURCES)}")
    if args.source == "prompt_to_prompt" and not args.text_to_image:
        parser.error("--source prompt_to_prompt needs --text_to_image, a text-to-image pipeline folder")
    if args.source == "exact" and args.text_to_image:
        parser.error(f"--text_to_image {args.text_to_image!r} is only read by --source prompt_to_prompt, not --source exact")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id, a dataset repo (e.g. your-name/shapes-edits)")
    if args.max_seconds is not None and args.max_seconds <= 0:
        parser.error(f"--max_seconds must be > 0, got {args.max_seconds}")
    for name in ("num_samples", "num_seeds", "num_inference_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    if args.guidance_scale < 1.0:
        parser.error(f"--guidance_scale must be ≥ 1 (1: no guidance), got {args.guidance_scale}")
    args.cross_replace_range = _fraction_range(parser, "cross_replace_range", args.cross_replace_range)
    args.self_replace_range = _fraction_range(parser, "self_replace_range", args.self_replace_range)
    args.num_shapes = sorted(set(args.num_shapes))
    return args


# the heavy imports come after argument parsing, so that `--help` answers at once
import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from hf_genzoo.data.shapes import (  # noqa: E402
    EDIT_TYPES,
    FACTORS,
    MAX_SHAPES,
    ShapesOracle,
    make_shapes_dataset,
    scene_caption,
)

logger = logging.getLogger("make_edit_dataset")


# ---- columns ---------------------------------------------------------------------------------------------------


def edit_features() -> datasets.Features:
    """The columns of both sources: diffusers' instruct_pix2pix names first, then what the shapes world knows."""
    factors = {
        f"{prefix}{factor}_{slot}": datasets.Value("int64")
        for prefix in ("input_", "edited_")
        for slot in range(MAX_SHAPES)
        for factor in FACTORS
    }
    return datasets.Features(
        {
            "input_image": datasets.Image(),
            "edit_prompt": datasets.Value("string"),
            "edited_image": datasets.Image(),
            "edit_type": datasets.Value("string"),
            "input_caption": datasets.Value("string"),
            "edited_caption": datasets.Value("string"),
            "num_shapes": datasets.Value("int64"),
            **factors,
        }
    )


def row_objects(row: dict, prefix: str) -> list[dict]:
    """The objects of one image of a row, from its factor columns (`prefix` "input_" or "edited_")."""
    return [
        {factor: int(row[f"{prefix}{factor}_{slot}"]) for factor in FACTORS}
        for slot in range(MAX_SHAPES)
        if row[f"{prefix}shape_{slot}"] >= 0
    ]


def factor_columns(objects: list[dict], prefix: str) -> dict:
    """`{prefix}{factor}_{slot}` of a scene, -1 in absent slots."""
    columns = {}
    for slot in range(MAX_SHAPES):
        for factor in FACTORS:
            columns[f"{prefix}{factor}_{slot}"] = objects[slot][factor] if slot < len(objects) else -1
    return columns


def exact_dataset(args) -> datasets.Dataset:
    """The shapes world's `edits` configuration under the instruct_pix2pix column names."""
    edits = make_shapes_dataset(args.num_samples, args.resolution, num_shapes=tuple(args.num_shapes), seed=args.seed, config="edits")
    edits = edits.rename_column("instruction", "edit_prompt")
    return edits.select_columns(list(edit_features())).cast(edit_features())


# ---- the filter ------------------------------------------------------------------------------------------------


def caption_phrases(caption: str) -> list[str]:
    """The per-object phrases of a caption, sorted: two captions of the same scene whose objects share a caption
    row can list them in either order."""
    return sorted(caption.split(" and "))


def preserved(input_objects: list[dict], edited_objects: list[dict], edit_type: str) -> bool:
    """Whether the edited scene changes nothing the edit does not touch: for a removal, the object left is one of
    the input's, unchanged; otherwise the objects pair up so that all but at most one are identical and that one
    differs only in what `edit_type` may change (`CHANGED_BY`)."""
    if edit_type == "remove":
        return len(edited_objects) == len(input_objects) - 1 and all(obj in input_objects for obj in edited_objects)
    if len(edited_objects) != len(input_objects):
        return False
    keep = [f for f in OBJECT_FACTORS if f not in CHANGED_BY[edit_type]]
    orders = [edited_objects] if len(edited_objects) < 2 else [edited_objects, edited_objects[::-1]]
    for order in orders:
        changed = [(a, b) for a, b in zip(input_objects, order) if a != b]
        if len(changed) <= 1 and all(a[f] == b[f] for a, b in changed for f in keep):
            return True
    return False


def judge_pair(input_reading: dict, edited_reading: dict, input_caption: str, edited_caption: str, edit_type: str, resolution: int) -> str | None:
    """The filter of generated pairs, the stand-in for the paper's directional-similarity filter: None when the pair
    is kept, else the first rule it fails (one of `REJECTIONS`).

    Args:
        input_reading, edited_reading: `ShapesOracle.read` of the generated input and edited images.
        input_caption, edited_caption: the triplet's captions; edit_type: one of `EDIT_TYPES`.

    Rules, in order: the input image is valid ("input_invalid") and its objects' caption is the input caption
    ("input_caption"); the same for the edited image ("edited_invalid", "edited_caption"); and everything the edit
    does not touch reads the same in both ("not_preserved", see `preserved`).
    """
    if edit_type not in EDIT_TYPES:
        raise ValueError(f"edit_type {edit_type!r} is not one of {list(EDIT_TYPES)}")
    for reading, caption, name in ((input_reading, input_caption, "input"), (edited_reading, edited_caption, "edited")):
        if not reading["valid"]:
            return f"{name}_invalid"
        if caption_phrases(scene_caption(reading["objects"], resolution)) != caption_phrases(caption):
            return f"{name}_caption"
    if not preserved(input_reading["objects"], edited_reading["objects"], edit_type):
        return "not_preserved"
    return None


# ---- prompt-to-prompt ------------------------------------------------------------------------------------------


def load_text_to_image(name_or_path: str, device):
    """A `PromptToPromptPipeline` on the text-to-image folder (or Hub id) `--text_to_image`; anything else is a
    ValueError naming it."""
    from hf_genzoo import PromptToPromptPipeline
    from hf_genzoo.hub import resolve_pretrained_folder

    if not os.path.isdir(name_or_path) and (os.path.exists(name_or_path) or name_or_path.startswith((".", "/", "~"))):
        raise ValueError(f"--text_to_image {name_or_path!r} is not a folder")
    folder = resolve_pretrained_folder(name_or_path)
    index = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index):
        raise ValueError(f"--text_to_image {name_or_path!r} is not a text-to-image pipeline folder: it has no model_index.json")
    with open(index) as f:
        components = {name for name, value in json.load(f).items() if isinstance(value, list) and value[0]}
    missing = {"unet", "text_encoder", "tokenizer", "scheduler"} - components
    if missing:
        raise ValueError(f"--text_to_image {name_or_path!r} is not a text-to-image pipeline: it lacks {sorted(missing)} (its components: {sorted(components)})")
    try:
        pipe = PromptToPromptPipeline.from_pretrained(folder)
    except ValueError as error:
        raise ValueError(f"--text_to_image {name_or_path!r} cannot run prompt-to-prompt: {error}") from error
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def controller_type(pipe, input_caption: str, edited_caption: str) -> str:
    """"replace" for a word swap (as many tokens), "refine" otherwise (words added or dropped)."""
    from hf_genzoo.attention.prompt_to_prompt import token_ids

    same = len(token_ids(input_caption, pipe.tokenizer)) == len(token_ids(edited_caption, pipe.tokenizer))
    return "replace" if same else "refine"


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8, as the images are stored (and read by the oracle)."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def attempt_plan(args, index: int, attempt: int) -> tuple[int, float, float]:
    """(noise seed, cross_replace_steps, self_replace_steps) of one attempt: a function of (seed, triplet, attempt)."""
    rng = np.random.default_rng([args.seed, index, attempt])
    return int(rng.integers(2**31)), float(rng.uniform(*args.cross_replace_range)), float(rng.uniform(*args.self_replace_range))


def prompt_to_prompt_dataset(args, stats: dict) -> datasets.Dataset:
    """The paper's recipe on the shapes world's triplets; fills `stats` with what was drawn, tried and kept."""
    from accelerate import PartialState

    pipe = load_text_to_image(args.text_to_image, PartialState().device)
    resolution = pipe.default_size()[0]
    if pipe.default_size()[1] != resolution:
        raise ValueError(f"--text_to_image {args.text_to_image!r} makes {pipe.default_size()} images; the shapes world is square")
    if args.resolution not in (None, resolution):
        raise ValueError(f"--resolution {args.resolution} differs from the {resolution}×{resolution} images of --text_to_image {args.text_to_image!r}")
    args.resolution = resolution
    oracle = ShapesOracle(resolution)
    triplets = make_shapes_dataset(args.num_samples, resolution, num_shapes=tuple(args.num_shapes), seed=args.seed, config="edits")
    triplets = triplets.remove_columns(["input_image", "edited_image"])

    per_type = {t: {"triplets": 0, "attempts": 0, "passing_attempts": 0, "kept": 0, **{r: 0 for r in REJECTIONS}} for t in EDIT_TYPES}
    rows, kept_attempts = [], []
    start = time.perf_counter()
    for index, triplet in enumerate(triplets):
        if args.max_seconds is not None and time.perf_counter() - start > args.max_seconds:
            logger.info(f"--max_seconds {args.max_seconds} reached after {index} of {len(triplets)} triplets")
            break
        edit_type = triplet["edit_type"]
        counts = per_type[edit_type]
        counts["triplets"] += 1
        prompts = [triplet["input_caption"], triplet["edited_caption"]]
        controller = controller_type(pipe, *prompts)
        for attempt in range(args.num_seeds):
            noise_seed, cross, self_ = attempt_plan(args, index, attempt)
            images = pipe(
                prompts,
                edit_type=controller,
                cross_replace_steps=cross,
                self_replace_steps=self_,
                num_inference_steps=args.num_inference_steps,
                guidance_scale=args.guidance_scale,
                generator=torch.Generator().manual_seed(noise_seed),
                output_type="pt",
            ).images  # (2, 3, H, W) in [0, 1]: input, edited
            pair = to_uint8(images)  # (2, H, W, 3)
            input_reading, edited_reading = oracle.read_batch(pair)
            counts["attempts"] += 1
            rejection = judge_pair(input_reading, edited_reading, *prompts, edit_type, resolution)
            if rejection is not None:
                counts[rejection] += 1
                continue
            counts["passing_attempts"] += 1
            counts["kept"] += 1
            rows.append(
                {
                    "input_image": Image.fromarray(pair[0]),
                    "edit_prompt": triplet["instruction"],
                    "edited_image": Image.fromarray(pair[1]),
                    "edit_type": edit_type,
                    "input_caption": prompts[0],
                    "edited_caption": prompts[1],
                    "num_shapes": triplet["num_shapes"],
                    **factor_columns(input_reading["objects"], "input_"),
                    **factor_columns(edited_reading["objects"], "edited_"),
                }
            )
            kept_attempts.append({"triplet": index, "attempt": attempt, "edit_type": edit_type, "controller": controller, "cross_replace_steps": round(cross, 4), "self_replace_steps": round(self_, 4)})
            break  # at most one pair per triplet: the first that passes
        if (index + 1) % 5 == 0 or index + 1 == len(triplets):
            attempts = sum(c["attempts"] for c in per_type.values())
            logger.info(f"{index + 1}/{len(triplets)} triplets, {attempts} attempts, {len(rows)} kept, {time.perf_counter() - start:.0f} s")

    seconds = time.perf_counter() - start
    total = {key: sum(c[key] for c in per_type.values()) for key in next(iter(per_type.values()))}
    for counts in (*per_type.values(), total):
        counts["kept_fraction"] = counts["kept"] / counts["triplets"] if counts["triplets"] else None
        counts["attempt_pass_rate"] = counts["passing_attempts"] / counts["attempts"] if counts["attempts"] else None
    stats.update(
        text_to_image=args.text_to_image,
        triplets_reached=total["triplets"],
        num_seeds=args.num_seeds,
        cross_replace_range=list(args.cross_replace_range),
        self_replace_range=list(args.self_replace_range),
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        generation_seconds=round(seconds, 1),
        seconds_per_attempt=round(seconds / max(total["attempts"], 1), 3),
        total=total,
        per_edit_type={t: c for t, c in per_type.items() if c["triplets"]},
        kept_attempts=kept_attempts,
    )
    if not rows:
        return datasets.Dataset.from_dict({name: [] for name in edit_features()}, features=edit_features())
    return datasets.Dataset.from_list(rows, features=edit_features())


# ---- card, saving, upload --------------------------------------------------------------------------------------


def command_line(argv: list[str] | None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    return "python training_scripts/make_edit_dataset.py " + shlex.join(argv)


def dataset_card(args, dataset: datasets.Dataset, stats: dict) -> str:
    """README.md of the dataset: what the columns are, how it was made, the command, counts per edit type."""
    counts = {t: 0 for t in EDIT_TYPES}
    for edit_type in list(dataset["edit_type"]):
        counts[edit_type] += 1
    size = "n<1K" if len(dataset) < 1000 else "1K<n<10K" if len(dataset) < 10_000 else "10K<n<100K" if len(dataset) < 100_000 else "100K<n<1M"
    header = "\n".join(
        [
            "---",
            "library_name: hf_genzoo",
            "task_categories:",
            "- image-to-image",
            "tags:",
            "- instruct-pix2pix",
            "- image-editing",
            "- synthetic",
            "- shapes-world",
            *(["- prompt-to-prompt"] if args.source == "prompt_to_prompt" else []),
            "size_categories:",
            f"- {size}",
            "configs:",  # the Parquet shard of --push_to_hub
            "- config_name: default",
            "  data_files:",
            "  - split: train",
            "    path: data/train-*",
            "---",
        ]
    )
    if args.source == "exact":
        made = (
            "Both images are rendered exactly from their factors by hf_genzoo's shapes world "
            "(`hf_genzoo.data.shapes`, configuration `edits`): every factor the "
            "instruction does not name is unchanged, so the pair differs only by the edit."
        )
        table = ["| edit type | rows |", "|---|---|", *(f"| {t} | {n} |" for t, n in counts.items()), f"| all | {len(dataset)} |"]
    else:
        made = (
            "The recipe of InstructPix2Pix (Brooks et al. 2023, §3.1), with the shapes world standing in for the "
            "fine-tuned GPT-3: each (input caption, instruction, edited caption) triplet of the shapes world's `edits` "
            f"configuration was turned into an image pair by prompt-to-prompt (Hertz et al. 2022) on the text-to-image "
            f"model `{args.text_to_image}` ({args.num_inference_steps} DDIM steps, guidance scale {args.guidance_scale}), "
            f"with up to {args.num_seeds} attempts per triplet, each with its own noise and strengths "
            f"cross_replace_steps ~ U{tuple(args.cross_replace_range)}, self_replace_steps ~ U{tuple(args.self_replace_range)} "
            "(a word swap of as many tokens uses `replace`, anything else `refine`; a removal refines the two-object "
            "caption into the one-object caption). The shapes oracle filtered the pairs: it had to read the input "
            "caption in the input image, the edited caption in the edited image, and every factor the instruction "
            "does not touch unchanged. The first passing attempt of a triplet is kept (at most one pair per triplet). "
            "The factor columns are the oracle's readings of the two images."
        )
        if stats["triplets_reached"] < args.num_samples:
            made += f" Generation stopped at `--max_seconds {args.max_seconds}`, after {stats['triplets_reached']} of the {args.num_samples} triplets drawn."
        table = [
            "| edit type | triplets | attempts | passing attempts | kept | kept fraction |",
            "|---|---|---|---|---|---|",
        ]
        for name, c in [*stats["per_edit_type"].items(), ("all", stats["total"])]:
            fraction = "–" if c["kept_fraction"] is None else f"{c['kept_fraction']:.1%}"
            table.append(f"| {name} | {c['triplets']} | {c['attempts']} | {c['passing_attempts']} | {c['kept']} | {fraction} |")
        rejected = ", ".join(f"{r}: {stats['total'][r]}" for r in REJECTIONS)
        table.append("")
        table.append(f"Rejected attempts by the first rule they fail: {rejected}. Generation took {stats['generation_seconds']:.0f} s ({stats['seconds_per_attempt']:.2f} s per attempt).")
    columns = [
        "| column | what it is |",
        "|---|---|",
        "| `input_image` | the image before the edit (RGB, PNG) |",
        "| `edit_prompt` | the instruction, e.g. \"make the circle blue\", \"move it to the right\", \"remove the red square\" |",
        "| `edited_image` | the image after the edit |",
        f"| `edit_type` | one of {', '.join(EDIT_TYPES)} (removal only in two-object scenes) |",
        "| `input_caption`, `edited_caption` | captions of the two scenes, e.g. \"a small red circle at the top left\" |",
        "| `num_shapes` | objects in the input scene (1 or 2) |",
        "| `input_{shape,color,size,x,y,angle}_{0,1}`, `edited_…` | factor indices of each object (slot 1 is -1 in a one-object scene), into `hf_genzoo.data.shapes`' `SHAPES`, `COLORS`, `SIZES`, the position grid and `ORIENTATIONS` |",
    ]
    return "\n".join(
        [
            header,
            "",
            f"# Shapes-world edits ({args.source})",
            "",
            f"{len(dataset)} (input image, instruction, edited image) triplets at {args.resolution}×{args.resolution} "
            f"with {' or '.join(map(str, args.num_shapes))} object(s) per input scene, in the column names of diffusers' "
            "`examples/instruct_pix2pix/train_instruct_pix2pix.py` (`--original_image_column input_image "
            "--edit_prompt_column edit_prompt --edited_image_column edited_image`, its defaults).",
            "",
            "## Columns",
            "",
            *columns,
            "",
            "## How it was made",
            "",
            made,
            "",
            *table,
            "",
            "## Command",
            "",
            "```bash",
            stats["command"],
            "```",
            "",
            "Load it with `datasets.load_from_disk(folder)` (a saved folder) or `datasets.load_dataset(repo_id)`.",
            "",
        ]
    )


def save_dataset(args, dataset: datasets.Dataset, stats: dict) -> None:
    """`save_to_disk` in `--output_dir`, then README.md and stats.json beside the Arrow files."""
    # an empty dataset gets one (empty) shard: with none, load_from_disk cannot read it back
    dataset.save_to_disk(args.output_dir, num_shards=1 if len(dataset) == 0 else None)
    with open(os.path.join(args.output_dir, "README.md"), "w") as f:
        f.write(dataset_card(args, dataset, stats))
    with open(os.path.join(args.output_dir, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2)


def push_dataset(args, dataset: datasets.Dataset) -> None:
    """Upload the dataset as one Parquet shard (`data/train-00000-of-00001.parquet`, the layout `load_dataset(repo_id)`
    reads, the images' bytes inside) and its card to the dataset repo `--hub_model_id`."""
    import tempfile

    from huggingface_hub import create_repo, upload_folder

    create_repo(args.hub_model_id, repo_type="dataset", private=args.private, exist_ok=True, token=args.hub_token)
    with tempfile.TemporaryDirectory() as staging:
        os.makedirs(os.path.join(staging, "data"))
        dataset.to_parquet(os.path.join(staging, "data", "train-00000-of-00001.parquet"))
        shutil.copy(os.path.join(args.output_dir, "README.md"), os.path.join(staging, "README.md"))
        upload_folder(
            repo_id=args.hub_model_id,
            repo_type="dataset",
            folder_path=staging,
            commit_message=f"shapes-world edits ({args.source}), {len(dataset)} rows",
            token=args.hub_token,
        )


def main(args: argparse.Namespace, argv: list[str] | None = None) -> datasets.Dataset:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    start = time.perf_counter()
    stats = {"source": args.source, "num_samples": args.num_samples, "num_shapes": args.num_shapes, "seed": args.seed, "command": command_line(argv)}
    if args.source == "exact":
        args.resolution = 32 if args.resolution is None else args.resolution
        dataset = exact_dataset(args)
    else:
        dataset = prompt_to_prompt_dataset(args, stats)
    stats["resolution"] = args.resolution
    stats["rows"] = len(dataset)
    edit_types = list(dataset["edit_type"])
    stats["rows_per_edit_type"] = {t: edit_types.count(t) for t in EDIT_TYPES}
    stats["seconds"] = round(time.perf_counter() - start, 1)
    save_dataset(args, dataset, stats)
    summary = {k: v for k, v in stats.items() if k in ("rows", "rows_per_edit_type", "seconds")}
    if args.source == "prompt_to_prompt":
        summary["kept_fraction"] = {t: c["kept_fraction"] for t, c in stats["per_edit_type"].items()} | {"all": stats["total"]["kept_fraction"]}
    logger.info(f"saved {args.output_dir}: {json.dumps(summary)}")
    if args.push_to_hub:
        push_dataset(args, dataset)
        logger.info(f"pushed to the dataset repo {args.hub_model_id}")
    return dataset


if __name__ == "__main__":
    try:
        main(parse_args())
    except ValueError as error:
        sys.exit(f"error: {error}")
