#!/usr/bin/env python
"""Fine-tune a text-to-image latent diffusion model into an InstructPix2Pix editor (Brooks et al. 2023,
arXiv:2211.09800) on (input image, instruction, edited image) triplets, with 🤗 Accelerate.

    python training_scripts/train_instruct_pix2pix.py --pretrained_model_name_or_path shapes-ldm-text \
        --dataset_name shapes --output_dir shapes-instruct-pix2pix
    accelerate launch training_scripts/train_instruct_pix2pix.py --pretrained_model_name_or_path FOLDER \
        --dataset_name edits-on-disk --original_image_column input_image --edit_prompt_column edit_prompt \
        --edited_image_column edited_image

The base (`--pretrained_model_name_or_path`) is a text-to-image folder with the components of a Stable Diffusion
folder (vae, unet, text_encoder, tokenizer, scheduler): ours (`LatentDiffusionPipeline`) or diffusers'. Its UNet
ε_θ(z_t, c_T) is widened by `hf_genzoo.widen_conv_in` to take the input image's latents beside z_t, the new input
weights zero, so at step 0 the editor computes what the text-to-image model computes (paper §3.2); a UNet that
already takes 2C channels (an InstructPix2Pix checkpoint) is fine-tuned as it is; any other is refused.

Each step (../shared/EQUATIONS.md, "InstructPix2Pix", "Latent diffusion", "DDPM"): the latents of the pair as
`hf_genzoo.encode_edit_pair` defines them, E(c_I) = the input image's posterior mode (unscaled) and
z_0 = scaling_factor · z, z ~ q(z | x_edited), both read from a latent cache built once (the posterior mean and std
of every edited image, the mode of every input image, `hf_genzoo.data.latent_cache`); the conditions dropped for
classifier-free guidance as the paper (§3.2.1): the instruction alone with `--drop_text_prob`, the image alone with
`--drop_image_prob`, both with `--drop_both_prob` (5 % each by default; a dropped image is zero latents, a dropped
instruction the empty prompt); then Algorithm 1 of Ho et al. on ε_θ([z_t, E(c_I)], t, c_T).

`--random_flip` flips the input and the edited image together (one coin per pair: flipping them apart would teach the
model to flip); both orientations are cached. It is off by default, and wrong for data whose instructions name left
and right (the shapes world's moves).

Text: the base's text encoder, frozen (prompt embeddings cached with the latents) unless `--train_text_encoder`. A
word-level tokenizer (ours) gains the instructions' new words ("make", "bigger", ...) as new tokens with new rows of
the embedding table (seeded, at the scale of the old rows), so that no instruction reads as `<unk>`.

Flags and column names follow diffusers' `examples/instruct_pix2pix/train_instruct_pix2pix.py`. The output folder is
a saved `InstructPix2PixPipeline` (the EMA weights unless `--no-use_ema`) that diffusers'
`StableDiffusionInstructPix2PixPipeline.from_pretrained(folder, safety_checker=None)` also loads after
`import hf_genzoo`. Beside it: README.md (model card), samples.png (the guidance grid of a held-out edit),
edits.png, metrics.json (on the shapes world, the oracle's success / preservation / validity per edit type,
`hf_genzoo.metrics.editing`), `checkpoint-*` folders for `--resume_from_checkpoint latest`, validation/step-*.png
grids (rows: input | exact edit | edits at fixed seeds).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

from script_args import answer_help_first

DEFAULT_LEARNING_RATE = 1e-4
SHAPES_INSTRUCTION_COLUMN = "instruction"  # the shapes world's name for diffusers' `edit_prompt`
DIFFUSERS_COLUMNS = ("input_image", "edit_prompt", "edited_image")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fine-tune a text-to-image latent diffusion model into an InstructPix2Pix editor.")
    # base model
    parser.add_argument("--pretrained_model_name_or_path", required=True, help="a text-to-image folder (or Hub id) with vae, unet, text_encoder, tokenizer and scheduler: ours or a Stable Diffusion folder")
    parser.add_argument("--train_text_encoder", action="store_true", help="train the text encoder with the UNet (default: frozen, its prompt embeddings cached)")
    # data
    parser.add_argument("--dataset_name", default="shapes", help="'shapes' (the shapes world's edits, generated), a folder saved with save_to_disk, a parquet file/folder or a Hub dataset id")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--eval_split", default="test", help="held-out split (a dataset without it holds out its last --max_eval_samples rows)")
    parser.add_argument("--original_image_column", default="input_image", help="the image to edit")
    parser.add_argument("--edit_prompt_column", default="edit_prompt", help="the instruction (the shapes world's 'instruction' column is read under this name)")
    parser.add_argument("--edited_image_column", default="edited_image", help="the edited image")
    parser.add_argument("--resolution", type=int, default=None, help="default: the base's (UNet sample_size × the first stage's factor)")
    parser.add_argument("--center_crop", action=argparse.BooleanOptionalAction, default=True, help="centre crop (default) or a seeded random crop, the same for both images of a pair, drawn once when the latents are cached")
    parser.add_argument("--random_flip", action="store_true", help="flip the input and edited image together with probability 1/2 (wrong for instructions that name left and right)")
    parser.add_argument("--num_shapes", type=int, nargs="+", default=[1, 2], choices=(1, 2), help="shapes per scene in the shapes world")
    parser.add_argument("--max_train_samples", type=int, default=None, help="at most N training triplets; the shapes world generates N (default 10,000)")
    parser.add_argument("--max_eval_samples", type=int, default=500)
    parser.add_argument("--cache_dir", default=None, help="where latent caches live (default: ~/.cache/hf_genzoo/latents, or $HF_GENZOO_CACHE)")
    parser.add_argument("--encode_batch_size", type=int, default=256)
    parser.add_argument("--dataloader_num_workers", type=int, default=0)
    # conditioning dropout (§3.2.1): exclusive events of one uniform draw per pair
    parser.add_argument("--drop_text_prob", type=float, default=0.05, help="probability that the instruction alone is dropped (empty prompt)")
    parser.add_argument("--drop_image_prob", type=float, default=0.05, help="probability that the input image alone is dropped (zero latents)")
    parser.add_argument("--drop_both_prob", type=float, default=0.05, help="probability that both are dropped")
    parser.add_argument("--conditioning_dropout_prob", type=float, default=None, help="diffusers' flag: sets the three probabilities above to this value")
    # diffusion
    parser.add_argument("--snr_gamma", type=float, default=5.0, help="γ of min-SNR loss weighting (Hang et al. 2023); 0 turns it off")
    parser.add_argument("--noise_offset", type=float, default=0.0)
    # optimisation
    parser.add_argument("--train_batch_size", type=int, default=64, help="per process")
    parser.add_argument("--num_train_epochs", type=int, default=20)
    parser.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_train_epochs")
    parser.add_argument("--max_train_seconds", type=float, default=None, help="stop training after this many seconds (then evaluate and save as usual; the LR schedule still spans --max_train_steps)")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=None, help=f"default {DEFAULT_LEARNING_RATE}; on resume, the checkpoint's schedule is kept unless this flag is given")
    parser.add_argument("--lr_scheduler", default="cosine", choices=("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"))
    parser.add_argument("--lr_warmup_steps", type=int, default=200)
    parser.add_argument("--adam_beta1", type=float, default=0.9)
    parser.add_argument("--adam_beta2", type=float, default=0.999)
    parser.add_argument("--adam_weight_decay", type=float, default=0.0)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--mixed_precision", choices=("auto", "no", "fp16", "bf16"), default=None, help="default: accelerate config; auto: bf16 where the device runs it natively, else fp32")
    parser.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--ema_max_decay", type=float, default=0.9999)
    parser.add_argument("--ema_power", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0)
    # checkpoints, logging, outputs, evaluation
    parser.add_argument("--output_dir", default="shapes-instruct-pix2pix")
    parser.add_argument("--checkpointing_steps", type=int, default=500)
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest'")
    parser.add_argument("--validation_steps", type=int, default=500, help="an edit grid of held-out pairs and the held-out loss every N steps")
    parser.add_argument("--num_validation_pairs", type=int, default=4, help="held-out pairs (rows) of the validation grids")
    parser.add_argument("--num_validation_images", type=int, default=3, help="edits per pair (fixed seeds) in the validation grids")
    parser.add_argument("--num_validation_loss_pairs", type=int, default=256, help="held-out pairs of the validation loss (fixed t, noise, no dropout)")
    parser.add_argument("--report_to", default="none")
    parser.add_argument("--logging_dir", default="logs")
    parser.add_argument("--no_keep_freed_memory", dest="keep_freed_memory", action="store_false")
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--guidance_scale", type=float, default=7.5, help="s_T of the grids and the evaluation")
    parser.add_argument("--image_guidance_scale", type=float, default=1.5, help="s_I of the grids and the evaluation")
    parser.add_argument("--num_eval_edits", type=int, default=500, help="held-out edits judged by the shapes oracle at the end (0: skip)")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)
    parser.add_argument("--hub_token", default=None)
    args = parser.parse_args(argv)

    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. your-name/shapes-instruct-pix2pix)")
    for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "validation_steps", "num_train_epochs",
                 "num_inference_steps", "encode_batch_size", "num_validation_pairs", "num_validation_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    if args.conditioning_dropout_prob is not None:
        args.drop_text_prob = args.drop_image_prob = args.drop_both_prob = args.conditioning_dropout_prob
    try:
        check_dropout_probabilities(args.drop_text_prob, args.drop_image_prob, args.drop_both_prob)
    except ValueError as error:
        parser.error(str(error))
    if args.snr_gamma < 0:
        parser.error(f"--snr_gamma must be ≥ 0 (0: off), got {args.snr_gamma}")
    args.snr_gamma = args.snr_gamma or None
    if args.image_guidance_scale < 0:
        parser.error(f"--image_guidance_scale must be ≥ 0, got {args.image_guidance_scale}")
    args.learning_rate_given = args.learning_rate is not None
    if args.learning_rate is None:
        args.learning_rate = DEFAULT_LEARNING_RATE
    return args


def check_dropout_probabilities(drop_text: float, drop_image: float, drop_both: float) -> None:
    """Each in [0, 1], their sum (the probability that anything is dropped) at most 1."""
    for name, p in (("drop_text_prob", drop_text), ("drop_image_prob", drop_image), ("drop_both_prob", drop_both)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"--{name} must lie in [0, 1], got {p}")
    if drop_text + drop_image + drop_both > 1.0:
        raise ValueError(f"the three dropout probabilities are exclusive events: their sum must be ≤ 1, got {drop_text + drop_image + drop_both:g}")


answer_help_first(__name__, parse_args)
# the heavy imports come after argument parsing, so that `--help` answers at once
import numpy as np  # noqa: E402
import torch  # noqa: E402
from accelerate.logging import get_logger  # noqa: E402

logger = get_logger(__name__, log_level="INFO")
HERE = os.path.dirname(os.path.abspath(__file__))


def latent_diffusion_script():
    """train_latent_diffusion.py as a module: its first-stage loader and cache folder are shared, not copied."""
    if "train_latent_diffusion" not in sys.modules:
        spec = importlib.util.spec_from_file_location("train_latent_diffusion", os.path.join(HERE, "train_latent_diffusion.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["train_latent_diffusion"] = module
    return sys.modules["train_latent_diffusion"]


# ---- the paper's training-time randomness: conditioning dropout and the joint flip --------------------------


def conditioning_dropout_masks(
    batch_size: int, drop_text_prob: float, drop_image_prob: float, drop_both_prob: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Which conditions of each pair are dropped for classifier-free guidance over two conditions (Brooks et al. 2023,
    §3.2.1: "we randomly set only c_I = ∅_I for 5% of examples, only c_T = ∅_T for 5% of examples, and both
    c_I = ∅_I and c_T = ∅_T for 5% of examples").

    One uniform draw u per pair makes the three events exclusive:

        u < p_T                        → the instruction alone is dropped,
        p_T ≤ u < p_T + p_TI            → both are dropped,
        p_T + p_TI ≤ u < p_T + p_TI + p_I → the image alone is dropped,

    so P(text dropped) = p_T + p_TI and P(image dropped) = p_I + p_TI. With p_T = p_I = p_TI = p this is diffusers'
    `--conditioning_dropout_prob p`.

    Returns:
        (drop_text, drop_image): boolean tensors (B,).
    """
    check_dropout_probabilities(drop_text_prob, drop_image_prob, drop_both_prob)
    u = torch.rand(batch_size, generator=generator)  # (B,)
    drop_text = u < drop_text_prob + drop_both_prob
    drop_image = (u >= drop_text_prob) & (u < drop_text_prob + drop_both_prob + drop_image_prob)
    return drop_text, drop_image


