#!/usr/bin/env python
"""Anomaly detection with the autoencoder family (`AutoencoderPipeline.anomaly_score`), AUROC by torchmetrics.

- MNIST one-class-out: for each held-out digit d, train on the other nine, score the test set, and take the AUROC
  of "digit d" (positives) against the rest; for an autoencoder and a denoising autoencoder (reconstruction error)
  and a VAE (−ELBO, −IWAE bound, and its reconstruction error).
- The shapes world: train on legal scenes (one or two shapes), score held-out legal scenes against corrupted ones:
  a blob of noise pasted in, two shapes that overlap or touch (never in the training data), a shape in a colour
  off the palette. AUROC of each corruption against the clean scenes.

Every model is trained here, from scratch and in fp32, for `--max_train_steps` Adam steps on random batches (a short
run: the defaults, widths 8-16-32 at batch 32 for 800 steps, are what the README's table reports). Scores are
per-image and the AUROC depends on their order only.

    python benchmarks/anomaly_detection.py --mnist ../shared/data/mnist --output anomaly-detection.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time

MODEL_KINDS = ("ae", "denoising_ae", "vae")
# (model kind, anomaly_score method) → the table's column
SCORES = {
    "ae": [("reconstruction", "ae_reconstruction")],
    "denoising_ae": [("reconstruction", "denoising_ae_reconstruction")],
    "vae": [("elbo", "vae_elbo"), ("iwae", "vae_iwae"), ("reconstruction", "vae_reconstruction")],
}
OFF_PALETTE = ((255, 128, 0), (128, 128, 128), (128, 0, 255), (0, 128, 64))  # orange, grey, violet, dark green


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist", default=os.environ.get("SHARED_DATA", "../shared/data") + "/mnist", help="folder with train.parquet and test.parquet")
    parser.add_argument("--digits", type=int, nargs="*", default=list(range(10)), help="held-out digits to run (none: skip MNIST)")
    parser.add_argument("--shapes", action=argparse.BooleanOptionalAction, default=True, help="also the shapes-world case")
    parser.add_argument("--max_train_steps", type=int, default=800, help="optimiser steps per model")
    parser.add_argument("--train_batch_size", type=int, default=32, help="images per step")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="Adam's learning rate, constant")
    parser.add_argument("--block_out_channels", type=int, nargs="+", default=[8, 16, 32], help="widths of every model's encoder and decoder levels")
    parser.add_argument("--latent_channels", type=int, default=16, help="size of the latent vector")
    parser.add_argument("--max_train_samples", type=int, default=20000, help="MNIST training images read (then the held-out digit is removed)")
    parser.add_argument("--max_test_samples", type=int, default=2000, help="MNIST test images scored (the first ones of the split)")
    parser.add_argument("--shapes_train_samples", type=int, default=10000, help="legal shapes-world scenes to train on")
    parser.add_argument("--shapes_test_samples", type=int, default=600, help="clean held-out scenes, and as many of each corruption")
    parser.add_argument("--iwae_samples", type=int, default=16, help="k of the IWAE score")
    parser.add_argument("--seed", type=int, default=0, help="seeds the models, the batches, the posterior draws and the scenes")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    for name in ("max_train_steps", "train_batch_size", "latent_channels", "max_train_samples", "max_test_samples", "iwae_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    bad = [d for d in args.digits if not 0 <= d <= 9]
    if bad:
        parser.error(f"--digits takes digits 0-9, got {bad}")
    return args


def load_mnist(folder: str, split: str, max_samples: int):
    """The first `max_samples` images of a split of ../shared/data/mnist: (N, 1, 28, 28) in [-1, 1], labels (N,).
    Decoded with PIL directly (much quicker than a `datasets` map on a busy 2-core machine)."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    path = os.path.join(folder, f"{split}.parquet")
    if not os.path.isfile(path):
        raise ValueError(f"--mnist {folder!r} has no {split}.parquet (see ../shared/data/README.md)")
    table = pq.read_table(path).slice(0, max_samples).to_pydict()
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(image["bytes"])).convert("L")) for image in table["image"]])
    images = torch.from_numpy(pixels).float().div(127.5).sub(1)[:, None]  # (N, 1, 28, 28)
    return images, torch.tensor(table["label"])


