"""Models: ModelMixin + ConfigMixin classes, one file per family."""

from .autoencoder import AutoencoderLossOutput, AutoencoderModel, AutoencoderOutput
from .vae import DiagonalGaussian, VAELossOutput, VAEModel

__all__ = [
    "AutoencoderModel",
    "AutoencoderOutput",
    "AutoencoderLossOutput",
    "VAEModel",
    "VAELossOutput",
    "DiagonalGaussian",
]
