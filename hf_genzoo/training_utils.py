"""What every training script shares: the Accelerator set-up, the train / held-out split, deterministic data order,
atomic checkpoints and resume, divergence handling, validation grids for the trackers, the thread-count warning,
the staged model folder and the Hub upload, and on the CPU the malloc setting that keeps freed memory.

Data order is a pure function of (seed, epoch) and the noise of each micro-batch of (seed, micro-batch index,
rank), so a run resumed from a checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from accelerate import Accelerator

from .utils import save_atomically

logger = logging.getLogger(__name__)

# the Hub upload leaves out what only matters to the local run
UPLOAD_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "validation/**", ".staging*"]


class TrainingDivergedError(RuntimeError):
    """The loss stopped being finite; nothing was saved for the failing step."""


def diverged_error(
    step: int, last_good_checkpoint: str | None, what: str = "the loss", flag: str = "--learning_rate"
) -> TrainingDivergedError:
    return TrainingDivergedError(
        f"{what} stopped being finite at step {step}; nothing was saved for this step. The last good checkpoint "
        f"is {last_good_checkpoint or '(none yet)'}: lower {flag} and resume with --resume_from_checkpoint latest"
    )


def warn_if_single_thread(accelerator: Accelerator, log=logger) -> None:
    """`accelerate launch` sets OMP_NUM_THREADS=1 on CPU unless told otherwise: say so, it costs 2×+ here."""
    cpus = os.cpu_count() or 1
    if accelerator.device.type == "cpu" and torch.get_num_threads() == 1 and cpus > accelerator.num_processes:
        log.warning(
            f"training on 1 CPU thread of {cpus}: `accelerate launch` sets OMP_NUM_THREADS=1 unless told "
            f"otherwise; pass `--num_cpu_threads_per_process {cpus // accelerator.num_processes}` or run the "
            f"script with plain `python` for a single process"
        )


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# glibc before about 2.35 refuses an mmap threshold above 32 MiB (HEAP_MAX_SIZE / 2): fall back to that
_MMAP_THRESHOLD_FALLBACK = 32 << 20
# allocators that replace glibc's malloc when preloaded, making mallopt meaningless
_PRELOADED_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def keep_freed_cpu_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30, log=logger) -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel.

    A training step frees and re-allocates the same multi-megabyte activation buffers every step. With glibc's
    defaults (a sliding mmap threshold, heap trimming) part of them goes back to the kernel each time and comes
    back as fresh zeroed pages: about 16,000–27,000 page faults and 0.1 s of kernel time per step of the diffusion
    UNet at batch 64 on a 2-core CPU, and most of the evaluation time of the VAE main job. Raising both thresholds
    removes the faults (hundreds per step, not tens of thousands) and made that step 18–29 % faster; the price is
    that freed blocks stay with the process (the main job's peak RSS rose from 1.27 to 1.59 GB).

    Process-wide and not undoable: the training scripts call it (through `setup_accelerator`, unless run with
    `--no_keep_freed_memory`) for CPU training, and when their `main` is called inside another process (a test, a
    notebook) it changes that process's malloc too. Does nothing, and returns False, off glibc, when another
    allocator is preloaded, or when the user tuned glibc's malloc (a MALLOC_* variable or glibc.malloc tunables):
    their choice wins."""
    import ctypes
    import platform

    tuned = any(name.startswith("MALLOC_") for name in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")
    preloaded = any(name in os.environ.get("LD_PRELOAD", "") for name in _PRELOADED_ALLOCATORS)
    if platform.system() != "Linux" or tuned or preloaded:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # glibc only: musl has no mallopt thresholds
    except (OSError, AttributeError):
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    int_max = 2**31 - 1
    mmap_threshold, trim_threshold = min(mmap_threshold, int_max), min(trim_threshold, int_max)
    if not libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold):
        mmap_threshold = min(mmap_threshold, _MMAP_THRESHOLD_FALLBACK)
        if not libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold):
            log.warning("glibc refused the malloc setting (mmap threshold); freed memory goes back to the kernel")
            return False
    if not libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold):
        log.warning("glibc refused the malloc setting (trim threshold); freed memory goes back to the kernel")
        return False
    log.info(
        f"glibc malloc keeps freed memory (mmap threshold {mmap_threshold >> 20} MiB, trim threshold "
        f"{trim_threshold >> 20} MiB; --no_keep_freed_memory turns this off)"
    )
    return True


