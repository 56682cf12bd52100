"""The attention processor that serves every prompt-to-prompt controller, and its installation on a UNet.

Prompt-to-prompt (Hertz et al. 2022, arXiv:2208.01626; ../shared/EQUATIONS.md, "Prompt-to-prompt") edits the
attention maps M = Softmax(QKᵀ/√d) of a UNet (§3.1 of the paper) while it denoises. Here that is done with diffusers'
own mechanism, `unet.set_attn_processor({layer name: processor})`: one `PromptToPromptAttnProcessor` per layer that
a controller stores or edits, diffusers' `AttnProcessor2_0` everywhere else. No class is patched.

A layer is placed by the UNet's structure, never by its index in a list: its *downsampling factor* f (latent side /
map side) follows from the down/up-samplers of the blocks before it, and its *resolution* is the map it computes at a
latent shape (H, W): (⌈H/f⌉, ⌈W/f⌉), e.g. 16×16 for f = 4 at Stable Diffusion's 64×64 latents and 16×24 at 64×96.
Nothing assumes square maps, a number of heads or a number of tokens.

Notation (shape comments): B = rows of the UNet batch (2 × prompts × images per prompt under classifier-free
guidance), heads = attention heads, Q = query length (h·w pixels of the layer's map), K = key length (tokens for
cross-attention, pixels for self-attention), d = head dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

if TYPE_CHECKING:  # the controllers import this module, not the other way round
    from .prompt_to_prompt import AttentionControl

Resolution = int | tuple[int, int]


@dataclass(frozen=True)
class AttentionLayer:
    """One attention layer of a UNet, as prompt-to-prompt sees it.

    Args:
        name (`str`): module path, e.g. `"down_blocks.1.attentions.0.transformer_blocks.0.attn2"`; the key of its
            processor in `unet.attn_processors` is `name + ".processor"`.
        place_in_unet (`"down"`, `"mid"` or `"up"`): the part of the UNet it is in.
        is_cross (`bool`): cross-attention (keys and values from the text) or self-attention.
        downsample_factor (`int`): latent side / map side (1, 2, 4, ...).
        resolution (`tuple[int, int]`): its map (h, w) at the latent shape given to `register_attention_control`.
    """

    name: str
    place_in_unet: Literal["down", "mid", "up"]
    is_cross: bool
    downsample_factor: int
    resolution: tuple[int, int]

    def map_shape(self, latent_shape: Sequence[int]) -> tuple[int, int]:
        """The layer's map (h, w) for latents of spatial shape (H, W)."""
        return _map_shape(latent_shape, self.downsample_factor)

    def matches(self, resolutions: Sequence[Resolution], latent_shape: Sequence[int] | None = None) -> bool:
        """Whether the layer's map is one of `resolutions`: an int r matches a map whose shorter side is r (r×r for
        square latents), a pair (h, w) matches exactly. The map is `resolution`, or the one at `latent_shape`."""
        shape = self.resolution if latent_shape is None else self.map_shape(latent_shape)
        return any(shape == tuple(r) if isinstance(r, (tuple, list)) else min(shape) == r for r in resolutions)


def _map_shape(latent_shape: Sequence[int], downsample_factor: int) -> tuple[int, int]:
    """(⌈H/f⌉, ⌈W/f⌉): each stride-2 downsampler of a UNet maps a side s to ⌈s/2⌉."""
    height, width = int(latent_shape[0]), int(latent_shape[1])
    for _ in range(int(math.log2(downsample_factor))):
        height, width = -(-height // 2), -(-width // 2)
    return height, width


def _latent_shape(unet, latent_shape: Resolution | None) -> tuple[int, int]:
    size = unet.config.sample_size if latent_shape is None else latent_shape
    if isinstance(size, int):
        return size, size
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"`latent_shape` must be an int or a pair (H, W) of positive ints, got {size!r}")


def attention_layers(unet, latent_shape: Resolution | None = None) -> dict[str, AttentionLayer]:
    """Every attention layer of a UNet with `down_blocks`, `mid_block` and `up_blocks` (diffusers'
    `UNet2DConditionModel` and its relatives), keyed by module name, in `unet.attn_processors` order.

    Args:
        unet: the UNet.
        latent_shape (`int` or `(H, W)`, *optional*): latent spatial shape at which `AttentionLayer.resolution` is
            counted; defaults to `unet.config.sample_size`, the size diffusers' pipelines generate by default.
    """
    latent_shape = _latent_shape(unet, latent_shape)
    # The factor of each block follows from the samplers before it: down blocks halve at their end, up blocks double.
    factor, down_factors, up_factors = 1, [], []
    for block in unet.down_blocks:
        down_factors.append(factor)
        factor *= 2 if getattr(block, "downsamplers", None) is not None else 1
    mid_factor = factor
    for block in unet.up_blocks:
        up_factors.append(factor)
        factor //= 2 if getattr(block, "upsamplers", None) is not None else 1

    layers = {}
    for key in unet.attn_processors:
        name = key.removesuffix(".processor")
        parts = name.split(".")
        if parts[0] == "down_blocks":
            place, factor = "down", down_factors[int(parts[1])]
        elif parts[0] == "mid_block":
            place, factor = "mid", mid_factor
        elif parts[0] == "up_blocks":
            place, factor = "up", up_factors[int(parts[1])]
        else:
            raise ValueError(f"attention layer {name!r} is not in down_blocks, mid_block or up_blocks; cannot place it")
        is_cross = bool(getattr(unet.get_submodule(name), "is_cross_attention", False))
        layers[name] = AttentionLayer(name, place, is_cross, factor, _map_shape(latent_shape, factor))
    return layers


