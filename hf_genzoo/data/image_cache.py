"""Images preprocessed once into a uint8 Arrow file on disk and read memory-mapped, so that a training run's memory
does not grow with its dataset (a million 64×64 RGB images are 12 GB of uint8 on disk; as the float32 tensor the
scripts once held they were 49 GB of RAM).

A cache is a folder `pixels-<key>/` with `data.arrow` and `manifest.json`, written last. `data.arrow` has one row per
image: `pixels`, the image converted to the channels asked for, its shorter side resized to the resolution and
centre-cropped, as uint8 (C, H, W) (`Array3D`); with random crops (`center_crop=False`) the resized image is kept
whole instead, as its raw uint8 (C, H, W) bytes beside `pixels_height` and `pixels_width`; and every non-image
column of the source (labels, factors, captions). The key hashes the source (name, split, seed, subset, and the
loaded dataset's fingerprint, or for the generated worlds their arguments) and the preprocessing, so a second run on
the same data reads the cache without decoding (or generating) an image. A cache whose manifest is missing or
disagrees, or whose file does not read back whole, is rebuilt, never trained on.

`ImageSplit` reads images from it as float32 in [-1, 1], centre-cropped and never flipped: what evaluation sees.
Training reads through a `torch.utils.data.DataLoader` whose batch sampler is the script's `micro_batches` order (a
function of seed and step): `AugmentedRows` converts each micro-batch to float and draws the random crop and flip of
each image per access from (seed, epoch, row), so every epoch sees new draws and a resumed run the draws the
uninterrupted run would have. The held-out split never gets them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from typing import Iterable, Iterator, Sequence

import datasets
import numpy as np
import pyarrow as pa
import torch

from .latent_cache import DATA_FILE, MANIFEST, read_cache, take_rows
from .loading import crop_offsets, find_image_column, load_source_dataset, resize_image

logger = logging.getLogger(__name__)

__all__ = [
    "ImageSplit",
    "AugmentedRows",
    "augmentation_draws",
    "cached_image_split",
    "default_cache_dir",
    "load_image_split",
    "training_batches",
]

CACHE_VERSION = 1
PIXEL_COLUMNS = ("pixels", "pixels_height", "pixels_width")
GENERATED_SOURCES = ("shapes", "dsprites")  # made by hf_genzoo from their arguments alone
_AUGMENTATION_SALT = 0xF11F  # so that the crop and flip draws differ from every other draw of the same seed
_WRITE_BATCH = 256


def default_cache_dir() -> str:
    """$HF_GENZOO_CACHE, else ~/.cache/hf_genzoo/pixels."""
    return os.environ.get("HF_GENZOO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hf_genzoo", "pixels")


# ---- reading -------------------------------------------------------------------------------------------------


def to_float(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (..., C, H, W) → float32 in [-1, 1], the arithmetic of `preprocess_image` (so the same values, bit for bit)."""
    return torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1.0)


