"""What a run shows while it evaluates (stages, their times), the sizes a short run evaluates at, and the grids
people look at (enlarged by nearest neighbour, rows labelled)."""

import logging

import numpy as np
import pytest
import torch

from hf_genzoo import VAEModel
from hf_genzoo.metrics.evaluate import EvaluationProgress, evaluate_autoencoder
from hf_genzoo.metrics.likelihood import iwae_bound, vae_elbo
from hf_genzoo.models import DiagonalGaussian
from hf_genzoo.training_utils import run_summary, scaled_to_run
from hf_genzoo.utils import enlarged_grid, image_grid


def tiny_vae():
    torch.manual_seed(0)
    return VAEModel(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=16, latent_channels=2, latent_type="vector")


def test_evaluation_logs_each_stage_and_the_iwae_bound_can_take_the_first_images(caplog):
    model, images = tiny_vae(), torch.rand(6, 3, 16, 16) * 2 - 1
    progress = EvaluationProgress(desc="evaluation")
    with caplog.at_level(logging.INFO, logger="hf_genzoo.metrics.evaluate"):
        metrics = evaluate_autoencoder(model, images, iwae_samples=3, iwae_images=4, progress=progress)
    assert progress.close() == pytest.approx(sum(progress.seconds.values())) and list(progress.seconds) == ["reconstruction, ELBO, IWAE"]
    assert [r.getMessage().split(" took ")[0] for r in caplog.records] == ["evaluation: reconstruction, ELBO, IWAE"]
    # the same draws by hand: the ELBO of all six images, then k = 3 importance samples of the first four
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        posterior = model.encode(images).latent_dist
        elbo = vae_elbo(model, images, generator, posterior=posterior)
        iwae = iwae_bound(model, images[:4], 3, generator, posterior=DiagonalGaussian(posterior.mean[:4], posterior.logvar[:4]))
    assert metrics["elbo_nats"] == pytest.approx(elbo.mean().item(), rel=1e-5)
    assert metrics["iwae_nats"] == pytest.approx(iwae.mean().item(), rel=1e-5) and metrics["iwae_images"] == 4
    # without iwae_images every image counts, and a silent progress (the default) logs nothing
    caplog.clear()
    assert "iwae_images" not in evaluate_autoencoder(model, images, iwae_samples=3) and not caplog.records


def test_a_short_run_evaluates_in_proportion():
    assert [scaled_to_run(1000, steps) for steps in (6, 60, 500, 1000, 20_000)] == [100, 100, 500, 1000, 1000]
    assert scaled_to_run(32, 6) == 32  # never more than there is, never fewer than 100 when there is more
    summary = run_summary("out", {"mse": 0.012345, "elbo_nats": -30.0, "dead_codes": 3}, ("mse", "elbo_nats", "psnr", "dead_codes"), {"training": 24.2, "evaluation": 8.9})
    assert summary.splitlines()[1:] == ["measured: mse 0.01235, elbo_nats -30, dead_codes 3", "time: training 24 s, evaluation 9 s"]
    assert summary.splitlines()[0].startswith("saved to /") and summary.splitlines()[0].endswith("/out")


def test_grids_are_enlarged_by_nearest_neighbour_with_labelled_rows():
    images = torch.rand(16, 3, 32, 32) * 2 - 1
    plain = np.asarray(image_grid(images, nrow=8))
    picture = np.asarray(enlarged_grid(images, nrow=8, row_labels=["held-out images", "reconstructions"]))
    width = plain.shape[1] * 4  # 32-pixel images → 128-pixel tiles
    assert picture.shape[0] == plain.shape[0] * 4 and picture.shape[1] > width
    np.testing.assert_array_equal(picture[:, -width:], plain.repeat(4, 0).repeat(4, 1))
    labels = picture[:, :-width]
    assert labels.min() < 100 and (labels[: picture.shape[0] // 2] < 100).any() and (labels[picture.shape[0] // 2 :] < 100).any()
    with pytest.raises(ValueError, match="row_labels: 3 labels for 2 rows"):
        image_grid(images, nrow=8, row_labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="scale must be a positive integer, got 0"):
        image_grid(images, scale=0)
