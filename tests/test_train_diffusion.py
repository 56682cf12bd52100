"""training_scripts/train_diffusion.py end to end on tiny UNets and a small shapes world, and its loss against the
formulas of Ho et al. (2020) and Hang et al. (2023)."""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from scripts import ROOT, load_script, without_flag

from hf_genzoo import GenZooDDIMScheduler, GenZooDDPMScheduler, PixelDiffusionPipeline



train = load_script("train_diffusion")


def tiny_args(output_dir, *extra):
    return [
        "--output_dir", str(output_dir), "--resolution", "16", "--block_out_channels", "8", "16",
        "--norm_num_groups", "4", "--attention_head_dim", "8", "--train_batch_size", "8", "--max_train_samples", "64",
        "--max_eval_samples", "16", "--max_train_steps", "6", "--checkpointing_steps", "3", "--validation_steps", "3",
        "--num_generated", "8", "--num_inference_steps", "3", "--num_likelihood_images", "4", "--likelihood_timesteps", "5",
        "--num_train_timesteps", "50", "--lr_warmup_steps", "0", "--learning_rate", "1e-3", "--mixed_precision", "no",
        *extra,
    ]


pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


def run(*argv):
    return train.main(train.parse_args(list(argv)))


def test_class_conditional_run_writes_a_loadable_pipeline(tmp_path):
    out = tmp_path / "ddpm"
    run(*tiny_args(out, "--class_conditional", "--guidance_scale", "2.0", "--mixed_precision", "bf16"))
    for name in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json", "README.md", "samples.png", "metrics.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    assert (out / "validation" / "step-000006.png").is_file()
    assert not (out / ".staging").exists()

    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("bits_per_dim", "oracle_validity", "oracle_coverage", "oracle_attribute_accuracy"):
        assert isinstance(metrics[key], float), key
    assert metrics["bits_per_dim"] > 0 and metrics["train_steps"] == 6 and metrics["guidance_scale"] == 2.0

    card = (out / "README.md").read_text()
    assert "library_name: hf_genzoo" in card and "model-index" in card and "import hf_genzoo" in card
    assert "train_diffusion.py" in card and "21 classes" in card and "samples.png" in card

    pipe = PixelDiffusionPipeline.from_pretrained(out)
    assert isinstance(pipe.scheduler, GenZooDDIMScheduler)
    assert pipe.unet.config.num_class_embeds == 22  # 21 (shape, colour) classes + the null label
    assert pipe.scheduler.config.num_train_timesteps == 50
    images = pipe(batch_size=2, class_labels=[0, 20], guidance_scale=3.0, num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 16, 16, 3)


def test_saved_weights_are_the_ema_weights(tmp_path):
    """With EMA on (the default) the published UNet is the EMA copy, not the last training weights."""
    out = tmp_path / "ema"
    run(*tiny_args(out, "--max_train_steps", "3", "--num_likelihood_images", "0"))
    saved = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    trained = load_file(out / "checkpoint-3" / "model.safetensors")
    assert any(not torch.equal(saved[k], trained[k]) for k in saved)


