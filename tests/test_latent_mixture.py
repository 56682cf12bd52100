"""The latent Gaussian mixture (EM fit, density, sampling) and a VAE that samples from it."""

import json
import math
import re

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from hf_genzoo import AutoencoderModel, AutoencoderPipeline, VAEModel
from hf_genzoo.models.latent_mixture import fit_gaussian_mixture, mixture_log_prob, sample_mixture

WEIGHTS = torch.tensor([0.25, 0.75], dtype=torch.float64)
MEANS = torch.tensor([[-3.0, 0.0], [3.0, 1.0]], dtype=torch.float64)
COVARIANCES = torch.tensor([[[1.0, 0.5], [0.5, 0.29]], [[0.04, 0.0], [0.0, 0.09]]], dtype=torch.float64)


def reference_mixture(weights=WEIGHTS, means=MEANS, covariances=COVARIANCES):
    return MixtureSameFamily(Categorical(probs=weights), MultivariateNormal(means, covariance_matrix=covariances))


def tiny_vae(**config):
    return VAEModel(latent_type="vector", latent_channels=4, block_out_channels=(8, 16), sample_size=16, **config)


def test_em_recovers_a_known_mixture():
    torch.manual_seed(0)
    z = reference_mixture().sample((8000,))
    fit = fit_gaussian_mixture(z, 2, generator=torch.Generator().manual_seed(1))
    order = fit.means[:, 0].argsort()  # components come back in any order
    covariances = fit.scale_tril @ fit.scale_tril.transpose(1, 2)
    torch.testing.assert_close(fit.log_weights[order].exp(), WEIGHTS, atol=0.02, rtol=0)
    torch.testing.assert_close(fit.means[order], MEANS, atol=0.05, rtol=0)
    torch.testing.assert_close(covariances[order], COVARIANCES, atol=0.05, rtol=0)
    # the fitted likelihood is within sampling noise of the true density's
    assert fit.mean_log_likelihood == pytest.approx(reference_mixture().log_prob(z).mean().item(), abs=0.02)


def test_log_prob_matches_torch_distributions():
    z = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    ours = mixture_log_prob(z, WEIGHTS.log(), MEANS, torch.linalg.cholesky(COVARIANCES))
    torch.testing.assert_close(ours, reference_mixture().log_prob(z), rtol=1e-10, atol=1e-10)


def test_samples_have_the_mixture_moments_and_follow_the_generator():
    scale_tril = torch.linalg.cholesky(COVARIANCES)
    draw = lambda seed: sample_mixture(100_000, WEIGHTS.log(), MEANS, scale_tril, torch.Generator().manual_seed(seed))
    samples = draw(0)
    mean = (WEIGHTS[:, None] * MEANS).sum(0)
    second = (WEIGHTS[:, None, None] * (COVARIANCES + MEANS[:, :, None] * MEANS[:, None, :])).sum(0)
    torch.testing.assert_close(samples.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), second - mean[:, None] * mean[None, :], atol=0.05, rtol=0.02)
    assert torch.equal(draw(3), draw(3)) and not torch.equal(draw(3), draw(4))


@pytest.mark.parametrize(
    "z, components, message",
    [
        (torch.randn(10, 2), 11, r"num_components must be between 1 and the number of points \(10\), got 11"),
        (torch.randn(10, 2), 0, r"got 0"),
        (torch.randn(10), 1, r"shape \(num_points, dims\), got \(10,\)"),
        (torch.tensor([[0.0, math.nan], [1.0, 1.0]]), 1, "NaN or Inf"),
    ],
)
def test_fit_rejects_bad_input(z, components, message):
    with pytest.raises(ValueError, match=message):
        fit_gaussian_mixture(z, components)


