"""The shapes world: a procedural image dataset with known factors, and an oracle that reads them back.

Every image shows one or two flat shapes on a black background. Each shape has five or six discrete
factors, all stored as integer indices:

========  ===========================================================================================
factor    grid
========  ===========================================================================================
shape     ``SHAPES``: circle, square, triangle
color     ``PALETTE``: red, green, blue, yellow, magenta, cyan, white (exact values, no anti-aliasing)
size      ``SIZES``: small, medium, large; a shape of size ``k`` fits in a box of half-width
          ``grid.radii[k]`` pixels around its position (circle: radius, square: half-side,
          triangle: half of its base)
x, y      ``grid.num_positions`` centres per axis (3, 6 or 9 depending on the resolution), evenly
          spaced so that a large shape stays inside the image; captions group them into a 3x3 grid
          of words ("top left", ..., "bottom right")
angle     ``ORIENTATIONS[shape]``, degrees clockwise: triangles point up/right/down/left (0, 90, 180,
          270); circles and squares have the single angle 0
========  ===========================================================================================

The grids scale with the resolution (``shapes_grid``): radii are ``SIZE_FRACTIONS * resolution`` rounded
to whole pixels, at least 2, 3 and 4 pixels, so that every (shape, size, angle) template differs from
every other by at least 4 pixels from 16 px up. Squares are not rotated: a square at 45 degrees is 1.4x
wider, which at 16 px leaves no room for a position grid or for two shapes. For example:

==========  ==============  =========================  ==========
resolution  radii (px)      positions (px)             step (px)
==========  ==============  =========================  ==========
16          2, 3, 4         4, 8, 12                   4
24          2, 3, 5         7, 9, ..., 17 (6)          2
32          3, 4, 6         8, 10, ..., 24 (9)         2
48          5, 7, 9         12, 15, ..., 36 (9)        3
64          6, 9, 12        12, 17, ..., 52 (9)        5
==========  ==============  =========================  ==========

Images are rendered from numpy masks, pixel-exact: pixel ``(i, j)`` belongs to a shape when its centre
``(j + 0.5, i + 0.5)`` lies inside it. In two-shape scenes the shapes never touch: at least one background
pixel separates them (8-connectivity), so every shape is its own connected component. Objects are listed
in canonical slot order: by row ``y``, then column ``x``, which is the order of the caption too.

``ShapesOracle`` reads the factors back from any image (rendered, or sampled from a model) by matching
each connected component against the full bank of rendered templates; see its docstring for the
validity rule.

The ``"dsprites"`` config regenerates dSprites (Matthey et al., 2017) on its exact factor grid.
"""

from __future__ import annotations

import io
import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "SHAPES",
    "PALETTE",
    "COLORS",
    "SIZES",
    "SIZE_FRACTIONS",
    "ORIENTATIONS",
    "ORIENTATION_NAMES",
    "POSITION_WORDS",
    "FACTORS",
    "LABEL_NAMES",
    "EDIT_TYPES",
    "MIN_RESOLUTION",
    "MAX_RESOLUTION",
    "CONFIGS",
    "DSPRITES_SHAPES",
    "DSPRITES_SCALES",
    "DSPRITES_ORIENTATIONS",
    "DSPRITES_POSITIONS",
    "DSPRITES_RESOLUTION",
    "DSPRITES_GRID_SIZE",
    "ShapesGrid",
    "shapes_grid",
    "shape_mask",
    "render_scene",
    "sample_scene",
    "scene_caption",
    "class_label",
    "make_shapes_dataset",
    "render_dsprite",
    "ShapesOracle",
    "oracle_validity",
    "oracle_coverage",
    "attribute_accuracy",
]

# ---------------------------------------------------------------------------------------------------------
# Factor grids
# ---------------------------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Colours at the corners of the RGB cube: any two differ by 255 in at least one channel.
PALETTE: "OrderedDict[str, tuple[int, int, int]]" = OrderedDict(
    [
        ("red", (255, 0, 0)),
        ("green", (0, 255, 0)),
        ("blue", (0, 0, 255)),
        ("yellow", (255, 255, 0)),
        ("magenta", (255, 0, 255)),
        ("cyan", (0, 255, 255)),
        ("white", (255, 255, 255)),
    ]
)
COLORS: tuple[str, ...] = tuple(PALETTE)
SIZES: tuple[str, ...] = ("small", "medium", "large")
SIZE_FRACTIONS: tuple[float, ...] = (0.10, 0.14, 0.19)  # half-width of a shape / resolution, per size
_MIN_RADII: tuple[int, ...] = (2, 3, 4)  # pixels; below these a circle and a square look alike
ORIENTATIONS: dict[str, tuple[int, ...]] = {"circle": (0,), "square": (0,), "triangle": (0, 90, 180, 270)}
ORIENTATION_NAMES: dict[str, tuple[str, ...]] = {
    "circle": ("none",),
    "square": ("upright",),
    "triangle": ("up", "right", "down", "left"),  # where the apex points
}
POSITION_WORDS: tuple[tuple[str, ...], ...] = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
FACTORS: tuple[str, ...] = ("shape", "color", "size", "x", "y", "angle")
LABEL_NAMES: tuple[str, ...] = tuple(f"{color} {shape}" for shape in SHAPES for color in COLORS)
EDIT_TYPES: tuple[str, ...] = ("recolor", "move", "reshape", "resize", "remove")
MIN_RESOLUTION, MAX_RESOLUTION = 16, 64
CONFIGS: tuple[str, ...] = ("shapes", "edits", "dsprites")
MAX_SHAPES = 2

_PALETTE_ARRAY = np.array(list(PALETTE.values()), dtype=np.uint8)  # (K, 3)
_NUM_ANGLES = np.array([len(ORIENTATIONS[s]) for s in SHAPES])  # (num_shapes,)


def _check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise ValueError(f"resolution must be an integer in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {resolution!r}")
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"resolution={resolution} is outside the supported range [{MIN_RESOLUTION}, {MAX_RESOLUTION}]")
    return int(resolution)


