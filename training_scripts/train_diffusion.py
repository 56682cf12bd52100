#!/usr/bin/env python
"""Train a pixel-space diffusion model (DDPM, Ho et al. 2020), unconditional or class-conditional, with 🤗 Accelerate.

    accelerate launch training_scripts/train_diffusion.py --class_conditional --output_dir shapes-ddpm
    python training_scripts/train_diffusion.py --dataset_name ../shared/data/mnist --resolution 28 --num_channels 1

The network is diffusers' `UNet2DModel`; the loss is Algorithm 1 of Ho et al. (../shared/EQUATIONS.md, "DDPM"):
t ~ U{0..T−1}, ε ~ N(0, I), x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, regress ε (or v = √ᾱ_t ε − √(1−ᾱ_t) x_0, or x_0), optionally
weighted by min-SNR-γ (Hang et al. 2023). Class-conditional training feeds labels to the UNet's class embedding and
replaces each by the null label ∅ = num_classes with probability `--label_dropout`, for classifier-free guidance.

The output folder is a saved `PixelDiffusionPipeline` (model_index.json, unet/ with safetensors weights, scheduler/)
— the EMA weights unless `--no-use_ema` — plus README.md (model card), samples.png, metrics.json; `checkpoint-*`
folders (accelerate's `save_state`) beside them allow `--resume_from_checkpoint latest`. Data order and every random
draw are functions of (seed, step, rank) (hf_genzoo.training_utils), so a resumed run continues exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from script_args import (
    add_augmentation_arguments,
    add_image_loading_arguments,
    add_keep_freed_memory_argument,
    add_mixed_precision_argument,
    answer_help_first,
    description,
)

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description(__doc__))
    # data
    parser.add_argument("--dataset_name", default="shapes", help="'shapes', a Hub dataset id, an image folder or a parquet file/folder")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--eval_split", default="test", help="held-out split for bits/dim")
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--label_column", default="label", help="class labels for --class_conditional (a ClassLabel or integer column)")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--num_channels", type=int, default=3, choices=(1, 3))
    add_augmentation_arguments(parser)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=1000)
    parser.add_argument("--num_shapes", type=int, default=1, choices=(1, 2), help="shapes per scene in the shapes world")
    add_image_loading_arguments(parser)
    # model
    parser.add_argument("--block_out_channels", type=int, nargs="+", default=[32, 64, 64])
    parser.add_argument("--layers_per_block", type=int, default=1)
    parser.add_argument("--attention_levels", type=int, nargs="*", default=[-1], help="resolution levels with self-attention (indices into --block_out_channels)")
    parser.add_argument("--attention_head_dim", type=int, default=64)
    parser.add_argument("--norm_num_groups", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--class_conditional", action="store_true", help="condition on --label_column through the UNet's class embedding")
    parser.add_argument("--label_dropout", type=float, default=0.1, help="probability of replacing a label by ∅ (classifier-free guidance)")
    # diffusion
    parser.add_argument("--num_train_timesteps", type=int, default=1000)
    parser.add_argument("--beta_schedule", default="linear", choices=BETA_SCHEDULES)
    parser.add_argument(
        "--prediction_type",
        default="v_prediction",
        choices=PREDICTION_TYPES,
        help="what the UNet regresses. v (the default) keeps x̂_0 well conditioned at high noise, so short CPU runs "
        "sample cleanly with DDIM; ε after the same 3,000 steps still left noise in every sample (README)",
    )
    parser.add_argument("--snr_gamma", type=float, default=5.0, help="γ of min-SNR loss weighting (Hang et al. 2023, whose default is 5); 0 turns it off")
    # optimisation
    parser.add_argument("--train_batch_size", type=int, default=64, help="per process")
    parser.add_argument("--num_epochs", type=int, default=20)
    parser.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_epochs")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--lr_scheduler", default="cosine", choices=("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"))
    parser.add_argument("--lr_warmup_steps", type=int, default=200)
    parser.add_argument("--adam_beta1", type=float, default=0.9)
    parser.add_argument("--adam_beta2", type=float, default=0.999)
    parser.add_argument("--adam_weight_decay", type=float, default=0.0)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    add_mixed_precision_argument(parser)
    parser.add_argument(
        "--channels_last",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="channels-last tensors; off by default: with the UNet's skip concatenations it is slower on the CPU under bf16 (benchmarks/bench_diffusion_train.py)",
    )
    parser.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True, help="EMA of the UNet weights (saved and sampled from)")
    parser.add_argument("--ema_max_decay", type=float, default=0.9999)
    parser.add_argument("--ema_power", type=float, default=0.75, help="EMA warm-up: decay = 1 − (1 + step)^−power, capped at --ema_max_decay")
    parser.add_argument("--seed", type=int, default=0)
    # checkpoints, logging, outputs, evaluation
    parser.add_argument("--output_dir", default="shapes-ddpm")
    parser.add_argument("--checkpointing_steps", type=int, default=1000)
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest'")
    parser.add_argument("--validation_steps", type=int, default=1000, help="save a sample grid every N steps")
    parser.add_argument("--report_to", default="none", help="accelerate trackers: tensorboard, wandb, all, none")
    add_keep_freed_memory_argument(parser)
    parser.add_argument("--logging_dir", default="logs")
    parser.add_argument("--num_inference_steps", type=int, default=50, help="DDIM steps of the grids and the sample metrics")
    parser.add_argument("--guidance_scale", type=float, default=1.0, help="classifier-free guidance of the grids and the sample metrics")
    parser.add_argument("--num_generated", type=int, default=500, help="samples judged by the shapes oracle / the FID; each costs --num_inference_steps UNet passes, so the final evaluation of a short run is shorter with e.g. 100")
    parser.add_argument("--num_likelihood_images", type=int, default=256, help="held-out images of the bits/dim bound (0: skip; a shorter evaluation with e.g. 32)")
    parser.add_argument("--likelihood_timesteps", type=int, default=None, help="K sampled terms of the bound (default all T: exact)")
    parser.add_argument("--fid_classifier", default=None, help="a DomainClassifier folder (training_scripts/train_domain_classifier.py): report FID on its features")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)
    parser.add_argument("--hub_token", default=None)
    args = parser.parse_args(argv)
    args.learning_rate_given = flag_given("--learning_rate", argv)  # resuming keeps the checkpoint's schedule unless given

    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. your-name/shapes-ddpm)")
    for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "validation_steps", "num_epochs", "num_inference_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    if not 0.0 <= args.label_dropout < 1.0:
        parser.error(f"--label_dropout must lie in [0, 1), got {args.label_dropout}")
    if args.num_inference_steps > args.num_train_timesteps:
        parser.error(f"--num_inference_steps {args.num_inference_steps} exceeds --num_train_timesteps {args.num_train_timesteps}")
    if args.snr_gamma is not None and args.snr_gamma < 0:
        parser.error(f"--snr_gamma must be ≥ 0 (0: off), got {args.snr_gamma}")
    if args.snr_gamma == 0:
        args.snr_gamma = None
    levels = len(args.block_out_channels)
    if any(not -levels <= level < levels for level in args.attention_levels):
        parser.error(f"--attention_levels {args.attention_levels} must index the {levels} levels of --block_out_channels")
    bad_groups = [c for c in args.block_out_channels if c % args.norm_num_groups]
    if bad_groups:
        parser.error(f"--norm_num_groups {args.norm_num_groups} must divide every --block_out_channels, not {bad_groups}")
    return args


answer_help_first(__name__, parse_args)
# the heavy imports come after argument parsing, so that `--help` answers at once
import torch  # noqa: E402
from accelerate.logging import get_logger  # noqa: E402
from diffusers import UNet2DModel  # noqa: E402
from diffusers.models.attention_processor import Attention, AttnProcessor  # noqa: E402
from diffusers.optimization import get_scheduler  # noqa: E402
from diffusers.training_utils import EMAModel  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from hf_genzoo import GenZooDDIMScheduler, GenZooDDPMScheduler, PixelDiffusionPipeline  # noqa: E402
from hf_genzoo.data.image_cache import ImageSplit, load_image_split  # noqa: E402
from hf_genzoo.hub import write_model_card  # noqa: E402
from hf_genzoo.metrics import sample_quality_metrics  # noqa: E402
from hf_genzoo.metrics.evaluate import EvaluationProgress  # noqa: E402
from hf_genzoo.training_utils import (  # noqa: E402
    denoising_loss,
    training_command,
    card_dataset_fields,
    end_training,
    TrainingDivergedError,
    diverged_error,
    image_batches,
    find_checkpoint,
    load_train_and_held_out,
    micro_batch_generator,
    plan_steps,
    push_output_folder,
    flag_given,
    resume,
    resume_learning_rate,
    run_summary,
    save_checkpoint,
    save_validation_grid,
    setup_accelerator,
    staged_model_folder,
    tracker_config,
)
from hf_genzoo.utils import enlarged_grid  # noqa: E402

logger = get_logger(__name__, log_level="INFO")


# ---- model and data ------------------------------------------------------------------------------------------


def build_unet(args, num_classes: int | None) -> UNet2DModel:
    """diffusers' UNet2DModel: ResNet blocks at each level, self-attention at `--attention_levels`, and (class-
    conditional) `num_classes + 1` class embeddings, the last being ∅."""
    levels = len(args.block_out_channels)
    attention = {level % levels for level in args.attention_levels}
    down = tuple("AttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(levels))
    up = tuple(block.replace("Down", "Up") for block in reversed(down))
    downsampling = 2 ** (levels - 1)
    if args.resolution % downsampling:
        raise ValueError(
            f"--resolution {args.resolution} must be divisible by {downsampling}, the UNet's downsampling with "
            f"{levels} levels of --block_out_channels"
        )
    return UNet2DModel(
        sample_size=args.resolution,
        in_channels=args.num_channels,
        out_channels=args.num_channels,
        block_out_channels=tuple(args.block_out_channels),
        layers_per_block=args.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=args.attention_head_dim,
        norm_num_groups=args.norm_num_groups,
        dropout=args.dropout,
        num_class_embeds=None if num_classes is None else num_classes + 1,
    )


def prepare_for_training(unet: UNet2DModel, args, device: torch.device) -> UNet2DModel:
    """Memory format and attention kernel for the training step. On the CPU the self-attention runs through diffusers'
    `AttnProcessor` (batched matmuls, softmax in fp32) instead of `scaled_dot_product_attention`, whose bf16 backward
    is slow there: 7.3 against 13.6 ms per attention block, forward and backward, at 8×8 with batch 64; the same
    function (tested). Neither choice is saved with the model: a loaded model runs the default processor."""
    if args.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    if torch.device(device).type == "cpu":
        for module in unet.modules():
            if isinstance(module, Attention):
                module.set_processor(AttnProcessor())
    return unet


def build_optimizer(unet: UNet2DModel, args) -> torch.optim.AdamW:
    """AdamW with the fused kernel (one pass over all parameters; on this CPU 2.3 ms per step against 9.4 ms for
    the per-tensor loop with this UNet's 182 tensors)."""
    return torch.optim.AdamW(
        unet.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        fused=True,
    )


def build_noise_scheduler(args) -> GenZooDDPMScheduler:
    return GenZooDDPMScheduler(
        num_train_timesteps=args.num_train_timesteps,
        beta_schedule=args.beta_schedule,
        prediction_type=args.prediction_type,
        clip_sample=True,
    )


def load_split(args, split: str, max_samples: int | None) -> tuple[ImageSplit, torch.Tensor | None, int | None]:
    """The split preprocessed once into a memory-mapped uint8 cache (`hf_genzoo.data.image_cache`; indexing it reads
    those images only, as float in [-1, 1]), its labels (N,) and number of classes, or None, None without
    --class_conditional."""
    images = load_image_split(args, split, max_samples)
    return (images, *images.labels(args.label_column)) if args.class_conditional else (images, None, None)


# ---- the training step ---------------------------------------------------------------------------------------


def diffusion_loss(unet, noise_scheduler, x_0, generator, class_labels=None, null_label=None, label_dropout=0.0, snr_gamma=None):
    """Algorithm 1 of Ho et al. (2020) on one batch x_0 (B, C, H, W) in [-1, 1]; every draw (t, ε, dropped labels)
    comes from the CPU `generator`. Returns the scalar loss."""
    batch = x_0.shape[0]
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator).to(x_0.device)  # (B,)
    noise = torch.randn(x_0.shape, generator=generator).to(x_0.device, x_0.dtype)  # ε (B, C, H, W)
    if class_labels is not None:
        drop = torch.rand(batch, generator=generator).to(x_0.device) < label_dropout  # (B,)
        class_labels = torch.where(drop, torch.full_like(class_labels, null_label), class_labels)
    return denoising_loss(unet, noise_scheduler, x_0, timesteps, noise, snr_gamma, class_labels=class_labels)


