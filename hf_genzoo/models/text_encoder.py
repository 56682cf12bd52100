"""A text encoder trained from scratch for text-to-image latent diffusion on small worlds: a word-level tokenizer built
from the training captions with the `tokenizers` library (saved as a transformers `PreTrainedTokenizerFast`) and a
transformers `CLIPTextModel` sized for it, so a saved folder has the components of a Stable Diffusion folder and no
download is ever needed.

The encoder τ_θ(y) of Rombach et al. 2022 (../shared/EQUATIONS.md, "Latent diffusion"): the UNet's cross-attention
takes K, V from its last hidden state (B, L, D).
"""

from __future__ import annotations

from typing import Iterable

from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"


def build_word_level_tokenizer(texts: Iterable[str], model_max_length: int | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over every lower-cased, whitespace/punctuation-split word of `texts`: `<s> words </s>`,
    padded with `<pad>`; unknown words map to `<unk>`. `model_max_length` defaults to the longest text's length
    (with `<s>` and `</s>`) rounded up to a multiple of 8."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    texts = list(texts)
    words = sorted({word for text in texts for word in _split(text)})
    vocab = {token: i for i, token in enumerate([PAD, BOS, EOS, UNK, *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    if model_max_length is None:
        longest = max((len(_split(text)) for text in texts), default=0) + 2
        model_max_length = -(-longest // 8) * 8
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=model_max_length,
    )


def _split(text: str) -> list[str]:
    from tokenizers import pre_tokenizers

    return [word.lower() for word, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)]


def build_clip_text_encoder(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int | None = None,
) -> CLIPTextModel:
    """A randomly initialised `CLIPTextModel` for `tokenizer`: its vocabulary, its `model_max_length` positions and its
    special token ids (CLIP pools at the first `eos_token_id`)."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return CLIPTextModel(config)
