import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_genzoo.data import FACTORS, load_image_dataset, make_shapes_dataset, render_scene


def check_pixels(ds, channels: int, resolution: int):
    pixels = ds[:]["pixel_values"]
    assert isinstance(pixels, torch.Tensor) and pixels.dtype == torch.float32
    assert pixels.shape == (len(ds), channels, resolution, resolution)
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    return pixels


def gradient_image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A horizontal ramp in red, vertical in green, constant blue: easy to check resizes and crops."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, np.full_like(x, 100)], -1).astype(np.uint8)  # (H, W, 3)
    return Image.fromarray(rgb).convert(mode)


# --- shapes ----------------------------------------------------------------------------------------------


def test_shapes():
    ds = load_image_dataset("shapes", max_samples=24, num_shapes=(1, 2))
    assert "pixel_values" in ds.column_names and "image" not in ds.column_names
    assert {"caption", "label", "num_shapes", *(f"{f}_0" for f in FACTORS)} <= set(ds.column_names)
    pixels = check_pixels(ds, 3, 32)
    # no resampling: the pixels are the rendered scene, scaled to [-1, 1]
    row = ds[0]
    objects = [{f: int(row[f"{f}_{slot}"]) for f in FACTORS} for slot in range(int(row["num_shapes"]))]
    expected = torch.from_numpy(render_scene(objects, 32)).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(pixels[0], expected)
    assert isinstance(ds[:]["label"], torch.Tensor)
    # the test split is another draw (seed + 1_000_003), of 2,000 rows by default
    test = load_image_dataset("shapes", split="test", max_samples=24, num_shapes=(1, 2))
    assert test[:]["caption"] != ds[:]["caption"]
    reference = make_shapes_dataset(24, 32, num_shapes=(1, 2), seed=1_000_003)
    assert test[:]["caption"] == reference["caption"]
    # max_samples keeps the first rows of the full split
    assert ds[:]["caption"] == make_shapes_dataset(30, 32, num_shapes=(1, 2), seed=0)[:24]["caption"]
    with pytest.raises(ValueError, match="split='validation'.*train"):
        load_image_dataset("shapes", split="validation")


def test_shapes_options():
    ds = load_image_dataset("shapes", resolution=16, num_channels=1, num_samples=10)
    assert len(ds) == 10
    check_pixels(ds, 1, 16)
    with pytest.raises(ValueError, match=r"resolution=8 .*\[16, 64\]"):
        load_image_dataset("shapes", resolution=8, num_samples=4)
    edits = load_image_dataset("shapes", config="edits", num_samples=6)
    assert {"pixel_values", "edited_pixel_values", "instruction"} <= set(edits.column_names)
    check_pixels(edits, 3, 32)
    dsprites = load_image_dataset("dsprites", resolution=32, num_channels=1, num_samples=6)
    check_pixels(dsprites, 1, 32)
    assert {"shape", "scale", "orientation", "pos_x", "pos_y", "label"} <= set(dsprites.column_names)


def test_random_flip_is_seeded():
    flipped = load_image_dataset("shapes", num_samples=40, random_flip=True, seed=3)
    again = load_image_dataset("shapes", num_samples=40, random_flip=True, seed=3)
    plain = load_image_dataset("shapes", num_samples=40, seed=3)
    a, b, c = flipped[:]["pixel_values"], again[:]["pixel_values"], plain[:]["pixel_values"]
    assert torch.equal(a, b)
    is_flipped = [torch.equal(a[i], c[i].flip(-1)) and not torch.equal(a[i], c[i]) for i in range(40)]
    is_same = [torch.equal(a[i], c[i]) for i in range(40)]
    assert all(f or s for f, s in zip(is_flipped, is_same))
    assert 10 <= sum(is_flipped) <= 30


# --- image folders ---------------------------------------------------------------------------------------


