"""The synthetic test splits are pinned: committed sha256 checksums, asserted.

Why: the committed reference reports were computed on these exact images, and the README
promises the same command gives the same test set on any machine. A checksum compared with
itself recomputed in the same process cannot catch a renderer change that alters the split;
a literal recorded once (at commit 54946f9, CPU with AVX2, torch 2.14.1, 1 to 7 threads alike) can.
If one of these fails, the renderer changed the test images: fix the renderer, do not
update the literal (unless the change of the split is intended and the reference reports
are recomputed with it).

Also the ground truth is exact: a clean split's image IS the forward model of its own
albedo, shading and specular, bit for bit; a shift split's image is the camera
degradation (white balance, noise, JPEG) of exactly that render, bit for bit.
"""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from joinbench.datasets.shift import apply_camera_shift
from joinbench.registry import create_dataset

# (dataset, resolution, size) -> ProceduralDataset.checksum() of seed 0. The 64 px splits of
# 100 images are the ones the reference reports use; 16 px goes through the supersampling path.
PINNED = {
    ("materials", 64, 100): "9ebec6f172501746c395b89f282a2073f5e61edb0b03e9bee31bbe1ad812b2bb",
    ("materials-shift", 64, 100): "69f64e3bbd8a14792ccbe316b194e5a8f2f16d2923e81e25a44928dba1185426",
    ("faces", 64, 100): "bda9a2275cff450a2cb670288ae11827ea28c68915be8794da3ec25f560d5c85",
    ("faces-shift", 64, 100): "440770ad13832cb58415a009ae6116a76510f3dd41b10ed22298c41a5e563f19",
    ("materials", 16, 100): "f0e548e99f41a01c9ffa5ea87fb33214c45404f7e629beacbb2d8bd36a74e75a",
    ("materials-shift", 16, 100): "95cab8ea8b4822d8b7ff4124d775e1b42b928b800d2f6f2d9dbe274573b7e471",
    ("faces", 16, 100): "1c51b0804d853aed401eb8fb06b2d08f4c1d3976918dab8e041bcb7d56d1e9ad",
    ("faces-shift", 16, 100): "6f128cb2bf8df4c3eec7f13f65e72dec5a13a494e1df28dccfbffb32315fab25",
    # 8-image splits are the first 8 images of the 100-image ones (at 54946f9 they were not:
    # a pow over the lights' (B,) colours took another CPU code path in batches under 16)
    ("materials", 32, 8): "400b229f36a2df6a9b7274b8c2c88c30ccff71b5e12e6404923909a0d422139d",
    ("materials-shift", 32, 8): "460098aab9b02080de3b7f0656a294dc6d63423768ffce0baf5eb7dd3476fd59",
    ("faces", 32, 8): "136efe1059705f507384c4d6b8f2471764ab0e2e3950a9d708ded1bb7120814e",
    ("faces-shift", 32, 8): "3eeedfede4532ba0eb7f6b203b0cc3bc7ac1be41a97ffff14cc503c8ae7ba960",
}


@lru_cache(maxsize=None)
def _split(name: str, resolution: int, size: int):
    """One rendered split per key, shared by the tests of this module (samples are cached)."""
    return create_dataset(name, resolution=resolution, size=size)


@pytest.mark.parametrize("key", sorted(PINNED), ids=lambda k: f"{k[0]}-{k[1]}px-{k[2]}")
def test_test_split_matches_its_committed_checksum(key):
    assert _split(*key).checksum() == PINNED[key], f"the {key[0]} test split at {key[1]} px changed"


@pytest.mark.parametrize("name", ["materials", "faces", "materials-shift", "faces-shift"])
@pytest.mark.parametrize("resolution", [64, 16])
def test_image_is_exactly_the_forward_model_of_its_ground_truth(name, resolution):
    """Exact, not close: each test image alone, re-rendered from its stored layers (so the
    layers are the ground truth of the image, not of a nearby one)."""
    ds = _split(name, resolution, 100)
    fm = ds.forward_model
    for i in range(len(ds)):
        s = ds[i]
        clean = fm.render(s.albedo[None], s.shading[None], s.specular[None])
        if ds.shift:
            # the degradation is keyed by the sample's seed alone: the same in any batch
            assert not torch.equal(clean[0], s.image), i
            clean = apply_camera_shift(clean, ds.test_seeds([i]))
        assert torch.equal(clean[0], s.image), (name, resolution, i)


@pytest.mark.parametrize("name", ["materials", "faces", "materials-shift", "faces-shift"])
def test_split_does_not_depend_on_how_it_is_batched(name):
    """The split rendered 7 at a time (odd batches, every sample at another place in its
    batch than in the pinned rendering, 32 at a time) gives the pinned images."""
    assert create_dataset(name, resolution=16, size=30, render_batch=7).checksum() == _split(name, 16, 100).checksum(30)
