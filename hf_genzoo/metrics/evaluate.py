"""The numbers the autoencoder family is judged by, computed at the end of training (metrics.json, model card)."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from tqdm.auto import tqdm

from ..models import AutoencoderModel, DiagonalGaussian, VAEModel, VQVAEModel
from ..models.vq import perplexity_of
from .disentanglement import mutual_information_gap
from .likelihood import iwae_bound, vae_elbo
from .reconstruction import mse, nats_to_bits_per_dim, psnr


logger = logging.getLogger(__name__)


class EvaluationProgress:
    """What an evaluation shows while it works: one progress bar over its stages (the metric being computed named
    beside it), a bar over the batches of the stage at hand, and each stage's time, logged when it ends and kept in
    `seconds`. `enabled=False` (the default of the metric functions) shows and logs nothing, and still times."""

    def __init__(self, num_stages: int | None = None, desc: str = "evaluation", enabled: bool = True, log=logger):
        self.enabled, self.log = enabled, log
        self.seconds: dict[str, float] = {}
        self.bar = tqdm(total=num_stages, desc=desc, unit="metric", disable=not enabled)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.bar.set_postfix_str(name)
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        if self.enabled:
            self.log.info(f"evaluation: {name} took {seconds:.1f} s")
        self.bar.update(1)

    def batches(self, iterable: Iterable, total: int | None = None, desc: str = "batches") -> Iterable:
        """`iterable` with a bar of its own under the stages' bar, removed when done."""
        return tqdm(iterable, total=total, desc=desc, leave=False, disable=not self.enabled)

    def close(self) -> float:
        """Close the bar; the seconds of all stages."""
        self.bar.close()
        return sum(self.seconds.values())


def _batches(images: torch.Tensor, batch_size: int):
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]


