"""Figure helpers: column labels wrap instead of being cut."""
import torch
from PIL import ImageFont

from joinbench.viz import grid_image, label_tile, wrap_label


def test_labels_wrap_to_the_cell_width_and_keep_every_word():
    font = ImageFont.load_default()
    lines = wrap_label("new shading of another image", font, 60)
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


def test_labels_break_after_hyphens_and_rejoin_to_the_same_text():
    font = ImageFont.load_default()
    lines = wrap_label("join-pti-nodisc", font, 40)
    assert len(lines) > 1 and lines[0].endswith("-")
    assert "".join(lines) == "join-pti-nodisc"
    assert all(font.getlength(line) <= 40 for line in lines)


def test_label_tile_draws_text_inside_a_square_tile():
    blank = label_tile("", 64)
    tile = label_tile("join-meaninit", 64)
    assert tile.shape == (3, 64, 64) and blank.shape == (3, 64, 64)
    assert bool((blank == 1).all())
    dark = tile.mean(0) < 0.5
    assert dark.any()
    rows = dark.any(1).nonzero().flatten()
    assert int(rows.max()) - int(rows.min()) > 12  # wrapped onto a second line at 64 px