class ImageSplit:
    """A split preprocessed once into a cache, read memory-mapped.

    `split[rows]` (an int, a slice, a sequence or tensor of ints) gives float32 images (N, C, H, W) in [-1, 1],
    centre-cropped and never flipped: read only the rows asked for, so `split[:1000]` costs 1,000 images of memory
    whatever the split's size. `column(name)` gives a non-image column, `labels(name)` class labels, `select(rows)` a
    split of some of its rows (the hold-out of a dataset without a held-out split). `dataset` is the memory-mapped
    `datasets.Dataset` of the whole cache; `rows`, the rows of it this split holds, in order.
    """

    def __init__(self, dataset: datasets.Dataset, resolution: int, num_channels: int, rows: np.ndarray | None = None):
        self.dataset = dataset
        self.resolution = resolution
        self.num_channels = num_channels
        self.rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.cropped = isinstance(dataset.features["pixels"], datasets.Array3D)  # else kept whole, cropped per read

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, rows) -> torch.Tensor:
        if isinstance(rows, (int, np.integer)):
            return self[[int(rows)]][0]
        return to_float(self.uint8(self._positions(rows)))

    @property
    def column_names(self) -> list[str]:
        """The source's non-image columns."""
        return [name for name in self.dataset.column_names if name not in PIXEL_COLUMNS]

    def select(self, rows) -> "ImageSplit":
        return ImageSplit(self.dataset, self.resolution, self.num_channels, self.rows[self._positions(rows)])

    def column(self, name: str, rows=None) -> list:
        """The values of column `name` at `rows` (default: all), as a list."""
        positions = self._positions(slice(None) if rows is None else rows)
        return self._take([name], positions).column(name).to_pylist()

    def labels(self, name: str) -> tuple[torch.Tensor, int]:
        """(class labels (N,) int64, number of classes) from column `name`: a `ClassLabel` gives its number of
        classes, integers their maximum + 1. A split without the column is an error that lists the columns it has."""
        if name not in self.column_names:
            raise ValueError(f"class labels are needed; {name!r} is not one of {self.column_names}")
        labels = torch.as_tensor(self.column(name), dtype=torch.int64)
        if len(labels) and labels.min() < 0:
            raise ValueError(f"labels in {name!r} must be ≥ 0, found {int(labels.min())}")
        feature = self.dataset.features[name]
        num_classes = feature.num_classes if isinstance(feature, datasets.ClassLabel) else int(labels.max()) + 1
        return labels, num_classes

    def uint8(self, positions: Sequence[int], crop_draws: np.ndarray | None = None, flips: np.ndarray | None = None) -> np.ndarray:
        """Images at `positions` as uint8 (B, C, R, R): cropped at `crop_draws` (B, 2) in [0, 1) (only for a split
        kept whole; centred when None), the rows where `flips` (B,) is true flipped left-right."""
        r = self.resolution
        if self.cropped:
            if crop_draws is not None:
                raise ValueError("this cache holds centre-cropped images: build it with center_crop=False for random crops")
            column = self._take(["pixels"], positions).column("pixels").combine_chunks()
            values = column.storage if isinstance(column, pa.ExtensionArray) else column
            for _ in range(3):  # list<list<list<uint8>>> → the flat values
                values = values.flatten()
            images = values.to_numpy(zero_copy_only=False).reshape(len(positions), self.num_channels, r, r)
        else:
            table = self._take(list(PIXEL_COLUMNS), positions).to_pydict()
            images = np.empty((len(positions), self.num_channels, r, r), dtype=np.uint8)
            for i, (data, height, width) in enumerate(zip(table["pixels"], table["pixels_height"], table["pixels_width"])):
                whole = np.frombuffer(data, dtype=np.uint8).reshape(self.num_channels, height, width)
                left, top = crop_offsets(width, height, r, None if crop_draws is None else crop_draws[i])
                images[i] = whole[:, top : top + r, left : left + r]
        if flips is not None and flips.any():
            images = np.array(images)  # writable
            images[flips] = images[flips, :, :, ::-1]
        return images

    def _positions(self, rows) -> np.ndarray:
        if isinstance(rows, slice):
            return np.arange(len(self))[rows]
        positions = np.asarray(rows.tolist() if isinstance(rows, torch.Tensor) else rows, dtype=np.int64).reshape(-1)
        if len(positions) and (positions.min() < -len(self) or positions.max() >= len(self)):
            raise IndexError(f"rows out of range for a split of {len(self)} images")
        return positions % max(len(self), 1)

    def _take(self, columns: list[str], positions: np.ndarray) -> pa.Table:
        """Rows `positions` of this split read straight from the memory-mapped table: only those rows are read
        (`latent_cache.take_rows`: zero-copy slices, never Arrow's `take`, which copies whole columns)."""
        return take_rows(self.dataset.data.table.select(columns), self.rows[positions])


def augmentation_draws(seed: int, epoch: int, rows: Iterable[int]) -> np.ndarray:
    """(B, 3) uniform draws in [0, 1) per row — crop left, crop top, flip (flipped below 1/2) — each from a generator
    seeded by (seed, epoch, row): a function of the three alone, so a resumed run draws as the uninterrupted one, each
    epoch draws anew, and the batch size and number of processes do not change what an image gets."""
    return np.stack([np.random.default_rng([seed, epoch, int(row), _AUGMENTATION_SALT]).random(3) for row in rows])


