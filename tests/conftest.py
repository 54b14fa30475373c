"""Shared fixtures of the procedural datasets (faces, materials).

A test module names its family with a module-level ``family`` fixture (``"faces"`` or
``"materials"``; test_procedural.py parametrises it over both) and then asks for ``clean``,
``shifted``, ``clean_batch``, ``shift_batch``, ``spec`` (the family's expectations) or
``res`` (their resolution).
Datasets and rendered test batches are made once per session and shared between modules:
tests must not modify them in place.

``tiny_env`` is the environment of the tests on tiny random priors (tiny_world.py); their
modules turn it on with ``pytestmark = pytest.mark.usefixtures("tiny_env")``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import pytest
import torch

from joinbench.registry import create_dataset

RES = 32  # resolution of the fixture datasets and batches


@dataclass(frozen=True)
class Family:
    """What the shared checks of test_procedural.py expect of one procedural family."""

    name: str  # the clean split; f"{name}-shift" is the shifted one
    batch: int  # images in clean_batch / shift_batch
    has_mask: bool
    batch_seeds: tuple[int, ...]  # test indices rendered together and alone
    resolution_tol: float  # mean |2x2-pooled 64 px - 32 px| allowed per component, encoded
    checksum_split: tuple[int, int]  # (resolution, size) of the determinism check


FAMILIES = {
    "faces": Family("faces", batch=16, has_mask=True, batch_seeds=(17, 3, 29, 8, 40),
                    resolution_tol=0.015, checksum_split=(16, 3)),
    "materials": Family("materials", batch=12, has_mask=False, batch_seeds=(17, 3, 29),
                        resolution_tol=0.02, checksum_split=(RES, 4)),
}


@lru_cache(maxsize=None)
def _dataset(name: str):
    return create_dataset(name, resolution=RES, size=8)


@lru_cache(maxsize=None)
def _test_batch(name: str, n: int):
    ds = _dataset(name)
    return ds.render_batch_at(ds.test_seeds(list(range(n))))


@pytest.fixture(scope="session")
def res() -> int:
    return RES


@pytest.fixture(scope="module")
def spec(family) -> Family:
    return FAMILIES[family]


@pytest.fixture(scope="module")
def clean(family):
    return _dataset(family)


@pytest.fixture(scope="module")
def shifted(family):
    return _dataset(f"{family}-shift")


@pytest.fixture(scope="module")
def clean_batch(spec):
    return _test_batch(spec.name, spec.batch)


@pytest.fixture(scope="module")
def shift_batch(spec):
    return _test_batch(f"{spec.name}-shift", spec.batch)


@pytest.fixture
def tiny_env(monkeypatch, tmp_path_factory):
    """One intra-op thread (tiny convolutions on a shared 2-core machine) and a private
    JOINBENCH_HOME for latent-bank caches, keeping the real LPIPS weight cache."""
    from joinbench.lpips_weights import ENV_WEIGHTS, cache_dir, cached_path

    if ENV_WEIGHTS not in os.environ and cached_path("vgg").is_file():
        monkeypatch.setenv(ENV_WEIGHTS, str(cache_dir()))  # read before JOINBENCH_HOME moves
    monkeypatch.setenv("JOINBENCH_HOME", str(tmp_path_factory.getbasetemp() / "home"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
