"""The second stage of a VQ-VAE (../shared/EQUATIONS.md, "VQ-VAE": fit an autoregressive model to the grid of codes):
a transformers `GPT2LMHeadModel` over the codes in raster order. No transformer is written here; this module fixes
the token layout and checks that a prior fits a codebook.

Token layout, for a codebook of K codes and C classes (C = 0: unconditional):
    0 … K−1          the codes
    K                the start token <s> (unconditional prior)
    K+1 … K+C        one start token per class (class-conditional prior: the class token replaces <s>)
A sequence is [start, code_(0,0), code_(0,1), …, code_(h−1,w−1)]: 1 + h·w tokens. The layout (K, C, h, w) is
stored in the GPT-2 config (`codebook_size`, `num_classes`, `code_grid`), so a saved prior says what it fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel


@dataclass(frozen=True)
class CodeLayout:
    num_codes: int
    num_classes: int  # 0: unconditional
    grid: tuple[int, int]

    @property
    def start_token(self) -> int:
        return self.num_codes

    @property
    def vocab_size(self) -> int:
        return self.num_codes + 1 + self.num_classes

    @property
    def sequence_length(self) -> int:
        return 1 + self.grid[0] * self.grid[1]


def build_code_prior(
    num_codes: int,
    grid: tuple[int, int],
    num_classes: int | None = None,
    n_layer: int = 4,
    n_head: int = 4,
    n_embd: int = 128,
    dropout: float = 0.1,
) -> GPT2LMHeadModel:
    """A small GPT-2 whose vocabulary and context fit K codes on an h×w grid (plus start/class tokens)."""
    layout = CodeLayout(num_codes, num_classes or 0, tuple(grid))
    config = GPT2Config(
        vocab_size=layout.vocab_size,
        n_positions=layout.sequence_length,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=layout.start_token,
        eos_token_id=layout.start_token,  # never generated: start/class tokens are suppressed while sampling
        pad_token_id=layout.start_token,
        codebook_size=num_codes,
        num_classes=layout.num_classes,
        code_grid=list(layout.grid),
    )
    return GPT2LMHeadModel(config)


def code_layout(prior: GPT2LMHeadModel) -> CodeLayout:
    config = prior.config
    if not hasattr(config, "codebook_size") or not hasattr(config, "code_grid"):
        raise ValueError(
            "this GPT-2 config has no `codebook_size`/`code_grid`: build the prior with hf_genzoo's build_code_prior "
            "(training_scripts/train_vq_prior.py) so it records the codebook it models"
        )
    return CodeLayout(int(config.codebook_size), int(getattr(config, "num_classes", 0) or 0), tuple(config.code_grid))


def check_code_prior(prior: GPT2LMHeadModel, num_codes: int, grid: tuple[int, int]) -> CodeLayout:
    """At load time, not mid-sampling: the prior's vocabulary must be this codebook's K (+ start/class tokens) and its
    context must hold the whole h×w grid."""
    layout = code_layout(prior)
    if layout.num_codes != num_codes or prior.config.vocab_size != layout.vocab_size:
        raise ValueError(
            f"the prior models {layout.num_codes} codes (vocabulary {prior.config.vocab_size}) but the VQ-VAE's codebook "
            f"has K = {num_codes}: the vocabulary must be K + 1 + num_classes = {num_codes + 1 + layout.num_classes}"
        )
    needed = 1 + grid[0] * grid[1]
    if prior.config.n_positions < needed or tuple(layout.grid) != tuple(grid):
        raise ValueError(
            f"the prior's context is {prior.config.n_positions} tokens for a {layout.grid[0]}×{layout.grid[1]} grid, "
            f"but the VQ-VAE codes images as a {grid[0]}×{grid[1]} grid: {needed} tokens are needed"
        )
    return layout


def start_tokens(layout: CodeLayout, batch_size: int, class_labels=None, device=None) -> torch.Tensor:
    """(B, 1): <s> for an unconditional prior, the class token K+1+c for class c otherwise."""
    if layout.num_classes == 0:
        if class_labels is not None:
            raise ValueError("class_labels were given but this prior is unconditional (trained without classes)")
        return torch.full((batch_size, 1), layout.start_token, dtype=torch.long, device=device)
    if class_labels is None:
        raise ValueError(f"this prior is class-conditional: pass class_labels in [0, {layout.num_classes})")
    labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
    if labels.numel() == 1:
        labels = labels.expand(batch_size)
    if labels.numel() != batch_size:
        raise ValueError(f"got {labels.numel()} class labels for a batch of {batch_size}")
    if int(labels.min()) < 0 or int(labels.max()) >= layout.num_classes:
        raise ValueError(
            f"class_labels must be in [0, {layout.num_classes}), got values from {int(labels.min())} to {int(labels.max())}"
        )
    return (layout.num_codes + 1 + labels).view(-1, 1).to(device)


def codes_to_tokens(indices: torch.Tensor, layout: CodeLayout, class_labels=None) -> torch.Tensor:
    """Codes (B, h, w) → the prior's input sequence (B, 1 + h·w)."""
    start = start_tokens(layout, len(indices), class_labels, device=indices.device)
    return torch.cat([start, indices.flatten(1).long()], dim=1)


def code_nll(prior: GPT2LMHeadModel, tokens: torch.Tensor) -> torch.Tensor:
    """−ln p(codes | start) per image, in nats summed over the h·w codes (B,). The start token is given."""
    inputs = tokens[:, :-1]
    logits = prior(input_ids=inputs, attention_mask=torch.ones_like(inputs)).logits.float()  # (B, h·w, V): p(code_i | start, code_<i)
    nll = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")  # (B, h·w)
    return nll.sum(1)


def nats_to_bits_per_dim(nats: torch.Tensor, num_dims: int) -> torch.Tensor:
    return nats / (num_dims * math.log(2))
