"""benchmarks/instruct_pix2pix_shapes.py: its held-out edits are the training script's test split (so its numbers
are the script's own evaluation for a model trained on the shapes world), its flags, and its figure of examples."""

from __future__ import annotations

import pytest
import torch

from scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("instruct_pix2pix_shapes", folder="benchmarks")


def test_held_out_edits_are_the_training_scripts_test_split(bench):
    train_script = load_script("train_instruct_pix2pix")
    args = bench.parse_args(["--editors", "exact=unused", "--num_edits", "6", "--seed", "3"])
    raw, script_args = bench.held_out_edits(args, 32)
    script_args_of_run = train_script.parse_args(
        ["--pretrained_model_name_or_path", "unused", "--resolution", "32", "--seed", "3", "--max_train_samples", "6", "--max_eval_samples", "8"]
    )
    train, held_out = train_script.train_and_held_out(script_args_of_run)
    assert len(raw) == 6 and len(held_out) == 8
    columns = [c for c in raw.column_names if not c.endswith("_image")]
    assert raw.select_columns(columns)[:] == held_out.select(range(6)).select_columns(columns)[:]
    assert [a.tobytes() for a in raw["input_image"]] == [b.tobytes() for b in held_out.select(range(6))["input_image"]]
    # drawn from another seed than the training rows
    assert raw[script_args.edit_prompt_column] != train[script_args.edit_prompt_column] or raw["input_x_0"] != train["input_x_0"]


def test_flags(bench):
    args = bench.parse_args(["--editors", "exact=a", "p2p=b", "--text_to_image", "c", "--num_edits", "10"])
    assert args.editors == {"exact": "a", "p2p": "b"} and args.num_baseline_edits == 10
    for argv in (
        [],  # nothing to measure
        ["--editors", "exact"],  # no folder
        ["--editors", "x=a", "x=b"],  # a name twice
        ["--text_to_image", "c", "--num_edits", "4", "--num_baseline_edits", "5"],
        ["--text_to_image", "c", "--grid_output", "g.png"],  # a guidance grid needs an editor
    ):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)


def test_examples_figure_has_a_row_per_edit_type_and_a_column_per_method(bench):
    edit_types = ("recolor", "move", "reshape", "resize", "remove")
    rows = {"edit_type": ["move", "move", "recolor", "remove"]}
    pixels = torch.zeros(4, 3, 32, 32)
    outputs = {"exact": torch.ones(4, 3, 32, 32), "prompt-to-prompt (ddim inversion)": -torch.ones(4, 3, 32, 32)}
    figure = bench.examples_figure(outputs, pixels, pixels, rows, ["a", "b", "c", "d"], 4, edit_types)
    # three rows (move, recolor, remove: the types present) of 4 columns of 128-pixel tiles (32 × 4) with padding
    scale = 4
    assert figure.height > 3 * (32 + 1) * scale and figure.height < 3 * (32 + 1) * scale + 80
    assert figure.width > 4 * (32 + 1) * scale
    # the last column's tiles are the baseline's (black), the one before the editor's (white)
    image = figure.convert("RGB")
    right = figure.width - scale - 1
    assert image.getpixel((right - 10, figure.height - scale - 10)) == (0, 0, 0)
    assert image.getpixel((right - (32 + 1) * scale - 10, figure.height - scale - 10)) == (255, 255, 255)
