#!/usr/bin/env python
"""Instruction editors and a training-free baseline on the same held-out shapes edits, judged by the same oracle.

    python benchmarks/instruct_pix2pix_shapes.py --editors exact=shapes-ip2p-exact p2p=shapes-ip2p-p2p \
        --text_to_image shapes-ldm-text --num_edits 500 --output ip2p.json --grid_output guidance.png \
        --examples_output examples.png

The held-out edits: the first `--num_edits` rows of the shapes world's `edits` configuration (recolor, move, reshape,
resize, remove) in the test split that training_scripts/train_instruct_pix2pix.py draws for its own evaluation
(`load_triplets(args, "test", ...)` of that script: seed `--seed` + SHAPES_SPLIT_SEED_OFFSET, row i drawn from
(seed, i)). No editor trained on them: the script's training split is drawn from `--seed` itself, and
make_edit_dataset.py's triplets (both sources) from its own `--seed` likewise. With the training run's `--seed`,
`--num_inference_steps`, `--guidance_scale` and `--image_guidance_scale`, an editor trained by the script on
`--dataset_name shapes` scores here what its metrics.json says (same rows, same input latents, same z_T): the
evaluation is the script's own `generate_edits` and `hf_genzoo.metrics.editing.edit_metrics`, imported, not copied.
The folder's metrics.json is copied into the report beside the new numbers (`training_evaluation`) for that check.

Editors (`--editors NAME=FOLDER ...`): `InstructPix2PixPipeline` folders, whatever data they were trained on (exact
triplets or prompt-to-prompt-generated ones, make_edit_dataset.py): edited by instruction with the dual guidance
(s_T = `--guidance_scale`, s_I = `--image_guidance_scale`), DDIM from z_T drawn from `--seed` + 1, 125 edits per call.

Baseline (`--text_to_image FOLDER`, a text-conditioned LatentDiffusionPipeline): prompt-to-prompt on the real input
(Hertz et al. 2022), editing by caption, not by instruction: the input image inverted with its input caption
(`PromptToPromptPipeline.invert`, `--baseline_inversion` ddim or null_text, Mokady et al. 2023; null-text is about
ten times slower), then `pipe([input caption, edited caption], inversion=...)` with `edit_type` "replace" when the
captions have as many tokens and "refine" otherwise (make_edit_dataset.py's `controller_type`, the rule its
prompt-to-prompt triplets were made with), at the text-to-image model's guidance `--baseline_guidance_scale` (3.0, as
its samples and the generated triplets). One edit per call, the first `--num_baseline_edits` held-out edits; every
editor is also scored on that subset (`on_baseline_edits`) so the rows of the table compare like with like.

Reported (JSON `--output`, and a table on stdout): per method, overall and per edit type, the oracle's success,
preservation, validity and all_right (`edit_metrics`), `unchanged` (outputs read as the input scene), and the
seconds per edit, wall and CPU (process time, all threads: the fairer figure on a shared machine), after one untimed
warm-up call (editors: the batched calls over the edits; baseline: inversion and edit also apart).
Figures: `--grid_output`, the first editor's `guidance_grid` of held-out edit `--grid_edit` (rows s_I, columns s_T;
at `--grid_edit 0` and the training seed, the training script's samples.png); `--examples_output`, one row per edit
type (its first held-out edit among those the baseline also edited): input, exact edit, each editor, the baseline,
the instruction beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
INVERSION_METHODS = ("ddim", "null_text")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--editors", nargs="+", default=[], metavar="NAME=FOLDER", help="InstructPix2PixPipeline folders saved by train_instruct_pix2pix.py, each with the name its row gets")
    parser.add_argument("--text_to_image", default=None, help="a text-conditioned LatentDiffusionPipeline folder: the prompt-to-prompt baseline (none without it)")
    parser.add_argument("--num_edits", type=int, default=500, help="held-out edits (the first rows of the training script's test split)")
    parser.add_argument("--num_shapes", type=int, nargs="+", default=[1, 2], choices=(1, 2), help="objects per input scene, as the training run's --num_shapes")
    parser.add_argument("--seed", type=int, default=0, help="the training run's --seed: the test split is drawn from it, the editors' z_T from it + 1")
    parser.add_argument("--num_inference_steps", type=int, default=50, help="DDIM steps of every method (the baseline's inversion too)")
    parser.add_argument("--guidance_scale", type=float, default=7.5, help="s_T of the editors")
    parser.add_argument("--image_guidance_scale", type=float, default=1.5, help="s_I of the editors")
    parser.add_argument("--baseline_guidance_scale", type=float, default=3.0, help="classifier-free guidance of the baseline's inversion and edit")
    parser.add_argument("--baseline_inversion", default="ddim", choices=INVERSION_METHODS, help="DDIM inversion, or null-text inversion (about 10x slower)")
    parser.add_argument("--num_baseline_edits", type=int, default=None, help="the baseline edits the first N held-out edits (default: all --num_edits)")
    parser.add_argument("--num_inner_steps", type=int, default=10, help="null-text inversion: Adam steps per timestep")
    parser.add_argument("--cross_replace_steps", type=float, default=0.8, help="baseline: fraction of steps with the input's cross-attention maps")
    parser.add_argument("--self_replace_steps", type=float, default=0.4, help="baseline: fraction of steps with the input's self-attention maps")
    parser.add_argument("--grid_edit", type=int, default=0, help="the held-out edit of --grid_output")
    parser.add_argument("--output", default=None, help="the report (JSON)")
    parser.add_argument("--grid_output", default=None, help="the first editor's guidance grid (PNG)")
    parser.add_argument("--examples_output", default=None, help="one row per edit type: input, exact edit, each editor, the baseline (PNG)")
    args = parser.parse_args(argv)

    editors = {}
    for entry in args.editors:
        name, sep, folder = entry.partition("=")
        if not sep or not name or not folder:
            parser.error(f"--editors takes NAME=FOLDER, got {entry!r}")
        if name in editors:
            parser.error(f"--editors names {name!r} twice")
        editors[name] = folder
    args.editors = editors
    if not editors and args.text_to_image is None:
        parser.error("nothing to measure: give --editors NAME=FOLDER ... and/or --text_to_image FOLDER")
    if args.num_edits < 1:
        parser.error(f"--num_edits must be ≥ 1, got {args.num_edits}")
    if args.num_baseline_edits is None:
        args.num_baseline_edits = args.num_edits
    if not 1 <= args.num_baseline_edits <= args.num_edits:
        parser.error(f"--num_baseline_edits must lie in [1, --num_edits = {args.num_edits}], got {args.num_baseline_edits}")
    if not 0 <= args.grid_edit < args.num_edits:
        parser.error(f"--grid_edit must lie in [0, {args.num_edits}), got {args.grid_edit}")
    if args.grid_output and not editors:
        parser.error("--grid_output draws an editor's guidance grid: give --editors")
    return args


def load_script(name: str):
    """training_scripts/{name}.py as a module (its folder on sys.path, as when it runs: it imports script_args)."""
    import importlib.util

    folder = os.path.normpath(os.path.join(HERE, "..", "training_scripts"))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(folder, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def training_args(args, resolution: int) -> argparse.Namespace:
    """The training script's own arguments for this evaluation: its defaults (dataset 'shapes', column names) with
    the seed, shapes per scene, resolution, steps and scales given here."""
    script = load_script("train_instruct_pix2pix")
    return script.parse_args([
        "--pretrained_model_name_or_path", "unused", "--seed", str(args.seed), "--resolution", str(resolution),
        "--num_shapes", *map(str, args.num_shapes), "--max_eval_samples", str(args.num_edits), "--num_eval_edits", str(args.num_edits),
        "--num_inference_steps", str(args.num_inference_steps), "--guidance_scale", str(args.guidance_scale),
        "--image_guidance_scale", str(args.image_guidance_scale),
    ])


def held_out_edits(args, resolution: int):
    """(raw rows, the training script's arguments): the first --num_edits rows of the script's test split."""
    script_args = training_args(args, resolution)
    raw = load_script("train_instruct_pix2pix").load_triplets(script_args, script_args.eval_split, args.num_edits)
    return raw, script_args


def baseline_edit_type(pipe, input_caption: str, edited_caption: str) -> str:
    """"replace" for captions of as many tokens (a word swap), "refine" otherwise: make_edit_dataset.py's rule."""
    return load_script("make_edit_dataset").controller_type(pipe, input_caption, edited_caption)


def subset_rows(rows: dict, count: int) -> dict:
    return {name: values[:count] for name, values in rows.items()}


def main(argv=None) -> dict:
    args = parse_args(argv)

    import numpy as np
    import torch

    from hf_genzoo import InstructPix2PixPipeline
    from hf_genzoo.data.loading import SHAPES_SPLIT_SEED_OFFSET
    from hf_genzoo.data.shapes import EDIT_TYPES
    from hf_genzoo.metrics.editing import EDIT_METRICS, edit_metrics
    from hf_genzoo.models.instruct_pix2pix import image_conditioning_latents

    script = load_script("train_instruct_pix2pix")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # 1. the methods' sizes agree; the held-out edits at that size
    baseline = None
    if args.text_to_image is not None:
        baseline = load_script("make_edit_dataset").load_text_to_image(args.text_to_image, device)
    sizes = {}
    for name, folder in args.editors.items():
        with open(os.path.join(folder, "unet", "config.json")) as f:
            sample_size = json.load(f)["sample_size"]
        with open(os.path.join(folder, "vae", "config.json")) as f:
            factor = 2 ** (len(json.load(f)["block_out_channels"]) - 1)
        sizes[name] = sample_size * factor
    if baseline is not None:
        sizes["baseline"] = baseline.default_size()[0]
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the methods make images of different sizes: {sizes}")
    resolution = next(iter(sizes.values()))
    raw, script_args = held_out_edits(args, resolution)
    rows = raw.remove_columns(["input_image", "edited_image"])[:]  # column → list: instructions, captions, edit types, factors
    instructions = rows[script_args.edit_prompt_column]
    num_edits, num_baseline = len(raw), min(args.num_baseline_edits, len(raw))
    indices = list(range(num_edits))
    input_pixels = script.decode_images(raw, "input_image", indices, resolution)  # (N, 3, R, R) in [-1, 1]
    target_pixels = script.decode_images(raw, "edited_image", indices, resolution)
    print(f"{num_edits} held-out edits ({resolution}×{resolution}, test split of seed {args.seed}): "
          + ", ".join(f"{t} {rows['edit_type'].count(t)}" for t in EDIT_TYPES), flush=True)

    report = {
        "held_out": {
            "source": "shapes world, config 'edits', the test split of train_instruct_pix2pix.py",
            "seed": args.seed, "split_seed": args.seed + SHAPES_SPLIT_SEED_OFFSET, "num_shapes": args.num_shapes,
            "resolution": resolution, "edits": num_edits, "baseline_edits": num_baseline,
            "per_edit_type": {t: rows["edit_type"].count(t) for t in EDIT_TYPES},
        },
        "editor_settings": {"num_inference_steps": args.num_inference_steps, "guidance_scale": args.guidance_scale,
                            "image_guidance_scale": args.image_guidance_scale, "z_T_seed": args.seed + 1, "batch": 125},
        "device": str(device), "torch_threads": torch.get_num_threads(), "methods": {},
    }
    outputs = {}  # method name → (n, 3, R, R) in [-1, 1]

    # 2. the editors: the training script's generate_edits on E(c_I) of the input images, judged by edit_metrics
    for k, (name, folder) in enumerate(args.editors.items()):
        pipe = InstructPix2PixPipeline.from_pretrained(folder).to(device)
        pipe.set_progress_bar_config(disable=True)
        start = time.perf_counter()
        with torch.no_grad():
            image_latents = torch.cat([
                image_conditioning_latents(pipe.vae, input_pixels[i : i + 256].to(device, pipe.vae.dtype)).float().cpu()
                for i in range(0, num_edits, 256)
            ])  # (N, C, h, w): the posterior mode, unscaled, as the script's latent cache holds it
        encode_seconds = time.perf_counter() - start
        pipe(instructions[0], image_latents[:1].to(device), num_inference_steps=1, output_type="pt")  # warm-up, not timed
        start, cpu_start = time.perf_counter(), time.process_time()
        outputs[name] = script.generate_edits(pipe, instructions, image_latents, script_args, args.seed + 1)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        entry = {
            "kind": "instruct_pix2pix", "folder": folder, "metrics": edit_metrics(outputs[name], rows, resolution),
            "seconds_per_edit": seconds / num_edits, "cpu_seconds_per_edit": cpu_seconds / num_edits,
            "encode_seconds_per_edit": encode_seconds / num_edits,
        }
        if num_baseline < num_edits and baseline is not None:
            entry["on_baseline_edits"] = edit_metrics(outputs[name][:num_baseline], subset_rows(rows, num_baseline), resolution)
        metrics_path = os.path.join(folder, "metrics.json")
        if os.path.isfile(metrics_path):
            with open(metrics_path) as f:
                own = json.load(f)
            entry["training_evaluation"] = {key: own[key] for key in (*EDIT_METRICS, "edits", "num_inference_steps", "guidance_scale", "image_guidance_scale", "train_steps") if key in own}
        report["methods"][name] = entry
        print(f"{name}: all_right {entry['metrics']['all_right']:.3f} in {seconds:.1f} s ({entry['seconds_per_edit']:.3f} s per edit)", flush=True)
        if k == 0 and args.grid_output:
            grid = pipe.guidance_grid(
                instructions[args.grid_edit], raw[args.grid_edit]["input_image"], num_inference_steps=args.num_inference_steps,
                generator=torch.Generator().manual_seed(args.seed),
            )
            grid.save(args.grid_output)
            report["guidance_grid"] = {"editor": name, "edit": args.grid_edit, "instruction": instructions[args.grid_edit], "path": args.grid_output}
        del pipe

    # 3. the baseline: invert the input with its caption, prompt-to-prompt to the edited caption
    if baseline is not None:
        baseline.set_progress_bar_config(disable=True)
        name = f"prompt-to-prompt ({args.baseline_inversion} inversion)"
        edited, psnrs, edit_types = [], [], []
        inversion_seconds = edit_seconds = cpu_seconds = 0.0
        warm_up = baseline.invert(raw[0]["input_image"], rows["input_caption"][0], num_inference_steps=2, guidance_scale=args.baseline_guidance_scale)
        baseline([rows["input_caption"][0], rows["input_caption"][0]], inversion=warm_up, guidance_scale=args.baseline_guidance_scale)  # not timed
        for i in range(num_baseline):
            cpu_start = time.process_time()
            source, target = rows["input_caption"][i], rows["edited_caption"][i]
            start = time.perf_counter()
            inversion = baseline.invert(
                raw[i]["input_image"], source, method=args.baseline_inversion, num_inference_steps=args.num_inference_steps,
                guidance_scale=args.baseline_guidance_scale, num_inner_steps=args.num_inner_steps,
            )
            inversion_seconds += time.perf_counter() - start
            start = time.perf_counter()
            edit_types.append(baseline_edit_type(baseline, source, target))
            pair = baseline(
                [source, target], edit_type=edit_types[-1], inversion=inversion, cross_replace_steps=args.cross_replace_steps,
                self_replace_steps=args.self_replace_steps, guidance_scale=args.baseline_guidance_scale, output_type="pt",
            ).images  # (2, 3, R, R) in [0, 1]: the reconstruction and the edit
            edit_seconds += time.perf_counter() - start
            cpu_seconds += time.process_time() - cpu_start
            edited.append(pair[1].float().cpu() * 2 - 1)
            psnrs.append(inversion.psnr)
            if (i + 1) % 25 == 0 or i + 1 == num_baseline:
                print(f"{name}: {i + 1}/{num_baseline} edits, {inversion_seconds + edit_seconds:.0f} s", flush=True)
        outputs[name] = torch.stack(edited)
        report["methods"][name] = {
            "kind": "prompt_to_prompt", "folder": args.text_to_image,
            "metrics": edit_metrics(outputs[name], subset_rows(rows, num_baseline), resolution),
            "seconds_per_edit": (inversion_seconds + edit_seconds) / num_baseline, "cpu_seconds_per_edit": cpu_seconds / num_baseline,
            "inversion_seconds_per_edit": inversion_seconds / num_baseline, "edit_seconds_per_edit": edit_seconds / num_baseline,
            "reconstruction_psnr": float(np.mean([p for p in psnrs if np.isfinite(p)])) if any(np.isfinite(psnrs)) else None,
            "controllers": {kind: edit_types.count(kind) for kind in ("replace", "refine")},
            "settings": {"inversion": args.baseline_inversion, "guidance_scale": args.baseline_guidance_scale,
                         "cross_replace_steps": args.cross_replace_steps, "self_replace_steps": args.self_replace_steps,
                         "num_inner_steps": args.num_inner_steps if args.baseline_inversion == "null_text" else None},
        }

    # 4. the table, the figure of examples, the report
    report["table"] = table(report, EDIT_TYPES)
    print(report["table"])
    if args.examples_output:
        examples_figure(outputs, input_pixels, target_pixels, rows, instructions, num_baseline if baseline is not None else num_edits, EDIT_TYPES).save(args.examples_output)
        report["examples"] = args.examples_output
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
    return report


def table(report: dict, edit_types) -> str:
    """A Markdown table: one row per method (and per editor on the baseline's subset when it is smaller)."""
    header = ["method", "edits", "success", "preservation", "validity", "all right", *(f"{t} all right" for t in edit_types), "s / edit", "CPU s / edit"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(label, metrics, seconds, cpu_seconds):
        cells = [label, str(metrics["edits"]), *(f"{metrics[m]:.3f}" for m in ("success", "preservation", "validity", "all_right"))]
        cells += [f"{metrics[f'{t}_all_right']:.3f}" if f"{t}_all_right" in metrics else "–" for t in edit_types]
        lines.append("| " + " | ".join(cells + [f"{seconds:.3g}", f"{cpu_seconds:.3g}"]) + " |")

    for name, entry in report["methods"].items():
        row(name, entry["metrics"], entry["seconds_per_edit"], entry["cpu_seconds_per_edit"])
        if "on_baseline_edits" in entry:
            row(f"{name} (baseline's edits)", entry["on_baseline_edits"], entry["seconds_per_edit"], entry["cpu_seconds_per_edit"])
    return "\n".join(lines)


def examples_figure(outputs: dict, input_pixels, target_pixels, rows: dict, instructions, count: int, edit_types):
    """One row per edit type, its first edit among the first `count`: input | exact edit | each method's output;
    the instruction on the left, the column names above."""
    import PIL.Image
    import PIL.ImageDraw
    import PIL.ImageFont
    import torch

    from hf_genzoo.utils import enlarged_grid

    chosen = [next((i for i in range(count) if rows["edit_type"][i] == t), None) for t in edit_types]
    chosen = [i for i in chosen if i is not None]
    columns = ["input", "exact edit", *outputs]
    tiles = torch.stack([torch.stack([input_pixels[i], target_pixels[i], *(out[i] for out in outputs.values())]) for i in chosen])
    grid = enlarged_grid(tiles.flatten(0, 1), nrow=len(columns), row_labels=[f"{rows['edit_type'][i]}: {instructions[i]}" for i in chosen])
    # the column names above their tiles; image_grid lays tiles of side H·scale with one padding pixel (·scale) around,
    # right of the label column
    side = input_pixels.shape[-1]
    scale = grid.height // (len(chosen) * (side + 1) + 1)
    cell = (side + 1) * scale
    left = grid.width - (len(columns) * (side + 1) + 1) * scale + scale  # the first tile's left edge
    try:
        font = PIL.ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = PIL.ImageFont.load_default()
    measure = PIL.ImageDraw.Draw(PIL.Image.new("L", (1, 1)))

    def wrapped(text: str) -> str:  # words on as many lines as the tile's width needs
        lines = [""]
        for word in text.split():
            candidate = f"{lines[-1]} {word}".strip()
            if lines[-1] and measure.textbbox((0, 0), candidate, font=font)[2] > cell - 4:
                lines.append(word)
            else:
                lines[-1] = candidate
        return "\n".join(lines)

    names = [wrapped(name) for name in columns]
    header = 8 + max(measure.multiline_textbbox((0, 0), name, font=font)[3] for name in names)
    figure = PIL.Image.new("RGB", (grid.width, grid.height + header), "white")
    figure.paste(grid, (0, header))
    draw = PIL.ImageDraw.Draw(figure)
    for j, name in enumerate(names):
        draw.multiline_text((left + j * cell + side * scale // 2, 4), name, fill="black", font=font, anchor="ma", align="center")
    return figure


if __name__ == "__main__":
    main()
