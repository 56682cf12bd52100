#!/usr/bin/env python
"""Train the domain classifier whose features give FID on MNIST or the shapes world (hf_genzoo.metrics.domain).

    python training_scripts/train_domain_classifier.py --dataset_name ../shared/data/mnist --resolution 28 \
        --num_channels 1 --output_dir mnist-classifier

Seeded end to end (data order, initialisation, fp32 on one process), so the same command on the same machine gives
the same weights. Writes a `DomainClassifier` folder (config.json + safetensors) and metrics.json with the held-out
accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from script_args import add_image_loading_arguments, answer_help_first, description


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--dataset_name", default="shapes", help="'shapes', 'dsprites', a Hub dataset id, an image folder or a parquet file, with 'train' and 'test' splits")
    parser.add_argument("--label_column", default="label", help="the column of class labels (integers from 0) the classifier learns")
    parser.add_argument("--image_column", default=None, help="default: the first Image feature, else a column named image or img")
    parser.add_argument("--resolution", type=int, default=32, help="images are resized and centre-cropped to this size; use the generators' resolution (28 for MNIST)")
    parser.add_argument("--num_channels", type=int, default=3, choices=(1, 3), help="1: grayscale, 3: RGB; as the generators' images")
    parser.add_argument("--max_train_samples", type=int, default=None, help="train on this many images at most (default: the whole train split)")
    add_image_loading_arguments(parser)
    parser.add_argument("--block_out_channels", type=int, nargs="+", default=[32, 64, 128], help="channels of the convolutional levels, each halving the resolution")
    parser.add_argument("--feature_dim", type=int, default=128, help="size of the penultimate features the FID is computed on")
    parser.add_argument("--num_epochs", type=int, default=3, help="passes over the training images")
    parser.add_argument("--train_batch_size", type=int, default=128, help="images per optimiser step")
    parser.add_argument("--learning_rate", type=float, default=2e-3, help="peak learning rate of the one-cycle schedule (AdamW)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the initialisation and the data order")
    parser.add_argument("--output_dir", default="domain-classifier", help="where the DomainClassifier folder and metrics.json are written")
    args = parser.parse_args(argv)
    for name in ("num_epochs", "train_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    return args


answer_help_first(__name__, parse_args)
# the heavy imports come after argument parsing, so that `--help` answers at once
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from hf_genzoo.data.image_cache import load_image_split, training_batches  # noqa: E402
from hf_genzoo.metrics import DomainClassifier  # noqa: E402
from hf_genzoo.training_utils import epoch_permutation, run_summary  # noqa: E402


def load_split(args, split: str, max_samples: int | None = None):
    """(images, labels (N,), number of classes): the split preprocessed once into a memory-mapped uint8 cache
    (`hf_genzoo.data.image_cache`; indexing it reads those images only, as float in [-1, 1])."""
    images = load_image_split(args, split, max_samples)
    return (images, *images.labels(args.label_column))


def epoch_batches(num_train: int, batch_size: int, num_epochs: int, seed: int):
    """(batch index, rows) of each batch: epoch e walks `epoch_permutation(num_train, seed, e)`, the last partial
    batch dropped."""
    steps_per_epoch = num_train // batch_size
    for epoch in range(num_epochs):
        order = epoch_permutation(num_train, seed, epoch)
        for b in range(steps_per_epoch):
            yield epoch * steps_per_epoch + b, order[b * batch_size : (b + 1) * batch_size]


@torch.no_grad()
def accuracy(model: DomainClassifier, images, labels: torch.Tensor, batch_size: int = 512) -> float:
    model.eval()
    predictions = torch.cat([model(images[start : start + batch_size]).argmax(-1) for start in range(0, len(images), batch_size)])
    return float((predictions == labels).float().mean())


def main(args: argparse.Namespace) -> str:
    torch.manual_seed(args.seed)
    train_images, train_labels, num_classes = load_split(args, "train", args.max_train_samples)
    test_images, test_labels, _ = load_split(args, "test")
    model = DomainClassifier(
        in_channels=args.num_channels,
        num_classes=num_classes,
        sample_size=args.resolution,
        block_out_channels=tuple(args.block_out_channels),
        feature_dim=args.feature_dim,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=1e-4)
    steps_per_epoch = len(train_images) // args.train_batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.learning_rate, total_steps=args.num_epochs * steps_per_epoch)
    start = time.perf_counter()
    progress = tqdm(total=args.num_epochs * steps_per_epoch, desc="steps")
    model.train()
    order = epoch_batches(len(train_images), args.train_batch_size, args.num_epochs, args.seed)
    for _, batch in training_batches(train_images, order, steps_per_epoch, args.seed, num_workers=args.dataloader_num_workers):
        loss = F.cross_entropy(model(batch["pixel_values"]), train_labels[batch["rows"]])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        progress.update(1)
        progress.set_postfix(loss=round(loss.item(), 4))
    progress.close()
    metrics = {
        "test_accuracy": accuracy(model, test_images, test_labels),
        "num_classes": num_classes,
        "train_seconds": round(time.perf_counter() - start, 1),
        "dataset": args.dataset_name,
    }
    print(json.dumps(metrics))
    model.save_pretrained(args.output_dir)
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    print(run_summary(args.output_dir, metrics, ("test_accuracy",), {"training": metrics["train_seconds"]}))
    return args.output_dir


if __name__ == "__main__":
    main(parse_args())