def cpu_runs_bf16_natively() -> bool:
    """Whether PyTorch sends this CPU's bf16 convolutions and matrix products to oneDNN's bf16 kernels: an x86 CPU
    with AVX-512 (BW, VL, DQ) or AMX, or an Arm CPU with bf16 instructions. Without them (an x86 CPU with AVX2
    only, such as AMD's before Zen 4 and most Intel laptops) bf16 autocast falls back to PyTorch's reference kernels:
    the main job's VAE step took about 1.06 s in bf16 against 0.09–0.12 s in fp32 on a 2-core AMD EPYC (Zen 3)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a PyTorch without the check: read the CPU's flags where Linux shows them
        try:
            with open("/proc/cpuinfo") as f:
                flags = set(next((line for line in f if line.startswith(("flags", "Features"))), "").split())
        except OSError:
            return False
        return bool({"avx512bw", "amx_bf16", "bf16"} & flags)


def resolve_mixed_precision(requested: str | None, device: torch.device) -> str | None:
    """`auto` → "bf16" where `device` runs bf16 natively, else "no"; any other value is returned as it is."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    if device.type == "cpu":
        return "bf16" if cpu_runs_bf16_natively() else "no"
    return "no"


def warn_if_slow_bf16(accelerator: Accelerator, log=logger) -> None:
    """bf16 autocast on a CPU without native bf16 kernels is slower than fp32, not faster: say so at the start."""
    if accelerator.device.type == "cpu" and accelerator.mixed_precision == "bf16" and not cpu_runs_bf16_natively():
        log.warning(
            "bf16 autocast on this CPU runs on PyTorch's reference kernels, several times slower than fp32: "
            f"oneDNN's bf16 kernels need AVX-512 or AMX, and PyTorch reports {torch.backends.cpu.get_cpu_capability()}. "
            "Pass --mixed_precision no, or auto to take bf16 only where it is native"
        )


def launched_by_accelerate(environ=None) -> bool:
    """Whether this process was started by `accelerate launch`: every one of its launchers (one process, torchrun,
    DeepSpeed) sets ACCELERATE_DYNAMO_BACKEND in the environment it starts the script with; plain `python` does not."""
    return "ACCELERATE_DYNAMO_BACKEND" in (os.environ if environ is None else environ)


def training_command(script: str, args, argv: list[str] | None = None, environ=None) -> str:
    """The command the model card shows: what was run (`python ...`, or `accelerate launch ...` with its number of
    processes when more than one), and this run's flags, with `--mixed_precision auto` replaced by the precision
    it resolved to (`setup_accelerator` stores it in `args`), so that the command repeats the run on any machine."""
    environ = os.environ if environ is None else environ
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, flag in enumerate(argv):
        if flag == "--mixed_precision=auto":
            argv[i] = f"--mixed_precision={args.mixed_precision}"
        elif flag == "auto" and i > 0 and argv[i - 1] == "--mixed_precision":
            argv[i] = str(args.mixed_precision)
    launcher = "python"
    if launched_by_accelerate(environ):
        world_size = int(environ.get("WORLD_SIZE", "1"))
        launcher = "accelerate launch" + (f" --num_processes {world_size}" if world_size > 1 else "")
    return " ".join([launcher, f"training_scripts/{script}.py", *argv])


