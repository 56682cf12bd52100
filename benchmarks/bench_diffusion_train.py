"""Diffusion training throughput: the step as train_diffusion.py runs it against a loop written the way diffusers'
unconditional training example (examples/unconditional_image_generation/train_unconditional.py) writes it.

Same UNet config (the script's defaults), same batch size, same process, EMA in both, interleaved rounds:

- reference: fp32, contiguous tensors, a DataLoader whose per-step transform turns PIL images into tensors
  (resize, centre crop, to tensor, normalise — the example's torchvision transforms, here in PIL/numpy since
  torchvision is not a dependency), diffusers' `DDPMScheduler.add_noise`, `F.mse_loss`, `EMAModel.step`;
- ours: `training_step` from training_scripts/train_diffusion.py under `Accelerator(mixed_precision=...)` (bf16
  autocast on the CPU), the script's memory format (contiguous by default: channels-last is slower for this UNet
  on the CPU) and attention kernel (`prepare_for_training`), its fused AdamW and foreach EMA, data preprocessed
  once into one tensor.

    python benchmarks/bench_diffusion_train.py --steps 20 --rounds 3
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from PIL import Image

from hf_genzoo.data import load_image_dataset, make_shapes_dataset
from throughput import compare, fresh_accelerator, load_training_script, parse_args, script_memory_format


def example_transform(resolution: int):
    """Resize(resolution, bilinear) → CenterCrop(resolution) → ToTensor → Normalize([0.5], [0.5]), per image."""

    def transform(image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        scale = resolution / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
        array = np.asarray(image, dtype=np.float32) / 255.0  # ToTensor
        return (torch.from_numpy(array).permute(2, 0, 1) - 0.5) / 0.5  # Normalize

    return transform


def reference_rounds(unet, dataset, batch_size: int, steps: int, lr: float, resolution: int) -> float:
    """The example's loop in fp32. Returns images/s."""
    transform = example_transform(resolution)
    dataset = dataset.with_transform(lambda rows: {"input": [transform(image) for image in rows["image"]]})
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    accelerator = fresh_accelerator("no")
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, power=0.75)
    unet.train()
    batches = iter(loader)
    start = time.perf_counter()
    for _ in range(steps):
        clean_images = next(batches)["input"]
        noise = torch.randn(clean_images.shape)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean_images.shape[0],)).long()
        noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
        with accelerator.accumulate(unet):
            model_output = unet(noisy_images, timesteps).sample
            loss = F.mse_loss(model_output.float(), noise.float())
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            ema.step(unet.parameters())
    return steps * batch_size / (time.perf_counter() - start)


def our_step(script, args_ns, mixed_precision: str) -> Callable[[torch.Tensor, int], None]:
    """A fresh UNet set up as train_diffusion.py sets it up (attention kernel, fused AdamW, foreach EMA under
    `Accelerator(mixed_precision=...)`); returns `step(x_0, i)`, one training step plus the EMA update."""
    accelerator = fresh_accelerator(mixed_precision)
    unet = script.prepare_for_training(script.build_unet(args_ns, None), args_ns, accelerator.device)
    noise_scheduler = script.build_noise_scheduler(args_ns)
    optimizer = script.build_optimizer(unet, args_ns)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, power=0.75, foreach=True)
    unet.train()

    def step(x_0: torch.Tensor, i: int) -> None:
        script.training_step(accelerator, unet, noise_scheduler, optimizer, lr_scheduler, x_0, torch.Generator().manual_seed(i), args_ns)
        ema.step(unet.parameters())

    return step


def our_rounds(script, args_ns, images: torch.Tensor, batch_size: int, steps: int, mixed_precision: str) -> float:
    step = our_step(script, args_ns, mixed_precision)
    memory_format = script_memory_format(args_ns)
    order = torch.randperm(len(images))
    start = time.perf_counter()
    for i in range(steps):
        step(images[order[i * batch_size : (i + 1) * batch_size]].contiguous(memory_format=memory_format), i)
    return steps * batch_size / (time.perf_counter() - start)


def main():
    args = parse_args(__doc__.split("\n")[0], steps=20)
    script = load_training_script("train_diffusion")
    # the example's objective (ε, unweighted) on both sides, so only the way the step runs differs
    script_args = script.parse_args(["--resolution", str(args.resolution), "--prediction_type", "epsilon", "--snr_gamma", "0", *args.script_flags])
    num_images = (args.steps + 3) * args.batch_size
    raw = make_shapes_dataset(num_samples=num_images, resolution=args.resolution, seed=0)
    images = load_image_dataset("shapes", resolution=args.resolution, num_samples=num_images)[:]["pixel_values"]

    def fresh_unet():
        torch.manual_seed(0)
        return script.build_unet(script_args, None)

    unet = fresh_unet()
    compare(
        lambda steps: reference_rounds(fresh_unet(), raw, args.batch_size, steps, script_args.learning_rate, args.resolution),
        lambda steps: our_rounds(script, script_args, images, args.batch_size, steps, args.mixed_precision),
        args,
        model=f"UNet2DModel {list(unet.config.block_out_channels)}, {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters",
    )


if __name__ == "__main__":
    main()
