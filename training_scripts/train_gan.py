#!/usr/bin/env python
"""Train a DCGAN (Radford et al. 2016), unconditional or class-conditional, with 🤗 Accelerate.

    accelerate launch training_scripts/train_gan.py --output_dir shapes-gan
    python training_scripts/train_gan.py --dataset_name ../shared/data/mnist --resolution 28 --num_channels 1

Each optimiser step first descends the discriminator's loss on real images and detached fakes, then the generator's
(../shared/EQUATIONS.md, "GAN"; losses in hf_genzoo.models.gan): cross-entropy for D, non-saturating −ln d(g(z)) for G
by default, the minimax or hinge forms as options, R1 as an option. Separate learning rates (TTUR, Heusel et al.
2017) and DCGAN's Adam β₁ = 0.5. An EMA of the generator's weights (on by default) is what gets published, after
its BatchNorm statistics are re-estimated for those weights.

The output folder is a saved `GANPipeline` (model_index.json, generator_model/ with safetensors weights; the
discriminator only with `--save_discriminator`) plus README.md, samples.png, interpolation.png/.gif and
metrics.json. `checkpoint-*` folders (accelerate's `save_state`: both networks, both optimisers, the EMA) allow
`--resume_from_checkpoint latest`; data order and every draw are functions of (seed, step, rank), so a resumed run
continues exactly.
"""

from __future__ import annotations

import argparse
import itertools
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