def setup_accelerator(args, log=logger, accumulate: bool = True) -> Accelerator:
    """The Accelerator every script starts with (mixed precision, `auto` resolved for the device; trackers under
    `output_dir/logging_dir`; Accelerate's gradient accumulation unless the script accumulates by hand:
    `accumulate=False`), the logging format, the seed, the thread-count and slow-bf16 warnings, on the CPU
    `keep_freed_cpu_memory` (when `args.keep_freed_memory`), and the output folder."""
    from accelerate import PartialState
    from accelerate.utils import ProjectConfiguration, set_seed

    mixed_precision = args.mixed_precision
    if mixed_precision == "auto":
        mixed_precision = resolve_mixed_precision("auto", PartialState().device)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps if accumulate else 1,
        mixed_precision=mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    set_seed(args.seed)
    if args.mixed_precision == "auto":
        log.info(f"--mixed_precision auto: {accelerator.mixed_precision} on {accelerator.device.type}")
        args.mixed_precision = accelerator.mixed_precision  # what the trackers and the model card's command record
    warn_if_single_thread(accelerator, log)
    warn_if_slow_bf16(accelerator, log)
    if accelerator.device.type == "cpu" and getattr(args, "keep_freed_memory", False):
        keep_freed_cpu_memory(log=log)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    return accelerator


