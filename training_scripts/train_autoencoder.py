#!/usr/bin/env python
"""Train an autoencoder, denoising / sparse / masked autoencoder, (β-)VAE or VQ-VAE with 🤗 Accelerate.

    accelerate launch training_scripts/train_autoencoder.py --model vae --output_dir shapes-vae
    python training_scripts/train_autoencoder.py --model masked_ae --dataset_name path/to/images
    python training_scripts/train_autoencoder.py --model vqvae --dead_code_steps 100 --output_dir shapes-vqvae

The output folder is a saved `AutoencoderPipeline` (model_index.json, model/ with safetensors weights and
config) plus README.md (model card), samples.png, metrics.json; `checkpoint-*` folders (accelerate's
`save_state`) beside them allow `--resume_from_checkpoint latest`. A VQ-VAE is the first stage only: it
reconstructs, and samples once a prior over its codes is trained (`VQVAEPipeline`).

Data order is a pure function of (seed, epoch), and the noise of each step of (seed, step, rank), so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have.
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

MODEL_NAMES = ("ae", "denoising_ae", "sparse_ae", "masked_ae", "vae", "vqvae")  # the keys of MODEL_VARIANTS below

# the VQ-VAE's flags and their defaults: filled in for --model vqvae, refused with any other model
VQVAE_DEFAULTS = {
    "num_vq_embeddings": 256,
    "vq_embed_dim": None,  # = --latent_channels
    "quantizer": "vq",
    "commitment_beta": 0.25,
    "ema_codebook": False,
    "codebook_ema_decay": 0.99,
    "kmeans_init": False,
    "dead_code_steps": 0,
    "cosine_codes": False,
    "usage_window": 100,
    "gumbel_temperature": 1.0,
    "gumbel_min_temperature": 1 / 16,
    "gumbel_kl_weight": 5e-4,
}
# the flags only one quantiser reads
QUANTIZER_FLAGS = {
    "vq": ("commitment_beta", "ema_codebook", "codebook_ema_decay", "kmeans_init", "dead_code_steps", "cosine_codes"),
    "gumbel": ("gumbel_temperature", "gumbel_min_temperature", "gumbel_kl_weight"),
}
SHAPES_FACTORS = ("shape_0", "color_0", "size_0", "x_0", "y_0", "angle_0")
DSPRITES_FACTORS = ("shape", "scale", "orientation", "pos_x", "pos_y")

# the flags that build a model from scratch (refused with --pretrained_model_name_or_path, whose config rules)
ARCHITECTURE_FLAGS = (
    "block_out_channels", "layers_per_block", "latent_channels", "latent_type", "beta", "likelihood",
    "gaussian_variance", "latent_prior", "latent_prior_components", "noise_std", "corruption", "drop_prob",
    "mask_ratio", "patch_size", "sparsity_weight", "num_vq_embeddings", "vq_embed_dim", "quantizer",
    "commitment_beta", "ema_codebook", "codebook_ema_decay", "kmeans_init", "dead_code_steps", "cosine_codes",
    "usage_window", "gumbel_temperature", "gumbel_min_temperature", "gumbel_kl_weight",
)
# training latents the GLO Gaussian / the VAE's latent mixture are fitted to, at most
MAX_FIT_LATENTS = 10_000
MAX_SCALE_FIT_IMAGES = 1_000  # one scalar, ln σ of the 8-bit decoder: a thousand images fix it to ~1e-3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--model", required=True, choices=sorted(MODEL_NAMES), help="which member of the family")
    # data
    parser.add_argument("--dataset_name", default="shapes", help="'shapes', 'dsprites', a Hub dataset id, an image folder or a parquet file")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--eval_split", default="test", help="held-out split for the metrics")
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--num_channels", type=int, default=3, choices=(1, 3))
    add_augmentation_arguments(parser)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=1000)
    parser.add_argument("--num_shapes", type=int, default=1, choices=(1, 2), help="shapes per scene in the shapes world")
    add_image_loading_arguments(parser)
    # model
    parser.add_argument(
        "--pretrained_model_name_or_path",
        default=None,
        help="start from this saved model (a folder or Hub id: the model, or a pipeline holding it) instead of random "
        "weights; its config is the architecture, so the architecture flags below are refused with it",
    )
    parser.add_argument(
        "--train_modules",
        choices=("all", "decoder"),
        default="all",
        help="decoder: fine-tune only the decoder of --pretrained_model_name_or_path; the encoder (and a VQ-VAE's "
        "codebook: no restarts, no updates) stay frozen, so the codes, and a prior trained on them, do not change",
    )
    parser.add_argument("--block_out_channels", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--layers_per_block", type=int, default=1)
    parser.add_argument("--latent_channels", type=int, default=16, help="for vqvae also D, the size of one code, unless --vq_embed_dim")
    parser.add_argument("--latent_type", choices=("spatial", "vector"), default=None, help="default: spatial for vqvae (its only choice), vector otherwise")
    parser.add_argument("--beta", type=float, default=1.0, help="KL weight (β-VAE when > 1)")
    parser.add_argument("--likelihood", choices=("gaussian", "bernoulli", "discretized_gaussian"), default="bernoulli", help="p(x|z); bernoulli suits the binary-valued shapes world and MNIST, gaussian natural images; discretized_gaussian is a probability of the 8-bit images (256 bins, one learned scale), whose bits/dim compare with a diffusion model's")
    parser.add_argument("--gaussian_variance", type=float, default=0.01, help="c in N(x̂, cI); the initial σ² of discretized_gaussian")
    parser.add_argument("--latent_prior", choices=("mixture", "normal"), default=None, help="vae: sample from a Gaussian mixture fitted to the training latents after training (ex-post density estimation; the default for vector latents), or from N(0, I) (the default for spatial latents)")
    parser.add_argument("--latent_prior_components", type=int, default=100, help="M, the components of --latent_prior mixture")
    parser.add_argument("--markov_chain_steps", type=int, default=20, help="vae on the shapes world: also judge the samples after this many decode/re-encode steps (VAEModel.markov_chain; 0: skip)")
    parser.add_argument("--noise_std", type=float, default=0.2, help="σ of the denoising AE's Gaussian noise")
    parser.add_argument("--corruption", choices=("gaussian", "dropout"), default=None, help="denoising_ae corruption")
    parser.add_argument("--drop_prob", type=float, default=0.25)
    parser.add_argument("--mask_ratio", type=float, default=0.75)
    parser.add_argument("--patch_size", type=int, default=4)
    parser.add_argument("--sparsity_weight", type=float, default=None, help="λ (default 1e-3 for sparse_ae, else 0)")
    # VQ-VAE (--model vqvae only; defaults in VQVAE_DEFAULTS)
    parser.add_argument("--num_vq_embeddings", type=int, default=None, help="K, the codebook size (default 256)")
    parser.add_argument("--vq_embed_dim", type=int, default=None, help="D, the size of one code (default --latent_channels)")
    parser.add_argument("--quantizer", choices=("vq", "gumbel"), default=None, help="nearest-neighbour VQ (default) or DALL-E's Gumbel-softmax")
    parser.add_argument("--commitment_beta", type=float, default=None, help="β of the commitment term (default 0.25)")
    parser.add_argument("--ema_codebook", action="store_true", default=None, help="update the codebook by moving averages of its encoder outputs instead of the codebook loss (--use_ema is the average of the weights)")
    parser.add_argument("--codebook_ema_decay", type=float, default=None, help="γ of --ema_codebook (default 0.99)")
    parser.add_argument("--kmeans_init", action="store_true", default=None, help="codebook from k-means++ on the first batch's encoder outputs")
    parser.add_argument("--dead_code_steps", type=int, default=None, help="re-seed a code unused for this many batches from encoder outputs (default 0: off; e.g. 100)")
    parser.add_argument("--cosine_codes", action="store_true", default=None, help="l2-normalised codes and encoder outputs: search by cosine similarity")
    parser.add_argument("--usage_window", type=int, default=None, help="training batches over which codebook usage, perplexity and dead codes are logged (default 100)")
    parser.add_argument("--gumbel_temperature", type=float, default=None, help="τ at the first step (default 1.0)")
    parser.add_argument("--gumbel_min_temperature", type=float, default=None, help="τ at the last step, reached exponentially (default 1/16)")
    parser.add_argument("--gumbel_kl_weight", type=float, default=None, help="weight of KL(π ‖ uniform) per code position (default 5e-4)")
    # optimisation
    parser.add_argument("--train_batch_size", type=int, default=64, help="per process")
    parser.add_argument("--num_epochs", type=int, default=10)
    parser.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_epochs")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--lr_scheduler", default="cosine", choices=("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"))
    parser.add_argument("--lr_warmup_steps", type=int, default=100)
    parser.add_argument("--adam_beta1", type=float, default=0.9)
    parser.add_argument("--adam_beta2", type=float, default=0.999)
    parser.add_argument("--adam_weight_decay", type=float, default=0.0)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    add_mixed_precision_argument(parser)
    parser.add_argument(
        "--channels_last",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="channels-last tensors; off by default: on the CPU under bf16 GroupNorm's backward falls onto a slow path "
        "with them (16× slower at widths 16-32-64), which costs more than the convolutions gain "
        "(benchmarks/bench_vae_train.py --channels_last)",
    )
    parser.add_argument("--use_ema", action="store_true")
    parser.add_argument("--ema_decay", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    # checkpoints, logging, outputs
    parser.add_argument("--output_dir", default="shapes-vae")
    parser.add_argument("--checkpointing_steps", type=int, default=500)
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest'")
    parser.add_argument("--validation_steps", type=int, default=500, help="save a reconstruction/sample grid every N steps")
    parser.add_argument("--report_to", default="none", help="accelerate trackers: tensorboard, wandb, all, none")
    add_keep_freed_memory_argument(parser)
    parser.add_argument("--logging_dir", default="logs")
    parser.add_argument(
        "--num_generated",
        type=int,
        default=None,
        help="samples judged by the shapes oracle (default 1000; a run of fewer than 1,000 steps judges in proportion, "
        "at least 100, so that its evaluation stays short: pass it to choose, 0 to skip the samples)",
    )
    parser.add_argument("--iwae_samples", type=int, default=64, help="k of the importance-weighted bound (0: skip; it costs k decoder passes a held-out image)")
    parser.add_argument(
        "--iwae_images",
        type=int,
        default=None,
        help="held-out images the IWAE bound is computed on (default: all of them, or in proportion for runs of fewer "
        "than 1,000 steps, as --num_generated); the ELBO and reconstruction metrics use all",
    )
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)
    parser.add_argument("--hub_token", default=None)
    args = parser.parse_args(argv)
    args.learning_rate_given = flag_given("--learning_rate", argv)  # resuming keeps the checkpoint's schedule unless given

    if args.pretrained_model_name_or_path:
        flags = {token.split("=")[0] for token in (sys.argv[1:] if argv is None else argv) if token.startswith("--")}
        clash = sorted(flags & {"--" + name for name in ARCHITECTURE_FLAGS})
        if clash:
            parser.error(f"{', '.join(clash)}: the architecture comes from --pretrained_model_name_or_path's config")
    elif args.train_modules != "all":
        parser.error(f"--train_modules {args.train_modules} fine-tunes a trained model: it needs --pretrained_model_name_or_path")
    if args.sparsity_weight is None:
        args.sparsity_weight = 1e-3 if args.model == "sparse_ae" else 0.0
    if args.corruption is not None and args.model != "denoising_ae":
        parser.error("--corruption applies to --model denoising_ae only")
    if args.latent_type is None:
        args.latent_type = "spatial" if args.model == "vqvae" else "vector"
    if args.latent_prior is None:
        args.latent_prior = "mixture" if args.latent_type == "vector" else "normal"
    if args.model == "vqvae" and args.latent_type != "spatial":
        parser.error(f"--latent_type {args.latent_type}: a VQ-VAE quantises a grid of codes, --model vqvae takes --latent_type spatial only")
    given = [name for name in VQVAE_DEFAULTS if getattr(args, name) is not None]
    if given and args.model != "vqvae":
        parser.error(f"--model {args.model} does not take {', '.join('--' + name for name in given)} (flags of --model vqvae)")
    if args.model == "vqvae":
        quantizer = args.quantizer or VQVAE_DEFAULTS["quantizer"]
        for other, names in QUANTIZER_FLAGS.items():
            misplaced = [name for name in names if name in given and other != quantizer]
            if misplaced:
                parser.error(f"--quantizer {quantizer} does not take {', '.join('--' + name for name in misplaced)} (flags of --quantizer {other})")
        if args.codebook_ema_decay is not None and not args.ema_codebook:
            parser.error("--codebook_ema_decay needs --ema_codebook")
        for name, default in VQVAE_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
        if args.num_vq_embeddings < 2 or args.usage_window < 1 or args.dead_code_steps < 0:
            parser.error(
                f"need --num_vq_embeddings ≥ 2, --usage_window ≥ 1, --dead_code_steps ≥ 0; got {args.num_vq_embeddings}, "
                f"{args.usage_window}, {args.dead_code_steps}"
            )
        if not 0 < args.gumbel_min_temperature <= args.gumbel_temperature:
            parser.error(
                f"need 0 < --gumbel_min_temperature ≤ --gumbel_temperature, got {args.gumbel_min_temperature} and "
                f"{args.gumbel_temperature}"
            )
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. your-name/shapes-vae)")
    if args.markov_chain_steps < 0:
        parser.error(f"--markov_chain_steps must be ≥ 0, got {args.markov_chain_steps}")
    for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "validation_steps", "num_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    return args


answer_help_first(__name__, parse_args)
# the heavy imports come after argument parsing, so that `--help` answers at once
import torch  # noqa: E402
from accelerate.logging import get_logger  # noqa: E402
from diffusers.optimization import get_scheduler  # noqa: E402
from diffusers.training_utils import EMAModel  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from hf_genzoo import AutoencoderModel, AutoencoderPipeline, VAEModel, VQVAEModel  # noqa: E402
from hf_genzoo.data.image_cache import ImageSplit, load_image_split  # noqa: E402
from hf_genzoo.hub import load_model_component, write_model_card  # noqa: E402
from hf_genzoo.metrics import encode_means, evaluate_autoencoder, evaluate_vqvae, fit_decoder_log_scale  # noqa: E402
from hf_genzoo.metrics.evaluate import EvaluationProgress, on_8bit_grid  # noqa: E402
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
    scaled_to_run,
    save_checkpoint,
    save_validation_grid,
    setup_accelerator,
    staged_model_folder,
    tracker_config,
)
from hf_genzoo.utils import enlarged_grid  # noqa: E402

logger = get_logger(__name__, log_level="INFO")

# --model → (model class, config overrides); every other hyperparameter comes from the flags
MODEL_VARIANTS = {
    "ae": (AutoencoderModel, {"corruption": "none"}),
    "denoising_ae": (AutoencoderModel, {"corruption": "gaussian"}),
    "sparse_ae": (AutoencoderModel, {"corruption": "none"}),
    "masked_ae": (AutoencoderModel, {"corruption": "patch_mask"}),
    "vae": (VAEModel, {}),
    "vqvae": (VQVAEModel, {}),
}


def build_model(args) -> AutoencoderModel | VAEModel | VQVAEModel:
    model_cls, overrides = MODEL_VARIANTS[args.model]
    config = dict(
        in_channels=args.num_channels,
        out_channels=args.num_channels,
        block_out_channels=tuple(args.block_out_channels),
        layers_per_block=args.layers_per_block,
        latent_channels=args.latent_channels,
        sample_size=args.resolution,
    )
    if model_cls is VQVAEModel:  # always spatial: one code per location of the h × w grid
        config.update(
            vq_embed_dim=args.vq_embed_dim,
            num_vq_embeddings=args.num_vq_embeddings,
            quantizer=args.quantizer,
            beta=args.commitment_beta,
            use_ema=args.ema_codebook,
            ema_decay=args.codebook_ema_decay,
            kmeans_init=args.kmeans_init,
            dead_code_steps=args.dead_code_steps,
            cosine=args.cosine_codes,
            usage_window=args.usage_window,
            gumbel_temperature=args.gumbel_temperature,
            gumbel_kl_weight=args.gumbel_kl_weight,
        )
    elif model_cls is VAEModel:
        config.update(
            latent_type=args.latent_type,
            beta=args.beta,
            likelihood=args.likelihood,
            gaussian_variance=args.gaussian_variance,
            latent_prior=args.latent_prior,
            latent_prior_components=args.latent_prior_components,
        )
    else:
        config.update(
            latent_type=args.latent_type,
            noise_std=args.noise_std,
            drop_prob=args.drop_prob,
            mask_ratio=args.mask_ratio,
            patch_size=args.patch_size,
            sparsity_weight=args.sparsity_weight,
        )
        config.update(overrides)
        if args.model == "denoising_ae" and args.corruption:
            config["corruption"] = args.corruption
    return model_cls(**config)


def load_or_build_model(args) -> AutoencoderModel | VAEModel | VQVAEModel:
    if not args.pretrained_model_name_or_path:
        return build_model(args)
    model_cls = MODEL_VARIANTS[args.model][0]
    return load_model_component(args.pretrained_model_name_or_path, model_cls)


def freeze_all_but_decoder(model) -> list[str]:
    """Freeze every child of `model` outside its `decoder_modules`; returns their names, for `set_train_mode`."""
    frozen = [name for name, _ in model.named_children() if name not in model.decoder_modules]
    for name in frozen:
        getattr(model, name).requires_grad_(False)
    return frozen


def set_train_mode(model, frozen: list[str]) -> None:
    """Training mode, except the frozen children: in eval mode a quantiser neither restarts nor updates codes."""
    model.train()
    for name in frozen:
        getattr(model, name).eval()


def load_split(args, split: str, max_samples: int | None) -> ImageSplit:
    """The split preprocessed once into a memory-mapped uint8 cache (`hf_genzoo.data.image_cache`): indexing it reads
    those images only, as float (N, C, H, W) in [-1, 1]."""
    return load_image_split(args, split, max_samples)


def ground_truth_factors(images: ImageSplit, dataset_name: str) -> torch.Tensor | None:
    """The generating factors (N, K) of the shapes world or dSprites, for the disentanglement metric; else None."""
    names = {"shapes": SHAPES_FACTORS, "dsprites": DSPRITES_FACTORS}.get(dataset_name, ())
    return torch.stack([torch.tensor(images.column(name)) for name in names], dim=1) if names else None


def gumbel_temperature(step: int, max_train_steps: int, start: float, end: float) -> float:
    """τ of the Gumbel-softmax at optimiser step `step` (0-based), annealed exponentially from `start` at the first
    step to `end` at the last: τ_s = start · (end / start)^(s / (S − 1)). A pure function of the step, so a resumed
    run anneals exactly as the uninterrupted one."""
    progress = min(step / max(max_train_steps - 1, 1), 1.0)
    return start * (end / start) ** progress


@torch.no_grad()
def validation_grid(model, images: torch.Tensor, generator_seed: int, num_samples: int = 16, markov_chain_steps: int = 0):
    """Top: held-out images; middle: their reconstructions; bottom: samples (if the model can sample on its own;
    a VQ-VAE needs its prior, so it shows reconstructions only). With `markov_chain_steps` (a VAE), the same draws
    follow, each after that many decode/re-encode steps (`VAEModel.markov_chain`)."""
    modes = [module.training for module in model.modules()]
    model.eval()
    x = images.to(model.device, model.dtype)
    rows = [x.float().cpu(), model(x).sample.float().cpu()]
    names = ["held-out images", "reconstructions"]
    if isinstance(model, VAEModel) or (isinstance(model, AutoencoderModel) and model.latent_gaussian_fitted):
        # a VAE's latent mixture is fitted after training: until then its grids sample N(0, I)
        prior = {"prior": "normal"} if isinstance(model, VAEModel) and not model.latent_prior_fitted else {}
        z = model.sample_prior(num_samples, generator=torch.Generator().manual_seed(generator_seed), **prior).to(model.device)
        rows.append(model.decode(z).sample.float().cpu())
        names.append("samples, N(0, I)" if prior else "samples")
        if markov_chain_steps and isinstance(model, VAEModel):
            rows.append(model.decode(model.markov_chain(z, markov_chain_steps)).sample.float().cpu())
            names.append(f"after {markov_chain_steps} chain steps")
    for module, mode in zip(model.modules(), modes):
        module.training = mode
    # one label for the first grid row of each group (a group of samples spans several)
    labels = [name if i == 0 else "" for name, row in zip(names, rows) for i in range(-(-len(row) // len(images)))]
    return enlarged_grid(torch.cat(rows), nrow=len(images), row_labels=labels)


def build_optimizer(model, args) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, PyTorch's default (per-tensor) implementation. The fused kernel is a
    little faster on small models (the main job's step at batch 16: 1.60× the plain fp32 loop, against 1.49× with
    this one in an earlier session; README "Training throughput") but not bit-identical (about 1e-8 apart after 20
    steps), so the results this script reported would no longer be reproduced exactly by their commands."""
    return torch.optim.AdamW(
        [parameter for parameter in model.parameters() if parameter.requires_grad],
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
    )


