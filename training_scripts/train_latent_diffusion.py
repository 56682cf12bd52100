#!/usr/bin/env python
"""Train a latent diffusion model (Rombach et al. 2022) on the latents of a frozen first stage: unconditional,
class-conditional or text-conditional, with 🤗 Accelerate.

    python training_scripts/train_latent_diffusion.py --vae shapes-kl-f4 --conditioning text --output_dir shapes-ldm
    accelerate launch training_scripts/train_latent_diffusion.py --vae shapes-kl-f4 --conditioning class

The first stage (`--vae`: a folder or Hub id holding our `VAEModel` with spatial latents or `VQVAEModel`, or
diffusers' `AutoencoderKL` / `VQModel`) encodes every image once into a memory-mapped latent cache
(hf_genzoo.data.latent_cache) that later runs on the same data reuse; each step samples z = μ + σ ε from the cached
posterior, multiplies it by the `scaling_factor` (measured on the cache as 1 / std unless `--scaling_factor` is given,
and stored in the first stage's config in the saved folder) and takes Algorithm 1 of Ho et al. on it
(../shared/EQUATIONS.md, "DDPM", "Latent diffusion").

Text: a transformers `CLIPTextModel` trained jointly from scratch with a word-level tokenizer built from the training
captions (hf_genzoo.models.text_encoder), or `--text_encoder` a folder of a pretrained one, kept frozen. Conditions are
dropped with probability `--conditioning_dropout` (the empty prompt, or the null class label) for classifier-free
guidance. Flags follow diffusers' `examples/text_to_image/train_text_to_image.py` where they exist.

The output folder is a saved `LatentDiffusionPipeline` (the EMA weights unless `--no-use_ema`); a text-conditioned one
has the components of a Stable Diffusion folder, so `StableDiffusionPipeline.from_pretrained(folder,
safety_checker=None)` loads it after `import hf_genzoo`. Beside it: README.md (model card), samples.png, metrics.json,
`checkpoint-*` folders for `--resume_from_checkpoint latest`, validation/step-*.png grids.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from script_args import answer_help_first

PRESETS = {
    # block widths, ResNet layers per level, attention heads, text-encoder width / layers / heads
    "tiny": dict(block_out_channels=(32, 64), layers_per_block=1, heads=4, text_hidden=64, text_layers=1, text_heads=2),
    "small": dict(block_out_channels=(64, 128, 128), layers_per_block=2, heads=4, text_hidden=128, text_layers=2, text_heads=4),
    "base": dict(block_out_channels=(128, 256, 256), layers_per_block=2, heads=8, text_hidden=256, text_layers=4, text_heads=4),
}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
DEFAULT_LEARNING_RATE = 2e-4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train a latent diffusion model (unconditional, class- or text-conditional) on a frozen first stage."
    )
    # first stage and conditioning
    parser.add_argument("--vae", required=True, help="the frozen first stage: a folder or Hub id holding a VAEModel (spatial latents), VQVAEModel, AutoencoderKL or VQModel (alone, or as a pipeline's component)")
    parser.add_argument("--conditioning", default="text", choices=("none", "class", "text"), help="what the UNet is conditioned on (default: text)")
    parser.add_argument("--scaling_factor", type=float, default=None, help="latent scale; default 1 / std of the cached latents, measured and stored in the saved first stage's config")
    parser.add_argument("--text_encoder", default=None, help="a folder of a pretrained transformers text encoder and its tokenizer (kept frozen; prompt embeddings cached); default: a CLIPTextModel trained jointly from scratch with a word-level tokenizer built from the captions")
    parser.add_argument("--conditioning_dropout", type=float, default=0.1, help="probability of replacing a caption by the empty prompt (or a label by the null label) for classifier-free guidance")
    # data
    parser.add_argument("--dataset_name", default="shapes", help="'shapes' (default, with captions), a Hub dataset id, an image folder or a parquet file/folder")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--eval_split", default="test", help="held-out split: validation loss, likelihood and the captions of the sample metrics")
    parser.add_argument("--image_column", default=None, help="default: the first Image column")
    parser.add_argument("--caption_column", default=None, help="captions for --conditioning text (default 'caption', else 'text')")
    parser.add_argument("--label_column", default="label", help="class labels for --conditioning class")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--num_channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--center_crop", action=argparse.BooleanOptionalAction, default=True, help="centre crop (default) or a seeded random crop, drawn once when the latents are cached")
    parser.add_argument("--num_shapes", type=int, nargs="+", default=None, choices=(1, 2), help="shapes per scene in the shapes world (default: 1 2 for text, 1 otherwise)")
    parser.add_argument("--max_train_samples", type=int, default=None, help="at most N training images; the shapes world generates N (default 10,000)")
    parser.add_argument("--max_eval_samples", type=int, default=1000)
    parser.add_argument("--cache_dir", default=None, help="where latent caches live (default: ~/.cache/hf_genzoo/latents, or $HF_GENZOO_CACHE)")
    parser.add_argument("--encode_batch_size", type=int, default=256, help="images per first-stage pass when building the cache")
    parser.add_argument("--dataloader_num_workers", type=int, default=0, help="worker processes reading the memory-mapped cache (0: the main process)")
    # model
    parser.add_argument("--unet_preset", default="small", choices=tuple(PRESETS), help="UNet (and from-scratch text encoder) size: tiny, small (default) or base")
    parser.add_argument("--block_out_channels", type=int, nargs="+", default=None, help="overrides the preset's widths")
    parser.add_argument("--layers_per_block", type=int, default=None, help="overrides the preset's")
    parser.add_argument("--norm_num_groups", type=int, default=16)
    parser.add_argument("--text_encoder_hidden_size", type=int, default=None, help="overrides the preset's (from-scratch text encoder)")
    # diffusion
    parser.add_argument("--num_train_timesteps", type=int, default=1000)
    parser.add_argument("--beta_schedule", default="linear", choices=BETA_SCHEDULES)
    parser.add_argument("--prediction_type", default="v_prediction", choices=PREDICTION_TYPES, help="what the UNet regresses (default v, as the pixel script)")
    parser.add_argument("--snr_gamma", type=float, default=5.0, help="γ of min-SNR loss weighting (Hang et al. 2023); 0 turns it off")
    parser.add_argument("--noise_offset", type=float, default=0.0, help="scale of per-channel offset noise added to ε (as diffusers' example)")
    # optimisation
    parser.add_argument("--train_batch_size", type=int, default=64, help="per process")
    parser.add_argument("--num_epochs", type=int, default=20)
    parser.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_epochs")
    parser.add_argument("--max_train_seconds", type=float, default=None, help="stop training after this many seconds (then evaluate and save as usual; the LR schedule still spans --max_train_steps): for runs on a time budget")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=None, help=f"default {DEFAULT_LEARNING_RATE}; on resume, the checkpoint's schedule is kept unless this flag is given")
    parser.add_argument("--lr_scheduler", default="cosine", choices=("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"))
    parser.add_argument("--lr_warmup_steps", type=int, default=200)
    parser.add_argument("--adam_beta1", type=float, default=0.9)
    parser.add_argument("--adam_beta2", type=float, default=0.999)
    parser.add_argument("--adam_weight_decay", type=float, default=0.0)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--mixed_precision", choices=("auto", "no", "fp16", "bf16"), default=None, help="default: accelerate config; auto: bf16 where the device runs it natively, else fp32")
    parser.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True, help="EMA of the trained weights (saved and sampled from)")
    parser.add_argument("--ema_max_decay", type=float, default=0.9999)
    parser.add_argument("--ema_power", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0)
    # checkpoints, logging, outputs, evaluation
    parser.add_argument("--output_dir", default="shapes-ldm")
    parser.add_argument("--checkpointing_steps", type=int, default=1000)
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest'")
    parser.add_argument("--validation_steps", type=int, default=1000, help="a sample grid of --validation_prompts and the held-out validation loss every N steps")
    parser.add_argument("--validation_prompts", nargs="+", default=None, help="fixed prompts of the validation grids (default: 8 held-out captions)")
    parser.add_argument("--num_validation_images", type=int, default=256, help="held-out latents of the validation loss (at fixed timesteps and noise)")
    parser.add_argument("--report_to", default="none", help="accelerate trackers: tensorboard, wandb, all, none")
    parser.add_argument("--no_keep_freed_memory", dest="keep_freed_memory", action="store_false", help="on the CPU, leave glibc's malloc at its defaults")
    parser.add_argument("--logging_dir", default="logs")
    parser.add_argument("--num_inference_steps", type=int, default=50, help="DDIM steps of the grids and the sample metrics")
    parser.add_argument("--guidance_scale", type=float, default=3.0, help="classifier-free guidance of the grids and the sample metrics")
    parser.add_argument("--num_generated", type=int, default=1000, help="samples judged by the shapes oracle (one per held-out caption / class in turn; a short run evaluates faster with e.g. 100)")
    parser.add_argument(
        "--fid_classifier", default=None,
        help="a DomainClassifier folder (training_scripts/train_domain_classifier.py) for data the shapes oracle cannot read "
        "(MNIST): FID of the samples on its features against held-out images, and, class-conditional, the fraction it "
        "assigns to the class asked for (classifier_accuracy)",
    )
    parser.add_argument("--num_likelihood_images", type=int, default=256, help="held-out images of the latent bits/dim bound (0: skip)")
    parser.add_argument("--likelihood_timesteps", type=int, default=100, help="K sampled terms of the bound (an unbiased estimate)")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)
    parser.add_argument("--hub_token", default=None)
    args = parser.parse_args(argv)

    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. your-name/shapes-ldm)")
    for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "validation_steps", "num_epochs", "num_inference_steps", "encode_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    if not 0.0 <= args.conditioning_dropout < 1.0:
        parser.error(f"--conditioning_dropout must lie in [0, 1), got {args.conditioning_dropout}")
    if args.num_inference_steps > args.num_train_timesteps:
        parser.error(f"--num_inference_steps {args.num_inference_steps} exceeds --num_train_timesteps {args.num_train_timesteps}")
    if args.snr_gamma is not None and args.snr_gamma < 0:
        parser.error(f"--snr_gamma must be ≥ 0 (0: off), got {args.snr_gamma}")
    if args.snr_gamma == 0:
        args.snr_gamma = None
    if args.scaling_factor is not None and args.scaling_factor <= 0:
        parser.error(f"--scaling_factor must be > 0, got {args.scaling_factor}")
    if args.text_encoder is not None and args.conditioning != "text":
        parser.error("--text_encoder needs --conditioning text")
    if args.num_shapes is None:
        args.num_shapes = [1, 2] if args.conditioning == "text" else [1]
    if args.fid_classifier is not None:
        if args.conditioning == "text":
            parser.error("--fid_classifier reads unconditional or class-conditional samples; text-to-image samples are read by the shapes oracle")
        if not os.path.isfile(os.path.join(args.fid_classifier, "config.json")):
            parser.error(f"--fid_classifier {args.fid_classifier!r} is not a DomainClassifier folder (no config.json)")
    args.learning_rate_given = args.learning_rate is not None
    if args.learning_rate is None:
        args.learning_rate = DEFAULT_LEARNING_RATE
    preset = PRESETS[args.unet_preset]
    args.block_out_channels = args.block_out_channels or list(preset["block_out_channels"])
    args.layers_per_block = args.layers_per_block or preset["layers_per_block"]
    bad_groups = [c for c in args.block_out_channels if c % args.norm_num_groups]
    if bad_groups:
        parser.error(f"--norm_num_groups {args.norm_num_groups} must divide every --block_out_channels, not {bad_groups}")
    return args


answer_help_first(__name__, parse_args)
# the heavy imports come after argument parsing, so that `--help` answers at once
import torch  # noqa: E402
from accelerate.logging import get_logger  # noqa: E402

logger = get_logger(__name__, log_level="INFO")


# ---- the first stage and the latent cache ------------------------------------------------------------------


def load_first_stage(name_or_path: str):
    """The first stage named by `--vae`: a folder (or Hub id) holding one model, or a saved pipeline whose `vae` /
    `vqvae` component is one. Any other model is refused with its class named."""
    from diffusers import AutoencoderKL, VQModel

    from hf_genzoo import VAEModel, VQVAEModel
    from hf_genzoo.hub import resolve_pretrained_folder
    from hf_genzoo.pipelines.pipeline_latent_diffusion import check_first_stage

    classes = {cls.__name__: cls for cls in (VAEModel, VQVAEModel, AutoencoderKL, VQModel)}
    folder = resolve_pretrained_folder(name_or_path)
    index = os.path.join(folder, "model_index.json")
    if os.path.isfile(index):
        with open(index) as f:
            components = {k: v for k, v in json.load(f).items() if isinstance(v, list) and v[1]}
        names = [k for k, (_, cls) in components.items() if cls in classes]
        if not names:
            raise ValueError(
                f"--vae {name_or_path} holds no first stage (its components: "
                f"{ {k: cls for k, (_, cls) in components.items()} }); expected one of {sorted(classes)}"
            )
        model = classes[components[names[0]][1]].from_pretrained(folder, subfolder=names[0])
    else:
        config_path = os.path.join(folder, "config.json")
        if not os.path.isfile(config_path):
            raise ValueError(f"--vae {name_or_path} has neither model_index.json nor config.json")
        with open(config_path) as f:
            class_name = json.load(f).get("_class_name")
        if class_name not in classes:
            raise ValueError(f"--vae {name_or_path} holds {class_name}, not a first stage; expected one of {sorted(classes)}")
        model = classes[class_name].from_pretrained(folder)
    check_first_stage(model)
    return model.eval().requires_grad_(False)


def default_cache_dir() -> str:
    return os.environ.get("HF_GENZOO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hf_genzoo", "latents")


def cached_split(args, split: str, max_samples: int | None, first_stage, first_stage_id: str, text_encoder=None, tokenizer=None):
    """The split's latents (and captions / labels / factors), from the cache or encoded now; memory-mapped."""
    import datasets

    from hf_genzoo.data.latent_cache import build_latent_cache, cache_key, read_cache
    from hf_genzoo.data.loading import _SHAPES_DEFAULT_SIZES as GENERATED_SPLIT_SIZES
    from hf_genzoo.data.loading import find_image_column, load_source_dataset, preprocess_image
    from hf_genzoo.pipelines.pipeline_latent_diffusion import is_vq_first_stage

    shapes_kwargs = {}
    if args.dataset_name == "shapes":  # the shapes world generates --max_train_samples / --max_eval_samples images
        shapes_kwargs = {"num_shapes": tuple(args.num_shapes), **({"num_samples": max_samples} if max_samples else {})}
    def load_raw():
        raw = load_source_dataset(args.dataset_name, split, args.resolution, max_samples, args.seed, **shapes_kwargs)
        image_column = find_image_column(raw, args.image_column)
        if not isinstance(raw.features[image_column], datasets.Image):
            raw = raw.cast_column(image_column, datasets.Image())
        return raw, image_column

    if args.dataset_name in ("shapes", "dsprites") and split in GENERATED_SPLIT_SIZES:
        # a generated world is named by its arguments: a cache hit generates nothing, so memory does not grow with it
        raw, image_column = None, args.image_column or "image"
        num_rows = max_samples or GENERATED_SPLIT_SIZES[split]
    else:  # a file, folder or Hub dataset: its fingerprint names its content
        raw, image_column = load_raw()
        num_rows = len(raw)
    description = {
        "source": args.dataset_name, "split": split, "rows": num_rows, "fingerprint": raw._fingerprint if raw is not None else None,
        "shapes": shapes_kwargs, "seed": args.seed, "resolution": args.resolution, "channels": args.num_channels,
        "center_crop": args.center_crop, "image_column": image_column,
    }
    text_encoder_id = None
    if text_encoder is not None:  # a frozen text encoder: its prompt embeddings are cached too
        from hf_genzoo.data.latent_cache import module_fingerprint

        text_encoder_id = module_fingerprint(text_encoder)
        description["text_encoder"] = text_encoder_id
    key = cache_key(first_stage_id, description)
    folder = os.path.join(args.cache_dir or default_cache_dir(), f"latents-{key}")
    dataset = read_cache(folder, key, num_rows)
    if dataset is not None:
        logger.info(f"{split}: {len(dataset)} cached latents from {folder}")
        return dataset
    if raw is None:
        raw, image_column = load_raw()
    if len(raw) != num_rows:
        raise ValueError(f"{args.dataset_name} {split!r} gave {len(raw)} images, expected {num_rows}")
    other = [c for c, f in raw.features.items() if not isinstance(f, datasets.Image)]

    logger.info(f"{split}: encoding {len(raw)} images with the first stage into {folder}")
    device, dtype = first_stage.device, first_stage.dtype
    vq = is_vq_first_stage(first_stage)
    caption_column = getattr(args, "caption_column_resolved", None)

    @torch.no_grad()
    def encode(pixels):
        x = pixels.to(device, dtype)
        if vq:
            h = first_stage.encode(x).latents
            return h, torch.zeros_like(h)
        posterior = first_stage.encode(x).latent_dist
        return posterior.mean, posterior.std

    def batches():
        for start in range(0, len(raw), args.encode_batch_size):
            rows = raw[start : start + args.encode_batch_size]
            pixels = torch.from_numpy(
                np.stack([preprocess_image(image, args.resolution, args.num_channels, args.center_crop, np.random.default_rng([args.seed, start + i]).random(2), False) for i, image in enumerate(rows[image_column])])
            )
            columns = {c: rows[c] for c in other}
            if text_encoder is not None:
                with torch.no_grad():
                    ids = tokenizer(rows[caption_column], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
                    columns["prompt_embeds"] = list(text_encoder(ids.to(text_encoder.device))[0].float().cpu().numpy())
            yield pixels, columns

    extra = {c: raw.features[c] for c in other}
    if text_encoder is not None:
        extra["prompt_embeds"] = datasets.Array2D(shape=(tokenizer.model_max_length, text_encoder.config.hidden_size), dtype="float32")
    return build_latent_cache(folder, key, len(raw), batches(), encode, extra, description)


import numpy as np  # noqa: E402


# ---- models --------------------------------------------------------------------------------------------------


class Denoiser(torch.nn.Module):
    """The trained modules as one: the UNet and, for text conditioning from scratch, the text encoder, so that one
    DDP wrapper, one optimiser and one EMA serve both. `forward(z_t, t, input_ids | prompt_embeds | class_labels)`
    returns the UNet's output (`.sample`)."""

    def __init__(self, unet, text_encoder=None):
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder

    def forward(self, sample, timesteps, input_ids=None, prompt_embeds=None, class_labels=None):
        if input_ids is not None:
            prompt_embeds = self.text_encoder(input_ids)[0]  # (B, L, D)
        if prompt_embeds is not None:
            return self.unet(sample, timesteps, encoder_hidden_states=prompt_embeds)
        return self.unet(sample, timesteps, class_labels=class_labels)


def build_unet(args, latent_channels: int, latent_size: int, num_classes: int | None, cross_attention_dim: int | None):
    """The preset's UNet: `UNet2DConditionModel` with cross-attention at every level but the deepest for text;
    `UNet2DModel` with self-attention at the lower levels otherwise (class-conditional: num_classes + 1 class
    embeddings, the last being ∅)."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    levels = len(args.block_out_channels)
    if latent_size % 2 ** (levels - 1):
        raise ValueError(
            f"the latents are {latent_size}×{latent_size}: not divisible by {2 ** (levels - 1)}, the UNet's downsampling "
            f"with {levels} levels; use fewer --block_out_channels"
        )
    heads = PRESETS[args.unet_preset]["heads"]
    common = dict(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=tuple(args.block_out_channels),
        layers_per_block=args.layers_per_block,
        norm_num_groups=args.norm_num_groups,
    )
    if cross_attention_dim is not None:
        down = tuple("CrossAttnDownBlock2D" if i < max(levels - 1, 1) else "DownBlock2D" for i in range(levels))
        up = tuple(block.replace("Down", "Up") for block in reversed(down))
        return UNet2DConditionModel(
            **common, down_block_types=down, up_block_types=up, cross_attention_dim=cross_attention_dim, attention_head_dim=heads
        )
    down = tuple("AttnDownBlock2D" if i > 0 or levels == 1 else "DownBlock2D" for i in range(levels))
    up = tuple(block.replace("Down", "Up") for block in reversed(down))
    return UNet2DModel(
        **common,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=max(args.block_out_channels[-1] // heads, 8),
        num_class_embeds=None if num_classes is None else num_classes + 1,
    )


def build_noise_scheduler(args):
    from hf_genzoo import GenZooDDPMScheduler

    return GenZooDDPMScheduler(
        num_train_timesteps=args.num_train_timesteps,
        beta_schedule=args.beta_schedule,
        prediction_type=args.prediction_type,
        clip_sample=False,  # latents have no fixed range
    )


def make_pipeline(first_stage, unet, noise_scheduler, text_encoder=None, tokenizer=None):
    """The published pipeline samples with DDIM, "trailing" steps; `steps_offset=1` and `clip_sample=False` are what
    `StableDiffusionPipeline` would otherwise rewrite in the config (with a deprecation warning) when it loads it."""
    from hf_genzoo import GenZooDDIMScheduler, LatentDiffusionPipeline
    from hf_genzoo.pipelines.pipeline_latent_diffusion import is_vq_first_stage

    scheduler = GenZooDDIMScheduler.from_config(noise_scheduler.config, timestep_spacing="trailing", steps_offset=1, clip_sample=False)
    vq = is_vq_first_stage(first_stage)
    return LatentDiffusionPipeline(
        vae=None if vq else first_stage, vqvae=first_stage if vq else None, unet=unet, scheduler=scheduler,
        text_encoder=text_encoder, tokenizer=tokenizer,
    )


# ---- batches -------------------------------------------------------------------------------------------------


class CacheBatches:
    """The rank's micro-batches of cached rows, in the order `micro_batches` gives (a function of seed and step), read
    from the memory-mapped cache by a DataLoader (`--dataloader_num_workers`): `(micro_index, batch dict)`."""

    def __init__(self, dataset, args, accelerator, num_train, batches_per_epoch, start_step, columns):
        from hf_genzoo.data.latent_cache import CacheRows
        from hf_genzoo.training_utils import micro_batches

        self.order = micro_batches(args, accelerator, num_train, batches_per_epoch, start_step)
        self.first_index = start_step * args.gradient_accumulation_steps
        self.rows = CacheRows(dataset, columns)
        self.num_workers = args.dataloader_num_workers

    def __iter__(self):
        from torch.utils.data import DataLoader

        loader = DataLoader(
            self.rows,
            batch_sampler=(indices.tolist() for _, indices in self.order),
            num_workers=self.num_workers,
            collate_fn=lambda batch: batch,
        )
        for offset, batch in enumerate(loader):
            yield self.first_index + offset, batch


def condition_inputs(batch, args, generator, tokenizer, null_label, device, empty_prompt_embeds=None):
    """The Denoiser's condition for a micro-batch, each dropped with probability --conditioning_dropout (a draw from
    `generator`, after t and ε): token ids of the captions (dropped: ""), cached prompt embeddings (dropped: the empty
    prompt's), or class labels (dropped: ∅)."""
    if args.conditioning == "none":
        return {}
    batch_size = len(batch["latent_mean"])
    drop = torch.rand(batch_size, generator=generator) < args.conditioning_dropout  # (B,)
    if args.conditioning == "class":
        labels = torch.as_tensor(batch[args.label_column], dtype=torch.int64)
        return {"class_labels": torch.where(drop, torch.full_like(labels, null_label), labels).to(device)}
    if empty_prompt_embeds is not None:  # frozen text encoder: cached embeddings
        embeds = batch["prompt_embeds"].to(device)  # (B, L, D)
        return {"prompt_embeds": torch.where(drop.to(device)[:, None, None], empty_prompt_embeds.to(embeds.dtype), embeds)}
    captions = ["" if d else c for d, c in zip(drop.tolist(), batch[args.caption_column_resolved])]
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    return {"input_ids": ids.to(device)}


def latent_diffusion_loss(denoiser, noise_scheduler, batch, scaling_factor, generator, args, condition_fn):
    """One micro-batch: z_0 = scaling_factor · (μ + σ ε_z) from the cached posterior, then Algorithm 1 of Ho et al.
    with t, ε, (noise offset) and the condition's dropout drawn from the CPU `generator` in that order."""
    from hf_genzoo.training_utils import denoising_loss

    mean, std = batch["latent_mean"], batch["latent_std"]
    device = next(denoiser.parameters()).device
    z_0 = (mean + std * torch.randn(mean.shape, generator=generator)) * scaling_factor  # (B, C, h, w)
    z_0 = z_0.to(device)
    batch_size = len(z_0)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator).to(device)
    noise = torch.randn(z_0.shape, generator=generator)
    if args.noise_offset:
        noise = noise + args.noise_offset * torch.randn((batch_size, z_0.shape[1], 1, 1), generator=generator)
    condition = condition_fn(batch, generator)
    return denoising_loss(denoiser, noise_scheduler, z_0, timesteps, noise.to(device), args.snr_gamma, **condition)