def end_training(accelerator: Accelerator) -> None:
    """What every script ends with: the trackers closed, and in a multi-process run the process group shut down
    while Python still runs. Left to interpreter exit, the DDP reducer's last reference destroys the gloo group
    while holding the GIL, joining a worker thread that waits for the GIL: a hang seen once in CI."""
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def load_train_and_held_out(load: Callable[[str, int | None], tuple], args, log=logger) -> tuple[tuple, tuple]:
    """(train, held_out): what `load(split, max_samples)` returns (a tuple whose first item is the images) for
    `--train_split` and `--eval_split`. A dataset without the held-out split holds out min(--max_eval_samples, 10 %)
    of its training images instead, drawn at random from `--seed` and stratified by label where the dataset has one
    (`hf_genzoo.data.loading.held_out_indices`: an image folder is sorted by class, so its last images would be its
    last class), every tensor of the tuple (and every item with a `select`) split alike."""
    train = load(args.train_split, args.max_train_samples)
    try:
        return train, load(args.eval_split, args.max_eval_samples)
    except (ValueError, KeyError) as error:
        from .data.loading import held_out_indices

        num_train = len(train[0])
        num_eval = min(args.max_eval_samples or 1000, num_train // 10)
        labels = training_split_labels(args)
        if labels is not None and len(labels) != num_train:
            labels = None
        train_rows, held_out_rows = held_out_indices(num_train, num_eval, args.seed, labels)
        log.warning(
            f"no {args.eval_split!r} split ({error}); holding out {num_eval} training images drawn at random "
            f"(seed {args.seed}{', stratified by label' if labels is not None else ''})"
        )
        return tuple(_take_rows(x, train_rows) for x in train), tuple(_take_rows(x, held_out_rows) for x in train)


def _take_rows(x, rows: np.ndarray):
    """Rows `rows` of a tensor, or of anything with a `select` (a dataset); anything else (a class count) as it is."""
    if isinstance(x, torch.Tensor):
        return x[torch.as_tensor(rows, dtype=torch.int64)]
    if hasattr(x, "select"):
        return x.select(rows)
    return x


def training_split_labels(args) -> np.ndarray | None:
    """The labels of `--train_split` (after `--max_train_samples`) that a hold-out is stratified by, read from the
    source without preprocessing; None for a dataset without labels."""
    from .data.loading import load_source_dataset, stratification_labels

    shapes_kwargs = {"num_shapes": args.num_shapes} if args.dataset_name == "shapes" and hasattr(args, "num_shapes") else {}
    label_column = getattr(args, "label_column", None)
    dataset = load_source_dataset(
        args.dataset_name, args.train_split, args.resolution, args.max_train_samples, args.seed, label_column, **shapes_kwargs
    )
    return stratification_labels(dataset, label_column)


@contextmanager
def staged_model_folder(output_dir: str, metrics: dict | None = None) -> Iterator[str]:
    """Yields a staging folder for the pipeline, card and pictures; on a clean exit writes `metrics.json` there and
    moves every entry into `output_dir`, `model_index.json` last: a kill mid-way never leaves a half-written model
    folder (a loader sees the old one or the new one)."""
    staging = os.path.join(output_dir, ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    yield staging
    if metrics is not None:
        with open(os.path.join(staging, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2, sort_keys=True)
    save_atomically(staging, output_dir, last="model_index.json")


def card_dataset_fields(args) -> dict:
    """The model-card fields every script fills the same way: the model's name and repo id, the Hub datasets it was
    trained on (none for the generated worlds or local files) and a one-line description of the data."""
    generated = args.dataset_name in ("shapes", "dsprites")
    if args.dataset_name == "shapes":
        description = f"the hf_genzoo shapes world ({args.resolution}×{args.resolution}, {args.num_shapes} shape(s) per image)"
    elif args.dataset_name == "dsprites":
        description = "the dSprites factor grid, regenerated by hf_genzoo (not the original archive)"
    else:
        description = f"`{args.dataset_name}` at {args.resolution}×{args.resolution}"
    return {
        "model_name": args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir)),
        "repo_id": args.hub_model_id or args.output_dir,
        "datasets": [] if generated or os.path.exists(args.dataset_name) else [args.dataset_name],
        "dataset_name": args.dataset_name,
        "dataset_description": description,
    }


def load_split_tensors(args, split: str, max_samples: int | None, label_column: str | None = None):
    """A split of `args.dataset_name` preprocessed once by `load_image_dataset` (resolution, channels, crop/flip
    from the flags the scripts share): (pixel_values (N, C, H, W) in [-1, 1], labels (N,) int64 or None, number
    of classes or None). Labels are read only when `label_column` is given; a dataset without it is an error that
    lists the columns it has."""
    import datasets

    from .data import load_image_dataset

    dataset = load_image_dataset(
        args.dataset_name,
        split=split,
        resolution=args.resolution,
        num_channels=args.num_channels,
        center_crop=getattr(args, "center_crop", True),
        random_flip=getattr(args, "random_flip", False),
        image_column=args.image_column,
        max_samples=max_samples,
        seed=args.seed,
        label_column=label_column or getattr(args, "label_column", None),
        **({"num_shapes": args.num_shapes} if args.dataset_name == "shapes" and hasattr(args, "num_shapes") else {}),
    )
    if label_column is None:
        return dataset.select_columns(["pixel_values"])[:]["pixel_values"], None, None
    if label_column not in dataset.column_names:
        others = [c for c in dataset.column_names if c != "pixel_values"]
        raise ValueError(f"class labels are needed; {label_column!r} is not one of {others}")
    columns = dataset.select_columns(["pixel_values", label_column])[:]  # one read into tensors
    labels = torch.as_tensor(columns[label_column], dtype=torch.int64)
    if labels.min() < 0:
        raise ValueError(f"labels in {label_column!r} must be ≥ 0, found {int(labels.min())}")
    feature = dataset.features[label_column]
    num_classes = feature.num_classes if isinstance(feature, datasets.ClassLabel) else int(labels.max()) + 1
    return columns["pixel_values"], labels, num_classes


def min_snr_weights(noise_scheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """min-SNR-γ weights (Hang et al. 2023, eq. 9) for a loss on ε, v or x_0: with SNR_t = ᾱ_t / (1 − ᾱ_t),
    w_t = min(SNR_t, γ) / SNR_t (ε), min(SNR_t, γ) / (SNR_t + 1) (v), min(SNR_t, γ) (x_0). (B,)"""
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps]  # (B,)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    clipped = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped


def denoising_loss(unet, noise_scheduler, x_0, timesteps, noise, snr_gamma=None, **unet_kwargs) -> torch.Tensor:
    """The regression of Algorithm 1 of Ho et al. (2020), shared by the pixel and latent diffusion scripts: with
    x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, the mean over the batch of ‖target − unet(x_t, t, **unet_kwargs)‖² / D, the target
    being ε, v = √ᾱ_t ε − √(1−ᾱ_t) x_0 or x_0 as the scheduler's `prediction_type` says, each image weighted by
    min-SNR-γ when `snr_gamma` is set. x_0, noise (B, C, H, W); timesteps (B,). Returns the scalar loss."""
    import torch.nn.functional as F

    if x_0.is_contiguous(memory_format=torch.channels_last):
        noise = noise.contiguous(memory_format=torch.channels_last)
    x_t = noise_scheduler.add_noise(x_0, noise, timesteps)  # √ᾱ_t x_0 + √(1−ᾱ_t) ε
    model_output = unet(x_t, timesteps, **unet_kwargs).sample
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(x_0, noise, timesteps)  # √ᾱ_t ε − √(1−ᾱ_t) x_0
    else:
        target = x_0
    per_image = F.mse_loss(model_output.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))  # (B,)
    if snr_gamma is not None:
        per_image = per_image * min_snr_weights(noise_scheduler, timesteps, snr_gamma, prediction_type)
    return per_image.mean()


