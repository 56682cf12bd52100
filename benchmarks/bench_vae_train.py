"""VAE training throughput: the step as train_autoencoder.py runs it against a plain fp32 PyTorch loop.

Same model config, same batch size, same process, interleaved rounds:

- reference: fp32, contiguous tensors, images converted from PIL by a per-step transform in a DataLoader
  (the way a plain PyTorch loop, and diffusers' unconditional example, feed a model);
- ours: `training_step` from training_scripts/train_autoencoder.py under `Accelerator(mixed_precision=...)`
  (bf16 autocast on the CPU), in the memory format the script uses (contiguous unless `--channels_last`), the
  script's optimiser, and its data path: images preprocessed once into a memory-mapped uint8 cache, each batch read
  by the script's DataLoader (`hf_genzoo.data.image_cache.training_batches`, `--dataloader_num_workers`) and
  converted to float there.

Flags the benchmark does not know go to the training script's parser, so the model is the one a command trains:

    python benchmarks/bench_vae_train.py --steps 30 --rounds 3
    python benchmarks/bench_vae_train.py --batch_size 16 --block_out_channels 16 32 64   # the main job's model
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import torch
from diffusers.optimization import get_scheduler

from hf_genzoo.data import make_shapes_dataset
from hf_genzoo.data.image_cache import ImageSplit, training_batches
from throughput import compare, fresh_accelerator, load_training_script, parse_args, script_memory_format


def reference_rounds(model, dataset, batch_size: int, steps: int, lr: float) -> float:
    """A plain fp32 loop: per-step PIL → tensor transform, no autocast, contiguous memory. Returns images/s."""

    def collate(rows):
        images = [np.asarray(row["image"].convert("RGB"), dtype=np.float32) / 127.5 - 1 for row in rows]
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    batches = iter(loader)
    start = time.perf_counter()
    for step in range(steps):
        x = next(batches)
        loss = model.loss(x, generator=torch.Generator().manual_seed(step)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * batch_size / (time.perf_counter() - start)


def our_rounds(script, args_ns, images: ImageSplit, batch_size: int, steps: int, mixed_precision: str) -> float:
    accelerator = fresh_accelerator(mixed_precision)
    memory_format = script_memory_format(args_ns)
    model = script.build_model(args_ns).to(memory_format=memory_format)
    optimizer = script.build_optimizer(model, args_ns)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    model.train()
    order = torch.randperm(len(images))
    batches = training_batches(
        images,
        ((step, order[step * batch_size : (step + 1) * batch_size]) for step in range(steps)),
        steps,
        seed=0,
        random_flip=args_ns.random_flip,
        num_workers=args_ns.dataloader_num_workers,
    )
    start = time.perf_counter()
    for step, batch in batches:
        x = batch["pixel_values"].contiguous(memory_format=memory_format)
        script.training_step(accelerator, model, optimizer, lr_scheduler, x, torch.Generator().manual_seed(step), 1.0)
    return steps * batch_size / (time.perf_counter() - start)


def main():
    args = parse_args(__doc__.split("\n")[0], steps=30)
    script = load_training_script("train_autoencoder")
    script_args = script.parse_args(["--model", "vae", "--resolution", str(args.resolution), *args.script_flags])
    num_images = (args.steps + 3) * args.batch_size  # the warm-up steps too
    raw = make_shapes_dataset(num_samples=num_images, resolution=args.resolution, seed=0)
    cache = tempfile.TemporaryDirectory(prefix="bench_vae_train-")
    script_args.cache_dir = script_args.cache_dir or cache.name
    images = script.load_split(script_args, "train", num_images)
    lr = script_args.learning_rate
    compare(
        lambda steps: reference_rounds(script.build_model(script_args), raw, args.batch_size, steps, lr),
        lambda steps: our_rounds(script, script_args, images, args.batch_size, steps, args.mixed_precision),
        args,
        model="VAEModel " + str(script.build_model(script_args).config.block_out_channels),
        warmup_steps=3,
    )


if __name__ == "__main__":
    main()
