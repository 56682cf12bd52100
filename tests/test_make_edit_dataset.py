"""make_edit_dataset.py: the exact source is the shapes world's edits under diffusers' instruct_pix2pix column names
(images equal to the renders of their factors, removal rows right), the prompt-to-prompt source end to end on a tiny
random text-to-image folder (counts add up, the saved dataset has the same columns), the oracle filter on hand-made
scenes, save_to_disk and Hub round trips, and the bad-input errors."""

import json
import re

import datasets
import numpy as np
import pytest
import torch

from hf_genzoo import PromptToPromptPipeline
from hf_genzoo.data.shapes import EDIT_TYPES, SHAPES, ShapesOracle, make_shapes_dataset, render_scene, scene_caption
from scripts import load_script
from tiny_components import tiny_scheduler, tiny_text_encoder, tiny_tokenizer, tiny_unet, tiny_vae

script = load_script("make_edit_dataset")
pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")

COLUMNS = ["input_image", "edit_prompt", "edited_image", "edit_type", "input_caption", "edited_caption", "num_shapes"]
FACTOR_COLUMNS = [f"{p}{f}_{s}" for p in ("input_", "edited_") for s in range(2) for f in ("shape", "color", "size", "x", "y", "angle")]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(argv):
    return script.main(script.parse_args(argv), argv)


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exact") / "edits"
    argv = ["--source", "exact", "--num_samples", "60", "--seed", "3", "--output_dir", str(folder)]
    return make(argv), folder


def objects(row, prefix):
    return script.row_objects(row, prefix)


def test_exact_source_columns_renders_and_round_trip(exact):
    dataset, folder = exact
    assert dataset.column_names == COLUMNS + FACTOR_COLUMNS
    assert isinstance(dataset.features["input_image"], datasets.Image) and dataset.features["edit_prompt"].dtype == "string"
    assert dataset.features["input_shape_0"].dtype == "int64"
    # the same triplets as the shapes world's edits configuration, its instruction as edit_prompt
    edits = make_shapes_dataset(60, 32, num_shapes=(1, 2), seed=3, config="edits")
    assert list(dataset["edit_prompt"]) == list(edits["instruction"])
    assert set(dataset["edit_type"]) == set(EDIT_TYPES)
    for row in dataset:
        assert row["input_image"].mode == "RGB"
        assert np.array_equal(np.array(row["input_image"]), render_scene(objects(row, "input_"), 32))
        assert np.array_equal(np.array(row["edited_image"]), render_scene(objects(row, "edited_"), 32))
        assert row["edited_caption"] == scene_caption(objects(row, "edited_"), 32)
    # save_to_disk round trip, with the card and the stats beside it
    loaded = datasets.load_from_disk(str(folder))
    assert loaded.features == dataset.features and loaded.to_dict() == dataset.to_dict()
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["rows"] == 60 and sum(stats["rows_per_edit_type"].values()) == 60
    card = (folder / "README.md").read_text()
    assert "task_categories:\n- image-to-image" in card and "`edit_prompt`" in card
    assert f"| remove | {stats['rows_per_edit_type']['remove']} |" in card and "--num_samples 60" in card


def test_exact_removal_rows(exact):
    dataset, _ = exact
    removals = dataset.filter(lambda row: row["edit_type"] == "remove")
    assert len(removals) >= 2
    oracle = ShapesOracle(32)
    for row in removals:
        before, after = oracle.read(row["input_image"]), oracle.read(row["edited_image"])
        assert before["valid"] and after["valid"] and row["num_shapes"] == 2
        assert len(after["objects"]) == len(before["objects"]) - 1 == 1  # one object less
        assert after["objects"][0] in before["objects"]  # the other one unchanged
        gone = [obj for obj in before["objects"] if obj != after["objects"][0]][0]
        assert row["edit_prompt"].startswith("remove the") and row["edit_prompt"].endswith(SHAPES[gone["shape"]])


# ---- the filter on hand-made scenes ----------------------------------------------------------------------------

RED_CIRCLE = dict(shape=0, color=0, size=1, x=1, y=1, angle=0)
BLUE_TRIANGLE = dict(shape=2, color=2, size=0, x=7, y=7, angle=1)


ORACLE = ShapesOracle(32)


def read(scene):
    return ORACLE.read(render_scene(scene, 32))


def judge(before, after, edit_type):
    """The filter on the renders of two scenes, with the captions of the scenes given."""
    return script.judge_pair(read(before), read(after), scene_caption(before), scene_caption(after), edit_type, 32)


