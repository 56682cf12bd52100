"""training_scripts/train_instruct_pix2pix.py on a tiny text-to-image folder and a small shapes-edits world: the saved
folder in InstructPix2PixPipeline and diffusers' StableDiffusionInstructPix2PixPipeline, the widened UNet's step 0,
the cached latents against encode_edit_pair, the conditioning-dropout probabilities, the joint flip and crop, exact
resume, a stock Stable Diffusion base pushed to the Hub, and the errors; hf_genzoo.metrics.editing on exact and unedited outputs."""

import json
import shutil

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from diffusers import StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
from safetensors.torch import load_file

from scripts import load_script
from tiny_components import tiny_scheduler, tiny_text_encoder, tiny_tokenizer, tiny_unet

from hf_genzoo import GenZooDDIMScheduler, InstructPix2PixPipeline, LatentDiffusionPipeline, VAEModel, encode_edit_pair
from hf_genzoo.data.shapes import make_shapes_dataset
from hf_genzoo.metrics.editing import edit_metrics

train = load_script("train_instruct_pix2pix")
pytestmark = [
    pytest.mark.usefixtures("fresh_accelerator_state"),
    pytest.mark.filterwarnings("ignore:You have passed .* initial images:FutureWarning"),
]


def tiny_vae():
    """16×16 RGB ↔ 8×8×4 latents."""
    torch.manual_seed(1)
    return VAEModel(block_out_channels=(8, 16), norm_num_groups=4, latent_channels=4, sample_size=16, scaling_factor=0.8).eval()