def test_image_folder(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    gradient_image(40, 20).save(folder / "wide.png")
    gradient_image(20, 40, "L").save(folder / "tall_gray.png")
    gradient_image(16, 16, "RGBA").save(folder / "small_rgba.png")
    ds = load_image_dataset(str(folder), resolution=16)
    pixels = check_pixels(ds, 3, 16)
    gray = load_image_dataset(str(folder), resolution=16, num_channels=1)
    check_pixels(gray, 1, 16)
    # grayscale -> RGB repeats the channel
    assert any(torch.equal(p[0], p[1]) and torch.equal(p[1], p[2]) for p in pixels)
    # the wide image: shorter side 20 -> 16 (width 32), then the centre 16 columns
    wide = gradient_image(40, 20).resize((32, 16), Image.BILINEAR).crop((8, 0, 24, 16))
    expected = torch.from_numpy(np.asarray(wide, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
    assert any(torch.allclose(p, expected) for p in pixels)
    # a random crop of the wide image is some 16-column window of the resized image, the same for a seed
    cropped = load_image_dataset(str(folder), resolution=16, center_crop=False, seed=1)
    resized = gradient_image(40, 20).resize((32, 16), Image.BILINEAR)
    windows = [
        torch.from_numpy(np.asarray(resized.crop((left, 0, left + 16, 16)), dtype=np.float32) / 127.5 - 1)
        for left in range(17)
    ]
    assert any(torch.allclose(p, w.permute(2, 0, 1)) for p in check_pixels(cropped, 3, 16) for w in windows)
    again = load_image_dataset(str(folder), resolution=16, center_crop=False, seed=1)
    assert torch.equal(cropped[:]["pixel_values"], again[:]["pixel_values"])


def test_image_folder_splits(tmp_path):
    for split, count in (("train", 3), ("test", 2)):
        (tmp_path / split).mkdir()
        for i in range(count):
            gradient_image(12 + i, 12).save(tmp_path / split / f"{i}.png")
    assert len(load_image_dataset(str(tmp_path), split="train", resolution=8)) == 3
    assert len(load_image_dataset(str(tmp_path), split="test", resolution=8)) == 2
    with pytest.raises(ValueError, match=r"split='validation'.*\['train', 'test'\]"):
        load_image_dataset(str(tmp_path), split="validation", resolution=8)


def test_missing_local_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError):
        load_image_dataset("missing_file.parquet")


# --- parquet ---------------------------------------------------------------------------------------------


def write_parquet(path, images, **columns):
    ds = datasets.Dataset.from_dict({"image": images, **columns}).cast_column("image", datasets.Image())
    ds.to_parquet(str(path))


def test_parquet_grayscale_to_rgb(tmp_path):
    digits = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8)) for i in range(5)]
    write_parquet(tmp_path / "digits.parquet", digits, label=list(range(5)))
    ds = load_image_dataset(str(tmp_path / "digits.parquet"), resolution=20)
    pixels = check_pixels(ds, 3, 20)
    assert torch.equal(pixels[:, 0], pixels[:, 1]) and torch.equal(pixels[:, 1], pixels[:, 2])
    assert ds[:]["label"].tolist() == list(range(5))
    # at the native size nothing is resampled
    native = load_image_dataset(str(tmp_path / "digits.parquet"), resolution=28, num_channels=1)
    assert torch.equal(
        native[2]["pixel_values"][0], torch.from_numpy(np.asarray(digits[2], dtype=np.float32) / 127.5 - 1)
    )
    with pytest.raises(ValueError, match=r"split='test'.*\['train'\]"):
        load_image_dataset(str(tmp_path / "digits.parquet"), split="test")


