"""What a text-to-image model of the shapes world is judged by: does the oracle read, in each sample, what its caption
asked for? (../shared/DESIGN.md, "Measured, not claimed".)

A caption names, for each object, its shape, colour, size and 3×3 position cell ("a small red circle at the top
left"). For one-object captions each attribute is scored on its own; for two-object captions, binding: each (colour,
shape) pair of the caption is read on one object (a red circle and a blue square, not a blue circle and a red square).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..data.shapes import ShapesOracle, shapes_grid

ATTRIBUTES = ("shape", "color", "size", "position")


def _key(obj: dict, grid) -> dict:
    """The attributes a caption names: shape, colour, size and the 3×3 cell of the position."""
    return {
        "shape": obj["shape"],
        "color": obj["color"],
        "size": obj["size"],
        "position": (grid.coarse(obj["y"]), grid.coarse(obj["x"])),
    }


@torch.no_grad()
def caption_metrics(images: torch.Tensor, scenes: Sequence[Sequence[dict]], resolution: int) -> dict:
    """Oracle readings of samples (N, 3, H, W) in [-1, 1] against the scenes their captions described (each a list of
    one or two factor dicts with shape, color, size, x, y indices, as the shapes dataset's columns give them).

    Returns (fractions in [0, 1]; keys absent when no caption of that kind was asked):
        one_object_{shape,color,size,position}_accuracy: the attribute read right on the one object found (an image
            read with another number of objects counts as wrong);
        one_object_all_right: valid, one object, every attribute right;
        one_object_validity: the oracle's validity with one object;
        two_object_validity: valid with two objects;
        two_object_binding: each (colour, shape) pair of the caption read on one of the two objects;
        two_object_all_right: both objects read with every attribute right;
        validity: over all samples, valid with the caption's number of objects.
    """
    if len(images) != len(scenes):
        raise ValueError(f"got {len(images)} images for {len(scenes)} scenes")
    grid = shapes_grid(resolution)
    readings = ShapesOracle(resolution).read_batch(images)
    sums: dict[str, float] = {}
    counts = {1: 0, 2: 0}

    def add(name: str, value: bool) -> None:
        sums[name] = sums.get(name, 0.0) + float(value)

    for reading, scene in zip(readings, scenes):
        asked = [_key(obj, grid) for obj in scene]
        read = [_key(obj, grid) for obj in reading["objects"]]
        n = len(asked)
        counts[n] += 1
        valid = reading["valid"] and len(read) == n
        add("validity", valid)
        if n == 1:
            got = read[0] if len(read) == 1 else None
            for attribute in ATTRIBUTES:
                add(f"one_object_{attribute}_accuracy", got is not None and got[attribute] == asked[0][attribute])
            add("one_object_validity", valid)
            add("one_object_all_right", valid and got == asked[0])
        else:
            pairs = sorted((o["color"], o["shape"]) for o in asked)
            add("two_object_validity", valid)
            add("two_object_binding", valid and sorted((o["color"], o["shape"]) for o in read) == pairs)
            add("two_object_all_right", valid and _as_set(read) == _as_set(asked))
    metrics = {}
    for name, total in sums.items():
        denominator = len(scenes) if name == "validity" else counts[1 if name.startswith("one_") else 2]
        metrics[name] = total / denominator
    metrics["one_object_captions"], metrics["two_object_captions"] = counts[1], counts[2]
    return metrics


def _as_set(objects: list[dict]) -> list:
    return sorted((o["shape"], o["color"], o["size"], o["position"]) for o in objects)
