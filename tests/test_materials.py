"""materials / materials-shift datasets and the camera degradations of shift splits."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from joinbench.datasets.base import TRAIN_SEED_MIN
from joinbench.datasets.materials import SHIFT_FAMILIES, TRAIN_FAMILIES, MaterialsDataset
from joinbench.datasets.procedural import height_to_normals
from joinbench.datasets.shift import apply_camera_shift, jpeg_compress, jpeg_tables
from joinbench.registry import create_dataset, list_datasets

RES = 32
COMPONENTS = ("albedo", "shading", "specular")


@pytest.fixture(scope="module")
def clean():
    return create_dataset("materials", resolution=RES, size=8)


@pytest.fixture(scope="module")
def shifted():
    return create_dataset("materials-shift", resolution=RES, size=8)


@pytest.fixture(scope="module")
def clean_batch(clean):
    return clean.render_batch_at(clean.test_seeds(list(range(12))))


@pytest.fixture(scope="module")
def shift_batch(shifted):
    return shifted.render_batch_at(shifted.test_seeds(list(range(12))))


def test_registered_with_names_and_descriptions(clean, shifted):
    assert {"materials", "materials-shift"} <= set(list_datasets("materials*"))
    assert isinstance(clean, MaterialsDataset) and isinstance(shifted, MaterialsDataset)
    assert (clean.name, clean.shift) == ("materials", False)
    assert (shifted.name, shifted.shift) == ("materials-shift", True)
    assert "JPEG" in shifted.description and "flash" in clean.description
    assert clean[0].id.startswith("materials-") and shifted[0].id.startswith("materials-shift-")


@pytest.mark.parametrize("which", ["clean_batch", "shift_batch"])
def test_shapes_dtypes_and_ranges(which, request):
    out = request.getfixturevalue(which)
    for key in (*COMPONENTS, "image"):
        t = out[key]
        assert t.shape == (12, 3, RES, RES) and t.dtype == torch.float32, key
        assert torch.isfinite(t).all(), key
        assert t.min() >= 0, key
    assert out["image"].max() <= 1
    assert out["albedo"].max() <= 1
    assert out["shading"].amin((1, 2, 3)).gt(0).all()  # ambient: nothing is pitch black


def test_display_images_are_well_exposed(clean_batch):
    img = clean_batch["image"]
    mid = ((img > 0.15) & (img < 0.85)).float().mean()
    assert mid > 0.75
    assert 0.25 < img.median() < 0.65


def test_sample_access_and_meta(clean, shifted):
    s = clean[3]
    assert s.image.shape == (3, RES, RES) and s.specular is not None
    assert s.meta["family"] in TRAIN_FAMILIES and s.meta["shift"] is False
    assert shifted[3].meta["family"] in SHIFT_FAMILIES


def test_test_split_is_deterministic():
    a = create_dataset("materials", resolution=RES, size=4).checksum()
    b = create_dataset("materials", resolution=RES, size=4).checksum()
    assert a == b
    c = create_dataset("materials", resolution=RES, size=4, seed=1).checksum()
    assert a != c


@pytest.mark.parametrize("name", ["materials", "materials-shift"])
def test_sample_does_not_depend_on_its_batch(name):
    ds = create_dataset(name, resolution=RES)
    seeds = ds.test_seeds([17, 3, 29])
    together = ds.render_batch_at(seeds)
    alone = ds.render_batch_at(seeds[1:2])
    for key in COMPONENTS:
        torch.testing.assert_close(alone[key][0], together[key][1], rtol=1e-5, atol=1e-6)
    # the JPEG rounding of the shift image could flip on a 1-ulp difference: compare loosely
    assert (alone["image"][0] - together["image"][1]).abs().mean() < 1e-3


def test_same_seed_is_the_same_scene_at_any_resolution(clean):
    seeds = clean.test_seeds(list(range(6)))
    fm = clean.forward_model
    lo, hi = clean.render_batch_at(seeds, resolution=32), clean.render_batch_at(seeds, resolution=64)
    for key in COMPONENTS:
        diff = (fm.encode(key, F.avg_pool2d(hi[key], 2)) - fm.encode(key, lo[key])).abs().mean()
        assert diff < 0.02, key
    assert (F.avg_pool2d(hi["image"], 2) - lo["image"]).abs().mean() < 0.02
    # above the supersampling threshold the patterns themselves must agree, not only averages
    seeds = seeds[:4]
    lo, hi = clean.render_batch_at(seeds, resolution=64), clean.render_batch_at(seeds, resolution=128)
    per_sample = (F.avg_pool2d(hi["image"], 2) - lo["image"]).abs().mean((1, 2, 3))
    assert per_sample.mean() < 0.04 and per_sample.max() < 0.2
    assert (F.avg_pool2d(hi["albedo"], 2) - lo["albedo"]).abs().mean() < 0.02


def test_families_cover_and_shift_families_are_withheld(clean, shifted):
    assert len(TRAIN_FAMILIES) >= 6 and len(SHIFT_FAMILIES) >= 2
    assert not set(TRAIN_FAMILIES) & set(SHIFT_FAMILIES)
    test_seeds = clean.test_seeds(list(range(60)))
    train_seeds = clean.train_seeds(torch.Generator().manual_seed(0), 200)
    assert set(clean.families(test_seeds)) == set(TRAIN_FAMILIES)
    assert set(clean.families(train_seeds)) == set(TRAIN_FAMILIES)
    assert set(shifted.families(test_seeds)) == set(SHIFT_FAMILIES)


def test_every_family_renders_a_distinct_swatch(clean, shifted):
    """Each family renders to a patterned, non-degenerate image (not flat, not noise)."""
    for ds, names in ((clean, TRAIN_FAMILIES), (shifted, SHIFT_FAMILIES)):
        seeds = ds.test_seeds(list(range(60)))
        fams = ds.families(seeds)
        pick = torch.stack([seeds[fams.index(name)] for name in names])
        out = ds.render_batch_at(pick, resolution=RES)
        albedo_std = out["albedo"].std((2, 3)).mean(1)
        assert (albedo_std > 0.003).all(), dict(zip(names, albedo_std.tolist()))


def test_train_seeds_differ_from_test_seeds(clean):
    train = clean.train_seeds(torch.Generator().manual_seed(0), 256)
    test = clean.test_seeds(list(range(len(clean))))
    assert train.min() >= TRAIN_SEED_MIN > test.max()
    stream = clean.train_stream(4, resolution=RES, seed=0)
    first, second = next(stream), next(stream)
    assert first["image"].shape == (4, 3, RES, RES)
    assert not torch.equal(first["image"], second["image"])
    again = next(clean.train_stream(4, resolution=RES, seed=0))
    torch.testing.assert_close(again["image"], first["image"])


def test_shift_images_are_degraded_renders(shifted, shift_batch):
    fm = shifted.forward_model
    rendered = fm.render(shift_batch["albedo"], shift_batch["shading"], shift_batch["specular"])
    diff = (rendered - shift_batch["image"]).abs().mean((1, 2, 3))
    assert (diff > 0.003).all()  # every image carries camera degradations
    assert diff.mean() < 0.15  # ... but is still the same picture
    again = shifted.render_batch_at(shifted.test_seeds(list(range(12))))
    assert torch.equal(again["image"], shift_batch["image"])


# -- camera degradations -------------------------------------------------------------------
def _photo(b=3, h=32, w=32):
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(b, 3, 4, 4, generator=g), size=(h, w), mode="bicubic", align_corners=False)
    return (0.2 + 0.6 * smooth + 0.05 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1)


def test_camera_shift_is_deterministic_bounded_and_seeded():
    img, seeds = _photo(), torch.tensor([5, 6, 7])
    a = apply_camera_shift(img, seeds)
    torch.manual_seed(123)  # the global RNG plays no part
    b = apply_camera_shift(img, seeds)
    assert torch.equal(a, b) and a.shape == img.shape
    assert a.min() >= 0 and a.max() <= 1
    assert 0.005 < (a - img).abs().mean() < 0.2
    assert not torch.equal(a, apply_camera_shift(img, seeds, key="other"))
    assert not torch.equal(a[0], apply_camera_shift(img[:1], torch.tensor([9]))[0])


@pytest.mark.parametrize("size", [(16, 16), (20, 28), (8, 8)])
def test_camera_shift_any_size(size):
    img = _photo(2, *size)
    out = apply_camera_shift(img, torch.tensor([1, 2]))
    assert out.shape == img.shape and torch.isfinite(out).all()


def test_jpeg_tables_follow_libjpeg_scaling():
    luma, chroma = jpeg_tables(torch.tensor([50.0, 100.0, 25.0]))
    assert luma[0, 0, 0] == 16 and chroma[0, 0, 0] == 17 and luma[0, 7, 7] == 99
    assert (luma[1] == 1).all()
    assert luma[2, 0, 0] == 32  # scale 200 %


def test_jpeg_matches_pillow():
    """Same error as libjpeg (through Pillow) at the same quality, and close to its output."""
    from PIL import Image

    img = torch.round(_photo(2, 64, 64) * 255) / 255
    for q in (30, 75):
        ours = jpeg_compress(img, torch.full((2,), float(q)))
        for i in range(2):
            buf = io.BytesIO()
            Image.fromarray((img[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=q)
            ref = torch.from_numpy(np.asarray(Image.open(io.BytesIO(buf.getvalue()))).astype(np.float32) / 255).permute(2, 0, 1)
            err_ref = ((ref - img[i]) ** 2).mean()
            err_ours = ((ours[i] - img[i]) ** 2).mean()
            assert 0.7 < err_ours / err_ref < 1.4
            assert ((ours[i] - ref) ** 2).mean() < 0.3 * err_ref
    lo = jpeg_compress(img, torch.full((2,), 30.0))
    hi = jpeg_compress(img, torch.full((2,), 95.0))
    assert (lo - img).abs().mean() > (hi - img).abs().mean()


def test_height_to_normals():
    flat = height_to_normals(torch.zeros(1, 1, 8, 8))
    torch.testing.assert_close(flat[0, :, 4, 4], torch.tensor([0.0, 0.0, 1.0]))
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 1, 16, 16)  # rises to the right
    n = height_to_normals(ramp * 0.5)
    torch.testing.assert_close(n.norm(dim=1), torch.ones(1, 16, 16))
    assert (n[:, 0, 4:-4, 4:-4] < 0).all()  # tilted away from the rise, towards -x
    torch.testing.assert_close(n[:, 1], torch.zeros(1, 16, 16), atol=1e-6, rtol=0)
