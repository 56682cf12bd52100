"""hf_genzoo.data.image_cache: images preprocessed once into a memory-mapped uint8 cache, flips and crops drawn per
access on the training split only; and train_autoencoder.py reading its data through it."""

import gc
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from scripts import load_script

from hf_genzoo.data import load_image_dataset
from hf_genzoo.data.image_cache import AugmentedRows, augmentation_draws, cached_image_split, load_image_split, training_batches
from hf_genzoo.data.loading import preprocess_image


@pytest.fixture(scope="module")
def shapes_cache(tmp_path_factory):
    """48 shapes-world images at 16×16 in a cache, and the same images as `load_image_dataset` gives them."""
    folder = str(tmp_path_factory.mktemp("pixels"))
    split = cached_image_split("shapes", "train", resolution=16, max_samples=48, seed=0, cache_dir=folder)
    columns = load_image_dataset("shapes", resolution=16, max_samples=48, seed=0)[:]
    return folder, split, columns["pixel_values"], columns["label"].tolist()


def wide_images_folder(root, count=6):
    """Images of 12×8 pixels whose every column has its own grey level, so that any window or flip is recognisable."""
    root.mkdir()
    for i in range(count):
        columns = (np.arange(12) * 20 + i).astype(np.uint8)
        Image.fromarray(np.tile(columns, (8, 1))).save(root / f"{i}.png")
    return root


def test_the_cache_holds_the_preprocessed_images_bit_for_bit_and_is_read_again_without_generating(shapes_cache, monkeypatch):
    folder, split, reference, labels = shapes_cache
    assert split.dataset.features["pixels"].dtype == "uint8" and split.dataset.cache_files  # uint8, on disk
    torch.testing.assert_close(split[:], reference, rtol=0, atol=0)
    torch.testing.assert_close(split[[5, 2]], reference[[5, 2]], rtol=0, atol=0)
    torch.testing.assert_close(split[7], reference[7], rtol=0, atol=0)
    assert split.column("label") == labels

    import hf_genzoo.data.image_cache as image_cache

    def no_generation(*args, **kwargs):
        raise AssertionError("the shapes world was generated again")

    monkeypatch.setattr(image_cache, "load_source_dataset", no_generation)
    again = cached_image_split("shapes", "train", resolution=16, max_samples=48, seed=0, cache_dir=folder)
    torch.testing.assert_close(again[:], reference, rtol=0, atol=0)


def test_flips_are_drawn_anew_each_epoch_and_again_the_same_for_the_same_seed_and_epoch(shapes_cache):
    _, split, reference, _ = shapes_cache
    rows = list(range(len(split)))
    asymmetric = [i for i in rows if not torch.equal(reference[i], reference[i].flip(-1))]
    augmented = AugmentedRows(split, seed=3, batches_per_epoch=2, random_flip=True)

    def flipped(micro_index):
        x = augmented.__getitems__((micro_index, rows))["pixel_values"]
        for i in rows:  # each image is itself or its mirror image
            assert torch.equal(x[i], reference[i]) or torch.equal(x[i], reference[i].flip(-1))
        return torch.tensor([not torch.equal(x[i], reference[i]) for i in asymmetric])

    epoch_0 = flipped(0)
    assert torch.equal(flipped(1), epoch_0)  # micro-batches 0 and 1 are both epoch 0
    assert torch.equal(flipped(0), epoch_0)  # and read again, the same draws
    assert 0.25 < epoch_0.float().mean() < 0.75
    assert not torch.equal(flipped(2), epoch_0)  # epoch 1 draws anew
    other_seed = AugmentedRows(split, seed=4, batches_per_epoch=2, random_flip=True).__getitems__((0, rows))
    assert not torch.equal(other_seed["pixel_values"], augmented.__getitems__((0, rows))["pixel_values"])
    # the draws of an image do not depend on the batch it is read in
    single = augmented.__getitems__((2, [asymmetric[0]]))["pixel_values"][0]
    assert torch.equal(single, augmented.__getitems__((2, rows))["pixel_values"][asymmetric[0]])


