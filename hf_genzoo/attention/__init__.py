"""Prompt-to-prompt attention control (Hertz et al. 2022) as diffusers attention processors."""

from .attention_processor import (
    AttentionLayer,
    PromptToPromptAttnProcessor,
    attention_layers,
    register_attention_control,
)
from .prompt_to_prompt import (
    AttentionControl,
    AttentionControlEdit,
    AttentionRefine,
    AttentionReplace,
    AttentionReweight,
    AttentionStore,
    EmptyControl,
    LocalBlend,
    align_tokens,
    refinement_mapper,
    word_token_indices,
)

__all__ = [
    "AttentionControl",
    "AttentionControlEdit",
    "AttentionLayer",
    "AttentionRefine",
    "AttentionReplace",
    "AttentionReweight",
    "AttentionStore",
    "EmptyControl",
    "LocalBlend",
    "PromptToPromptAttnProcessor",
    "align_tokens",
    "attention_layers",
    "refinement_mapper",
    "register_attention_control",
    "word_token_indices",
]
