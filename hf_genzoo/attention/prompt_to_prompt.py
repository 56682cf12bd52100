"""Prompt-to-prompt controllers (Hertz et al. 2022, arXiv:2208.01626; ../shared/EQUATIONS.md, "Prompt-to-prompt").

The source prompt and its edits are denoised together from the same noise; the cross-attention maps M_t of the
source (which bind pixels to words) are injected into the edits' denoising, so the layout stays and only what the
edited words say changes. No training, fine-tuning or optimisation.

Notation (the paper's, §3.2): M_t are the source prompt's attention maps at step t, M*_t an edited prompt's own maps,
M̂_t = Edit(M_t, M*_t, t) the maps the edited prompt's attention uses. Maps are (rows, heads, Q, K): Q pixels of the
layer's map, K tokens (cross-attention) or pixels (self-attention).

    Edit                    class              M̂_t at an injected step
    word swap               AttentionReplace   M_t                                  (same number of tokens)
    adding words            AttentionRefine    (M_t)_{i,A(j)}; (M*_t)_{i,j} where A(j) = None (a new token)
    attention re-weighting  AttentionReweight  c_j · (M_t)_{i,j}  (c_j = 1 but for the chosen words)
    local editing           LocalBlend         latents outside the chosen words' mask taken from the source

Usage with a stock diffusers pipeline::

    controller = AttentionReplace(["a red circle", "a blue circle"], pipe.tokenizer, num_inference_steps=50)
    register_attention_control(pipe.unet, controller)
    images = pipe(["a red circle", "a blue circle"], num_inference_steps=50, generator=generator,
                  latents=noise.expand(2, -1, -1, -1), callback_on_step_end=controller.step_callback).images
    pipe.unet.set_attn_processor(AttnProcessor2_0())  # back to diffusers' default

Batch layout. The controllers see the UNet's batch as diffusers' text-to-image pipelines build it: under
classifier-free guidance (`do_classifier_free_guidance=True`, the default) the unconditional rows come first and are
never touched; the conditional rows are prompt-major, `num_images_per_prompt` rows per prompt
(`[p0 i0, p0 i1, ..., p1 i0, ...]`). Prompt 0 is the source, prompts 1, 2, ... are its edits; edit p's image k takes the
maps of the source's image k. The number of images per prompt is read off the batch (rows / prompts).

Step counting. The step index t is the controller's `cur_step`, advanced by `step_callback`, which diffusers calls
after each denoising step when it is passed as `callback_on_step_end` (it returns `callback_kwargs`; `LocalBlend`
replaces `callback_kwargs["latents"]`). Nothing is inferred from counting layer calls, so a pipeline that skips or
adds UNet calls cannot shift the schedule silently: a layer run twice in one step (the callback was not passed), a
callback whose `step` is not the controller's (a second generation without `reset()`), or an edit run past its
`num_inference_steps` raise `RuntimeError`. `register_attention_control` resets the controller; call `reset()` before
every further generation.
"""

from __future__ import annotations

import difflib
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from .attention_processor import AttentionLayer, Resolution

StepFraction = float | tuple[float, float]


# ---- tokens -----------------------------------------------------------------------------------------------------


def num_tokens(tokenizer) -> int:
    """K, the number of tokens the text encoder sees: diffusers pads every prompt to `tokenizer.model_max_length`."""
    length = getattr(tokenizer, "model_max_length", None)
    if not isinstance(length, int) or not 0 < length <= 100_000:
        raise ValueError(f"tokenizer.model_max_length must be the text encoder's length (e.g. 77), got {length!r}")
    return length


def token_ids(prompt: str, tokenizer) -> list[int]:
    """The prompt's token ids with its special tokens, truncated to `model_max_length` as diffusers does; unpadded."""
    return tokenizer(prompt, truncation=True, max_length=num_tokens(tokenizer)).input_ids


def word_token_indices(prompt: str, word: str, tokenizer) -> list[int]:
    """Token positions of every occurrence of `word` (one or more words) in `prompt`, counting the special tokens,
    e.g. `[2]` for "circle" in "a circle" (`<bos> a circle <eos>`). Empty when `word` is not in the prompt.

    A word is found by its token ids, so a word split into several sub-word tokens gives all of them, and
    tokenizers that lower-case or split punctuation are handled as they tokenize the prompt."""
    word_ids = tokenizer(word, add_special_tokens=False).input_ids
    if not word.strip() or not word_ids:
        raise ValueError(f"word {word!r} has no tokens")
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in word_ids:
        raise ValueError(f"word {word!r} is not in the tokenizer's vocabulary")
    ids, n = token_ids(prompt, tokenizer), len(word_ids)
    return [i + k for i in range(len(ids) - n + 1) if ids[i : i + n] == word_ids for k in range(n)]