def test_filter_keeps_right_edits_and_names_the_first_failing_rule():
    blue_circle = {**RED_CIRCLE, "color": 2}
    two = [RED_CIRCLE, BLUE_TRIANGLE]
    assert judge([RED_CIRCLE], [blue_circle], "recolor") is None
    assert judge(two, [blue_circle, BLUE_TRIANGLE], "recolor") is None
    assert judge(two, [BLUE_TRIANGLE], "remove") is None
    assert judge(two, [{**BLUE_TRIANGLE, "shape": 1, "angle": 0}, RED_CIRCLE], "reshape") is None
    # the captions the model was asked for are not what it drew
    reading = read([blue_circle])
    assert script.judge_pair(read([RED_CIRCLE]), reading, "a medium red square at the top left", scene_caption([blue_circle]), "recolor", 32) == "input_caption"
    assert script.judge_pair(read([RED_CIRCLE]), reading, scene_caption([RED_CIRCLE]), "a medium green circle at the top left", "recolor", 32) == "edited_caption"
    # the other object moved within its caption cell (same caption, not preserved); a triangle turned by a recolor
    assert judge(two, [blue_circle, {**BLUE_TRIANGLE, "x": 8}], "recolor") == "not_preserved"
    assert judge([BLUE_TRIANGLE], [{**BLUE_TRIANGLE, "color": 0, "angle": 2}], "recolor") == "not_preserved"
    assert judge(two, [{**BLUE_TRIANGLE, "y": 8}], "remove") == "not_preserved"
    # a resize keeps the centre; a move keeps everything but the position
    assert judge([RED_CIRCLE], [{**RED_CIRCLE, "size": 2, "x": 2}], "resize") == "not_preserved"
    assert judge([RED_CIRCLE], [{**RED_CIRCLE, "x": 4}], "move") is None
    # an invalid image (noise) fails first
    noise = ORACLE.read(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert script.judge_pair(noise, read([RED_CIRCLE]), "x", scene_caption([RED_CIRCLE]), "recolor", 32) == "input_invalid"
    assert script.judge_pair(read([RED_CIRCLE]), noise, scene_caption([RED_CIRCLE]), "x", "recolor", 32) == "edited_invalid"
    with pytest.raises(ValueError, match="edit_type 'swap' is not one of"):
        script.judge_pair(reading, reading, "", "", "swap", 32)


# ---- prompt-to-prompt on a tiny random text-to-image folder -----------------------------------------------------


@pytest.fixture(scope="module")
def text_to_image(tmp_path_factory):
    """A saved 16×16 text-to-image folder at toy size, its tokenizer long enough for two-object captions."""
    tokenizer = tiny_tokenizer(model_max_length=24)
    pipe = PromptToPromptPipeline(
        vae=tiny_vae(1), unet=tiny_unet(0), scheduler=tiny_scheduler(), text_encoder=tiny_text_encoder(tokenizer, 2), tokenizer=tokenizer
    )
    folder = tmp_path_factory.mktemp("t2i") / "tiny"
    pipe.save_pretrained(folder)
    return folder


def test_prompt_to_prompt_source_end_to_end(text_to_image, tmp_path):
    out = tmp_path / "p2p"
    argv = ["--source", "prompt_to_prompt", "--text_to_image", str(text_to_image), "--num_samples", "4", "--num_seeds", "2",
            "--num_inference_steps", "2", "--seed", "1", "--output_dir", str(out)]
    dataset = make(argv)
    stats = json.loads((out / "stats.json").read_text())
    total, per_type = stats["total"], stats["per_edit_type"]
    # counts add up: every triplet drawn, each tried until one passes, every failed attempt has one reason
    assert total["triplets"] == 4 and stats["resolution"] == 16
    assert sum(c["triplets"] for c in per_type.values()) == 4
    for counts in (*per_type.values(), total):
        assert counts["kept"] == counts["passing_attempts"] <= counts["triplets"]
        assert counts["attempts"] == counts["passing_attempts"] + sum(counts[r] for r in script.REJECTIONS)
        assert counts["triplets"] <= counts["attempts"] <= 2 * counts["triplets"]
    assert len(dataset) == total["kept"] == len(stats["kept_attempts"])
    loaded = datasets.load_from_disk(str(out))
    assert loaded.column_names == COLUMNS + FACTOR_COLUMNS and loaded.features == script.edit_features()
    card = (out / "README.md").read_text()
    assert "prompt-to-prompt" in card and f"| all | 4 | {total['attempts']} |" in card
    # the triplets are the exact source's; a word swap is replaced token for token, a removal refined
    pipe = script.load_text_to_image(str(text_to_image), "cpu")
    assert script.controller_type(pipe, "a small red circle at the top", "a small blue circle at the top") == "replace"
    assert script.controller_type(pipe, "a small red circle at the top and a large blue square at the left", "a large blue square at the left") == "refine"


def test_prompt_to_prompt_attempts_are_seeded(text_to_image):
    args = script.parse_args(["--source", "prompt_to_prompt", "--text_to_image", str(text_to_image), "--cross_replace_range", "0.2", "0.4"])
    plans = [script.attempt_plan(args, i, k) for i in range(3) for k in range(2)]
    assert plans == [script.attempt_plan(args, i, k) for i in range(3) for k in range(2)]
    assert len({p[0] for p in plans}) == 6  # each attempt its own noise
    assert all(0.2 <= cross <= 0.4 and 0.1 <= self_ <= 0.9 for _, cross, self_ in plans)


# ---- Hub --------------------------------------------------------------------------------------------------------


def test_push_to_hub_uploads_the_dataset_and_its_card(hub, hub_cache, tmp_path):
    from huggingface_hub import hf_hub_download

    argv = ["--num_samples", "8", "--resolution", "16", "--output_dir", str(tmp_path / "d"), "--push_to_hub", "--hub_model_id", "user/shapes-edits"]
    dataset = make(argv)
    files = hub.list_files("user/shapes-edits", repo_type="dataset")
    shards = [f for f in files if f.endswith(".parquet")]
    assert "README.md" in files and len(shards) == 1
    card = hub.read_file("user/shapes-edits", "README.md", repo_type="dataset").decode()
    assert card == (tmp_path / "d" / "README.md").read_text() and "path: data/train-*" in card
    pulled = datasets.Dataset.from_parquet(hf_hub_download("user/shapes-edits", shards[0], repo_type="dataset"))
    assert pulled.column_names == dataset.column_names and list(pulled["edit_prompt"]) == list(dataset["edit_prompt"])
    assert np.array_equal(np.array(pulled[0]["edited_image"]), np.array(dataset[0]["edited_image"]))


# ---- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--source", "gpt3"], "--source 'gpt3' is not one of \\['exact', 'prompt_to_prompt'\\]"),
        (["--source", "prompt_to_prompt"], "--source prompt_to_prompt needs --text_to_image"),
        (["--text_to_image", "some/folder"], "--text_to_image 'some/folder' is only read by --source prompt_to_prompt"),
        (["--push_to_hub"], "--push_to_hub needs --hub_model_id"),
        (["--num_seeds", "0"], "--num_seeds must be ≥ 1, got 0"),
        (["--cross_replace_range", "0.9", "0.1"], "--cross_replace_range must be two fractions .* got 0.9 0.1"),
    ],
)
def test_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(argv)
    assert re.search(message, capsys.readouterr().err)


