"""materials / materials-shift datasets and the camera degradations of shift splits.

The checks every procedural family passes are in test_procedural.py; fixtures in conftest.py.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from joinbench.datasets.materials import SHIFT_FAMILIES, TRAIN_FAMILIES
from joinbench.datasets.procedural import height_to_normals
from joinbench.datasets.shift import apply_camera_shift, jpeg_compress, jpeg_tables

@pytest.fixture(scope="module")
def family():
    return "materials"


def test_descriptions(clean, shifted):
    assert "JPEG" in shifted.description and "flash" in clean.description


def test_display_images_are_well_exposed(clean_batch):
    img = clean_batch["image"]
    mid = ((img > 0.15) & (img < 0.85)).float().mean()
    assert mid > 0.75
    assert 0.25 < img.median() < 0.65


def test_sample_access_and_meta(clean, shifted, res):
    s = clean[3]
    assert s.image.shape == (3, res, res) and s.specular is not None
    assert s.meta["family"] in TRAIN_FAMILIES and s.meta["shift"] is False
    assert shifted[3].meta["family"] in SHIFT_FAMILIES


def test_patterns_agree_above_the_supersampling_threshold(clean):
    """Beyond test_procedural's 32 vs 64 px check: from 64 px up the patterns themselves
    must agree, not only their averages."""
    seeds = clean.test_seeds(list(range(4)))
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


def test_every_family_renders_a_distinct_swatch(clean, shifted, res):
    """Each family renders to a patterned, non-degenerate image (not flat, not noise)."""
    for ds, names in ((clean, TRAIN_FAMILIES), (shifted, SHIFT_FAMILIES)):
        seeds = ds.test_seeds(list(range(60)))
        fams = ds.families(seeds)
        pick = torch.stack([seeds[fams.index(name)] for name in names])
        out = ds.render_batch_at(pick, resolution=res)
        albedo_std = out["albedo"].std((2, 3)).mean(1)
        assert (albedo_std > 0.003).all(), dict(zip(names, albedo_std.tolist()))


def test_shift_renders_are_reproducible(spec, shifted, shift_batch):
    again = shifted.render_batch_at(shifted.test_seeds(list(range(spec.batch))))
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
