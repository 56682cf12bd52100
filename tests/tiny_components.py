"""Tiny text-to-image components built from configs (no download): the five components of a Stable Diffusion folder
at toy size, for tests that run stock diffusers pipelines or our own on them.

    components = tiny_text_to_image_components()
    pipe = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)

Sizes: 16×16 RGB images, 8×8×4 latents (a 2-level VAE), a 2-level UNet whose attention maps are 8×8 and 4×4, a
word-level tokenizer over the shapes world's caption words (plus a few others) padding to 16 tokens, and a
2-layer CLIP text encoder of width 16. Everything is seeded.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, PreTrainedTokenizerFast

from hf_genzoo.data.shapes import COLORS, POSITION_WORDS, SHAPES, SIZES
from hf_genzoo.models.text_encoder import build_clip_text_encoder, build_word_level_tokenizer

EXTRA_WORDS = ("a", "an", "the", "at", "and", "on", "with", "big", "fluffy", "striped", "cat", "dog", "hat", "wearing")
POSITIONS = tuple(word for row in POSITION_WORDS for place in row for word in place.split())  # top, left, ...
VOCABULARY = tuple(dict.fromkeys([*EXTRA_WORDS, *SHAPES, *COLORS, *SIZES, *POSITIONS]))
CROSS_ATTENTION_DIM = 16


def tiny_tokenizer(words=VOCABULARY, model_max_length: int = 16) -> PreTrainedTokenizerFast:
    """The project's word-level tokenizer (`hf_genzoo.models.text_encoder`) over `words`: lower-cased, split on
    whitespace and punctuation, `<s> words </s>` padded with `<pad>` to `model_max_length`."""
    return build_word_level_tokenizer([" ".join(words)], model_max_length=model_max_length)


def tiny_text_encoder(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    return build_clip_text_encoder(
        tokenizer, hidden_size=CROSS_ATTENTION_DIM, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
    ).eval()


def tiny_unet(seed: int = 0, **kwargs) -> UNet2DConditionModel:
    """8×8×4 latents; attention at 8×8 (down_blocks.0, up_blocks.1, 2 heads) and 4×4 (down_blocks.1, mid_block,
    up_blocks.0, 4 heads)."""
    torch.manual_seed(seed)
    config = dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=(2, 4),  # diffusers' name for the number of heads per block
        norm_num_groups=4,
    )
    return UNet2DConditionModel(**{**config, **kwargs}).eval()


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """16×16 RGB ↔ 8×8×4 latents (vae_scale_factor 2)."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    ).eval()


def tiny_scheduler() -> DDIMScheduler:
    """Stable Diffusion's DDIM configuration."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_text_to_image_components(seed: int = 0) -> dict:
    """`dict(unet, vae, text_encoder, tokenizer, scheduler)`, the components of a Stable Diffusion pipeline."""
    tokenizer = tiny_tokenizer()
    return dict(
        unet=tiny_unet(seed),
        vae=tiny_vae(seed + 1),
        text_encoder=tiny_text_encoder(tokenizer, seed + 2),
        tokenizer=tokenizer,
        scheduler=tiny_scheduler(),
    )
