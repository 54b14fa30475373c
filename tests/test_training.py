"""The training wing (joinbench.training): the device-resident data pool, checkpoints, the
shared loop. Tiny faces data (16 px), CPU, one thread."""
from __future__ import annotations

import pytest
import torch

from joinbench.datasets.base import TRAIN_SEED_MIN
from joinbench.training.data import DataPool, create_training_dataset, encode_batch

RES = 16


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def faces():
    return create_training_dataset("faces", RES)


def _pool(ds, seed=3, **kw):
    fm = ds.forward_model
    args = dict(batch=2, size=8, refresh=0.25, reuse=2.0, render_chunk=3)  # refresh 2 slots every 2 draws
    args.update(kw)
    return DataPool(ds, lambda b: {"x": encode_batch(b, fm, "joint"), "image": b["image"]}, "cpu", seed, RES, **args)


def test_pool_resumes_with_bit_identical_batches_and_never_renders_a_test_seed(faces, monkeypatch):
    """A pool restored from its saved state (counters, generators, slot seeds; the images are
    re-rendered) draws exactly the batches the uninterrupted pool draws, across refreshes;
    every rendered seed is a training seed (>= 2^40), never a test image's."""
    rendered: list[torch.Tensor] = []
    real_render = type(faces).render_batch_at

    def spy(self, seeds, *a, **k):
        rendered.append(seeds.clone())
        return real_render(self, seeds, *a, **k)

    monkeypatch.setattr(type(faces), "render_batch_at", spy)
    pool = _pool(faces)
    assert (pool.refresh_count, pool.refresh_every) == (2, 2)
    for _ in range(3):
        pool.draw()
    state = pool.state()
    straight = [pool.draw() for _ in range(6)]
    assert pool.cursor == (2 * 4) % 8  # refreshed before draws 4, 6, 8 (and 2): the cursor went round once
    again = _pool(faces, seed=99)  # another seed: everything comes from the state
    again.load_state(state)
    for want in straight:
        got = again.draw()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    seeds = torch.cat(rendered)
    assert seeds.min() >= TRAIN_SEED_MIN
    test_seeds = faces.test_seeds(list(range(len(faces))))
    assert not torch.isin(seeds, test_seeds).any()


def test_pool_slots_hold_their_seeds_images_and_draw_into_fixed_buffers(faces):
    """Every slot holds the rendering of its own seed (whatever call rendered it); draw_into
    fills given buffers in place, without a host sync."""
    from joinbench.launches import count_launches

    pool = _pool(faces)
    for _ in range(5):
        pool.draw()
    direct = faces.render_batch_at(pool.seeds, "cpu", RES)
    assert torch.equal(pool.data["image"], direct["image"])
    assert torch.equal(pool.data["x"], encode_batch(direct, faces.forward_model, "joint"))
    buf = {"x": torch.empty(2, 9, RES, RES), "image": torch.empty(2, 3, RES, RES)}
    ptr = buf["x"].data_ptr()
    pool.draws = 1  # not at a refresh: a draw is an index draw and two gathers
    tally = count_launches(lambda: pool.draw_into(buf))
    assert buf["x"].data_ptr() == ptr and tally.syncs == 0 and tally.nonview <= 3
    assert any(torch.equal(buf["x"][0], pool.data["x"][i]) for i in range(pool.size))


def test_pool_settings_are_checked(faces):
    from joinbench.errors import JoinbenchError

    with pytest.raises(JoinbenchError, match="at least one batch"):
        _pool(faces, size=1)
    with pytest.raises(JoinbenchError, match="pool-refresh"):
        _pool(faces, refresh=0.0)
    pool = _pool(faces)
    state = pool.state()
    with pytest.raises(ValueError, match="data pool"):
        _pool(faces, size=10).load_state(state)


def test_history_names_an_unrecorded_dirty_tree_in_words():
    """A sidecar from before commits carried their diff's hash says ``<sha>+dirty``; a run
    continuing it must not pass that bare marker on as a commit (the shipped encoders and U-Net
    were such sidecars)."""
    from joinbench.training.sidecar import history_of, init_record

    legacy = {"images_seen": 4160, "wall_time_s": 3007.8, "created": "2026-11-26T20:00:00+00:00",
              "device": "cpu", "commit": "4272ba0cc417cb3e926d0929c0158d9b3eec83f6+dirty"}
    (entry,) = history_of(legacy)
    assert entry["commit"] == "4272ba0cc417cb3e926d0929c0158d9b3eec83f6" and "not recorded" in entry["tree"]
    assert entry["images"] == 4160
    newer = {"date": "2026-12-03", "images": 8, "commit": "abc+dirty.0123456789ab"}
    recorded = {"commit": newer["commit"], "history": [newer, legacy]}
    kept, legacy_again = history_of(recorded)
    assert kept["commit"] == "abc+dirty.0123456789ab" and "tree" not in kept  # a diff hash names the code
    assert legacy_again["commit"] == "4272ba0cc417cb3e926d0929c0158d9b3eec83f6"
    assert init_record(legacy, "shipped")["history"][0]["commit"].endswith("3f6")
    assert history_of({"images_seen": 0}) == []