@torch.no_grad()
def encode_means(model, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """z(x) for an autoencoder, the posterior mean for a VAE; (N, ...) on the CPU in float32."""
    device, dtype = model.device, model.dtype
    out = []
    for batch in _batches(images, batch_size):
        encoded = model.encode(batch.to(device, dtype))
        out.append((encoded.latent_dist.mode() if isinstance(model, VAEModel) else encoded.latents).float().cpu())
    return torch.cat(out)


def on_8bit_grid(images: torch.Tensor) -> bool:
    """Whether every pixel is an 8-bit grey level scaled to [-1, 1]: 2k/255 − 1, k ∈ {0, …, 255}."""
    levels = (images.float() + 1) * 127.5
    return bool(((levels - levels.round()).abs() < 1e-3).all() and levels.min() >= -1e-3 and levels.max() <= 255 + 1e-3)


@torch.no_grad()
def evaluate_autoencoder(
    model: AutoencoderModel | VAEModel,
    images: torch.Tensor,
    *,
    factors: torch.Tensor | None = None,
    shapes_resolution: int | None = None,
    num_generated: int = 1000,
    iwae_samples: int = 64,
    iwae_images: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
    markov_chain_steps: int = 0,
    decoder_log_scale: float | None = None,
    progress: EvaluationProgress | None = None,
) -> dict[str, float | str]:
    """Held-out metrics for an autoencoder or VAE.

    - every model: `mse`, `psnr` of reconstructions (no corruption, posterior mean for a VAE);
    - VAE: `elbo_nats`, `iwae_nats` (k = `iwae_samples`, on the first `iwae_images` of `images`, default all: it
      costs k decoder passes an image), and both in bits/dim (`*_bpd`, as −bound / (D ln 2)), under the model's
      own `likelihood` (named in the metrics: with "bernoulli", bounds under the Bernoulli model, not a probability
      of the 8-bit images);
    - VAE with `likelihood="discretized_gaussian"`, or any VAE given `decoder_log_scale` (ln σ, fitted to training
      images by `fit_decoder_log_scale`): the same bounds on ln P of the 8-bit images under the discretised
      Gaussian decoder over the 256 grey levels (`*_nats_8bit`, `*_bpd_8bit`, and the `decoder_log_scale_8bit`
      used), which compare with a diffusion model's bits/dim; `images` must then lie on the grid 2k/255 − 1;
    - `factors` (N, K) given: `mig` of the latent means against them;
    - `shapes_resolution` given (shapes-world data): `oracle_validity` and `oracle_coverage` of `num_generated`
      samples from the prior (VAE: its latent mixture when fitted, and then also N(0, I) as `*_normal_prior`) or
      the fitted latent Gaussian (autoencoders), and `oracle_validity_reconstructions` of the held-out images;
      with `markov_chain_steps` > 0 (VAE), also the same samples after that many decode/re-encode steps
      (`VAEModel.markov_chain`, posterior means) as `*_markov_chain`.

    `progress` (an `EvaluationProgress`) shows the stages and batches as they run and logs each one's time.
    """
    progress = progress or EvaluationProgress(enabled=False)
    model.eval()
    device, dtype = model.device, model.dtype
    generator = torch.Generator(device="cpu").manual_seed(seed)
    num_dims = images[0].numel()
    is_vae = isinstance(model, VAEModel)
    num_iwae = len(images) if iwae_images is None else min(iwae_images, len(images))
    own_8bit = is_vae and model.config.likelihood == "discretized_gaussian"
    if own_8bit and decoder_log_scale is not None:
        raise ValueError("this VAE's likelihood is the discretised Gaussian with its own learned scale; do not pass decoder_log_scale")
    if decoder_log_scale is not None and not is_vae:
        raise ValueError(f"decoder_log_scale applies to a VAEModel, not a {type(model).__name__}")
    extra_8bit = decoder_log_scale is not None  # 8-bit bounds beside the model's own ones
    if (own_8bit or extra_8bit) and not on_8bit_grid(images):
        raise ValueError("the 8-bit likelihood needs images on the grid 2k/255 − 1 (8-bit images scaled to [-1, 1])")
    sums = {"mse": 0.0, "psnr": 0.0, "elbo_nats": 0.0, "iwae_nats": 0.0, "elbo_nats_8bit": 0.0, "iwae_nats_8bit": 0.0}
    reconstructions = []  # kept for the oracle on shapes-world data
    stage = "reconstruction, ELBO, IWAE" if is_vae and iwae_samples else "reconstruction, ELBO" if is_vae else "reconstruction"
    with progress.stage(stage):
        for start in progress.batches(range(0, len(images), batch_size), total=-(-len(images) // batch_size), desc=stage):
            x = images[start : start + batch_size].to(device, dtype)
            if is_vae:  # one encoder pass serves the reconstruction and both bounds
                posterior = model.encode(x).latent_dist
                reconstruction = model.decode(posterior.mode()).sample
                sums["elbo_nats"] += vae_elbo(model, x, generator, posterior=posterior).sum().item()
                if extra_8bit:
                    sums["elbo_nats_8bit"] += vae_elbo(model, x, generator, posterior=posterior, decoder_log_scale=decoder_log_scale).sum().item()
                if iwae_samples and start < num_iwae:
                    x_iwae = x[: num_iwae - start]
                    posterior_iwae = posterior if len(x_iwae) == len(x) else DiagonalGaussian(posterior.mean[: len(x_iwae)], posterior.logvar[: len(x_iwae)])
                    sums["iwae_nats"] += iwae_bound(model, x_iwae, iwae_samples, generator, posterior=posterior_iwae).sum().item()
                    if extra_8bit:
                        sums["iwae_nats_8bit"] += iwae_bound(
                            model, x_iwae, iwae_samples, generator, posterior=posterior_iwae, decoder_log_scale=decoder_log_scale
                        ).sum().item()
            else:
                reconstruction = model(x).sample
            sums["mse"] += mse(x, reconstruction).sum().item()
            sums["psnr"] += psnr(x, reconstruction).sum().item()
            if shapes_resolution is not None:
                reconstructions.append(reconstruction.float().cpu())
    metrics = {"mse": sums["mse"] / len(images), "psnr": sums["psnr"] / len(images)}
    if is_vae:
        metrics["likelihood"] = model.config.likelihood
        counts = {"elbo_nats": len(images), "iwae_nats": num_iwae}
        for key in ("elbo_nats", "iwae_nats") if iwae_samples else ("elbo_nats",):
            metrics[key] = sums[key] / counts[key]
            metrics[key.replace("_nats", "_bpd")] = nats_to_bits_per_dim(-metrics[key], num_dims)
            if own_8bit or extra_8bit:
                key_8bit = key + "_8bit"
                metrics[key_8bit] = metrics[key] if own_8bit else sums[key_8bit] / counts[key]
                metrics[key_8bit.replace("_nats", "_bpd")] = nats_to_bits_per_dim(-metrics[key_8bit], num_dims)
        if own_8bit or extra_8bit:
            metrics["decoder_log_scale_8bit"] = float(model.decoder_log_scale) if own_8bit else float(decoder_log_scale)
        metrics["iwae_samples"] = iwae_samples
        if iwae_samples and num_iwae < len(images):
            metrics["iwae_images"] = num_iwae
    if factors is not None:
        with progress.stage("MIG"):
            metrics["mig"] = mutual_information_gap(encode_means(model, images, batch_size).flatten(1).numpy(), factors)["mig"]
    can_sample = is_vae or model.latent_gaussian_fitted
    if shapes_resolution is not None and can_sample and num_generated:
        from ..data.shapes import ShapesOracle

        oracle = ShapesOracle(shapes_resolution)
        # valid reconstructions of held-out scenes: roughly the ceiling for samples that land where the data does
        with progress.stage("oracle on reconstructions"):
            metrics["oracle_validity_reconstructions"] = shapes_sample_metrics(torch.cat(reconstructions).clamp(-1, 1), oracle)["oracle_validity"]
        # a VAE with a fitted latent mixture is judged on its samples from the mixture, and from N(0, I) beside them
        priors = {"": {}}
        if is_vae and model.latent_prior_fitted:
            priors["_normal_prior"] = {"prior": "normal"}
        for suffix, prior in priors.items():
            latents = torch.cat(
                [
                    model.sample_prior(len(chunk), generator=generator, **prior).to(device)
                    for chunk in _batches(torch.empty(num_generated), batch_size)
                ]
            )
            chains = {"": 0}
            if is_vae and markov_chain_steps and not suffix:
                chains["_markov_chain"] = markov_chain_steps
            for chain_suffix, steps in chains.items():
                name = f"{num_generated} samples" + (" from N(0, I)" if suffix else "") + (f" after {steps} chain steps" if steps else "")
                with progress.stage(name):
                    samples = decode_samples(model, latents, steps, batch_size, progress=progress)
                    scores = shapes_sample_metrics(samples, oracle)
                metrics.update({key + suffix + chain_suffix: value for key, value in scores.items()})
    return metrics


@torch.no_grad()
def decode_samples(
    model, latents: torch.Tensor, markov_chain_steps: int = 0, batch_size: int = 128, progress: EvaluationProgress | None = None
) -> torch.Tensor:
    """Decode latent draws in batches, after `markov_chain_steps` decode/re-encode steps (a VAE's
    `markov_chain`) when > 0: images (N, C, H, W) in [-1, 1], float32 on the CPU."""
    images = []
    batches = _batches(latents, batch_size)
    if progress is not None:
        batches = progress.batches(batches, total=-(-len(latents) // batch_size), desc="decoding")
    for chunk in batches:
        if markov_chain_steps:
            chunk = model.markov_chain(chunk, markov_chain_steps)
        images.append(model.decode(chunk).sample.float().cpu())
    return torch.cat(images).clamp(-1, 1)


@torch.no_grad()
def evaluate_vqvae(
    model: VQVAEModel, images: torch.Tensor, *, shapes_resolution: int | None = None, batch_size: int = 128
) -> dict[str, float]:
    """Held-out metrics for a VQ-VAE (it samples only through a prior over its codes, so nothing about samples):

    - `mse`, `psnr` of reconstructions, as for the autoencoders (PSNR = 10 log10(1 / MSE) with pixels mapped to
      [0, 1], averaged over images);
    - on the codes of `images`: `codebook_usage`, the fraction of the K codes that occur at least once;
      `perplexity`, exp of the entropy of their histogram (K at best); `dead_codes`, K − codes used;
    - `train_window_codebook_usage`, `train_window_perplexity`, `train_window_dead_codes`: the same over the last
      `usage_window` training batches (`model.codebook_health()`);
    - `shapes_resolution` given (shapes-world data): `oracle_validity_reconstructions`, the ceiling of any prior's
      samples.
    """
    model.eval()
    device, dtype = model.device, model.dtype
    sums = {"mse": 0.0, "psnr": 0.0}
    counts = torch.zeros(model.num_codes, dtype=torch.long)  # (K,) histogram of the held-out codes
    reconstructions = []
    for batch in _batches(images, batch_size):
        x = batch.to(device, dtype)
        z_q, _, indices = model.quantize(model.encode(x).latents)  # (B, D, h, w), (B, h, w)
        reconstruction = model.decode(z_q, force_not_quantize=True).sample
        sums["mse"] += mse(x, reconstruction).sum().item()
        sums["psnr"] += psnr(x, reconstruction).sum().item()
        if shapes_resolution is not None:
            reconstructions.append(reconstruction.float().cpu())
        counts += torch.bincount(indices.flatten().cpu(), minlength=model.num_codes)
    used = int((counts > 0).sum())
    metrics = {
        "mse": sums["mse"] / len(images),
        "psnr": sums["psnr"] / len(images),
        "codebook_usage": used / model.num_codes,
        "perplexity": float(perplexity_of(counts)),
        "dead_codes": model.num_codes - used,
    }
    metrics.update({f"train_window_{key}": value for key, value in model.codebook_health().items()})
    if shapes_resolution is not None:
        from ..data.shapes import oracle_validity  # the default oracle at the images' resolution, built once

        metrics["oracle_validity_reconstructions"] = oracle_validity(torch.cat(reconstructions).clamp(-1, 1))
    return metrics


def scene_keys(readings: list[dict]) -> list[tuple]:
    """One hashable key per valid reading: every object's factors, in the oracle's canonical order."""
    return [tuple(tuple(sorted(o.items())) for o in r["objects"]) for r in readings if r["valid"]]


def distinct_scenes(readings: list[dict]) -> int:
    """How many different scenes (every object's factors) the valid readings show: the diversity that the
    (shape, colour) coverage is too coarse to see — a sampler that repeats a few scenes covers every pair."""
    return len(set(scene_keys(readings)))


def novel_fraction(readings: list[dict], train_scenes: set) -> float:
    """The fraction of valid scenes absent from the training set's (`set(scene_keys(oracle.read_batch(train)))`),
    so memorising shows."""
    scenes = scene_keys(readings)
    return sum(scene not in train_scenes for scene in scenes) / max(len(scenes), 1)


def reading_metrics(readings: list[dict], train_scenes: set | None = None) -> dict[str, float]:
    """From the oracle's readings of generated images: validity (fraction of valid scenes), coverage (fraction of
    (shape, colour) pairs seen among the valid samples' objects) and the number of distinct valid scenes; with
    `train_scenes`, also `oracle_novel_fraction` (`novel_fraction`)."""
    from ..data.shapes import PALETTE, SHAPES

    valid = [r for r in readings if r["valid"]]
    seen = {(o["shape"], o["color"]) for r in valid for o in r["objects"]}
    metrics = {
        "oracle_validity": len(valid) / len(readings),
        "oracle_coverage": len(seen) / (len(SHAPES) * len(PALETTE)),
        "oracle_distinct_scenes": distinct_scenes(readings),
    }
    if train_scenes is not None:
        metrics["oracle_novel_fraction"] = novel_fraction(readings, train_scenes)
    return metrics


def scene_metrics(readings: list[dict], train_scenes: set) -> dict[str, float]:
    """`reading_metrics`, and the `novel_fraction` under that name (refit_latent_prior.py's reports)."""
    return {**reading_metrics(readings), "novel_fraction": novel_fraction(readings, train_scenes)}


def shapes_sample_metrics(samples: torch.Tensor, oracle, train_scenes: set | None = None) -> dict[str, float]:
    """`reading_metrics` of generated shapes-world images (B, 3, H, W) in [-1, 1]."""
    return reading_metrics(oracle.read_batch(samples), train_scenes)


def shapes_conditional_metrics(samples: torch.Tensor, labels, oracle, train_scenes: set | None = None) -> dict[str, float]:
    """`reading_metrics` of class-conditional shapes-world samples, plus attribute accuracy: the fraction of
    samples that are valid single-shape scenes whose (shape, colour) is the one asked for. `labels` index
    `LABEL_NAMES` (label = shape · len(COLORS) + colour, as `class_label`)."""
    from ..data.shapes import COLORS

    readings = oracle.read_batch(samples)
    labels = torch.as_tensor(labels).tolist()
    if len(labels) != len(readings):
        raise ValueError(f"got {len(readings)} samples and {len(labels)} labels")
    hits = 0
    for reading, label in zip(readings, labels):
        shape, color = divmod(int(label), len(COLORS))
        objects = reading["objects"]
        hits += bool(reading["valid"] and len(objects) == 1 and (objects[0]["shape"], objects[0]["color"]) == (shape, color))
    return {**reading_metrics(readings, train_scenes), "oracle_attribute_accuracy": hits / len(readings)}


@torch.no_grad()
def sample_quality_metrics(
    samples: torch.Tensor,
    labels=None,
    *,
    shapes_resolution: int | None = None,
    real_images: torch.Tensor | None = None,
    fid_classifier=None,
    train_scenes: set | None = None,
) -> dict:
    """What generated images (N, C, H, W) in [-1, 1] are judged by, for every sampler (GAN, diffusion, priors):

    - the shapes world (`shapes_resolution` given): oracle validity and coverage, and attribute accuracy when the
      samples were asked for `labels` (indices of `LABEL_NAMES`), and with `train_scenes` the fraction of valid
      scenes not among them (`novel_fraction`);
    - a `fid_classifier` (a `DomainClassifier` or its folder) with `real_images`: FID on its features, the
      real-vs-real floor (two halves of `real_images`), and the class histogram of the samples with the ratio of
      the most to the least frequent class (mode coverage); with `labels` (the classifier's classes) also
      `classifier_accuracy`, the fraction of samples it assigns to the class they were asked for. Images of another
      size than the classifier's (MNIST digits trained at 32×32 against a 28×28 classifier) are resized to it,
      real and generated alike (bilinear, antialiased).
    """
    metrics: dict = {}
    if shapes_resolution is not None:
        from ..data.shapes import ShapesOracle

        oracle = ShapesOracle(shapes_resolution)
        if labels is None:
            metrics.update(shapes_sample_metrics(samples, oracle, train_scenes))
        else:
            metrics.update(shapes_conditional_metrics(samples, labels, oracle, train_scenes))
    if fid_classifier is not None:
        from .domain import DomainClassifier, class_histogram, class_predictions, domain_fid

        if real_images is None:
            raise ValueError("the FID needs real_images beside fid_classifier")
        if not isinstance(fid_classifier, DomainClassifier):
            fid_classifier = DomainClassifier.from_pretrained(fid_classifier)
        size = fid_classifier.config.sample_size
        if samples.shape[-2:] != (size, size):
            samples = torch.nn.functional.interpolate(samples.float(), size=(size, size), mode="bilinear", antialias=True)
        if real_images.shape[-2:] != (size, size):
            real_images = torch.nn.functional.interpolate(real_images.float(), size=(size, size), mode="bilinear", antialias=True)
        half = len(real_images) // 2
        metrics["fid_domain"] = domain_fid(fid_classifier, real_images, samples)
        metrics["fid_domain_real_vs_real"] = domain_fid(fid_classifier, real_images[:half], real_images[half:])
        histogram = class_histogram(fid_classifier, samples)
        metrics["class_histogram"] = histogram
        metrics["classes_present"] = sum(count > 0 for count in histogram)
        metrics["class_ratio_max_min"] = max(histogram) / min(histogram) if min(histogram) else None  # None: a class is missing
        if labels is not None:
            asked = torch.as_tensor(labels).flatten()
            if len(asked) != len(samples):
                raise ValueError(f"got {len(samples)} samples and {len(asked)} labels")
            predicted = class_predictions(fid_classifier, samples)
            metrics["classifier_accuracy"] = float((predicted == asked).float().mean())
    return metrics
