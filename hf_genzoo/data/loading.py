"""One loader for every image dataset the training scripts read: the shapes world, local folders, parquet, the Hub."""

from __future__ import annotations

import glob
import os

import datasets
import numpy as np
from PIL import Image

from .shapes import make_shapes_dataset

__all__ = [
    "load_image_dataset",
    "load_source_dataset",
    "find_image_column",
    "preprocess_image",
    "resize_image",
    "crop_offsets",
    "sample_indices",
    "held_out_indices",
    "stratification_labels",
    "SHAPES_SPLIT_SEED_OFFSET",
]

SHAPES_SPLIT_SEED_OFFSET = 1_000_003  # the shapes "test" split is drawn with seed + this offset
_SHAPES_DEFAULT_SIZES = {"train": 10000, "test": 2000}
_IMAGE_COLUMN_NAMES = ("image", "img")
_LABEL_COLUMN_NAMES = ("label", "labels")
# salts of the subset and hold-out draws, so that they differ from every other draw of the same seed
_SUBSET_SALT, _HELD_OUT_SALT = 0x5B5E7, 0x4E1D
_FILE_SUFFIXES = (".parquet", ".png", ".jpg", ".jpeg", ".arrow", ".csv", ".json", ".jsonl")
HUB_LOOKUP_TIMEOUT = 10.0  # seconds for the one look-up of a Hub dataset id before datasets loads it


def load_image_dataset(
    name_or_path: str | datasets.Dataset | datasets.DatasetDict = "shapes",
    split: str = "train",
    resolution: int = 32,
    num_channels: int = 3,
    center_crop: bool = True,
    random_flip: bool = False,
    image_column: str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    label_column: str | None = None,
    **shapes_kwargs,
) -> datasets.Dataset:
    """Load an image dataset and preprocess it once into ``pixel_values`` in [-1, 1].

    Sources, by ``name_or_path``:

    - ``"shapes"``: ``make_shapes_dataset`` at ``resolution`` (``shapes_kwargs`` go to it, e.g.
      ``num_shapes=(1, 2)``, ``config="edits"``, ``num_samples``; 10,000 train / 2,000 test rows by
      default). The test split is drawn with ``seed + 1_000_003``.
    - ``"dsprites"``: the regenerated dSprites config (64x64, resized to ``resolution``).
    - a local folder of images: ``load_dataset("imagefolder", data_dir=...)``.
    - a ``.parquet`` file, or a folder holding parquet files: ``load_dataset("parquet", ...)``. A single
      file is the ``"train"`` split; in a folder, files named ``train*`` / ``test*`` (the Hub's
      conventions) make the splits, and anything else is ``"train"``.
    - a ``datasets.Dataset`` (used as is) or ``DatasetDict`` (``split`` selects).
    - anything else: a Hub dataset id, ``load_dataset(name_or_path, split=split)``.

    ``max_samples``: at most this many rows, drawn at random from ``seed`` and stratified by label
    (``label_column``, else the first ``ClassLabel``, else a "label" column; see ``sample_indices``), not the first
    rows: an image folder is sorted by class. The shapes world draws ``max_samples`` scenes instead.

    Preprocessing (one batched ``map``): convert to ``num_channels`` (1: grayscale "L", 3: "RGB"),
    resize the shorter side to ``resolution`` (bilinear, antialiased), crop to a square (centre, or
    seeded random when ``center_crop=False``), flip half of the images left-right (seeded) when
    ``random_flip``, and scale to float32 in [-1, 1].

    Returns a dataset in torch format with ``pixel_values`` (C, H, W) and every non-image column of
    the source (labels, factors, captions). The image column is ``image_column`` if given, else the
    first ``Image`` feature, else a column named "image" or "img". Further ``Image`` columns (the
    ``edited_image`` of the shapes edits) become ``<name>_pixel_values`` with "_image" dropped from
    the name, cropped and flipped like the main image.
    """
    # 1. validate
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels={num_channels!r} is not allowed; use 1 (grayscale) or 3 (RGB)")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)) or max_samples < 1
    ):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")

    # 2. load
    dataset = _load_source(name_or_path, split, resolution, max_samples, seed, shapes_kwargs)

    # 3. find the image column(s)
    image_column = find_image_column(dataset, image_column)
    if not isinstance(dataset.features[image_column], datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image())
    extra_image_columns = [
        name
        for name, feature in dataset.features.items()
        if isinstance(feature, datasets.Image) and name != image_column
    ]
    output_names = {image_column: "pixel_values"}
    for name in extra_image_columns:
        output_names[name] = f"{name[: -len('_image')] if name.endswith('_image') else name}_pixel_values"

    dataset = _subset(dataset, max_samples, seed, label_column)

    # 4. preprocess once
    def preprocess(batch: dict, indices: list[int]) -> dict:
        out = {new: [] for new in output_names.values()}
        for row, index in enumerate(indices):
            rng = np.random.default_rng([seed, index])  # one draw per row, shared by all its image columns
            crop_draw, flip = rng.random(2), bool(random_flip and rng.random() < 0.5)
            for name, new in output_names.items():
                out[new].append(
                    preprocess_image(batch[name][row], resolution, num_channels, center_crop, crop_draw, flip)
                )
        return out

    features = {name: feature for name, feature in dataset.features.items() if name not in output_names}
    for new in output_names.values():
        features[new] = datasets.Array3D(shape=(num_channels, resolution, resolution), dtype="float32")
    dataset = dataset.map(
        preprocess,
        batched=True,
        batch_size=256,
        with_indices=True,
        remove_columns=list(output_names),
        features=datasets.Features(features),
        desc="Preprocessing images",
    )
    return dataset.with_format("torch")


