"""VQ-VAE (van den Oord et al. 2017, arXiv:1711.00937): encoder → quantiser → decoder, a drop-in for diffusers'
`VQModel` (`encode(x).latents`, `decode(h, force_not_quantize=False).sample`, `config.scaling_factor`), so it
serves as the `vqvae` of diffusers' `LDMPipeline`.

Training objective (../shared/EQUATIONS.md, "VQ-VAE"), per batch:
    L = ‖x − D(z_q(x))‖² / D_x + ‖sg[z_e(x)] − e‖² + β ‖z_e(x) − sg[e]‖²
with the reconstruction term a mean squared error (the log-likelihood of a fixed-variance Gaussian, up to
constants) and the last two terms the quantiser's (only β · commitment with EMA codebook updates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.autoencoders.vq_model import VQEncoderOutput
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' loader looks it up in this module)
from diffusers.utils import BaseOutput

from .conv import ConvAutoencoderMixin, ConvDecoder, ConvEncoder, check_images, check_latent_config
from .modeling_utils import GenZooModelMixin
from .vq import GumbelQuantizer, QuantizerOutput, VectorQuantizer


@dataclass
class VQVAELossOutput(BaseOutput):
    """loss: reconstruction + quantiser loss; reconstruction: mean squared error per pixel value;
    quantizer_loss, codebook_loss, commitment_loss, perplexity: from the quantiser (see `QuantizerOutput`)."""

    loss: torch.Tensor = None
    reconstruction: torch.Tensor = None
    quantizer_loss: torch.Tensor = None
    codebook_loss: torch.Tensor = None
    commitment_loss: torch.Tensor = None
    perplexity: torch.Tensor = None


class VQVAEModel(GenZooModelMixin, ConfigMixin, ConvAutoencoderMixin):
    r"""
    A convolutional VQ-VAE with a healthy codebook.

    Parameters:
        in_channels / out_channels (`int`, defaults to 3): image channels.
        block_out_channels (`tuple[int]`, defaults to `(32, 64, 128)`): encoder widths; the code grid is the image
            downsampled by `2 ** (len(block_out_channels) - 1)` (8×8 codes for 32×32 images by default).
        layers_per_block (`int`, defaults to 1), norm_num_groups (`int`, defaults to 8): as in `VAEModel`.
        latent_channels (`int`, defaults to 4): channels of the encoder output h = `encode(x).latents`.
        vq_embed_dim (`int`, optional): D, the size of one code; defaults to `latent_channels` (a 1×1 convolution
            maps between them otherwise, as in diffusers' `VQModel`).
        num_vq_embeddings (`int`, defaults to 256): K, the codebook size.
        quantizer (`"vq"` or `"gumbel"`, defaults to `"vq"`): nearest-neighbour VQ, or DALL-E's Gumbel-softmax.
        beta (`float`, defaults to 0.25): the commitment weight β.
        use_ema, ema_decay, kmeans_init, dead_code_steps, cosine, usage_window: `VectorQuantizer`'s options.
        gumbel_temperature, gumbel_kl_weight, gumbel_straight_through: `GumbelQuantizer`'s options.
        sample_size (`int`, defaults to 32): the training resolution.
        scaling_factor (`float`, defaults to 1.0): diffusers' latent scale (`LDMPipeline` divides by it).
    """

    _supports_gradient_checkpointing = False
    decoder_modules = ("post_quant_conv", "decoder")

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        latent_channels: int = 4,
        vq_embed_dim: int | None = None,
        num_vq_embeddings: int = 256,
        quantizer: Literal["vq", "gumbel"] = "vq",
        beta: float = 0.25,
        use_ema: bool = False,
        ema_decay: float = 0.99,
        kmeans_init: bool = False,
        dead_code_steps: int = 0,
        cosine: bool = False,
        usage_window: int = 100,
        gumbel_temperature: float = 1.0,
        gumbel_kl_weight: float = 5e-4,
        gumbel_straight_through: bool = False,
        sample_size: int = 32,
        scaling_factor: float = 1.0,
    ):
        super().__init__()
        check_latent_config("spatial", block_out_channels, sample_size)
        if quantizer not in ("vq", "gumbel"):
            raise ValueError(f"quantizer must be 'vq' or 'gumbel', got {quantizer!r}")
        block_out_channels = tuple(block_out_channels)
        shape_args = dict(
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            latent_type="spatial",
            sample_size=sample_size,
        )
        embed_dim = vq_embed_dim or latent_channels
        self.encoder = ConvEncoder(in_channels, latent_channels, **shape_args)
        self.quant_conv = torch.nn.Conv2d(latent_channels, embed_dim, 1) if embed_dim != latent_channels else torch.nn.Identity()
        if quantizer == "vq":
            self.quantize_layer = VectorQuantizer(
                num_vq_embeddings, embed_dim, beta=beta, use_ema=use_ema, ema_decay=ema_decay, kmeans_init=kmeans_init,
                dead_code_steps=dead_code_steps, cosine=cosine, usage_window=usage_window,
            )
        else:
            self.quantize_layer = GumbelQuantizer(
                num_vq_embeddings, embed_dim, temperature=gumbel_temperature, kl_weight=gumbel_kl_weight,
                straight_through=gumbel_straight_through, usage_window=usage_window,
            )
        self.post_quant_conv = torch.nn.Conv2d(embed_dim, latent_channels, 1) if embed_dim != latent_channels else torch.nn.Identity()
        self.decoder = ConvDecoder(latent_channels, out_channels, **shape_args)

    # ---- diffusers' VQModel interface --------------------------------------------------------------

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> VQEncoderOutput | tuple:
        """x (B, C, H, W) in [-1, 1] → `VQEncoderOutput(latents=h)`: z_e, (B, D, h, w) before quantisation
        (as diffusers' `VQModel.encode`, after its `quant_conv`)."""
        self._check_images(x)
        h = self.quant_conv(self.encoder(x))
        return VQEncoderOutput(latents=h) if return_dict else (h,)

    def quantize(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h → (z_q (B, D, h, w), the quantiser's loss, codes (B, h, w))."""
        out = self._quantize(h)
        return out.quantized, out.loss, out.indices

    def decode(
        self, h: torch.Tensor, force_not_quantize: bool = False, return_dict: bool = True
    ) -> DecoderOutput | tuple:
        """h = z_e (what `encode` returns) → `DecoderOutput(sample=x̂, commit_loss=…)`: quantised first unless
        `force_not_quantize` (then h is taken as z_q already)."""
        self._check_latents(h)
        if force_not_quantize:
            z_q, loss = h, torch.zeros((), device=h.device)
        else:
            out = self._quantize(h)
            z_q, loss = out.quantized, out.loss
        image = self._decode_quantized(z_q)
        if not return_dict:
            return image, loss
        return DecoderOutput(sample=image, commit_loss=loss)

    def forward(
        self, sample: torch.Tensor, return_dict: bool = True, return_loss: bool = False, generator: torch.Generator | None = None
    ):
        """Reconstruct `sample`; with `return_loss=True`, the training loss instead (so a DDP-wrapped model
        all-reduces its gradients). `generator` draws the Gumbel noise of a Gumbel quantiser."""
        if return_loss:
            return self.loss(sample, generator=generator)
        return self.decode(self.encode(sample).latents, return_dict=return_dict)

    # ---- codes ----------------------------------------------------------------------------------------

    @property
    def embed_dim(self) -> int:
        """D, the channels of `encode(x).latents` and of z_q."""
        return self.config.vq_embed_dim or self.config.latent_channels

    @property
    def num_codes(self) -> int:
        return self.config.num_vq_embeddings

    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Images → their codes (B, h, w), long."""
        return self._quantize(self.encode(x).latents).indices

    def indices_to_latents(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w) → z_q (B, D, h, w); a ValueError names K when a code is outside [0, K)."""
        return self.quantize_layer.indices_to_latents(indices)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w) → images (B, C, H, W) in [-1, 1]."""
        return self._decode_quantized(self.indices_to_latents(indices))

    def codebook_health(self) -> dict[str, float]:
        """Usage, perplexity and dead codes over the last `usage_window` training batches."""
        return self.quantize_layer.health.stats()

    # ---- objective -------------------------------------------------------------------------------------

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VQVAELossOutput:
        out = self._quantize(self.encode(x).latents, generator)
        reconstruction = F.mse_loss(self._decode_quantized(out.quantized).float(), x.float())
        return VQVAELossOutput(
            loss=reconstruction + out.loss,
            reconstruction=reconstruction.detach(),
            quantizer_loss=out.loss.detach(),
            codebook_loss=out.codebook_loss,
            commitment_loss=out.commitment_loss,
            perplexity=out.perplexity,
        )

    # ---- helpers -------------------------------------------------------------------------------------

    def _quantize(self, h: torch.Tensor, generator: torch.Generator | None = None) -> QuantizerOutput:
        if isinstance(self.quantize_layer, GumbelQuantizer):
            return self.quantize_layer(h, generator=generator)
        return self.quantize_layer(h)

    def _decode_quantized(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z_q))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(D, h, w) of one z_e / z_q at the training resolution."""
        h = self.config.sample_size // self.scale_factor
        return (self.embed_dim, h, h)

    def _check_images(self, x: torch.Tensor) -> None:
        check_images(x, self.config.in_channels, self.scale_factor, None)

    def _check_latents(self, h: torch.Tensor) -> None:
        c = self.embed_dim
        if h.ndim != 4 or h.shape[1] != c:
            raise ValueError(f"expected latents of shape (batch, {c}, h, w), got {tuple(h.shape)}")
