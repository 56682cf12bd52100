"""The flags every training script shares, with argparse alone: the scripts parse their arguments before they import
torch, diffusers, transformers or datasets, so that `--help` and a mistyped flag answer at once instead of after the
10-15 s those imports take.

Each script reads: stdlib imports, this module, the constants its flags name, `parse_args()`, then

    answer_help_first(__name__, parse_args)

then the heavy imports and the rest. Only the parser's construction has to do without the heavy modules: `--help`
exits inside `parser.parse_args`, before anything after it runs. A script loaded as a module (the tests, the
benchmarks: `training_scripts/` on sys.path) imports everything as before.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Callable

MIXED_PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")


def description(doc: str) -> str:
    """The `--help` description: the first paragraph of a script's docstring, as one line (not its first line only,
    which may stop mid-sentence)."""
    return re.sub(r"\s+", " ", doc.strip().split("\n\n")[0])


def answer_help_first(module_name: str, parse_args: Callable[[], object]) -> None:
    """In a script run with -h / --help: print its help and exit now, before the heavy imports that follow."""
    if module_name == "__main__" and any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        parse_args()


def add_keep_freed_memory_argument(parser: argparse.ArgumentParser) -> None:
    """The scripts' opt-out of `hf_genzoo.training_utils.keep_freed_cpu_memory`."""
    parser.add_argument(
        "--no_keep_freed_memory",
        dest="keep_freed_memory",
        action="store_false",
        help="on the CPU, leave glibc's malloc at its defaults instead of keeping freed memory for reuse (see "
        "hf_genzoo.training_utils.keep_freed_cpu_memory)",
    )


def add_mixed_precision_argument(parser: argparse.ArgumentParser) -> None:
    """`--mixed_precision`, with `auto` beside Accelerate's own values (`hf_genzoo.training_utils.resolve_mixed_precision`)."""
    parser.add_argument(
        "--mixed_precision",
        choices=MIXED_PRECISION_CHOICES,
        default=None,
        help="default: accelerate config (accelerate launch's --mixed_precision, else no); auto: bf16 where the "
        "device runs it natively (a CUDA GPU with bf16, a CPU with AVX-512 or AMX), else no (fp32). On a CPU "
        "without native bf16 (AVX2 only) bf16 runs several times slower than fp32",
    )


def add_augmentation_arguments(parser: argparse.ArgumentParser) -> None:
    """`--center_crop` / `--no-center_crop` and `--random_flip`: drawn per image and epoch on the training split only."""
    parser.add_argument(
        "--center_crop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="centre-crop the resized images; --no-center_crop: a crop drawn anew for each training image in each epoch "
        "(the held-out images are centre-cropped)",
    )
    parser.add_argument(
        "--random_flip",
        action="store_true",
        help="flip half the training images left-right, drawn anew for each image in each epoch from (seed, epoch, "
        "image), so a resumed run flips as the uninterrupted one (never the held-out images)",
    )


def add_image_loading_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the images preprocessed once are kept, and the DataLoader's workers (`hf_genzoo.data.image_cache`)."""
    parser.add_argument(
        "--cache_dir",
        default=None,
        help="where the images preprocessed once are kept, as uint8 Arrow files read memory-mapped, so that memory does "
        "not grow with the dataset (default: $HF_GENZOO_CACHE, else ~/.cache/hf_genzoo/pixels)",
    )
    parser.add_argument(
        "--dataloader_num_workers",
        type=_non_negative_int,
        default=0,
        help="worker processes reading the training batches (0: the main process)",
    )


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value