def training_step(accelerator, unet, noise_scheduler, optimizer, lr_scheduler, x_0, generator, args, class_labels=None, null_label=None):
    """One micro-batch: loss under autocast, backward, and (on accumulation boundaries) the optimiser step.
    Returns the loss, or None (before any update) when it is not finite."""
    with accelerator.accumulate(unet):
        with accelerator.autocast():
            loss = diffusion_loss(
                unet, noise_scheduler, x_0, generator, class_labels, null_label, args.label_dropout, args.snr_gamma
            )
        if not torch.isfinite(loss):
            return None
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return loss.detach()


# ---- sampling and evaluation ---------------------------------------------------------------------------------


def make_pipeline(unet: UNet2DModel, noise_scheduler: GenZooDDPMScheduler) -> PixelDiffusionPipeline:
    """The published pipeline samples with DDIM ("trailing" steps, so few steps reach t = T − 1); the training
    schedule is kept, and `pipe.likelihood` rebuilds the DDPM bound from the same config."""
    scheduler = GenZooDDIMScheduler.from_config(noise_scheduler.config, timestep_spacing="trailing")
    return PixelDiffusionPipeline(unet=unet, scheduler=scheduler)


def sample_labels(num_classes: int | None, count: int) -> list[int] | None:
    """Every class in turn: 0, 1, …, num_classes − 1, 0, 1, …"""
    return None if num_classes is None else [i % num_classes for i in range(count)]


