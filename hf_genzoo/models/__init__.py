"""Models: ModelMixin + ConfigMixin classes, one file per family."""

from .autoencoder import AutoencoderLossOutput, AutoencoderModel, AutoencoderOutput
from .gan import DCGANDiscriminator, DCGANGenerator, discriminator_loss, generator_loss, r1_penalty
from .vae import DiagonalGaussian, VAELossOutput, VAEModel

__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "discriminator_loss",
    "generator_loss",
    "r1_penalty",
    "AutoencoderModel",
    "AutoencoderOutput",
    "AutoencoderLossOutput",
    "VAEModel",
    "VAELossOutput",
    "DiagonalGaussian",
]