# ---- evaluation ----------------------------------------------------------------------------------------------


def scenes_of(rows) -> list[list[dict]]:
    """The shapes world's factor columns of held-out rows → one list of object dicts per row."""
    from hf_genzoo.data.shapes import FACTORS

    scenes = []
    for i in range(len(rows["shape_0"])):
        scene = []
        for slot in (0, 1):
            if int(rows[f"shape_{slot}"][i]) >= 0:
                scene.append({factor: int(rows[f"{factor}_{slot}"][i]) for factor in FACTORS})
        scenes.append(scene)
    return scenes


@torch.no_grad()
def generate(pipe, count: int, args, seed: int, prompts=None, labels=None, batch_size: int = 250, progress=None) -> torch.Tensor:
    """`count` samples (B, C, H, W) in [-1, 1], one per prompt / label (or unconditional), in batches (a bar over
    them with an `EvaluationProgress`)."""
    out = []
    generator = torch.Generator(device="cpu").manual_seed(seed)
    starts = range(0, count, batch_size)
    for start in starts if progress is None else progress.batches(starts, desc="sampling batches"):
        n = min(batch_size, count - start)
        kwargs = {"batch_size": n}
        if prompts is not None:
            kwargs = {"prompt": list(prompts[start : start + n])}
        elif labels is not None:
            kwargs["class_labels"] = list(labels[start : start + n])
        latents = torch.randn((n, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size), generator=generator)
        images = pipe(
            **kwargs, latents=latents.to(pipe.device), num_inference_steps=args.num_inference_steps,
            guidance_scale=args.guidance_scale, output_type="pt",
        ).images  # [0, 1]
        out.append(images.float().cpu() * 2 - 1)
    return torch.cat(out)


