"""Models: ModelMixin + ConfigMixin classes, one file per family."""

from .autoencoder import AutoencoderLossOutput, AutoencoderModel, AutoencoderOutput
from .gan import DCGANDiscriminator, DCGANGenerator, MinibatchStd, discriminator_loss, generator_loss, r1_penalty
from .instruct_pix2pix import EditPairLatents, encode_edit_pair, widen_conv_in
from .vae import DiagonalGaussian, VAELossOutput, VAEModel
from .vq import GumbelQuantizer, QuantizerOutput, VectorQuantizer, nearest_codes
from .vqvae import VQVAELossOutput, VQVAEModel

__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "MinibatchStd",
    "discriminator_loss",
    "generator_loss",
    "r1_penalty",
    "AutoencoderModel",
    "AutoencoderOutput",
    "AutoencoderLossOutput",
    "VAEModel",
    "VAELossOutput",
    "DiagonalGaussian",
    "VectorQuantizer",
    "GumbelQuantizer",
    "QuantizerOutput",
    "nearest_codes",
    "VQVAEModel",
    "VQVAELossOutput",
]
__all__ += ["EditPairLatents", "encode_edit_pair", "widen_conv_in"]
