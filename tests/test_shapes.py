import re

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hf_genzoo.data import (
    COLORS,
    DSPRITES_GRID_SIZE,
    DSPRITES_ORIENTATIONS,
    DSPRITES_SHAPES,
    EDIT_TYPES,
    FACTORS,
    LABEL_NAMES,
    ORIENTATIONS,
    PALETTE,
    SHAPES,
    SIZES,
    ShapesOracle,
    attribute_accuracy,
    class_label,
    make_shapes_dataset,
    oracle_coverage,
    oracle_validity,
    render_dsprite,
    render_scene,
    sample_scene,
    scene_caption,
    shape_mask,
    shapes_grid,
)

RESOLUTIONS = (16, 24, 32, 48, 64)


def to_model_space(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [-1, 1], as a model would output it."""
    return torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1


def row_objects(row: dict, prefix: str = "") -> list[dict]:
    return [{f: row[f"{prefix}{f}_{slot}"] for f in FACTORS} for slot in range(2) if row[f"{prefix}shape_{slot}"] >= 0]


def random_scenes(resolution: int, n: int, seed: int = 0) -> tuple[list[list[dict]], torch.Tensor]:
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, resolution, num_shapes=1 + i % 2) for i in range(n)]
    images = torch.stack([to_model_space(render_scene(scene, resolution)) for scene in scenes])
    return scenes, images


# --- the generator -----------------------------------------------------------------------------------


def test_constants():
    assert SHAPES == ("circle", "square", "triangle")
    assert list(PALETTE) == list(COLORS) and len(COLORS) == 7
    colors = np.array(list(PALETTE.values()))
    distances = np.abs(colors[:, None] - colors[None]).max(-1) + np.eye(len(colors), dtype=int) * 255
    assert distances.min() == 255  # any two palette colours differ by 255 in some channel
    assert SIZES == ("small", "medium", "large")
    assert LABEL_NAMES[0] == "red circle" and len(LABEL_NAMES) == len(SHAPES) * len(COLORS)
    assert LABEL_NAMES[class_label("triangle", "white")] == "white triangle"


def test_determinism():
    a = make_shapes_dataset(40, 24, num_shapes=(1, 2), seed=3)
    b = make_shapes_dataset(40, 24, num_shapes=(1, 2), seed=3)
    c = make_shapes_dataset(40, 24, num_shapes=(1, 2), seed=4)
    assert a[:]["caption"] == b[:]["caption"] and a[:]["x_0"] == b[:]["x_0"]
    assert all(np.array_equal(np.array(x), np.array(y)) for x, y in zip(a[:]["image"], b[:]["image"]))
    assert a[:]["caption"] != c[:]["caption"]
    # row i depends on (seed, i) only: a smaller dataset is a prefix of a larger one
    assert make_shapes_dataset(10, 24, num_shapes=(1, 2), seed=3)[:]["caption"] == a[:10]["caption"]
    rng1, rng2 = np.random.default_rng(7), np.random.default_rng(7)
    assert sample_scene(rng1, 32, 2) == sample_scene(rng2, 32, 2)


def test_columns_and_features():
    ds = make_shapes_dataset(60, 32, num_shapes=(1, 2), seed=0)
    factor_columns = [f"{f}_{slot}" for slot in range(2) for f in FACTORS]
    assert ds.column_names == ["image", "caption", "num_shapes", *factor_columns, "label"]
    assert isinstance(ds.features["image"], datasets.Image)
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert ds.features["label"].names == list(LABEL_NAMES)
    grid = shapes_grid(32)
    for row in ds:
        assert row["image"].mode == "RGB" and row["image"].size == (32, 32)
        assert row["num_shapes"] in (1, 2)
        if row["num_shapes"] == 1:
            assert all(row[f"{f}_1"] == -1 for f in FACTORS)
        for obj in row_objects(row):
            assert 0 <= obj["x"] < grid.num_positions and 0 <= obj["y"] < grid.num_positions
            assert 0 <= obj["angle"] < len(ORIENTATIONS[SHAPES[obj["shape"]]])
        assert LABEL_NAMES[row["label"]] == f"{COLORS[row['color_0']]} {SHAPES[row['shape_0']]}"
        # pixels are exact palette colours on black, and the image is a fresh render of the factors
        image = np.array(row["image"])
        assert np.array_equal(image, render_scene(row_objects(row), 32))
        assert {tuple(p) for p in image.reshape(-1, 3)} <= {(0, 0, 0), *PALETTE.values()}
    assert set(ds["num_shapes"]) == {1, 2}


def test_factor_grids_scale_and_templates_are_distinct_at_every_resolution():
    for resolution in range(16, 65):
        grid = shapes_grid(resolution)
        assert grid.num_positions in (3, 6, 9) and grid.step >= 2
        assert list(grid.radii) == sorted(set(grid.radii)) and grid.radii[0] >= 2
        # a large shape stays inside the image at both ends of the grid
        assert grid.positions[0] - grid.radii[-1] >= 0 and grid.positions[-1] + grid.radii[-1] <= resolution
        # every (shape, size, angle) template differs from every other by at least 4 pixels
        middle = grid.num_positions // 2
        masks = np.stack(
            [
                shape_mask(shape, size, middle, middle, angle, resolution)
                for shape in range(len(SHAPES))
                for size in range(len(SIZES))
                for angle in range(len(ORIENTATIONS[SHAPES[shape]]))
            ]
        ).reshape(-1, resolution * resolution)
        differences = (masks[:, None] != masks[None]).sum(-1) + np.eye(len(masks), dtype=int) * 10**6
        assert differences.min() >= 4, resolution
        # and every template lies inside the image at the extreme positions
        last = grid.num_positions - 1
        for shape in range(len(SHAPES)):
            area = shape_mask(shape, 2, middle, middle, 0, resolution).sum()
            assert shape_mask(shape, 2, 0, 0, 0, resolution).sum() == area
            assert shape_mask(shape, 2, last, last, 0, resolution).sum() == area


@pytest.mark.parametrize("resolution", [15, 65, 0, 32.0, "32"])
def test_resolution_range_errors(resolution):
    with pytest.raises(ValueError, match=r"resolution.*16, 64"):
        make_shapes_dataset(4, resolution)
    with pytest.raises(ValueError, match=re.escape(str(resolution))):
        shapes_grid(resolution)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match=r"num_shapes=3.*1, 2"):
        make_shapes_dataset(4, 32, num_shapes=3)
    with pytest.raises(ValueError, match=r"config='clevr'.*shapes"):
        make_shapes_dataset(4, 32, config="clevr")
    with pytest.raises(ValueError, match="dsprites"):
        make_shapes_dataset(4, 32, config="dsprites")
    with pytest.raises(ValueError, match="num_samples"):
        make_shapes_dataset(0, 32)
    named = [{"shape": "triangle", "color": "cyan", "size": "large", "x": 1, "y": 2, "angle": "left"}]
    assert np.array_equal(
        render_scene(named, 32), render_scene([dict(named[0], shape=2, color=5, size=2, angle=3)], 32)
    )
    with pytest.raises(ValueError, match="unknown color 'orange'"):
        render_scene([{"shape": "circle", "color": "orange", "size": 0, "x": 0, "y": 0}], 32)


def test_two_shape_scenes_never_touch():
    rng = np.random.default_rng(0)
    for resolution in (16, 32):
        for _ in range(100):
            a, b = sample_scene(rng, resolution, num_shapes=2)
            assert (a["y"], a["x"]) < (b["y"], b["x"])  # canonical order
            mask_a = shape_mask(a["shape"], a["size"], a["x"], a["y"], a["angle"], resolution)
            mask_b = shape_mask(b["shape"], b["size"], b["x"], b["y"], b["angle"], resolution)
            grown = F.max_pool2d(torch.from_numpy(mask_a).float()[None, None], 3, 1, 1)[0, 0].bool().numpy()
            assert not (grown & mask_b).any()


def test_captions_agree_with_factors():
    ds = make_shapes_dataset(80, 48, num_shapes=(1, 2), seed=1)
    grid = shapes_grid(48)
    pattern = re.compile(r"a (\w+) (\w+) (\w+) at the ([a-z ]+)")
    words = {"top left": (0, 0), "top": (0, 1), "top right": (0, 2), "left": (1, 0), "center": (1, 1),
             "right": (1, 2), "bottom left": (2, 0), "bottom": (2, 1), "bottom right": (2, 2)}  # fmt: skip
    for row in ds:
        parts = row["caption"].split(" and ")
        objects = row_objects(row)
        assert len(parts) == len(objects) == row["num_shapes"]
        for part, obj in zip(parts, objects):
            size, color, shape, where = pattern.fullmatch(part).groups()
            assert (size, color, shape) == (SIZES[obj["size"]], COLORS[obj["color"]], SHAPES[obj["shape"]])
            assert words[where] == (obj["y"] * 3 // grid.num_positions, obj["x"] * 3 // grid.num_positions)
    assert scene_caption([{"shape": "circle", "color": "red", "size": "small", "x": 0, "y": 0}], 32) == (
        "a small red circle at the top left"
    )


# --- the oracle ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_oracle_reads_fresh_renders(resolution):
    scenes, images = random_scenes(resolution, 200, seed=resolution)
    results = ShapesOracle(resolution).read_batch(images)
    correct = total = 0
    for scene, result in zip(scenes, results):
        assert result["valid"] and result["num_shapes"] == len(scene)
        for truth, read in zip(scene, result["objects"]):
            correct += sum(truth[f] == read[f] for f in FACTORS)
            total += len(FACTORS)
    assert correct / total >= 0.99


def test_oracle_input_formats():
    scene = [{"shape": 2, "color": 3, "size": 1, "x": 1, "y": 4, "angle": 1}]
    image = render_scene(scene, 32)
    oracle = ShapesOracle(32)
    for version in (image, Image.fromarray(image), to_model_space(image), to_model_space(image).numpy()):
        assert oracle.read(version) == {"valid": True, "num_shapes": 1, "objects": scene}
    with pytest.raises(ValueError, match="32x32"):
        ShapesOracle(16).read(image)


@pytest.mark.parametrize("resolution", [16, 32])
def test_oracle_tolerates_small_noise(resolution):
    scenes, images = random_scenes(resolution, 100, seed=1)
    generator = torch.Generator().manual_seed(0)
    noisy = images + 0.05 * torch.randn(images.shape, generator=generator)
    results = ShapesOracle(resolution).read_batch(noisy)
    assert all(r["valid"] for r in results)
    assert [r["objects"] for r in results] == scenes
    assert [r["objects"] for r in ShapesOracle(resolution).read_batch(noisy.clamp(-1, 1))] == scenes


def test_oracle_rejects_garbage():
    resolution = 32
    oracle = ShapesOracle(resolution)
    generator = torch.Generator().manual_seed(0)
    garbage = {
        "uniform noise": torch.rand(3, resolution, resolution, generator=generator) * 2 - 1,
        "gaussian noise": torch.randn(3, resolution, resolution, generator=generator),
        "blank": -torch.ones(3, resolution, resolution),
        "white": torch.ones(3, resolution, resolution),
    }
    # a soft Gaussian blob, and a large circle blurred by a Gaussian of 1.5 px
    yy, xx = torch.meshgrid(torch.arange(resolution) + 0.5, torch.arange(resolution) + 0.5, indexing="ij")
    blob = torch.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / (2 * 4.0**2))
    garbage["blob"] = torch.stack([blob * 2 - 1, -torch.ones_like(blob), -torch.ones_like(blob)])
    circle = to_model_space(render_scene([{"shape": 0, "color": 2, "size": 2, "x": 4, "y": 4}], resolution))
    kernel = torch.exp(-(torch.arange(-5, 6.0) ** 2) / (2 * 1.5**2))
    kernel = kernel / kernel.sum()
    blurred = (circle[:, None] + 1) / 2  # (3, 1, H, W) in [0, 1]
    blurred = F.conv2d(blurred, kernel.view(1, 1, 1, -1), padding=(0, 5))
    blurred = F.conv2d(blurred, kernel.view(1, 1, -1, 1), padding=(5, 0))[:, 0] * 2 - 1
    garbage["blurred circle"] = blurred
    # two shapes overlapping (different colours, then the same colour), two touching, three shapes

    def draw(*objects):
        image = np.zeros((resolution, resolution, 3), dtype=np.uint8)
        for shape, color, size, x, y in objects:
            image[shape_mask(shape, size, x, y, 0, resolution)] = list(PALETTE.values())[color]
        return to_model_space(image)

    garbage["overlap"] = draw((0, 0, 2, 3, 4), (1, 2, 2, 5, 4))
    garbage["overlap, one square nearly hiding a circle"] = draw((0, 0, 2, 4, 4), (1, 2, 2, 5, 4))
    garbage["overlap, same colour"] = draw((0, 0, 2, 3, 4), (1, 0, 2, 5, 4))
    garbage["touching"] = draw((1, 0, 1, 2, 4), (1, 2, 1, 6, 4))
    garbage["three shapes"] = draw((0, 0, 0, 0, 0), (0, 1, 0, 8, 0), (0, 2, 0, 4, 8))
    results = oracle.read_batch(torch.stack(list(garbage.values())))
    for name, result in zip(garbage, results):
        assert not result["valid"], name
    assert results[list(garbage).index("three shapes")]["num_shapes"] == 3
    # the two touching squares are a legal scene one step further apart
    assert oracle.read(draw((1, 0, 1, 2, 4), (1, 2, 1, 7, 4)))["valid"]


def test_oracle_metric_helpers():
    ds = make_shapes_dataset(126, 32, num_shapes=1, seed=5)
    images = torch.stack([to_model_space(np.array(image)) for image in ds["image"]])
    shapes, colors = ds["shape_0"], ds["color_0"]
    assert oracle_validity(images) == 1.0
    assert oracle_coverage(images) == 1.0  # these 126 samples cover all 21 (shape, colour) pairs
    circles = [i for i, shape in enumerate(shapes) if shape == 0]
    assert oracle_coverage(images[circles]) == pytest.approx(len(COLORS) / len(LABEL_NAMES))
    assert attribute_accuracy(images, shapes, colors) == 1.0
    assert attribute_accuracy(images, shapes, [(c + 1) % len(COLORS) for c in colors]) == 0.0
    first = images[circles[0]][None]
    assert attribute_accuracy(first, ["circle"], [COLORS[colors[circles[0]]]]) == 1.0  # names work too
    noise = torch.rand(10, 3, 32, 32) * 2 - 1
    assert oracle_validity(torch.cat([images[:10], noise])) == 0.5
    # a shape one pixel off the grid is rarely valid; its best-guess reading is mostly right
    shifted = images[:40].roll(1, dims=-1)
    assert attribute_accuracy(shifted, shapes[:40], colors[:40]) < 0.5
    assert attribute_accuracy(shifted, shapes[:40], colors[:40], require_valid=False) >= 0.75


def test_distinct_scenes_counts_each_valid_scene_once():
    from hf_genzoo.metrics import shapes_sample_metrics

    ds = make_shapes_dataset(20, 32, num_shapes=1, seed=6)
    images = torch.stack([to_model_space(np.array(image)) for image in ds["image"]])
    scenes = {tuple(ds[i][f"{k}_0"] for k in ("shape", "color", "size", "x", "y", "angle")) for i in range(20)}
    noise = torch.rand(5, 3, 32, 32) * 2 - 1
    # every scene three times, plus five invalid images: still one count per scene
    metrics = shapes_sample_metrics(torch.cat([images, images, images, noise]), ShapesOracle(32))
    assert metrics["oracle_distinct_scenes"] == len(scenes)
    assert metrics["oracle_validity"] == pytest.approx(60 / 65)


# --- edits ---------------------------------------------------------------------------------------------


def test_edit_triplets():
    ds = make_shapes_dataset(120, 32, num_shapes=(1, 2), seed=2, config="edits")
    text_columns = {"input_image", "edited_image", "instruction", "edit_type", "input_caption", "edited_caption"}
    assert text_columns <= set(ds.column_names)
    assert {f"{p}{f}_{s}" for p in ("input_", "edited_") for f in FACTORS for s in range(2)} <= set(ds.column_names)
    assert set(ds["edit_type"]) == set(EDIT_TYPES) and set(ds["num_shapes"]) == {1, 2}
    cell = shapes_grid(32).num_positions // 3
    moves = {"left": (-cell, 0), "right": (cell, 0), "up": (0, -cell), "down": (0, cell)}
    changed_by = {"recolor": {"color"}, "move": {"x", "y"}, "reshape": {"shape", "angle"}, "resize": {"size"}}
    for row in ds:
        before, after = row_objects(row, "input_"), row_objects(row, "edited_")
        instruction = row["instruction"]
        # both images are exact renders of their factors, and the captions describe them
        assert np.array_equal(np.array(row["input_image"]), render_scene(before, 32))
        assert np.array_equal(np.array(row["edited_image"]), render_scene(after, 32))
        assert row["input_caption"] == scene_caption(before, 32) and row["edited_caption"] == scene_caption(after, 32)
        assert row["num_shapes"] == len(before)
        if row["edit_type"] == "remove":
            # two-shape scenes only: one object gone, the other unchanged in slot 0, the removed one named
            assert len(before) == 2 and len(after) == 1 and after[0] in before, instruction
            gone = before[1 - before.index(after[0])]
            assert instruction.startswith("remove the") and instruction.endswith(SHAPES[gone["shape"]])
            assert row["edited_shape_1"] == -1
            continue
        # exactly one object changed (the other one, if any, is untouched), only in what the edit may change
        removed = [obj for obj in before if obj not in after]
        added = [obj for obj in after if obj not in before]
        assert len(removed) == len(added) == 1, instruction
        old, new = removed[0], added[0]
        changed = {f for f in FACTORS if old[f] != new[f]}
        assert changed and changed <= changed_by[row["edit_type"]], (instruction, changed)
        # the instruction says what changed
        if row["edit_type"] == "recolor":
            assert instruction.startswith("make the") and instruction.endswith(COLORS[new["color"]])
        elif row["edit_type"] == "reshape":
            assert instruction.startswith("turn") and instruction.endswith(f"into a {SHAPES[new['shape']]}")
            assert new["angle"] == 0
        elif row["edit_type"] == "resize":
            assert instruction.endswith("bigger" if new["size"] > old["size"] else "smaller")
            assert abs(new["size"] - old["size"]) == 1
        else:
            direction = instruction.split()[-1]
            assert instruction.startswith("move") and (new["x"] - old["x"], new["y"] - old["y"]) == moves[direction]
        if row["num_shapes"] == 2 or row["edit_type"] == "recolor":
            assert SHAPES[old["shape"]] in instruction  # the instruction names its target
        else:
            assert " it " in f"{instruction} "
    # the oracle reads every edited image back
    results = ShapesOracle(32).read_batch(ds["edited_image"])
    assert all(r["valid"] for r in results)
    assert [r["objects"] for r in results] == [row_objects(row, "edited_") for row in ds]
    # removal only in two-shape scenes; the other types in both
    types_by_count = {n: {t for t, m in zip(ds["edit_type"], ds["num_shapes"]) if m == n} for n in (1, 2)}
    assert types_by_count == {1: set(EDIT_TYPES) - {"remove"}, 2: set(EDIT_TYPES)}
    # deterministic given the seed, and a smaller dataset is a prefix
    again = make_shapes_dataset(30, 32, num_shapes=(1, 2), seed=2, config="edits")
    assert again["instruction"] == ds["instruction"][:30] and again["edited_caption"] == ds["edited_caption"][:30]


# --- dsprites ------------------------------------------------------------------------------------------


def test_dsprites_grid():
    ds = make_shapes_dataset(200, config="dsprites", seed=0)
    assert ds.column_names == ["image", "shape", "scale", "orientation", "pos_x", "pos_y", "label"]
    assert ds.features["label"].names == list(DSPRITES_SHAPES)
    assert DSPRITES_GRID_SIZE == 737280
    assert DSPRITES_ORIENTATIONS[1] == pytest.approx(0.16110732)  # dSprites' own values: linspace(0, 2 pi, 40)
    for column, size in (("shape", 3), ("scale", 6), ("orientation", 40), ("pos_x", 32), ("pos_y", 32)):
        assert 0 <= min(ds[column]) and max(ds[column]) < size
    assert ds["label"] == ds["shape"]
    for row in ds.select(range(20)):
        image = np.array(row["image"])
        assert row["image"].mode == "L" and image.shape == (64, 64)
        assert set(np.unique(image)) <= {0, 255}
        assert np.array_equal(
            image, render_dsprite(row["shape"], row["scale"], row["orientation"], row["pos_x"], row["pos_y"])
        )
    assert ds[:]["pos_x"] == make_shapes_dataset(200, config="dsprites", seed=0)[:]["pos_x"]
    assert ds[:50]["orientation"] == make_shapes_dataset(50, config="dsprites", seed=0)[:]["orientation"]
    assert len({tuple(r.values()) for r in ds.remove_columns("image")}) == 200  # without replacement


def test_dsprites_shape_sizes():
    # a scale-1 upright square is about a third of the image wide
    square = render_dsprite(0, 5, 0, 16, 16) > 0
    width = square.any(0).sum()
    assert 20 <= width <= 23 and square.sum() == pytest.approx(width**2, rel=0.1)
    # scale 0.5 halves the side; every shape has a sensible area
    assert (render_dsprite(0, 0, 0, 16, 16) > 0).any(0).sum() == pytest.approx(width / 2, abs=1)
    for shape in range(3):
        area = (render_dsprite(shape, 5, 0, 16, 16) > 0).sum()
        assert 0.4 * width**2 <= area <= 1.05 * width**2
    # the positions keep every shape inside the image, even rotated at the corners
    for shape in range(3):
        for orientation in (0, 5, 10):
            for x, y in ((0, 0), (31, 31), (0, 31)):
                mask = render_dsprite(shape, 5, orientation, x, y) > 0
                centred = render_dsprite(shape, 5, orientation, 16, 16) > 0
                assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
                assert abs(int(mask.sum()) - int(centred.sum())) <= 0.05 * centred.sum()