# the choices of the models' flags, named before the models are imported (tests/test_script_help.py checks them)
GAN_LOSSES = ("minimax", "non_saturating", "hinge")  # hf_genzoo.models.gan
GENERATOR_UPSAMPLINGS = ("transposed", "nearest")
DISCRIMINATOR_POOLINGS = ("sum", "flatten")
REJECTION_SCORES = ("jacobian", "discriminator", "jacobian+discriminator")  # GANPipeline's rejection


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description(__doc__))
    # data
    parser.add_argument("--dataset_name", default="shapes", help="'shapes', a Hub dataset id, an image folder or a parquet file/folder")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--eval_split", default="test", help="held-out real images for the FID")
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--num_channels", type=int, default=3, choices=(1, 3))
    add_augmentation_arguments(parser)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=2000)
    parser.add_argument("--num_shapes", type=int, default=1, choices=(1, 2), help="shapes per scene in the shapes world")
    add_image_loading_arguments(parser)
    # models
    parser.add_argument("--latent_dim", type=int, default=64)
    parser.add_argument("--generator_channels", type=int, nargs="+", default=[256, 128, 64], help="from the lowest resolution up")
    parser.add_argument(
        "--generator_upsampling",
        default="transposed",
        choices=GENERATOR_UPSAMPLINGS,
        help="G's ×2 levels: DCGAN's transposed convolutions, or nearest resize + 3×3 convolution (no checkerboard)",
    )
    parser.add_argument("--discriminator_channels", type=int, nargs="+", default=[64, 128, 256], help="from the input resolution down")
    parser.add_argument(
        "--discriminator_pooling",
        default="sum",
        choices=DISCRIMINATOR_POOLINGS,
        help="D's last feature map summed over positions (blind to where a patch lies) or flattened (DCGAN's head)",
    )
    parser.add_argument("--class_conditional", action="store_true", help="label embedding in G, projection in D")
    parser.add_argument("--spectral_norm", action="store_true", help="spectral normalisation in D (replaces its BatchNorm)")
    parser.add_argument(
        "--discriminator_batch_norm", action=argparse.BooleanOptionalAction, default=True,
        help="BatchNorm in D (--no-discriminator_batch_norm: none, each logit a function of its own image, as R1 assumes)",
    )
    parser.add_argument(
        "--minibatch_std_group_size", type=int, default=0,
        help="D's minibatch standard deviation channel over groups of this many images (ProGAN/StyleGAN; 0: off)",
    )
    # losses and optimisation
    parser.add_argument("--loss", default="non_saturating", choices=GAN_LOSSES, help="the generator's loss (hinge: both networks')")
    parser.add_argument("--r1_gamma", type=float, default=0.0, help="γ of the R1 penalty (γ/2) E‖∇D(x_real)‖² (0: off)")
    parser.add_argument(
        "--r1_interval", type=int, default=1,
        help="lazy R1 (Karras et al. 2020, StyleGAN2 App. B): the penalty on every N-th step only, weighted N×, so its double backward costs 1/N (e.g. 16)",
    )
    parser.add_argument("--train_batch_size", type=int, default=64, help="per process")
    parser.add_argument("--num_epochs", type=int, default=20)
    parser.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_epochs")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--generator_learning_rate", type=float, default=2e-4)
    parser.add_argument("--discriminator_learning_rate", type=float, default=2e-4)
    parser.add_argument("--adam_beta1", type=float, default=0.5, help="DCGAN's β₁")
    parser.add_argument("--adam_beta2", type=float, default=0.999)
    add_mixed_precision_argument(parser)
    parser.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True, help="EMA of the generator (published)")
    parser.add_argument("--ema_max_decay", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    # checkpoints, logging, outputs, evaluation
    parser.add_argument("--output_dir", default="shapes-gan")
    parser.add_argument("--checkpointing_steps", type=int, default=1000)
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest'")
    parser.add_argument("--validation_steps", type=int, default=500, help="save the fixed-noise grid every N steps")
    parser.add_argument("--report_to", default="none", help="accelerate trackers: tensorboard, wandb, all, none")
    add_keep_freed_memory_argument(parser)
    parser.add_argument("--logging_dir", default="logs")
    parser.add_argument("--save_discriminator", action="store_true", help="publish the discriminator in the pipeline too")
    parser.add_argument("--num_generated", type=int, default=1000, help="samples judged by the shapes oracle / the FID (a short run evaluates faster with e.g. 200)")
    parser.add_argument("--fid_classifier", default=None, help="a DomainClassifier folder (training_scripts/train_domain_classifier.py): FID and class histogram")
    parser.add_argument(
        "--eval_rejection",
        default=None,
        choices=REJECTION_SCORES,
        help="also judge samples drawn by GANPipeline's rejection (metrics prefixed rejection_); the discriminator's "
        "scores need --save_discriminator, so that the published pipeline can draw them too",
    )
    parser.add_argument("--eval_oversample", type=int, default=5, help="candidates per kept sample, with --eval_rejection")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)
    parser.add_argument("--hub_token", default=None)
    args = parser.parse_args(argv)
    # resuming keeps the checkpoint's learning rates unless given on the command
    args.generator_learning_rate_given = flag_given("--generator_learning_rate", argv)
    args.discriminator_learning_rate_given = flag_given("--discriminator_learning_rate", argv)

    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. your-name/shapes-gan)")
    for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "validation_steps", "num_epochs", "latent_dim", "r1_interval"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    if args.r1_gamma < 0:
        parser.error(f"--r1_gamma must be ≥ 0, got {args.r1_gamma}")
    if args.eval_oversample < 1:
        parser.error(f"--eval_oversample must be ≥ 1, got {args.eval_oversample}")
    if args.eval_rejection and "discriminator" in args.eval_rejection and not args.save_discriminator:
        parser.error(f"--eval_rejection {args.eval_rejection} scores with the discriminator: add --save_discriminator, so that the published pipeline holds it")
    return args