def test_random_crops_are_windows_of_the_whole_image_drawn_per_epoch_and_the_split_reads_centre_crops(tmp_path):
    folder = wide_images_folder(tmp_path / "wide")
    split = cached_image_split(str(folder), resolution=8, num_channels=1, center_crop=False, cache_dir=str(tmp_path / "cache"))
    assert not split.cropped
    images = [Image.open(folder / f"{i}.png") for i in range(6)]
    centre = torch.from_numpy(np.stack([preprocess_image(image, 8, 1, True, None, False) for image in images]))
    torch.testing.assert_close(split[:], centre, rtol=0, atol=0)
    whole = torch.from_numpy(np.stack([np.asarray(image, dtype=np.float32) / 127.5 - 1 for image in images]))  # (6, 8, 12)
    augmented = AugmentedRows(split, seed=0, batches_per_epoch=1, random_crop=True)
    lefts = []
    for epoch in range(3):
        x = augmented.__getitems__((epoch, list(range(6))))["pixel_values"][:, 0]  # (6, 8, 8)
        draws = augmentation_draws(0, epoch, range(6))
        left = (draws[:, 0] * 5).astype(int)  # 12 − 8 + 1 offsets
        for i in range(6):
            torch.testing.assert_close(x[i], whole[i, :, left[i] : left[i] + 8], rtol=0, atol=0)
        lefts.append(left.tolist())
    assert lefts[0] != lefts[1] or lefts[1] != lefts[2]
    with pytest.raises(ValueError, match="center_crop=False"):
        AugmentedRows(cached_image_split(str(folder), resolution=8, num_channels=1, cache_dir=str(tmp_path / "cache")), 0, 1, random_crop=True)


