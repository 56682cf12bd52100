#!/usr/bin/env python
"""Refit the latent mixture of a trained VAE with other numbers of components, and judge each choice.

`train_autoencoder.py` fits M = `--latent_prior_components` (100) Gaussians to the training latents after training
(ex-post density estimation, Ghosh et al. 2020). M trades two things, and this script measures both for each M:

- how well the mixture generalises: the mean log-density of the held-out images' latent means (nats), the
  criterion that chose the default;
- what its samples look like (shapes world): oracle validity, (shape, colour) coverage, distinct valid scenes
  and the fraction of valid scenes that are not in the training set (real held-out images give the reference),
  decoded directly and, with `--markov_chain_steps N`, after N decode/re-encode steps (`VAEModel.markov_chain`).

With `--output_dir` (and one M) the refitted model is saved as an AutoencoderPipeline folder.

    python training_scripts/refit_latent_prior.py shapes-vae --components 100 300 1000 --markov_chain_steps 20
    python training_scripts/refit_latent_prior.py shapes-vae --components 1000 --output_dir shapes-vae-m1000
"""

from __future__ import annotations

import argparse
import json

from script_args import description

import torch

import hf_genzoo  # noqa: F401  (binds our classes for diffusers' loader)
from hf_genzoo import AutoencoderPipeline, VAEModel
from hf_genzoo.hub import load_model_component
from hf_genzoo.metrics import encode_means
from hf_genzoo.metrics.evaluate import decode_samples, scene_keys, scene_metrics
from hf_genzoo.models.latent_mixture import mixture_log_prob
from hf_genzoo.training_utils import load_split_tensors

MAX_FIT_LATENTS = 10_000  # as train_autoencoder.py


def load_vae(path: str) -> VAEModel:
    """A VAEModel folder or Hub id, or a saved AutoencoderPipeline holding one; its latent prior must be a mixture."""
    model = load_model_component(path, VAEModel)
    if model.config.latent_prior != "mixture":
        raise ValueError(f"{path} holds a VAE with latent_prior={model.config.latent_prior!r}; only a 'mixture' can be refitted")
    return model.eval()


@torch.no_grad()
def judge(model: VAEModel, oracle, train_scenes: set, count: int, steps: int, seed: int, batch_size: int = 128) -> dict:
    """Shapes-oracle metrics of `count` mixture samples after `steps` decode/re-encode steps."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.cat(
        [model.sample_prior(min(batch_size, count - start), generator=generator) for start in range(0, count, batch_size)]
    )
    return scene_metrics(oracle.read_batch(decode_samples(model, latents, steps, batch_size)), train_scenes)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("model", help="a trained VAE: a saved AutoencoderPipeline or VAEModel folder, or a Hub id")
    parser.add_argument("--components", type=int, nargs="+", required=True, help="values of M to fit")
    parser.add_argument("--dataset_name", default="shapes", help="the data it was trained on")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--max_train_samples", type=int, default=MAX_FIT_LATENTS, help="training images whose latents are fitted")
    parser.add_argument("--eval_split", default="test")
    parser.add_argument("--max_eval_samples", type=int, default=1000)
    parser.add_argument("--num_generated", type=int, default=1000)
    parser.add_argument("--markov_chain_steps", type=int, default=0, help="also judge the samples after this many chain steps")
    parser.add_argument("--seed", type=int, default=0, help="seeds the EM start and the samples")
    parser.add_argument("--data_seed", type=int, default=0, help="the --seed the model was trained with: it draws the shapes world's splits")
    parser.add_argument("--output_dir", default=None, help="save the refitted model here (needs exactly one --components)")
    parser.add_argument("--output", default=None, help="write the results as a JSON list here")
    args = parser.parse_args(argv)
    if any(m < 1 for m in args.components):
        parser.error(f"--components must be ≥ 1, got {args.components}")
    if args.markov_chain_steps < 0:
        parser.error(f"--markov_chain_steps must be ≥ 0, got {args.markov_chain_steps}")
    if args.output_dir and len(args.components) != 1:
        parser.error(f"--output_dir saves one refitted model; got {len(args.components)} values of --components")

    model = load_vae(args.model)
    data_args = argparse.Namespace(
        dataset_name=args.dataset_name,
        resolution=model.config.sample_size,
        num_channels=model.config.in_channels,
        image_column=None,
        seed=args.data_seed,
    )
    train, _, _ = load_split_tensors(data_args, args.train_split, args.max_train_samples)
    held_out, _, _ = load_split_tensors(data_args, args.eval_split, args.max_eval_samples)
    train_latents = encode_means(model, train).flatten(1)
    held_out_latents = encode_means(model, held_out).flatten(1)
    if len(train_latents) < max(args.components):
        parser.error(f"--components {max(args.components)} is more than the {len(train_latents)} training latents")

    oracle = train_scenes = None
    if args.dataset_name == "shapes":
        from hf_genzoo.data.shapes import ShapesOracle

        oracle = ShapesOracle(model.config.sample_size)
        train_scenes = set(scene_keys(oracle.read_batch(train)))
        reference = scene_metrics(oracle.read_batch(held_out), train_scenes)
        print(json.dumps({"real_held_out_images": reference}))

    results = []
    for m in args.components:
        fit_log_likelihood = model.fit_latent_prior(train_latents, generator=torch.Generator().manual_seed(args.seed), num_components=m)
        held_out_log_density = mixture_log_prob(
            held_out_latents.double(), model.prior_log_weights.double(), model.prior_means.double(), model.prior_scale_tril.double()
        ).mean()
        result = {
            "components": m,
            "train_log_density": fit_log_likelihood,
            "held_out_log_density": float(held_out_log_density),
        }
        if oracle is not None:
            result["samples"] = judge(model, oracle, train_scenes, args.num_generated, 0, args.seed)
            if args.markov_chain_steps:
                result["samples_markov_chain"] = judge(model, oracle, train_scenes, args.num_generated, args.markov_chain_steps, args.seed)
        print(json.dumps(result))
        results.append(result)
    if args.output_dir:
        AutoencoderPipeline(model=model).save_pretrained(args.output_dir)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