def pair_latents(batch: dict, flip: torch.Tensor | None, scaling_factor: float, generator: torch.Generator | None):
    """`hf_genzoo.encode_edit_pair`'s latents from the cache: (E(c_I), z_0) = (the input's posterior mode, unscaled;
    scaling_factor · (μ + σ ε) of the edited image), each (B, C, h, w), with both images of a pair taken from the
    flipped cache columns where `flip` is true. ε is one `torch.randn` of z's shape from `generator`, the draw
    `encode_edit_pair` makes, so the two give the same latents from the same generator state."""
    image_latents, mean, std = batch["input_latent"], batch["latent_mean"], batch["latent_std"]
    if flip is not None:
        where = flip[:, None, None, None]
        image_latents = torch.where(where, batch["input_latent_flipped"], image_latents)
        mean = torch.where(where, batch["latent_mean_flipped"], mean)
        std = torch.where(where, batch["latent_std_flipped"], std)
    target_latents = (mean + std * torch.randn(mean.shape, generator=generator)) * scaling_factor
    return image_latents, target_latents


# ---- the base model ------------------------------------------------------------------------------------------


def load_text_to_image(name_or_path: str) -> dict:
    """The components of a text-to-image folder: vae (our VAEModel or AutoencoderKL, checked by the latent-diffusion
    script's loader), unet, text_encoder, tokenizer, scheduler, each through the class its model_index.json names."""
    from transformers import AutoTokenizer

    from hf_genzoo.hub import resolve_pretrained_folder
    from hf_genzoo.models.instruct_pix2pix import check_kl_first_stage

    folder = resolve_pretrained_folder(name_or_path)
    index_path = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index_path):
        raise ValueError(f"--pretrained_model_name_or_path {name_or_path} has no model_index.json: give a text-to-image pipeline folder")
    with open(index_path) as f:
        index = json.load(f)
    missing = [name for name in ("vae", "unet", "text_encoder", "tokenizer", "scheduler") if not (isinstance(index.get(name), list) and index[name][1])]
    if missing:
        raise ValueError(f"--pretrained_model_name_or_path {name_or_path} lacks {missing}: InstructPix2Pix starts from a text-to-image folder with vae, unet, text_encoder, tokenizer and scheduler")
    import hf_genzoo  # noqa: F401  (our classes, for the library names in model_index.json)

    components = {"vae": latent_diffusion_script().load_first_stage(folder), "tokenizer": AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")}
    check_kl_first_stage(components["vae"])
    for name in ("unet", "text_encoder", "scheduler"):
        library, class_name = index[name]
        cls = getattr(importlib.import_module(library), class_name)
        components[name] = cls.from_pretrained(folder, subfolder=name)
    return components


def editing_unet(unet, latent_channels: int):
    """The UNet ε_θ([z_t, E(c_I)], t, c_T): a text-to-image UNet (C inputs) widened by `widen_conv_in` with zero new
    weights, or one that already takes 2C inputs, as it is. Anything else is refused."""
    from hf_genzoo import widen_conv_in

    in_channels, out_channels = unet.config.in_channels, unet.config.out_channels
    if out_channels != latent_channels or in_channels not in (latent_channels, 2 * latent_channels):
        raise ValueError(
            f"the base UNet's conv_in takes {in_channels} channels (out_channels={out_channels}); InstructPix2Pix needs "
            f"{latent_channels} (a text-to-image UNet on the first stage's {latent_channels} latent channels, widened here) "
            f"or {2 * latent_channels} (already [z_t, E(c_I)])"
        )
    return widen_conv_in(unet, latent_channels)


def extend_word_level_vocabulary(tokenizer, text_encoder, texts, seed: int = 0):
    """(tokenizer, text_encoder) whose word-level vocabulary also holds every word of `texts`: the new words get new
    ids after the old ones and new embedding rows drawn N(mean, std²) of the old rows (seeded), so the frozen encoder
    tells "bigger" from "smaller" where both were `<unk>` before. Tokenizers that are not word-level (CLIP's BPE)
    and vocabularies that already hold every word come back unchanged."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from hf_genzoo.models.text_encoder import _split

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer, text_encoder, []
    state = json.loads(backend.to_str())
    if state["model"]["type"] != "WordLevel":
        return tokenizer, text_encoder, []
    vocab = state["model"]["vocab"]
    new_words = sorted({word for text in texts for word in _split(text)} - set(vocab))
    if not new_words:
        return tokenizer, text_encoder, []
    for word in new_words:
        vocab[word] = len(vocab)
    extended = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)), bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token, unk_token=tokenizer.unk_token, model_max_length=tokenizer.model_max_length,
    )
    embeddings = text_encoder.get_input_embeddings().weight.detach()  # (V, D)
    old_size = embeddings.shape[0]
    text_encoder.resize_token_embeddings(len(extended), mean_resizing=False)
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(len(extended) - old_size, embeddings.shape[1], generator=generator) * embeddings.std(0) + embeddings.mean(0)
    with torch.no_grad():
        text_encoder.get_input_embeddings().weight[old_size:] = rows.to(embeddings.dtype)
    return extended, text_encoder, new_words


# ---- data and the latent cache -------------------------------------------------------------------------------


def load_triplets(args, split: str, max_samples: int | None):
    """A split of the triplets with diffusers' column names checked: the shapes world's edits (its `instruction`
    column read as --edit_prompt_column), a save_to_disk folder, or what `load_source_dataset` reads."""
    import datasets

    from hf_genzoo.data.loading import load_source_dataset

    if args.dataset_name == "shapes":
        kwargs = {"config": "edits", "num_shapes": tuple(args.num_shapes), **({"num_samples": max_samples} if max_samples else {})}
        raw = load_source_dataset("shapes", split, args.resolution, max_samples, args.seed, **kwargs)
        raw = raw.rename_column(SHAPES_INSTRUCTION_COLUMN, args.edit_prompt_column)
    elif os.path.isdir(args.dataset_name) and any(os.path.isfile(os.path.join(args.dataset_name, f)) for f in ("dataset_dict.json", "state.json")):
        saved = datasets.load_from_disk(args.dataset_name)
        if isinstance(saved, datasets.DatasetDict):
            if split not in saved:
                raise KeyError(f"split {split!r} not in {args.dataset_name} (splits: {list(saved)})")
            raw = saved[split]
        elif split == args.train_split:
            raw = saved
        else:
            raise KeyError(f"{args.dataset_name} is one split")
        if max_samples is not None and len(raw) > max_samples:
            raw = raw.select(range(max_samples))
    else:
        raw = load_source_dataset(args.dataset_name, split, args.resolution, max_samples, args.seed)
    check_columns(raw, args)
    return raw


def check_columns(dataset, args) -> None:
    needed = [args.original_image_column, args.edit_prompt_column, args.edited_image_column]
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"the dataset has no column {', '.join(map(repr, missing))} (--original_image_column / --edit_prompt_column / "
            f"--edited_image_column); its columns: {dataset.column_names}"
        )


def train_and_held_out(args):
    """(train, held-out) raw triplets; a dataset without --eval_split holds out its last --max_eval_samples rows."""
    try:
        return load_triplets(args, args.train_split, args.max_train_samples), load_triplets(args, args.eval_split, args.max_eval_samples)
    except (KeyError, ValueError) as error:
        if "has no column" in str(error):
            raise
        train = load_triplets(args, args.train_split, None)
        num_eval = min(args.max_eval_samples, len(train) // 10)
        logger.warning(f"no {args.eval_split!r} split ({error}); holding out the last {num_eval} training triplets")
        held_out = train.select(range(len(train) - num_eval, len(train)))
        train = train.select(range(len(train) - num_eval))
        if args.max_train_samples is not None and len(train) > args.max_train_samples:
            train = train.select(range(args.max_train_samples))
        return train, held_out


def cached_triplets(args, raw, split: str, first_stage, first_stage_id: str, text_encoder=None, tokenizer=None):
    """The split's latents, from the cache or encoded now (memory-mapped): per pair the edited image's posterior
    `latent_mean` / `latent_std` (what z_0 is sampled from), the input image's posterior mode `input_latent`
    (E(c_I), unscaled), with --random_flip the same three of the flipped pair (`*_flipped`), with a frozen text
    encoder the instruction's `prompt_embeds`, and the dataset's other non-image columns."""
    import datasets

    from hf_genzoo.data.latent_cache import build_latent_cache, cache_key, module_fingerprint, read_cache
    from hf_genzoo.data.loading import preprocess_image

    for column in (args.original_image_column, args.edited_image_column):
        if not isinstance(raw.features[column], datasets.Image):
            raw = raw.cast_column(column, datasets.Image())
    other = [c for c, f in raw.features.items() if not isinstance(f, datasets.Image)]
    description = {
        "kind": "instruct_pix2pix", "source": args.dataset_name, "split": split, "rows": len(raw),
        "fingerprint": raw._fingerprint if args.dataset_name != "shapes" else None,
        "shapes": {"num_shapes": args.num_shapes} if args.dataset_name == "shapes" else None, "seed": args.seed,
        "resolution": args.resolution, "center_crop": args.center_crop, "random_flip": args.random_flip,
        "columns": [args.original_image_column, args.edit_prompt_column, args.edited_image_column],
    }
    if text_encoder is not None:
        description["text_encoder"] = module_fingerprint(text_encoder)
        description["tokenizer"] = sorted(tokenizer.get_vocab().items())  # not backend_tokenizer.to_str(): calling the tokenizer changes its padding state
    key = cache_key(first_stage_id, description)
    folder = os.path.join(args.cache_dir or latent_diffusion_script().default_cache_dir(), f"latents-{key}")
    dataset = read_cache(folder, key, len(raw))
    if dataset is not None:
        logger.info(f"{split}: {len(dataset)} cached pairs from {folder}")
        return dataset
    logger.info(f"{split}: encoding {len(raw)} pairs with the first stage into {folder}")
    device, dtype = first_stage.device, first_stage.dtype
    @torch.no_grad()
    def encode(pixels):  # the edited images: z_0's posterior
        posterior = first_stage.encode(pixels.to(device, dtype)).latent_dist
        return posterior.mean, posterior.std

    def pair_pixels(rows, start, flip):
        """Both images of each pair, (B, 3, H, W) in [-1, 1], with one crop draw (and flip) per pair."""
        return [
            torch.from_numpy(np.stack([
                preprocess_image(image, args.resolution, 3, args.center_crop, np.random.default_rng([args.seed, start + i]).random(2), flip)
                for i, image in enumerate(rows[column])
            ]))
            for column in (args.original_image_column, args.edited_image_column)
        ]

    @torch.no_grad()
    def batches():
        for start in range(0, len(raw), args.encode_batch_size):
            rows = raw[start : start + args.encode_batch_size]
            columns = {c: rows[c] for c in other}
            input_pixels, edited_pixels = pair_pixels(rows, start, False)
            columns["input_latent"] = list(first_stage.encode(input_pixels.to(device, dtype)).latent_dist.mode().float().cpu().numpy())
            if args.random_flip:
                flipped_input, flipped_edited = pair_pixels(rows, start, True)
                columns["input_latent_flipped"] = list(first_stage.encode(flipped_input.to(device, dtype)).latent_dist.mode().float().cpu().numpy())
                mean, std = encode(flipped_edited)
                columns["latent_mean_flipped"] = list(mean.float().cpu().numpy())
                columns["latent_std_flipped"] = list(std.float().cpu().numpy())
            if text_encoder is not None:
                ids = tokenizer(rows[args.edit_prompt_column], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
                columns["prompt_embeds"] = list(text_encoder(ids.to(text_encoder.device))[0].float().cpu().numpy())
            yield edited_pixels, columns

    extra = {c: raw.features[c] for c in other}
    latent_shape = first_stage_latent_shape(first_stage, args.resolution)
    for name in ["input_latent"] + (["input_latent_flipped", "latent_mean_flipped", "latent_std_flipped"] if args.random_flip else []):
        extra[name] = datasets.Array3D(shape=latent_shape, dtype="float32")
    if text_encoder is not None:
        extra["prompt_embeds"] = datasets.Array2D(shape=(tokenizer.model_max_length, text_encoder.config.hidden_size), dtype="float32")
    return build_latent_cache(folder, key, len(raw), batches(), encode, extra, description)


def first_stage_latent_shape(first_stage, resolution: int) -> tuple[int, int, int]:
    factor = 2 ** (len(first_stage.config.block_out_channels) - 1)
    if resolution % factor:
        raise ValueError(f"--resolution {resolution} is not a multiple of the first stage's downsampling factor {factor}")
    return (first_stage.config.latent_channels, resolution // factor, resolution // factor)


# ---- the trained module and the loss -------------------------------------------------------------------------


class EditDenoiser(torch.nn.Module):
    """The trained modules as one (one DDP wrapper, one optimiser, one EMA): the widened UNet and, with
    --train_text_encoder, the text encoder. `forward(z_t, t, image_latents, prompt_embeds | input_ids)` runs
    ε_θ([z_t, E(c_I)], t, c_T)."""

    def __init__(self, unet, text_encoder=None):
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder

    def forward(self, sample, timesteps, image_latents, prompt_embeds=None, input_ids=None):
        if input_ids is not None:
            prompt_embeds = self.text_encoder(input_ids)[0]  # (B, L, D)
        model_input = torch.cat([sample, image_latents.to(sample.dtype)], dim=1)  # [z_t, E(c_I)]: (B, 2C, h, w)
        return self.unet(model_input, timesteps, encoder_hidden_states=prompt_embeds)


def instruct_pix2pix_loss(denoiser, noise_scheduler, batch, scaling_factor, generator, args, text_condition, dropout: bool = True):
    """One micro-batch, every draw from the CPU `generator` in this order: the joint flip (with --random_flip), ε_z of
    z_0 = scaling_factor · (μ + σ ε_z), t, ε, (noise offset), the conditioning dropout; then Algorithm 1 of Ho et al.
    on ε_θ([z_t, E(c_I)], t, c_T) (`training_utils.denoising_loss`)."""
    from hf_genzoo.training_utils import denoising_loss

    device = next(denoiser.parameters()).device
    batch_size = len(batch["latent_mean"])
    flip = torch.rand(batch_size, generator=generator) < 0.5 if args.random_flip else None
    image_latents, z_0 = pair_latents(batch, flip, scaling_factor, generator)  # (B, C, h, w) each
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
    noise = torch.randn(z_0.shape, generator=generator)
    if args.noise_offset:
        noise = noise + args.noise_offset * torch.randn((batch_size, z_0.shape[1], 1, 1), generator=generator)
    drop_text = drop_image = torch.zeros(batch_size, dtype=torch.bool)
    if dropout:
        drop_text, drop_image = conditioning_dropout_masks(batch_size, args.drop_text_prob, args.drop_image_prob, args.drop_both_prob, generator)
    image_latents = torch.where(drop_image[:, None, None, None], torch.zeros_like(image_latents), image_latents)  # ∅_I = 0
    return denoising_loss(
        denoiser, noise_scheduler, z_0.to(device), timesteps.to(device), noise.to(device), args.snr_gamma,
        image_latents=image_latents.to(device), **text_condition(batch, drop_text),
    )


# ---- evaluation ----------------------------------------------------------------------------------------------


@torch.no_grad()
def generate_edits(pipe, prompts, image_latents: torch.Tensor, args, seed: int, batch_size: int = 125) -> torch.Tensor:
    """One edit per (instruction, input latents E(c_I) (N, C, h, w)) with the pipeline's dual guidance, z_T from
    `seed`; (N, 3, H, W) in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(prompts), batch_size):
        n = min(batch_size, len(prompts) - start)
        latents = torch.randn((n, *image_latents.shape[1:]), generator=generator)
        images = pipe(
            list(prompts[start : start + n]), image_latents[start : start + n].to(pipe.device), latents=latents.to(pipe.device),
            num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale,
            image_guidance_scale=args.image_guidance_scale, output_type="pt",
        ).images  # [0, 1]
        out.append(images.float().cpu() * 2 - 1)
    return torch.cat(out)