def test_parquet_rgb_to_grayscale_non_square(tmp_path):
    images = [gradient_image(30, 18), gradient_image(18, 30), gradient_image(24, 24)]
    write_parquet(tmp_path / "rgb.parquet", images, caption=["wide", "tall", "square"])
    ds = load_image_dataset(str(tmp_path / "rgb.parquet"), resolution=12, num_channels=1)
    pixels = check_pixels(ds, 1, 12)
    assert ds[:]["caption"] == ["wide", "tall", "square"]
    expected = images[2].convert("L").resize((12, 12), Image.BILINEAR)  # luma (ITU-R 601), then resize
    assert torch.equal(pixels[2, 0], torch.from_numpy(np.asarray(expected, dtype=np.float32) / 127.5 - 1))
    # the wide image keeps its full height: shorter side 18 -> 12, width 20, centre crop
    wide = images[0].convert("L").resize((20, 12), Image.BILINEAR).crop((4, 0, 16, 12))
    assert torch.equal(pixels[0, 0], torch.from_numpy(np.asarray(wide, dtype=np.float32) / 127.5 - 1))


def test_parquet_folder_splits(tmp_path):
    blank = Image.new("RGB", (8, 8))
    write_parquet(tmp_path / "train.parquet", [blank] * 4, label=[0] * 4)
    write_parquet(tmp_path / "test.parquet", [blank] * 2, label=[1] * 2)
    assert len(load_image_dataset(str(tmp_path), split="train", resolution=8)) == 4
    test = load_image_dataset(str(tmp_path), split="test", resolution=8)
    assert test[:]["label"].tolist() == [1, 1]


# --- columns and arguments ------------------------------------------------------------------------------


def test_no_image_column_lists_the_columns():
    ds = datasets.Dataset.from_dict({"text": ["a", "b"], "score": [1, 2]})
    with pytest.raises(ValueError, match=r"no image column.*\['text', 'score'\]"):
        load_image_dataset(ds)
    with pytest.raises(ValueError, match=r"image_column='photo'.*\['text', 'score'\]"):
        load_image_dataset(ds, image_column="photo")


def test_image_column_choice(tmp_path):
    picture = gradient_image(10, 10)
    # an Image feature wins, whatever its name
    ds = datasets.Dataset.from_dict({"id": [0], "picture": [picture]}).cast_column("picture", datasets.Image())
    out = load_image_dataset(ds, resolution=10)
    assert out.column_names == ["id", "pixel_values"]
    # a column named "img" holding encoded images is decoded
    path = tmp_path / "p.png"
    picture.save(path)
    raw = datasets.Dataset.from_dict({"img": [{"bytes": path.read_bytes(), "path": None}], "y": [3]})
    assert load_image_dataset(raw, resolution=10)[0]["y"] == 3
    # image_column picks among several
    both = datasets.Dataset.from_dict({"a": [picture], "b": [picture.transpose(Image.FLIP_LEFT_RIGHT)]})
    both = both.cast_column("a", datasets.Image()).cast_column("b", datasets.Image())
    chosen = load_image_dataset(both, resolution=10, image_column="b")
    assert torch.equal(chosen[0]["pixel_values"], out[0]["pixel_values"].flip(-1))
    assert torch.equal(chosen[0]["a_pixel_values"], out[0]["pixel_values"])


@pytest.mark.parametrize("kwargs, match", [
    ({"num_channels": 2}, r"num_channels=2.*1.*3"),
    ({"resolution": 0}, r"resolution.*positive integer.*0"),
    ({"resolution": 16.5}, r"resolution.*16.5"),
    ({"max_samples": 0}, r"max_samples.*0"),
])  # fmt: skip
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_image_dataset("shapes", **kwargs)


def test_unexpected_kwargs_for_other_sources(tmp_path):
    write_parquet(tmp_path / "x.parquet", [Image.new("L", (8, 8))])
    with pytest.raises(ValueError, match="num_shapes"):
        load_image_dataset(str(tmp_path / "x.parquet"), num_shapes=2)


# --- the Hub ---------------------------------------------------------------------------------------------


