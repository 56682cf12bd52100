#!/usr/bin/env python
"""Judge samples of a saved VQVAEPipeline at other sampling settings (temperature, top-k, ε-sampling), with the functions
`train_vq_prior.py` ends with: the shapes oracle's validity and coverage, or with `--fid_classifier` the FID on a
domain classifier's features and the class histogram. Prints one JSON line per setting; `--output` writes them all.

    python training_scripts/evaluate_vq_prior.py shapes-vqvae-prior --temperature 1.0 0.8 0.6 --top_k 0 8
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os

from script_args import description

import torch

import hf_genzoo  # noqa: F401  (binds our classes for diffusers' loader)
from hf_genzoo import VQVAEModel, VQVAEPipeline
from hf_genzoo.hub import load_model_component
from hf_genzoo.data.shapes import ShapesOracle
from hf_genzoo.metrics import sample_quality_metrics
from hf_genzoo.metrics.evaluate import scene_keys, scene_metrics
from hf_genzoo.training_utils import load_split_tensors

HERE = os.path.dirname(os.path.abspath(__file__))


def load_training_script():
    spec = importlib.util.spec_from_file_location("train_vq_prior", os.path.join(HERE, "train_vq_prior.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_first_stage(pipe: VQVAEPipeline, vqvae: VQVAEModel, name: str) -> VQVAEPipeline:
    """The pipeline's prior with another VQ-VAE that shares its encoder and codebook (only the decoder side may
    differ), so the prior's codes mean what they meant in training."""
    theirs = dict(vqvae.named_parameters())
    differ = [
        key
        for key, value in pipe.vqvae.named_parameters()
        if key.split(".")[0] not in pipe.vqvae.decoder_modules
        and (key not in theirs or theirs[key].shape != value.shape or not torch.equal(theirs[key], value))
    ]
    if differ:
        raise ValueError(
            f"{name}'s encoder or codebook differs from the pipeline's ({', '.join(differ[:3])}): the prior was "
            "trained on other codes; only a VQ-VAE fine-tuned with --train_modules decoder can replace it"
        )
    out = VQVAEPipeline(vqvae=vqvae.to(pipe.vqvae.device).eval(), prior=pipe.prior)
    out.set_progress_bar_config(disable=True)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("pipeline", help="a saved VQVAEPipeline folder or Hub repo id")
    parser.add_argument(
        "--vqvae",
        default=None,
        help="decode with this VQ-VAE instead (a folder or Hub id), e.g. the pipeline's own with its decoder fine-tuned "
        "by train_autoencoder.py --train_modules decoder; its encoder and codebook must be the pipeline's",
    )
    parser.add_argument("--dataset_name", default="shapes", help="the data it was trained on (for the oracle / real images)")
    parser.add_argument("--eval_split", default="test")
    parser.add_argument("--train_split", default="train", help="shapes world: the split the prior learned, to count novel scenes")
    parser.add_argument("--data_seed", type=int, default=0, help="the --seed the models were trained with: it draws the shapes world's splits")
    parser.add_argument("--max_eval_samples", type=int, default=1000)
    parser.add_argument("--temperature", type=float, nargs="+", default=[1.0])
    parser.add_argument("--top_k", type=int, nargs="+", default=[0], help="0: no top-k")
    parser.add_argument("--epsilon_cutoff", type=float, nargs="+", default=[0.0], help="ε-sampling (VQVAEPipeline); 0: off")
    parser.add_argument("--num_generated", type=int, default=500)
    parser.add_argument("--fid_classifier", default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default=None, help="write the results as a JSON list here")
    args = parser.parse_args(argv)
    if any(t <= 0 for t in args.temperature):
        parser.error(f"--temperature values must be > 0, got {args.temperature}")
    if any(not 0 <= e < 1 for e in args.epsilon_cutoff):
        parser.error(f"--epsilon_cutoff values must be in [0, 1) (0: off), got {args.epsilon_cutoff}")

    script = load_training_script()
    pipe = VQVAEPipeline.from_pretrained(args.pipeline)
    if args.vqvae:
        pipe = with_first_stage(pipe, load_model_component(args.vqvae, VQVAEModel), args.vqvae)
    pipe.set_progress_bar_config(disable=True)
    vq = pipe.vqvae.config
    data_args = argparse.Namespace(
        dataset_name=args.dataset_name, resolution=vq.sample_size, num_channels=vq.in_channels, image_column=None, seed=args.data_seed
    )
    real, _, _ = load_split_tensors(data_args, args.eval_split, args.max_eval_samples)
    train_scenes = None
    if args.dataset_name == "shapes":  # novelty: valid samples whose scene the training set does not hold
        oracle = ShapesOracle(vq.sample_size)
        train, _, _ = load_split_tensors(data_args, args.train_split, None)
        train_scenes = set(scene_keys(oracle.read_batch(train)))
        print(json.dumps({"real_held_out_images": scene_metrics(oracle.read_batch(real), train_scenes)}))
    labels = script.sample_labels(pipe.num_classes, args.num_generated)
    results = []
    for temperature, top_k, epsilon in itertools.product(args.temperature, args.top_k, args.epsilon_cutoff):
        settings = argparse.Namespace(temperature=temperature, top_k=top_k or None, epsilon_cutoff=epsilon or None)
        with torch.no_grad():
            samples = script.generate(pipe, args.num_generated, labels, settings, seed=args.seed)
        metrics = {"temperature": temperature, "top_k": top_k or None, "epsilon_cutoff": epsilon or None, "generated": len(samples)}
        metrics.update(
            sample_quality_metrics(
                samples,
                labels,
                shapes_resolution=vq.sample_size if args.dataset_name == "shapes" else None,
                real_images=real,
                fid_classifier=args.fid_classifier,
                train_scenes=train_scenes,
            )
        )
        print(json.dumps(metrics))
        results.append(metrics)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
