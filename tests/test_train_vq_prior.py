"""training_scripts/train_vq_prior.py end to end: a tiny VQ-VAE (random weights, saved as a folder) encodes a small
shapes world, a tiny GPT-2 prior learns its codes, and the saved VQVAEPipeline loads and samples."""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file
from scripts import load_script, without_flag

from hf_genzoo import AutoencoderPipeline, VQVAEModel, VQVAEPipeline

train = load_script("train_vq_prior")
pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


@pytest.fixture(scope="module")
def vqvae_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vqvae")
    torch.manual_seed(0)
    VQVAEModel(block_out_channels=(8, 16), latent_channels=4, num_vq_embeddings=16, sample_size=16, norm_num_groups=4).save_pretrained(folder)
    return folder


def tiny_args(vqvae, output_dir, *extra):
    return [
        "--vqvae", str(vqvae), "--output_dir", str(output_dir), "--resolution", "16", "--n_layer", "1", "--n_head", "2",
        "--n_embd", "16", "--train_batch_size", "8", "--max_train_samples", "64", "--max_eval_samples", "16",
        "--max_train_steps", "6", "--checkpointing_steps", "3", "--validation_steps", "3", "--num_generated", "8",
        "--lr_warmup_steps", "0", "--learning_rate", "1e-3", "--mixed_precision", "no", *extra,
    ]


def run(*argv):
    return train.main(train.parse_args(list(argv)))