def decode_images(raw, column: str, indices, resolution: int) -> torch.Tensor:
    from hf_genzoo.data.loading import preprocess_image

    rows = raw.select(indices)[column]
    return torch.from_numpy(np.stack([preprocess_image(image, resolution, 3, True, None, False) for image in rows]))


def edit_grid(pipe, args, eval_cache, eval_raw):
    """Rows of held-out pairs: input | exact edit | --num_validation_images edits at fixed seeds, enlarged to 128-pixel
    tiles, each row labelled with its instruction."""
    from hf_genzoo.data.latent_cache import gather_rows
    from hf_genzoo.utils import enlarged_grid

    pipe.set_progress_bar_config(disable=True)
    n = min(args.num_validation_pairs, len(eval_cache))
    indices = list(range(n))
    rows = gather_rows(eval_cache, indices, ["input_latent", args.edit_prompt_column])
    columns = [decode_images(eval_raw, args.original_image_column, indices, args.resolution), decode_images(eval_raw, args.edited_image_column, indices, args.resolution)]
    for k in range(args.num_validation_images):
        columns.append(generate_edits(pipe, rows[args.edit_prompt_column], rows["input_latent"], args, args.seed + 100 + k))
    images = torch.stack(columns, dim=1).flatten(0, 1)  # (n · (2 + k), 3, H, W), row-major
    labels = [f"{instruction}  (input | target | {args.num_validation_images} edits)" for instruction in rows[args.edit_prompt_column]]
    return enlarged_grid(images, nrow=len(columns), row_labels=labels)