@dataclass(frozen=True)
class ShapesGrid:
    """The factor grid of the shapes world at one resolution.

    Attributes:
        resolution: image side in pixels.
        radii: half-width in pixels of a shape of each size (``len(SIZES)`` integers).
        positions: centre coordinate in pixels of each ``x`` (and ``y``) index; integers, so shape
            centres sit on pixel corners and every template is an exact translate of the others.
        step: pixels between neighbouring positions.
    """

    resolution: int
    radii: tuple[int, ...]
    positions: tuple[int, ...]
    step: int

    @property
    def num_positions(self) -> int:
        """Number of positions per axis (3, 6 or 9)."""
        return len(self.positions)

    def coarse(self, index: int) -> int:
        """The 3x3 caption cell (0, 1, 2) of a position index."""
        return index * 3 // self.num_positions


@lru_cache(maxsize=None)
def shapes_grid(resolution: int) -> ShapesGrid:
    """Factor grid at ``resolution`` (16..64): size radii and the position grid.

    Radii: ``round(SIZE_FRACTIONS * resolution)``, at least 2/3/4 pixels and strictly increasing.
    Positions: the largest of 9, 6 or 3 positions per axis whose spacing is at least
    ``max(2, resolution // 16)`` pixels, with a large shape still inside the image at both ends.
    """
    resolution = _check_resolution(resolution)
    radii: list[int] = []
    for fraction, minimum in zip(SIZE_FRACTIONS, _MIN_RADII):
        radius = max(minimum, int(math.floor(fraction * resolution + 0.5)))
        radii.append(max(radius, radii[-1] + 1) if radii else radius)
    span = resolution - 2 * radii[-1]  # room for the centres of a large shape
    min_step = max(2, resolution // 16)
    num_positions = next(g for g in (9, 6, 3) if (g - 1) * min_step <= span or g == 3)
    step = span // (num_positions - 1)
    first = int(math.floor((resolution - (num_positions - 1) * step) / 2 + 0.5))
    positions = tuple(first + k * step for k in range(num_positions))
    return ShapesGrid(resolution, tuple(radii), positions, step)


def _index(value, names: Sequence[str], factor: str) -> int:
    """Accept a factor as an index or a name; return the index."""
    if isinstance(value, str):
        if value not in names:
            raise ValueError(f"unknown {factor} {value!r}; expected one of {list(names)}")
        return names.index(value)
    if not 0 <= int(value) < len(names):
        raise ValueError(f"{factor}={value} out of range; expected 0..{len(names) - 1}")
    return int(value)


def _normalize_object(obj: dict, grid: ShapesGrid) -> dict:
    """Factor dict with integer indices (names accepted for shape, color, size and angle, which defaults to 0)."""
    shape = _index(obj["shape"], SHAPES, "shape")
    normalized = {
        "shape": shape,
        "color": _index(obj["color"], COLORS, "color"),
        "size": _index(obj["size"], SIZES, "size"),
        "x": _index(obj["x"], range(grid.num_positions), "x"),
        "y": _index(obj["y"], range(grid.num_positions), "y"),
        "angle": _index(obj.get("angle", 0), ORIENTATION_NAMES[SHAPES[shape]], f"angle of a {SHAPES[shape]}"),
    }
    return normalized


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------


def shape_mask(shape: int, size: int, x: int, y: int, angle: int, resolution: int) -> np.ndarray:
    """Boolean (H, W) mask of one shape; all arguments are factor indices (see module docstring)."""
    grid = shapes_grid(resolution)
    radius = grid.radii[size]
    center_x, center_y = grid.positions[x], grid.positions[y]
    theta = math.radians(ORIENTATIONS[SHAPES[shape]][angle])
    pixel_centers = np.arange(resolution) + 0.5
    dx = pixel_centers[None, :] - center_x  # (1, W)
    dy = pixel_centers[:, None] - center_y  # (H, 1), pointing down
    # Coordinates in the shape's frame: rotate the image by -theta (theta is clockwise on screen),
    # u to the right and v up.
    u = dx * math.cos(theta) + dy * math.sin(theta)  # (H, W)
    v = dx * math.sin(theta) - dy * math.cos(theta)  # (H, W)
    eps = 1e-6  # pixel centres exactly on an edge belong to the shape
    name = SHAPES[shape]
    if name == "circle":
        # A tenth of a pixel inside the box: rounder pixel circles (a radius-3 circle has rows 2, 4, 6, 6, 4, 2).
        return u * u + v * v <= (radius - 0.1) ** 2 + eps
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= radius + eps
    # Equilateral triangle with base 2 * radius, apex along +v, centred on its bounding box:
    # circumradius rho = 2r / sqrt(3), height 1.5 rho, inradius rho / 2, centroid rho / 4 below the box centre.
    rho = 2 * radius / math.sqrt(3)
    v = v + rho / 4  # origin at the centroid
    half = rho / 2
    cos30 = math.sqrt(3) / 2
    return (-v <= half + eps) & (cos30 * u + 0.5 * v <= half + eps) & (-cos30 * u + 0.5 * v <= half + eps)


def render_scene(objects: Iterable[dict], resolution: int = 32) -> np.ndarray:
    """Render a scene: a list of factor dicts ``{shape, color, size, x, y, angle}`` -> (H, W, 3) uint8.

    Factors are indices (names are accepted for shape, color, size and angle). Pixels are exact palette colours
    on black; later objects are drawn over earlier ones (a legal scene never overlaps).
    """
    grid = shapes_grid(resolution)
    image = np.zeros((resolution, resolution, 3), dtype=np.uint8)
    for obj in objects:
        obj = _normalize_object(obj, grid)
        mask = shape_mask(obj["shape"], obj["size"], obj["x"], obj["y"], obj["angle"], resolution)
        image[mask] = _PALETTE_ARRAY[obj["color"]]
    return image


class _TemplateBank:
    """Every (shape, size, angle, y, x) mask at one resolution, for fast rendering and for the oracle.

    Template ``t = (combo * G + y) * G + x`` with ``combo`` indexing ``self.combos`` (shape, size, angle).
    """

    def __init__(self, resolution: int):
        self.grid = shapes_grid(resolution)
        G = self.grid.num_positions
        self.combos = [
            (shape, size, angle)
            for shape in range(len(SHAPES))
            for size in range(len(SIZES))
            for angle in range(len(ORIENTATIONS[SHAPES[shape]]))
        ]
        self.combo_index = np.full((len(SHAPES), len(SIZES), int(_NUM_ANGLES.max())), -1)
        for k, (shape, size, angle) in enumerate(self.combos):
            self.combo_index[shape, size, angle] = k
        masks = [
            shape_mask(shape, size, x, y, angle, resolution)
            for (shape, size, angle) in self.combos
            for y in range(G)
            for x in range(G)
        ]
        self.masks = np.stack(masks)  # (T, H, W) bool
        self.dilated = _dilate_np(self.masks)  # (T, H, W) bool: the mask grown by one pixel (8-connectivity)
        # factors of each template, columns (shape, size, angle, x, y)
        combo_factors = np.array(self.combos)  # (C, 3)
        c, y, x = np.meshgrid(np.arange(len(self.combos)), np.arange(G), np.arange(G), indexing="ij")
        self.factors = np.concatenate(
            [combo_factors[c.ravel()], x.ravel()[:, None], y.ravel()[:, None]], axis=1
        )  # (T, 5)
        self._torch = None

    def index(self, shape, size, angle, x, y):
        """Template index of factor arrays (or ints)."""
        G = self.grid.num_positions
        return (self.combo_index[shape, size, angle] * G + y) * G + x

    def torch_tensors(self):
        """(masks (T, P) float32, dilated masks (T, P) bool, areas (T,)) as torch tensors, cached."""
        if self._torch is None:
            masks = torch.from_numpy(self.masks.reshape(len(self.masks), -1))  # (T, P)
            self._torch = (
                masks.float(),
                torch.from_numpy(self.dilated.reshape(len(self.masks), -1)),
                masks.sum(1).float(),
            )
        return self._torch


def _dilate_np(masks: np.ndarray) -> np.ndarray:
    """3x3 binary dilation of (..., H, W) boolean masks."""
    H, W = masks.shape[-2:]
    padded = np.pad(masks, [(0, 0)] * (masks.ndim - 2) + [(1, 1), (1, 1)])
    out = np.zeros_like(masks)
    for dy in range(3):
        for dx in range(3):
            out |= padded[..., dy : dy + H, dx : dx + W]
    return out


@lru_cache(maxsize=None)
def _bank(resolution: int) -> _TemplateBank:
    return _TemplateBank(resolution)


# ---------------------------------------------------------------------------------------------------------
# Sampling, captions, labels
# ---------------------------------------------------------------------------------------------------------

# Scenes are handled internally as int arrays (N, MAX_SHAPES, len(FACTORS)) with -1 in absent slots.


def _random_objects(rng: np.random.Generator, n: int, grid: ShapesGrid) -> np.ndarray:
    """(n, 6) random objects, uniform over every factor grid."""
    shape = rng.integers(len(SHAPES), size=n)
    color = rng.integers(len(COLORS), size=n)
    size = rng.integers(len(SIZES), size=n)
    x = rng.integers(grid.num_positions, size=n)
    y = rng.integers(grid.num_positions, size=n)
    angle = np.floor(rng.random(n) * _NUM_ANGLES[shape]).astype(np.int64)
    return np.stack([shape, color, size, x, y, angle], axis=1)


def _touching(bank: _TemplateBank, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(n,) True where two (n, 6) object arrays overlap or touch (no background pixel between them)."""
    t0 = bank.index(first[:, 0], first[:, 2], first[:, 5], first[:, 3], first[:, 4])
    t1 = bank.index(second[:, 0], second[:, 2], second[:, 5], second[:, 3], second[:, 4])
    H = bank.grid.resolution
    return (bank.dilated[t0] & bank.masks[t1]).reshape(len(t0), H * H).any(axis=1)


def _canonical_order(scenes: np.ndarray) -> np.ndarray:
    """Sort the two slots of (N, 2, 6) scenes by (y, x); absent slots (-1) stay last."""
    first, second = scenes[:, 0], scenes[:, 1]
    present = second[:, 0] >= 0
    swap = present & ((second[:, 4] < first[:, 4]) | ((second[:, 4] == first[:, 4]) & (second[:, 3] < first[:, 3])))
    scenes = scenes.copy()
    scenes[swap, 0], scenes[swap, 1] = second[swap], first[swap]
    return scenes


def _draw_scene(rng: np.random.Generator, grid: ShapesGrid, num_shapes: int) -> np.ndarray:
    """A (2, 6) legal scene with ``num_shapes`` objects, uniform over legal scenes, in canonical order."""
    scene = np.full((MAX_SHAPES, len(FACTORS)), -1, dtype=np.int64)
    bank = _bank(grid.resolution)
    for _ in range(1000):  # rejection sampling; about half of the random pairs are legal
        scene[:num_shapes] = _random_objects(rng, num_shapes, grid)
        if num_shapes == 1 or not _touching(bank, scene[None, 0], scene[None, 1])[0]:
            return _canonical_order(scene[None])[0]
    raise RuntimeError(f"could not place two shapes at resolution {grid.resolution}")


def _row_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of row ``index``: a row depends on (seed, index) only, so a smaller dataset is a prefix."""
    return np.random.default_rng([seed, index])


def _scene_to_objects(scene: np.ndarray) -> list[dict]:
    return [dict(zip(FACTORS, map(int, obj))) for obj in scene if obj[0] >= 0]


def sample_scene(rng: np.random.Generator | int | None, resolution: int = 32, num_shapes: int = 1) -> list[dict]:
    """One random legal scene: a list of ``num_shapes`` factor dicts in canonical (y, x) order."""
    if num_shapes not in (1, 2):
        raise ValueError(f"num_shapes={num_shapes!r} is not allowed; use 1 or 2")
    return _scene_to_objects(_draw_scene(np.random.default_rng(rng), shapes_grid(resolution), num_shapes))


def _position_word(obj: dict, grid: ShapesGrid) -> str:
    return POSITION_WORDS[grid.coarse(obj["y"])][grid.coarse(obj["x"])]


def scene_caption(objects: Sequence[dict], resolution: int = 32) -> str:
    """Caption of a scene, e.g. "a small red circle at the top left and a large blue square at the bottom"."""
    grid = shapes_grid(resolution)
    parts = []
    for obj in objects:
        obj = _normalize_object(obj, grid)
        parts.append(
            f"a {SIZES[obj['size']]} {COLORS[obj['color']]} {SHAPES[obj['shape']]} at the {_position_word(obj, grid)}"
        )
    return " and ".join(parts)


def class_label(shape, color) -> int:
    """Index into ``LABEL_NAMES`` of a (shape, colour) pair, e.g. ``class_label("circle", "red") == 0``."""
    return _index(shape, SHAPES, "shape") * len(COLORS) + _index(color, COLORS, "color")


def _legal(scene: np.ndarray, grid: ShapesGrid) -> bool:
    """Whether a (2, 6) scene is legal: its shapes (if two) do not touch."""
    if scene[1, 0] < 0:
        return True
    return not _touching(_bank(grid.resolution), scene[None, 0], scene[None, 1])[0]


# ---------------------------------------------------------------------------------------------------------
# Dataset builders
# ---------------------------------------------------------------------------------------------------------


def _render_scenes(scenes: np.ndarray, resolution: int) -> np.ndarray:
    """(N, 2, 6) scenes -> (N, H, W, 3) uint8 images, from the template bank."""
    bank = _bank(resolution)
    images = np.zeros((len(scenes), resolution, resolution, 3), dtype=np.uint8)
    for slot in range(MAX_SHAPES):
        objs = scenes[:, slot]
        present = np.flatnonzero(objs[:, 0] >= 0)
        if len(present) == 0:
            continue
        objs = objs[present]
        masks = bank.masks[bank.index(objs[:, 0], objs[:, 2], objs[:, 5], objs[:, 3], objs[:, 4])]  # (n, H, W)
        colors = _PALETTE_ARRAY[objs[:, 1]][:, None, None, :]  # (n, 1, 1, 3)
        images[present] = np.where(masks[..., None], colors, images[present])
    return images


def _png(array: np.ndarray) -> dict:
    """Encode one uint8 image as the ``{"bytes", "path"}`` dict a ``datasets.Image()`` column stores."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def _encode_images(scenes: np.ndarray, resolution: int, chunk: int = 2048) -> list[dict]:
    encoded = []
    for start in range(0, len(scenes), chunk):
        encoded.extend(_png(image) for image in _render_scenes(scenes[start : start + chunk], resolution))
    return encoded


def _factor_columns(scenes: np.ndarray, prefix: str = "") -> dict:
    columns = {}
    for slot in range(MAX_SHAPES):
        for k, factor in enumerate(FACTORS):
            columns[f"{prefix}{factor}_{slot}"] = scenes[:, slot, k].tolist()
    return columns


def _factor_features(prefix: str = "") -> dict:
    features = {}
    for slot in range(MAX_SHAPES):
        for factor in FACTORS:
            features[f"{prefix}{factor}_{slot}"] = datasets.Value("int64")
    return features


def _num_shapes_choices(num_shapes) -> tuple[int, ...]:
    if isinstance(num_shapes, (int, np.integer)) and not isinstance(num_shapes, bool) and num_shapes in (1, 2):
        return (int(num_shapes),)
    if isinstance(num_shapes, (tuple, list)) and len(num_shapes) > 0 and set(num_shapes) <= {1, 2}:
        return tuple(sorted(set(num_shapes)))
    raise ValueError(f"num_shapes={num_shapes!r} is not allowed; use 1, 2 or (1, 2)")


def make_shapes_dataset(
    num_samples: int = 10000,
    resolution: int | None = None,
    num_shapes: int | tuple[int, ...] = 1,
    seed: int = 0,
    config: str = "shapes",
) -> datasets.Dataset:
    """Build a shapes-world dataset, deterministic given ``seed``.

    Args:
        num_samples: number of rows.
        resolution: image side, 16..64 (default 32). The ``"dsprites"`` config exists at 64 only.
        num_shapes: 1, 2 or ``(1, 2)`` (each row draws 1 or 2 with equal probability). Ignored by dsprites.
        seed: seed of the numpy generator that draws every factor.
        config: ``"shapes"``, ``"edits"`` or ``"dsprites"``.

    Row ``i`` is drawn from a generator seeded with ``(seed, i)``, so a smaller dataset is a prefix of a
    larger one with the same seed.

    Columns of ``"shapes"``: ``image`` (``datasets.Image``, RGB), ``caption``, ``num_shapes``, the factor
    indices of both slots ``shape_0, color_0, size_0, x_0, y_0, angle_0, shape_1, ..., angle_1`` (-1 in
    an absent slot 1) and ``label``, a ``ClassLabel`` over the (colour, shape) of slot 0 (``LABEL_NAMES``).

    Columns of ``"edits"``: ``input_image``, ``edited_image``, ``instruction`` ("make the circle blue",
    "move it to the right", "turn it into a square", "make it bigger"), ``edit_type`` (one of
    ``EDIT_TYPES``), ``input_caption``, ``edited_caption``, ``num_shapes`` (of the input scene) and the
    factor columns of both scenes prefixed ``input_`` and ``edited_``. The edited image is rendered from
    the edited factors; every factor the instruction does not name is unchanged (a reshaped shape takes
    angle 0). A move goes one caption cell (a third of the position grid) left, right, up or down. In
    two-shape scenes the instruction names its target ("make the red circle blue"). A removal ("remove the
    circle", "remove the red circle"; instruction-based inpainting as in Yildirim et al. 2023, Inst-Inpaint)
    exists in two-shape scenes only: its target is the scene without that object, the other one unchanged
    in slot 0 (removing the only object would leave an empty image, which no caption or oracle reading
    describes). A one-shape row that draws "remove" draws again, so one-shape rows split evenly over the
    other four types and two-shape rows over all five.

    ``"dsprites"``: see ``_make_dsprites``.
    """
    if config not in CONFIGS:
        raise ValueError(f"config={config!r} is not allowed; use one of {list(CONFIGS)}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if config == "dsprites":
        if resolution not in (None, DSPRITES_RESOLUTION):
            raise ValueError(f"resolution={resolution} is not allowed for dsprites: its images are 64x64")
        return _make_dsprites(num_samples, seed)
    resolution = _check_resolution(32 if resolution is None else resolution)
    grid = shapes_grid(resolution)
    choices = _num_shapes_choices(num_shapes)
    rngs = [_row_rng(seed, index) for index in range(num_samples)]
    scenes = np.stack([_draw_scene(rng, grid, choices[rng.integers(len(choices))]) for rng in rngs])  # (N, 2, 6)
    counts = (scenes[:, :, 0] >= 0).sum(1)  # (N,)
    if config == "edits":
        return _make_edits(rngs, scenes, grid)

    captions = [scene_caption(_scene_to_objects(scene), resolution) for scene in scenes]
    columns = {
        "image": _encode_images(scenes, resolution),
        "caption": captions,
        "num_shapes": counts.tolist(),
        **_factor_columns(scenes),
        "label": (scenes[:, 0, 0] * len(COLORS) + scenes[:, 0, 1]).tolist(),
    }
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "caption": datasets.Value("string"),
            "num_shapes": datasets.Value("int64"),
            **_factor_features(),
            "label": datasets.ClassLabel(names=list(LABEL_NAMES)),
        }
    )
    return datasets.Dataset.from_dict(columns, features=features)


# --- edits ---------------------------------------------------------------------------------------------


def _reference(scene: np.ndarray, slot: int) -> str | None:
    """How an instruction names the object in ``slot``: "circle", "red circle", or None if ambiguous."""
    objs = [obj for obj in scene if obj[0] >= 0]
    target = scene[slot]
    if sum(obj[0] == target[0] for obj in objs) == 1:
        return SHAPES[target[0]]
    if sum(obj[0] == target[0] and obj[1] == target[1] for obj in objs) == 1:
        return f"{COLORS[target[1]]} {SHAPES[target[0]]}"
    return None


_MOVES = (("left", -1, 0), ("right", 1, 0), ("up", 0, -1), ("down", 0, 1))


def _edit_candidates(scene: np.ndarray, slot: int, edit_type: str, grid: ShapesGrid) -> list[tuple[np.ndarray, str]]:
    """Every legal edit of one type on one object, as (edited scene, instruction wording)."""
    S, C, Z, X, Y, A = range(len(FACTORS))
    single = scene[1, 0] < 0
    ref = _reference(scene, slot)
    target = "it" if single else f"the {ref}"
    cell = grid.num_positions // 3  # one caption cell
    candidates = []

    def propose(changes: dict, instruction: str):
        edited = scene.copy()
        for column, value in changes.items():
            edited[slot, column] = value
        if _legal(edited, grid):
            candidates.append((edited, instruction))

    obj = scene[slot]
    if edit_type == "recolor":
        for color in range(len(COLORS)):
            if color != obj[C]:
                propose({C: color}, f"make the {ref} {COLORS[color]}")
    elif edit_type == "move":
        for word, dx, dy in _MOVES:
            x, y = obj[X] + dx * cell, obj[Y] + dy * cell
            if 0 <= x < grid.num_positions and 0 <= y < grid.num_positions:
                where = f"to the {word}" if word in ("left", "right") else word
                propose({X: x, Y: y}, f"move {target} {where}")
    elif edit_type == "reshape":
        for shape in range(len(SHAPES)):
            if shape != obj[S]:
                propose({S: shape, A: 0}, f"turn {target} into a {SHAPES[shape]}")
    elif edit_type == "resize":
        for word, delta in (("smaller", -1), ("bigger", 1)):
            if 0 <= obj[Z] + delta < len(SIZES):
                propose({Z: obj[Z] + delta}, f"make {target} {word}")
    elif edit_type == "remove" and not single:  # removing the only object would leave an empty image
        edited = np.full_like(scene, -1)
        edited[0] = scene[1 - slot]  # the other object, unchanged, in slot 0
        candidates.append((edited, f"remove the {ref}"))
    return candidates


def _make_edits(rngs: list[np.random.Generator], scenes: np.ndarray, grid: ShapesGrid) -> datasets.Dataset:
    """Edit triplets on the given input scenes, drawing from each row's generator (see ``make_shapes_dataset``)."""
    inputs, edited, instructions, edit_types = [], [], [], []
    counts = (scenes[:, :, 0] >= 0).sum(1)
    for rng, scene, count in zip(rngs, scenes, counts):
        for _ in range(1000):
            slot = int(rng.integers(count))
            edit_type = EDIT_TYPES[rng.integers(len(EDIT_TYPES))]
            if _reference(scene, slot) is None:  # two identical shapes: draw a new scene
                scene = _draw_scene(rng, grid, count)
                continue
            candidates = _edit_candidates(scene, slot, edit_type, grid)
            if candidates:
                target, instruction = candidates[rng.integers(len(candidates))]
                break
        else:
            raise RuntimeError("could not find a legal edit")
        inputs.append(scene)
        edited.append(_canonical_order(target[None])[0])
        instructions.append(instruction)
        edit_types.append(edit_type)
    inputs, edited = np.stack(inputs), np.stack(edited)
    resolution = grid.resolution
    columns = {
        "input_image": _encode_images(inputs, resolution),
        "edited_image": _encode_images(edited, resolution),
        "instruction": instructions,
        "edit_type": edit_types,
        "input_caption": [scene_caption(_scene_to_objects(s), resolution) for s in inputs],
        "edited_caption": [scene_caption(_scene_to_objects(s), resolution) for s in edited],
        "num_shapes": counts.tolist(),
        **_factor_columns(inputs, "input_"),
        **_factor_columns(edited, "edited_"),
    }
    features = datasets.Features(
        {
            "input_image": datasets.Image(),
            "edited_image": datasets.Image(),
            "instruction": datasets.Value("string"),
            "edit_type": datasets.Value("string"),
            "input_caption": datasets.Value("string"),
            "edited_caption": datasets.Value("string"),
            "num_shapes": datasets.Value("int64"),
            **_factor_features("input_"),
            **_factor_features("edited_"),
        }
    )
    return datasets.Dataset.from_dict(columns, features=features)


# --- dsprites ------------------------------------------------------------------------------------------

DSPRITES_SHAPES: tuple[str, ...] = ("square", "ellipse", "heart")
DSPRITES_SCALES = np.linspace(0.5, 1.0, 6)
# dSprites' own grid: 40 values from 0 to 2*pi, both included (so index 39 renders like index 0).
DSPRITES_ORIENTATIONS = np.linspace(0.0, 2 * np.pi, 40)
DSPRITES_POSITIONS = np.linspace(0.0, 1.0, 32)
DSPRITES_RESOLUTION = 64
DSPRITES_GRID_SIZE = (
    len(DSPRITES_SHAPES) * len(DSPRITES_SCALES) * len(DSPRITES_ORIENTATIONS) * len(DSPRITES_POSITIONS) ** 2
)
_DSPRITES_HALF_SIDE = DSPRITES_RESOLUTION / 6  # a scale-1 square is a third of the image wide
_HEART_HALF_WIDTH = 1.1390  # of the curve (x^2 + y^2 - 1)^3 = x^2 y^3, whose y spans [-1, 1.2360]
_HEART_Y_CENTER = 0.1180
_DSPRITES_MARGIN = math.sqrt(2) * _DSPRITES_HALF_SIDE + 0.5  # the farthest any shape reaches, plus half a pixel


def _dsprite_masks(
    shape: np.ndarray, scale: np.ndarray, orientation: np.ndarray, pos_x: np.ndarray, pos_y: np.ndarray
) -> np.ndarray:
    """(N, 64, 64) boolean masks of dSprites from (N,) factor index arrays."""
    R = DSPRITES_RESOLUTION
    half = _DSPRITES_HALF_SIDE * DSPRITES_SCALES[scale][:, None, None]  # (N, 1, 1)
    theta = DSPRITES_ORIENTATIONS[orientation][:, None, None]  # (N, 1, 1)
    center_x = _DSPRITES_MARGIN + DSPRITES_POSITIONS[pos_x] * (R - 2 * _DSPRITES_MARGIN)  # (N,)
    center_y = _DSPRITES_MARGIN + DSPRITES_POSITIONS[pos_y] * (R - 2 * _DSPRITES_MARGIN)  # (N,)
    pixel_centers = np.arange(R) + 0.5
    dx = pixel_centers[None, None, :] - center_x[:, None, None]  # (N, 1, W)
    dy = center_y[:, None, None] - pixel_centers[None, :, None]  # (N, H, 1), pointing up
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / half  # (N, H, W), in units of the half-side
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / half  # (N, H, W)
    square = np.maximum(np.abs(u), np.abs(v)) <= 1.0
    ellipse = (u / 1.4) ** 2 + (v / 0.7) ** 2 <= 1.0  # a 2:1 ellipse, 3/4 of the square's area
    hx, hy = u * _HEART_HALF_WIDTH, v * _HEART_HALF_WIDTH + _HEART_Y_CENTER  # heart as wide as the square
    heart = (hx**2 + hy**2 - 1) ** 3 - hx**2 * hy**3 <= 0
    which = shape[:, None, None]  # (N, 1, 1)
    return np.where(which == 0, square, np.where(which == 1, ellipse, heart))


def render_dsprite(shape: int, scale: int, orientation: int, pos_x: int, pos_y: int) -> np.ndarray:
    """One dSprites image, (64, 64) uint8 in {0, 255}, from factor indices into the DSPRITES_* grids."""
    mask = _dsprite_masks(*(np.array([value]) for value in (shape, scale, orientation, pos_x, pos_y)))[0]
    return mask.astype(np.uint8) * 255


def _make_dsprites(num_samples: int, seed: int) -> datasets.Dataset:
    """dSprites on its exact factor grid (Matthey et al., 2017), regenerated by this module.

    The original dSprites archive cannot be downloaded here, so the pixels are NOT the original files:
    they are rendered by ``render_dsprite`` from the same factor grid (3 shapes x 6 scales x 40
    orientations x 32 x 32 positions = 737,280 points, white on black, 64x64, mode "L", binary). Sizes
    follow dSprites' conventions approximately: a scale-1 square is a third of the image wide, and the
    positions keep every shape inside the image. ``num_samples`` grid points are drawn uniformly without
    replacement (the first ``num_samples`` of one seeded shuffle of the grid, so a smaller dataset is a
    prefix of a larger one); a grid point's flat index follows dSprites' order (posY varies fastest,
    then posX, orientation, scale, shape). Columns: ``image``, ``shape``, ``scale``, ``orientation``,
    ``pos_x``, ``pos_y`` (indices into the ``DSPRITES_*`` grids) and ``label`` (``ClassLabel`` over
    ``DSPRITES_SHAPES``).
    """
    if num_samples > DSPRITES_GRID_SIZE:
        raise ValueError(f"num_samples={num_samples} exceeds the {DSPRITES_GRID_SIZE} points of the dSprites grid")
    flat = np.random.default_rng(seed).permutation(DSPRITES_GRID_SIZE)[:num_samples]  # a prefix of one shuffle
    shape_ix, rest = np.divmod(flat, len(DSPRITES_SCALES) * len(DSPRITES_ORIENTATIONS) * 32 * 32)
    scale_ix, rest = np.divmod(rest, len(DSPRITES_ORIENTATIONS) * 32 * 32)
    orientation_ix, rest = np.divmod(rest, 32 * 32)
    pos_x_ix, pos_y_ix = np.divmod(rest, 32)
    images = []
    for start in range(0, num_samples, 512):
        part = slice(start, start + 512)
        masks = _dsprite_masks(shape_ix[part], scale_ix[part], orientation_ix[part], pos_x_ix[part], pos_y_ix[part])
        images.extend(_png(mask.astype(np.uint8) * 255) for mask in masks)
    columns = {
        "image": images,
        "shape": shape_ix.tolist(),
        "scale": scale_ix.tolist(),
        "orientation": orientation_ix.tolist(),
        "pos_x": pos_x_ix.tolist(),
        "pos_y": pos_y_ix.tolist(),
        "label": shape_ix.tolist(),
    }
    features = datasets.Features(
        {
            "image": datasets.Image(),
            **{name: datasets.Value("int64") for name in ("shape", "scale", "orientation", "pos_x", "pos_y")},
            "label": datasets.ClassLabel(names=list(DSPRITES_SHAPES)),
        }
    )
    return datasets.Dataset.from_dict(columns, features=features)


# ---------------------------------------------------------------------------------------------------------
# The analytic oracle
# ---------------------------------------------------------------------------------------------------------


def _to_batch(images) -> torch.Tensor:
    """Any supported image input -> float32 tensor (B, 3, H, W) in [-1, 1].

    Accepts a PIL image, an (H, W, 3) uint8 array, a (3, H, W) float array/tensor in [-1, 1], a
    (B, 3, H, W) float array/tensor in [-1, 1], a (B, H, W, 3) uint8 array, or a list (or a datasets
    column) of single images.
    """
    if isinstance(images, Image.Image):
        array = np.asarray(images.convert("RGB"))  # (H, W, 3) uint8
        return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    if not isinstance(images, (np.ndarray, torch.Tensor)) and hasattr(images, "__iter__"):
        return torch.cat([_to_batch(image) for image in images])  # a list, or a datasets column
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.array(images))  # a copy: the input may be read-only
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"cannot read images of type {type(images).__name__}")
    if images.dtype == torch.uint8:
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (H, W, 3) or (B, H, W, 3), got {tuple(images.shape)}")
        return images.permute(0, 3, 1, 2).float() / 127.5 - 1
    images = images.detach().float().cpu()
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"float images must be (3, H, W) or (B, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
    return images


def _connected_components(foreground: torch.Tensor, max_iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8-connected components of (B, H, W) boolean masks by max-label propagation.

    Every foreground pixel starts with its own label and takes the largest label of its 3x3
    neighbourhood until nothing changes. Returns labels (B, H, W) float (0 = background; one distinct
    positive label per component) and ``converged`` (B,) bool: images still changing after
    ``max_iterations`` (snakes, noise) are not converged.
    """
    B, H, W = foreground.shape
    pixel_ids = torch.arange(1, H * W + 1, dtype=torch.float32).view(1, 1, H, W)
    fg = foreground.float()[:, None]  # (B, 1, H, W)
    labels = pixel_ids * fg  # (B, 1, H, W)
    for _ in range(max_iterations):
        spread = F.max_pool2d(labels, kernel_size=3, stride=1, padding=1) * fg  # (B, 1, H, W)
        if torch.equal(spread, labels):
            break
        labels = spread
    spread = F.max_pool2d(labels, kernel_size=3, stride=1, padding=1) * fg
    converged = (spread == labels).flatten(1).all(1)  # (B,)
    return labels[:, 0], converged


class ShapesOracle:
    """Reads shapes-world factors back from images, with no trained network.

    Validity rule (thresholds are the constructor arguments, in [-1, 1] pixel units):

    1. foreground = pixels whose brightest channel is above ``foreground_threshold`` (0, mid-grey);
    2. split the foreground into 8-connected components; components under ``min_component_pixels``
       are specks, left to rule 6. A valid image has 1 or 2 components;
    3. each component's colour: snap every pixel to the nearest palette colour, counting pixels within
       ``color_tolerance`` (Euclidean RGB distance); the majority colour must hold at least
       ``color_purity`` of the component's pixels, and other palette colours (a second shape
       overlapping the first) at most ``max_foreign_fraction``;
    4. each component's factors: the template (shape, size, angle, x, y) of highest IoU among all the
       rendered templates at this resolution; that IoU must be at least ``iou_threshold``. An exact
       render scores 1.0; at 32 px a small shape one pixel off the grid scores 0.5-0.7, so the default
       0.8 asks for shapes drawn on the grid, give or take a few edge pixels (distinct templates
       overlap with IoU at most 0.83, a large circle and a medium square; the reading is the best match);
    5. two shapes must form a legal scene: their templates do not touch;
    6. the background is plain: of the pixels farther than one pixel from every matched template, at
       least ``background_fraction`` are near black (brightest channel at most ``black_threshold``).

    In 0-255 units the defaults are: foreground above 127.5, colour tolerance 102, near black at most
    63.75. Objects come back in the generator's canonical order (by ``y``, then ``x``).
    """

    def __init__(
        self,
        resolution: int = 32,
        iou_threshold: float = 0.8,
        color_tolerance: float = 0.8,
        color_purity: float = 0.9,
        max_foreign_fraction: float = 0.03,
        foreground_threshold: float = 0.0,
        black_threshold: float = -0.5,
        background_fraction: float = 0.99,
        min_component_pixels: int = 3,
    ):
        self.resolution = _check_resolution(resolution)
        self.iou_threshold = iou_threshold
        self.color_tolerance = color_tolerance
        self.color_purity = color_purity
        self.max_foreign_fraction = max_foreign_fraction
        self.foreground_threshold = foreground_threshold
        self.black_threshold = black_threshold
        self.background_fraction = background_fraction
        self.min_component_pixels = min_component_pixels
        self.bank = _bank(self.resolution)
        self.palette = torch.from_numpy(_PALETTE_ARRAY).float() / 127.5 - 1  # (K, 3) in [-1, 1]

    def read(self, image) -> dict:
        """Read one image (PIL, (H, W, 3) uint8, or (3, H, W) float in [-1, 1]).

        Returns ``{"valid": bool, "num_shapes": int, "objects": [{shape, color, size, x, y, angle}, ...]}``;
        ``num_shapes`` counts the components found, ``objects`` holds the best reading of each when
        there are one or two (also when the image is not valid), in canonical order.
        """
        return self.read_batch(_to_batch(image))[0]

    @torch.no_grad()
    def read_batch(self, images, chunk_size: int = 1024) -> list[dict]:
        """Read a batch, (B, 3, H, W) float in [-1, 1] (or any input ``read`` takes, or a list of them)."""
        images = _to_batch(images)
        _, _, H, W = images.shape
        if H != self.resolution or W != self.resolution:
            raise ValueError(f"images are {H}x{W} but this oracle reads {self.resolution}x{self.resolution}")
        results = []
        for start in range(0, len(images), chunk_size):  # bounded memory for any batch size
            results.extend(self._read_chunk(images[start : start + chunk_size]))
        return results

    def _read_chunk(self, images: torch.Tensor) -> list[dict]:
        B, _, H, W = images.shape
        P = H * W
        masks_bank, dilated_bank, areas_bank = self.bank.torch_tensors()  # (T, P), (T, P), (T,)

        # 1. foreground: brightest channel above mid-grey
        brightness = images.amax(dim=1)  # (B, H, W)
        foreground = brightness > self.foreground_threshold

        # 2. connected components; a convex shape converges in about its diameter, anything slower is not a shape
        labels, converged = _connected_components(foreground, max_iterations=2 * H)
        labels = labels.view(B, P).long()  # (B, P)
        batch_ix, pixel_ix = foreground.view(B, P).nonzero(as_tuple=True)  # (n_fg,), (n_fg,)
        keys = batch_ix * (P + 1) + labels[batch_ix, pixel_ix]
        component_keys, pixel_component, component_area = torch.unique(keys, return_inverse=True, return_counts=True)
        component_image = component_keys // (P + 1)  # (N,)
        kept = component_area >= self.min_component_pixels
        num_components = torch.bincount(component_image[kept], minlength=B)  # (B,)

        # keep the components of images with 1 or 2 of them; renumber them 0..n-1
        readable = (num_components >= 1) & (num_components <= MAX_SHAPES)
        selected = kept & readable[component_image]
        new_id = torch.full((len(component_keys),), -1, dtype=torch.long)
        new_id[selected] = torch.arange(int(selected.sum()))
        comp_image = component_image[selected]  # (n,)
        n = len(comp_image)
        on_pixel = new_id[pixel_component] >= 0
        comp_of_pixel = new_id[pixel_component][on_pixel]  # (m,)
        pix_batch, pix_pos = batch_ix[on_pixel], pixel_ix[on_pixel]  # (m,), (m,)
        comp_masks = torch.zeros(n, P)  # (n, P)
        comp_masks[comp_of_pixel, pix_pos] = 1.0
        comp_area = comp_masks.sum(1)  # (n,)

        # 3. colour: snap each pixel to the nearest palette colour within the tolerance
        pixels = images.permute(0, 2, 3, 1).reshape(B, P, 3)[pix_batch, pix_pos]  # (m, 3)
        distance = torch.cdist(pixels, self.palette)  # (m, K)
        nearest_distance, nearest = distance.min(dim=1)  # (m,), (m,)
        close = nearest_distance <= self.color_tolerance
        color_counts = torch.zeros(n, len(COLORS))  # (n, K)
        color_counts.index_put_((comp_of_pixel[close], nearest[close]), torch.ones(int(close.sum())), accumulate=True)
        majority_count, comp_color = color_counts.max(dim=1)  # (n,), (n,)
        foreign_count = color_counts.sum(1) - majority_count  # pixels of another palette colour: a second shape
        color_ok = (majority_count >= self.color_purity * comp_area) & (
            foreign_count <= self.max_foreign_fraction * comp_area
        )

        # 4. factors: the best template by IoU
        intersection = comp_masks @ masks_bank.T  # (n, T)
        union = comp_area[:, None] + areas_bank[None, :] - intersection  # (n, T)
        best_iou, best_template = (intersection / union).max(dim=1)  # (n,), (n,)
        shape_ok = best_iou >= self.iou_threshold

        # 5. a legal scene: the two matched templates do not touch
        zone_per_component = dilated_bank[best_template]  # (n, P): each template grown by one pixel
        per_image = torch.bincount(comp_image, minlength=B)  # (B,)
        pairs = torch.nonzero(per_image[comp_image] == 2).squeeze(1)  # components of two-shape images, image by image
        first, second = pairs[0::2], pairs[1::2]
        touching = torch.zeros(B, dtype=torch.bool)
        touching[comp_image[first]] = (zone_per_component[first] & (masks_bank[best_template[second]] > 0)).any(1)

        # 6. a plain background beyond the matched templates
        zone = torch.zeros(B, P)
        zone.index_add_(0, comp_image, zone_per_component.float())
        zone = zone > 0  # (B, P)
        outside = ~zone  # (B, P)
        near_black = brightness.view(B, P) <= self.black_threshold
        black_fraction = (outside & near_black).sum(1).float() / outside.sum(1).clamp(min=1).float()
        background_ok = black_fraction >= self.background_fraction

        # 7. gather per image
        comp_ok = color_ok & shape_ok
        all_ok = torch.ones(B, dtype=torch.bool)
        all_ok.index_put_((comp_image[~comp_ok],), torch.tensor(False))
        valid = readable & converged & all_ok & ~touching & background_ok
        factors = self.bank.factors[best_template.numpy()]  # (n, 5): shape, size, angle, x, y
        results = [{"valid": bool(valid[b]), "num_shapes": int(num_components[b]), "objects": []} for b in range(B)]
        for c in range(n):
            shape, size, angle, x, y = (int(v) for v in factors[c])
            results[int(comp_image[c])]["objects"].append(
                {"shape": shape, "color": int(comp_color[c]), "size": size, "x": x, "y": y, "angle": angle}
            )
        for result in results:
            result["objects"].sort(key=lambda obj: (obj["y"], obj["x"]))
        return results

    def validity(self, images) -> float:
        """Fraction of valid images."""
        results = self.read_batch(images)
        return sum(r["valid"] for r in results) / max(len(results), 1)


@lru_cache(maxsize=8)
def _oracle(resolution: int) -> ShapesOracle:
    return ShapesOracle(resolution)


def _read_all(images) -> list[dict]:
    batch = _to_batch(images)
    return _oracle(batch.shape[-1]).read_batch(batch)


def oracle_validity(images) -> float:
    """Fraction of images the default ``ShapesOracle`` judges valid; images (B, 3, H, W) in [-1, 1]."""
    results = _read_all(images)
    return sum(r["valid"] for r in results) / max(len(results), 1)


def oracle_coverage(images) -> float:
    """Fraction of the ``len(LABEL_NAMES)`` (shape, colour) pairs present among the valid images' objects."""
    seen = {(obj["shape"], obj["color"]) for r in _read_all(images) if r["valid"] for obj in r["objects"]}
    return len(seen) / len(LABEL_NAMES)


def attribute_accuracy(images, shapes: Sequence, colors: Sequence, require_valid: bool = True) -> float:
    """How often a sample shows one shape of the requested shape and colour.

    ``shapes`` and ``colors`` give the request for each image (indices or names). A hit is a sample with
    one component read as that (shape, colour) and, when ``require_valid`` (default), valid. With
    ``require_valid=False`` the best-guess reading of an invalid sample counts too (it is the nearest
    template on the grid: right for most shapes a pixel off the grid, unreliable for blobs).
    """
    results = _read_all(images)
    if not len(results) == len(shapes) == len(colors):
        raise ValueError(f"got {len(results)} images, {len(shapes)} shapes and {len(colors)} colors")
    hits = 0
    for result, shape, color in zip(results, shapes, colors):
        shape, color = _index(shape, SHAPES, "shape"), _index(color, COLORS, "color")
        objects = result["objects"]
        hits += bool(
            (result["valid"] or not require_valid)
            and len(objects) == 1
            and objects[0]["shape"] == shape
            and objects[0]["color"] == color
        )
    return hits / max(len(results), 1)