def test_the_loader_reads_the_order_it_is_given_in_workers_as_in_the_main_process(shapes_cache):
    _, split, reference, _ = shapes_cache
    order = [(m, torch.randperm(48, generator=torch.Generator().manual_seed(m))[:8]) for m in range(4)]
    main = list(training_batches(split, iter(order), 2, seed=1, random_flip=True))
    workers = list(training_batches(split, iter(order), 2, seed=1, random_flip=True, num_workers=2))
    assert [m for m, _ in main] == [m for m, _ in workers] == [0, 1, 2, 3]
    for (m, batch), (_, other), (_, rows) in zip(main, workers, order):
        assert torch.equal(batch["rows"], rows)
        assert torch.equal(batch["pixel_values"], other["pixel_values"])
        flips = augmentation_draws(1, m // 2, rows.tolist())[:, 2] < 0.5
        expected = torch.stack([reference[r].flip(-1) if f else reference[r] for r, f in zip(rows.tolist(), flips)])
        assert torch.equal(batch["pixel_values"], expected)


def test_a_hold_out_selects_rows_of_the_cache_with_their_labels(tmp_path):
    """A class-sorted folder with no test split: the hold-out is drawn from the cached training split, each image with
    its label (each class is one grey level)."""
    from test_loading import class_sorted_folder

    from hf_genzoo.training_utils import load_train_and_held_out

    folder = class_sorted_folder(tmp_path / "sorted")
    args = SimpleNamespace(
        dataset_name=str(folder), train_split="train", eval_split="test", max_train_samples=None, max_eval_samples=6,
        resolution=8, num_channels=1, image_column=None, seed=0, label_column="label", cache_dir=str(tmp_path / "cache"),
    )
    (train, train_labels), (held_out, held_out_labels) = load_train_and_held_out(
        lambda split, max_samples: (images := load_image_split(args, split, max_samples), images.labels("label")[0]), args
    )
    assert len(train) == 27 and len(held_out) == 3 and sorted(held_out_labels.tolist()) == [0, 1, 2]
    for images, labels in ((train, train_labels), (held_out, held_out_labels)):
        assert (((images[:][:, 0, 0, 0] + 1) * 127.5).round() == 40 + 80 * labels).all()
        assert images.column("label") == labels.tolist()
    with pytest.raises(ValueError, match=r"class labels are needed; 'class' is not one of \['label'\]"):
        train.labels("class")


def test_a_truncated_cache_is_rebuilt(tmp_path, caplog):
    folder = wide_images_folder(tmp_path / "wide")
    split = cached_image_split(str(folder), resolution=8, num_channels=1, cache_dir=str(tmp_path / "cache"))
    expected = split[:]
    data_file = split.dataset.cache_files[0]["filename"]
    del split
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    with caplog.at_level("WARNING"):
        rebuilt = cached_image_split(str(folder), resolution=8, num_channels=1, cache_dir=str(tmp_path / "cache"))
    assert "rebuilding it" in caplog.text
    torch.testing.assert_close(rebuilt[:], expected, rtol=0, atol=0)


# ---- train_autoencoder.py ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_accelerator_state")
def test_training_flips_each_epoch_anew_never_the_held_out_images_and_holds_no_tensor_of_the_split(tmp_path, monkeypatch):
    """A 2-epoch run with --random_flip: every training image is itself or its mirror image, an image's flip changes
    between epochs, the held-out images are never flipped, and while it trains no tensor holds the whole split."""
    from hf_genzoo.training_utils import epoch_permutation

    train = load_script("train_autoencoder")
    num_train, batch_size = 32, 16
    seen, whole_split_tensors = [], []
    training_step = train.training_step

    def recording_step(accelerator, model, optimizer, lr_scheduler, x, generator, max_grad_norm):
        if not seen:
            whole_split_tensors.extend(
                tuple(o.shape)
                for o in gc.get_objects()
                if isinstance(o, torch.Tensor) and o.dim() == 4 and len(o) >= num_train and id(o) not in before_the_run
            )
        seen.append(x.clone())
        return training_step(accelerator, model, optimizer, lr_scheduler, x, generator, max_grad_norm)

    class Evaluated(Exception):
        pass

    def stop_at_evaluation(model, images, **kwargs):
        seen_held_out.append(images.clone())
        raise Evaluated

    seen_held_out = []
    monkeypatch.setattr(train, "training_step", recording_step)
    monkeypatch.setattr(train, "evaluate_autoencoder", stop_at_evaluation)
    argv = [
        "--model", "ae", "--output_dir", str(tmp_path / "out"), "--resolution", "16", "--block_out_channels", "8",
        "--latent_channels", "4", "--train_batch_size", str(batch_size), "--max_train_samples", str(num_train),
        "--max_eval_samples", "16", "--max_train_steps", "4", "--checkpointing_steps", "10", "--validation_steps", "10",
        "--num_generated", "0", "--mixed_precision", "no", "--random_flip", "--cache_dir", str(tmp_path / "cache"),
    ]
    gc.collect()
    before_the_run = {id(o) for o in gc.get_objects() if isinstance(o, torch.Tensor)}  # other tests' leftovers
    with pytest.raises(Evaluated):
        train.main(train.parse_args(argv))

    assert whole_split_tensors == []
    reference = load_image_dataset("shapes", resolution=16, max_samples=num_train, seed=0)[:]["pixel_values"]
    flips = {}
    for micro_index, x in enumerate(seen):
        epoch, b = divmod(micro_index, num_train // batch_size)
        rows = epoch_permutation(num_train, 0, epoch)[b * batch_size : (b + 1) * batch_size].tolist()
        for image, row in zip(x, rows):
            assert torch.equal(image, reference[row]) or torch.equal(image, reference[row].flip(-1))
            if not torch.equal(reference[row], reference[row].flip(-1)):
                flips[epoch, row] = not torch.equal(image, reference[row])
    assert len(seen) == 4 and 0.25 < np.mean(list(flips.values())) < 0.75
    assert any(flips[0, row] != flips[1, row] for (epoch, row) in flips if epoch == 0 and (1, row) in flips)
    held_out = load_image_dataset("shapes", split="test", resolution=16, max_samples=16, seed=0)[:]["pixel_values"]
    torch.testing.assert_close(seen_held_out[0], held_out, rtol=0, atol=0)