def plan_steps(
    num_train: int, global_batch: int, gradient_accumulation_steps: int, num_epochs: int, max_train_steps: int | None
) -> tuple[int, int]:
    """(micro-batches per epoch, optimiser steps in the run). Epochs end on an optimiser step; the last partial
    batch of an epoch is dropped."""
    batches_per_epoch = num_train // global_batch
    if batches_per_epoch < 1:
        raise ValueError(f"{num_train} training images are fewer than one global batch of {global_batch}")
    steps_per_epoch = batches_per_epoch // gradient_accumulation_steps
    if steps_per_epoch < 1:
        raise ValueError(
            f"an epoch of {batches_per_epoch} batches is shorter than --gradient_accumulation_steps "
            f"{gradient_accumulation_steps}"
        )
    return steps_per_epoch * gradient_accumulation_steps, max_train_steps or num_epochs * steps_per_epoch


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of one epoch: a function of (seed, epoch) only, so a resumed run sees the same batches."""
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def micro_batches(args, accelerator: Accelerator, num_train: int, batches_per_epoch: int, start_step: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(micro-batch index, this rank's sample indices), endlessly, from optimiser step `start_step` on: epoch e walks
    `epoch_permutation(num_train, seed, e)` in global batches of `train_batch_size × processes`, each split across
    the ranks; `gradient_accumulation_steps` micro-batches make one optimiser step. A function of (seed, step) only,
    so a resumed run sees the batches the uninterrupted run would have."""
    global_batch = args.train_batch_size * accelerator.num_processes
    micro_index = start_step * args.gradient_accumulation_steps
    epoch, order = None, None
    while True:
        this_epoch, b = divmod(micro_index, batches_per_epoch)
        if this_epoch != epoch:
            epoch, order = this_epoch, epoch_permutation(num_train, args.seed, this_epoch)
        global_indices = order[b * global_batch : (b + 1) * global_batch]
        yield micro_index, global_indices[accelerator.process_index :: accelerator.num_processes]
        micro_index += 1


def image_batches(args, accelerator: Accelerator, images, batches_per_epoch: int, start_step: int):
    """`(micro_index, batch)` of a training split held in the image cache (`hf_genzoo.data.image_cache.ImageSplit`),
    in the order `micro_batches` gives from optimiser step `start_step`, read by a DataLoader with
    `--dataloader_num_workers` workers; `--random_flip` and the random crops of `--no-center_crop` drawn from
    (seed, epoch, image)."""
    from .data.image_cache import training_batches

    return training_batches(
        images,
        micro_batches(args, accelerator, len(images), batches_per_epoch, start_step),
        batches_per_epoch,
        args.seed,
        random_flip=args.random_flip,
        random_crop=not args.center_crop,
        num_workers=args.dataloader_num_workers,
    )