def validation_prompts(args, eval_rows) -> list[str]:
    return args.validation_prompts or list(eval_rows[args.caption_column_resolved][:8])


def sample_grid(pipe, args, eval_rows, num_classes, count: int = 16):
    """A grid from a fixed seed: the validation prompts (text), every class in turn (class), or samples."""
    from hf_genzoo.utils import enlarged_grid

    pipe.set_progress_bar_config(disable=True)
    if args.conditioning == "text":  # one row per prompt, the prompt beside it
        prompts = validation_prompts(args, eval_rows)
        per_prompt = max(count // len(prompts), 1)
        prompts = [p for p in prompts for _ in range(per_prompt)][:count]
        images = generate(pipe, len(prompts), args, args.seed, prompts=prompts)
        return enlarged_grid(images, nrow=per_prompt, row_labels=prompts[::per_prompt])
    labels = None if num_classes is None else [i % num_classes for i in range(count)]
    return enlarged_grid(generate(pipe, count, args, args.seed, labels=labels), nrow=8)


@torch.no_grad()
def validation_loss(denoiser, noise_scheduler, eval_cache, scaling_factor, args, condition_fn, count: int) -> float:
    """The loss on `count` held-out latents at fixed timesteps, noise and conditions (the training loss stays flat
    while samples improve; this one moves with the model)."""
    from hf_genzoo.data.latent_cache import gather_rows

    generator = torch.Generator().manual_seed(args.seed + 7)
    columns = ["latent_mean", "latent_std"] + [c for c in (args.label_column, "prompt_embeds", args.caption_column_resolved) if c in eval_cache.column_names]
    rows = gather_rows(eval_cache, list(range(min(count, len(eval_cache)))), columns)
    losses = []
    for start in range(0, len(rows["latent_mean"]), 128):
        batch = {k: v[start : start + 128] for k, v in rows.items()}
        losses.append(latent_diffusion_loss(denoiser, noise_scheduler, batch, scaling_factor, generator, args, condition_fn).item())
    return float(np.mean(losses))


@torch.no_grad()
def evaluate(pipe, args, eval_cache, num_classes, progress=None) -> dict:
    """Latent bits/dim of held-out images and the oracle's reading of samples (one per held-out caption for text,
    classes in turn for class-conditional, validity and coverage for unconditional). `progress` (an
    `EvaluationProgress`) shows the stages and batches as they run and logs each one's time."""
    from hf_genzoo.data.latent_cache import gather_rows
    from hf_genzoo.metrics import sample_quality_metrics
    from hf_genzoo.metrics.evaluate import EvaluationProgress
    from hf_genzoo.metrics.text_to_image import caption_metrics

    progress = progress or EvaluationProgress(enabled=False)
    metrics: dict = {}
    pipe.set_progress_bar_config(disable=True)
    shapes = args.dataset_name == "shapes"
    rows = eval_cache.select_columns([c for c in eval_cache.column_names if not c.startswith(("latent_", "prompt_embeds"))])[: args.num_generated]
    if args.num_likelihood_images:
        n = min(args.num_likelihood_images, len(eval_cache))
        generator = torch.Generator().manual_seed(args.seed)
        held_out = gather_rows(eval_cache, list(range(n)), ["latent_mean"] + ([args.caption_column_resolved] if args.conditioning == "text" else []))
        bits = []
        with progress.stage(f"latent bits/dim of {n} held-out images"):
            for start in progress.batches(range(0, n, 128), desc="likelihood batches"):
                z_0 = held_out["latent_mean"][start : start + 128].to(pipe.device) * pipe.scaling_factor
                captions = held_out[args.caption_column_resolved][start : start + 128] if args.conditioning == "text" else None
                bits.append(latent_bound(pipe, z_0, args, generator, captions))
        metrics["latent_bits_per_dim"] = float(torch.cat(bits).mean())
        metrics["likelihood_images"] = n
    count = min(args.num_generated, len(eval_cache))
    if count == 0:  # --num_generated 0: no samples to judge
        pass
    elif args.conditioning == "text":
        with progress.stage(f"{count} samples, one per held-out caption"):
            samples = generate(pipe, count, args, args.seed + 1, prompts=rows[args.caption_column_resolved][:count], progress=progress)
        if shapes:
            with progress.stage("oracle reading of the captions"):
                metrics.update(caption_metrics(samples, scenes_of(rows)[:count], args.resolution))
    else:
        labels = None if num_classes is None else [i % num_classes for i in range(count)]
        with progress.stage(f"{count} samples"):
            samples = generate(pipe, count, args, args.seed + 1, labels=labels, progress=progress)
        classifier = {}
        if args.fid_classifier:
            classifier = {"fid_classifier": args.fid_classifier, "real_images": held_out_images(args, count)}
        with progress.stage(" and ".join(["oracle"] * shapes + ["domain classifier"] * bool(classifier))):
            metrics.update(sample_quality_metrics(samples, labels, shapes_resolution=args.resolution if shapes else None, **classifier))
    metrics.update(generated=count, num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale)
    return metrics


def held_out_images(args, count: int) -> torch.Tensor:
    """The first `count` images of the held-out split as the first stage saw them, (N, C, H, W) in [-1, 1]: the real
    side of the FID (the latent cache keeps latents only)."""
    from hf_genzoo.data.loading import find_image_column, load_source_dataset, preprocess_image

    shapes = {"num_shapes": tuple(args.num_shapes), "num_samples": args.max_eval_samples} if args.dataset_name == "shapes" else {}
    raw = load_source_dataset(args.dataset_name, args.eval_split, args.resolution, count, args.seed, **shapes)
    column = find_image_column(raw, args.image_column)
    return torch.from_numpy(np.stack([preprocess_image(image, args.resolution, args.num_channels, True, None, False) for image in raw[:count][column]]))


def latent_bound(pipe, z_0, args, generator, captions=None) -> torch.Tensor:
    """bits per latent dimension of z_0 (already scaled) under the pipeline's model, conditioned on the captions."""
    from hf_genzoo import GenZooDDPMScheduler

    prompt_embeds = None
    if captions is not None:
        prompt_embeds, _ = pipe.encode_prompt(list(captions), pipe.device, 1, False)
    scheduler = GenZooDDPMScheduler.from_config(pipe.scheduler.config)
    fn = pipe.model_output_fn(None, prompt_embeds=prompt_embeds)
    return scheduler.variational_bound(fn, z_0.to(pipe.unet.dtype), generator=generator, num_sampled_timesteps=args.likelihood_timesteps, decoder="gaussian").bits_per_dim.float().cpu()


# ---- main ----------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> str:
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from hf_genzoo.data.latent_cache import latent_statistics, module_fingerprint
    from hf_genzoo.models.text_encoder import build_clip_text_encoder, build_word_level_tokenizer
    from hf_genzoo.pipelines.pipeline_latent_diffusion import first_stage_latent_channels
    from hf_genzoo.training_utils import (
        TrainingDivergedError,  # noqa: F401
        diverged_error,
        end_training,
        find_checkpoint,
        plan_steps,
        push_output_folder,
        resume,
        resume_learning_rate,
        save_checkpoint,
        save_validation_grid,
        setup_accelerator,
        tracker_config,
    )

    accelerator = setup_accelerator(args, logger)

    # 1. the frozen first stage, the text encoder (frozen or from scratch) and the latent caches
    first_stage = load_first_stage(args.vae).to(accelerator.device)
    first_stage_id = module_fingerprint(first_stage)
    tokenizer = frozen_text_encoder = None
    if args.conditioning == "text":
        if args.text_encoder is not None:
            from transformers import AutoModel, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(args.text_encoder, subfolder="tokenizer" if os.path.isdir(os.path.join(args.text_encoder, "tokenizer")) else "")
            frozen_text_encoder = AutoModel.from_pretrained(args.text_encoder, subfolder="text_encoder" if os.path.isdir(os.path.join(args.text_encoder, "text_encoder")) else "")
            frozen_text_encoder = frozen_text_encoder.to(accelerator.device).eval().requires_grad_(False)
    with accelerator.main_process_first():  # the main process encodes; the others then read its cache
        args.caption_column_resolved = None
        train_cache = cached_split(args, args.train_split, args.max_train_samples, first_stage, first_stage_id)
        if args.conditioning == "text":
            columns = train_cache.column_names
            args.caption_column_resolved = args.caption_column or ("caption" if "caption" in columns else "text")
            if args.caption_column_resolved not in columns:
                raise ValueError(f"captions are needed: {args.caption_column_resolved!r} is not one of {columns}")
            if frozen_text_encoder is not None:  # cache again, now with the prompt embeddings
                train_cache = cached_split(args, args.train_split, args.max_train_samples, first_stage, first_stage_id, frozen_text_encoder, tokenizer)
        eval_cache = cached_split(args, args.eval_split, args.max_eval_samples, first_stage, first_stage_id, frozen_text_encoder, tokenizer)

    num_classes = None
    if args.conditioning == "class":
        if args.label_column not in train_cache.column_names:
            raise ValueError(f"class labels are needed: {args.label_column!r} is not one of {train_cache.column_names}")
        feature = train_cache.features[args.label_column]
        num_classes = getattr(feature, "num_classes", None) or int(max(train_cache[args.label_column])) + 1

    # 2. scaling factor: 1 / std of the cached latents unless given
    mean, std = latent_statistics(train_cache)
    scaling_factor = args.scaling_factor or 1.0 / std
    logger.info(f"cached latents: mean {mean:.4f}, std {std:.4f}; scaling_factor {scaling_factor:.5f}" + (" (given)" if args.scaling_factor else " (1 / std)"))

    # 3. the models
    text_encoder = None
    if args.conditioning == "text" and frozen_text_encoder is None:
        tokenizer = build_word_level_tokenizer(train_cache[args.caption_column_resolved])
        preset = PRESETS[args.unet_preset]
        text_encoder = build_clip_text_encoder(
            tokenizer, hidden_size=args.text_encoder_hidden_size or preset["text_hidden"],
            num_hidden_layers=preset["text_layers"], num_attention_heads=preset["text_heads"],
        )
    cross_dim = None
    if args.conditioning == "text":
        cross_dim = (text_encoder or frozen_text_encoder).config.hidden_size
    latent_channels = first_stage_latent_channels(first_stage)
    latent_size = args.resolution // 2 ** (len(first_stage.config.block_out_channels) - 1)
    unet = build_unet(args, latent_channels, latent_size, num_classes, cross_dim)
    denoiser = Denoiser(unet, text_encoder)
    noise_scheduler = build_noise_scheduler(args)
    empty_prompt_embeds = None
    if frozen_text_encoder is not None:  # the empty prompt's embedding, computed once
        ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            empty_prompt_embeds = frozen_text_encoder(ids.to(accelerator.device))[0][0]

    def condition_fn(batch, generator):
        return condition_inputs(batch, args, generator, tokenizer, num_classes, accelerator.device, empty_prompt_embeds)

    num_train = len(train_cache)
    global_batch = args.train_batch_size * accelerator.num_processes
    batches_per_epoch, max_train_steps = plan_steps(num_train, global_batch, args.gradient_accumulation_steps, args.num_epochs, args.max_train_steps)
    optimizer = torch.optim.AdamW(
        denoiser.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay, fused=accelerator.device.type in ("cpu", "cuda"),
    )
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    denoiser, optimizer, lr_scheduler = accelerator.prepare(denoiser, optimizer, lr_scheduler)
    unwrapped = accelerator.unwrap_model(denoiser)
    ema = None
    if args.use_ema:
        ema = EMAModel(unwrapped.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, inv_gamma=1.0, power=args.ema_power, foreach=True)
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("train_latent_diffusion", config=tracker_config(args))

    # 4. resume: the checkpoint's learning-rate schedule, unless --learning_rate was given on this command
    global_step = resume(accelerator, args.output_dir, args.resume_from_checkpoint)
    if global_step:
        resume_learning_rate(optimizer, args.learning_rate, args.learning_rate_given, lr_scheduler, log=logger)

    logger.info(
        f"{num_train} training latents of {latent_channels}×{latent_size}×{latent_size}, "
        f"{global_batch} per step on {accelerator.num_processes} process(es), {max_train_steps} steps; trained "
        f"{sum(p.numel() for p in unwrapped.parameters()) / 1e6:.2f}M parameters"
    )
    columns = ["latent_mean", "latent_std"]
    if args.conditioning == "class":
        columns.append(args.label_column)
    elif args.conditioning == "text":
        columns.append("prompt_embeds" if frozen_text_encoder is not None else args.caption_column_resolved)
    eval_rows = eval_cache[: max(8, len(args.validation_prompts or []))]
    progress = tqdm(range(max_train_steps), initial=global_step, desc="steps", disable=not accelerator.is_local_main_process)
    last_good_checkpoint = find_checkpoint(args.output_dir, "latest") if accelerator.is_main_process else None
    start_time = time.perf_counter()
    denoiser.train()

    def sampling_pipeline():
        return make_pipeline(first_stage, unwrapped.unet, noise_scheduler, unwrapped.text_encoder or frozen_text_encoder, tokenizer)

    # 5. the loop
    from hf_genzoo.training_utils import micro_batch_generator

    for micro_index, batch in CacheBatches(train_cache, args, accelerator, num_train, batches_per_epoch, global_step, columns):
        if global_step >= max_train_steps:
            break
        generator = micro_batch_generator(args.seed, micro_index, accelerator.process_index)
        with accelerator.accumulate(denoiser):
            with accelerator.autocast():
                loss = latent_diffusion_loss(denoiser, noise_scheduler, batch, scaling_factor, generator, args, condition_fn)
            if not torch.isfinite(loss):
                progress.close()
                raise diverged_error(global_step + 1, last_good_checkpoint)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(denoiser.parameters(), args.max_grad_norm)
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
            with accelerator.autocast():
                val_loss = validation_loss(unwrapped, noise_scheduler, eval_cache, scaling_factor, args, condition_fn, args.num_validation_images)
            grid = sample_grid(with_scaling(sampling_pipeline(), first_stage, scaling_factor), args, eval_rows, num_classes)
            unwrapped.train()
            if ema is not None:
                ema.restore(unwrapped.parameters())
            accelerator.log({"validation_loss": val_loss}, step=global_step)
            logger.info(f"step {global_step}: validation loss {val_loss:.4f}")
            save_validation_grid(accelerator, args.output_dir, grid, global_step)
        if args.max_train_seconds is not None:  # every rank stops at the same step: the slowest clock decides
            over = torch.tensor(float(time.perf_counter() - start_time > args.max_train_seconds), device=accelerator.device)
            if accelerator.reduce(over, "max").item() > 0:
                logger.info(f"--max_train_seconds {args.max_train_seconds} reached at step {global_step}")
                if global_step % args.checkpointing_steps:  # on every rank, as above
                    last_good_checkpoint = save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit)
                break
    train_seconds = time.perf_counter() - start_time
    accelerator.wait_for_everyone()

    # 6. finish on the main process: EMA weights, metrics, the saved folder
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(unwrapped.parameters())
        unwrapped.eval()
        pipe = with_scaling(sampling_pipeline(), first_stage, scaling_factor)
        from hf_genzoo.metrics.evaluate import EvaluationProgress
        from hf_genzoo.training_utils import run_summary

        progress = EvaluationProgress(desc="evaluation")
        metrics = evaluate(pipe, args, eval_cache, num_classes, progress)
        metrics.update(
            scaling_factor=scaling_factor, train_steps=global_step, train_seconds=round(train_seconds, 1),
            eval_seconds=round(progress.close(), 1),
        )
        logger.info(f"metrics: {json.dumps(metrics)}")
        save_model_folder(args, pipe, metrics, sample_grid(pipe, args, eval_rows, num_classes, count=64), num_classes)
        headline = ("latent_bits_per_dim", "oracle_validity", "oracle_coverage", "oracle_attribute_accuracy", "validity", "one_object_all_right", "two_object_all_right", "classifier_accuracy", "fid_domain")
        print(run_summary(args.output_dir, metrics, headline, {"training": train_seconds, "evaluation": metrics["eval_seconds"]}))
        if args.push_to_hub:
            push_output_folder(args, f"latent diffusion trained for {global_step} steps")
    end_training(accelerator)
    return args.output_dir


