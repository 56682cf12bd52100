#!/usr/bin/env python
"""How good a latent-diffusion first stage's reconstructions are on held-out shapes-world images: the oracle's
validity of decode(mode(encode(x))), and PSNR, for one- and two-shape scenes separately. A first stage whose
reconstructions the oracle rejects caps every latent diffusion model trained on it.

    python benchmarks/first_stage_reconstructions.py shapes-kl-f4 --num_images 1000
"""

from __future__ import annotations

import argparse
import json


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first_stage", help="a folder or Hub id holding the first stage (as train_latent_diffusion.py's --vae)")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--num_images", type=int, default=1000, help="held-out images per scene kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    import torch

    from hf_genzoo.data import load_image_dataset, oracle_validity
    from hf_genzoo.metrics import psnr
    from throughput import load_training_script

    first_stage = load_training_script("train_latent_diffusion").load_first_stage(args.first_stage)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    first_stage.to(device)
    report = {"first_stage": args.first_stage, "resolution": args.resolution}
    for num_shapes in (1, 2):
        x = load_image_dataset("shapes", split="test", resolution=args.resolution, max_samples=args.num_images, seed=args.seed, num_shapes=num_shapes)[:]["pixel_values"]
        recon = []
        with torch.no_grad():
            for batch in x.split(256):
                batch = batch.to(device)
                encoded = first_stage.encode(batch)
                z = encoded.latent_dist.mode() if hasattr(encoded, "latent_dist") else encoded.latents
                recon.append(first_stage.decode(z).sample.clamp(-1, 1).float().cpu())
        recon = torch.cat(recon)
        report[f"{num_shapes}_shape"] = {
            "images": len(x),
            "oracle_validity_originals": oracle_validity(x),
            "oracle_validity_reconstructions": oracle_validity(recon),
            "psnr": float(psnr(x, recon).mean()),
        }
    print(json.dumps(report, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
