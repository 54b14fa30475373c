"""Progress you can see: the runner's two bars are fed by the methods' Progress events.

A slow run must not look like a hung one: a `join` run on the CPU reports stage-1 steps (with
the loss now and then) long before its first image is finished, feed-forward and classical
methods report each batch, and `-q` shows nothing. Tiny random priors (tiny_world.py), 16 px.
"""
from __future__ import annotations

import time

import pytest

from joinbench.plan import RunSettings
from joinbench.runner import RunBars, run_benchmark

from .tiny_world import RES, export_tiny_priors

pytestmark = pytest.mark.usefixtures("tiny_env")

QUICK = {"steps": "6", "pti_steps": "4", "perceptual": "none", "pti_perceptual": "none", "bank_size": "64",
         "mean_samples": "256", "pti_disc_samples": "2", "log_every": "1", "pti_log_every": "1"}


@pytest.fixture
def recorded(monkeypatch):
    """Every event the bars receive and every finished batch, with the time it came."""
    seen: dict[str, list] = {"events": [], "batches": []}
    call, done = RunBars.__call__, RunBars.batch_done

    def on_event(self, event):
        seen["events"].append((time.perf_counter(), event))
        call(self, event)

    def on_batch(self, images):
        seen["batches"].append((time.perf_counter(), images))
        done(self, images)

    monkeypatch.setattr(RunBars, "__call__", on_event)
    monkeypatch.setattr(RunBars, "batch_done", on_batch)
    return seen


def test_join_shows_step_progress_before_its_first_image_finishes(tmp_path, recorded):
    bank = export_tiny_priors(tmp_path / "bank", seed=60, noise_strength=None, encoders=True)
    overrides = {**QUICK, "priors_path": str(bank), "encoders_path": str(bank)}
    run_benchmark(RunSettings(method="join", dataset="materials", resolution=RES, limit=1, batch_size=1, device="cpu",
                              metrics=("mse",), overrides=overrides, out=tmp_path / "run", progress=True))
    events, batches = recorded["events"], recorded["batches"]
    assert events and batches, "no progress events reached the runner's bars"
    first_at, first = events[0]
    assert first_at < batches[0][0]  # step progress before the first image is done
    stages = [e.stage for _, e in events]
    assert "stage1" in stages and "pti" in stages
    s1 = [e for _, e in events if e.stage == "stage1"]
    assert s1[-1].step == s1[-1].steps == 6 and all(e.images == 1 for e in s1)
    assert any(e.loss is not None for _, e in events)


def test_batches_are_reported_and_quiet_shows_nothing(tmp_path, recorded):
    run_benchmark(RunSettings(method="unet", dataset="materials", resolution=RES, limit=4, batch_size=2, device="cpu",
                              metrics=("mse",), out=tmp_path / "ff", progress=True))
    events = [e for _, e in recorded["events"]]
    assert [(e.stage, e.step, e.steps, e.images) for e in events] == [("batch", 1, 1, 2)] * 2
    assert [n for _, n in recorded["batches"]] == [2, 2]
    recorded["events"].clear()
    run_benchmark(RunSettings(method="retinex", dataset="materials", resolution=RES, limit=2, batch_size=2, device="cpu",
                              metrics=("mse",), out=tmp_path / "q", progress=False))
    assert recorded["events"] == []  # -q: no callback, no events


def test_step_bar_restarts_for_each_stage_and_batch():
    from joinbench.progress import Progress

    import io

    bars = RunBars(total=2, desc="x", enabled=True, file=io.StringIO())
    for step in (1, 2, 3):
        bars(Progress("stage1", step, 3, loss=0.5 if step == 3 else None, images=2))
    assert (bars.steps.n, bars.steps.total, bars.stage) == (3, 3, "stage1")
    bars(Progress("pti", 1, 5, images=2))
    assert (bars.steps.n, bars.steps.total, bars.stage) == (1, 5, "pti") and "loss" not in bars.steps.postfix
    bars(Progress("pti", 5, 5, images=2))
    bars(Progress("pti", 1, 5, images=2))  # the next batch's PTI starts over
    assert bars.steps.n == 1
    bars.close()