class AugmentedRows(torch.utils.data.Dataset):
    """A DataLoader's view of a training split. Its batch sampler gives `(micro_index, rows)` (the rows of the split
    in one micro-batch); `__getitems__` returns the micro-batch as a dict: `micro_index`, `rows` (B,) int64 (to index
    labels held beside the split) and `pixel_values` float32 (B, C, R, R) in [-1, 1], randomly cropped
    (`random_crop`, a split kept whole) and flipped (`random_flip`) by `augmentation_draws(seed, micro_index //
    batches_per_epoch, rows)`. Use it with `collate_fn=as_is`."""

    def __init__(
        self,
        images: ImageSplit,
        seed: int,
        batches_per_epoch: int,
        random_flip: bool = False,
        random_crop: bool = False,
    ):
        if random_crop and images.cropped:
            raise ValueError("random crops need the images kept whole: load the split with center_crop=False")
        self.images, self.seed, self.batches_per_epoch = images, seed, batches_per_epoch
        self.random_flip, self.random_crop = random_flip, random_crop

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, request: tuple[int, list[int]]) -> dict:
        micro_index, rows = request
        crop_draws = flips = None
        if self.random_flip or self.random_crop:
            draws = augmentation_draws(self.seed, micro_index // self.batches_per_epoch, rows)  # (B, 3)
            crop_draws = draws[:, :2] if self.random_crop else None
            flips = draws[:, 2] < 0.5 if self.random_flip else None
        pixel_values = to_float(self.images.uint8(rows, crop_draws, flips))  # (B, C, R, R)
        return {"micro_index": micro_index, "rows": torch.as_tensor(rows, dtype=torch.int64), "pixel_values": pixel_values}


def as_is(batch):
    """The collate function of `AugmentedRows`, which returns whole batches."""
    return batch


def training_batches(
    images: ImageSplit,
    order: Iterable[tuple[int, torch.Tensor]],
    batches_per_epoch: int,
    seed: int,
    random_flip: bool = False,
    random_crop: bool = False,
    num_workers: int = 0,
) -> Iterator[tuple[int, dict]]:
    """`(micro_index, batch)` for each `(micro_index, rows)` of `order` (`training_utils.micro_batches`), the batch
    read from the memory-mapped cache by a DataLoader with `num_workers` worker processes (0: the main process), as
    `AugmentedRows` gives it (`rows`, `pixel_values`)."""
    loader = torch.utils.data.DataLoader(
        AugmentedRows(images, seed, batches_per_epoch, random_flip, random_crop),
        batch_sampler=((micro_index, rows.tolist()) for micro_index, rows in order),
        num_workers=num_workers,
        collate_fn=as_is,
        # its own generator: a DataLoader iterator draws a base seed from the global RNG otherwise, which shifts every
        # later global draw (dead-code restarts, dropout) between a run and its resume, whose iterator starts later
        generator=torch.Generator().manual_seed(seed),
    )
    for batch in loader:
        yield batch.pop("micro_index"), batch


# ---- building ------------------------------------------------------------------------------------------------


def cached_image_split(
    name_or_path: str = "shapes",
    split: str = "train",
    resolution: int = 32,
    num_channels: int = 3,
    center_crop: bool = True,
    image_column: str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    label_column: str | None = None,
    cache_dir: str | None = None,
    **shapes_kwargs,
) -> ImageSplit:
    """A split of `name_or_path` (the sources and arguments of `load_image_dataset`) preprocessed once into the cache
    `cache_dir/pixels-<key>` (default `default_cache_dir()`), built now when it is missing, then read memory-mapped.

    The preprocessing is `load_image_dataset`'s up to the uint8 pixels: convert to `num_channels`, resize the shorter
    side to `resolution` (bilinear, antialiased), centre-crop to a square (`center_crop`; else keep the whole resized
    image for crops drawn per read). Flips and random crops are not stored: `AugmentedRows` draws them per access."""
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels={num_channels!r} is not allowed; use 1 (grayscale) or 3 (RGB)")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    source = str(name_or_path)
    description = {
        "version": CACHE_VERSION, "source": source, "split": split, "seed": seed, "max_samples": max_samples,
        "shapes": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(shapes_kwargs.items())},
        "resolution": resolution, "channels": num_channels, "center_crop": center_crop, "image_column": image_column,
    }
    raw = None
    if source not in GENERATED_SOURCES:  # a file, folder or Hub dataset: its fingerprint names its content
        raw = load_source_dataset(source, split, resolution, max_samples, seed, label_column, **shapes_kwargs)
        description.update(fingerprint=raw._fingerprint, rows=len(raw))
    key = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:20]
    folder = os.path.join(cache_dir or default_cache_dir(), f"pixels-{key}")
    dataset = read_cache(folder, key, None, required_columns=("pixels",), kind="image")
    if dataset is None:
        if raw is None:  # generated now (a split these worlds lack is an error here, before anything is written)
            raw = load_source_dataset(source, split, resolution, max_samples, seed, label_column, **shapes_kwargs)
        logger.info(f"{split}: preprocessing {len(raw)} images into {folder}")
        dataset = _build_cache(folder, key, raw, image_column, resolution, num_channels, center_crop, description)
    else:
        logger.info(f"{split}: {len(dataset)} preprocessed images from {folder}")
    return ImageSplit(dataset, resolution, num_channels)


