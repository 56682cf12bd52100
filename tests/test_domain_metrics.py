"""Domain-classifier FID (torchmetrics with our features) against the Fréchet distance written out, the class
histogram, and the classifier's training script."""

import json
from pathlib import Path

import pytest
import torch

from hf_genzoo.metrics import DomainClassifier, class_histogram, domain_fid
from scripts import load_script



def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}) in float64 (Heusel et al. 2017)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    sqrt_trace = torch.linalg.eigvals(cov_a @ cov_b).real.clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * sqrt_trace)


@pytest.fixture
def classifier():
    torch.manual_seed(0)
    return DomainClassifier(in_channels=1, num_classes=4, sample_size=8, block_out_channels=(8, 16), feature_dim=6)


def test_fid_is_the_frechet_distance_of_the_classifier_features(classifier):
    g = torch.Generator().manual_seed(0)
    real = torch.rand(300, 1, 8, 8, generator=g) * 2 - 1
    fake = (torch.rand(200, 1, 8, 8, generator=g) * 2 - 1) * 0.5 + 0.3
    with torch.no_grad():
        expected = frechet_distance(classifier.features(real), classifier.features(fake))
    assert expected > 0
    assert domain_fid(classifier, real, fake, batch_size=64) == pytest.approx(expected, rel=1e-4, abs=1e-8)
    assert domain_fid(classifier, real, real) == pytest.approx(0.0, abs=1e-8)


def test_wrong_image_shape_names_the_expected_shape(classifier):
    with pytest.raises(ValueError, match=r"takes images \(B, 1, 8, 8\) in \[-1, 1\], got shape \(4, 3, 8, 8\)"):
        domain_fid(classifier, torch.zeros(4, 3, 8, 8), torch.zeros(4, 1, 8, 8))
    with pytest.raises(ValueError, match="at least 2 generated images, got 1"):
        domain_fid(classifier, torch.zeros(4, 1, 8, 8), torch.zeros(1, 1, 8, 8))


def test_class_histogram_counts_the_argmax(classifier):
    images = torch.rand(50, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        expected = torch.bincount(classifier(images).argmax(-1), minlength=4).tolist()
    assert class_histogram(classifier, images, batch_size=16) == expected
    assert sum(expected) == 50


def test_classifier_accuracy_is_the_share_assigned_to_the_asked_class(classifier):
    from hf_genzoo.metrics import sample_quality_metrics

    g = torch.Generator().manual_seed(1)
    samples, real = torch.rand(40, 1, 8, 8, generator=g) * 2 - 1, torch.rand(40, 1, 8, 8, generator=g) * 2 - 1
    with torch.no_grad():
        predicted = classifier(samples).argmax(-1)
    labels = predicted.clone()
    labels[:10] = (labels[:10] + 1) % 4  # a quarter asked for another class than the one they show
    metrics = sample_quality_metrics(samples, labels, fid_classifier=classifier, real_images=real)
    assert metrics["classifier_accuracy"] == pytest.approx(0.75)
    assert metrics["class_histogram"] == torch.bincount(predicted, minlength=4).tolist()
    # samples of another size than the classifier's are resized to it, real and generated alike
    big = torch.nn.functional.interpolate(samples, size=(16, 16), mode="nearest")
    big_real = torch.nn.functional.interpolate(real, size=(16, 16), mode="nearest")
    resized = sample_quality_metrics(big, labels, fid_classifier=classifier, real_images=big_real)
    assert resized["classifier_accuracy"] == pytest.approx(0.75, abs=0.1)
    with pytest.raises(ValueError, match="got 40 samples and 39 labels"):
        sample_quality_metrics(samples, labels[:39], fid_classifier=classifier, real_images=real)


def test_classifier_script_trains_reproducibly_and_saves_a_loadable_folder(tmp_path):
    script = load_script("train_domain_classifier")
    outs = []
    for name in ("a", "b"):
        argv = ["--resolution", "16", "--max_train_samples", "256", "--num_epochs", "2", "--train_batch_size", "64",
                "--block_out_channels", "8", "16", "--feature_dim", "16", "--output_dir", str(tmp_path / name)]
        outs.append(Path(script.main(script.parse_args(argv))))
    metrics = json.loads((outs[0] / "metrics.json").read_text())
    assert metrics["num_classes"] == 21 and 0 <= metrics["test_accuracy"] <= 1
    a, b = (DomainClassifier.from_pretrained(out) for out in outs)
    assert a.config.sample_size == 16 and a.config.in_channels == 3
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name  # same command, same weights
