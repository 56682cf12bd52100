"""What each model family is judged by (../shared/DESIGN.md, "Measured, not claimed")."""

from .disentanglement import discrete_mutual_information, mutual_information_gap
from .domain import DomainClassifier, class_histogram, domain_fid
from .evaluate import (
    encode_means,
    evaluate_autoencoder,
    evaluate_vqvae,
    reading_metrics,
    sample_quality_metrics,
    shapes_conditional_metrics,
    shapes_sample_metrics,
)
from .inception import InceptionFeatureExtractor, frechet_distance, inception_features, inception_fid
from .likelihood import fit_decoder_log_scale, iwae_bound, vae_elbo
from .reconstruction import mse, nats_to_bits_per_dim, psnr

__all__ = [
    "DomainClassifier",
    "InceptionFeatureExtractor",
    "class_histogram",
    "domain_fid",
    "discrete_mutual_information",
    "encode_means",
    "evaluate_autoencoder",
    "evaluate_vqvae",
    "fit_decoder_log_scale",
    "frechet_distance",
    "inception_features",
    "inception_fid",
    "iwae_bound",
    "mse",
    "mutual_information_gap",
    "nats_to_bits_per_dim",
    "psnr",
    "reading_metrics",
    "sample_quality_metrics",
    "shapes_conditional_metrics",
    "shapes_sample_metrics",
    "vae_elbo",
]