def test_vae_fits_saves_and_samples_its_latent_mixture(tmp_path):
    vae = tiny_vae(latent_prior="mixture", latent_prior_components=2)
    with pytest.raises(ValueError, match="no fitted latent mixture.*fit_latent_prior.*prior='normal'"):
        vae.sample_prior(2)
    assert vae.sample_prior(3, prior="normal").shape == (3, 4)  # N(0, I) stays available

    latents = torch.cat([torch.randn(400, 4) * 0.1 + 5, torch.randn(400, 4) * 0.1 - 5])
    log_likelihood = vae.fit_latent_prior(latents, generator=torch.Generator().manual_seed(0))
    assert vae.latent_prior_fitted and math.isfinite(log_likelihood)
    samples = vae.sample_prior(4000, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4000, 4)
    assert (samples.mean(1).abs() - 5).abs().max() < 1.0  # every sample sits at one of the two clusters
    assert 0.4 < (samples[:, 0] > 0).float().mean() < 0.6

    vae.save_pretrained(tmp_path / "vae")
    loaded = VAEModel.from_pretrained(tmp_path / "vae")
    assert loaded.latent_prior_fitted
    seeded = lambda model: model.sample_prior(5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(seeded(vae), seeded(loaded))

    pipe = AutoencoderPipeline(model=loaded)
    mixture_images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    normal_images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt", prior="normal").images
    assert mixture_images.shape == normal_images.shape == (2, 3, 16, 16)
    assert not torch.equal(mixture_images, normal_images)


def test_refit_with_another_number_of_components_saves_and_loads(tmp_path):
    vae = tiny_vae(latent_prior="mixture", latent_prior_components=2)
    latents = torch.cat([torch.randn(300, 4) * 0.1 + shift for shift in (-6.0, 0.0, 6.0)])
    vae.fit_latent_prior(latents, generator=torch.Generator().manual_seed(0))
    log_likelihood = vae.fit_latent_prior(latents, generator=torch.Generator().manual_seed(0), num_components=3)
    assert math.isfinite(log_likelihood) and vae.config.latent_prior_components == 3
    assert vae.prior_means.shape == (3, 4) and vae.prior_scale_tril.shape == (3, 4, 4)

    vae.save_pretrained(tmp_path / "vae")
    loaded = VAEModel.from_pretrained(tmp_path / "vae")
    assert loaded.config.latent_prior_components == 3 and loaded.latent_prior_fitted
    seeded = lambda model: model.sample_prior(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(seeded(vae), seeded(loaded))
    with pytest.raises(ValueError, match="num_components must be ≥ 1, got 0"):
        vae.fit_latent_prior(latents, num_components=0)
    assert vae.config.latent_prior_components == 3  # a refused refit changes nothing


def test_latent_mixture_bad_input_names_the_value():
    with pytest.raises(ValueError, match=r"latent_prior must be one of \('normal', 'mixture'\), got 'gmm'"):
        tiny_vae(latent_prior="gmm")
    with pytest.raises(ValueError, match="latent_prior_components must be ≥ 1, got 0"):
        tiny_vae(latent_prior="mixture", latent_prior_components=0)
    with pytest.raises(ValueError, match="build it with latent_prior='mixture'"):
        tiny_vae().fit_latent_prior(torch.randn(10, 4))
    with pytest.raises(ValueError, match="expected latents with 4 values each"):
        tiny_vae(latent_prior="mixture", latent_prior_components=2).fit_latent_prior(torch.randn(10, 3))
    with pytest.raises(ValueError, match=r"prior must be one of \('normal', 'mixture'\), got 'uniform'"):
        tiny_vae().sample_prior(1, prior="uniform")
    with pytest.raises(ValueError, match="up to 256 dimensions"):
        VAEModel(latent_channels=4, sample_size=32, block_out_channels=(8, 16), latent_prior="mixture")
    autoencoder = AutoencoderModel(latent_type="vector", latent_channels=4, block_out_channels=(8, 16), sample_size=16)
    autoencoder.fit_latent_gaussian(torch.randn(10, 4))
    with pytest.raises(ValueError, match="prior='normal' chooses a VAE's latent distribution; this AutoencoderModel"):
        AutoencoderPipeline(model=autoencoder)(batch_size=1, prior="normal")


def test_markov_chain_is_the_decode_reencode_iteration():
    torch.manual_seed(0)
    vae = tiny_vae().eval()
    z = torch.randn(3, 4)
    assert torch.equal(vae.markov_chain(z, 0), z)

    with torch.no_grad():
        expected = z
        for _ in range(2):  # z ← μ(clamp(x̂(z)))
            expected = vae.encode(vae.decode(expected).sample.clamp(-1, 1)).latent_dist.mean
        torch.testing.assert_close(vae.markov_chain(z, 2), expected)

        # posterior="sample" draws z ~ q(z | x̂) at each step, reproducibly under a generator
        generator = torch.Generator().manual_seed(5)
        posterior = vae.encode(vae.decode(z).sample.clamp(-1, 1)).latent_dist
        expected = posterior.sample(generator)
        sampled = vae.markov_chain(z, 1, posterior="sample", generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(sampled, expected)
        assert not torch.allclose(sampled, posterior.mean)

    # the pipeline runs the chain on its prior draws before the final decode
    pipe = AutoencoderPipeline(model=vae)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt", markov_chain_steps=3).images
    with torch.no_grad():
        z0 = vae.sample_prior(2, generator=torch.Generator().manual_seed(0))
        reference = (vae.decode(vae.markov_chain(z0, 3)).sample.clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(images, reference)


def test_markov_chain_bad_input_names_the_value():
    vae = tiny_vae()
    with pytest.raises(ValueError, match=r"num_steps must be an integer ≥ 0, got -1"):
        vae.markov_chain(torch.randn(1, 4), -1)
    with pytest.raises(ValueError, match=r"num_steps must be an integer ≥ 0, got 2.5"):
        vae.markov_chain(torch.randn(1, 4), 2.5)
    with pytest.raises(ValueError, match="posterior must be 'mean' or 'sample', got 'mode'"):
        vae.markov_chain(torch.randn(1, 4), 1, posterior="mode")
    with pytest.raises(ValueError, match=r"expected vector latents of shape \(batch, 4\), got \(1, 3\)"):
        vae.markov_chain(torch.randn(1, 3), 1)
    with pytest.raises(ValueError, match=r"num_steps must be an integer ≥ 0, got -2"):
        AutoencoderPipeline(model=vae)(batch_size=1, markov_chain_steps=-2)
    autoencoder = AutoencoderModel(latent_type="vector", latent_channels=4, block_out_channels=(8, 16), sample_size=16)
    autoencoder.fit_latent_gaussian(torch.randn(10, 4))
    with pytest.raises(ValueError, match="markov_chain_steps=2 re-encodes through a VAE's posterior; this AutoencoderModel"):
        AutoencoderPipeline(model=autoencoder)(batch_size=1, markov_chain_steps=2)


def test_refit_script_judges_each_number_of_components_and_saves_one(tmp_path, capsys):
    from scripts import load_script

    refit = load_script("refit_latent_prior")
    vae = tiny_vae(latent_prior="mixture", latent_prior_components=2)
    AutoencoderPipeline(model=vae).save_pretrained(tmp_path / "trained")
    common = [str(tmp_path / "trained"), "--max_train_samples", "64", "--max_eval_samples", "16", "--num_generated", "8"]

    results = refit.main(common + ["--components", "3", "5", "--markov_chain_steps", "2", "--output", str(tmp_path / "r.json")])
    assert [r["components"] for r in results] == [3, 5]
    for r in results:
        assert math.isfinite(r["held_out_log_density"]) and math.isfinite(r["train_log_density"])
        for key in ("samples", "samples_markov_chain"):
            assert set(r[key]) == {"oracle_validity", "oracle_coverage", "oracle_distinct_scenes", "novel_fraction"}
    reference = json.loads(capsys.readouterr().out.splitlines()[0])["real_held_out_images"]
    assert reference["oracle_validity"] == 1.0  # real scenes, read by the same oracle
    assert json.loads((tmp_path / "r.json").read_text()) == results
    # --seed changes the fit and the draws, not the data the model was trained on (that is --data_seed)
    refit.main(common + ["--components", "3", "--seed", "1"])
    assert json.loads(capsys.readouterr().out.splitlines()[0])["real_held_out_images"] == reference

    refit.main(common + ["--components", "4", "--output_dir", str(tmp_path / "refit")])
    loaded = AutoencoderPipeline.from_pretrained(tmp_path / "refit").model
    assert loaded.config.latent_prior_components == 4 and loaded.latent_prior_fitted
    assert VAEModel.from_pretrained(tmp_path / "trained" / "model").config.latent_prior_components == 2  # untouched

    for bad, message in [
        (["--components", "0"], r"--components must be ≥ 1, got \[0\]"),
        (["--components", "3", "4", "--output_dir", str(tmp_path / "x")], "saves one refitted model; got 2"),
        (["--components", "65"], "--components 65 is more than the 64 training latents"),
        (["--components", "3", "--markov_chain_steps", "-1"], "--markov_chain_steps must be ≥ 0, got -1"),
    ]:
        with pytest.raises(SystemExit):
            refit.main(common + bad)
        assert re.search(message, capsys.readouterr().err)
    AutoencoderPipeline(model=tiny_vae(latent_prior="normal")).save_pretrained(tmp_path / "normal")
    with pytest.raises(ValueError, match="holds a VAE with latent_prior='normal'; only a 'mixture' can be refitted"):
        refit.main([str(tmp_path / "normal"), "--components", "3"])
