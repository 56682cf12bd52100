"""training_scripts/train_autoencoder.py end to end, on tiny models and a small shapes world."""

import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scripts import load_script, without_flag

from hf_genzoo import AutoencoderModel, AutoencoderPipeline, VAEModel, VQVAEModel
from hf_genzoo.utils import image_grid

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training_scripts" / "train_autoencoder.py"


train = load_script("train_autoencoder")


def tiny_args(output_dir, *extra):
    return [
        "--output_dir", str(output_dir), "--resolution", "16", "--block_out_channels", "8", "16",
        "--latent_channels", "4", "--train_batch_size", "16", "--max_train_samples", "128", "--max_eval_samples", "32",
        "--max_train_steps", "6", "--checkpointing_steps", "3", "--validation_steps", "3", "--num_generated", "16",
        "--iwae_samples", "2", "--lr_warmup_steps", "0", "--learning_rate", "2e-3", "--mixed_precision", "no",
        *extra,
    ]


pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


def run(*argv):
    return train.main(train.parse_args(list(argv)))


def test_mixed_precision_auto_runs_and_the_card_names_what_it_chose(tmp_path, monkeypatch):
    """`--mixed_precision auto` takes bf16 only on a CPU with native bf16 kernels, and the model card's command
    names the precision the run used, so the command repeats the run on any machine."""
    from hf_genzoo.training_utils import cpu_runs_bf16_natively

    out = tmp_path / "auto"
    argv = tiny_args(out, "--model", "ae", "--max_train_steps", "2", "--mixed_precision", "auto")
    monkeypatch.setattr(sys, "argv", ["train_autoencoder.py", *argv])
    run(*argv)
    chosen = "bf16" if cpu_runs_bf16_natively() else "no"
    card = (out / "README.md").read_text()
    assert f"--max_train_steps 2 --mixed_precision {chosen}" in card and "--mixed_precision auto" not in card


