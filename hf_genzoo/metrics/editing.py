"""What an instruction-following editor of the shapes world is judged by (../shared/DESIGN.md, "Measured, not
claimed"): the oracle reads every factor of every object in the output and compares them with the exact edit.

An edit triplet of the shapes world's `edits` configuration carries the factors of both scenes (`input_*` and
`edited_*` columns: shape, color, size, x, y, angle of slots 0 and 1, -1 in an absent slot). The edit's *target* is
the input object that the edited scene does not hold unchanged; its *edited factors* are those that differ between
its input and edited versions (the colour for "make the circle blue", x and y for a move, shape and angle for a
reshape); every other object is *untouched*. A removal ("remove the red circle") leaves one object fewer.

Per output (all factors read exactly, as the oracle's templates give them):

- success: the oracle finds the edited scene's number of objects and reads the target's edited factors (for a
  removal: the removed object's (shape, colour) is read nowhere);
- preservation: the oracle finds that number of objects, the target's other factors are unchanged, and every
  untouched object (the other object of a two-object scene) is read with all its factors unchanged;
- validity: the oracle's validity rule with the edited scene's number of objects.

Objects read in a two-object output are matched to the edited scene's objects by the assignment that agrees on the
most factors, so a target that moved past the other object is still recognised.
"""

from __future__ import annotations

from itertools import permutations
from typing import Sequence

import torch

from ..data.shapes import FACTORS, MAX_SHAPES, ShapesOracle

EDIT_METRICS = ("success", "preservation", "validity", "all_right")


def scene_from_columns(rows: dict, prefix: str, index: int) -> list[tuple[int, ...]]:
    """The objects of row `index` of a batch of rows (column → list) with factor columns `{prefix}{factor}_{slot}`,
    each as the tuple of its `FACTORS` (shape, color, size, x, y, angle)."""
    objects = []
    for slot in range(MAX_SHAPES):
        obj = tuple(int(rows[f"{prefix}{factor}_{slot}"][index]) for factor in FACTORS)
        if obj[0] >= 0:
            objects.append(obj)
    return objects


def _agreement(read: Sequence[tuple], expected: Sequence[tuple]) -> int:
    return sum(a == b for r, e in zip(read, expected) for a, b in zip(r, e))


def judge_edit(reading: dict, input_scene: list[tuple], edited_scene: list[tuple]) -> dict[str, bool]:
    """success / preservation / validity / all_right of one output, given the oracle's `reading` of it and the factor
    tuples of the input and edited scenes (see the module docstring)."""
    expected_count = len(edited_scene)
    read = [tuple(obj[f] for f in FACTORS) for obj in reading["objects"]]
    count_ok = reading["num_shapes"] == expected_count and len(read) == expected_count
    if expected_count == 0:  # the only object removed: an empty (all-background) output
        valid = reading["num_shapes"] == 0
        return dict(success=valid, preservation=valid, validity=valid, all_right=valid)
    valid = bool(reading["valid"]) and count_ok
    untouched = [obj for obj in edited_scene if obj in input_scene]
    if expected_count < len(input_scene):  # a removal
        removed = [obj for obj in input_scene if obj not in edited_scene]
        success = count_ok and not any((r[0], r[1]) == (o[0], o[1]) for o in removed for r in read)
        preservation = count_ok and sorted(read) == sorted(untouched)
    elif not count_ok:
        success = preservation = False
    else:
        order = max(permutations(range(expected_count)), key=lambda p: _agreement([read[i] for i in p], edited_scene))
        matched = [read[i] for i in order]  # matched[k] is the reading of edited_scene[k]
        targets = [k for k, obj in enumerate(edited_scene) if obj not in input_scene]
        success = preservation = True
        for k, obj in enumerate(edited_scene):
            if k not in targets:
                preservation &= matched[k] == obj
                continue
            before = next(o for o in input_scene if o not in edited_scene)  # the target as it was
            changed = [f for f in range(len(FACTORS)) if before[f] != obj[f]]
            success &= all(matched[k][f] == obj[f] for f in changed)
            preservation &= all(matched[k][f] == obj[f] for f in range(len(FACTORS)) if f not in changed)
        if not targets:  # an edit that changes nothing cannot succeed
            success = False
    return dict(success=bool(success), preservation=bool(preservation), validity=valid, all_right=bool(valid and success and preservation))


@torch.no_grad()
def edit_metrics(images: torch.Tensor, rows: dict, resolution: int, edit_type_column: str = "edit_type") -> dict:
    """Oracle readings of edited outputs (N, 3, H, W) in [-1, 1] against their exact edits.

    Args:
        images: the editor's outputs, one per row.
        rows: the held-out triplets as columns (column → list of N values): `edit_type` and the factor columns
            `input_{factor}_{slot}`, `edited_{factor}_{slot}` of the shapes world's `edits` configuration.
        resolution: the shapes world's image side (the oracle reads that size).

    Returns:
        `{metric}` over all rows and `{edit_type}_{metric}` for each edit type, for metric in success, preservation,
        validity and all_right (the three at once), fractions in [0, 1]; `{edit_type}_edits` and `edits` the counts;
        `unchanged`: the fraction of outputs read exactly as the input scene (the editor did nothing).
    """
    count = len(images)
    if len(rows[edit_type_column]) != count:
        raise ValueError(f"got {count} images for {len(rows[edit_type_column])} triplets")
    readings = ShapesOracle(resolution).read_batch(images)
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    unchanged = 0
    for i, reading in enumerate(readings):
        input_scene = scene_from_columns(rows, "input_", i)
        edited_scene = scene_from_columns(rows, "edited_", i)
        judged = judge_edit(reading, input_scene, edited_scene)
        read = sorted(tuple(obj[f] for f in FACTORS) for obj in reading["objects"])
        unchanged += reading["num_shapes"] == len(input_scene) and read == sorted(input_scene)
        edit_type = rows[edit_type_column][i]
        counts[edit_type] = counts.get(edit_type, 0) + 1
        for name, value in judged.items():
            totals[name] = totals.get(name, 0.0) + value
            totals[f"{edit_type}_{name}"] = totals.get(f"{edit_type}_{name}", 0.0) + value
    metrics: dict = {}
    for edit_type in sorted(counts):
        for name in EDIT_METRICS:
            metrics[f"{edit_type}_{name}"] = totals[f"{edit_type}_{name}"] / counts[edit_type]
        metrics[f"{edit_type}_edits"] = counts[edit_type]
    for name in EDIT_METRICS:
        metrics[name] = totals.get(name, 0.0) / max(count, 1)
    metrics["unchanged"] = unchanged / max(count, 1)
    metrics["edits"] = count
    return metrics