answer_help_first(__name__, parse_args)
# the heavy imports come after argument parsing, so that `--help` answers at once
import torch  # noqa: E402
from accelerate.logging import get_logger  # noqa: E402
from diffusers.training_utils import EMAModel  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from hf_genzoo import DCGANDiscriminator, DCGANGenerator, GANPipeline  # noqa: E402
from hf_genzoo.hub import write_model_card  # noqa: E402
from hf_genzoo.data.image_cache import ImageSplit, load_image_split  # noqa: E402
from hf_genzoo.metrics import sample_quality_metrics  # noqa: E402
from hf_genzoo.metrics.evaluate import EvaluationProgress  # noqa: E402
from hf_genzoo.models.gan import discriminator_loss, generator_loss, r1_penalty  # noqa: E402
from hf_genzoo.pipelines import save_gif  # noqa: E402
from hf_genzoo.training_utils import (  # noqa: E402
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


# ---- models and data -----------------------------------------------------------------------------------------


def build_models(args, num_classes: int | None) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    generator = DCGANGenerator(
        latent_dim=args.latent_dim,
        out_channels=args.num_channels,
        sample_size=args.resolution,
        block_out_channels=tuple(args.generator_channels),
        num_classes=num_classes,
        upsampling=args.generator_upsampling,
    )
    discriminator = DCGANDiscriminator(
        in_channels=args.num_channels,
        sample_size=args.resolution,
        block_out_channels=tuple(args.discriminator_channels),
        num_classes=num_classes,
        spectral_norm=args.spectral_norm,
        pooling=args.discriminator_pooling,
        batch_norm=args.discriminator_batch_norm,
        minibatch_std_group_size=args.minibatch_std_group_size,
    )
    return generator, discriminator


def load_split(args, split: str, max_samples: int | None, with_labels: bool) -> tuple[ImageSplit, torch.Tensor | None, int | None]:
    """The split preprocessed once into a memory-mapped uint8 cache (`hf_genzoo.data.image_cache`; indexing it reads
    those images only, as float in [-1, 1]), its labels (N,) and number of classes, or None, None."""
    images = load_image_split(args, split, max_samples)
    return (images, *images.labels(args.label_column)) if with_labels else (images, None, None)


# ---- the training step ---------------------------------------------------------------------------------------


def _fakes(generator, batch: int, latent_dim: int, num_classes: int | None, draws: torch.Generator, device):
    """z ~ N(0, I) (B, latent_dim) and, class-conditional, uniform labels (B,), from the CPU generator `draws`."""
    z = torch.randn((batch, latent_dim), generator=draws).to(device)
    labels = None if num_classes is None else torch.randint(0, num_classes, (batch,), generator=draws).to(device)
    return z, labels


def training_step(accelerator, generator, discriminator, opt_g, opt_d, micro_batches, args, num_classes, step: int):
    """One optimiser step of D, then one of G, each over the `micro_batches` [(x_real, labels, draws), ...] (the
    gradient-accumulation group); `step` counts the steps before this one (for lazy R1). Returns {"loss_d",
    "loss_g", ...} or, before the failing update is applied, ("discriminator" | "generator") naming the network
    whose loss stopped being finite."""
    k = len(micro_batches)
    latent_dim = accelerator.unwrap_model(generator).config.latent_dim
    logs = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0}
    # R1 on every r1_interval-th step, weighted by the interval so that its mean over steps is (γ/2) E‖∇l‖²
    with_r1 = bool(args.r1_gamma) and step % args.r1_interval == 0
    if with_r1:
        logs["r1"] = 0.0

    # 1. discriminator: descend L_D on real images and detached fakes
    opt_d.zero_grad(set_to_none=True)
    for x_real, labels, draws in micro_batches:
        z, fake_labels = _fakes(generator, x_real.shape[0], latent_dim, num_classes, draws, x_real.device)
        with torch.no_grad(), accelerator.autocast():
            x_fake = generator(z, fake_labels)
        if args.channels_last:
            x_fake = x_fake.contiguous(memory_format=torch.channels_last)
        if with_r1:
            x_real = x_real.detach().requires_grad_(True)
        with accelerator.autocast():
            real_logits = discriminator(x_real, labels).float()
            fake_logits = discriminator(x_fake.to(x_real.dtype), fake_labels).float()
            loss_d = discriminator_loss(real_logits, fake_logits, "hinge" if args.loss == "hinge" else "minimax")
            if with_r1:
                penalty = r1_penalty(real_logits, x_real)
                loss_d = loss_d + args.r1_gamma / 2 * args.r1_interval * penalty
                logs["r1"] += penalty.item() / k
        if not torch.isfinite(loss_d):
            return "discriminator"
        accelerator.backward(loss_d / k)
        logs["loss_d"] += loss_d.item() / k
        logs["d_real"] += torch.sigmoid(real_logits).mean().item() / k
        logs["d_fake"] += torch.sigmoid(fake_logits).mean().item() / k
    opt_d.step()

    # 2. generator: descend L_G through the (fixed) discriminator; fresh z
    opt_g.zero_grad(set_to_none=True)
    for x_real, _, draws in micro_batches:
        z, fake_labels = _fakes(generator, x_real.shape[0], latent_dim, num_classes, draws, x_real.device)
        with accelerator.autocast():
            x_fake = generator(z, fake_labels)
            loss_g = generator_loss(discriminator(x_fake, fake_labels).float(), args.loss)
        if not torch.isfinite(loss_g):
            opt_d.zero_grad(set_to_none=True)
            return "generator"
        accelerator.backward(loss_g / k)
        logs["loss_g"] += loss_g.item() / k
    opt_g.step()
    opt_d.zero_grad(set_to_none=True)  # G's backward also filled D's gradients; they are not used
    return logs