def with_scaling(pipe, first_stage, scaling_factor: float):
    """The pipeline with the measured scaling factor in its first stage's config (saved with it)."""
    first_stage.register_to_config(scaling_factor=float(scaling_factor))
    return pipe


def save_model_folder(args, pipe, metrics: dict, grid, num_classes) -> None:
    """The pipeline, model card, sample grid and metrics, staged and moved into `output_dir` (model_index.json last)."""
    from hf_genzoo.hub import write_model_card
    from hf_genzoo.training_utils import card_dataset_fields, staged_model_folder, training_command

    with staged_model_folder(args.output_dir, metrics) as staging:
        pipe.save_pretrained(staging)
        grid.save(os.path.join(staging, "samples.png"))
        summary = (
            f"{metrics['train_steps']} steps in {metrics['train_seconds']:.0f} s; samples by DDIM with "
            f"{metrics['num_inference_steps']} steps and guidance scale {metrics['guidance_scale']}"
        )
        fields = card_dataset_fields(args)
        if args.dataset_name == "shapes":
            fields["dataset_description"] = f"the hf_genzoo shapes world ({args.resolution}×{args.resolution}, {' or '.join(map(str, args.num_shapes))} shape(s) per image)"
        write_model_card(
            staging,
            "latent_diffusion",
            **fields,
            pipeline_class="LatentDiffusionPipeline",
            model_class=type(pipe.unet).__name__,
            first_stage_class=type(pipe.first_stage).__name__,
            conditioning=args.conditioning,
            guidance_scale=args.guidance_scale,
            tags=["diffusion", "latent-diffusion", {"text": "text-to-image", "class": "class-conditional", "none": "unconditional-image-generation"}[args.conditioning]],
            task_type="text-to-image" if args.conditioning == "text" else "unconditional-image-generation",
            num_classes=num_classes,
            metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in ("train_steps", "train_seconds", "eval_seconds", "generated", "likelihood_images")},
            training_summary=summary,
            sample_grid="samples.png",
            training_command=training_command("train_latent_diffusion", args),
        )


if __name__ == "__main__":
    from hf_genzoo.training_utils import TrainingDivergedError

    try:
        main(parse_args())
    except TrainingDivergedError as error:
        sys.exit(f"error: {error}")