@pytest.fixture(scope="module")
def text_to_image(tmp_path_factory):
    """A tiny text-to-image folder (ours, the components of a Stable Diffusion folder), v-prediction."""
    folder = tmp_path_factory.mktemp("t2i")
    tokenizer = tiny_tokenizer()
    scheduler = GenZooDDIMScheduler.from_config(tiny_scheduler().config, prediction_type="v_prediction", timestep_spacing="trailing")
    LatentDiffusionPipeline(vae=tiny_vae(), unet=tiny_unet(), scheduler=scheduler, text_encoder=tiny_text_encoder(tokenizer), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def tiny_args(base, output_dir, cache_dir, *extra):
    return [
        "--pretrained_model_name_or_path", str(base), "--output_dir", str(output_dir), "--cache_dir", str(cache_dir),
        "--train_batch_size", "8", "--max_train_samples", "32", "--max_eval_samples", "8", "--max_train_steps", "4",
        "--checkpointing_steps", "2", "--validation_steps", "2", "--num_eval_edits", "8", "--num_inference_steps", "2",
        "--num_validation_pairs", "2", "--num_validation_images", "2", "--num_validation_loss_pairs", "8",
        "--lr_warmup_steps", "0", "--mixed_precision", "no", "--learning_rate", "1e-3", *extra,
    ]


def run(*argv):
    return train.main(train.parse_args(list(argv)))


def assert_stock_pipeline_edits_alike(pipe, folder, instruction, seed):
    """diffusers' StableDiffusionInstructPix2PixPipeline loads `folder` and edits a shapes-world image exactly as `pipe`."""
    stock = StableDiffusionInstructPix2PixPipeline.from_pretrained(folder, safety_checker=None)
    image = make_shapes_dataset(1, resolution=16, config="edits", seed=seed)[0]["input_image"]
    images = [
        p(instruction, image, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
        for p in (pipe, stock)
    ]
    np.testing.assert_array_equal(images[0], images[1])


def test_a_run_saves_an_editor_that_ours_and_the_stock_pipeline_load(tmp_path, text_to_image):
    out = tmp_path / "ip2p"
    run(*tiny_args(text_to_image, out, tmp_path / "cache"))
    for name in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer/tokenizer.json",
                 "scheduler/scheduler_config.json", "README.md", "samples.png", "edits.png", "metrics.json", "validation/step-000004.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 4 and metrics["edits"] == 8
    for key in ("success", "preservation", "validity", "all_right"):
        assert 0.0 <= metrics[key] <= 1.0
    assert sum(metrics[f"{t}_edits"] for t in ("recolor", "move", "reshape", "resize", "remove") if f"{t}_edits" in metrics) == 8
    # the instructions' words joined the word-level vocabulary: "make it bigger" and "make it smaller" differ
    assert metrics["new_words"] > 0
    pipe = InstructPix2PixPipeline.from_pretrained(out)
    assert pipe.unet.config.in_channels == 8
    ids = pipe.tokenizer(["make it bigger", "make it smaller"]).input_ids
    assert ids[0] != ids[1] and pipe.tokenizer.unk_token_id not in ids[0] + ids[1]
    assert pipe.text_encoder.get_input_embeddings().weight.shape[0] == len(pipe.tokenizer)

    assert_stock_pipeline_edits_alike(pipe, out, "make it bigger", seed=3)
    card = (out / "README.md").read_text()
    assert "InstructPix2PixPipeline" in card and "train_instruct_pix2pix.py" in card


def test_a_stock_stable_diffusion_folder_trains_and_the_editor_is_pushed_to_the_hub(tmp_path, hub, hub_cache):
    """The base may be diffusers' own Stable Diffusion folder (AutoencoderKL, DDIMScheduler, a safety_checker entry of
    None); --push_to_hub uploads the editor without checkpoints, and both pipelines load it from the Hub."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    from tiny_components import tiny_text_to_image_components

    base = tmp_path / "stable-diffusion"
    StableDiffusionPipeline(**tiny_text_to_image_components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False).save_pretrained(base)
    out, repo = tmp_path / "ip2p", "genzoo-tests/shapes-instruct-pix2pix"
    run(*tiny_args(base, out, tmp_path / "cache", "--max_train_steps", "2", "--validation_steps", "100", "--num_eval_edits", "0",
                   "--push_to_hub", "--hub_model_id", repo))
    files = set(hub.list_files(repo))
    assert {"model_index.json", "README.md", "samples.png", "metrics.json", "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors", "tokenizer/tokenizer.json"} <= files
    assert not any(f.startswith(("checkpoint-", "validation/", "logs/")) for f in files)
    pipe = InstructPix2PixPipeline.from_pretrained(repo)
    assert isinstance(pipe.vae, AutoencoderKL) and pipe.unet.config.in_channels == 8
    assert_stock_pipeline_edits_alike(pipe, repo, "make it red", seed=4)


def test_a_resolution_the_first_stage_cannot_take_is_refused(tmp_path, text_to_image):
    with pytest.raises(ValueError, match="--resolution 15 is not a multiple of the first stage's downsampling factor 2"):
        run(*tiny_args(text_to_image, tmp_path / "out", tmp_path / "cache", "--resolution", "15"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_random_crop_is_one_draw_for_both_images_of_a_pair(tmp_path, text_to_image):
    """--no-center_crop: each pair's input and edited image are cropped at the same seeded offset, the offsets vary
    from pair to pair, and the cached latents are the first stage's encoding of those crops."""
    from accelerate import PartialState

    from hf_genzoo.data.latent_cache import gather_rows
    from hf_genzoo.data.loading import preprocess_image

    PartialState()
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((16, 40, 3)) * 255).astype(np.uint8)) for _ in range(6)]  # 16 high, 40 wide
    folder = tmp_path / "pairs"
    # the edited image is the input itself: a joint crop makes both latents equal, two crops would not
    datasets.Dataset.from_dict({"input_image": images, "edit_prompt": ["make it red"] * 6, "edited_image": images}).save_to_disk(str(folder))
    args = train.parse_args(tiny_args(text_to_image, tmp_path / "out", tmp_path / "cache", "--dataset_name", str(folder), "--no-center_crop", "--resolution", "16"))
    vae = tiny_vae()
    raw = train.load_triplets(args, "train", None)
    rows = gather_rows(train.cached_triplets(args, raw, "train", vae, "tiny-vae"), list(range(6)), ["input_latent", "latent_mean"])
    torch.testing.assert_close(rows["input_latent"], rows["latent_mean"], rtol=0, atol=0)
    crops = torch.from_numpy(np.stack([preprocess_image(im, 16, 3, False, np.random.default_rng([args.seed, i]).random(2), False) for i, im in enumerate(images)]))
    with torch.no_grad():
        expected = vae.encode(crops).latent_dist.mode()
    torch.testing.assert_close(rows["input_latent"], expected, rtol=0, atol=1e-5)
    lefts = {int(np.random.default_rng([args.seed, i]).random(2)[0] * 25) for i in range(6)}
    assert len(lefts) > 1  # not one offset for every pair