def micro_batch_generator(seed: int, micro_index: int, rank: int) -> torch.Generator:
    """The CPU generator of one micro-batch's noise (corruption, t, ε, label dropout): (seed, index, rank)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + micro_index) * 64 + rank)


def checkpoint_steps(output_dir: str) -> list[int]:
    """Steps of the complete `checkpoint-N` folders in `output_dir`, in increasing order."""
    if not os.path.isdir(output_dir):
        return []
    names = (d.split("-", 1)[1] for d in os.listdir(output_dir) if d.startswith("checkpoint-"))
    return sorted(int(step) for step in names if step.isdigit())


def find_checkpoint(output_dir: str, name: str) -> str | None:
    """A checkpoint folder by path or name, or the newest one for "latest" (None if there is none)."""
    if name != "latest":
        return name if os.path.isdir(name) else os.path.join(output_dir, name)
    steps = checkpoint_steps(output_dir)
    return os.path.join(output_dir, f"checkpoint-{steps[-1]}") if steps else None


def save_checkpoint(accelerator: Accelerator, output_dir: str, global_step: int, total_limit: int) -> str:
    """`save_state` into a temporary folder renamed into place, so a kill never leaves a half checkpoint; then
    keep only the newest `total_limit` checkpoints. Returns the folder, once it is in place.

    Every process calls it, as diffusers' examples call `save_state` under DeepSpeed: each rank writes its part
    into the same temporary folder (its RNG states; under DeepSpeed or FSDP's sharded state dicts, its shard of
    the model and optimiser), and the main process alone clears, renames and prunes, between barriers. With
    several machines the output folder must be one shared file system, as for diffusers' examples."""
    final = os.path.join(output_dir, f"checkpoint-{global_step}")
    tmp = final + ".tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()  # no rank writes into the temporary folder before it has been cleared
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()  # every rank's part is written before the rename
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        steps = checkpoint_steps(output_dir)
        for step in steps[: max(0, len(steps) - total_limit)]:
            shutil.rmtree(os.path.join(output_dir, f"checkpoint-{step}"), ignore_errors=True)
        logger.info(f"saved {final}")
    accelerator.wait_for_everyone()  # no rank goes on (or stops and resumes) before the checkpoint is in place
    return final


def resume(accelerator: Accelerator, output_dir: str, resume_from_checkpoint: str | None) -> int:
    """Load the checkpoint named by `--resume_from_checkpoint` (a path, a name, or "latest") and return its step;
    0 when there is nothing to resume."""
    if not resume_from_checkpoint:
        return 0
    path = find_checkpoint(output_dir, resume_from_checkpoint)
    if path is None:
        logger.info(f"no checkpoint in {output_dir}; starting from scratch")
        return 0
    if not os.path.isdir(path):
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        accelerator.load_state(path)
    except RuntimeError as error:
        if "Error(s) in loading state_dict" not in str(error):
            raise
        lines = str(error).strip().splitlines()
        detail = "; ".join(line.strip() for line in lines[1:3])  # the first missing / unexpected / mis-sized keys
        raise ValueError(
            f"checkpoint {path} holds a different model than these flags build ({lines[0].rstrip(':')}: "
            f"{detail[:300]}); resume with the model flags the run was started with"
        ) from error
    step = int(os.path.basename(path.rstrip("/")).split("-")[1])
    logger.info(f"resumed from {path} at step {step}")
    return step