@torch.no_grad()
def validation_loss(denoiser, noise_scheduler, eval_cache, scaling_factor, args, text_condition, columns) -> float:
    """The loss on held-out pairs at fixed timesteps and noise, no dropout (it moves with the model)."""
    from hf_genzoo.data.latent_cache import gather_rows

    generator = torch.Generator().manual_seed(args.seed + 7)
    rows = gather_rows(eval_cache, list(range(min(args.num_validation_loss_pairs, len(eval_cache)))), columns)
    losses = []
    for start in range(0, len(rows["latent_mean"]), 128):
        batch = {k: v[start : start + 128] for k, v in rows.items()}
        losses.append(instruct_pix2pix_loss(denoiser, noise_scheduler, batch, scaling_factor, generator, args, text_condition, dropout=False).item())
    return float(np.mean(losses))


@torch.no_grad()
def evaluate_edits(pipe, args, eval_cache) -> dict:
    """The oracle's success / preservation / validity per edit type on --num_eval_edits held-out triplets
    (`hf_genzoo.metrics.editing.edit_metrics`); {} for data without the shapes world's factor columns."""
    from hf_genzoo.data.latent_cache import gather_rows
    from hf_genzoo.metrics.editing import edit_metrics

    factor_columns = [c for c in eval_cache.column_names if c.startswith(("input_", "edited_")) and c[-2:] in ("_0", "_1")]
    count = min(args.num_eval_edits, len(eval_cache))
    if not count or "edit_type" not in eval_cache.column_names or len(factor_columns) < 24:
        return {}
    pipe.set_progress_bar_config(disable=True)
    rows = gather_rows(eval_cache, list(range(count)), ["input_latent", args.edit_prompt_column, "edit_type", *factor_columns])
    outputs = generate_edits(pipe, rows[args.edit_prompt_column], rows["input_latent"], args, args.seed + 1)
    metrics = edit_metrics(outputs, rows, args.resolution)
    metrics.update(num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale, image_guidance_scale=args.image_guidance_scale)
    return metrics