def test_resume_continues_exactly(tmp_path):
    """A run resumed from its step-3 checkpoint ends with the same weights (EMA included) as the uninterrupted one."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    args = ("--class_conditional", "--gradient_accumulation_steps", "2", "--num_likelihood_images", "0")
    run(*tiny_args(full, *args))
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    # the resume command does not repeat --learning_rate 1e-3: the checkpoint's schedule goes on, not the default's
    run(*without_flag(tiny_args(resumed, *args, "--resume_from_checkpoint", "latest"), "--learning_rate"))
    a = load_file(full / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "diverged"
    with pytest.raises(train.TrainingDivergedError, match=r"at step (\d+).*(checkpoint-\d+)") as excinfo:
        run(*tiny_args(out, "--learning_rate", "1e30", "--max_grad_norm", "1e30", "--max_train_steps", "40", "--checkpointing_steps", "1"))
    assert not (out / "model_index.json").exists()
    step, checkpoint = re.search(r"at step (\d+).*(checkpoint-\d+)", str(excinfo.value)).groups()
    assert checkpoint == f"checkpoint-{int(step) - 1}"
    weights = load_file(out / checkpoint / "model.safetensors")
    unet = train.build_unet(train.parse_args(tiny_args(out)), num_classes=None)
    unet.load_state_dict(weights)
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_push_to_hub_uploads_the_pipeline(hub, hub_cache, tmp_path):
    out = tmp_path / "pushed"
    run(*tiny_args(out, "--max_train_steps", "2", "--num_likelihood_images", "0", "--push_to_hub", "--hub_model_id", "genzoo-tests/shapes-ddpm"))
    files = set(hub.list_files("genzoo-tests/shapes-ddpm"))
    assert {"model_index.json", "README.md", "samples.png", "metrics.json", "unet/diffusion_pytorch_model.safetensors"} <= files
    assert not any(f.startswith(("checkpoint-", "validation/", "logs/")) for f in files)
    pipe = PixelDiffusionPipeline.from_pretrained("genzoo-tests/shapes-ddpm")
    assert pipe.unet.config.sample_size == 16


# ---- the loss ------------------------------------------------------------------------------------------------


class RecordingUNet(torch.nn.Module):
    """Returns a fixed prediction and records what the loss fed it."""

    def __init__(self, prediction):
        super().__init__()
        self.prediction = prediction

    def forward(self, x_t, timesteps, class_labels=None):
        self.x_t, self.timesteps, self.class_labels = x_t, timesteps, class_labels
        return type("Out", (), {"sample": self.prediction})()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("snr_gamma", [None, 5.0])
def test_loss_is_algorithm_1_with_min_snr_weights(prediction_type, snr_gamma):
    scheduler = GenZooDDPMScheduler(num_train_timesteps=100, prediction_type=prediction_type)
    x_0 = torch.rand(6, 3, 8, 8) * 2 - 1
    prediction = torch.randn(6, 3, 8, 8)
    unet = RecordingUNet(prediction)
    loss = train.diffusion_loss(unet, scheduler, x_0, torch.Generator().manual_seed(1), snr_gamma=snr_gamma)

    # the same draws, in the same order, from the same seed
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 100, (6,), generator=g)
    eps = torch.randn(x_0.shape, generator=g)
    abar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(unet.x_t, abar.sqrt() * x_0 + (1 - abar).sqrt() * eps)
    torch.testing.assert_close(unet.timesteps, t)
    target = {"epsilon": eps, "v_prediction": abar.sqrt() * eps - (1 - abar).sqrt() * x_0, "sample": x_0}[prediction_type]
    per_image = ((prediction - target) ** 2).mean(dim=(1, 2, 3))
    if snr_gamma is not None:
        snr = (abar / (1 - abar)).flatten()
        weight = {"epsilon": snr.clamp(max=5) / snr, "v_prediction": snr.clamp(max=5) / (snr + 1), "sample": snr.clamp(max=5)}
        per_image = per_image * weight[prediction_type]
    torch.testing.assert_close(loss, per_image.mean())


def test_cpu_training_preparation_changes_speed_not_the_function():
    """prepare_for_training swaps the attention kernel (and maybe the memory format): same outputs and gradients."""
    args = train.parse_args(["--resolution", "16", "--block_out_channels", "8", "16", "--norm_num_groups", "4", "--attention_head_dim", "8"])
    torch.manual_seed(0)
    stock = train.build_unet(args, None)
    prepared = train.prepare_for_training(train.build_unet(args, None), args, "cpu")
    prepared.load_state_dict(stock.state_dict())
    processors = {type(m.processor).__name__ for m in prepared.modules() if hasattr(m, "processor")}
    assert processors == {"AttnProcessor"}
    x, t = torch.randn(4, 3, 16, 16), torch.tensor([0, 10, 500, 999])
    outputs = []
    for unet in (stock, prepared):
        out = unet(x, t).sample
        out.square().mean().backward()
        outputs.append((out.detach(), [p.grad for p in unet.parameters()]))
    torch.testing.assert_close(outputs[1][0], outputs[0][0], rtol=1e-4, atol=1e-5)
    for got, want in zip(outputs[1][1], outputs[0][1]):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-6)


def test_label_dropout_substitutes_the_null_label():
    scheduler = GenZooDDPMScheduler(num_train_timesteps=10)
    labels = torch.arange(1000) % 21
    unet = RecordingUNet(torch.zeros(1000, 1, 2, 2))
    train.diffusion_loss(unet, scheduler, torch.zeros(1000, 1, 2, 2), torch.Generator().manual_seed(0), labels, 21, 0.2)
    dropped = unet.class_labels == 21
    assert 0.15 < dropped.float().mean() < 0.25
    assert torch.equal(unet.class_labels[~dropped], labels[~dropped])
    train.diffusion_loss(unet, scheduler, torch.zeros(1000, 1, 2, 2), torch.Generator().manual_seed(0), labels, 21, 0.0)
    assert torch.equal(unet.class_labels, labels)


# ---- bad input -----------------------------------------------------------------------------------------------


def test_bad_flags_are_refused_with_the_values(capsys):
    for argv, message in [
        (["--num_inference_steps", "2000"], "--num_inference_steps 2000 exceeds --num_train_timesteps 1000"),
        (["--prediction_type", "noise"], "invalid choice: 'noise' (choose from 'epsilon', 'v_prediction', 'sample')"),
        (["--beta_schedule", "cubic"], "invalid choice: 'cubic'"),
        (["--label_dropout", "1.5"], "--label_dropout must lie in [0, 1), got 1.5"),
        (["--norm_num_groups", "5"], "--norm_num_groups 5 must divide every --block_out_channels"),
    ]:
        with pytest.raises(SystemExit):
            train.parse_args(argv)
        assert message in capsys.readouterr().err


def test_resolution_the_unet_cannot_halve_is_refused():
    args = train.parse_args(["--resolution", "18", "--block_out_channels", "8", "16", "16", "--norm_num_groups", "4"])
    with pytest.raises(ValueError, match="--resolution 18 must be divisible by 4"):
        train.build_unet(args, None)


def test_class_conditional_without_labels_lists_the_columns(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / f"{i}.png")
    args = train.parse_args(["--dataset_name", str(folder), "--class_conditional", "--resolution", "16"])
    with pytest.raises(ValueError, match=r"class labels are needed; 'label' is not one of \[\]"):
        train.load_split(args, "train", None)


def test_evaluate_script_merges_new_numbers_into_metrics(tmp_path):
    out = tmp_path / "ddpm"
    run(*tiny_args(out, "--class_conditional", "--max_train_steps", "2", "--num_likelihood_images", "0", "--guidance_scale", "2.0"))
    before = json.loads((out / "metrics.json").read_text())
    evaluate = load_script("evaluate_diffusion")
    metrics = evaluate.main([str(out), "--guidance_scale", "1.0", "--num_generated", "5", "--num_inference_steps", "2", "--max_eval_samples", "8", "--sample_grid"])
    after = json.loads((out / "metrics.json").read_text())
    assert after["guidance_scale"] == 1.0 and after["generated"] == 5 and before["guidance_scale"] == 2.0
    assert after["train_steps"] == before["train_steps"] == 2  # what it does not recompute stays
    assert after["oracle_validity"] == metrics["oracle_validity"]


def test_step_floor_counts_the_arithmetic_of_the_primitives_onednn_ran(monkeypatch):
    """benchmarks/diffusion_step_floor.py reads oneDNN's verbose log: the FLOPs it counts for a convolution's forward
    and backward passes and for a batched matmul are the analytic ones, and each pass is timed under its own key."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    floor = load_script("diffusion_step_floor", folder="benchmarks")
    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    x = torch.randn(4, 8, 12, 12, requires_grad=True)
    a, b = torch.randn(3, 5, 32), torch.randn(3, 32, 7)

    def work():
        conv(x).sum().backward()
        torch.bmm(a, b)

    lines = floor.onednn_log(work)
    if not lines:
        pytest.skip("this PyTorch build runs no oneDNN primitives here")
    fields = [line.split(",") for line in lines]
    convolutions = {f[7]: floor.problem_flops("convolution", f[-2]) for f in fields if f[5] == "convolution"}
    conv_flops = 2 * 4 * 8 * 16 * 3 * 3 * 12 * 12
    assert convolutions == dict.fromkeys(("forward_training", "backward_data", "backward_weights"), conv_flops)
    summary = floor.summarise(lines)["by_primitive"]
    assert {"convolution forward_training", "convolution backward_data", "convolution backward_weights"} <= set(summary)
    assert all(summary[key]["calls"] == 1 for key in summary if key.startswith("convolution"))
    assert floor.problem_flops("convolution", "mb4_ic8oc16_ih12oh12kh3sh1dh0ph1_iw12ow12kw3sw1dw0pw1") == conv_flops
    assert floor.problem_flops("convolution", "mb4_g2ic8oc16_ih12oh12kh3sh1dh0ph1_iw12ow12kw3sw1dw0pw1") == conv_flops // 2
    assert floor.problem_flops("matmul", "3x5x32:3x32x7") == 2 * 3 * 5 * 32 * 7