def set_learning_rate(optimizer, learning_rate: float, lr_scheduler=None) -> None:
    """Make the flag's learning rate the one in force after `load_state`, which restores the checkpoint's (so
    "lower --learning_rate and resume" works). With a LambdaLR schedule (diffusers' `get_scheduler`) the base rate
    changes and the schedule's factor at the current step is kept; unchanged flags leave everything as it was."""
    scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate wraps it
    for i, group in enumerate(optimizer.param_groups):
        group["initial_lr"] = learning_rate
        factor = 1.0
        if scheduler is not None:
            scheduler.base_lrs[i] = learning_rate
            factor = scheduler.lr_lambdas[i](scheduler.last_epoch) if hasattr(scheduler, "lr_lambdas") else 1.0
        group["lr"] = learning_rate * factor
    if scheduler is not None:
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def flag_given(name: str, argv: list[str] | None = None) -> bool:
    """Whether the flag `name` ("--learning_rate") is on the command line `argv` (default `sys.argv[1:]`), as
    `--name value` or `--name=value`: what `parse_args` records so that resuming can tell a flag given from its
    default."""
    argv = sys.argv[1:] if argv is None else argv
    return any(token == name or token.startswith(name + "=") for token in argv)


def resume_learning_rate(
    optimizer, learning_rate: float, given: bool, lr_scheduler=None, flag: str = "--learning_rate", log=logger
) -> None:
    """After `resume`: keep the checkpoint's learning-rate schedule (what `load_state` restored), unless `flag` was
    given on the resume command (`given`, from `flag_given`), when its rate replaces the base rate
    (`set_learning_rate`: "lower --learning_rate and resume"); log which. A flag left at its default never replaces
    the checkpoint's schedule."""
    if given:
        set_learning_rate(optimizer, learning_rate, lr_scheduler)
        log.info(f"resumed with {flag} {learning_rate} (given on this command)")
    else:
        lr = optimizer.param_groups[0]["lr"]
        log.info(f"resumed with the checkpoint's learning-rate schedule (lr {lr:.3g}; give {flag} to replace it)")


def log_grid(accelerator: Accelerator, grid, step: int, name: str = "validation") -> None:
    """Send a PIL grid to the trackers that take images (TensorBoard, Weights & Biases)."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            image = np.asarray(grid.convert("RGB"))[None]  # (1, H, W, 3)
            tracker.log_images({name: image}, step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({name: [grid]}, step)


def save_validation_grid(accelerator: Accelerator, output_dir: str, grid, step: int) -> None:
    """validation/step-NNNNNN.png, and the trackers."""
    os.makedirs(os.path.join(output_dir, "validation"), exist_ok=True)
    grid.save(os.path.join(output_dir, "validation", f"step-{step:06d}.png"))
    log_grid(accelerator, grid, step)


def tracker_config(args) -> dict:
    """The flags that trackers can store (scalars only)."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}


def push_output_folder(args, commit_message: str) -> None:
    """Upload the model folder (not checkpoints, logs or validation grids) to `args.hub_model_id`."""
    from huggingface_hub import create_repo, upload_folder

    create_repo(args.hub_model_id, exist_ok=True, token=args.hub_token)
    upload_folder(
        repo_id=args.hub_model_id,
        folder_path=args.output_dir,
        commit_message=commit_message,
        ignore_patterns=[*UPLOAD_IGNORE_PATTERNS, f"{args.logging_dir}/**"],
        token=args.hub_token,
    )


def scaled_to_run(full: int, max_train_steps: int, full_steps: int = 1000, minimum: int = 100) -> int:
    """An evaluation size for a run of `max_train_steps`: `full` for runs of `full_steps` or more, in proportion for
    shorter ones (at least `minimum`), so that a short run is not judged for many times as long as it trained."""
    return max(min(minimum, full), min(full, round(full * max_train_steps / full_steps)))


def run_summary(output_dir: str, metrics: dict, headline: Iterable[str], seconds: dict[str, float]) -> str:
    """The lines a training script ends with: where its folder is, the headline metrics it measured (those of
    `headline` present in `metrics`) and how long each part took (`seconds`: e.g. training, evaluation)."""
    numbers = ", ".join(
        f"{key} {metrics[key]:.4g}" if isinstance(metrics[key], float) else f"{key} {metrics[key]}"
        for key in headline
        if metrics.get(key) is not None
    )
    times = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    return "\n".join(
        [
            f"saved to {os.path.abspath(output_dir)}",
            f"measured: {numbers or 'nothing'}",
            f"time: {times}",
        ]
    )