def training_step(accelerator, model, optimizer, lr_scheduler, x, generator, max_grad_norm: float):
    """One micro-batch: loss under autocast, backward, and (on accumulation boundaries) the optimiser step.
    Returns the loss terms, or None (before any update) when the loss is not finite. `generator` draws the
    micro-batch's noise (VAE sampling, corruption, Gumbel noise), a function of (seed, step, rank)."""
    with accelerator.accumulate(model):
        with accelerator.autocast():
            out = model(x, return_loss=True, generator=generator)
        if not torch.isfinite(out.loss):
            return None
        accelerator.backward(out.loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return out


def main(args: argparse.Namespace) -> str:
    accelerator = setup_accelerator(args, logger)

    # 1. data, preprocessed once into a memory-mapped uint8 cache (resize and centre crop happen there, not per step):
    # the training images are read a micro-batch at a time, the held-out ones (--max_eval_samples) into one tensor
    with accelerator.main_process_first():  # the main process builds the cache; the others then read it
        (train_images,), (eval_split,) = load_train_and_held_out(
            lambda split, max_samples: (load_split(args, split, max_samples),), args, logger
        )
    eval_images, eval_factors = eval_split[:], ground_truth_factors(eval_split, args.dataset_name)
    num_train = len(train_images)
    if args.model == "vae" and not args.pretrained_model_name_or_path and args.latent_prior == "mixture" and min(num_train, MAX_FIT_LATENTS) < args.latent_prior_components:
        raise ValueError(
            f"--latent_prior_components {args.latent_prior_components} is more than the {num_train} training images "
            "the mixture is fitted to; lower it or use --latent_prior normal"
        )
    global_batch = args.train_batch_size * accelerator.num_processes
    batches_per_epoch, max_train_steps = plan_steps(
        num_train, global_batch, args.gradient_accumulation_steps, args.num_epochs, args.max_train_steps
    )
    # the evaluation's sizes, when not given: in proportion to a short run (its training is short too)
    if args.num_generated is None:
        args.num_generated = scaled_to_run(1000, max_train_steps)
    if args.iwae_images is None and max_train_steps < 1000:
        args.iwae_images = scaled_to_run(len(eval_images), max_train_steps)

    # 2. model, optimiser, schedule, EMA
    model = load_or_build_model(args)
    frozen = freeze_all_but_decoder(model) if args.train_modules == "decoder" else []
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, args)
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    ema = None
    if args.use_ema:
        ema = EMAModel(accelerator.unwrap_model(model).parameters(), decay=args.ema_decay)
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("train_autoencoder", config=tracker_config(args))

    # 3. resume
    global_step = resume(accelerator, args.output_dir, args.resume_from_checkpoint)
    if global_step:
        resume_learning_rate(optimizer, args.learning_rate, args.learning_rate_given, lr_scheduler, log=logger)

    logger.info(f"{num_train} training images, {global_batch} per step on {accelerator.num_processes} process(es), {max_train_steps} steps")
    progress = tqdm(range(max_train_steps), initial=global_step, desc="steps", disable=not accelerator.is_local_main_process)
    unwrapped = accelerator.unwrap_model(model)
    is_vqvae = isinstance(unwrapped, VQVAEModel)
    anneal_gumbel = is_vqvae and args.quantizer == "gumbel"
    grid_images = eval_images[:8]
    last_good_checkpoint = find_checkpoint(args.output_dir, "latest") if accelerator.is_main_process else None
    start_time = time.perf_counter()
    set_train_mode(model, frozen)

    # 4. the loop: one optimiser step = gradient_accumulation_steps micro-batches of the global batch, read by a
    # DataLoader in the order micro_batches gives, with flips and crops drawn from (seed, epoch, image)
    batches = image_batches(args, accelerator, train_images, batches_per_epoch, global_step)
    for micro_index, batch in batches:
        if global_step >= max_train_steps:  # also when resuming a finished run
            break
        x = batch["pixel_values"].to(accelerator.device)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        noise = micro_batch_generator(args.seed, micro_index, accelerator.process_index)
        if anneal_gumbel:
            unwrapped.quantize_layer.temperature = gumbel_temperature(
                global_step, max_train_steps, args.gumbel_temperature, args.gumbel_min_temperature
            )
        out = training_step(accelerator, model, optimizer, lr_scheduler, x, noise, args.max_grad_norm)
        if out is None:
            progress.close()
            raise diverged_error(global_step + 1, last_good_checkpoint)

        if not accelerator.sync_gradients:
            continue
        if ema is not None:
            ema.step(unwrapped.parameters())
        global_step += 1
        progress.update(1)
        terms = {k: round(v.item(), 4) for k, v in out.items() if v is not None}  # 0-d tensors; None: term absent
        if is_vqvae:  # over the last --usage_window batches; `perplexity` above is this batch's
            health = unwrapped.codebook_health()
            terms.update(
                codebook_usage=round(health["codebook_usage"], 4),
                codebook_perplexity=round(health["perplexity"], 2),
                dead_codes=health["dead_codes"],
            )
        progress.set_postfix(**terms)
        extra = {"gumbel_temperature": unwrapped.quantize_layer.temperature} if anneal_gumbel else {}
        accelerator.log({**terms, **extra, "lr": lr_scheduler.get_last_lr()[0]}, step=global_step)

        if global_step % args.checkpointing_steps == 0 or global_step == max_train_steps:
            # on every rank: under DeepSpeed or FSDP each writes its own shard
            last_good_checkpoint = save_checkpoint(
                accelerator, args.output_dir, global_step, args.checkpoints_total_limit
            )
        if accelerator.is_main_process and global_step % args.validation_steps == 0:
            save_validation_grid(accelerator, args.output_dir, validation_grid(unwrapped, grid_images, args.seed), global_step)
    train_seconds = time.perf_counter() - start_time
    accelerator.wait_for_everyone()

    # 5. finish on the main process: EMA weights, sampling distribution, metrics, the saved folder
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(unwrapped.parameters())
        final_model = unwrapped.to(memory_format=torch.contiguous_format).eval()
        logger.info(
            f"evaluating on {len(eval_images)} held-out images"
            + (f", {args.num_generated} samples" if args.dataset_name == "shapes" and not is_vqvae else "")
            + " (--max_eval_samples, --num_generated, --iwae_images, --markov_chain_steps make it shorter)"
        )
        progress = EvaluationProgress(desc="evaluation")
        if is_vqvae:
            # samples come from a prior over the codes (VQVAEPipeline), not a latent Gaussian; scaling_factor stays
            # 1.0, as in diffusers' VQModel and the LDM paper's VQ-regularised first stages
            with progress.stage("reconstruction, codebook usage"):
                metrics = evaluate_vqvae(final_model, eval_images, shapes_resolution=args.resolution if args.dataset_name == "shapes" else None)
        else:
            with progress.stage("encoding the training latents"):
                train_latents = encode_means(final_model, train_images[:MAX_FIT_LATENTS])
            prior_metrics = {}
            if isinstance(final_model, AutoencoderModel):
                final_model.fit_latent_gaussian(train_latents)  # GLO sampling (Bojanowski et al. 2017)
            else:
                final_model.register_to_config(scaling_factor=float(1.0 / train_latents.std().clamp_min(1e-6)))
                if final_model.config.latent_prior == "mixture":  # ex-post density estimation (Ghosh et al. 2020)
                    log_likelihood = final_model.fit_latent_prior(train_latents, generator=torch.Generator().manual_seed(args.seed))
                    prior_metrics = {
                        "latent_prior_components": final_model.config.latent_prior_components,
                        "latent_prior_log_likelihood": log_likelihood,
                    }
            decoder_log_scale = None
            if isinstance(final_model, VAEModel) and final_model.config.likelihood != "discretized_gaussian":
                if on_8bit_grid(eval_images):
                    # bits/dim of the 8-bit images beside those under the model's own likelihood: the discretised
                    # decoder's σ is the one that maximises the training images' ELBO
                    with progress.stage("8-bit decoder scale on the training images"):
                        decoder_log_scale = fit_decoder_log_scale(
                            final_model, train_images[:MAX_SCALE_FIT_IMAGES], generator=torch.Generator().manual_seed(args.seed)
                        )
                else:
                    logger.info("the held-out images are not 8-bit grey levels: no 8-bit bits/dim")
            metrics = evaluate_autoencoder(
                final_model,
                eval_images,
                factors=eval_factors if isinstance(final_model, VAEModel) else None,
                shapes_resolution=args.resolution if args.dataset_name == "shapes" else None,
                num_generated=args.num_generated,
                iwae_samples=args.iwae_samples,
                iwae_images=args.iwae_images,
                seed=args.seed,
                markov_chain_steps=args.markov_chain_steps,
                decoder_log_scale=decoder_log_scale,
                progress=progress,
            )
            metrics.update(prior_metrics)
        eval_seconds = progress.close()
        metrics.update(train_steps=global_step, train_seconds=round(train_seconds, 1), eval_seconds=round(eval_seconds, 1))
        logger.info(f"metrics: {json.dumps(metrics)}")
        # the sample grid: 64 draws, or for a VAE judged after the chain 32 draws and the same 32 after it
        chain_steps = args.markov_chain_steps if isinstance(final_model, VAEModel) else 0
        grid = validation_grid(final_model, grid_images, args.seed, num_samples=32 if chain_steps else 64, markov_chain_steps=chain_steps)
        save_model_folder(args, final_model, metrics, grid, chain_steps)
        if args.push_to_hub:
            push_output_folder(args, f"{args.model} trained for {global_step} steps")
        headline = ("mse", "psnr", "likelihood", "elbo_nats", "iwae_nats", "elbo_bpd_8bit", "iwae_bpd_8bit", "oracle_validity", "oracle_coverage", "oracle_validity_markov_chain", "codebook_usage", "perplexity")
        print(run_summary(args.output_dir, metrics, headline, {"training": train_seconds, "evaluation": eval_seconds}))
    end_training(accelerator)
    return args.output_dir