@torch.no_grad()
def generate(pipe: PixelDiffusionPipeline, count: int, labels, args, seed: int, batch_size: int = 128, progress=None) -> torch.Tensor:
    """`count` samples (B, C, H, W) in [-1, 1], in batches (a bar over them with an `EvaluationProgress`); labels
    per image (or None)."""
    out = []
    generator = torch.Generator().manual_seed(seed)
    starts = range(0, count, batch_size)
    for start in starts if progress is None else progress.batches(starts, desc="sampling batches"):
        n = min(batch_size, count - start)
        kwargs = {}
        if labels is not None:
            kwargs = {"class_labels": labels[start : start + n], "guidance_scale": args.guidance_scale}
        images = pipe(
            batch_size=n, generator=generator, num_inference_steps=args.num_inference_steps, output_type="pt", **kwargs
        ).images  # [0, 1]
        out.append(images.float().cpu() * 2 - 1)
    return torch.cat(out)


def sample_grid(pipe, num_classes, args, count: int = 16):
    """A grid of `count` samples from a fixed seed (one per class in turn when class-conditional)."""
    pipe.set_progress_bar_config(disable=True)
    labels = sample_labels(num_classes, count)
    names = None if labels is None else [f"classes {labels[r]}–{labels[min(r + 7, count - 1)]}" for r in range(0, count, 8)]
    return enlarged_grid(generate(pipe, count, labels, args, seed=args.seed), nrow=8, row_labels=names)