def find_image_column(dataset: datasets.Dataset, image_column: str | None = None) -> str:
    """`image_column` if given (it must exist), else the first ``Image`` feature, else a column named "image" or
    "img"; a clear error listing the columns otherwise."""
    columns = list(dataset.column_names)
    if image_column is not None:
        if image_column not in columns:
            raise ValueError(f"image_column={image_column!r} is not a column of this dataset; columns: {columns}")
        return image_column
    image_features = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
    named = [name for name in _IMAGE_COLUMN_NAMES if name in columns]
    if image_features:
        return image_features[0]
    if named:
        return named[0]
    raise ValueError(f"no image column found (no Image feature, no column named image/img); columns: {columns}")


def load_source_dataset(
    name_or_path="shapes",
    split: str = "train",
    resolution: int = 32,
    max_samples: int | None = None,
    seed: int = 0,
    label_column: str | None = None,
    **shapes_kwargs,
) -> datasets.Dataset:
    """The raw dataset ``load_image_dataset`` starts from (same sources and arguments), before any preprocessing:
    for readers that preprocess in batches themselves (the latent cache)."""
    dataset = _load_source(name_or_path, split, resolution, max_samples, seed, shapes_kwargs)
    return _subset(dataset, max_samples, seed, label_column)


def stratification_labels(dataset: datasets.Dataset, label_column: str | None = None) -> np.ndarray | None:
    """The labels that subsets and hold-outs are stratified by: `label_column` when the dataset has it, else its
    first `ClassLabel` feature, else a column named "label" or "labels" of integers; None when it has none."""
    features = dataset.features
    names = [label_column] if label_column in features else []
    names += [name for name, feature in features.items() if isinstance(feature, datasets.ClassLabel)]
    names += [name for name in _LABEL_COLUMN_NAMES if name in features]
    for name in names:
        feature = features[name]
        if isinstance(feature, datasets.ClassLabel) or (
            isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))
        ):
            return np.asarray(dataset.data.column(name).to_numpy(zero_copy_only=False), dtype=np.int64)
    return None


