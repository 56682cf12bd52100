"""training_scripts/train_latent_diffusion.py end to end on a tiny first stage and a small shapes world: the saved
folders (text: a Stable Diffusion folder), the latent cache (reused without the encoder, rebuilt when corrupt, never
shared between first stages), exact resume, a frozen pretrained text encoder, two gloo ranks, and its errors."""

import json
import os
import subprocess
import sys

import datasets
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DModel
from safetensors.torch import load_file

from scripts import ROOT, load_script

from hf_genzoo import LatentDiffusionPipeline, VAEModel
from hf_genzoo.data.latent_cache import latent_statistics

train = load_script("train_latent_diffusion")
pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


@pytest.fixture(scope="module")
def first_stage(tmp_path_factory):
    """A random spatial VAE folder: 16×16 images → 4×4×4 latents (factor 4, as KL-f4)."""
    folder = tmp_path_factory.mktemp("kl-f4")
    torch.manual_seed(0)
    VAEModel(block_out_channels=(8, 8, 16), norm_num_groups=4, latent_channels=4, sample_size=16).save_pretrained(folder)
    return folder


def tiny_args(vae, output_dir, cache_dir, *extra):
    return [
        "--vae", str(vae), "--output_dir", str(output_dir), "--cache_dir", str(cache_dir), "--resolution", "16",
        "--unet_preset", "tiny", "--block_out_channels", "16", "32", "--text_encoder_hidden_size", "16",
        "--train_batch_size", "8", "--max_train_samples", "64", "--max_eval_samples", "16", "--max_train_steps", "4",
        "--checkpointing_steps", "2", "--validation_steps", "2", "--num_generated", "8", "--num_inference_steps", "2",
        "--num_likelihood_images", "4", "--likelihood_timesteps", "3", "--num_train_timesteps", "50",
        "--num_validation_images", "8", "--lr_warmup_steps", "0", "--mixed_precision", "no", *extra,
    ]


def run(*argv):
    return train.main(train.parse_args(list(argv)))


def cache_folders(cache_dir):
    return sorted(p for p in os.listdir(cache_dir) if p.startswith("latents-") and not p.endswith(".tmp"))


def test_text_run_writes_a_stable_diffusion_folder_and_reuses_its_latent_cache(tmp_path, first_stage, monkeypatch, caplog):
    out, cache = tmp_path / "ldm", tmp_path / "cache"
    run(*tiny_args(first_stage, out, cache))
    for name in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer/tokenizer.json",
                 "scheduler/scheduler_config.json", "README.md", "samples.png", "metrics.json", "validation/step-000004.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("latent_bits_per_dim", "validity", "one_object_color_accuracy", "two_object_binding", "scaling_factor"):
        assert isinstance(metrics[key], float), key
    assert metrics["one_object_captions"] + metrics["two_object_captions"] == 8

    # the scaling factor is 1 / std of the cached training latents, stored in the saved first stage's config
    train_cache = [datasets.Dataset.from_file(str(cache / name / "data.arrow")) for name in cache_folders(cache)]
    train_cache = max(train_cache, key=len)
    assert len(train_cache) == 64
    _, std = latent_statistics(train_cache)
    vae_config = json.loads((out / "vae" / "config.json").read_text())
    assert vae_config["scaling_factor"] == pytest.approx(1 / std) == pytest.approx(metrics["scaling_factor"])

    # the folder is a Stable Diffusion folder: the stock pipeline gives our images
    pipe = LatentDiffusionPipeline.from_pretrained(out)
    stock = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    images = [
        p("a small red circle at the center", num_inference_steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(0), output_type="np").images
        for p in (pipe, stock)
    ]
    assert (images[0] == images[1]).all()
    card = (out / "README.md").read_text()
    assert "train_latent_diffusion.py" in card and "StableDiffusionPipeline" in card and "text-to-image" in card

    # a second run on the same data reads the cache and never runs the encoder
    def refuse(*args, **kwargs):
        raise AssertionError("the first stage encoded images although the cache holds them")

    def generate_nothing(*args, **kwargs):
        raise AssertionError("the shapes world was generated again although the cache holds its latents")

    monkeypatch.setattr(VAEModel, "encode", refuse)
    monkeypatch.setattr("hf_genzoo.data.loading.load_source_dataset", generate_nothing)  # memory must not grow with the data
    before = cache_folders(cache)
    run(*tiny_args(first_stage, tmp_path / "again", cache, "--num_likelihood_images", "0"))
    assert cache_folders(cache) == before


def test_another_first_stage_or_corrupt_cache_is_encoded_anew(tmp_path, first_stage, caplog):
    cache = tmp_path / "cache"
    run(*tiny_args(first_stage, tmp_path / "a", cache, "--conditioning", "none", "--max_train_steps", "2", "--num_likelihood_images", "0"))
    first = cache_folders(cache)
    assert len(first) == 2  # train and held-out

    # corrupt the training cache: truncated Arrow file → rebuilt with a warning, never trained on
    data = cache / first[0] / "data.arrow"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    (cache / first[1] / "manifest.json").unlink()
    run(*tiny_args(first_stage, tmp_path / "b", cache, "--conditioning", "none", "--max_train_steps", "2", "--num_likelihood_images", "0"))
    assert cache_folders(cache) == first
    assert "corrupt or stale" in caplog.text and "has no manifest" in caplog.text
    assert len(datasets.Dataset.from_file(str(data))) in (64, 16)

    # another first stage (other weights) never reuses these latents
    other = tmp_path / "other-vae"
    torch.manual_seed(1)
    VAEModel(block_out_channels=(8, 8, 16), norm_num_groups=4, latent_channels=4, sample_size=16).save_pretrained(other)
    run(*tiny_args(other, tmp_path / "c", cache, "--conditioning", "none", "--max_train_steps", "2", "--num_likelihood_images", "0"))
    assert len(cache_folders(cache)) == 4


