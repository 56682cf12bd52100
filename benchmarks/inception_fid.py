#!/usr/bin/env python
"""Inception FID of a saved generator, beside its real-vs-real floor and the domain-classifier FID.

N generated images (from a saved pipeline folder, or a file of samples) against N real images of a split, and the
floor: those N real images against N other real images of the same split (two disjoint sets of the same size). FID
is biased upward at small N; the floor at the same N shows by how much. Features: the TF FID graph's InceptionV3
(`hf_genzoo.metrics.inception`, `pip install hf_genzoo[fid]`), computed once per set; the distance is torchmetrics'
`FrechetInceptionDistance`, checked against pytorch-fid's `calculate_frechet_distance` on the same features when
pytorch-fid is installed (`pip install --no-deps pytorch-fid`: only that function is read, from its source). With
`--fid_classifier`, the domain FID and its floor on the same images (`hf_genzoo.metrics.domain`).

    python benchmarks/inception_fid.py --pipeline runs/mnist-vae --dataset_name ../shared/data/mnist --resolution 28 \\
        --num_channels 1 --num_samples 2000 --fid_classifier runs/mnist-classifier --output mnist-vae-inception-fid.json
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pipeline", help="a saved pipeline folder whose __call__ takes batch_size (autoencoder, GAN, pixel diffusion)")
    source.add_argument("--samples", help="a torch.save'd tensor (N, C, H, W) of generated images in [-1, 1]")
    parser.add_argument("--dataset_name", default="shapes", help="'shapes', an image folder, a parquet file or folder, or a Hub dataset id")
    parser.add_argument("--split", default="test", help="the split the two real sets are drawn from (it needs 2 × --num_samples rows)")
    parser.add_argument("--resolution", type=int, default=32, help="the generator's resolution (28 for MNIST)")
    parser.add_argument("--num_channels", type=int, default=3, choices=(1, 3), help="the generator's channels")
    parser.add_argument("--num_shapes", type=int, nargs="+", default=[1], choices=(1, 2), help="shapes per scene of the real shapes-world images")
    parser.add_argument("--num_samples", type=int, default=2000, help="N: generated images, and the size of each real set")
    parser.add_argument("--fid_classifier", default=None, help="a DomainClassifier folder: also the domain FID and its floor")
    parser.add_argument("--generation_batch_size", type=int, default=250, help="images per pipeline call")
    parser.add_argument("--inception_batch_size", type=int, default=50, help="images per InceptionV3 call")
    parser.add_argument("--save_samples", default=None, help="torch.save the generated images here (for --samples later)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the real subsets and the generation")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    for name in ("num_samples", "generation_batch_size", "inception_batch_size"):
        if getattr(args, name) < 2:
            parser.error(f"--{name} must be ≥ 2, got {getattr(args, name)}")
    return args


def load_real(args):
    """Two disjoint sets of N real images (N, C, H, W) in [-1, 1] from `--split`."""
    from hf_genzoo.data import load_image_dataset

    count = 2 * args.num_samples
    shapes = {"num_samples": count, "num_shapes": tuple(args.num_shapes)} if args.dataset_name == "shapes" else {}
    dataset = load_image_dataset(
        args.dataset_name, args.split, args.resolution, args.num_channels, max_samples=count, seed=args.seed, **shapes
    )
    if len(dataset) < count:
        raise ValueError(f"the {args.split} split of {args.dataset_name} has {len(dataset)} images; two real sets of --num_samples {args.num_samples} need {count}")
    images = dataset[:count]["pixel_values"]  # (2N, C, H, W)
    return images[: args.num_samples], images[args.num_samples :]


def generate(args):
    """N images (N, C, H, W) in [-1, 1]: from the pipeline folder (seeded), or read from --samples."""
    import torch

    if args.samples:
        images = torch.load(args.samples)
        if images.ndim != 4 or len(images) < args.num_samples:
            raise ValueError(f"--samples holds a tensor of shape {tuple(images.shape)}; need (≥ {args.num_samples}, C, H, W)")
        return images[: args.num_samples].float()
    from hf_genzoo.demo import load_pipeline

    pipe = load_pipeline(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(args.seed)
    batches, left = [], args.num_samples
    while left > 0:
        size = min(args.generation_batch_size, left)
        batches.append(pipe(batch_size=size, generator=generator, output_type="pt").images * 2 - 1)  # [0, 1] → [-1, 1]
        left -= size
    images = torch.cat(batches)
    if args.save_samples:
        torch.save(images, args.save_samples)
    return images


def pytorch_fid_distance(features_1, features_2):
    """pytorch-fid's `calculate_frechet_distance` on the two feature sets' means and covariances (numpy's `np.cov`,
    as its `calculate_activation_statistics`), or None when pytorch-fid is not installed. The function is read from
    pytorch-fid's source: its module imports torchvision at the top, which this function does not use."""
    import numpy as np
    from scipy import linalg

    spec = importlib.util.find_spec("pytorch_fid")
    if spec is None:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "fid_score.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "calculate_frechet_distance")
    namespace = {"np": np, "linalg": linalg}
    exec(compile(ast.Module([function], type_ignores=[]), path, "exec"), namespace)
    statistics = [(f.numpy().mean(0), np.cov(f.numpy(), rowvar=False)) for f in (features_1, features_2)]
    return float(namespace["calculate_frechet_distance"](*statistics[0], *statistics[1]))


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from hf_genzoo.metrics.inception import InceptionFeatureExtractor, frechet_distance, inception_features

    start = time.perf_counter()
    real, other_real = load_real(args)
    generated = generate(args)
    expected = tuple(real.shape[1:])
    if tuple(generated.shape[1:]) != expected:
        raise ValueError(f"generated images are {tuple(generated.shape[1:])}, the real ones {expected}: check --resolution / --num_channels")
    generation_seconds = time.perf_counter() - start

    # 1. Inception features, once per set
    extractor = InceptionFeatureExtractor()
    features, inception_start = {}, time.perf_counter()
    for name, images in (("real", real), ("other_real", other_real), ("generated", generated)):
        features[name] = inception_features(images, extractor, batch_size=args.inception_batch_size)  # (N, 2048)
        print(f"{name}: {len(images)} images, Inception features after {time.perf_counter() - inception_start:.0f} s", flush=True)
    inception_seconds = time.perf_counter() - inception_start

    # 2. torchmetrics' Fréchet distance, and pytorch-fid's on the same features
    report = {
        "source": os.path.basename(os.path.normpath(args.pipeline or args.samples)),
        "dataset": os.path.basename(os.path.normpath(args.dataset_name)),
        "split": args.split,
        "num_samples": args.num_samples,
        "fid_inception": frechet_distance(features["real"], features["generated"]),
        "fid_inception_real_vs_real": frechet_distance(features["real"], features["other_real"]),
    }
    reference = {
        "fid_inception": pytorch_fid_distance(features["real"], features["generated"]),
        "fid_inception_real_vs_real": pytorch_fid_distance(features["real"], features["other_real"]),
    }
    if reference["fid_inception"] is not None:
        report["pytorch_fid"] = {
            **reference,
            "max_relative_difference": max(abs(report[k] - v) / abs(v) for k, v in reference.items()),
        }

    # 3. the domain classifier's FID on the same images
    if args.fid_classifier:
        from hf_genzoo.metrics.domain import DomainClassifier, domain_fid

        classifier = DomainClassifier.from_pretrained(args.fid_classifier)
        report["fid_domain"] = domain_fid(classifier, real, generated)
        report["fid_domain_real_vs_real"] = domain_fid(classifier, real, other_real)
        report["fid_classifier"] = os.path.basename(os.path.normpath(args.fid_classifier))

    report.update(
        generation_seconds=round(generation_seconds, 1),
        inception_seconds=round(inception_seconds, 1),
        inception_seconds_per_image=round(inception_seconds / (3 * args.num_samples), 4),
        seconds=round(time.perf_counter() - start, 1),
        torch_threads=torch.get_num_threads(),
    )
    from throughput import write_report

    write_report(report, args.output, indent=1)
    return report


if __name__ == "__main__":
    main()