@torch.no_grad()
def evaluate(pipe, eval_images, num_classes, args, progress: EvaluationProgress | None = None) -> dict:
    """bits/dim of held-out images (the variational bound), and on generated samples the shapes oracle's
    validity/coverage (and attribute accuracy when class-conditional) or the FID on a domain classifier.
    `progress` shows the stages and batches as they run and logs each one's time."""
    progress = progress or EvaluationProgress(enabled=False)
    metrics: dict = {}
    pipe.set_progress_bar_config(disable=True)
    if args.num_likelihood_images:
        x = eval_images[: args.num_likelihood_images]
        generator = torch.Generator().manual_seed(args.seed)
        with progress.stage(f"bits/dim of {len(x)} held-out images"):
            bits = torch.cat([
                # the held-out images are in [-1, 1]; the pipeline reads images in [0, 1], as diffusers' pipelines do
                pipe.likelihood((batch + 1) / 2, num_sampled_timesteps=args.likelihood_timesteps, generator=generator).float().cpu()
                for batch in progress.batches(x.split(128), desc="likelihood batches")
            ])
        metrics["bits_per_dim"] = float(bits.mean())
        metrics["likelihood_images"] = len(x)
    labels = sample_labels(num_classes, args.num_generated)
    with progress.stage(f"{args.num_generated} samples, {args.num_inference_steps} steps each"):
        samples = generate(pipe, args.num_generated, labels, args, seed=args.seed + 1, progress=progress)
    with progress.stage("oracle" + (" and FID" if args.fid_classifier else "") if args.dataset_name == "shapes" else "FID"):
        metrics.update(
            sample_quality_metrics(
                samples,
                labels,
                shapes_resolution=args.resolution if args.dataset_name == "shapes" else None,
                real_images=eval_images,
                fid_classifier=args.fid_classifier,
            )
        )
    metrics.update(generated=len(samples), num_inference_steps=args.num_inference_steps)
    if labels is not None:
        metrics["guidance_scale"] = args.guidance_scale
    return metrics


