"""Throughput of the procedural generators (run: pytest tests/benchmarks --benchmark-only).

Target for each family: one training batch of 256 at 64 px in under 0.5 s on a 2-core CPU
(>= 500 images/s), so GAN training is not starved by data generation.
"""
from __future__ import annotations

import pytest

from joinbench.registry import create_dataset

BATCH, RES = 256, 64
FAMILIES = ("faces", "materials")


def _bench_stream(benchmark, name: str, batch_size: int = BATCH, rounds: int = 5) -> float:
    stream = create_dataset(name, resolution=RES).train_stream(batch_size, "cpu", seed=0)
    next(stream)  # warm-up: allocator, thread pool
    batch = benchmark.pedantic(lambda: next(stream), rounds=rounds, iterations=1)
    rate = batch_size / benchmark.stats.stats.mean
    benchmark.extra_info["images_per_s"] = round(rate, 1)
    print(f"\n{name}: {rate:.0f} images/s at {RES} px, batch {batch_size}")
    assert batch["image"].shape == (batch_size, 3, RES, RES)
    return rate


@pytest.mark.parametrize("family", FAMILIES)
def test_bench_train_batch(benchmark, family):
    _bench_stream(benchmark, family)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_bench_shift_batch(benchmark, family):
    """The shift splits (faces: six lights, withheld attributes; materials: several area
    lights; both: camera degradations) are only rendered as test splits; measured for
    information, no target."""
    _bench_stream(benchmark, f"{family}-shift", batch_size=32, rounds=3)
