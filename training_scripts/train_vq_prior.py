#!/usr/bin/env python
"""Train the autoregressive prior of a VQ-VAE (the second stage, van den Oord et al. 2017) with 🤗 Accelerate.

    python training_scripts/train_autoencoder.py --model vqvae --dead_code_steps 100 --output_dir shapes-vqvae
    accelerate launch training_scripts/train_vq_prior.py --vqvae shapes-vqvae --output_dir shapes-vqvae-prior

The dataset is encoded once by the trained VQ-VAE (a folder or Hub id: a saved VQVAEModel, or an Autoencoder/VQVAE
pipeline holding one) into code grids; a transformers `GPT2LMHeadModel` learns p(codes) in raster order after a start
token (or a class token, with --class_conditional). Reported: the prior's negative log-likelihood of held-out codes
per code (nats) and in bits per image dimension, and the quality of samples (shapes oracle, or FID on a domain
classifier's features).

The output folder is a saved `VQVAEPipeline` (vqvae/ and prior/, safetensors) plus README.md, samples.png and
metrics.json; `checkpoint-*` folders allow `--resume_from_checkpoint latest`, and a resumed run continues exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from script_args import (
    add_image_loading_arguments,
    add_keep_freed_memory_argument,
    add_mixed_precision_argument,
    answer_help_first,
    description,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--vqvae", required=True, help="the trained first stage: a folder or Hub id (VQVAEModel, or a pipeline holding one)")
    # data
    parser.add_argument("--dataset_name", default="shapes", help="'shapes', a Hub dataset id, an image folder or a parquet file/folder")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--eval_split", default="test", help="held-out split for the NLL")
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--label_column", default="label", help="class labels for --class_conditional")
    parser.add_argument("--resolution", type=int, default=None, help="must be the VQ-VAE's sample_size (the default)")
    parser.add_argument(
        "--center_crop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="centre-crop the resized images; --no-center_crop: a crop drawn once for each training image (its codes are "
        "encoded once; the held-out images are centre-cropped)",
    )
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=1000)
    parser.add_argument("--num_shapes", type=int, default=1, choices=(1, 2), help="shapes per scene in the shapes world")
    add_image_loading_arguments(parser)
    # prior
    parser.add_argument("--class_conditional", action="store_true", help="a class token replaces the start token")
    parser.add_argument("--n_layer", type=int, default=4)
    parser.add_argument("--n_head", type=int, default=4)
    parser.add_argument("--n_embd", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.1)
    # optimisation
    parser.add_argument("--train_batch_size", type=int, default=64, help="per process")
    parser.add_argument("--num_epochs", type=int, default=20)
    parser.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_epochs")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--lr_scheduler", default="cosine", choices=("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"))
    parser.add_argument("--lr_warmup_steps", type=int, default=200)
    parser.add_argument("--adam_weight_decay", type=float, default=0.01)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    add_mixed_precision_argument(parser)
    parser.add_argument("--use_ema", action="store_true", help="EMA of the prior's weights (saved and sampled from)")
    parser.add_argument("--ema_decay", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    # checkpoints, logging, outputs, evaluation
    parser.add_argument("--output_dir", default="shapes-vqvae-prior")
    parser.add_argument("--checkpointing_steps", type=int, default=1000)
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest'")
    parser.add_argument("--validation_steps", type=int, default=1000, help="save a sample grid every N steps")
    parser.add_argument("--report_to", default="none", help="accelerate trackers: tensorboard, wandb, all, none")
    add_keep_freed_memory_argument(parser)
    parser.add_argument("--logging_dir", default="logs")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the grids and the sample metrics")
    parser.add_argument("--top_k", type=int, default=None, help="top-k sampling of the grids and the sample metrics")
    parser.add_argument("--epsilon_cutoff", type=float, default=None, help="ε-sampling of the grids and the sample metrics (VQVAEPipeline)")
    parser.add_argument("--num_generated", type=int, default=500, help="samples judged by the shapes oracle / the FID (a short run evaluates faster with e.g. 100)")
    parser.add_argument("--fid_classifier", default=None, help="a DomainClassifier folder: report FID on its features")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)
    parser.add_argument("--hub_token", default=None)
    args = parser.parse_args(argv)
    args.learning_rate_given = flag_given("--learning_rate", argv)  # resuming keeps the checkpoint's schedule unless given

    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. your-name/shapes-vqvae-prior)")
    for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "validation_steps", "num_epochs", "n_layer", "n_head", "n_embd"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    if args.n_embd % args.n_head:
        parser.error(f"--n_embd {args.n_embd} must be divisible by --n_head {args.n_head}")
    if args.temperature <= 0:
        parser.error(f"--temperature must be > 0, got {args.temperature}")
    if args.epsilon_cutoff is not None and not 0 < args.epsilon_cutoff < 1:
        parser.error(f"--epsilon_cutoff must be in (0, 1), got {args.epsilon_cutoff}")
    return args


answer_help_first(__name__, parse_args)
# the heavy imports come after argument parsing, so that `--help` answers at once
import torch  # noqa: E402
from accelerate.logging import get_logger  # noqa: E402
from diffusers.optimization import get_scheduler  # noqa: E402
from diffusers.training_utils import EMAModel  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from hf_genzoo import VQVAEModel, VQVAEPipeline  # noqa: E402
from hf_genzoo.data.image_cache import ImageSplit, load_image_split, training_batches  # noqa: E402
from hf_genzoo.hub import load_model_component, write_model_card  # noqa: E402
from hf_genzoo.metrics import sample_quality_metrics  # noqa: E402
from hf_genzoo.metrics.evaluate import EvaluationProgress  # noqa: E402
from hf_genzoo.models.code_prior import CodeLayout, build_code_prior, code_nll, codes_to_tokens, nats_to_bits_per_dim  # noqa: E402
from hf_genzoo.training_utils import (  # noqa: E402
    training_command,
    card_dataset_fields,
    end_training,
    TrainingDivergedError,
    diverged_error,
    micro_batches,
    find_checkpoint,
    load_train_and_held_out,
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


# ---- the first stage and the code dataset --------------------------------------------------------------------


def load_vqvae(name_or_path: str) -> VQVAEModel:
    """A VQVAEModel from a folder or Hub id holding one directly, or as a component of a saved pipeline."""
    try:
        return load_model_component(name_or_path, VQVAEModel)
    except ValueError as error:
        raise ValueError(f"{error}; train one with train_autoencoder.py --model vqvae") from None


def load_split(args, split: str, max_samples: int | None) -> tuple[ImageSplit, torch.Tensor | None, int | None]:
    """The split preprocessed once into a memory-mapped uint8 cache (`hf_genzoo.data.image_cache`), its labels (N,)
    and number of classes, or None, None without --class_conditional."""
    images = load_image_split(args, split, max_samples)
    return (images, *images.labels(args.label_column)) if args.class_conditional else (images, None, None)


@torch.no_grad()
def encode_codes(vqvae: VQVAEModel, images: ImageSplit, seed: int = 0, random_crop: bool = False, num_workers: int = 0, batch_size: int = 256) -> torch.Tensor:
    """The codes (N, h, w), long, of a split's images, read by a DataLoader (`num_workers`) and encoded in batches:
    centre-cropped, or with `random_crop` (a split kept whole) at a crop drawn once per image, from (seed, epoch 0,
    image): the codes are encoded once, not each epoch."""
    order = ((0, torch.arange(start, min(start + batch_size, len(images)))) for start in range(0, len(images), batch_size))
    batches = training_batches(images, order, 1, seed, random_crop=random_crop, num_workers=num_workers)
    return torch.cat([vqvae.encode_indices(batch["pixel_values"].to(vqvae.device, vqvae.dtype)).cpu() for _, batch in batches])


# ---- sampling and evaluation -----------------------------------------------------------------------------------


def sample_labels(num_classes: int | None, count: int) -> list[int] | None:
    return None if num_classes is None else [i % num_classes for i in range(count)]


@torch.no_grad()
def generate(pipe: VQVAEPipeline, count: int, labels, args, seed: int, batch_size: int = 250, progress=None) -> torch.Tensor:
    """`count` samples (B, C, H, W) in [-1, 1]; a bar over the batches with an `EvaluationProgress`."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    starts = range(0, count, batch_size)
    for start in starts if progress is None else progress.batches(starts, desc="sampling batches"):
        n = min(batch_size, count - start)
        labels_n = None if labels is None else labels[start : start + n]
        codes = pipe.sample_codes(n, generator, args.temperature, args.top_k, labels_n, args.epsilon_cutoff)
        out.append(pipe.vqvae.decode_indices(codes.to(pipe.vqvae.device)).float().cpu().clamp(-1, 1))
    return torch.cat(out)


