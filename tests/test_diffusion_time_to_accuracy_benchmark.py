"""benchmarks/diffusion_time_to_accuracy.py and benchmarks/class_grid.py on a tiny class-conditional latent run: every
checkpoint's EMA weights are read, each point's time is its step times the run's seconds per step, the first point
at the target gives the time (plus the setup seconds), and a run that never reaches it gives a lower bound."""

from __future__ import annotations

import json

import pytest
import torch

from scripts import load_script

from hf_genzoo import VAEModel

pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    """A 4-step class-conditional latent run on 16×16 shapes with checkpoints at steps 2 and 4."""
    from accelerate.state import AcceleratorState, GradientState

    root = tmp_path_factory.mktemp("ldm-class")
    torch.manual_seed(0)
    VAEModel(block_out_channels=(8, 8, 16), norm_num_groups=4, latent_channels=4, sample_size=16).save_pretrained(root / "vae")
    train = load_script("train_latent_diffusion")
    argv = [
        "--vae", str(root / "vae"), "--output_dir", str(root / "run"), "--cache_dir", str(root / "cache"), "--resolution", "16",
        "--conditioning", "class", "--unet_preset", "tiny", "--block_out_channels", "16", "32", "--train_batch_size", "8",
        "--max_train_samples", "64", "--max_eval_samples", "16", "--max_train_steps", "4", "--checkpointing_steps", "2",
        "--validation_steps", "100", "--num_generated", "0", "--num_inference_steps", "2", "--num_likelihood_images", "0",
        "--num_train_timesteps", "50", "--lr_warmup_steps", "0", "--mixed_precision", "no",
    ]
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    train.main(train.parse_args(argv))
    return root / "run"


@pytest.fixture(scope="module")
def bench():
    return load_script("diffusion_time_to_accuracy", folder="benchmarks")


def test_every_checkpoint_is_timed_and_read(bench, class_run, tmp_path):
    run = json.loads((class_run / "metrics.json").read_text())
    per_step = run["train_seconds"] / run["train_steps"]
    common = [str(class_run), "--samples_per_class", "1", "--num_inference_steps", "2", "--full_curve"]
    unreachable = bench.main([*common, "--target", "1.01", "--setup_seconds", "5", "--output", str(tmp_path / "curve.json")])["runs"][0]
    assert [p["step"] for p in unreachable["curve"]] == [2, 4]
    assert [p["train_seconds"] for p in unreachable["curve"]] == [round(2 * per_step, 1), round(4 * per_step, 1)]
    assert all(0.0 <= p["oracle_attribute_accuracy"] <= p["oracle_validity"] + 1e-9 <= 1.0 + 1e-9 for p in unreachable["curve"])
    assert unreachable["seconds_to_target"] is None
    assert unreachable["seconds_to_target_at_least"] == round(round(4 * per_step, 1) + 5, 1)
    assert json.loads((tmp_path / "curve.json").read_text())["runs"][0]["curve"] == unreachable["curve"]
    reached = bench.main([str(class_run), "--samples_per_class", "1", "--num_inference_steps", "2", "--target", "0"])["runs"][0]
    assert reached["reached_at_step"] == 2 and len(reached["curve"]) == 1  # stops at the first checkpoint at the target
    assert reached["seconds_to_target"] == round(2 * per_step, 1)


def test_setup_seconds_must_match_the_folders(bench, class_run, capsys):
    with pytest.raises(SystemExit):
        bench.main([str(class_run), str(class_run), "--setup_seconds", "1"])
    assert "--setup_seconds has 1 values for 2 folders" in capsys.readouterr().err


def test_class_grid_has_one_labelled_row_per_class(class_run, tmp_path, monkeypatch):
    from PIL import Image

    grid = load_script("class_grid", folder="benchmarks")
    out = tmp_path / "grid.png"
    monkeypatch.setattr("sys.argv", ["class_grid.py", str(class_run), "--per_class", "2", "--num_inference_steps", "2", "--class_names", "shapes", "--output", str(out)])
    grid.main()
    image = Image.open(out)
    scale = 4  # 16×16 samples with a 1-pixel border, enlarged to at least 64 pixels a tile
    assert image.height == (21 * (16 + 1) + 1) * scale  # 21 (shape, colour) classes, one row each
    assert image.width > (2 * (16 + 1) + 1) * scale  # two columns and the row labels
