"""Helpers every training script shares."""

import itertools
import os
import platform
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from diffusers.optimization import get_scheduler

from hf_genzoo import training_utils
from hf_genzoo.training_utils import (
    epoch_permutation,
    micro_batches,
    plan_steps,
    resolve_mixed_precision,
    set_learning_rate,
    training_command,
    warn_if_slow_bf16,
)


def test_set_learning_rate_rescales_a_running_schedule():
    """After resuming (which restores the checkpoint's rates), the flag's rate takes over and the schedule's
    shape continues from the same step."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=2, num_training_steps=10)
    reference_optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    reference = get_scheduler("cosine", optimizer=reference_optimizer, num_warmup_steps=2, num_training_steps=10)
    for _ in range(4):
        optimizer.step(), scheduler.step(), reference_optimizer.step(), reference.step()
    set_learning_rate(optimizer, 1e-4, scheduler)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(reference_optimizer.param_groups[0]["lr"])
    for _ in range(3):
        optimizer.step(), scheduler.step(), reference_optimizer.step(), reference.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(reference_optimizer.param_groups[0]["lr"])
    assert scheduler.get_last_lr() == pytest.approx(reference.get_last_lr())


def test_plan_steps_refuses_a_batch_larger_than_the_data():
    assert plan_steps(100, 10, 2, 3, None) == (10, 15)
    assert plan_steps(100, 10, 3, 3, 7) == (9, 7)  # epochs end on an optimiser step
    with pytest.raises(ValueError, match="8 training images are fewer than one global batch of 16"):
        plan_steps(8, 16, 1, 1, None)


@pytest.mark.parametrize("rank", [0, 1])
def test_micro_batches_walk_each_epochs_permutation_and_resume_mid_run(rank):
    """2 ranks × 3 images per micro-batch over 20 images: 3 global batches per epoch (the last 2 images dropped);
    each rank takes every other image of a global batch; starting at step s continues the same sequence."""
    args = SimpleNamespace(train_batch_size=3, gradient_accumulation_steps=1, seed=7)
    accelerator = SimpleNamespace(num_processes=2, process_index=rank)
    walk = list(itertools.islice(micro_batches(args, accelerator, 20, 3, 0), 7))
    for index, (micro_index, indices) in enumerate(walk):
        epoch, b = divmod(index, 3)
        expected = epoch_permutation(20, 7, epoch)[b * 6 : (b + 1) * 6][rank::2]
        assert micro_index == index and torch.equal(indices, expected)
    args.gradient_accumulation_steps = 2  # step 2 starts at micro-batch 4
    resumed = list(itertools.islice(micro_batches(args, accelerator, 20, 3, 2), 3))
    assert [i for i, _ in resumed] == [4, 5, 6] and all(torch.equal(a, b) for (_, a), (_, b) in zip(resumed, walk[4:]))


FAULTS_PROBE = """
import resource, sys, torch
from hf_genzoo.training_utils import keep_freed_cpu_memory
kept = keep_freed_cpu_memory() if sys.argv[1] == "keep" else None
torch.ones(16 << 20)  # a 64 MiB buffer, allocated and freed once before counting
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 << 20)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_probe(mode: str, **env) -> tuple[str, int]:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    done = subprocess.run(
        [sys.executable, "-c", FAULTS_PROBE, mode], env={**clean_env, **env}, capture_output=True, text=True, check=True
    )
    kept, faults = done.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_keep_freed_cpu_memory_stops_refaulting_a_freed_buffer():
    # with glibc's defaults a freed 64 MiB buffer goes back to the kernel, so each new one faults in afresh
    # (16,384 small pages, or 32 huge ones where transparent huge pages are always on): ten buffers, ten times
    _, faults_default = _faults_probe("default")
    kept, faults_kept = _faults_probe("keep")
    assert kept == "True"
    assert faults_kept * 4 < faults_default  # at most the first two of the ten buffers fault in
    # the user's own malloc tuning wins: nothing is changed
    for env in ({"MALLOC_ARENA_MAX": "2"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"}):
        kept, faults_user = _faults_probe("keep", **env)
        assert kept == "False" and faults_user * 2 > faults_default


@pytest.mark.parametrize("native", [True, False])
def test_mixed_precision_auto_takes_bf16_only_where_the_cpu_runs_it_natively(monkeypatch, native):
    monkeypatch.setattr(training_utils, "cpu_runs_bf16_natively", lambda: native)
    cpu = torch.device("cpu")
    assert resolve_mixed_precision("auto", cpu) == ("bf16" if native else "no")
    for asked in ("no", "bf16", "fp16", None):  # what the user asked for is kept, native or not
        assert resolve_mixed_precision(asked, cpu) == asked


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo") or platform.machine() != "x86_64", reason="reads x86 CPU flags")
def test_native_bf16_check_agrees_with_the_cpu_flags():
    """PyTorch's oneDNN check and the CPU's own flags (AVX-512 BW or AMX on x86) say the same about this machine."""
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split())
    assert training_utils.cpu_runs_bf16_natively() == bool({"avx512bw", "amx_bf16"} & flags)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_kernels_warns(monkeypatch, native):
    monkeypatch.setattr(training_utils, "cpu_runs_bf16_natively", lambda: native)
    messages = []
    log = SimpleNamespace(warning=messages.append)
    warn_if_slow_bf16(SimpleNamespace(device=torch.device("cpu"), mixed_precision="bf16"), log)
    warn_if_slow_bf16(SimpleNamespace(device=torch.device("cpu"), mixed_precision="no"), log)
    if native:
        assert messages == []
    else:
        assert len(messages) == 1 and "slower than fp32" in messages[0] and "--mixed_precision no" in messages[0]


def test_training_command_names_the_precision_auto_resolved_to():
    args = SimpleNamespace(mixed_precision="no")
    assert training_command("train_gan", args, ["--mixed_precision", "auto", "--seed", "1"], environ={}) == (
        "python training_scripts/train_gan.py --mixed_precision no --seed 1"
    )
    assert training_command("train_gan", args, ["--mixed_precision=auto"]).endswith("train_gan.py --mixed_precision=no")
    assert training_command("train_gan", args, ["--output_dir", "auto"]).endswith("--output_dir auto")


def test_training_command_says_whether_accelerate_launched_the_run():
    """The model card's command is what was run: plain `python`, or `accelerate launch` as detected from the
    environment accelerate's own launcher gives the script (built here by accelerate's launch code)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    launch_args = launch_command_parser().parse_args(["--num_processes", "1", "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no", "train_gan.py"])
    _, launched_env = prepare_simple_launcher_cmd_env(_validate_launch_command(launch_args)[0])
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    args = SimpleNamespace(mixed_precision="no")
    assert training_command("train_gan", args, ["--seed", "1"], environ=plain_env) == "python training_scripts/train_gan.py --seed 1"
    assert training_command("train_gan", args, ["--seed", "1"], environ=launched_env) == (
        "accelerate launch training_scripts/train_gan.py --seed 1"
    )
    two_ranks = {**launched_env, "WORLD_SIZE": "2"}
    assert training_command("train_gan", args, [], environ=two_ranks) == "accelerate launch --num_processes 2 training_scripts/train_gan.py"


def test_held_out_images_of_a_dataset_without_the_split_cover_every_class(tmp_path):
    """A class-sorted folder with no test split: the hold-out is drawn at random from the seed, stratified by label,
    so every class is in both parts (its last images would be the last class alone), and the parts are disjoint."""
    from test_loading import class_sorted_folder

    from hf_genzoo.training_utils import load_split_tensors, load_train_and_held_out

    folder = class_sorted_folder(tmp_path / "sorted")
    args = SimpleNamespace(
        dataset_name=str(folder), train_split="train", eval_split="test", max_train_samples=None, max_eval_samples=6,
        resolution=8, num_channels=1, image_column=None, seed=0, label_column="label",
    )
    (train_images, train_labels, _), (eval_images, eval_labels, _) = load_train_and_held_out(
        lambda split, max_samples: load_split_tensors(args, split, max_samples, "label"), args
    )
    assert len(train_images) == 27 and len(eval_images) == 3  # 10 % of 30
    assert sorted(eval_labels.tolist()) == [0, 1, 2] and set(train_labels.tolist()) == {0, 1, 2}
    # the images travel with their labels (each class is one grey level)
    for images, labels in ((train_images, train_labels), (eval_images, eval_labels)):
        assert (((images[:, 0, 0, 0] + 1) * 127.5).round() == 40 + 80 * labels).all()