def test_resume_continues_exactly(tmp_path, first_stage):
    """A run resumed from its step-2 checkpoint ends with the same weights (EMA included) as the uninterrupted one,
    and keeps the checkpoint's learning-rate schedule."""
    import shutil

    cache = tmp_path / "cache"
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    common = ("--conditioning", "class", "--gradient_accumulation_steps", "2", "--num_generated", "4", "--num_likelihood_images", "0", "--validation_steps", "100")
    run(*tiny_args(first_stage, full, cache, *common))
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")
    run(*tiny_args(first_stage, resumed, cache, *common, "--resume_from_checkpoint", "latest"))
    a = load_file(full / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pipe = LatentDiffusionPipeline.from_pretrained(full)
    assert isinstance(pipe.unet, UNet2DModel) and pipe.num_classes == 21


def test_class_run_is_read_by_a_domain_classifier(tmp_path, first_stage):
    """--fid_classifier (as for MNIST, which the shapes oracle cannot read): FID against held-out images and the share
    of samples the classifier assigns to the class asked for, with samples resized to the classifier's size."""
    from hf_genzoo.metrics import DomainClassifier

    classifier = tmp_path / "classifier"
    torch.manual_seed(0)
    DomainClassifier(in_channels=3, num_classes=21, sample_size=8, block_out_channels=(8, 16), feature_dim=6).save_pretrained(classifier)
    out = tmp_path / "ldm"
    run(*tiny_args(first_stage, out, tmp_path / "cache", "--conditioning", "class", "--max_train_steps", "2", "--num_likelihood_images", "0", "--fid_classifier", str(classifier)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["classifier_accuracy"] <= 1.0 and metrics["fid_domain"] > 0 and sum(metrics["class_histogram"]) == 8
    with pytest.raises(SystemExit):
        train.parse_args(["--vae", "x", "--conditioning", "text", "--fid_classifier", str(classifier)])
    with pytest.raises(SystemExit):
        train.parse_args(["--vae", "x", "--conditioning", "class", "--fid_classifier", str(tmp_path / "missing")])


def test_frozen_pretrained_text_encoder_is_cached_with_the_latents(tmp_path, first_stage):
    from tiny_components import tiny_text_encoder, tiny_tokenizer

    encoder_folder = tmp_path / "encoder"
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(encoder_folder / "tokenizer")
    tiny_text_encoder(tokenizer).save_pretrained(encoder_folder / "text_encoder")
    out, cache = tmp_path / "ldm", tmp_path / "cache"
    run(*tiny_args(first_stage, out, cache, "--text_encoder", str(encoder_folder), "--max_train_steps", "2", "--num_likelihood_images", "0", "--num_generated", "0"))
    assert (out / "model_index.json").exists() and json.loads((out / "metrics.json").read_text())["generated"] == 0  # no samples asked for: the folder is still written
    cached = [datasets.Dataset.from_file(str(cache / name / "data.arrow")) for name in cache_folders(cache)]
    assert any("prompt_embeds" in c.column_names and c.features["prompt_embeds"].shape == (16, 16) for c in cached)
    saved = load_file(out / "text_encoder" / "model.safetensors")
    original = tiny_text_encoder(tokenizer).state_dict()
    assert all(torch.equal(saved[k], original[k]) for k in saved)  # frozen


def test_bad_first_stage_and_flags_are_refused(tmp_path):
    unet_folder = tmp_path / "unet"
    UNet2DModel(sample_size=8, block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, in_channels=4, out_channels=4).save_pretrained(unet_folder)
    with pytest.raises(ValueError, match="holds UNet2DModel, not a first stage"):
        train.load_first_stage(str(unet_folder))
    vector = tmp_path / "vector"
    VAEModel(latent_type="vector", block_out_channels=(8, 16), norm_num_groups=4, sample_size=16).save_pretrained(vector)
    with pytest.raises(ValueError, match="latent_type='vector'"):
        train.load_first_stage(str(vector))
    with pytest.raises(SystemExit):
        train.parse_args(["--vae", "x", "--conditioning", "class", "--text_encoder", "y"])
    with pytest.raises(SystemExit):
        train.parse_args(["--vae", "x", "--conditioning_dropout", "1.0"])


def test_two_gloo_ranks_on_cpu(tmp_path, first_stage):
    """`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`: the main process builds the cache, the
    other waits for it, each rank trains on its shard."""
    out, cache = tmp_path / "ldm", tmp_path / "cache"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "training_scripts" / "train_latent_diffusion.py"),
        *tiny_args(first_stage, out, cache, "--conditioning", "none", "--max_train_steps", "2", "--num_likelihood_images", "0"),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 process(es)" in result.stderr
    assert (out / "model_index.json").is_file() and len(cache_folders(cache)) == 2