# ---- main ----------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> str:
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from hf_genzoo import GenZooDDPMScheduler, InstructPix2PixPipeline
    from hf_genzoo.data.latent_cache import CacheRows, module_fingerprint
    from hf_genzoo.training_utils import (
        diverged_error,
        end_training,
        find_checkpoint,
        micro_batch_generator,
        micro_batches,
        plan_steps,
        push_output_folder,
        resume,
        save_checkpoint,
        save_validation_grid,
        set_learning_rate,
        setup_accelerator,
        tracker_config,
    )

    accelerator = setup_accelerator(args, logger)

    # 1. the base: first stage (frozen), UNet (widened), text encoder and tokenizer, scheduler
    base = load_text_to_image(args.pretrained_model_name_or_path)
    first_stage = base["vae"].to(accelerator.device).eval().requires_grad_(False)
    latent_channels = first_stage.config.latent_channels
    unet = editing_unet(base["unet"], latent_channels)
    factor = 2 ** (len(first_stage.config.block_out_channels) - 1)
    if args.resolution is None:
        args.resolution = unet.config.sample_size * factor
    first_stage_latent_shape(first_stage, args.resolution)
    scaling_factor = float(first_stage.config.scaling_factor)
    noise_scheduler = GenZooDDPMScheduler.from_config(base["scheduler"].config)

    # 2. the triplets, the tokenizer extended by their words, the latent caches
    with accelerator.main_process_first():
        train_raw, eval_raw = train_and_held_out(args)
    tokenizer, text_encoder, new_words = extend_word_level_vocabulary(
        base["tokenizer"], base["text_encoder"], list(train_raw[args.edit_prompt_column]) + list(eval_raw[args.edit_prompt_column]), args.seed
    )
    if new_words:
        logger.info(f"the word-level tokenizer gains {len(new_words)} words of the instructions: {new_words}")
    text_encoder = text_encoder.to(accelerator.device).requires_grad_(args.train_text_encoder)
    frozen_text_encoder = None if args.train_text_encoder else text_encoder.eval()
    with accelerator.main_process_first():
        first_stage_id = module_fingerprint(first_stage)
        train_cache = cached_triplets(args, train_raw, args.train_split, first_stage, first_stage_id, frozen_text_encoder, tokenizer)
        eval_cache = cached_triplets(args, eval_raw, args.eval_split, first_stage, first_stage_id, frozen_text_encoder, tokenizer)

    def tokenize(prompts):
        return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids

    with torch.no_grad():
        empty_prompt_embeds = text_encoder(tokenize([""]).to(accelerator.device))[0][0]  # ∅_T (L, D), of the frozen encoder

    def text_condition(batch, drop_text):
        """c_T of the micro-batch, ∅_T (the empty prompt) where `drop_text`."""
        if frozen_text_encoder is not None:
            embeds = batch["prompt_embeds"].to(accelerator.device)  # (B, L, D)
            return {"prompt_embeds": torch.where(drop_text.to(embeds.device)[:, None, None], empty_prompt_embeds.to(embeds.dtype), embeds)}
        prompts = ["" if d else p for d, p in zip(drop_text.tolist(), batch[args.edit_prompt_column])]
        return {"input_ids": tokenize(prompts).to(accelerator.device)}

    # 3. optimiser, schedule, EMA
    denoiser = EditDenoiser(unet.train(), text_encoder if args.train_text_encoder else None)
    num_train = len(train_cache)
    global_batch = args.train_batch_size * accelerator.num_processes
    batches_per_epoch, max_train_steps = plan_steps(num_train, global_batch, args.gradient_accumulation_steps, args.num_train_epochs, args.max_train_steps)
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
        accelerator.init_trackers("train_instruct_pix2pix", config=tracker_config(args))

    # 4. resume: the checkpoint's learning-rate schedule, unless --learning_rate was given on this command
    global_step = resume(accelerator, args.output_dir, args.resume_from_checkpoint)
    if global_step:
        if args.learning_rate_given:
            set_learning_rate(optimizer, args.learning_rate, lr_scheduler)
            logger.info(f"resumed with --learning_rate {args.learning_rate} (given on this command)")
        else:
            logger.info(f"resumed with the checkpoint's learning-rate schedule (lr {lr_scheduler.get_last_lr()[0]:.3g})")
    logger.info(
        f"{num_train} training pairs of {latent_channels}×{args.resolution // factor}×{args.resolution // factor} latents, "
        f"{global_batch} per step on {accelerator.num_processes} process(es), {max_train_steps} steps; trained "
        f"{sum(p.numel() for p in unwrapped.parameters()) / 1e6:.2f}M parameters"
    )

    columns = ["latent_mean", "latent_std", "input_latent"]
    if args.random_flip:
        columns += ["latent_mean_flipped", "latent_std_flipped", "input_latent_flipped"]
    columns.append("prompt_embeds" if frozen_text_encoder is not None else args.edit_prompt_column)

    def sampling_pipeline():
        return InstructPix2PixPipeline(vae=first_stage, text_encoder=unwrapped.text_encoder or text_encoder, tokenizer=tokenizer, unet=unwrapped.unet, scheduler=base["scheduler"])

    def batches():
        from torch.utils.data import DataLoader

        first = global_step * args.gradient_accumulation_steps  # the resumed step's first micro-batch (read once: the loop moves global_step)
        order = micro_batches(args, accelerator, num_train, batches_per_epoch, global_step)
        loader = DataLoader(CacheRows(train_cache, columns), batch_sampler=(i.tolist() for _, i in order), num_workers=args.dataloader_num_workers, collate_fn=lambda b: b)
        for offset, batch in enumerate(loader):
            yield first + offset, batch

    # 5. the loop
    progress = tqdm(range(max_train_steps), initial=global_step, desc="steps", disable=not accelerator.is_local_main_process)
    last_good_checkpoint = find_checkpoint(args.output_dir, "latest") if accelerator.is_main_process else None
    start_time = time.perf_counter()
    denoiser.train()
    for micro_index, batch in batches():
        if global_step >= max_train_steps:
            break
        generator = micro_batch_generator(args.seed, micro_index, accelerator.process_index)
        with accelerator.accumulate(denoiser):
            with accelerator.autocast():
                loss = instruct_pix2pix_loss(denoiser, noise_scheduler, batch, scaling_factor, generator, args, text_condition)
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
                val_loss = validation_loss(unwrapped, noise_scheduler, eval_cache, scaling_factor, args, text_condition, columns)
            grid = edit_grid(sampling_pipeline(), args, eval_cache, eval_raw)
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
        pipe = sampling_pipeline()
        eval_start = time.perf_counter()
        metrics = evaluate_edits(pipe, args, eval_cache)
        metrics.update(
            train_steps=global_step, train_seconds=round(train_seconds, 1), eval_seconds=round(time.perf_counter() - eval_start, 1),
            scaling_factor=scaling_factor, new_words=len(new_words),
        )
        logger.info(f"metrics: {json.dumps(metrics)}")
        save_model_folder(args, pipe, metrics, edit_grid(pipe, args, eval_cache, eval_raw), eval_cache, eval_raw)
        print(f"saved {args.output_dir}: {json.dumps({k: v for k, v in metrics.items() if isinstance(v, float)})}")
        if args.push_to_hub:
            push_output_folder(args, f"InstructPix2Pix fine-tuned for {global_step} steps")
    end_training(accelerator)
    return args.output_dir