def register_attention_control(
    unet,
    controller: AttentionControl,
    resolutions: Sequence[Resolution] | None = None,
    latent_shape: Resolution | None = None,
) -> dict[str, AttentionLayer]:
    """Install `controller` on the attention layers it stores or edits, and diffusers' `AttnProcessor2_0` elsewhere,
    with `unet.set_attn_processor({...})`. `unet.set_attn_processor(AttnProcessor2_0())` undoes it.

    The controller is reset. Pass `callback_on_step_end=controller.step_callback` to the pipeline that runs `unet`:
    the callback advances the controller's step (see `AttentionControl`).

    Args:
        unet: a UNet with cross-attention, e.g. diffusers' `UNet2DConditionModel`.
        controller (`AttentionControl`): an `AttentionStore`, `AttentionReplace`, `AttentionRefine`,
            `AttentionReweight` or `EmptyControl`.
        resolutions (`Sequence[int | tuple[int, int]]`, *optional*): install only on layers whose map has one of these
            resolutions in latent pixels at `latent_shape` (an int r: shorter side r; a pair: exactly (h, w)), e.g.
            `(8, 16)` to bound the memory of an `AttentionStore`. Defaults to every layer the controller needs.
        latent_shape (`int` or `(H, W)`, *optional*): latent shape at which `resolutions` are counted; defaults to
            `unet.config.sample_size`. Generating at another size keeps the same layers; their maps scale with it.

    Returns:
        `dict[str, AttentionLayer]`: the layers the controller was installed on.

    Raises:
        `ValueError`: the UNet has no cross-attention; a resolution matches no layer; the controller matches no layer.
    """
    layers = attention_layers(unet, latent_shape)
    if not any(layer.is_cross for layer in layers.values()):
        raise ValueError(f"{type(unet).__name__} has no cross-attention layer; prompt-to-prompt edits cross-attention")
    if resolutions is not None:
        resolutions = tuple(resolutions)
        available = sorted({layer.resolution for layer in layers.values()})
        for resolution in resolutions:
            if not any(layer.matches([resolution]) for layer in layers.values()):
                raise ValueError(
                    f"resolution {resolution!r} matches no attention layer; at latent shape "
                    f"{_latent_shape(unet, latent_shape)} the layers' maps are {available}"
                )
    selected = {
        name: layer
        for name, layer in layers.items()
        if controller.needs_layer(layer) and (resolutions is None or layer.matches(resolutions))
    }
    if not selected:
        raise ValueError(
            f"{type(controller).__name__} matches no attention layer of the UNet"
            + (f" at resolutions {resolutions}" if resolutions is not None else "")
        )
    controller.layers = selected
    controller.reset()
    processors = {
        f"{name}.processor": (
            PromptToPromptAttnProcessor(controller, layer.place_in_unet, name)
            if name in selected
            else AttnProcessor2_0()
        )
        for name, layer in layers.items()
    }
    unet.set_attn_processor(processors)
    return selected


class PromptToPromptAttnProcessor:
    r"""Attention processor that hands a layer's attention maps to a prompt-to-prompt controller.

    It computes what diffusers' `AttnProcessor2_0` computes. At a step where the controller stores or edits this
    layer, the attention maps M = Softmax(QKᵀ/√d) (Hertz et al. 2022, §3.1) are materialised, passed to the
    controller and the (possibly edited) maps M̂ give the output M̂V; otherwise the layer runs
    `F.scaled_dot_product_attention` and the maps are never formed.

    Args:
        controller (`AttentionControl`): the controller; called as
            `controller(attention_probs, is_cross, place_in_unet, layer_name)` with maps of shape (B, heads, Q, K).
        place_in_unet (`"down"`, `"mid"` or `"up"`): where the layer is.
        layer_name (`str`): the layer's module name, the key the controller knows it by.
    """

    def __init__(self, controller: AttentionControl, place_in_unet: str, layer_name: str):
        self.controller = controller
        self.place_in_unet = place_in_unet
        self.layer_name = layer_name

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        is_cross = encoder_hidden_states is not None
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)  # (B, Q, C)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            # (B, heads, 1 or Q, K), as scaled_dot_product_attention expects
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)  # (B, Q, heads·d)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)  # (B, K, heads·d)
        value = attn.to_v(encoder_hidden_states)  # (B, K, heads·d)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, Q, d)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, K, d)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, K, d)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        self.controller.enter_layer(self.layer_name)
        if self.controller.is_active(self.layer_name, is_cross):
            # M = Softmax(QKᵀ/√d) (Hertz et al. 2022, §3.1), then the controller's edit M̂ = Edit(M, M*, t) (§3.2)
            attention_probs = attention_probabilities(attn, query, key, attention_mask)  # (B, heads, Q, K)
            attention_probs = self.controller(attention_probs, is_cross, self.place_in_unet, self.layer_name)
            hidden_states = attention_probs.to(value.dtype) @ value  # (B, heads, Q, d)
        else:
            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False, scale=attn.scale
            )  # (B, heads, Q, d)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)  # (B, Q, heads·d)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)  # linear projection
        hidden_states = attn.to_out[1](hidden_states)  # dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)  # (B, C, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def attention_probabilities(
    attn: Attention, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """M = Softmax(QKᵀ · scale + mask) for query (B, heads, Q, d) and key (B, heads, K, d): (B, heads, Q, K), in the
    query's dtype, honouring the layer's `scale`, `upcast_attention` and `upcast_softmax` as diffusers'
    `Attention.get_attention_scores` does."""
    dtype = query.dtype
    if attn.upcast_attention:
        query, key = query.float(), key.float()
    scores = (query @ key.transpose(-1, -2)) * attn.scale  # (B, heads, Q, K)
    if attention_mask is not None:
        scores = scores + attention_mask
    if attn.upcast_softmax:
        scores = scores.float()
    return scores.softmax(dim=-1).to(dtype)