def test_hub_dataset_id(hub, tmp_path):
    """A Hub dataset id goes through datasets.load_dataset (here against the loopback test Hub)."""
    write_parquet(tmp_path / "train.parquet", [gradient_image(12, 20, "L")] * 3, label=[4, 5, 6])
    hub.add_files(
        "user/tiny-gray",
        {"data/train-00000-of-00001.parquet": (tmp_path / "train.parquet").read_bytes()},
        repo_type="dataset",
    )
    ds = load_image_dataset("user/tiny-gray", resolution=8)
    check_pixels(ds, 3, 8)
    assert ds[:]["label"].tolist() == [4, 5, 6]
    with pytest.raises(ValueError, match="'user/no-such-dataset' is neither 'shapes' / 'dsprites', a local folder or file, nor a reachable Hub dataset: no such dataset"):
        load_image_dataset("user/no-such-dataset")


def test_unknown_dataset_name_fails_at_once_offline_and_without_a_connection(monkeypatch):
    """A name that is no source fails in one sentence, with no retries: offline (HF_HUB_OFFLINE=1) and when the Hub
    refuses the connection (a closed port)."""
    import huggingface_hub

    sentence = "'no_such_name' is neither 'shapes' / 'dsprites', a local folder or file, nor a reachable Hub dataset"
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=f"{sentence}: offline"):
        load_image_dataset("no_such_name")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    with pytest.raises(ValueError, match=f"{sentence}: the Hub cannot be reached"):
        load_image_dataset("no_such_name")
    with pytest.raises(ValueError, match="not a valid Hub id"):
        load_image_dataset("no such name")


# --- subsets and hold-outs -------------------------------------------------------------------------------


def class_sorted_folder(root, classes=("a", "b", "c"), per_class=10):
    """An image folder sorted by class (one subfolder each, as `imagefolder` reads labels), each class one grey level:
    the first or last rows of it are one class only."""
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8), 40 + 80 * label, dtype=np.uint8)).save(root / name / f"{i:03d}.png")
    return root


def test_max_samples_draws_a_seeded_label_stratified_subset(tmp_path):
    """--max_train_samples on a class-sorted folder keeps every class (in proportion), drawn from the seed, not the
    first rows (which are the first class alone)."""
    folder = class_sorted_folder(tmp_path / "sorted")
    subset = load_image_dataset(str(folder), resolution=8, num_channels=1, max_samples=6, seed=0)
    labels = subset[:]["label"].tolist()
    assert sorted(labels) == [0, 0, 1, 1, 2, 2]
    # each row's pixels are its class's grey level: the images and labels were drawn together
    levels = ((subset[:]["pixel_values"][:, 0, 0, 0] + 1) * 127.5).round().tolist()
    assert levels == [40 + 80 * label for label in labels]
    again = load_image_dataset(str(folder), resolution=8, num_channels=1, max_samples=6, seed=0)
    assert torch.equal(again[:]["pixel_values"], subset[:]["pixel_values"])
    # the rows are a draw of the seed: another seed draws other rows of each class
    from hf_genzoo.data.loading import sample_indices

    labels = np.repeat([0, 1, 2], 10)
    draws = [sample_indices(30, 6, seed, labels) for seed in range(4)]
    assert all(sorted(labels[d].tolist()) == [0, 0, 1, 1, 2, 2] for d in draws)
    assert len({tuple(d) for d in draws}) > 1 and draws[0].tolist() == sample_indices(30, 6, 0, labels).tolist()
    # without labels: a plain seeded draw, not the first rows
    assert sample_indices(30, 6, 0).tolist() != list(range(6)) and len(set(sample_indices(30, 6, 0).tolist())) == 6


def test_a_generated_world_gives_as_many_images_as_asked_not_its_default_size():
    from hf_genzoo.data.loading import load_source_dataset

    assert len(load_source_dataset("shapes", "test", 16, max_samples=2001)) == 2001  # the test split's default is 2,000
    assert len(load_source_dataset("shapes", "test", 16, max_samples=5)) == 5