def load_image_split(args, split: str, max_samples: int | None) -> ImageSplit:
    """`cached_image_split` with the data flags the training scripts share (`--dataset_name`, `--resolution`,
    `--num_channels`, `--center_crop`, `--image_column`, `--seed`, `--label_column` (the subset's strata),
    `--num_shapes`, `--cache_dir`)."""
    return cached_image_split(
        args.dataset_name,
        split,
        resolution=args.resolution,
        num_channels=args.num_channels,
        center_crop=getattr(args, "center_crop", True),
        image_column=args.image_column,
        max_samples=max_samples,
        seed=args.seed,
        label_column=getattr(args, "label_column", None),
        cache_dir=getattr(args, "cache_dir", None),
        **({"num_shapes": args.num_shapes} if args.dataset_name == "shapes" and hasattr(args, "num_shapes") else {}),
    )


def _build_cache(
    folder: str, key: str, raw: datasets.Dataset, image_column: str | None, resolution: int, num_channels: int,
    center_crop: bool, description: dict,
) -> datasets.Dataset:
    """Preprocess `raw` in batches of `_WRITE_BATCH` rows into `folder + ".tmp"`, renamed into place once whole."""
    from datasets.arrow_writer import ArrowWriter

    image_column = find_image_column(raw, image_column)
    if not isinstance(raw.features[image_column], datasets.Image):
        raw = raw.cast_column(image_column, datasets.Image())
    others = {name: feature for name, feature in raw.features.items() if not isinstance(feature, datasets.Image)}
    clash = sorted(set(others) & set(PIXEL_COLUMNS))
    if clash:
        raise ValueError(f"the source has columns named {clash}, which the image cache uses for its pixels")
    if center_crop:
        pixel_features = {"pixels": datasets.Array3D(shape=(num_channels, resolution, resolution), dtype="uint8")}
    else:
        pixel_features = {"pixels": datasets.Value("binary"), "pixels_height": datasets.Value("int32"), "pixels_width": datasets.Value("int32")}
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    writer = ArrowWriter(features=datasets.Features({**pixel_features, **others}), path=os.path.join(tmp, DATA_FILE))
    for start in range(0, len(raw), _WRITE_BATCH):
        rows = raw[start : start + _WRITE_BATCH]
        pixels = {name: [] for name in pixel_features}
        for image in rows[image_column]:
            image = resize_image(image, resolution, num_channels)
            if center_crop:
                left, top = crop_offsets(*image.size, resolution)
                image = image.crop((left, top, left + resolution, top + resolution))
            array = np.asarray(image, dtype=np.uint8)
            array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # (C, H, W)
            if center_crop:
                pixels["pixels"].append(array)
            else:
                pixels["pixels"].append(np.ascontiguousarray(array).tobytes())
                pixels["pixels_height"].append(array.shape[1])
                pixels["pixels_width"].append(array.shape[2])
        writer.write_batch({**pixels, **{name: rows[name] for name in others}})
    writer.finalize()
    writer.close()
    with open(os.path.join(tmp, MANIFEST), "w") as f:
        json.dump({"key": key, "rows": len(raw), "version": CACHE_VERSION, "description": description}, f, indent=2, default=str)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return datasets.Dataset.from_file(os.path.join(folder, DATA_FILE))