def save_model_folder(args, model, metrics: dict, grid, markov_chain_steps: int = 0) -> None:
    """Write the pipeline, model card, sample grid and metrics into a staging folder, then move each entry
    into `output_dir` (model_index.json last): a kill mid-way never leaves a half-written model folder.
    `markov_chain_steps`: the grid's and the metrics' decode/re-encode chain, which the card shows how to run."""
    with staged_model_folder(args.output_dir, metrics) as staging:
        AutoencoderPipeline(model=model).save_pretrained(staging)
        grid.save(os.path.join(staging, "samples.png"))
        command = training_command("train_autoencoder", args)
        source = args.pretrained_model_name_or_path
        fine_tuned = ""
        if source:
            part = "the decoder only; encoder and codebook frozen" if args.train_modules == "decoder" else "all weights"
            fine_tuned = f"; fine-tuned from `{source}` ({part})"
        write_model_card(
            staging,
            "autoencoder",
            **card_dataset_fields(args),
            pipeline_class="AutoencoderPipeline",
            model_class=type(model).__name__,
            tags=["autoencoder", args.model, "unconditional-image-generation"],
            metrics={k: v for k, v in metrics.items() if k not in ("train_steps", "train_seconds", "eval_seconds", "iwae_samples", "iwae_images")},
            training_summary=f"{metrics['train_steps']} steps in {metrics['train_seconds']:.0f} s"
            + (f"; IWAE bound with k = {metrics['iwae_samples']}" if metrics.get("iwae_samples") else "")
            + (f" on {metrics['iwae_images']} held-out images" if metrics.get("iwae_images") else "")
            + fine_tuned,
            base_model=source if source and not os.path.exists(source) else None,  # a Hub id, not a local folder
            sample_grid="samples.png",
            markov_chain_steps=markov_chain_steps,
            training_command=command,
        )



if __name__ == "__main__":
    try:
        main(parse_args())
    except TrainingDivergedError as error:
        sys.exit(f"error: {error}")
