"""FID on the features of a domain classifier, and the class histogram of samples under it.

Inception weights cannot be downloaded on our machines, so sample quality on MNIST and the shapes world is measured
with a small CNN classifier trained by our own code on the real data (`training_scripts/train_domain_classifier.py`,
seeded: the same command gives the same weights). The Fréchet distance is torchmetrics' `FrechetInceptionDistance`
with that classifier's penultimate features as the custom feature extractor (Heusel et al. 2017):

    FID = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2})

Numbers on these features are not comparable with Inception FIDs in papers; always report the real-vs-real floor
(two disjoint halves of real data) beside them.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from ..models.modeling_utils import GenZooModelMixin


class DomainClassifier(GenZooModelMixin, ConfigMixin):
    r"""
    A small CNN classifier whose penultimate layer gives the features of the domain FID.

    conv(3×3) → GroupNorm → SiLU blocks, halving the resolution at each of `block_out_channels`, global average
    pooling, a `feature_dim` layer (the features), and the class logits.

    Parameters:
        in_channels (`int`, defaults to 1): image channels.
        num_classes (`int`, defaults to 10): classes of the labels it is trained on.
        sample_size (`int`, defaults to 28): the resolution it was trained at; other sizes are refused.
        block_out_channels (`tuple[int]`, defaults to `(32, 64, 128)`): widths of the stages.
        feature_dim (`int`, defaults to 128): size of the feature vector.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        sample_size: int = 28,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        feature_dim: int = 128,
    ):
        super().__init__()
        layers, channels = [], in_channels
        for width in block_out_channels:
            layers += [
                nn.Conv2d(channels, width, 3, padding=1),
                nn.GroupNorm(min(8, width), width),
                nn.SiLU(),
                nn.Conv2d(width, width, 3, stride=2, padding=1),
                nn.SiLU(),
            ]
            channels = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature = nn.Sequential(nn.Linear(channels, feature_dim), nn.SiLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def check_images(self, images: torch.Tensor) -> None:
        expected = (self.config.in_channels, self.config.sample_size, self.config.sample_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"the domain classifier takes images (B, {expected[0]}, {expected[1]}, {expected[2]}) in [-1, 1], "
                f"got shape {tuple(images.shape)}"
            )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] → (B, feature_dim)."""
        self.check_images(images)
        return self.feature(self.body(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] → class logits (B, num_classes)."""
        return self.head(self.features(images))


class _FeatureExtractor(nn.Module):
    """Adapter for torchmetrics: takes float images in [0, 1] (its `normalize=True` convention), gives features."""

    def __init__(self, classifier: DomainClassifier):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.config.feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images.to(self.classifier.dtype) * 2 - 1).double()


@torch.no_grad()
def domain_fid(classifier: DomainClassifier, real: torch.Tensor, generated: torch.Tensor, batch_size: int = 256) -> float:
    """FID between `real` and `generated` images (N, C, H, W) in [-1, 1] on `classifier`'s features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    for name, images in (("real", real), ("generated", generated)):
        classifier.check_images(images)
        if len(images) < 2:
            raise ValueError(f"FID needs at least 2 {name} images, got {len(images)}")
    classifier.eval()
    fid = FrechetInceptionDistance(feature=_FeatureExtractor(classifier), normalize=True)
    for images, is_real in ((real, True), (generated, False)):
        for batch in images.split(batch_size):
            fid.update(((batch.float().clamp(-1, 1) + 1) / 2).to(classifier.device), real=is_real)
    return float(fid.compute())


@torch.no_grad()
def class_predictions(classifier: DomainClassifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The class the classifier assigns to each of `images` (N, C, H, W) in [-1, 1]: (N,) int64."""
    classifier.eval()
    return torch.cat([
        classifier(batch.to(classifier.device, classifier.dtype)).argmax(-1).cpu() for batch in images.split(batch_size)
    ])


def class_histogram(classifier: DomainClassifier, images: torch.Tensor, batch_size: int = 256) -> list[int]:
    """How many of `images` (N, C, H, W) in [-1, 1] the classifier assigns to each class."""
    return torch.bincount(class_predictions(classifier, images, batch_size), minlength=classifier.config.num_classes).tolist()
