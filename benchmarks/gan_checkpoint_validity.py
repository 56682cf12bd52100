"""The shapes oracle's validity of a GAN run's EMA generator at each of its checkpoints: a training curve from the
checkpoints alone, the same latents for every checkpoint. As the published pipeline does, the EMA weights get
BatchNorm statistics re-estimated for them (train_gan.py's `recalibrate_batchnorm`).

    python benchmarks/gan_checkpoint_validity.py shapes-gan [--num_samples 1000] [--seed 123] [--output curve.json]
        [--generator_config FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from diffusers.training_utils import EMAModel

from hf_genzoo import DCGANGenerator
from hf_genzoo.data.shapes import ShapesOracle
from hf_genzoo.training_utils import checkpoint_steps
from throughput import load_training_script


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="an unconditional train_gan.py output folder on the shapes world, with checkpoints")
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=123, help="seed of the latents")
    parser.add_argument(
        "--generator_config",
        default=None,
        help="a folder with the generator's config.json (default FOLDER/generator_model, written when the run ends; "
        "for a run still going, any finished run's with the same generator flags)",
    )
    parser.add_argument("--output", default=None, help="write the curve as JSON here")
    args = parser.parse_args()
    script = load_training_script("train_gan")
    config_folder = args.generator_config or os.path.join(args.folder, "generator_model")
    if not os.path.isfile(os.path.join(config_folder, "config.json")):
        raise FileNotFoundError(f"no config.json in {config_folder}: pass --generator_config with a folder that has the generator's config")
    config = DCGANGenerator.load_config(config_folder)
    if config.get("num_classes"):
        raise ValueError(f"{args.folder} is class-conditional ({config['num_classes']} classes); this curve is for unconditional runs")
    steps = checkpoint_steps(args.folder)  # complete checkpoint-N folders only, oldest first
    if not steps:
        raise ValueError(f"no checkpoint-N folders in {args.folder}")
    generator = DCGANGenerator.from_config(config)
    ema = EMAModel(generator.parameters())
    oracle = ShapesOracle(generator.config.sample_size)
    z = torch.randn(args.num_samples, generator.config.latent_dim, generator=torch.Generator().manual_seed(args.seed))
    curve = {}
    for step in steps:
        state = os.path.join(args.folder, f"checkpoint-{step}", "custom_checkpoint_0.pkl")  # the EMA, as save_state wrote it
        ema.load_state_dict(torch.load(state, weights_only=False))
        ema.copy_to(generator.parameters())
        script.recalibrate_batchnorm(generator, seed=0)
        with torch.no_grad():
            images = torch.cat([generator(batch) for batch in z.split(250)]).clamp(-1, 1)
        curve[step] = oracle.validity(images)
        print(f"step {step}: {curve[step]:.3f} valid", flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"folder": args.folder, "num_samples": args.num_samples, "seed": args.seed, "validity": curve}, f, indent=2)


if __name__ == "__main__":
    main()
