"""The Hub round trip of our models and pipeline through the real huggingface_hub client, against the loopback
Hub-API server of tests/hub_server.py (no mocks of our code)."""

import pytest
import torch

from hf_genzoo import AutoencoderModel, AutoencoderPipeline, VAEModel

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=16)


def test_pipeline_push_and_load_by_repo_id(hub, hub_cache):
    torch.manual_seed(0)
    pipe = AutoencoderPipeline(model=VAEModel(**TINY, latent_channels=2, latent_type="vector"))
    pipe.push_to_hub("genzoo-tests/tiny-vae")
    files = set(hub.list_files("genzoo-tests/tiny-vae"))
    assert {"model_index.json", "README.md", "model/config.json", "model/diffusion_pytorch_model.safetensors"} <= files
    assert "library_name: hf_genzoo" in hub.read_file("genzoo-tests/tiny-vae", "README.md").decode()

    loaded = AutoencoderPipeline.from_pretrained("genzoo-tests/tiny-vae")
    assert isinstance(loaded.model, VAEModel)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(loaded.reconstruct(x, output_type="pt").images, pipe.reconstruct(x, output_type="pt").images)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(loaded(2, g(), output_type="pt").images, pipe(2, g(), output_type="pt").images)


def test_model_push_and_load_by_repo_id_keeps_fitted_gaussian(hub, hub_cache):
    model = AutoencoderModel(**TINY, latent_channels=3, latent_type="vector")
    model.fit_latent_gaussian(torch.randn(100, 3) * 2 + 1)
    model.push_to_hub("genzoo-tests/tiny-ae")
    loaded = AutoencoderModel.from_pretrained("genzoo-tests/tiny-ae")
    torch.testing.assert_close(loaded.latent_scale, model.latent_scale)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)


def test_save_pretrained_push_to_hub_flag_uploads_the_folder(hub, hub_cache, tmp_path):
    pipe = AutoencoderPipeline(model=AutoencoderModel(**TINY))
    pipe.save_pretrained(tmp_path / "folder", push_to_hub=True, repo_id="genzoo-tests/flag")
    assert "model_index.json" in hub.list_files("genzoo-tests/flag")


def test_unknown_repo_is_a_clear_error(hub, hub_cache):
    with pytest.raises(ValueError, match="'genzoo-tests/does-not-exist' is neither a saved folder .* nor a Hub repo \\(the Hub has none"):
        AutoencoderPipeline.from_pretrained("genzoo-tests/does-not-exist")


@pytest.mark.parametrize("load", [AutoencoderPipeline.from_pretrained, VAEModel.from_pretrained], ids=["pipeline", "model"])
def test_a_missing_folder_is_one_sentence_whether_or_not_the_hub_answers(load, hub, hub_cache, monkeypatch):
    """A name without a slash is a folder or a Hub repo id: when it is neither, one ValueError says so (the Hub's
    answer, or that it cannot be reached / is offline and the cache has no copy), not a connection traceback."""
    import huggingface_hub

    folder = "does-not-exist-folder"
    with pytest.raises(ValueError, match=f"'{folder}' is neither a saved folder \\(none at /.*{folder}\\) nor a Hub repo \\(the Hub has none"):
        load(folder)
    with pytest.raises(ValueError, match="'./does-not-exist' is neither a saved folder .* nor a Hub repo id"):
        load("./does-not-exist")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # refused
    with pytest.raises(ValueError, match=f"'{folder}' is neither .* nor a Hub repo in the local cache \\(the Hub cannot be reached"):
        load(folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=f"'{folder}' is neither .* nor a Hub repo in the local cache \\(offline"):
        load(folder)


def test_truncated_or_corrupt_weights_name_the_file(tmp_path):
    """A cut-short or overwritten `.safetensors` is reported by path as incomplete or corrupt, through the model's
    and the pipeline's from_pretrained, instead of diffusers' generic OSError."""
    from hf_genzoo.hub import CorruptWeightsError, safetensors_problem

    AutoencoderPipeline(model=VAEModel(**TINY, latent_channels=2, latent_type="vector")).save_pretrained(tmp_path / "pipe")
    weights = tmp_path / "pipe" / "model" / "diffusion_pytorch_model.safetensors"
    assert safetensors_problem(weights) is None
    data = weights.read_bytes()
    for broken in (data[: len(data) // 2], data[:6], b"\xff" * 8 + data[8:], data + b"\0"):
        weights.write_bytes(broken)
        for load, path in ((AutoencoderPipeline.from_pretrained, tmp_path / "pipe"), (VAEModel.from_pretrained, tmp_path / "pipe" / "model")):
            with pytest.raises(CorruptWeightsError, match=f"{weights} is incomplete or corrupt"):
                load(path)
    weights.write_bytes(data)
    assert isinstance(AutoencoderPipeline.from_pretrained(tmp_path / "pipe").model, VAEModel)


def test_model_card_names_a_hub_base_model(tmp_path):
    from hf_genzoo.hub import write_model_card

    card = write_model_card(
        tmp_path, "autoencoder", model_name="tuned", pipeline_class="AutoencoderPipeline", tags=["vqvae"],
        base_model="someone/shapes-vqvae", model_class="VQVAEModel", dataset_description="d", training_summary="s",
        sample_grid="samples.png", training_command="c", repo_id="tuned", dataset_name="shapes",
    )
    assert card.data.base_model == "someone/shapes-vqvae"
    assert "base_model: someone/shapes-vqvae" in (tmp_path / "README.md").read_text()