def test_widened_unet_at_step_0_is_the_text_to_image_unet(text_to_image):
    base = train.load_text_to_image(str(text_to_image))
    reference = UNet2DConditionModel.from_pretrained(text_to_image, subfolder="unet").eval()
    unet = train.editing_unet(base["unet"], 4).eval()
    assert unet.config.in_channels == 8
    generator = torch.Generator().manual_seed(0)
    z_t, image_latents = torch.randn(2, 2, 4, 8, 8, generator=generator)
    text = torch.randn(2, 16, 16, generator=generator)
    t = torch.tensor([10, 900])
    denoiser = train.EditDenoiser(unet)
    with torch.no_grad():
        torch.testing.assert_close(denoiser(z_t, t, image_latents, prompt_embeds=text).sample, reference(z_t, t, encoder_hidden_states=text).sample, atol=0, rtol=0)
    # an already widened UNet is taken as it is; other widths are refused naming both numbers
    assert train.editing_unet(unet, 4) is unet
    with pytest.raises(ValueError, match=r"conv_in takes 6 channels .* needs 4 .* or 8"):
        train.editing_unet(tiny_unet(in_channels=6), 4)


def test_cached_latents_are_encode_edit_pairs(tmp_path, text_to_image):
    """The cache holds E(c_I) (the mode) and the edited posterior; a step's latents equal encode_edit_pair's from
    the same generator state. With --random_flip both images of a pair are flipped together."""
    from accelerate import PartialState

    PartialState()  # the script logs through accelerate
    args = train.parse_args(tiny_args(text_to_image, tmp_path / "out", tmp_path / "cache", "--random_flip", "--resolution", "16"))
    vae = tiny_vae()
    raw = train.load_triplets(args, "train", 4)
    cache = train.cached_triplets(args, raw, "train", vae, "tiny-vae")
    from hf_genzoo.data.latent_cache import gather_rows
    from hf_genzoo.data.loading import preprocess_image

    rows = gather_rows(cache, [0, 1, 2, 3], ["latent_mean", "latent_std", "input_latent", "latent_mean_flipped", "latent_std_flipped", "input_latent_flipped"])
    pixels = {c: torch.from_numpy(np.stack([preprocess_image(im, 16, 3, True, None, False) for im in raw[c]])) for c in ("input_image", "edited_image")}
    image_latents, target = train.pair_latents(rows, None, 0.8, torch.Generator().manual_seed(5))
    pair = encode_edit_pair(vae, pixels["input_image"], pixels["edited_image"], generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(image_latents, pair.image_latents, atol=1e-6, rtol=0)
    torch.testing.assert_close(target, pair.target_latents, atol=1e-5, rtol=0)

    # one coin per pair: rows 1 and 3 take both flipped images, rows 0 and 2 neither
    flip = torch.tensor([False, True, False, True])
    image_latents, target = train.pair_latents(rows, flip, 0.8, torch.Generator().manual_seed(5))
    flipped = encode_edit_pair(vae, pixels["input_image"].flip(-1), pixels["edited_image"].flip(-1), generator=torch.Generator().manual_seed(5))
    for i in range(4):
        expected = flipped if flip[i] else pair
        torch.testing.assert_close(image_latents[i], expected.image_latents[i], atol=1e-6, rtol=0)
        torch.testing.assert_close(target[i], expected.target_latents[i], atol=1e-5, rtol=0)


def test_conditioning_dropout_has_the_documented_exclusive_probabilities():
    generator = torch.Generator().manual_seed(0)
    n = 200_000
    drop_text, drop_image = train.conditioning_dropout_masks(n, 0.05, 0.10, 0.15, generator)
    text_alone = (drop_text & ~drop_image).float().mean().item()
    image_alone = (drop_image & ~drop_text).float().mean().item()
    both = (drop_text & drop_image).float().mean().item()
    tolerance = 4 * (0.15 * 0.85 / n) ** 0.5
    assert text_alone == pytest.approx(0.05, abs=tolerance)
    assert image_alone == pytest.approx(0.10, abs=tolerance)
    assert both == pytest.approx(0.15, abs=tolerance)
    # diffusers' single --conditioning_dropout_prob p is p for each of the three events
    args = train.parse_args(["--pretrained_model_name_or_path", "x", "--conditioning_dropout_prob", "0.1"])
    assert (args.drop_text_prob, args.drop_image_prob, args.drop_both_prob) == (0.1, 0.1, 0.1)
    none_text, none_image = train.conditioning_dropout_masks(100, 0.0, 0.0, 0.0, generator)
    assert not none_text.any() and not none_image.any()
    with pytest.raises(ValueError, match="sum must be ≤ 1, got 1.2"):
        train.conditioning_dropout_masks(4, 0.4, 0.4, 0.4)
    with pytest.raises(SystemExit):
        train.parse_args(["--pretrained_model_name_or_path", "x", "--drop_image_prob", "-0.1"])


def test_resume_continues_exactly(tmp_path, text_to_image):
    cache = tmp_path / "cache"
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    common = ("--gradient_accumulation_steps", "2", "--validation_steps", "100", "--num_eval_edits", "0")
    run(*tiny_args(text_to_image, full, cache, *common))
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")
    run(*tiny_args(text_to_image, resumed, cache, *common, "--resume_from_checkpoint", "latest"))
    a = load_file(full / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(text_to_image / "unet" / "diffusion_pytorch_model.safetensors")
    assert not torch.equal(a["conv_in.weight"][:, 4:], torch.zeros_like(a["conv_in.weight"][:, 4:]))  # it trained
    assert a["conv_in.weight"].shape[1] == 2 * base["conv_in.weight"].shape[1]


def test_a_dataset_without_the_columns_is_refused_with_its_columns(tmp_path, text_to_image):
    from accelerate import PartialState

    PartialState()
    folder = tmp_path / "edits"
    make_shapes_dataset(20, resolution=16, config="edits").save_to_disk(str(folder))  # 'instruction', not 'edit_prompt'
    args = train.parse_args(tiny_args(text_to_image, tmp_path / "out", tmp_path / "cache", "--dataset_name", str(folder)))
    with pytest.raises(ValueError, match=r"no column 'edit_prompt' .* its columns: \['input_image', 'edited_image', 'instruction'"):
        train.load_triplets(args, "train", None)
    # named by the flag, the same folder loads (one split: the held-out rows come from its end)
    args = train.parse_args(tiny_args(text_to_image, tmp_path / "out", tmp_path / "cache", "--dataset_name", str(folder), "--edit_prompt_column", "instruction", "--max_eval_samples", "4"))
    train_raw, held_out = train.train_and_held_out(args)
    assert len(train_raw) + len(held_out) == 20 and len(held_out) == 2


def test_edit_metrics_score_exact_edits_and_unedited_inputs():
    edits = make_shapes_dataset(60, resolution=16, num_shapes=(1, 2), config="edits", seed=2)
    rows = edits.remove_columns(["input_image", "edited_image"])[:]

    def pixels(column):
        return torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in edits[column]])).permute(0, 3, 1, 2).float() / 127.5 - 1

    exact = edit_metrics(pixels("edited_image"), rows, 16)
    assert exact["success"] == exact["preservation"] == exact["validity"] == exact["all_right"] == 1.0
    assert exact["unchanged"] == 0.0 and exact["edits"] == 60
    nothing = edit_metrics(pixels("input_image"), rows, 16)
    assert nothing["success"] == 0.0 and nothing["unchanged"] == 1.0
    removals = sum(t == "remove" for t in rows["edit_type"])
    assert nothing["preservation"] == pytest.approx(1 - removals / 60)  # an object too many is not preserved
    assert nothing["recolor_preservation"] == 1.0 and nothing["move_validity"] == 1.0
    with pytest.raises(ValueError, match="got 3 images for 60 triplets"):
        edit_metrics(pixels("input_image")[:3], rows, 16)
