"""benchmarks/anomaly_detection.py: its AUROC on scores in nats, its corrupted shapes-world scenes (each one a scene the
oracle rejects, the clean ones all accepted), and a tiny run of the whole script on a stand-in MNIST parquet."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from hf_genzoo.data.shapes import PALETTE, ShapesOracle, render_scene, sample_scene
from scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("anomaly_detection", folder="benchmarks")


def test_auroc_orders_bounds_in_nats(bench):
    # −ELBO of hundreds of nats: torchmetrics would read them as logits, and sigmoid(300) = 1 for every image
    labels = torch.tensor([0, 0, 1, 0, 1, 1])
    scores = torch.tensor([301.0, 300.0, 320.0, 302.0, 303.0, 330.0])
    pairs = [(a, n) for a in scores[labels == 1] for n in scores[labels == 0]]
    expected = sum(float(a > n) for a, n in pairs) / len(pairs)  # the Mann-Whitney form of the AUROC
    assert bench.auroc(scores, labels) == pytest.approx(expected) and expected == 1.0
    assert bench.auroc(-scores, labels) == 0.0
    assert bench.auroc(torch.ones(6), labels) == 0.5  # ties count one half
    assert bench.auroc(torch.tensor([0.1, 0.4, 0.3, 0.2, 0.35, 0.9]), labels) == pytest.approx(7 / 9, abs=1e-4)  # 7 of the 9 (anomaly, normal) pairs in order


@pytest.mark.parametrize("kind", ["noise_blob", "touching_shapes", "off_palette"])
def test_corrupted_scenes_are_what_a_legal_scene_never_is(bench, kind):
    images = bench.corrupted_scenes(kind, 6, 32, seed=0)  # (6, 32, 32, 3) uint8
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    palette = np.array([(0, 0, 0), *PALETTE.values()])
    off_palette = ~(images[:, :, :, None, :] == palette).all(-1).any(-1)  # (6, 32, 32)
    if kind == "touching_shapes":
        assert not off_palette.any()  # palette colours only, two shapes without background between them
    else:
        assert off_palette.reshape(6, -1).any(1).all()
    oracle = ShapesOracle(32)
    as_tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert not any(r["valid"] for r in oracle.read_batch(as_tensor))
    rng = np.random.default_rng(0)
    clean = np.stack([render_scene(sample_scene(rng, 32, num_shapes=2), 32) for _ in range(6)])
    assert all(r["valid"] for r in oracle.read_batch(torch.from_numpy(clean).permute(0, 3, 1, 2).float() / 127.5 - 1))


def test_tiny_run(bench, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("test", 30)):  # a stand-in for ../shared/data/mnist, in its schema
        labels = [i % 10 for i in range(count)]
        images = []
        for _ in labels:
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(buffer, format="PNG")
            images.append({"bytes": buffer.getvalue(), "path": None})
        pq.write_table(pa.table({"image": images, "label": labels}), tmp_path / f"{split}.parquet")
    torch.set_num_threads(1)
    report = bench.main([
        "--mnist", str(tmp_path), "--digits", "3", "--max_train_steps", "2", "--train_batch_size", "4",
        "--block_out_channels", "8", "16", "--latent_channels", "4", "--shapes_train_samples", "8",
        "--shapes_test_samples", "4", "--iwae_samples", "2", "--output", str(tmp_path / "report.json"),
    ])
    columns = ["ae_reconstruction", "denoising_ae_reconstruction", "vae_elbo", "vae_iwae", "vae_reconstruction"]
    row = report["mnist"]["digits"]["3"]
    assert row["train_images"] == 36 and row["test_images"] == 30 and row["held_out_in_test"] == 3
    assert all(0 <= row[c] <= 1 for c in columns)
    assert set(report["shapes"]["auroc"]) == {"noise_blob", "touching_shapes", "off_palette", "all_corruptions"}
    assert all(set(table) == set(columns) for table in report["shapes"]["auroc"].values())
    assert (tmp_path / "report.json").is_file()