# ---- main ----------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> str:
    accelerator = setup_accelerator(args, logger)

    # 1. data, preprocessed once into a memory-mapped uint8 cache (resize and centre crop happen there, not per step):
    # the training images are read a micro-batch at a time, the held-out ones (--max_eval_samples) into one tensor
    with accelerator.main_process_first():  # the main process builds the cache; the others then read it
        (train_images, train_labels, num_classes), (eval_split, _, _) = load_train_and_held_out(
            lambda split, max_samples: load_split(args, split, max_samples), args, logger
        )
    eval_images = eval_split[:]
    num_train = len(train_images)
    global_batch = args.train_batch_size * accelerator.num_processes
    batches_per_epoch, max_train_steps = plan_steps(
        num_train, global_batch, args.gradient_accumulation_steps, args.num_epochs, args.max_train_steps
    )

    # 2. model, noise schedule, optimiser, LR schedule, EMA
    unet = prepare_for_training(build_unet(args, num_classes), args, accelerator.device)
    noise_scheduler = build_noise_scheduler(args)
    optimizer = build_optimizer(unet, args)
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    unwrapped = accelerator.unwrap_model(unet)
    ema = None
    if args.use_ema:
        ema = EMAModel(
            unwrapped.parameters(),
            decay=args.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=1.0,
            power=args.ema_power,
            model_cls=UNet2DModel,
            model_config=unwrapped.config,
            foreach=True,
        )
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("train_diffusion", config=tracker_config(args))

    # 3. resume
    global_step = resume(accelerator, args.output_dir, args.resume_from_checkpoint)
    if global_step:
        resume_learning_rate(optimizer, args.learning_rate, args.learning_rate_given, lr_scheduler, log=logger)

    logger.info(
        f"{num_train} training images{f' in {num_classes} classes' if num_classes else ''}, {global_batch} per step on "
        f"{accelerator.num_processes} process(es), {max_train_steps} steps; UNet of "
        f"{sum(p.numel() for p in unwrapped.parameters()) / 1e6:.2f}M parameters"
    )
    progress = tqdm(range(max_train_steps), initial=global_step, desc="steps", disable=not accelerator.is_local_main_process)
    last_good_checkpoint = find_checkpoint(args.output_dir, "latest") if accelerator.is_main_process else None
    start_time = time.perf_counter()
    unet.train()

    # 4. the loop: one optimiser step = gradient_accumulation_steps micro-batches of the global batch, read by a
    # DataLoader in the order micro_batches gives, with flips and crops drawn from (seed, epoch, image)
    batches = image_batches(args, accelerator, train_images, batches_per_epoch, global_step)
    for micro_index, batch in batches:
        if global_step >= max_train_steps:  # also when resuming a finished run
            break
        x_0 = batch["pixel_values"].to(accelerator.device)
        if args.channels_last:
            x_0 = x_0.contiguous(memory_format=torch.channels_last)
        labels = None if train_labels is None else train_labels[batch["rows"]].to(accelerator.device)
        generator = micro_batch_generator(args.seed, micro_index, accelerator.process_index)
        loss = training_step(
            accelerator, unet, noise_scheduler, optimizer, lr_scheduler, x_0, generator, args, labels, num_classes
        )
        if loss is None:
            progress.close()
            raise diverged_error(global_step + 1, last_good_checkpoint)

        if not accelerator.sync_gradients:
            continue
        if ema is not None:
            ema.step(unwrapped.parameters())
        global_step += 1
        progress.update(1)
        logs = {"loss": round(loss.item(), 4), "lr": lr_scheduler.get_last_lr()[0]}
        if ema is not None:
            logs["ema_decay"] = ema.cur_decay_value
        progress.set_postfix(loss=logs["loss"])
        accelerator.log(logs, step=global_step)

        if global_step % args.checkpointing_steps == 0 or global_step == max_train_steps:
            # on every rank: under DeepSpeed or FSDP each writes its own shard
            last_good_checkpoint = save_checkpoint(
                accelerator, args.output_dir, global_step, args.checkpoints_total_limit
            )
        if accelerator.is_main_process and global_step % args.validation_steps == 0:
            if ema is not None:  # sample from the EMA weights, then put the training weights back
                ema.store(unwrapped.parameters())
                ema.copy_to(unwrapped.parameters())
            unwrapped.eval()
            grid = sample_grid(make_pipeline(unwrapped, noise_scheduler), num_classes, args)
            unwrapped.train()
            if ema is not None:
                ema.restore(unwrapped.parameters())
            save_validation_grid(accelerator, args.output_dir, grid, global_step)
    train_seconds = time.perf_counter() - start_time
    accelerator.wait_for_everyone()

    # 5. finish on the main process: EMA weights, metrics, the saved folder
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(unwrapped.parameters())
        final_unet = unwrapped.to(memory_format=torch.contiguous_format).eval()
        pipe = make_pipeline(final_unet, noise_scheduler)
        logger.info(
            f"evaluating: bits/dim of {min(args.num_likelihood_images, len(eval_images))} held-out images, "
            f"{args.num_generated} samples (--num_likelihood_images, --num_generated make it shorter)"
        )
        progress = EvaluationProgress(desc="evaluation")
        metrics = evaluate(pipe, eval_images, num_classes, args, progress)
        eval_seconds = progress.close()
        metrics.update(
            train_steps=global_step,
            train_seconds=round(train_seconds, 1),
            eval_seconds=round(eval_seconds, 1),
        )
        logger.info(f"metrics: {json.dumps(metrics)}")
        save_model_folder(args, pipe, metrics, sample_grid(pipe, num_classes, args, count=64), num_classes)
        if args.push_to_hub:
            push_output_folder(args, f"pixel diffusion trained for {global_step} steps")
        headline = ("bits_per_dim", "oracle_validity", "oracle_coverage", "oracle_attribute_accuracy", "fid_domain")
        print(run_summary(args.output_dir, metrics, headline, {"training": train_seconds, "evaluation": eval_seconds}))
    end_training(accelerator)
    return args.output_dir