def test_bad_text_to_image_folders(text_to_image, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"--text_to_image '{empty}' is not a text-to-image pipeline folder: it has no model_index.json"):
        script.load_text_to_image(str(empty), "cpu")
    with pytest.raises(ValueError, match=f"--text_to_image '{tmp_path / 'nowhere'}' is not a folder"):
        script.load_text_to_image(str(tmp_path / "nowhere"), "cpu")
    unconditional = tmp_path / "unconditional"
    unconditional.mkdir()
    (unconditional / "model_index.json").write_text(json.dumps({"_class_name": "LatentDiffusionPipeline", "unet": ["diffusers", "UNet2DModel"], "vae": ["hf_genzoo.models.vae", "VAEModel"], "scheduler": ["diffusers", "DDIMScheduler"]}))
    with pytest.raises(ValueError, match=r"is not a text-to-image pipeline: it lacks \['text_encoder', 'tokenizer'\]"):
        script.load_text_to_image(str(unconditional), "cpu")
    args = script.parse_args(["--source", "prompt_to_prompt", "--text_to_image", str(text_to_image), "--resolution", "32", "--output_dir", str(tmp_path / "x")])
    with pytest.raises(ValueError, match=f"--resolution 32 differs from the 16×16 images of --text_to_image '{text_to_image}'"):
        script.main(args, [])
