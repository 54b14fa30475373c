"""faces / faces-shift: procedural heads with exact albedo, shading and specular."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from joinbench.datasets.base import TRAIN_SEED_MIN
from joinbench.datasets.faces import WITHHELD, FacesDataset, face_params
from joinbench.registry import create_dataset, list_datasets

RES = 32
COMPONENTS = ("albedo", "shading", "specular")
LUMA = torch.tensor([0.2126, 0.7152, 0.0722]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def clean():
    return create_dataset("faces", resolution=RES, size=8)


@pytest.fixture(scope="module")
def shifted():
    return create_dataset("faces-shift", resolution=RES, size=8)


@pytest.fixture(scope="module")
def clean_batch(clean):
    return clean.render_batch_at(clean.test_seeds(list(range(16))))


@pytest.fixture(scope="module")
def shift_batch(shifted):
    return shifted.render_batch_at(shifted.test_seeds(list(range(16))))


def test_registered_with_names_and_descriptions(clean, shifted):
    assert {"faces", "faces-shift"} <= set(list_datasets("faces*"))
    assert isinstance(clean, FacesDataset) and isinstance(shifted, FacesDataset)
    assert (clean.name, clean.shift) == ("faces", False)
    assert (shifted.name, shifted.shift) == ("faces-shift", True)
    assert "glasses" in shifted.description and "glasses" not in clean.description
    assert clean[0].id.startswith("faces-0") and shifted[0].id.startswith("faces-shift-")
    assert set(shifted[0].meta["attributes"]) <= set(WITHHELD) and shifted[0].meta["attributes"]


@pytest.mark.parametrize("which", ["clean_batch", "shift_batch"])
def test_shapes_dtypes_and_ranges(which, request):
    out = request.getfixturevalue(which)
    for key in (*COMPONENTS, "image", "mask"):
        t = out[key]
        assert t.shape == (16, 1 if key == "mask" else 3, RES, RES) and t.dtype == torch.float32, key
        assert torch.isfinite(t).all() and t.min() >= 0, key
    assert out["image"].max() <= 1 and out["albedo"].max() <= 1
    assert out["shading"].amin((1, 2, 3)).gt(0).all()  # ambient light: nothing pitch black
    assert out["specular"].amax((1, 2, 3)).gt(0.01).all()  # every face has some sheen
    mask = out["mask"]
    assert torch.equal(mask, (mask > 0.5).float())  # binary
    cover = mask.mean((1, 2, 3))
    assert (cover > 0.15).all() and (cover < 0.8).all()  # a head, not the whole frame


def test_faces_are_well_exposed(clean_batch):
    img, mask = clean_batch["image"], clean_batch["mask"] > 0.5
    mid = ((img > 0.1) & (img < 0.9)).float().mean()
    assert mid > 0.8 and 0.25 < img.median() < 0.65
    inside = torch.stack([img[i].mean(0)[mask[i, 0]].median() for i in range(len(img))])
    assert inside.min() > 0.08 and inside.max() < 0.8


def test_test_split_is_deterministic():
    for name in ("faces", "faces-shift"):
        a = create_dataset(name, resolution=16, size=3).checksum()
        assert a == create_dataset(name, resolution=16, size=3).checksum()
        assert a != create_dataset(name, resolution=16, size=3, seed=1).checksum()


@pytest.mark.parametrize("name", ["faces", "faces-shift"])
def test_sample_does_not_depend_on_its_batch(name):
    ds = create_dataset(name, resolution=RES)
    seeds = ds.test_seeds([17, 3, 29, 8, 40])
    together, alone = ds.render_batch_at(seeds), ds.render_batch_at(seeds[1:2])
    for key in together:
        torch.testing.assert_close(alone[key][0], together[key][1], rtol=1e-5, atol=1e-6)


def test_same_seed_is_the_same_face_at_any_resolution(clean):
    seeds = clean.test_seeds(list(range(6)))
    fm = clean.forward_model
    lo, hi = clean.render_batch_at(seeds, resolution=32), clean.render_batch_at(seeds, resolution=64)
    for key in COMPONENTS:
        diff = (fm.encode(key, F.avg_pool2d(hi[key], 2)) - fm.encode(key, lo[key])).abs().mean()
        assert diff < 0.015, key
    assert (F.avg_pool2d(hi["image"], 2) - lo["image"]).abs().mean() < 0.015
    assert (F.avg_pool2d(hi["mask"], 2) - lo["mask"]).abs().mean() < 0.03


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


def test_shift_images_are_degraded_renders(shifted, shift_batch):
    fm = shifted.forward_model
    rendered = fm.render(shift_batch["albedo"], shift_batch["shading"], shift_batch["specular"])
    diff = (rendered - shift_batch["image"]).abs().mean((1, 2, 3))
    assert (diff > 0.003).all() and diff.mean() < 0.15


def test_two_component_forward_model():
    ds = create_dataset("faces-shift", resolution=16, size=2, forward_model="reinhard-nospecular")
    s = ds[0]
    assert s.specular is None and s.image.shape == (3, 16, 16)


def test_train_stream(clean):
    train = clean.train_seeds(torch.Generator().manual_seed(0), 64)
    assert train.min() >= TRAIN_SEED_MIN > clean.test_seeds([len(clean) - 1]).max()
    stream = clean.train_stream(4, resolution=RES, seed=0)
    first, second = next(stream), next(stream)
    assert first["image"].shape == (4, 3, RES, RES) and first["mask"].shape == (4, 1, RES, RES)
    assert not torch.equal(first["image"], second["image"])
    torch.testing.assert_close(next(clean.train_stream(4, resolution=RES, seed=0))["image"], first["image"])
