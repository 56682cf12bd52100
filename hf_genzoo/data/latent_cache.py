"""Latents encoded once by a frozen first stage and kept on disk as a memory-mapped Arrow file (Rombach et al. 2022
train their diffusion model on a fixed first stage; encoding every step would cost more than the diffusion step).

A cache is a folder `latents-<key>/` with `data.arrow` (one row per image: the posterior's `latent_mean` and
`latent_std` (C, h, w) in float32, unscaled, and the source's non-image columns: captions, labels, factors) and
`manifest.json`, written last. The key hashes the first stage (class, config without `scaling_factor`, every weight)
and the data (source, split, resolution, preprocessing, number of rows), so a second run on the same data reuses the
cache without running the encoder, and another first stage, resolution or subset builds its own. A cache whose
manifest is missing or disagrees, or whose Arrow file does not read back whole, is rebuilt, never trained on.

Read it with `datasets.Dataset.from_file` (memory-mapped: rows are paged in as a batch asks for them, so peak memory
does not grow with the number of images). The diffusion step samples z = mean + std · ε, as LDM does, then scales it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from typing import Callable, Iterable

import datasets
import numpy as np
import torch

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
MANIFEST = "manifest.json"
DATA_FILE = "data.arrow"


def module_fingerprint(model: torch.nn.Module, ignore_config_keys: Iterable[str] = ("scaling_factor",)) -> str:
    """sha256 of a model's class, config (less `ignore_config_keys`) and every parameter and buffer."""
    digest = hashlib.sha256(type(model).__name__.encode())
    config = getattr(model, "config", None) or {}
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)  # transformers' or diffusers' config
    config = {k: v for k, v in config.items() if k not in set(ignore_config_keys) and not k.startswith("_")}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_key(first_stage_fingerprint: str, data_description: dict) -> str:
    payload = json.dumps({"version": CACHE_VERSION, "first_stage": first_stage_fingerprint, "data": data_description}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def read_cache(
    folder: str,
    expected_key: str,
    expected_rows: int | None,
    required_columns: Iterable[str] = ("latent_mean", "latent_std"),
    kind: str = "latent",
) -> datasets.Dataset | None:
    """The cached dataset, memory-mapped, or None when it is missing, incomplete or corrupt (with a warning for
    the last two). A cache folder holds `DATA_FILE` and `MANIFEST` (its key and number of rows), written last; the
    image cache (`image_cache`, `kind="image"`) is checked the same way, with its own columns and `expected_rows`
    None (its rows are known only once built)."""
    manifest_path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(manifest_path):
        if os.path.exists(folder):
            logger.warning(f"{kind} cache {folder} has no manifest (an interrupted build): rebuilding it")
        return None
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
        if manifest.get("key") != expected_key or expected_rows is not None and manifest.get("rows") != expected_rows:
            raise ValueError(f"manifest {manifest.get('key')}/{manifest.get('rows')} rows, expected {expected_key}/{expected_rows}")
        dataset = datasets.Dataset.from_file(os.path.join(folder, DATA_FILE))
        if len(dataset) != manifest.get("rows") or not set(required_columns) <= set(dataset.column_names):
            raise ValueError(f"{len(dataset)} rows with columns {dataset.column_names}, the manifest says {manifest.get('rows')} rows")
        dataset.data.table.slice(len(dataset) - 1).to_pylist()  # the last row reads back: the file is whole
    except Exception as error:  # noqa: BLE001  (any failure to read means: rebuild)
        logger.warning(f"{kind} cache {folder} is corrupt or stale ({type(error).__name__}: {error}): rebuilding it")
        return None
    return dataset


def build_latent_cache(
    folder: str,
    key: str,
    num_rows: int,
    batches: Iterable[tuple[torch.Tensor, dict]],
    encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    extra_features: dict,
    description: dict | None = None,
) -> datasets.Dataset:
    """Encode every batch and write the cache folder atomically; returns it memory-mapped.

    Args:
        folder: the cache folder (`latents-<key>`); built in `folder + ".tmp"` and renamed into place.
        key, num_rows: what the manifest records (and `read_cache` checks).
        batches: (pixels (B, C, H, W) in [-1, 1], the batch's other columns as lists) in row order.
        encode: pixels → (mean, std), each (B, c, h, w), the first stage's posterior (std 0 for a VQ first stage).
        extra_features: `datasets` features of the other columns.
        description: stored in the manifest for a reader.
    """
    from datasets.arrow_writer import ArrowWriter

    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    writer, rows = None, 0
    for pixels, columns in batches:
        mean, std = encode(pixels)
        mean = mean.float().cpu().numpy()  # (B, c, h, w)
        std = std.float().cpu().numpy()
        if writer is None:
            features = datasets.Features(
                {
                    "latent_mean": datasets.Array3D(shape=mean.shape[1:], dtype="float32"),
                    "latent_std": datasets.Array3D(shape=std.shape[1:], dtype="float32"),
                    **extra_features,
                }
            )
            writer = ArrowWriter(features=features, path=os.path.join(tmp, DATA_FILE))
        writer.write_batch({"latent_mean": list(mean), "latent_std": list(std), **columns})
        rows += len(mean)
    if writer is None:
        raise ValueError("no images to encode")
    writer.finalize()
    writer.close()
    if rows != num_rows:
        raise RuntimeError(f"encoded {rows} rows, expected {num_rows}")
    with open(os.path.join(tmp, MANIFEST), "w") as f:
        json.dump({"key": key, "rows": rows, "version": CACHE_VERSION, "description": description or {}}, f, indent=2, default=str)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return datasets.Dataset.from_file(os.path.join(folder, DATA_FILE))


def take_rows(table, rows):
    """Rows `rows` of a (memory-mapped) Arrow table as zero-copy slices, concatenated: only those rows are read.
    Arrow's `take` on a table of many chunks concatenates each whole column first, a copy of the data in RAM."""
    import pyarrow as pa

    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(rows) == 0:
        return table.slice(0, 0)
    if np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):  # one contiguous run: one slice
        return table.slice(int(rows[0]), len(rows))
    return pa.concat_tables([table.slice(int(row), 1) for row in rows])


