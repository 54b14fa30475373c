"""Figure helpers: column labels wrap instead of being cut."""
import torch
from PIL import ImageFont

from joinbench.viz import _wrap, grid_image


def test_labels_wrap_to_the_cell_width_and_keep_every_word():
    font = ImageFont.load_default()
    lines = _wrap("new shading of another image", font, 60)
    assert " ".join(lines) == "new shading of another image"
    assert all(font.getlength(line) <= 60 for line in lines)
    assert len(lines) > 1


def test_header_grows_with_the_longest_label():
    row = [[torch.rand(3, 16, 16), torch.rand(3, 16, 16)]]
    short = grid_image(row, ["a", "b"], cell=64)
    long = grid_image(row, ["a", "a label that needs several lines"], cell=64)
    assert long.size[0] == short.size[0]
    assert long.size[1] > short.size[1]
    assert grid_image(row, cell=64).size[1] < short.size[1]  # no labels, no header