def test_vae_run_writes_a_loadable_model_folder(tmp_path):
    out = tmp_path / "vae"
    run(*tiny_args(out, "--model", "vae", "--mixed_precision", "bf16"))
    for name in ("model_index.json", "model/config.json", "model/diffusion_pytorch_model.safetensors", "README.md", "samples.png", "metrics.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    assert (out / "validation" / "step-000003.png").is_file()
    assert not (out / ".staging").exists()

    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("mse", "psnr", "elbo_nats", "iwae_nats", "elbo_bpd", "iwae_bpd", "mig", "oracle_validity", "oracle_coverage"):
        assert isinstance(metrics[key], float), key
    assert metrics["iwae_nats"] >= metrics["elbo_nats"] - 1.0  # the IWAE bound is the tighter one (up to noise)
    # the Bernoulli bounds are labelled as such; beside them the bounds on the 8-bit images (σ fitted on training images)
    assert metrics["likelihood"] == "bernoulli" and isinstance(metrics["decoder_log_scale_8bit"], float)
    assert 0 < metrics["iwae_bpd_8bit"] <= metrics["elbo_bpd_8bit"] + 0.05
    assert metrics["train_steps"] == 6
    # samples come from the latent mixture fitted after training; N(0, I) is judged beside it
    assert metrics["latent_prior_components"] == 100 and math.isfinite(metrics["latent_prior_log_likelihood"])
    assert isinstance(metrics["oracle_validity_normal_prior"], float)
    assert 0.0 <= metrics["oracle_validity_reconstructions"] <= 1.0
    # and the same mixture samples after the decode/re-encode chain (--markov_chain_steps, default 20)
    assert 0.0 <= metrics["oracle_validity_markov_chain"] <= 1.0 and "oracle_coverage_markov_chain" in metrics

    card = (out / "README.md").read_text()
    assert "library_name: hf_genzoo" in card and "model-index" in card and "import hf_genzoo" in card
    words = " ".join(card.split())
    assert "`bernoulli`: bounds under the Bernoulli model" in words and "compare with a diffusion model's" in words
    assert "samples.png" in card and "train_autoencoder.py" in card

    pipe = AutoencoderPipeline.from_pretrained(out)
    assert isinstance(pipe.model, VAEModel) and pipe.model.config.scaling_factor != 1.0
    assert pipe.model.config.latent_prior == "mixture" and pipe.model.latent_prior_fitted
    assert len(pipe(batch_size=2).images) == 2
    assert len(pipe(batch_size=2, prior="normal").images) == 2


def test_vae_sample_grid_shows_the_draws_before_and_after_the_chain(tmp_path, capsys, caplog):
    """samples.png: 8 held-out images, their reconstructions, 32 draws from the latent mixture, and the same 32
    draws after --markov_chain_steps decode/re-encode steps: the samples the chain's validity figure judges, enlarged
    to 128-pixel tiles with each row's name beside it. The run logs each metric's time and ends with a summary."""
    import logging

    import numpy as np
    from PIL import Image

    out = tmp_path / "vae"
    with caplog.at_level(logging.INFO, logger="hf_genzoo.metrics.evaluate"):
        run(*tiny_args(out, "--model", "vae", "--markov_chain_steps", "3"))
    timed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evaluation: ")]
    assert any("reconstruction, ELBO, IWAE took" in m for m in timed) and any("16 samples after 3 chain steps took" in m for m in timed)
    summary = capsys.readouterr().out
    assert f"saved to {out}" in summary and "measured: mse " in summary and "elbo_nats -" in summary and "time: training " in summary
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_seconds"] >= 0 and "iwae_images" not in metrics  # 32 held-out images: all of them
    picture = np.asarray(Image.open(out / "samples.png"))
    tile, rows, scale = 16 + 1, 2 + 4 + 4, 8  # 16-pixel images, 1 pixel padding, 8 per row, enlarged to 128-pixel tiles
    width = (8 * tile + 1) * scale
    grid, labels = picture[:, -width:], picture[:, :-width]  # the images, and the label column on their left
    assert grid.shape == ((rows * tile + 1) * scale, width, 3)
    assert labels.shape[1] > 0 and labels.min() < 100 and labels.max() == 255  # dark text on white
    np.testing.assert_array_equal(grid[::scale, ::scale].repeat(scale, 0).repeat(scale, 1), grid)  # nearest neighbour

    model = AutoencoderPipeline.from_pretrained(out).model
    with torch.no_grad():
        z = model.sample_prior(32, generator=torch.Generator().manual_seed(0))  # the grid's draws (seed 0)
        direct = model.decode(z).sample
        chained = model.decode(model.markov_chain(z, 3)).sample
    assert not torch.allclose(direct, chained)
    expected = np.asarray(image_grid(torch.cat([direct, chained]), nrow=8, scale=scale))
    np.testing.assert_array_equal(grid[(2 * tile + 1) * scale :], expected[scale:])  # the sample rows, below the two image rows

    # the card says what the rows are and how to draw the chained samples its *_markov_chain numbers judge
    card = (out / "README.md").read_text()
    assert "the same 32 draws after 3 decode/re-encode steps" in card
    assert "pipe(batch_size=16, markov_chain_steps=3)" in card and "`*_markov_chain` numbers" in card


def test_vae_mixture_with_more_components_than_images_stops_before_training(tmp_path):
    out = tmp_path / "vae"
    with pytest.raises(ValueError, match=r"--latent_prior_components 500 is more than the 128 training images"):
        run(*tiny_args(out, "--model", "vae", "--latent_prior_components", "500"))
    assert not list(out.glob("checkpoint-*"))


@pytest.mark.parametrize("variant", ["ae", "denoising_ae", "sparse_ae", "masked_ae"])
def test_every_autoencoder_variant_trains_and_samples(variant, tmp_path):
    out = tmp_path / variant
    run(*tiny_args(out, "--model", variant, "--max_train_steps", "2", "--checkpointing_steps", "2", "--latent_type", "spatial"))
    pipe = AutoencoderPipeline.from_pretrained(out)
    assert isinstance(pipe.model, AutoencoderModel)
    expected = {"ae": "none", "denoising_ae": "gaussian", "sparse_ae": "none", "masked_ae": "patch_mask"}[variant]
    assert pipe.model.config.corruption == expected
    assert (pipe.model.config.sparsity_weight > 0) == (variant == "sparse_ae")
    assert pipe.model.latent_gaussian_fitted  # GLO sampling distribution stored with the weights
    assert pipe(batch_size=2, output_type="np").images.shape == (2, 16, 16, 3)
    assert "mse" in json.loads((out / "metrics.json").read_text())


def test_resume_continues_exactly(tmp_path, caplog):
    """A run resumed from its step-3 checkpoint ends with the same weights as the uninterrupted run."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    args = ("--model", "vae", "--use_ema", "--gradient_accumulation_steps", "2")
    run(*tiny_args(full, *args))
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")  # what a run killed after step 4 left
    # the resume command does not repeat --learning_rate 2e-3: the checkpoint's schedule goes on, not the default's
    with caplog.at_level("INFO"):
        run(*without_flag(tiny_args(resumed, *args, "--resume_from_checkpoint", "latest"), "--learning_rate"))
    assert "resumed with the checkpoint's learning-rate schedule" in caplog.text
    a = load_file(full / "model" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "model" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "diverged"
    with pytest.raises(train.TrainingDivergedError, match=r"at step (\d+).*(checkpoint-\d+)") as excinfo:
        run(*tiny_args(out, "--model", "vae", "--learning_rate", "1e30", "--max_train_steps", "50", "--checkpointing_steps", "1"))
    assert not (out / "model_index.json").exists()  # no model folder from a diverged run
    step, checkpoint = re.search(r"at step (\d+).*(checkpoint-\d+)", str(excinfo.value)).groups()
    assert checkpoint == f"checkpoint-{int(step) - 1}"
    state = out / checkpoint
    assert (state / "model.safetensors").is_file()
    weights = load_file(state / "model.safetensors")  # the checkpoint's weights still load into the model class
    model = train.build_model(train.parse_args(tiny_args(out, "--model", "vae")))
    model.load_state_dict(weights)
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_unknown_model_lists_the_choices(capsys):
    with pytest.raises(SystemExit) as excinfo:
        train.parse_args(["--model", "gan"])
    assert excinfo.value.code == 2
    assert "invalid choice: 'gan' (choose from 'ae', 'denoising_ae', 'masked_ae', 'sparse_ae', 'vae', 'vqvae')" in capsys.readouterr().err


def test_vqvae_run_writes_a_loadable_folder_with_codebook_metrics(tmp_path):
    out, K = tmp_path / "vqvae", 32
    run(*tiny_args(out, "--model", "vqvae", "--num_vq_embeddings", str(K), "--max_train_steps", "4", "--checkpointing_steps", "4", "--validation_steps", "2"))
    for name in ("model_index.json", "model/config.json", "model/diffusion_pytorch_model.safetensors", "README.md", "samples.png", "metrics.json"):
        assert (out / name).is_file(), name
    assert (out / "validation" / "step-000002.png").is_file()

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mse"] > 0 and 0 < metrics["psnr"] < 60
    assert metrics["psnr"] == pytest.approx(10 * math.log10(4 / metrics["mse"]), abs=3.0)  # 10 log10(1 / MSE_[0,1]), per image
    for prefix in ("", "train_window_"):
        usage, perplexity, dead = (metrics[prefix + key] for key in ("codebook_usage", "perplexity", "dead_codes"))
        assert 0 < usage <= 1 and 1 <= perplexity <= usage * K + 1e-6, (prefix, usage, perplexity)
        assert isinstance(dead, int) and dead == K - round(usage * K)
    assert "elbo_nats" not in metrics and "oracle_validity" not in metrics  # it cannot sample without its prior
    assert 0 <= metrics["oracle_validity_reconstructions"] <= 1  # the ceiling of any prior's samples

    card = (out / "README.md").read_text()
    assert "VQVAEModel" in card and "codebook_usage" in card and "VQVAEPipeline" in card and "pipe(batch_size" not in card
    two_rows = image_grid(torch.zeros(16, 3, 16, 16), nrow=8, scale=8).size  # held-out images and reconstructions, no samples
    from PIL import Image

    size = Image.open(out / "samples.png").size
    assert size[1] == two_rows[1] and size[0] > two_rows[0]  # and a label column

    pipe = AutoencoderPipeline.from_pretrained(out)
    assert isinstance(pipe.model, VQVAEModel) and pipe.model.config.scaling_factor == 1.0
    assert pipe.model.config.num_vq_embeddings == K and pipe.model.embed_dim == 4  # D = --latent_channels
    assert pipe.reconstruct(torch.zeros(2, 3, 16, 16), output_type="np").images.shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="VQVAEPipeline"):
        pipe(batch_size=1)


def fine_tune_args(output_dir, pretrained, *extra):
    """tiny_args without the architecture flags (the pretrained model's config is the architecture)."""
    argv = tiny_args(output_dir, "--pretrained_model_name_or_path", str(pretrained), "--train_modules", "decoder", "--checkpointing_steps", "6", *extra)
    for flag, count in (("--block_out_channels", 2), ("--latent_channels", 1)):
        i = argv.index(flag)
        del argv[i : i + 1 + count]
    return argv


def test_decoder_fine_tuning_keeps_the_codes_and_changes_only_the_decoder(tmp_path):
    """--train_modules decoder on a trained VQ-VAE (with dead-code restart on): the encoder, codebook and therefore
    every image's codes are unchanged, so a prior trained on them still fits; the decoder has moved."""
    base, tuned = tmp_path / "vqvae", tmp_path / "tuned"
    first = ["--model", "vqvae", "--num_vq_embeddings", "32", "--dead_code_steps", "1", "--checkpointing_steps", "6"]
    run(*tiny_args(base, *first, "--max_train_steps", "2"))
    run(*fine_tune_args(tuned, base, "--model", "vqvae"))
    before = AutoencoderPipeline.from_pretrained(base).model
    after = AutoencoderPipeline.from_pretrained(tuned).model
    assert after.config.num_vq_embeddings == 32 and after.config.latent_channels == 4  # the pretrained config
    state_before, state_after = before.state_dict(), after.state_dict()
    for name, value in state_before.items():
        if name.split(".")[0] in before.decoder_modules:
            continue
        assert torch.equal(state_after[name], value), name
    assert any(not torch.equal(state_after[n], v) for n, v in state_before.items() if n.startswith("decoder."))
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    assert torch.equal(before.encode_indices(images), after.encode_indices(images))
    card = (tuned / "README.md").read_text()
    assert f"fine-tuned from `{base}` (the decoder only; encoder and codebook frozen)" in card
    assert "base_model" not in card  # a local folder is no Hub base model


def test_decoder_fine_tuning_of_a_vae_from_a_model_folder(tmp_path):
    base, tuned = tmp_path / "vae", tmp_path / "tuned"
    run(*tiny_args(base, "--model", "vae", "--max_train_steps", "2", "--checkpointing_steps", "6"))
    run(*fine_tune_args(tuned, base / "model", "--model", "vae"))
    before = VAEModel.from_pretrained(base / "model").state_dict()
    after = VAEModel.from_pretrained(tuned / "model").state_dict()
    assert all(torch.equal(after[n], v) for n, v in before.items() if n.startswith("encoder."))
    assert any(not torch.equal(after[n], v) for n, v in before.items() if n.startswith("decoder."))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "vae", "--train_modules", "decoder"], "--train_modules decoder fine-tunes a trained model: it needs --pretrained_model_name_or_path"),
        (["--model", "vae", "--pretrained_model_name_or_path", "x", "--latent_channels", "8"], "--latent_channels: the architecture comes from"),
        (["--model", "vqvae", "--pretrained_model_name_or_path", "x", "--dead_code_steps=5"], "--dead_code_steps: the architecture comes from"),
    ],
)
def test_fine_tuning_flags_are_refused_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as excinfo:
        train.parse_args(argv)
    assert excinfo.value.code == 2
    assert message in capsys.readouterr().err