def gather_rows(dataset: datasets.Dataset, indices, columns: Iterable[str]) -> dict:
    """Rows `indices` of a memory-mapped cache, read straight from Arrow: array columns (`Array2D` / `Array3D`) as
    torch tensors (B, *shape), others as Python lists. About 40× faster than `dataset[indices]`, whose formatting
    converts every nested value on its own (2 against 80 ms for 128 rows of 4×8×8 latents)."""
    import pyarrow as pa

    columns = list(columns)
    table = take_rows(dataset.data.table.select(columns), indices)
    out = {}
    for name in columns:
        feature = dataset.features[name]
        column = table.column(name).combine_chunks()
        if isinstance(feature, (datasets.Array2D, datasets.Array3D)):
            values = column.storage if isinstance(column, pa.ExtensionArray) else column
            for _ in feature.shape:  # list<list<…<float>>> → the flat values, zero-copy
                values = values.flatten()
            array = values.to_numpy(zero_copy_only=False).reshape(len(indices), *feature.shape)
            out[name] = torch.from_numpy(array.copy() if not array.flags.writeable else array)
        else:
            out[name] = column.to_pylist()
    return out


class CacheRows(torch.utils.data.Dataset):
    """A DataLoader's view of a cache: `__getitems__(indices)` gathers a whole batch with `gather_rows` (the
    DataLoader's `batch_sampler` gives the indices; use `collate_fn=lambda batch: batch`)."""

    def __init__(self, dataset: datasets.Dataset, columns: Iterable[str]):
        self.dataset, self.columns = dataset, list(columns)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices) -> dict:
        return gather_rows(self.dataset, indices, self.columns)


def latent_statistics(dataset: datasets.Dataset, batch_size: int = 4096) -> tuple[float, float]:
    """(mean, std) over every value of z = mean + std · ε of the cached posteriors, without drawing ε:
    E[z] = E[μ], Var[z] = Var[μ] + E[σ²]; read in batches."""
    count, total, total_sq, total_var = 0, 0.0, 0.0, 0.0
    for start in range(0, len(dataset), batch_size):
        rows = gather_rows(dataset, list(range(start, min(start + batch_size, len(dataset)))), ["latent_mean", "latent_std"])
        mu, sigma = rows["latent_mean"].double(), rows["latent_std"].double()
        count += mu.numel()
        total += mu.sum().item()
        total_sq += (mu**2).sum().item()
        total_var += (sigma**2).sum().item()
    mean = total / count
    variance = total_sq / count - mean**2 + total_var / count
    return float(mean), float(np.sqrt(variance))