def build_model(kind: str, in_channels: int, sample_size: int, args):
    import torch

    from hf_genzoo import AutoencoderModel, VAEModel

    torch.manual_seed(args.seed)
    common = dict(
        in_channels=in_channels, out_channels=in_channels, sample_size=sample_size,
        block_out_channels=tuple(args.block_out_channels), latent_channels=args.latent_channels, latent_type="vector",
    )
    if kind == "vae":
        return VAEModel(**common, likelihood="bernoulli")  # MNIST and the shapes world are (nearly) binary-valued
    corruption = {"ae": "none", "denoising_ae": "gaussian"}[kind]
    return AutoencoderModel(**common, corruption=corruption, noise_std=0.2)


def train(model, images, args) -> float:
    """`--max_train_steps` Adam steps on random batches of `images`; returns the seconds it took."""
    import torch

    generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    model.train()
    start = time.perf_counter()
    for _ in range(args.max_train_steps):
        batch = images[torch.randint(len(images), (args.train_batch_size,), generator=generator)]
        loss = model(batch, return_loss=True, generator=generator).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return time.perf_counter() - start


def score_all(kind: str, model, images, args) -> dict:
    """{column: scores (N,)} for the model's anomaly scores."""
    import torch

    from hf_genzoo import AutoencoderPipeline

    pipe = AutoencoderPipeline(model=model)
    images = (images + 1) / 2  # the pipelines take images in [0, 1], diffusers' convention
    scores = {}
    for method, column in SCORES[kind]:
        options = {} if method == "reconstruction" else {"generator": torch.Generator().manual_seed(args.seed)}
        if method == "iwae":
            options["num_samples"] = args.iwae_samples
        scores[column] = pipe.anomaly_score(images, method=method, **options)
    return scores


def auroc(scores, is_anomaly) -> float:
    """AUROC of `scores` (higher = more anomalous) against the labels `is_anomaly`, by torchmetrics.

    torchmetrics reads predictions outside [0, 1] as logits and applies a sigmoid, which turns bounds of hundreds of
    nats into 1.0 for every image (an AUROC of 0.5); the AUROC depends on the order of the scores only, so it is
    given their ranks scaled into (0, 1] instead (tied scores share their mean rank)."""
    import torch
    from scipy.stats import rankdata
    from torchmetrics.functional.classification import binary_auroc

    ranks = torch.from_numpy(rankdata(scores.double().numpy()) / len(scores))  # (N,) in (0, 1]
    return round(float(binary_auroc(ranks, is_anomaly.long())), 4)


def run_mnist(args) -> dict:
    train_images, train_labels = load_mnist(args.mnist, "train", args.max_train_samples)
    test_images, test_labels = load_mnist(args.mnist, "test", args.max_test_samples)
    rows = {}
    for digit in args.digits:
        start = time.perf_counter()
        normal = train_images[train_labels != digit]
        row = {"train_images": len(normal), "test_images": len(test_images), "held_out_in_test": int((test_labels == digit).sum())}
        for kind in MODEL_KINDS:
            model = build_model(kind, 1, 28, args)
            row[f"{kind}_train_seconds"] = round(train(model, normal, args), 1)
            for column, scores in score_all(kind, model, test_images, args).items():
                row[column] = auroc(scores, test_labels == digit)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows[str(digit)] = row
        print(json.dumps({f"digit {digit}": row}), flush=True)
    columns = [column for kind in MODEL_KINDS for _, column in SCORES[kind]]
    mean = {column: round(sum(r[column] for r in rows.values()) / len(rows), 4) for column in columns} if rows else {}
    return {"digits": rows, "mean_over_digits_run": mean}


def touching_scene(rng, resolution: int):
    """Two shapes that overlap or touch (no background pixel between them): what a legal scene never shows."""
    import numpy as np

    from hf_genzoo.data.shapes import render_scene, sample_scene, shape_mask

    for _ in range(10_000):
        first, second = sample_scene(rng, resolution), sample_scene(rng, resolution)
        masks = [shape_mask(o["shape"], o["size"], o["x"], o["y"], o["angle"], resolution) for o in (first[0], second[0])]
        padded = np.pad(masks[0], 1)  # the first mask dilated by one pixel (8-neighbourhood), nothing wrapping round
        grown = np.zeros_like(masks[0])
        for dy in range(3):
            for dx in range(3):
                grown |= padded[dy : dy + resolution, dx : dx + resolution]
        if (grown & masks[1]).any() and first[0]["color"] != second[0]["color"]:
            return render_scene(first + second, resolution)
    raise RuntimeError("no touching pair found")