def sample_grid(pipe: VQVAEPipeline, num_classes: int | None, args, count: int = 32):
    return enlarged_grid(generate(pipe, count, sample_labels(num_classes, count), args, seed=args.seed), nrow=8)


@torch.no_grad()
def code_metrics(prior, tokens: torch.Tensor, num_dims: int, batch_size: int = 256) -> dict:
    """The prior's NLL of held-out code sequences: nats per code and bits per image dimension."""
    nats = torch.cat([code_nll(prior, batch.to(prior.device)).float().cpu() for batch in tokens.split(batch_size)])
    num_codes = tokens.shape[1] - 1
    return {
        "prior_nll_nats_per_code": float(nats.mean() / num_codes),
        "prior_bits_per_dim": float(nats_to_bits_per_dim(nats, num_dims).mean()),
        "nll_images": len(tokens),
    }


# ---- main ------------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> str:
    accelerator = setup_accelerator(args, logger)

    # 1. the first stage, and the dataset encoded once into code sequences
    vqvae = load_vqvae(args.vqvae).to(accelerator.device).eval().requires_grad_(False)
    if args.resolution not in (None, vqvae.config.sample_size):
        raise ValueError(
            f"--resolution {args.resolution} differs from the VQ-VAE's sample_size {vqvae.config.sample_size}: the prior "
            f"models the code grid of the VQ-VAE's own resolution; leave --resolution out"
        )
    args.resolution = vqvae.config.sample_size
    args.num_channels = vqvae.config.in_channels
    with accelerator.main_process_first():  # the main process builds the image cache; the others then read it
        (train_images, train_labels, num_classes), (eval_split, eval_labels, _) = load_train_and_held_out(
            lambda split, max_samples: load_split(args, split, max_samples), args, logger
        )
    eval_images = eval_split[:]  # (--max_eval_samples) for the sample metrics
    grid = tuple(vqvae.latent_shape[1:])
    layout = CodeLayout(vqvae.num_codes, num_classes or 0, grid)
    train_codes = encode_codes(vqvae, train_images, args.seed, not args.center_crop, args.dataloader_num_workers)
    train_tokens = codes_to_tokens(train_codes, layout, train_labels)  # (N, 1 + h·w)
    eval_tokens = codes_to_tokens(encode_codes(vqvae, eval_split), layout, eval_labels)
    num_train = len(train_tokens)
    global_batch = args.train_batch_size * accelerator.num_processes
    batches_per_epoch, max_train_steps = plan_steps(
        num_train, global_batch, args.gradient_accumulation_steps, args.num_epochs, args.max_train_steps
    )

    # 2. the prior, optimiser, schedule, EMA
    prior = build_code_prior(vqvae.num_codes, grid, num_classes, args.n_layer, args.n_head, args.n_embd, args.dropout)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    prior, optimizer, lr_scheduler = accelerator.prepare(prior, optimizer, lr_scheduler)
    unwrapped = accelerator.unwrap_model(prior)
    ema = None
    if args.use_ema:
        ema = EMAModel(unwrapped.parameters(), decay=args.ema_decay)
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("train_vq_prior", config=tracker_config(args))

    # 3. resume
    global_step = resume(accelerator, args.output_dir, args.resume_from_checkpoint)
    if global_step:
        resume_learning_rate(optimizer, args.learning_rate, args.learning_rate_given, lr_scheduler, log=logger)

    logger.info(
        f"{num_train} code grids of {grid[0]}×{grid[1]} (K = {vqvae.num_codes}){f' in {num_classes} classes' if num_classes else ''}, "
        f"{global_batch} per step, {max_train_steps} steps; prior of {sum(p.numel() for p in unwrapped.parameters()) / 1e6:.2f}M parameters"
    )
    progress = tqdm(range(max_train_steps), initial=global_step, desc="steps", disable=not accelerator.is_local_main_process)
    last_good_checkpoint = find_checkpoint(args.output_dir, "latest") if accelerator.is_main_process else None
    start_time = time.perf_counter()
    prior.train()

    # 4. the loop: next-code cross-entropy (GPT-2 shifts the labels itself; the start token is never a target)
    for _, indices in micro_batches(args, accelerator, num_train, batches_per_epoch, global_step):
        if global_step >= max_train_steps:  # also when resuming a finished run
            break
        tokens = train_tokens[indices].to(accelerator.device)
        with accelerator.accumulate(prior):
            with accelerator.autocast():
                loss = prior(input_ids=tokens, attention_mask=torch.ones_like(tokens), labels=tokens).loss
            if not torch.isfinite(loss):
                progress.close()
                raise diverged_error(global_step + 1, last_good_checkpoint)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(prior.parameters(), args.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            continue
        if ema is not None:
            ema.step(unwrapped.parameters())
        global_step += 1
        progress.update(1)
        logs = {"loss": round(loss.item(), 4), "lr": lr_scheduler.get_last_lr()[0]}
        progress.set_postfix(loss=logs["loss"])
        accelerator.log(logs, step=global_step)

        if global_step % args.checkpointing_steps == 0 or global_step == max_train_steps:
            # on every rank: under DeepSpeed or FSDP each writes its own shard
            last_good_checkpoint = save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit)
        if accelerator.is_main_process and global_step % args.validation_steps == 0:
            if ema is not None:
                ema.store(unwrapped.parameters())
                ema.copy_to(unwrapped.parameters())
            unwrapped.eval()
            save_validation_grid(accelerator, args.output_dir, sample_grid(VQVAEPipeline(vqvae=vqvae, prior=unwrapped), num_classes, args), global_step)
            unwrapped.train()
            if ema is not None:
                ema.restore(unwrapped.parameters())
    train_seconds = time.perf_counter() - start_time
    accelerator.wait_for_everyone()

    # 5. finish on the main process: EMA weights, metrics, the saved folder
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(unwrapped.parameters())
        unwrapped.eval()
        pipe = VQVAEPipeline(vqvae=vqvae, prior=unwrapped)
        progress = EvaluationProgress(desc="evaluation")
        with progress.stage("held-out code NLL"):
            metrics = code_metrics(unwrapped, eval_tokens, eval_images[0].numel())
        labels = sample_labels(num_classes, args.num_generated)
        with progress.stage(f"{args.num_generated} samples"):
            samples = generate(pipe, args.num_generated, labels, args, seed=args.seed + 1, progress=progress)
        with progress.stage("oracle / FID of the samples"):
            metrics.update(
                sample_quality_metrics(
                    samples,
                    labels,
                    shapes_resolution=args.resolution if args.dataset_name == "shapes" else None,
                    real_images=eval_images,
                    fid_classifier=args.fid_classifier,
                )
            )
        metrics.update(
            generated=len(samples),
            temperature=args.temperature,
            train_steps=global_step,
            train_seconds=round(train_seconds, 1),
            eval_seconds=round(progress.close(), 1),
        )
        if args.top_k:
            metrics["top_k"] = args.top_k
        if args.epsilon_cutoff:
            metrics["epsilon_cutoff"] = args.epsilon_cutoff
        logger.info(f"metrics: {json.dumps(metrics)}")
        save_model_folder(args, pipe, metrics, sample_grid(pipe, num_classes, args, count=64), num_classes)
        if args.push_to_hub:
            push_output_folder(args, f"VQ-VAE prior trained for {global_step} steps")
        headline = ("prior_bits_per_dim", "oracle_validity", "oracle_coverage", "oracle_attribute_accuracy", "fid_domain")
        print(run_summary(args.output_dir, metrics, headline, {"training": train_seconds, "evaluation": metrics["eval_seconds"]}))
    end_training(accelerator)
    return args.output_dir