def test_class_conditional_prior_writes_a_loadable_pipeline(vqvae_folder, tmp_path):
    out = tmp_path / "prior"
    run(*tiny_args(vqvae_folder, out, "--class_conditional", "--use_ema"))
    for name in ("model_index.json", "README.md", "samples.png", "metrics.json", "vqvae/config.json", "prior/config.json", "validation/step-000003.png"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 6 and metrics["generated"] == 8
    # 64 codes per image, K = 16: the NLL per code is near ln 16 = 2.77 nats for a barely trained prior
    assert 0.5 < metrics["prior_nll_nats_per_code"] < 5
    torch.testing.assert_close(torch.tensor(metrics["prior_bits_per_dim"]), torch.tensor(metrics["prior_nll_nats_per_code"] * 64 / (3 * 256 * 0.6931471805599453)))
    assert 0 <= metrics["oracle_validity"] <= 1 and "oracle_attribute_accuracy" in metrics
    pipe = VQVAEPipeline.from_pretrained(out)
    assert pipe.num_classes == 21 and pipe.prior.config.vocab_size == 16 + 1 + 21
    images = pipe(batch_size=2, class_labels=[0, 5], generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (2, 3, 16, 16)
    card = (out / "README.md").read_text()
    assert "VQVAEPipeline" in card and "train_vq_prior.py" in card and "prior_nll_nats_per_code" in card


def test_evaluate_script_judges_other_sampling_settings(vqvae_folder, tmp_path):
    out = tmp_path / "prior"
    run(*tiny_args(vqvae_folder, out, "--max_train_steps", "2"))
    evaluate = load_script("evaluate_vq_prior")
    results = evaluate.main([str(out), "--temperature", "1.0", "0.5", "--top_k", "0", "3", "--num_generated", "4", "--max_eval_samples", "8", "--output", str(tmp_path / "sweep.json")])
    assert [(r["temperature"], r["top_k"]) for r in results] == [(1.0, None), (1.0, 3), (0.5, None), (0.5, 3)]
    assert all(0 <= r["oracle_validity"] <= 1 and r["generated"] == 4 for r in results)
    assert all(0 <= r["oracle_novel_fraction"] <= 1 for r in results)  # valid scenes the training split lacks
    assert json.loads((tmp_path / "sweep.json").read_text()) == results


def test_evaluate_script_decodes_with_a_fine_tuned_decoder_and_refuses_other_codebooks(vqvae_folder, tmp_path):
    out = tmp_path / "prior"
    run(*tiny_args(vqvae_folder, out, "--max_train_steps", "2"))
    evaluate = load_script("evaluate_vq_prior")
    tuned = VQVAEModel.from_pretrained(vqvae_folder)
    with torch.no_grad():
        for parameter in tuned.decoder.parameters():
            parameter.add_(0.05)
    tuned.save_pretrained(tmp_path / "tuned")
    pipe = VQVAEPipeline.from_pretrained(out)
    swapped = evaluate.with_first_stage(pipe, VQVAEModel.from_pretrained(tmp_path / "tuned"), "tuned")
    assert swapped.prior is pipe.prior
    codes = torch.randint(0, 16, (2, 4, 4))
    assert not torch.allclose(swapped.decode(codes, output_type="pt"), pipe.decode(codes, output_type="pt"))
    results = evaluate.main([str(out), "--vqvae", str(tmp_path / "tuned"), "--epsilon_cutoff", "0", "0.05", "--num_generated", "4", "--max_eval_samples", "8"])
    assert [(r["epsilon_cutoff"], r["generated"]) for r in results] == [(None, 4), (0.05, 4)]

    with torch.no_grad():
        tuned.quantize_layer.embedding.weight.add_(0.05)
    tuned.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="encoder or codebook differs from the pipeline's .*quantize_layer"):
        evaluate.main([str(out), "--vqvae", str(tmp_path / "other"), "--num_generated", "4"])


def test_resume_continues_exactly(vqvae_folder, tmp_path):
    from accelerate.state import AcceleratorState, GradientState

    full, resumed = tmp_path / "full", tmp_path / "resumed"
    args = ("--gradient_accumulation_steps", "2", "--use_ema")
    run(*tiny_args(vqvae_folder, full, *args))
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    # the resume command does not repeat --learning_rate 1e-3: the checkpoint's schedule goes on, not the default's
    run(*without_flag(tiny_args(vqvae_folder, resumed, *args, "--resume_from_checkpoint", "latest"), "--learning_rate"))
    a, b = load_file(full / "prior" / "model.safetensors"), load_file(resumed / "prior" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)


def test_vqvae_from_the_hub_and_push_to_hub(vqvae_folder, hub, hub_cache, tmp_path):
    """The first stage comes by repo id, the trained pipeline goes back up (without checkpoints or logs)."""
    hub.add_files("genzoo-tests/tiny-vqvae", {p.name: p.read_bytes() for p in vqvae_folder.iterdir()})
    out = tmp_path / "pushed"
    run(*tiny_args("genzoo-tests/tiny-vqvae", out, "--max_train_steps", "2", "--push_to_hub", "--hub_model_id", "genzoo-tests/shapes-vq-prior"))
    files = set(hub.list_files("genzoo-tests/shapes-vq-prior"))
    assert {"model_index.json", "README.md", "samples.png", "metrics.json", "prior/model.safetensors", "vqvae/diffusion_pytorch_model.safetensors"} <= files
    assert not any(f.startswith(("checkpoint-", "validation/", "logs/")) for f in files)
    assert VQVAEPipeline.from_pretrained("genzoo-tests/shapes-vq-prior").vqvae.num_codes == 16


def test_vqvae_is_found_inside_a_saved_pipeline_and_other_folders_are_refused(vqvae_folder, tmp_path):
    AutoencoderPipeline(model=VQVAEModel.from_pretrained(vqvae_folder)).save_pretrained(tmp_path / "ae")
    assert isinstance(train.load_vqvae(str(tmp_path / "ae")), VQVAEModel)
    from hf_genzoo import GANPipeline
    from hf_genzoo.models import DCGANGenerator

    GANPipeline(generator_model=DCGANGenerator(latent_dim=4, sample_size=16, block_out_channels=(16, 8))).save_pretrained(tmp_path / "gan")
    with pytest.raises(ValueError, match=re.escape("holds no VQVAEModel (its components: {'generator_model': 'DCGANGenerator'")):
        train.load_vqvae(str(tmp_path / "gan"))


def test_resolution_other_than_the_vqvaes_is_refused(vqvae_folder, tmp_path):
    with pytest.raises(ValueError, match="--resolution 32 differs from the VQ-VAE's sample_size 16"):
        run(*tiny_args(vqvae_folder, tmp_path / "prior", "--resolution", "32"))


def test_bad_flags_are_refused_with_the_values(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--vqvae", "x", "--n_embd", "30", "--n_head", "4"])
    assert "--n_embd 30 must be divisible by --n_head 4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--vqvae", "x", "--temperature", "0"])
    assert "--temperature must be > 0, got 0.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--vqvae", "x", "--epsilon_cutoff", "1.5"])
    assert "--epsilon_cutoff must be in (0, 1), got 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_script("evaluate_vq_prior").main(["x", "--epsilon_cutoff", "0", "-0.1"])
    assert "--epsilon_cutoff values must be in [0, 1) (0: off), got [0.0, -0.1]" in capsys.readouterr().err
