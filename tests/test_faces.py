"""faces / faces-shift: procedural heads with exact albedo, shading and specular.

The checks every procedural family passes are in test_procedural.py; fixtures in conftest.py.
"""
from __future__ import annotations

import pytest
import torch

from joinbench.datasets.faces import WITHHELD, face_params
from joinbench.registry import create_dataset

LUMA = torch.tensor([0.2126, 0.7152, 0.0722]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def family():
    return "faces"


def test_descriptions_and_attributes(clean, shifted):
    assert "glasses" in shifted.description and "glasses" not in clean.description
    assert set(shifted[0].meta["attributes"]) <= set(WITHHELD) and shifted[0].meta["attributes"]


@pytest.mark.parametrize("which", ["clean_batch", "shift_batch"])
def test_masks_and_sheen(which, spec, res, request):
    out = request.getfixturevalue(which)
    mask = out["mask"]
    assert mask.shape == (spec.batch, 1, res, res) and mask.dtype == torch.float32
    assert torch.isfinite(mask).all() and mask.min() >= 0
    assert torch.equal(mask, (mask > 0.5).float())  # binary
    cover = mask.mean((1, 2, 3))
    assert (cover > 0.15).all() and (cover < 0.8).all()  # a head, not the whole frame
    assert out["specular"].amax((1, 2, 3)).gt(0.01).all()  # every face has some sheen


def test_faces_are_well_exposed(clean_batch):
    img, mask = clean_batch["image"], clean_batch["mask"] > 0.5
    mid = ((img > 0.1) & (img < 0.9)).float().mean()
    assert mid > 0.8 and 0.25 < img.median() < 0.65
    inside = torch.stack([img[i].mean(0)[mask[i, 0]].median() for i in range(len(img))])
    assert inside.min() > 0.08 and inside.max() < 0.8


def test_skin_tones_range_from_very_light_to_very_dark():
    ds = create_dataset("faces", resolution=16)
    seeds = ds.test_seeds(list(range(64)))
    out = ds.render_batch_at(seeds)
    lum = (out["albedo"] * LUMA).sum(1)
    median = torch.stack([lum[i][out["mask"][i, 0] > 0.5].median() for i in range(len(seeds))])
    assert median.max() > 0.35 and median.min() < 0.06 and median.max() / median.min() > 8
    skin = (face_params(seeds)["skin"] * LUMA.view(1, 3)).sum(1)
    assert skin.max() > 0.4 and skin.min() < 0.03  # the generator's own tone, not hair


def test_withheld_attributes_only_in_the_shift_split(clean, shifted):
    seeds = torch.cat([clean.test_seeds(list(range(100))),
                       clean.train_seeds(torch.Generator().manual_seed(0), 100)])
    plain, shift = clean.attributes(seeds), shifted.attributes(seeds)
    assert not any(plain[n].any() for n in WITHHELD)
    assert all(shift[n].any() for n in WITHHELD)
    assert torch.stack([shift[n] for n in WITHHELD]).any(0).all()  # at least one per face


def test_shift_faces_are_the_clean_faces_with_withheld_attributes(clean_batch, shift_batch):
    """Same identities: the layout agrees, and every shift face differs in its albedo."""
    assert (clean_batch["mask"] != shift_batch["mask"]).float().mean() < 0.01
    changed = (clean_batch["albedo"] - shift_batch["albedo"]).abs().amax((1, 2, 3))
    assert (changed > 0.05).all()
    # and the lighting differs: several coloured lights instead of one
    assert ((clean_batch["shading"] - shift_batch["shading"]).abs().mean((1, 2, 3)) > 0.01).all()


def test_two_component_forward_model():
    ds = create_dataset("faces-shift", resolution=16, size=2, forward_model="reinhard-nospecular")
    s = ds[0]
    assert s.specular is None and s.image.shape == (3, 16, 16)


def test_the_fixed_head_window_holds_every_head():
    """The head is computed on a window of a fixed size (no host sync for the batch's
    largest head): every head the parameter ranges allow fits, at every resolution."""
    from joinbench.datasets.base import ProceduralDataset
    from joinbench.datasets.faces import _head_extent, _window_size

    seeds = ProceduralDataset.train_seeds(torch.Generator().manual_seed(3), 4000)
    p = face_params(seeds)
    for res in (16, 32, 64, 128, 256, 512):
        lo, hi = _head_extent(p, res)
        need = (hi - lo).amax(0).tolist()
        size = _window_size(res)
        assert all(min(n, res) <= s for n, s in zip(need, size)), (res, need, size)  # a window is at most the image
        assert all(s % 16 == 0 or s == res for s in size) and max(size) <= res
    assert _window_size(64)[0] < 64  # still a window, not the whole image, where it matters