def save_model_folder(args, pipe: VQVAEPipeline, metrics: dict, grid, num_classes: int | None) -> None:
    """Pipeline, card, grid and metrics into a staging folder, then moved into `output_dir` (model_index.json
    last): a kill mid-way never leaves a half-written model folder."""
    with staged_model_folder(args.output_dir, metrics) as staging:
        pipe.save_pretrained(staging)
        grid.save(os.path.join(staging, "samples.png"))
        sampling = f"temperature {args.temperature}" + (f", top-k {args.top_k}" if args.top_k else "")
        sampling += f", ε-sampling {args.epsilon_cutoff}" if args.epsilon_cutoff else ""
        write_model_card(
            staging,
            "vqvae",
            **card_dataset_fields(args),
            pipeline_class="VQVAEPipeline",
            tags=["vq-vae", "autoregressive-prior", "class-conditional" if num_classes else "unconditional-image-generation"],
            num_classes=num_classes,
            metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in ("train_steps", "train_seconds", "eval_seconds", "generated", "nll_images")},
            training_summary=f"{metrics['train_steps']} steps in {metrics['train_seconds']:.0f} s (the prior; the VQ-VAE `{args.vqvae}` was trained first); samples with {sampling}",
            sample_grid="samples.png",
            training_command=training_command("train_vq_prior", args),
        )



if __name__ == "__main__":
    try:
        main(parse_args())
    except TrainingDivergedError as error:
        sys.exit(f"error: {error}")
