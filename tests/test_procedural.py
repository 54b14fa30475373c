"""Checks every procedural family (faces, materials) must pass, clean and shift splits.

Family-specific checks live in test_faces.py and test_materials.py; the fixtures and each
family's expectations (``spec``) in conftest.py.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from joinbench.datasets.base import TRAIN_SEED_MIN
from joinbench.datasets.faces import FacesDataset
from joinbench.datasets.materials import MaterialsDataset
from joinbench.datasets.procedural import DrawPlan, Rand
from joinbench.launches import DEVICE, LaunchCounter
from joinbench.registry import create_dataset, list_datasets

COMPONENTS = ("albedo", "shading", "specular")
CLASSES = {"faces": FacesDataset, "materials": MaterialsDataset}


@pytest.fixture(scope="module", params=sorted(CLASSES))
def family(request):
    return request.param


def test_registered_with_names(family, clean, shifted):
    assert {family, f"{family}-shift"} <= set(list_datasets(f"{family}*"))
    assert isinstance(clean, CLASSES[family]) and isinstance(shifted, CLASSES[family])
    assert (clean.name, clean.shift) == (family, False)
    assert (shifted.name, shifted.shift) == (f"{family}-shift", True)
    assert clean[0].id.startswith(f"{family}-0") and shifted[0].id.startswith(f"{family}-shift-")


@pytest.mark.parametrize("which", ["clean_batch", "shift_batch"])
def test_shapes_dtypes_and_ranges(spec, res, which, request):
    out = request.getfixturevalue(which)
    for key in (*COMPONENTS, "image"):
        t = out[key]
        assert t.shape == (spec.batch, 3, res, res) and t.dtype == torch.float32, key
        assert torch.isfinite(t).all() and t.min() >= 0, key
    assert ("mask" in out) == spec.has_mask
    assert out["image"].max() <= 1 and out["albedo"].max() <= 1
    assert out["shading"].amin((1, 2, 3)).gt(0).all()  # ambient light: nothing pitch black


def test_test_split_is_deterministic(family, spec):
    resolution, size = spec.checksum_split
    for name in (family, f"{family}-shift"):
        a = create_dataset(name, resolution=resolution, size=size).checksum()
        assert a == create_dataset(name, resolution=resolution, size=size).checksum(), name
        assert a != create_dataset(name, resolution=resolution, size=size, seed=1).checksum(), name


@pytest.mark.parametrize("split", ["clean", "shift"])
def test_sample_does_not_depend_on_its_batch(family, spec, res, split):
    """Bit for bit, test and training seeds, at any place in batches of any size (a pow of
    a (B,) tensor once took a different CPU code path for the last elements of a batch)."""
    ds = create_dataset(family if split == "clean" else f"{family}-shift", resolution=res)
    train = ds.train_seeds(torch.Generator().manual_seed(5), 7)
    for seeds in (ds.test_seeds(list(spec.batch_seeds)), train):
        together = ds.render_batch_at(seeds)
        for i in range(seeds.shape[0]):
            alone = ds.render_batch_at(seeds[i:i + 1])
            for key in together:
                assert torch.equal(alone[key][0], together[key][i]), (key, i)
        pair = ds.render_batch_at(seeds[-2:])
        assert all(torch.equal(pair[k], together[k][-2:]) for k in together)


def test_same_seed_is_the_same_sample_at_any_resolution(spec, clean):
    seeds = clean.test_seeds(list(range(6)))
    fm = clean.forward_model
    lo, hi = clean.render_batch_at(seeds, resolution=32), clean.render_batch_at(seeds, resolution=64)
    for key in COMPONENTS:
        diff = (fm.encode(key, F.avg_pool2d(hi[key], 2)) - fm.encode(key, lo[key])).abs().mean()
        assert diff < spec.resolution_tol, key
    assert (F.avg_pool2d(hi["image"], 2) - lo["image"]).abs().mean() < spec.resolution_tol
    if spec.has_mask:
        assert (F.avg_pool2d(hi["mask"], 2) - lo["mask"]).abs().mean() < 0.03


def test_train_seeds_differ_from_test_seeds_and_stream(spec, res, clean):
    train = clean.train_seeds(torch.Generator().manual_seed(0), 256)
    test = clean.test_seeds(list(range(len(clean))))
    assert train.min() >= TRAIN_SEED_MIN > test.max()
    stream = clean.train_stream(4, resolution=res, seed=0)
    first, second = next(stream), next(stream)
    assert first["image"].shape == (4, 3, res, res)
    if spec.has_mask:
        assert first["mask"].shape == (4, 1, res, res)
    assert not torch.equal(first["image"], second["image"])
    torch.testing.assert_close(next(clean.train_stream(4, resolution=res, seed=0))["image"], first["image"])


def test_shift_images_are_degraded_renders(shifted, shift_batch):
    fm = shifted.forward_model
    rendered = fm.render(shift_batch["albedo"], shift_batch["shading"], shift_batch["specular"])
    diff = (rendered - shift_batch["image"]).abs().mean((1, 2, 3))
    assert (diff > 0.003).all()  # every image carries camera degradations
    assert diff.mean() < 0.15  # ... but is still the same picture


def _draws(r: Rand) -> list[torch.Tensor]:
    table = torch.arange(12.0).view(4, 3)
    return [r.uniform("u"), r.uniform("u", 3, -1.0, 2.0), r.uniform("u", None, 0.5, 0.7), r.normal("n"),
            r.normal("n", 4, 1.0, 0.5), r.randint("i", 7), r.bernoulli("b", 0.3), r.choice("c", table),
            r.hashes("h"), r.hashes("h", 5), r.lattice("l", 3, 2), r.lattice("w", 4, 1, wrap=True)]


def test_a_draw_plan_gives_the_same_numbers_as_drawing_one_by_one():
    """A plan learnt on the first call makes every draw at once on later calls: exactly the
    numbers drawn one by one (the test splits' checksums depend on it)."""
    seeds = torch.tensor([TRAIN_SEED_MIN + 12345, 7, (1 << 62) - 1, TRAIN_SEED_MIN])
    plan = DrawPlan("test")
    first = _draws(Rand(seeds, plan))  # learns
    assert plan.keys and plan.blocks and plan.uniforms and plan.normals
    for once, planned in zip(first, _draws(Rand(seeds, plan)), strict=True):
        assert torch.equal(once, planned)
    rows = _draws(Rand(seeds[1:3], plan))  # any subset of samples: the same per sample
    assert all(torch.equal(a[1:3], b) for a, b in zip(first, rows))


@pytest.mark.parametrize("name", ["materials", "materials-shift", "faces", "faces-shift"])
def test_one_render_call_costs_under_3000_launches_and_no_host_sync(name):
    """The engine issue's budget for one render call at 64 px, whatever its size: at most
    3,000 dispatched ops (views included; each non-view op is about one kernel launch on a
    GPU) and no host sync (the renderer's draws, lattices and family groups are planned
    without reading device values). Seeds are made on the host, as training makes them."""
    ds = create_dataset(name, resolution=64)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):  # the first calls learn the draw plans and move their constants to the device
        ds.render_batch_at(ds.train_seeds(gen, 48), DEVICE)
    for batch in (3, 40):
        with LaunchCounter(flops=False) as counter:
            ds.render_batch_at(ds.train_seeds(gen, batch), DEVICE)
        tally = counter.snapshot()
        assert tally.ops <= 3000 and tally.syncs == 0, (batch, tally.ops, tally.sync_sites)


def test_the_host_cpu_renders_large_calls_in_pieces_with_the_same_images(family, monkeypatch):
    """On the host CPU a call goes in pieces (its temporaries stay small); elsewhere (CUDA, or
    the profiler's stand-in cpu:0) in one piece: the same images either way."""
    import joinbench.datasets.faces as faces
    import joinbench.datasets.materials as materials

    monkeypatch.setattr(materials, "CPU_PIECE_PIXELS", 2 * 64 * 64)  # 2 images a piece
    monkeypatch.setattr(faces, "CPU_CHUNK_PIXELS", 2 * 16 * 16)
    ds = create_dataset(family, resolution=16)
    seeds = ds.train_seeds(torch.Generator().manual_seed(2), 5)
    pieces, whole = ds.render_batch_at(seeds, "cpu"), ds.render_batch_at(seeds, DEVICE)
    assert all(torch.equal(pieces[k], whole[k]) for k in whole)