def sample_indices(num_rows: int, num: int, seed: int, labels: np.ndarray | None = None, salt: int = _SUBSET_SALT) -> np.ndarray:
    """`num` of `num_rows` row indices drawn at random from `seed`, in increasing order. With `labels` (num_rows,)
    the draw is stratified: each class gets its share of `num` (largest remainders first, ties at random) and its
    rows are drawn at random within it, so a class-sorted dataset keeps every class a subset has room for."""
    if num >= num_rows:
        return np.arange(num_rows)
    rng = np.random.default_rng([seed, salt])
    if labels is None:
        return np.sort(rng.choice(num_rows, size=num, replace=False))
    labels = np.asarray(labels)
    if len(labels) != num_rows:
        raise ValueError(f"labels has {len(labels)} rows, expected {num_rows}")
    classes, counts = np.unique(labels, return_counts=True)
    share = num * counts / num_rows
    quota = np.floor(share).astype(np.int64)
    remainder = share - quota
    order = np.lexsort((rng.random(len(classes)), -remainder))  # largest remainder first, ties at random
    quota[order[: num - quota.sum()]] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def held_out_indices(num_rows: int, num_held_out: int, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) row indices of a dataset without a held-out split: `num_held_out` rows drawn at random from
    `seed`, stratified by `labels` as `sample_indices` draws, the rest for training; both in increasing order."""
    if not 0 < num_held_out < num_rows:
        raise ValueError(f"cannot hold out {num_held_out} of {num_rows} images; hold out between 1 and {num_rows - 1}")
    held_out = sample_indices(num_rows, num_held_out, seed, labels, salt=_HELD_OUT_SALT)
    return np.setdiff1d(np.arange(num_rows), held_out), held_out


def _subset(dataset: datasets.Dataset, max_samples: int | None, seed: int, label_column: str | None) -> datasets.Dataset:
    """At most `max_samples` rows, drawn by `sample_indices` (seeded, stratified by `stratification_labels`)."""
    if max_samples is None or len(dataset) <= max_samples:
        return dataset
    return dataset.select(sample_indices(len(dataset), max_samples, seed, stratification_labels(dataset, label_column)))


def preprocess_image(
    image: Image.Image, resolution: int, num_channels: int, center_crop: bool, crop_draw, flip: bool
) -> np.ndarray:
    """PIL image -> float32 (C, resolution, resolution) in [-1, 1]."""
    image = resize_image(image, resolution, num_channels)
    left, top = crop_offsets(*image.size, resolution, None if center_crop else crop_draw)
    image = image.crop((left, top, left + resolution, top + resolution))
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0  # (H, W) or (H, W, 3)
    if array.ndim == 2:
        return array[None]  # (1, H, W)
    return array.transpose(2, 0, 1)  # (3, H, W)


def resize_image(image: Image.Image, resolution: int, num_channels: int) -> Image.Image:
    """`image` converted to `num_channels` (1: "L", 3: "RGB") with its shorter side resized to `resolution`
    (bilinear, antialiased: PIL widens the filter when shrinking)."""
    image = image.convert("RGB" if num_channels == 3 else "L")
    width, height = image.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if new_size != (width, height):
        image = image.resize(new_size, Image.BILINEAR)
    return image


def crop_offsets(width: int, height: int, resolution: int, crop_draw=None) -> tuple[int, int]:
    """(left, top) of the `resolution`² crop of a width × height image: centred when `crop_draw` is None, else at
    the two uniform draws `crop_draw` in [0, 1) (each offset uniform over its width − resolution + 1 values)."""
    if crop_draw is None:
        return round((width - resolution) / 2), round((height - resolution) / 2)
    return int(crop_draw[0] * (width - resolution + 1)), int(crop_draw[1] * (height - resolution + 1))


def _load_source(
    name_or_path, split: str, resolution: int, max_samples, seed: int, shapes_kwargs: dict
) -> datasets.Dataset:
    """The raw dataset (before preprocessing) for ``load_image_dataset``."""
    if isinstance(name_or_path, (str, os.PathLike)) and str(name_or_path) in ("shapes", "dsprites"):
        return _load_shapes(str(name_or_path), split, resolution, max_samples, seed, shapes_kwargs)
    if shapes_kwargs:
        raise ValueError(
            f"unexpected keyword arguments {sorted(shapes_kwargs)}: only the shapes world takes extra arguments"
        )
    if isinstance(name_or_path, datasets.Dataset):
        return name_or_path
    if isinstance(name_or_path, datasets.DatasetDict):
        return _select_split(name_or_path, split, "this DatasetDict")

    path = os.path.expanduser(str(name_or_path))
    if os.path.isfile(path):
        if not path.endswith(".parquet"):
            raise ValueError(f"{path} is a file but not a .parquet file; pass a parquet file or a folder of images")
        return _select_split(datasets.load_dataset("parquet", data_files={"train": path}), split, path)
    if os.path.isdir(path):
        if glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True):
            return _select_split(datasets.load_dataset("parquet", data_dir=path), split, path)
        return _select_split(datasets.load_dataset("imagefolder", data_dir=path), split, path)
    if path.startswith(("/", "./", "../", "~")) or path.lower().endswith(_FILE_SUFFIXES):
        raise FileNotFoundError(f"no such file or folder: {path}")
    return _load_hub_dataset(str(name_or_path), split)


def _load_hub_dataset(name: str, split: str) -> datasets.Dataset:
    """A Hub dataset id through `datasets.load_dataset`, after one short look-up on the Hub: a name that is none of
    the sources fails at once with a sentence saying so, instead of datasets' retries and traceback. Offline
    (HF_HUB_OFFLINE=1) there is no look-up; a copy in the datasets cache loads, anything else fails at once."""

    def unknown(reason: str) -> ValueError:
        return ValueError(
            f"dataset {name!r} is neither 'shapes' / 'dsprites', a local folder or file, nor a reachable Hub dataset: {reason}"
        )

    if not datasets.config.HF_HUB_OFFLINE:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError

        try:
            HfApi().dataset_info(name, timeout=HUB_LOOKUP_TIMEOUT)
        except HFValidationError:
            raise unknown("not a valid Hub id ('name' or 'user/name')") from None
        except GatedRepoError:
            pass  # it exists: datasets says what access it needs
        except RepositoryNotFoundError:
            raise unknown("no such dataset on the Hub (a private one needs `hf auth login`)") from None
        except HfHubHTTPError:
            pass  # a server error: datasets retries and reports it
        except Exception as error:  # no connection (refused, no DNS, time-out)
            raise unknown(
                f"the Hub cannot be reached ({type(error).__name__}: {error}); with HF_HUB_OFFLINE=1 a copy in the "
                "datasets cache is used"
            ) from None
    try:
        return datasets.load_dataset(name, split=split)
    except (ConnectionError, FileNotFoundError) as error:
        if not datasets.config.HF_HUB_OFFLINE:
            raise
        raise unknown("offline (HF_HUB_OFFLINE=1) and not in the datasets cache") from error


def _load_shapes(
    name: str, split: str, resolution: int, max_samples, seed: int, shapes_kwargs: dict
) -> datasets.Dataset:
    if split not in _SHAPES_DEFAULT_SIZES:
        raise ValueError(f"split={split!r} is not a split of {name}; use one of {list(_SHAPES_DEFAULT_SIZES)}")
    kwargs = dict(shapes_kwargs)
    num_samples = kwargs.pop("num_samples", None)
    if num_samples is None:  # a generated world has as many images as asked for, not a cap at its default size
        num_samples = _SHAPES_DEFAULT_SIZES[split] if max_samples is None else max_samples
    elif max_samples is not None:
        num_samples = min(num_samples, max_samples)
    split_seed = seed if split == "train" else seed + SHAPES_SPLIT_SEED_OFFSET
    if name == "dsprites":
        if kwargs:
            raise ValueError(f"unexpected keyword arguments {sorted(kwargs)} for dsprites; it takes num_samples only")
        return make_shapes_dataset(num_samples, seed=split_seed, config="dsprites")
    return make_shapes_dataset(num_samples, resolution=resolution, seed=split_seed, **kwargs)


def _select_split(dataset_dict: datasets.DatasetDict, split: str, source: str) -> datasets.Dataset:
    if split not in dataset_dict:
        raise ValueError(f"split={split!r} not found in {source}; available splits: {list(dataset_dict)}")
    return dataset_dict[split]
