"""benchmarks/prompt_to_prompt_shapes.py's inpainting baseline: the mask is the box around the source's object, grown
by the margin and clipped to the image, as a user would draw it."""

import torch

from scripts import load_script

bench = load_script("prompt_to_prompt_shapes", folder="benchmarks")


def test_object_box_is_the_grown_bounding_box_clipped_to_the_image():
    image = torch.zeros(3, 32, 32)
    image[1, 10:14, 20:25] = 1.0  # a green 4×5 object
    mask = bench.object_box(image, margin=2)
    expected = torch.zeros(1, 32, 32)
    expected[0, 8:16, 18:27] = 1.0
    assert torch.equal(mask, expected)
    image[1, 0:3, 29:32] = 1.0  # a second lit patch at the corner: the box spans both and stops at the border
    grown = bench.object_box(image, margin=4)
    assert grown[0, 0, 31] == 1 and grown[0, 17, 16] == 1 and grown[0, 18, 16] == 0 and grown[0, 0, 15] == 0


def test_a_black_image_is_repainted_whole():
    assert torch.equal(bench.object_box(torch.zeros(3, 8, 8), margin=1), torch.ones(1, 8, 8))


def test_figure_names_the_swapped_words_and_draws_their_maps():
    import numpy as np

    figure = load_script("prompt_to_prompt_figure", folder="benchmarks")
    assert figure.swapped_words("a small red circle at the top", "a small blue circle at the top") == ("red", "blue")
    import pytest

    with pytest.raises(ValueError, match="is not a one-word swap"):
        figure.swapped_words("a red circle", "a large red circle")
    maps = np.zeros((2, 4, 4), dtype=np.float32)
    maps[0, 1, 2] = 2.0  # two tokens of one word: averaged, then the brightest pixel is white
    image = np.asarray(figure.map_image(maps))
    assert image.shape == (4, 4) and image[1, 2] == 255 and image.sum() == 255