def align_tokens(source_ids: Sequence[int], target_ids: Sequence[int]) -> list[int | None]:
    """A(j) of the paper's refinement edit: for each target token j the source token it is aligned with, or `None`
    for a token the target adds. Global alignment (Needleman-Wunsch; match +1, mismatch -1, gap 0), as the paper's
    code aligns the two prompts' token ids; on ties a gap in the source is preferred, then a gap in the target."""
    n, m = len(source_ids), len(target_ids)
    score = [[0] * (m + 1) for _ in range(n + 1)]  # gap 0: the first row and column stay 0
    move = [["left"] * (m + 1)] + [["up"] + [""] * m for _ in range(n)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            left, up = score[i][j - 1], score[i - 1][j]
            diagonal = score[i - 1][j - 1] + (1 if source_ids[i - 1] == target_ids[j - 1] else -1)
            score[i][j] = max(left, up, diagonal)
            move[i][j] = "left" if score[i][j] == left else "up" if score[i][j] == up else "diagonal"
    alignment: list[int | None] = [None] * m
    i, j = n, m
    while i > 0 or j > 0:
        step = move[i][j]
        if step == "diagonal":
            alignment[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif step == "left":  # target token j - 1 is new
            j -= 1
        else:  # source token i - 1 is dropped
            i -= 1
    return alignment


def refinement_mapper(source_prompt: str, target_prompt: str, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """The token map of a refinement edit over all K positions: `mapper` (K,) long, the source position each target
    position takes its map from, and `aligned` (K,) bool, False where the target adds a token. Padding positions map
    to the source's padding in order (the last position if the source is longer)."""
    k = num_tokens(tokenizer)
    source_ids, target_ids = token_ids(source_prompt, tokenizer), token_ids(target_prompt, tokenizer)
    mapper, aligned = torch.zeros(k, dtype=torch.long), torch.ones(k, dtype=torch.bool)
    for j, i in enumerate(align_tokens(source_ids, target_ids)):
        mapper[j], aligned[j] = (0, False) if i is None else (i, True)
    for j in range(len(target_ids), k):
        mapper[j] = min(len(source_ids) + j - len(target_ids), k - 1)
    return mapper, aligned


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str) or len(prompts) < 2 or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a list of a source prompt and at least one edit, got {prompts!r}")
    return list(prompts)


def _check_same_token_count(prompts: Sequence[str], tokenizer, edit: str):
    """A word swap maps token j of an edit to token j of the source: the prompts must have as many tokens."""
    source_length = len(token_ids(prompts[0], tokenizer))
    for prompt in prompts[1:]:
        length = len(token_ids(prompt, tokenizer))
        if length != source_length:
            source_words, words = prompts[0].split(), prompt.split()
            opcodes = difflib.SequenceMatcher(a=source_words, b=words).get_opcodes()
            changes = ", ".join(
                f"{' '.join(source_words[i1:i2])!r} -> {' '.join(words[j1:j2])!r}"
                for tag, i1, i2, j1, j2 in opcodes
                if tag != "equal"
            )
            raise ValueError(
                f"{edit} needs prompts with the same number of tokens: {prompts[0]!r} has {source_length}, "
                f"{prompt!r} has {length} ({changes}); use AttentionRefine to add words"
            )


def _step_range(value: StepFraction, num_inference_steps: int, name: str) -> tuple[int, int]:
    """A fraction f of the steps as the step range [0, ⌊f·N⌋), or a pair (start, end) as [⌊start·N⌋, ⌊end·N⌋)."""
    bounds = (0.0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if (
        not isinstance(bounds, (tuple, list))
        or len(bounds) != 2
        or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
        or not 0 <= bounds[0] <= bounds[1] <= 1
    ):
        raise ValueError(f"{name} must be a fraction in [0, 1] or a pair 0 <= start <= end <= 1, got {value!r}")
    return int(bounds[0] * num_inference_steps), int(bounds[1] * num_inference_steps)


def cross_replace_alphas(
    prompts: Sequence[str],
    tokenizer,
    num_inference_steps: int,
    cross_replace_steps: StepFraction | Mapping[str, StepFraction],
) -> torch.Tensor:
    """Where the source's cross-attention maps are injected: (num_inference_steps, edits, K) bool, True at step t for
    token j of edit p when M̂_t takes the source's map there (the word swap's t > τ, counted from the first step).

    `cross_replace_steps` is a fraction of the steps (0.8: the first 80 %), a pair (start, end), or a dict of these per
    word of the edited prompts with the key `"default_"` for every other token (1.0 if absent), e.g.
    `{"default_": 0.8, "blue": 0.4}`."""
    edits, k = len(prompts) - 1, num_tokens(tokenizer)
    if isinstance(cross_replace_steps, Mapping):
        per_word = dict(cross_replace_steps)
    else:
        per_word = {"default_": cross_replace_steps}
    alphas = torch.zeros(num_inference_steps, edits, k, dtype=torch.bool)
    start, end = _step_range(per_word.pop("default_", 1.0), num_inference_steps, "cross_replace_steps")
    alphas[start:end] = True
    for word, fraction in per_word.items():
        start, end = _step_range(fraction, num_inference_steps, f"cross_replace_steps[{word!r}]")
        positions = [word_token_indices(prompt, word, tokenizer) for prompt in prompts[1:]]
        if not any(positions):
            raise ValueError(f"cross_replace_steps word {word!r} is in none of the edited prompts {prompts[1:]}")
        for edit, indices in enumerate(positions):
            alphas[:, edit, indices] = False
            alphas[start:end, edit, indices] = True
    return alphas


# ---- controllers ------------------------------------------------------------------------------------------------


class AttentionControl:
    r"""Base of the prompt-to-prompt controllers: the step count and the classifier-free-guidance split.

    A `PromptToPromptAttnProcessor` calls `enter_layer(name)` on every call of its layer, materialises the attention
    maps when `is_active(name, is_cross)` and then calls the controller on them, which returns the maps to use;
    `forward` sees only the conditional rows. `step_callback` ends each step (see the module's docstring).

    Args:
        do_classifier_free_guidance (`bool`, defaults to `True`): whether the UNet batch holds unconditional rows
            first (diffusers' pipelines with `guidance_scale > 1`); checked against the pipeline at the first step.
    """

    def __init__(self, do_classifier_free_guidance: bool = True):
        self.do_classifier_free_guidance = do_classifier_free_guidance
        self.layers: dict[str, AttentionLayer] = {}  # set by register_attention_control
        self.reset()

    def reset(self):
        """Back to step 0 with nothing stored; call before each generation."""
        self.cur_step = 0
        self.latent_shape: tuple[int, int] | None = None  # (H, W) of the latents, from step_callback
        self._layers_this_step: set[str] = set()

    def needs_layer(self, layer: AttentionLayer) -> bool:
        """Whether the controller stores or edits `layer` at some step (register_attention_control's choice)."""
        raise NotImplementedError

    def is_active(self, layer_name: str, is_cross: bool) -> bool:
        """Whether the layer's maps must be materialised at the current step."""
        return True

    def enter_layer(self, layer_name: str):
        """Called by the processor on each call of its layer: each layer runs once per step."""
        if layer_name in self._layers_this_step:
            raise RuntimeError(
                f"attention layer {layer_name!r} ran twice in step {self.cur_step}: pass "
                "callback_on_step_end=controller.step_callback to the pipeline, which advances the step"
            )
        self._layers_this_step.add(layer_name)

    def __call__(self, attention_probs: torch.Tensor, is_cross: bool, place_in_unet: str, layer_name: str):
        """Maps (B, heads, Q, K) of one layer → the maps its attention uses; only the conditional rows are edited."""
        if not self.do_classifier_free_guidance:
            return self.forward(attention_probs, is_cross, layer_name)
        if attention_probs.shape[0] % 2:
            raise ValueError(
                f"a batch of {attention_probs.shape[0]} rows cannot hold classifier-free guidance's two halves; "
                "build the controller with do_classifier_free_guidance=False when guidance_scale <= 1"
            )
        unconditional, conditional = attention_probs.chunk(2)  # (B/2, heads, Q, K) each
        return torch.cat([unconditional, self.forward(conditional, is_cross, layer_name)])

    def forward(self, attention_probs: torch.Tensor, is_cross: bool, layer_name: str) -> torch.Tensor:
        """The conditional rows' maps (rows, heads, Q, K) → the maps to use."""
        return attention_probs

    def between_steps(self):
        """What happens after the UNet ran and before the next step (e.g. fold this step's maps into averages)."""

    def blend_latents(self, latents: torch.Tensor | None) -> torch.Tensor | None:
        """The latents the next step starts from (LocalBlend's hook); unchanged here."""
        return latents

    def check_pipeline(self, pipe):
        """At the first step: the pipeline batches the way the controller was told."""
        guidance = getattr(pipe, "do_classifier_free_guidance", None)
        if isinstance(guidance, bool) and guidance != self.do_classifier_free_guidance:
            raise ValueError(
                f"the pipeline runs with do_classifier_free_guidance={guidance} but the controller was built with "
                f"do_classifier_free_guidance={self.do_classifier_free_guidance}"
            )

    def step_callback(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        """diffusers' `callback_on_step_end`: ends step `step` and advances the controller to the next.

        Returns `callback_kwargs`, with `"latents"` replaced where the controller blends latents (`LocalBlend`).
        """
        if step != self.cur_step:
            raise RuntimeError(
                f"step_callback got step {step} but the controller is at step {self.cur_step}: "
                "call controller.reset() before each generation"
            )
        if step == 0:
            self.check_pipeline(pipe)
        latents = callback_kwargs.get("latents")
        if latents is not None:
            self.latent_shape = tuple(latents.shape[-2:])
        self.between_steps()
        blended = self.blend_latents(latents)
        if blended is not latents:
            callback_kwargs["latents"] = blended
        self.cur_step += 1
        self._layers_this_step = set()
        return callback_kwargs


class EmptyControl(AttentionControl):
    r"""Materialises every layer's attention maps and changes nothing: the processors' explicit path, for checks."""

    def needs_layer(self, layer: AttentionLayer) -> bool:
        return True


class AttentionStore(AttentionControl):
    r"""Keeps the attention maps of the conditional rows, averaged over heads: per step and as running averages.

    Maps of a layer are stored as (rows, Q, K) (rows prompt-major, as the module's docstring lays them out);
    `aggregate` gives them per token on the map's pixel grid. Limit the layers with `register_attention_control(...,
    resolutions=...)` to bound memory (a self-attention map is Q × Q).

    Args:
        store_cross (`bool`, defaults to `True`): keep cross-attention maps (K = tokens).
        store_self (`bool`, defaults to `False`): keep self-attention maps (K = Q pixels).
        average_only (`bool`, defaults to `True`): keep only the running average over steps, not each step's maps.
        store_device (`torch.device` or `str`, *optional*): where stored maps live, e.g. `"cpu"`; defaults to the
            UNet's device.
        store_dtype (`torch.dtype`, *optional*): dtype of stored maps, e.g. `torch.float16`; defaults to float32.
            Averages are accumulated in float32 either way.
        do_classifier_free_guidance (`bool`, defaults to `True`): see `AttentionControl`.
    """

    def __init__(
        self,
        store_cross: bool = True,
        store_self: bool = False,
        average_only: bool = True,
        store_device: torch.device | str | None = None,
        store_dtype: torch.dtype | None = None,
        do_classifier_free_guidance: bool = True,
    ):
        self.store_cross = store_cross
        self.store_self = store_self
        self.average_only = average_only
        self.store_device = store_device
        self.store_dtype = store_dtype or torch.float32
        super().__init__(do_classifier_free_guidance)

    def reset(self):
        super().reset()
        self.step_store: dict[str, torch.Tensor] = {}  # this step's maps, layer name -> (rows, Q, K)
        self.attention_store: dict[str, torch.Tensor] = {}  # running averages over steps, layer name -> (rows, Q, K)
        self.num_averaged_steps: dict[str, int] = {}
        self.step_maps: list[dict[str, torch.Tensor]] = []  # each step's maps when not average_only

    def needs_layer(self, layer: AttentionLayer) -> bool:
        return self.store_cross if layer.is_cross else self.store_self

    def stores(self, layer_name: str, is_cross: bool) -> bool:
        return (self.store_cross if is_cross else self.store_self) and layer_name in self.layers

    def is_active(self, layer_name: str, is_cross: bool) -> bool:
        return self.stores(layer_name, is_cross)

    def forward(self, attention_probs: torch.Tensor, is_cross: bool, layer_name: str) -> torch.Tensor:
        if self.stores(layer_name, is_cross):
            self.step_store[layer_name] = attention_probs.detach().mean(1, dtype=torch.float32)  # (rows, Q, K)
        return attention_probs

    def between_steps(self):
        """Fold this step's maps into the running averages: M̄ ← M̄ + (M_t − M̄) / n."""
        step = {}
        for name, maps in self.step_store.items():
            maps = maps.to(self.store_device or maps.device)
            count = self.num_averaged_steps.get(name, 0) + 1
            average = self.attention_store.get(name)
            average = maps if average is None else average.float() + (maps - average.float()) / count
            self.attention_store[name] = average.to(self.store_dtype)
            self.num_averaged_steps[name] = count
            if not self.average_only:
                step[name] = maps.to(self.store_dtype)
        if not self.average_only:
            self.step_maps.append(step)
        self.step_store = {}

    def get_average_attention(self) -> dict[str, torch.Tensor]:
        """Layer name → the maps (rows, Q, K) averaged over the steps so far (and over heads)."""
        return dict(self.attention_store)

    def aggregate(
        self,
        resolution: Resolution | None = None,
        places: Sequence[str] = ("down", "mid", "up"),
        is_cross: bool = True,
        step: int | None = None,
        latent_shape: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Maps per token on a pixel grid, averaged over the chosen layers (and heads, and steps).

        Args:
            resolution (`int` or `(h, w)`, *optional*): layers whose map at the generated latent shape has this
                shorter side (or is exactly (h, w)); all stored layers if `None`, each resized (bilinear) to the
                largest map.
            places (`Sequence[str]`, defaults to all): `"down"`, `"mid"`, `"up"`.
            is_cross (`bool`, defaults to `True`): cross-attention maps (last axis tokens) or self-attention maps
                (last axis the Q pixels of the layer).
            step (`int`, *optional*): one step's maps (needs `average_only=False`); the running average if `None`.
            latent_shape (`(H, W)`, *optional*): defaults to the latents seen by `step_callback`.

        Returns:
            `torch.Tensor` of shape (rows, h, w, K), float32.
        """
        latent_shape = latent_shape or self.latent_shape
        if latent_shape is None:
            raise ValueError("no latents seen yet: run a pipeline with callback_on_step_end=controller.step_callback")
        if step is not None and self.average_only:
            raise ValueError("per-step maps need AttentionStore(average_only=False)")
        source = self.attention_store if step is None else self.step_maps[step]
        chosen = [
            (self.layers[name], maps)
            for name, maps in source.items()
            if self.layers[name].place_in_unet in places
            and self.layers[name].is_cross == is_cross
            and (resolution is None or self.layers[name].matches([resolution], latent_shape))
        ]
        if not chosen:
            stored = sorted({self.layers[name].map_shape(latent_shape) for name in source})
            raise ValueError(f"no stored maps at resolution {resolution!r} in {tuple(places)}; stored: {stored}")
        target = max((layer.map_shape(latent_shape) for layer, _ in chosen), key=lambda hw: hw[0] * hw[1])
        grids = []
        for layer, maps in chosen:
            height, width = layer.map_shape(latent_shape)
            if height * width != maps.shape[1]:
                raise ValueError(
                    f"layer {layer.name!r} has {maps.shape[1]} queries, not {height}x{width} at latent shape "
                    f"{tuple(latent_shape)}"
                )
            grid = maps.float().reshape(maps.shape[0], height, width, maps.shape[-1])  # (rows, h, w, K)
            if (height, width) != target:
                grid = grid.permute(0, 3, 1, 2)  # (rows, K, h, w)
                grid = F.interpolate(grid, size=target, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
            grids.append(grid)
        return torch.stack(grids).mean(0)  # (rows, h, w, K)


class LocalBlend:
    r"""Local editing (Hertz et al. 2022, §3.2): latents outside a mask of the chosen words are the source's.

    At each step t, with M̄ a word's cross-attention maps averaged over heads, layers and the steps so far, dilated
    by a max-pool and normalised by their maximum, the mask of edit p is α = B(M̄_w) ∪ B(M̄*_{w*}) (B thresholds; w the
    source's words, w* the edit's) and z*_{t-1} ← α ⊙ z*_{t-1} + (1 − α) ⊙ z_{t-1}: outside the mask the edit's latents
    are the source's. Applied by the controller's `step_callback` to `callback_kwargs["latents"]`.

    Args:
        prompts (`Sequence[str]`): the controller's prompts, source first.
        tokenizer: the pipeline's tokenizer.
        words (`Sequence[str | Sequence[str] | None]`): one entry per prompt: the word(s) whose maps make its mask,
            e.g. `("circle", "square")` for "a red circle" → "a red square".
        threshold (`float`, defaults to 0.3): B keeps pixels whose normalised map exceeds it.
        dilation (`int`, defaults to 1): max-pool radius k (window 2k + 1) on the map's grid; 0 for none.
        start_blend (`float`, defaults to 0.0): fraction of the steps before blending starts.
        resolutions (`Sequence[int | tuple[int, int]]`, *optional*): use maps of these resolutions only (at the
            generated latent shape, as in `AttentionLayer.matches`); all stored cross-attention maps if `None`.
    """

    def __init__(
        self,
        prompts: Sequence[str],
        tokenizer,
        words: Sequence[str | Sequence[str] | None],
        threshold: float = 0.3,
        dilation: int = 1,
        start_blend: float = 0.0,
        resolutions: Sequence[Resolution] | None = None,
    ):
        self.prompts = _check_prompts(prompts)
        if isinstance(words, str) or len(words) != len(prompts):
            raise ValueError(f"local blend words need one entry per prompt ({len(prompts)}), got {words!r}")
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        if not isinstance(dilation, int) or dilation < 0:
            raise ValueError(f"dilation must be an int >= 0, got {dilation!r}")
        _step_range(start_blend, 1, "start_blend")
        self.word_alphas = torch.zeros(len(prompts), num_tokens(tokenizer))  # (prompts, K): 1 on the words' tokens
        for p, (prompt, prompt_words) in enumerate(zip(prompts, words)):
            for word in [prompt_words] if isinstance(prompt_words, str) else prompt_words or []:
                indices = word_token_indices(prompt, word, tokenizer)
                if not indices:
                    raise ValueError(f"local blend word {word!r} is not in prompt {p}, {prompt!r}")
                self.word_alphas[p, indices] = 1
        self.threshold, self.dilation, self.start_blend = threshold, dilation, start_blend
        self.resolutions = None if resolutions is None else tuple(resolutions)

    def get_mask(
        self, attention_maps: Mapping[str, torch.Tensor], layers: Mapping[str, AttentionLayer], latents: torch.Tensor
    ) -> torch.Tensor:
        """B(M̄) of each row's words: (rows, 1, H, W) bool, from the averaged cross-attention maps (rows, Q, K)."""
        rows, latent_shape = latents.shape[0], tuple(latents.shape[-2:])
        word_alphas = self.word_alphas.to(latents.device).repeat_interleave(rows // len(self.prompts), 0)  # (rows, K)
        word_maps: dict[tuple[int, int], list[torch.Tensor]] = {}
        for name, maps in attention_maps.items():
            layer = layers[name]
            if not layer.is_cross:
                continue
            if self.resolutions is not None and not layer.matches(self.resolutions, latent_shape):
                continue
            height, width = layer.map_shape(latent_shape)
            maps = maps.to(latents.device, torch.float32).reshape(rows, height, width, -1)  # (rows, h, w, K)
            word_maps.setdefault((height, width), []).append((maps * word_alphas[:, None, None, :]).sum(-1))
        if not word_maps:
            raise ValueError(f"local blend found no cross-attention maps at resolutions {self.resolutions}")
        mask = torch.zeros(rows, 1, *latent_shape, device=latents.device)
        for grids in word_maps.values():
            grid = torch.stack(grids).mean(0)[:, None]  # (rows, 1, h, w): mean over layers of one resolution
            if self.dilation:
                grid = F.max_pool2d(grid, 2 * self.dilation + 1, stride=1, padding=self.dilation)
            mask += F.interpolate(grid, size=latent_shape) / len(word_maps)  # (rows, 1, H, W), nearest
        mask = mask / mask.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(mask.dtype).tiny)
        return mask > self.threshold

    def __call__(
        self,
        latents: torch.Tensor,
        attention_maps: Mapping[str, torch.Tensor],
        layers: Mapping[str, AttentionLayer],
        step: int,
        num_inference_steps: int,
    ) -> torch.Tensor:
        """The latents (rows, C, H, W) after step `step`, with each edit's pixels outside its mask the source's."""
        if step < int(self.start_blend * num_inference_steps):
            return latents
        prompts = len(self.prompts)
        if latents.shape[0] % prompts:
            raise ValueError(f"{latents.shape[0]} latents are not a multiple of the {prompts} prompts")
        per_prompt = latents.view(prompts, -1, *latents.shape[1:])  # (prompts, n, C, H, W)
        masks = self.get_mask(attention_maps, layers, latents).view(prompts, -1, 1, *latents.shape[-2:])
        alpha = masks[1:] | masks[:1]  # (edits, n, 1, H, W): α = B(M̄_w) ∪ B(M̄*_{w*})
        edits = torch.where(alpha, per_prompt[1:], per_prompt[:1])  # z*_{t-1} ← α ⊙ z*_{t-1} + (1 − α) ⊙ z_{t-1}
        return torch.cat([per_prompt[:1], edits]).view_as(latents)


class AttentionControlEdit(AttentionStore):
    r"""Base of the edits: injects the source's maps into the edited prompts' attention (Hertz et al. 2022, §3.2).

    Cross-attention: at a step t where `cross_replace_steps` injects, M̂_t = `replace_cross_attention(M_t, M*_t)`
    (per token: tokens outside the injected steps keep M*_t). Self-attention: at a step in `self_replace_steps`, on
    layers whose map is at most `self_replace_max_resolution`, the edits use the source's self-attention maps.
    The maps stored for `LocalBlend` (and `store_cross_attention`) are each row's own, before the edit, as in the
    paper's code.

    Args:
        prompts (`Sequence[str]`): the source prompt, then one or more edited prompts.
        tokenizer: the pipeline's tokenizer (K = `tokenizer.model_max_length`, the length diffusers pads to).
        num_inference_steps (`int`): the pipeline's number of steps; fractions of steps are counted on it.
        cross_replace_steps (`float`, `(start, end)` or `dict`, defaults to 0.8): fraction of the steps, from the
            first, that inject the source's cross-attention maps; a dict gives a fraction per word of the edited
            prompts, `"default_"` for the other tokens, e.g. `{"default_": 0.8, "blue": 0.4}`.
        self_replace_steps (`float` or `(start, end)`, defaults to 0.4): fraction of the steps, from the first, that
            inject the source's self-attention maps.
        local_blend (`LocalBlend`, *optional*): keep the source's latents outside the edited words' mask.
        self_replace_max_resolution (`int` or `(h, w)`, *optional*, defaults to 16): self-attention is injected on
            layers whose map's shorter side (at the registered latent shape) is at most this; the paper's 16 is
            16×16 at 64×64 latents. `None` for every layer.
        store_cross_attention (`bool`, defaults to `False`): keep the cross-attention maps for `aggregate` even
            without a local blend.
        do_classifier_free_guidance, store_device, store_dtype: see `AttentionStore`.
    """

    def __init__(
        self,
        prompts: Sequence[str],
        tokenizer,
        num_inference_steps: int,
        cross_replace_steps: StepFraction | Mapping[str, StepFraction] = 0.8,
        self_replace_steps: StepFraction = 0.4,
        local_blend: LocalBlend | None = None,
        self_replace_max_resolution: Resolution | None = 16,
        store_cross_attention: bool = False,
        do_classifier_free_guidance: bool = True,
        store_device: torch.device | str | None = None,
        store_dtype: torch.dtype | None = None,
    ):
        self.prompts = _check_prompts(prompts)
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
        if local_blend is not None and local_blend.prompts != self.prompts:
            raise ValueError(f"the local blend's prompts {local_blend.prompts} are not the controller's {self.prompts}")
        self.num_tokens = num_tokens(tokenizer)
        self.num_inference_steps = num_inference_steps
        self.cross_replace_alphas = cross_replace_alphas(prompts, tokenizer, num_inference_steps, cross_replace_steps)
        self.self_replace_range = _step_range(self_replace_steps, num_inference_steps, "self_replace_steps")
        self.self_replace_max_resolution = self_replace_max_resolution
        self.local_blend = local_blend
        super().__init__(
            store_cross=local_blend is not None or store_cross_attention,
            store_self=False,
            store_device=store_device,
            store_dtype=store_dtype,
            do_classifier_free_guidance=do_classifier_free_guidance,
        )

    def replace_cross_attention(self, source: torch.Tensor, edits: torch.Tensor) -> torch.Tensor:
        """The edits' cross-attention maps at an injected step: source M_t (n, heads, Q, K) and edits' own M*_t
        (edits, n, heads, Q, K) → M̂_t (edits, n, heads, Q, K)."""
        raise NotImplementedError

    def self_replaces(self, layer: AttentionLayer) -> bool:
        """Whether `layer` is a self-attention layer small enough for `self_replace_steps` to inject."""
        start, end = self.self_replace_range
        limit = self.self_replace_max_resolution
        if layer.is_cross or start >= end:
            return False
        if limit is None:
            return True
        if isinstance(limit, (tuple, list)):
            return layer.resolution[0] <= limit[0] and layer.resolution[1] <= limit[1]
        return min(layer.resolution) <= limit

    def needs_layer(self, layer: AttentionLayer) -> bool:
        return layer.is_cross or self.self_replaces(layer)

    def check_step(self):
        if self.cur_step >= self.num_inference_steps:
            raise RuntimeError(
                f"{type(self).__name__} ran past its {self.num_inference_steps} steps: call controller.reset() "
                "before each generation, with num_inference_steps as the pipeline's"
            )

    def enter_layer(self, layer_name: str):
        self.check_step()
        super().enter_layer(layer_name)

    def is_active(self, layer_name: str, is_cross: bool) -> bool:
        if is_cross:
            return self.store_cross or bool(self.cross_replace_alphas[self.cur_step].any())
        start, end = self.self_replace_range
        layer = self.layers.get(layer_name)
        return start <= self.cur_step < end and layer is not None and self.self_replaces(layer)

    def forward(self, attention_probs: torch.Tensor, is_cross: bool, layer_name: str) -> torch.Tensor:
        self.check_step()
        attention_probs = super().forward(attention_probs, is_cross, layer_name)  # stores the rows' own maps
        rows, heads, queries, keys = attention_probs.shape
        prompts = len(self.prompts)
        if rows % prompts:
            raise ValueError(f"{rows} conditional rows are not a multiple of the {prompts} prompts")
        per_prompt = attention_probs.view(prompts, rows // prompts, heads, queries, keys)  # (prompts, n, heads, Q, K)
        source, edits = per_prompt[0], per_prompt[1:]  # M_t (n, heads, Q, K), M*_t (edits, n, heads, Q, K)
        if is_cross:
            if keys != self.num_tokens:
                raise ValueError(f"cross-attention over {keys} tokens, but the tokenizer pads to {self.num_tokens}")
            alphas = self.cross_replace_alphas[self.cur_step].to(attention_probs.device)  # (edits, K)
            if not alphas.any():
                return attention_probs
            # M̂_t = Edit(M_t, M*_t, t): the injected maps where the schedule says so, per token, else M*_t
            edits = torch.where(alphas[:, None, None, None, :], self.replace_cross_attention(source, edits), edits)
        elif self.is_active(layer_name, is_cross):
            edits = source.expand_as(edits)  # self-attention injection: the edits take the source's maps
        else:
            return attention_probs
        return torch.cat([source[None], edits]).reshape(rows, heads, queries, keys)  # (rows, heads, Q, K)

    def check_pipeline(self, pipe):
        super().check_pipeline(pipe)
        steps = getattr(pipe, "num_timesteps", None)
        if isinstance(steps, int) and steps != self.num_inference_steps:
            raise ValueError(
                f"the pipeline runs {steps} steps but {type(self).__name__} was built with "
                f"num_inference_steps={self.num_inference_steps}"
            )

    def blend_latents(self, latents: torch.Tensor | None) -> torch.Tensor | None:
        if self.local_blend is None:
            return latents
        if latents is None:
            raise ValueError("LocalBlend needs 'latents' in the pipeline's callback_on_step_end_tensor_inputs")
        return self.local_blend(latents, self.attention_store, self.layers, self.cur_step, self.num_inference_steps)


class AttentionReplace(AttentionControlEdit):
    r"""Word swap (Hertz et al. 2022, §3.2): M̂_t = M_t at the injected steps (the early ones), M*_t after.

    The prompts must have the same number of tokens ("a red circle" → "a blue circle"); token j of an edit takes the
    source's map of token j. Use `AttentionRefine` when words are added. Arguments as `AttentionControlEdit`.
    """

    def __init__(self, prompts: Sequence[str], tokenizer, num_inference_steps: int, **kwargs):
        super().__init__(prompts, tokenizer, num_inference_steps, **kwargs)
        _check_same_token_count(self.prompts, tokenizer, type(self).__name__)

    def replace_cross_attention(self, source: torch.Tensor, edits: torch.Tensor) -> torch.Tensor:
        return source.expand_as(edits)  # (edits, n, heads, Q, K)


class AttentionRefine(AttentionControlEdit):
    r"""Adding words (Hertz et al. 2022, §3.2): (M̂_t)_{i,j} = (M_t)_{i,A(j)} for a target token j aligned with source
    token A(j), (M*_t)_{i,j} for a token the edit adds (A(j) = None), A from a global alignment of the prompts' token
    ids (`align_tokens`). E.g. "a circle" → "a red circle". Arguments as `AttentionControlEdit`.
    """

    def __init__(self, prompts: Sequence[str], tokenizer, num_inference_steps: int, **kwargs):
        super().__init__(prompts, tokenizer, num_inference_steps, **kwargs)
        maps = [refinement_mapper(self.prompts[0], prompt, tokenizer) for prompt in self.prompts[1:]]
        self.mapper = torch.stack([mapper for mapper, _ in maps])  # (edits, K): A(j)
        self.aligned = torch.stack([aligned for _, aligned in maps])  # (edits, K): A(j) is not None

    def replace_cross_attention(self, source: torch.Tensor, edits: torch.Tensor) -> torch.Tensor:
        mapped = source[..., self.mapper.to(source.device)]  # (n, heads, Q, edits, K): (M_t)_{i,A(j)}
        mapped = mapped.permute(3, 0, 1, 2, 4)  # (edits, n, heads, Q, K)
        return torch.where(self.aligned.to(source.device)[:, None, None, None, :], mapped, edits)


class AttentionReweight(AttentionControlEdit):
    r"""Attention re-weighting (Hertz et al. 2022, §3.2): (M̂_t)_{i,j} = c_j · (M_t)_{i,j}, c_j the `equalizer`'s scale
    of the word at token j (1 elsewhere); no renormalisation, as in the paper.

    With `prev_controller` (an `AttentionRefine` or `AttentionReplace` on the same prompts) the scaled maps are that
    edit's M̂_t instead of M_t, so a refinement and a re-weighting compose as in the paper's code; the schedule
    (`cross_replace_steps`, `self_replace_steps`) and `local_blend` are this controller's.

    Args:
        prompts, tokenizer, num_inference_steps: as `AttentionControlEdit`.
        equalizer (`Mapping[str, float]`): word → scale c, e.g. `{"red": 2.0}`; every word must be in every edited
            prompt.
        prev_controller (`AttentionControlEdit`, *optional*): the edit whose maps are re-weighted.
        **kwargs: as `AttentionControlEdit`.
    """

    def __init__(
        self,
        prompts: Sequence[str],
        tokenizer,
        num_inference_steps: int,
        equalizer: Mapping[str, float],
        prev_controller: AttentionControlEdit | None = None,
        **kwargs,
    ):
        super().__init__(prompts, tokenizer, num_inference_steps, **kwargs)
        if prev_controller is None:
            _check_same_token_count(self.prompts, tokenizer, type(self).__name__ + " without prev_controller")
        elif not isinstance(prev_controller, AttentionControlEdit) or prev_controller.prompts != self.prompts:
            raise ValueError(
                f"prev_controller must be an edit of the same prompts {self.prompts}, got {prev_controller!r}"
            )
        self.prev_controller = prev_controller
        self.equalizer = torch.ones(len(self.prompts) - 1, self.num_tokens)  # (edits, K): c_j
        for word, scale in dict(equalizer).items():
            for edit, prompt in enumerate(self.prompts[1:]):
                indices = word_token_indices(prompt, word, tokenizer)
                if not indices:
                    raise ValueError(f"equalizer word {word!r} is not in the edited prompt {prompt!r}")
                self.equalizer[edit, indices] = float(scale)

    def replace_cross_attention(self, source: torch.Tensor, edits: torch.Tensor) -> torch.Tensor:
        if self.prev_controller is None:
            base = source.expand_as(edits)
        else:
            base = self.prev_controller.replace_cross_attention(source, edits)
        return base * self.equalizer.to(base)[:, None, None, None, :]  # (edits, n, heads, Q, K)
