"""Micro-benchmarks of the inner loops behind `joinbench timing`'s numbers: one JoIN
inversion step, one generator forward, one test-data batch, one U-Net forward.

Not part of the default test run (pyproject's norecursedirs excludes tests/benchmarks);
run them with::

    python -m pytest tests/benchmarks --benchmark-only -q

They use the shipped 64 px materials weights (joinbench/weights) on CUDA when available,
else on the CPU, and synchronise the device inside every timed call. Nothing is asserted
about speed: the numbers are for comparing commits and machines (``--benchmark-save``,
``--benchmark-compare``). Images per second are stored in each benchmark's extra_info.
"""
from __future__ import annotations

import pytest
import torch

from joinbench.env import synchronize
from joinbench.registry import create_dataset, create_forward_model, create_method

RES = 64
BATCH = 8


@pytest.fixture(scope="module")
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _run(benchmark, fn, device, images: int, rounds: int):
    def timed():
        out = fn()
        synchronize(device)
        return out

    result = benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info["images_per_s"] = round(images / benchmark.stats.stats.mean, 2)
    benchmark.extra_info["device"] = str(device)
    return result


@pytest.fixture(scope="module")
def materials_images():
    ds = create_dataset("materials", resolution=RES, size=BATCH)
    return ds.render_batch_at(ds.test_seeds(list(range(BATCH))))["image"]


@pytest.mark.parametrize("batch", [1, BATCH])
def test_bench_inversion_step(benchmark, device, materials_images, batch):
    """One call of stage 1 with ``steps=1`` on the shipped materials bank (LPIPS-VGG, kNN
    regulariser, the defaults): one optimisation step (render three generators, loss,
    backward, Adam) plus the loop's fixed cost, the initial latents and noise and one
    no-grad render at the end. Bank statistics are computed before timing."""
    from joinbench.gan.bank import load_bank
    from joinbench.join.stage1 import JointInverter, Stage1Config

    fm = create_forward_model("reinhard")
    inv = JointInverter(load_bank("materials", device, components=fm.components), fm, Stage1Config(steps=1), device)
    inv.setup()
    target = materials_images[:batch].to(device)
    res = _run(benchmark, lambda: inv.invert(target), device, batch, rounds=3)
    assert res.rerender.shape == (batch, 3, RES, RES) and not any(res.errors)


def test_bench_generator_forward(benchmark, device):
    """One synthesis-network forward of the shipped materials albedo generator for a batch
    (mean latent, constant noise, no grad): the generator part of every inversion step."""
    from joinbench.gan.bank import load_prior

    prior = load_prior("materials", "albedo", device)
    w = prior.mean_latent(1000, seed=0, truncation_psi=0.7).to(device).expand(BATCH, -1)  # (B, w_dim)
    with torch.no_grad():
        img = _run(benchmark, lambda: prior.synthesis(w, noise_mode="const"), device, BATCH, rounds=20)
    assert img.shape[0] == BATCH and img.shape[-1] == RES


def test_bench_test_batch(benchmark, device):
    """Rendering one batch of materials test images (what `joinbench run` and `timing`
    load per batch); the training stream is benchmarked in test_bench_procedural.py."""
    ds = create_dataset("materials", resolution=RES, size=BATCH)
    seeds = ds.test_seeds(list(range(BATCH)))
    out = _run(benchmark, lambda: ds.render_batch_at(seeds, device), device, BATCH, rounds=10)
    assert out["image"].shape == (BATCH, 3, RES, RES)


def test_bench_unet_forward(benchmark, device, materials_images):
    """One forward of the shipped materials U-Net on a batch at its training resolution."""
    net = create_method("unet").to(device).load()
    x = materials_images.to(device)
    with torch.inference_mode():
        out = _run(benchmark, lambda: net(x), device, BATCH, rounds=20)
    assert out.shape == (BATCH, 9, RES, RES)