# ---- sampling and evaluation ---------------------------------------------------------------------------------


@torch.no_grad()
def recalibrate_batchnorm(generator: DCGANGenerator, seed: int, num_batches: int = 20, batch_size: int = 256) -> None:
    """Re-estimate the BatchNorm running statistics for the generator's current (EMA) weights: reset them and
    average over `num_batches` batches of z in training mode (the EMA weights never ran with the training
    network's statistics)."""
    norms = [m for m in generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    generator.train()
    draws = torch.Generator().manual_seed(seed)
    num_classes = generator.config.num_classes
    for _ in range(num_batches):
        z, labels = _fakes(generator, batch_size, generator.config.latent_dim, num_classes, draws, generator.device)
        generator(z.to(generator.dtype), labels)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    generator.eval()


def class_cycle(num_classes: int | None, count: int) -> list[int] | None:
    return None if num_classes is None else [i % num_classes for i in range(count)]


@torch.no_grad()
def generate(pipe: GANPipeline, count: int, labels, seed: int, batch_size: int = 256, progress=None, **sampling) -> torch.Tensor:
    """`count` samples (N, C, H, W) in [-1, 1]; `sampling` goes to the pipeline (rejection, oversample); a bar over
    the batches with an `EvaluationProgress`."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    starts = range(0, count, batch_size)
    for start in starts if progress is None else progress.batches(starts, desc="sampling batches"):
        n = min(batch_size, count - start)
        batch_labels = None if labels is None else labels[start : start + n]
        out.append(pipe(batch_size=n, generator=generator, class_labels=batch_labels, output_type="pt", **sampling).images.float().cpu() * 2 - 1)
    return torch.cat(out)


@torch.no_grad()
def fixed_noise_grid(generator: DCGANGenerator, z: torch.Tensor, labels):
    """The same latents at every validation step, so one set of samples is watched as it evolves."""
    was_training = generator.training
    generator.eval()
    images = generator(z.to(generator.device, generator.dtype), None if labels is None else torch.as_tensor(labels, device=generator.device))
    generator.train(was_training)
    return enlarged_grid(images.float().cpu(), nrow=8)


def interpolation_strip(pipe: GANPipeline, seed: int, num_classes: int | None, num_rows: int = 4, num_steps: int = 10):
    """`num_rows` slerp paths between random latents (one class per row when conditional): a PIL strip and the
    frames of the first row."""
    g = torch.Generator().manual_seed(seed)
    rows, first = [], None
    for row in range(num_rows):
        z_a, z_b = torch.randn((2, pipe.latent_dim), generator=g)
        label = None if num_classes is None else row % num_classes
        frames = pipe.interpolate(z_a, z_b, num_steps=num_steps, class_labels=label, output_type="pt").images
        rows.append(frames.float() * 2 - 1)
        if first is None:
            first = pipe.postprocess(frames * 2 - 1, "pil")
    names = [f"slerp {row + 1}" + ("" if num_classes is None else f", class {row % num_classes}") for row in range(num_rows)]
    return enlarged_grid(torch.cat(rows), nrow=num_steps, row_labels=names), first


# ---- main ----------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> str:
    accelerator = setup_accelerator(args, logger, accumulate=False)  # both networks accumulate by hand

    # 1. data, preprocessed once into a memory-mapped uint8 cache: the training images are read a micro-batch at a
    # time, the held-out ones (--max_eval_samples) into one tensor
    with accelerator.main_process_first():  # the main process builds the cache; the others then read it
        (train_images, train_labels, num_classes), (eval_split, _, _) = load_train_and_held_out(
            lambda split, max_samples: load_split(args, split, max_samples, args.class_conditional and split == args.train_split),
            args,
            logger,
        )
    eval_images = eval_split[:]
    num_train = len(train_images)
    global_batch = args.train_batch_size * accelerator.num_processes
    batches_per_epoch, max_train_steps = plan_steps(
        num_train, global_batch, args.gradient_accumulation_steps, args.num_epochs, args.max_train_steps
    )

    # 2. models, optimisers (TTUR: one learning rate each), EMA of G
    generator, discriminator = build_models(args, num_classes)
    if args.channels_last:
        generator, discriminator = (m.to(memory_format=torch.channels_last) for m in (generator, discriminator))
    betas = (args.adam_beta1, args.adam_beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=args.generator_learning_rate, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=args.discriminator_learning_rate, betas=betas)
    generator, discriminator, opt_g, opt_d = accelerator.prepare(generator, discriminator, opt_g, opt_d)
    unwrapped_g = accelerator.unwrap_model(generator)
    ema = None
    if args.use_ema:
        ema = EMAModel(unwrapped_g.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, power=0.75)
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("train_gan", config=tracker_config(args))

    # 3. resume
    global_step = resume(accelerator, args.output_dir, args.resume_from_checkpoint)
    if global_step:  # the checkpoint's learning rates, unless a flag was given on this command
        resume_learning_rate(opt_g, args.generator_learning_rate, args.generator_learning_rate_given, flag="--generator_learning_rate", log=logger)
        resume_learning_rate(opt_d, args.discriminator_learning_rate, args.discriminator_learning_rate_given, flag="--discriminator_learning_rate", log=logger)
    fixed = torch.Generator().manual_seed(args.seed + 7)
    fixed_z = torch.randn((32, args.latent_dim), generator=fixed)
    fixed_labels = class_cycle(num_classes, 32)

    logger.info(
        f"{num_train} training images{f' in {num_classes} classes' if num_classes else ''}, {global_batch} per step on "
        f"{accelerator.num_processes} process(es), {max_train_steps} steps"
    )
    progress = tqdm(range(max_train_steps), initial=global_step, desc="steps", disable=not accelerator.is_local_main_process)
    last_good_checkpoint = find_checkpoint(args.output_dir, "latest") if accelerator.is_main_process else None
    start_time = time.perf_counter()
    generator.train()
    discriminator.train()

    # 4. the loop: one step = D update then G update, each over gradient_accumulation_steps micro-batches, read by a
    # DataLoader in the order micro_batches gives, with flips and crops drawn from (seed, epoch, image)
    batches = image_batches(args, accelerator, train_images, batches_per_epoch, global_step)
    while global_step < max_train_steps:
        step_batches = []
        for micro_index, batch in itertools.islice(batches, args.gradient_accumulation_steps):
            x = batch["pixel_values"].to(accelerator.device)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            labels = None if train_labels is None else train_labels[batch["rows"]].to(accelerator.device)
            step_batches.append((x, labels, micro_batch_generator(args.seed, micro_index, accelerator.process_index)))
        logs = training_step(accelerator, generator, discriminator, opt_g, opt_d, step_batches, args, num_classes, global_step)
        if isinstance(logs, str):
            progress.close()
            raise diverged_error(global_step + 1, last_good_checkpoint, f"the {logs} loss", f"--{logs}_learning_rate")
        if ema is not None:
            ema.step(unwrapped_g.parameters())
        global_step += 1
        progress.update(1)
        progress.set_postfix(**{key: round(value, 3) for key, value in logs.items()})
        accelerator.log(logs, step=global_step)

        if global_step % args.checkpointing_steps == 0 or global_step == max_train_steps:
            # on every rank: under DeepSpeed or FSDP each writes its own shard
            last_good_checkpoint = save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit)
        if accelerator.is_main_process and global_step % args.validation_steps == 0:
            if ema is not None:
                ema.store(unwrapped_g.parameters())
                ema.copy_to(unwrapped_g.parameters())
            grid = fixed_noise_grid(unwrapped_g, fixed_z, fixed_labels)
            if ema is not None:
                ema.restore(unwrapped_g.parameters())
            save_validation_grid(accelerator, args.output_dir, grid, global_step)
    train_seconds = time.perf_counter() - start_time
    accelerator.wait_for_everyone()

    # 5. finish on the main process: EMA weights (+ their BatchNorm statistics), metrics, the saved folder
    if accelerator.is_main_process:
        final_g = unwrapped_g.to(memory_format=torch.contiguous_format)
        if ema is not None:
            ema.copy_to(final_g.parameters())
            recalibrate_batchnorm(final_g, seed=args.seed)
        final_g.eval()
        final_d = accelerator.unwrap_model(discriminator).to(memory_format=torch.contiguous_format).eval()
        pipe = GANPipeline(generator_model=final_g, discriminator=final_d if args.save_discriminator else None)
        pipe.set_progress_bar_config(disable=True)
        progress = EvaluationProgress(desc="evaluation")
        labels = class_cycle(num_classes, args.num_generated)
        judge = {
            "shapes_resolution": args.resolution if args.dataset_name == "shapes" else None,
            "real_images": eval_images,
            "fid_classifier": args.fid_classifier,
        }
        with progress.stage(f"{args.num_generated} samples"):
            samples = generate(pipe, args.num_generated, labels, seed=args.seed + 1, progress=progress)
        with progress.stage("oracle / FID of the samples"):
            metrics = sample_quality_metrics(samples, labels, **judge)
        if args.eval_rejection:
            with progress.stage(f"{args.num_generated} samples by rejection ({args.eval_rejection})"):
                rejected = generate(pipe, args.num_generated, labels, seed=args.seed + 1, progress=progress, rejection=args.eval_rejection, oversample=args.eval_oversample)
            with progress.stage("oracle / FID of the rejection samples"):
                metrics.update({f"rejection_{key}": value for key, value in sample_quality_metrics(rejected, labels, **judge).items()})
            metrics.update(rejection=args.eval_rejection, rejection_oversample=args.eval_oversample)
        metrics.update(
            generated=len(samples),
            train_steps=global_step,
            train_seconds=round(train_seconds, 1),
            eval_seconds=round(progress.close(), 1),
        )
        logger.info(f"metrics: {json.dumps(metrics)}")
        save_model_folder(args, pipe, metrics, num_classes)
        if args.push_to_hub:
            push_output_folder(args, f"DCGAN trained for {global_step} steps")
        headline = ("oracle_validity", "oracle_coverage", "oracle_attribute_accuracy", "fid_domain", "rejection_oracle_validity", "rejection_fid_domain")
        print(run_summary(args.output_dir, metrics, headline, {"training": train_seconds, "evaluation": metrics["eval_seconds"]}))
    end_training(accelerator)
    return args.output_dir


def save_model_folder(args, pipe: GANPipeline, metrics: dict, num_classes: int | None) -> None:
    """Pipeline, card, samples.png, interpolation.png/.gif and metrics.json into a staging folder, then moved into
    `output_dir` (model_index.json last)."""
    with staged_model_folder(args.output_dir, metrics) as staging:
        pipe.save_pretrained(staging)
        labels = class_cycle(num_classes, 64)
        enlarged_grid(generate(pipe, 64, labels, seed=args.seed), nrow=8).save(os.path.join(staging, "samples.png"))
        strip, frames = interpolation_strip(pipe, args.seed, num_classes)
        strip.save(os.path.join(staging, "interpolation.png"))
        save_gif(frames, os.path.join(staging, "interpolation.gif"))
        command = training_command("train_gan", args)
        summary = f"{metrics['train_steps']} steps in {metrics['train_seconds']:.0f} s; metrics on {metrics['generated']} samples of the EMA generator"
        if "rejection" in metrics:
            summary += (
                f"; the rejection_ metrics on as many drawn by `pipe(..., rejection=\"{metrics['rejection']}\", "
                f"oversample={metrics['rejection_oversample']})`, which keeps the best-scored of {metrics['rejection_oversample']}× as many candidates"
            )
        if "fid_domain" in metrics:
            summary += f"; FID on the features of the domain classifier `{args.fid_classifier}`"
        write_model_card(
            staging,
            "gan",
            **card_dataset_fields(args),
            pipeline_class="GANPipeline",
            model_class="DCGANGenerator",
            tags=["gan", "dcgan", "class-conditional" if num_classes else "unconditional-image-generation"],
            num_classes=num_classes,
            metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in ("train_steps", "train_seconds", "eval_seconds", "generated", "rejection_oversample")},
            training_summary=summary,
            sample_grid="samples.png",
            training_command=command,
        )
        with open(os.path.join(staging, "README.md"), "a") as f:
            f.write("\n## Interpolation\n\nSpherical paths between random latents:\n\n![interpolation](interpolation.png)\n")



if __name__ == "__main__":
    try:
        main(parse_args())
    except TrainingDivergedError as error:
        sys.exit(f"error: {error}")