def test_pretrained_model_of_another_class_is_refused_naming_both(tmp_path):
    run(*tiny_args(tmp_path / "ae", "--model", "ae", "--max_train_steps", "1", "--checkpointing_steps", "6", "--iwae_samples", "0"))
    with pytest.raises(ValueError, match="holds no VQVAEModel"):
        run(*fine_tune_args(tmp_path / "x", tmp_path / "ae", "--model", "vqvae"))
    with pytest.raises(ValueError, match="holds AutoencoderModel, not VAEModel"):
        run(*fine_tune_args(tmp_path / "y", tmp_path / "ae" / "model", "--model", "vae"))


def test_vqvae_resume_continues_exactly(tmp_path):
    """EMA codebook, k-means init and dead-code restarts (their buffers and random draws) resume exactly too. With
    K = 256 codes for 16·8·8 vectors a batch, codes die and are restarted at steps 3 and 4, after the checkpoint."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    args = (
        "--model", "vqvae", "--num_vq_embeddings", "256", "--ema_codebook", "--dead_code_steps", "2", "--kmeans_init",
        "--use_ema", "--max_train_steps", "4", "--checkpointing_steps", "2", "--validation_steps", "100",
    )
    run(*tiny_args(full, *args))
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")
    run(*tiny_args(resumed, *args, "--resume_from_checkpoint", "latest"))
    a = load_file(full / "model" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "model" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and "quantize_layer.ema_cluster_size" in a
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)
    assert json.loads((full / "metrics.json").read_text())["psnr"] == json.loads((resumed / "metrics.json").read_text())["psnr"]


def test_gumbel_quantizer_trains_and_anneals(tmp_path):
    out = tmp_path / "gumbel"
    run(*tiny_args(out, "--model", "vqvae", "--quantizer", "gumbel", "--num_vq_embeddings", "16", "--max_train_steps", "2", "--checkpointing_steps", "2"))
    pipe = AutoencoderPipeline.from_pretrained(out)
    assert pipe.model.config.quantizer == "gumbel"
    assert "codebook_usage" in json.loads((out / "metrics.json").read_text())
    tau = [train.gumbel_temperature(step, 5, 1.0, 1 / 16) for step in range(5)]
    assert tau[0] == 1.0 and abs(tau[-1] - 1 / 16) < 1e-12 and tau[2] == pytest.approx(0.25)  # geometric: 1, ½, ¼, ⅛, 1/16


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "vae", "--num_vq_embeddings", "64"], "--model vae does not take --num_vq_embeddings"),
        (["--model", "ae", "--ema_codebook", "--kmeans_init"], "--model ae does not take --ema_codebook, --kmeans_init"),
        (["--model", "vae", "--dead_code_steps", "100"], "--dead_code_steps"),
        (["--model", "vae", "--quantizer", "gumbel"], "--quantizer"),
        (["--model", "vqvae", "--latent_type", "vector"], "--latent_type vector"),
        (["--model", "vqvae", "--quantizer", "gumbel", "--kmeans_init"], "--quantizer gumbel does not take --kmeans_init"),
        (["--model", "vqvae", "--gumbel_temperature", "0.5"], "--quantizer vq does not take --gumbel_temperature"),
        (["--model", "vqvae", "--codebook_ema_decay", "0.9"], "--codebook_ema_decay needs --ema_codebook"),
        (["--model", "vae", "--markov_chain_steps", "-1"], "--markov_chain_steps must be ≥ 0, got -1"),
    ],
)
def test_vqvae_flags_are_refused_where_they_do_not_apply(argv, message, capsys):
    with pytest.raises(SystemExit) as excinfo:
        train.parse_args(argv)
    assert excinfo.value.code == 2
    assert message in capsys.readouterr().err


def test_latent_type_default_depends_on_the_model():
    vqvae, vae = train.parse_args(["--model", "vqvae"]), train.parse_args(["--model", "vae"])
    assert (vqvae.latent_type, vae.latent_type) == ("spatial", "vector")
    assert (vqvae.num_vq_embeddings, vqvae.quantizer, vqvae.ema_codebook, vqvae.dead_code_steps) == (256, "vq", False, 0)
    # a fitted latent mixture for vector latents; spatial ones (latent-diffusion first stages) keep N(0, I)
    spatial_vae = train.parse_args(["--model", "vae", "--latent_type", "spatial"])
    assert (vae.latent_prior, spatial_vae.latent_prior) == ("mixture", "normal")
    assert vae.num_vq_embeddings is None and vae.ema_codebook is None


def test_push_to_hub_uploads_the_model_folder(hub, hub_cache, tmp_path):
    out = tmp_path / "pushed"
    run(*tiny_args(out, "--model", "vae", "--max_train_steps", "2", "--push_to_hub", "--hub_model_id", "genzoo-tests/shapes-vae"))
    files = set(hub.list_files("genzoo-tests/shapes-vae"))
    assert {"model_index.json", "README.md", "samples.png", "metrics.json", "model/diffusion_pytorch_model.safetensors"} <= files
    assert not any(f.startswith(("checkpoint-", "validation/", "logs/")) for f in files)
    pipe = AutoencoderPipeline.from_pretrained("genzoo-tests/shapes-vae")
    assert isinstance(pipe.model, VAEModel)


def test_two_gloo_ranks_on_cpu_resume_exactly(tmp_path):
    """`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2` runs two real data-parallel ranks; a
    two-rank run resumed from its step-2 checkpoint ends with the uninterrupted run's weights. Every rank takes part
    in `save_state` (each rank's RNG states are in the checkpoint), as DeepSpeed and FSDP's sharded states need."""
    from accelerate.test_utils import execute_subprocess_async

    def launch(out, *extra):
        env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517", str(SCRIPT),
            *tiny_args(out, "--model", "vae", "--max_train_steps", "4", "--checkpointing_steps", "2", "--train_batch_size", "8",
                       "--validation_steps", "100", "--num_generated", "0", "--iwae_samples", "0", "--latent_prior", "normal", *extra),
        ]
        result = execute_subprocess_async(cmd, env=env)
        return "\n".join(result.stdout + result.stderr)

    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert "on 2 process(es)" in launch(full)
    assert (full / "model_index.json").is_file()
    assert sorted(p.name for p in full.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]  # none left as .tmp
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in (full / "checkpoint-2").iterdir()}

    resumed.mkdir()
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")  # what a two-rank run killed at step 3 left
    assert "resumed from" in launch(resumed, "--resume_from_checkpoint", "latest")
    a = load_file(full / "model" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "model" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)


def test_report_to_tensorboard_logs_loss_terms_and_validation_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tracked"
    run(*tiny_args(out, "--model", "vae", "--max_train_steps", "4", "--validation_steps", "2", "--report_to", "tensorboard"))
    (events,) = (out / "logs" / "train_autoencoder").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    assert {"loss", "reconstruction", "kl", "elbo", "lr"} <= set(accumulator.Tags()["scalars"])
    assert [event.step for event in accumulator.Scalars("loss")] == [1, 2, 3, 4]
    assert [event.step for event in accumulator.Images("validation")] == [2, 4]