def corrupted_scenes(kind: str, count: int, resolution: int, seed: int):
    """`count` corrupted scenes (N, H, W, 3) uint8 of one kind: "noise_blob", "touching_shapes" or "off_palette"."""
    import numpy as np

    from hf_genzoo.data.shapes import render_scene, sample_scene

    rng = np.random.default_rng([seed, {"noise_blob": 1, "touching_shapes": 2, "off_palette": 3}[kind]])
    images = []
    for _ in range(count):
        if kind == "touching_shapes":
            images.append(touching_scene(rng, resolution))
            continue
        image = render_scene(sample_scene(rng, resolution, num_shapes=int(rng.integers(1, 3))), resolution)
        if kind == "noise_blob":  # a 6 × 6 patch of uniform random colours
            y, x = rng.integers(0, resolution - 6, size=2)
            image[y : y + 6, x : x + 6] = rng.integers(0, 256, size=(6, 6, 3))
        else:  # every pixel of one shape (its exact palette colour) repainted in a colour off the palette
            colors = np.unique(image.reshape(-1, 3), axis=0)
            colors = colors[colors.any(axis=1)]  # not the black background
            target = colors[rng.integers(len(colors))]
            image[(image == target).all(axis=-1)] = OFF_PALETTE[rng.integers(len(OFF_PALETTE))]
        images.append(image)
    return np.stack(images)


def run_shapes(args, resolution: int = 32) -> dict:
    import numpy as np
    import torch

    from hf_genzoo.data.shapes import render_scene, sample_scene

    def to_tensor(array):  # (N, H, W, 3) uint8 → (N, 3, H, W) in [-1, 1]
        return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1)

    def clean(count, seed):
        rng = np.random.default_rng(seed)
        return np.stack([render_scene(sample_scene(rng, resolution, num_shapes=int(rng.integers(1, 3))), resolution) for _ in range(count)])

    train_images = to_tensor(clean(args.shapes_train_samples, [args.seed, 10]))
    test_clean = to_tensor(clean(args.shapes_test_samples, [args.seed, 11]))
    corruptions = {kind: to_tensor(corrupted_scenes(kind, args.shapes_test_samples, resolution, args.seed)) for kind in ("noise_blob", "touching_shapes", "off_palette")}
    test_images = torch.cat([test_clean, *corruptions.values()])
    kinds = torch.cat([torch.zeros(len(test_clean), dtype=torch.long)] + [torch.full((len(v),), i + 1) for i, v in enumerate(corruptions.values())])
    start = time.perf_counter()
    table = {kind: {} for kind in corruptions}
    table["all_corruptions"] = {}
    seconds = {}
    for model_kind in MODEL_KINDS:
        model = build_model(model_kind, 3, resolution, args)
        seconds[f"{model_kind}_train_seconds"] = round(train(model, train_images, args), 1)
        for column, scores in score_all(model_kind, model, test_images, args).items():
            for index, kind in enumerate(corruptions, start=1):
                keep = (kinds == 0) | (kinds == index)
                table[kind][column] = auroc(scores[keep], kinds[keep] == index)
            table["all_corruptions"][column] = auroc(scores, kinds > 0)
    return {
        "train_images": len(train_images),
        "test_clean": len(test_clean),
        "test_per_corruption": args.shapes_test_samples,
        "auroc": table,
        **seconds,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    start, cpu_start = time.perf_counter(), time.process_time()
    report = {
        "max_train_steps": args.max_train_steps,
        "train_batch_size": args.train_batch_size,
        "learning_rate": args.learning_rate,
        "block_out_channels": args.block_out_channels,
        "latent_channels": args.latent_channels,
        "iwae_samples": args.iwae_samples,
        "seed": args.seed,
        "torch_threads": torch.get_num_threads(),
    }
    if args.digits:
        report["mnist"] = run_mnist(args)
    if args.shapes:
        report["shapes"] = run_shapes(args)
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["cpu_seconds"] = round(time.process_time() - cpu_start, 1)  # below the wall time on a machine busy with other work
    from throughput import write_report

    write_report(report, args.output, indent=1)
    return report


if __name__ == "__main__":
    main()