def save_model_folder(args, pipe: PixelDiffusionPipeline, metrics: dict, grid, num_classes: int | None) -> None:
    """Write the pipeline, model card, sample grid and metrics into a staging folder, then move each entry into
    `output_dir` (model_index.json last): a kill mid-way never leaves a half-written model folder."""
    with staged_model_folder(args.output_dir, metrics) as staging:
        pipe.save_pretrained(staging)
        grid.save(os.path.join(staging, "samples.png"))
        command = training_command("train_diffusion", args)
        summary = f"{metrics['train_steps']} steps in {metrics['train_seconds']:.0f} s; samples by DDIM with {metrics['num_inference_steps']} steps"
        if "guidance_scale" in metrics:
            summary += f" and guidance scale {metrics['guidance_scale']}"
        if "likelihood_images" in metrics:
            kind = "exact (all T terms)" if args.likelihood_timesteps is None else f"estimated from {args.likelihood_timesteps} sampled terms"
            summary += f"; bits/dim on {metrics['likelihood_images']} held-out images, {kind}"
        if "fid_domain" in metrics:
            summary += f"; FID on the features of the domain classifier `{args.fid_classifier}`"
        write_model_card(
            staging,
            "pixel_diffusion",
            **card_dataset_fields(args),
            pipeline_class="PixelDiffusionPipeline",
            model_class="UNet2DModel",
            tags=["diffusion", "ddpm", "ddim", "class-conditional" if num_classes else "unconditional-image-generation"],
            num_classes=num_classes,
            metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in ("train_steps", "train_seconds", "eval_seconds", "generated", "likelihood_images")},
            training_summary=summary,
            sample_grid="samples.png",
            training_command=command,
        )



if __name__ == "__main__":
    try:
        main(parse_args())
    except TrainingDivergedError as error:
        sys.exit(f"error: {error}")