def save_model_folder(args, pipe, metrics: dict, edits, eval_cache, eval_raw) -> None:
    """The pipeline, model card, the guidance grid of the first held-out edit (samples.png), the edit grid
    (edits.png) and metrics, staged and moved into `output_dir` (model_index.json last)."""
    from hf_genzoo.hub import write_model_card
    from hf_genzoo.training_utils import card_dataset_fields, staged_model_folder, training_command

    with staged_model_folder(args.output_dir, metrics) as staging:
        pipe.save_pretrained(staging)
        edits.save(os.path.join(staging, "edits.png"))
        instruction = eval_cache[0][args.edit_prompt_column]
        image = eval_raw[0][args.original_image_column]
        guidance = pipe.guidance_grid(instruction, image, num_inference_steps=args.num_inference_steps, generator=torch.Generator().manual_seed(args.seed))
        guidance.save(os.path.join(staging, "samples.png"))
        fields = card_dataset_fields(args)
        if args.dataset_name == "shapes":
            fields["dataset_description"] = f"the hf_genzoo shapes world's exact edits ({args.resolution}×{args.resolution}, {' or '.join(map(str, args.num_shapes))} shape(s) per image)"
        summary = (
            f"{metrics['train_steps']} steps in {metrics['train_seconds']:.0f} s from `{args.pretrained_model_name_or_path}`; "
            f"edits by DDIM with {args.num_inference_steps} steps, s_T = {args.guidance_scale}, s_I = {args.image_guidance_scale}"
        )
        write_model_card(
            staging, "instruct_pix2pix", **fields, pipeline_class="InstructPix2PixPipeline", model_class=type(pipe.unet).__name__,
            first_stage_class=type(pipe.vae).__name__, tags=["diffusion", "latent-diffusion", "instruct-pix2pix", "image-editing"],
            task_type="image-to-image", example_instruction=instruction,
            metrics={k: v for k, v in metrics.items() if isinstance(v, float) and k not in ("train_seconds", "eval_seconds", "scaling_factor")},
            training_summary=summary, sample_grid="samples.png", training_command=training_command("train_instruct_pix2pix", args),
        )


if __name__ == "__main__":
    from hf_genzoo.training_utils import TrainingDivergedError

    try:
        main(parse_args())
    except TrainingDivergedError as error:
        sys.exit(f"error: {error}")
