"""`joinbench timing` (joinbench.timing) on tiny settings on the CPU: the structure and
sanity of the report (never absolute times), FLOP counting against hand counts and
torch's FlopCounterMode, the settings, and one-line errors.

JoIN stage 1 runs on tiny random priors (16 px, w_dim 16, no LPIPS, small banks) capped at
2 steps; the U-Net uses the shipped weights. One thread, 16 px images.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from joinbench.errors import JoinbenchError
from joinbench.registry import create_dataset, create_method
from joinbench.flops import count_flops, device_peak, method_flops, step_fields
from joinbench.runner import timed_decompose
from joinbench.timing import (CPU_MAX_STEPS, MachineLoad, TimingConfig, _ImagePool, parse_batch_sizes,
                              parse_timing_sets, resolve_overrides, run_timing)

from .tiny_world import RES, export_tiny_priors

pytestmark = pytest.mark.usefixtures("tiny_env")

METHODS = ("join-s1", "unet", "trivial", "color-retinex")
SIZES = (1, 2)
# tiny-prior join-s1: no LPIPS, small latent banks and statistics
FAST_JOIN = dict(perceptual="none", bank_size=500, mean_samples=1000, radius_samples=200)


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    """Tiny random materials priors (albedo, shading, specular) in a folder, as constructed
    (noise strength and w_avg left at 0)."""
    return export_tiny_priors(tmp_path_factory.mktemp("priors"), seed=10, noise_strength=None, w_avg_std=None)


@pytest.fixture(scope="module")
def join_sets(priors):
    return {**FAST_JOIN, "priors_path": str(priors)}


@pytest.fixture(scope="module")
def report(tmp_path_factory, priors, join_sets):
    """One timing run shared by the structure tests (module scope: it is the slow part)."""
    out = tmp_path_factory.mktemp("timing")
    mp = pytest.MonkeyPatch()
    mp.setenv("JOINBENCH_HOME", str(tmp_path_factory.getbasetemp() / "home"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TimingConfig(dataset="materials", methods=METHODS, batch_sizes=(2, 1, 2), device="cpu", images=2,
                           warmup=1, resolution=RES, out=out, overrides={"join-s1": join_sets}, max_steps=2,
                           peak_seconds=0.05, progress=False)
        return run_timing(cfg)
    finally:
        torch.set_num_threads(before)
        mp.undo()


# ---------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------
def test_every_method_and_batch_size_with_sane_numbers(report):
    rows = {(r["method"], r["batch_size"]): r for r in report["results"]}
    assert set(rows) == {(m, b) for m in METHODS for b in SIZES}  # the repeated batch size 2 counts once
    assert [r["method"] for r in report["results"]] == [m for m in METHODS for _ in SIZES]
    for (m, b), r in rows.items():
        timed = [x for x in r["batches"] if not x["warmup"]]
        assert len(r["batches"]) - len(timed) == 1  # one warm-up batch, not counted
        assert len(timed) == r["batches_timed"] == math.ceil(2 / b) and r["images"] == b * len(timed)
        for key in ("seconds_per_image_mean", "seconds_per_image_median", "seconds_per_image_p95",
                    "seconds_per_image_min", "images_per_second", "peak_memory_mb"):
            assert math.isfinite(r[key]) and r[key] > 0, (m, b, key)
        assert r["seconds_per_image_min"] <= r["seconds_per_image_median"] <= r["seconds_per_image_p95"]
        per_image = [x["seconds"] / b for x in timed]
        assert r["seconds_per_image_mean"] == pytest.approx(sum(per_image) / len(per_image))
        assert r["images_per_second"] == pytest.approx(1 / r["seconds_per_image_mean"])
        assert r["failed_images"] == 0


def test_join_stage_breakdown_and_step_cap(report):
    info = report["methods"]["join-s1"]
    assert info["kind"] == "optimisation" and report["methods"]["unet"]["kind"] == "feed-forward"
    assert info["capped_steps"] == {"steps": {"from": 1000, "to": 2}} and info["config"]["steps"] == 2
    assert info["setup_seconds"]["stage1_setup"] > 0  # reported once, in the first warm-up batch
    for b in SIZES:
        r = next(x for x in report["results"] if x["method"] == "join-s1" and x["batch_size"] == b)
        assert set(r["stages"]) == {"stage1", "stage1_per_step"}
        assert r["stages"]["stage1_per_step"]["seconds_per_step"] > 0
        assert 0 < r["stages"]["stage1"]["share"] <= 1.0  # stage 1 runs inside the timed decompose
        for batch in r["batches"]:
            assert 0 < batch["timings"]["stage1"] <= batch["seconds"]
            assert batch["timings"]["stage1_per_step"] == pytest.approx(batch["timings"]["stage1"] / 2)
    for m in ("unet", "trivial", "color-retinex"):  # no stages: "total" alone is not a breakdown
        assert all(not r["stages"] for r in report["results"] if r["method"] == m)


def test_ratios_follow_from_the_rows(report):
    sp = {(r["method"], r["batch_size"]): r["seconds_per_image_mean"] for r in report["results"]}
    jf = report["ratios"]["optimisation_vs_feedforward"]
    assert (jf["numerator"], jf["denominator"]) == ("join-s1", "unet")
    assert set(jf["seconds_per_image_ratio"]) == {"1", "2"}
    for b in SIZES:
        assert jf["seconds_per_image_ratio"][str(b)] == pytest.approx(sp[("join-s1", b)] / sp[("unet", b)])
    speed = report["ratios"]["batched_speedup"]
    assert set(speed) == set(METHODS)
    assert speed["join-s1"]["kind"] == "optimisation" and speed["color-retinex"]["kind"] == "classical"
    for m in METHODS:
        assert (speed[m]["from_batch_size"], speed[m]["to_batch_size"]) == (1, 2)
        assert speed[m]["speedup"] == pytest.approx(sp[(m, 1)] / sp[(m, 2)])


def test_flop_rates_and_peak(report):
    peak = report["peak"]
    assert peak["measured"]["label"] == "measured matmul peak" and peak["measured"]["tflops"] > 0
    assert peak["spec"] is None  # no datasheet peak for a CPU
    flops = {m: report["methods"][m]["flops"] for m in METHODS}
    assert flops["unet"]["flops_per_image"] > 0 and flops["join-s1"]["flops_per_image"] > 0
    assert flops["trivial"]["flops_per_image"] == 0  # element-wise only: nothing a formula counts
    fields = flops["join-s1"]["step_fields"]
    assert set(fields) == {"steps"} and fields["steps"]["steps"] == 2
    assert flops["join-s1"]["flops_per_image"] == pytest.approx(
        flops["join-s1"]["base_flops_per_image"] + fields["steps"]["flops_per_step_per_image"])
    assert "convolution_backward" in flops["join-s1"]["per_op_per_image"]  # the inversion's backward pass
    for r in report["results"]:
        f = flops[r["method"]]["flops_per_image"]
        assert r["achieved_flops_per_second"] == pytest.approx(f / r["seconds_per_image_mean"])
        assert r["percent_of_measured_peak"] == pytest.approx(
            100 * r["achieved_flops_per_second"] / (peak["measured"]["tflops"] * 1e12))


def test_machine_load_is_recorded_and_a_busy_machine_is_a_warning(report, monkeypatch):
    load = report["environment"]["machine_load"]
    assert load["cores_in_use"] == 1 and load["wall_seconds"] > 0 and load["own_cpu_seconds"] > 0
    assert load["others_cpu_share"] is None or 0 <= load["others_cpu_share"] <= 1
    assert load["busy"] == (load["warning"] is not None)
    # a load average above the cores in use, or others' CPU share: the report says so
    import os

    monkeypatch.setattr(os, "getloadavg", lambda: (7.5, 7.0, 6.0))
    busy = MachineLoad(torch.device("cpu")).report()
    assert busy["busy"] and "load average 7.50 above the" in busy["warning"]
    from joinbench.timing import timing_markdown

    md = timing_markdown({**report, "environment": {**report["environment"], "machine_load": busy}})
    assert "**Warning: The machine was busy during this measurement (load average 7.50" in md
    quiet = {**busy, "busy": False, "warning": None}
    assert "Warning" not in timing_markdown({**report, "environment": {**report["environment"], "machine_load": quiet}})


def test_files_written(report):
    out = Path(report["out"])
    on_disk = json.loads((out / "timing.json").read_text())
    assert on_disk["results"] == json.loads(json.dumps({k: v for k, v in report.items() if k != "out"}))["results"]
    assert on_disk["environment"]["commit"] and on_disk["environment"]["versions"]["torch"] == torch.__version__
    md = (out / "timing.md").read_text()
    cmd = on_disk["environment"]["command"]
    assert cmd.startswith("joinbench timing --dataset materials --methods join-s1,unet,trivial,color-retinex")
    assert "--set join-s1:perceptual=none" in cmd and f"Made with `{cmd}`" in md
    for heading in ("## Seconds per image", "## Stage breakdown", "## Achieved FLOP/s", "## Ratios"):
        assert heading in md
    assert "join-s1 / unet seconds per image: batch 1:" in md and "steps 1000 -> 2" in md
    assert md.count("| join-s1 ") >= 2 * len(SIZES) + len(SIZES)  # times, stages, FLOPs (+ speed-up row)
    with Image.open(out / "timing.png") as img:
        assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 200
        # one coloured line per method: the palette's first colours are present
        colours = {c for _, c in img.convert("RGB").getcolors(1 << 20)}
    assert {(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)} <= colours


# ---------------------------------------------------------------------------------------
# FLOP counting
# ---------------------------------------------------------------------------------------
def test_flop_count_matches_hand_counts():
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(5, 8)
    total, ops = count_flops(lambda: lin(x))
    assert total == 2 * 5 * 8 * 4 and ops == {"addmm": 320}
    conv = torch.nn.Conv2d(3, 6, kernel_size=3, padding=1)
    img = torch.randn(2, 3, 10, 10)
    fwd = 2 * 2 * 6 * 3 * 3 * 3 * 10 * 10  # 2 x B x Cout x Cin x k x k x H x W
    assert count_flops(lambda: conv(img))[0] == fwd
    w = img.clone().requires_grad_(True)
    total, ops = count_flops(lambda: conv(w).sum().backward())
    assert ops["convolution"] == fwd and ops["convolution_backward"] == 2 * fwd  # grads of input and weight
    assert count_flops(lambda: (x * 2 + 1).exp())[0] == 0  # element-wise: not counted


def test_flop_count_equals_torch_flop_counter_on_the_unet():
    from torch.utils.flop_counter import FlopCounterMode

    net = create_method("unet").to("cpu").load()
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        ours, _ = count_flops(lambda: net(x))
        with FlopCounterMode(display=False) as ref:
            net(x)
    assert ours == ref.get_total_flops() > 0


def test_step_extrapolation_equals_a_direct_count(priors, join_sets):
    """FLOPs counted at 1 and 2 steps and extrapolated to 5 equal a direct count at 5."""
    ds = create_dataset("materials", resolution=RES, size=2)
    pool = _ImagePool(ds, 2, torch.device("cpu"))
    sets = {**join_sets, "steps": 5}
    method = create_method("join-s1", **sets).to("cpu")
    batch = pool.batch(0, 2)
    run = lambda m: timed_decompose(m, batch, torch.device("cpu"))
    extrapolated = method_flops(method, lambda extra: create_method("join-s1", **{**sets, **extra}).to("cpu"), run, 2)
    method.decompose(batch.image)  # set-up, not counted
    direct, _ = count_flops(lambda: method.decompose(batch.image))
    assert extrapolated["flops_per_image"] == pytest.approx(direct / 2, rel=1e-12)
    assert extrapolated["step_fields"]["steps"]["flops_per_step_per_image"] > 0


# ---------------------------------------------------------------------------------------
# pieces and settings
# ---------------------------------------------------------------------------------------
def test_device_peaks_by_name():
    assert device_peak("NVIDIA H100 80GB HBM3")["tflops"]["bf16"] == pytest.approx(989.4)
    assert device_peak("NVIDIA H100 PCIe")["tflops"]["bf16"] == pytest.approx(756.0)
    assert device_peak("NVIDIA H200")["tflops"]["fp32"] == pytest.approx(67.0)
    assert device_peak("NVIDIA A100-SXM4-80GB")["tflops"] == {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}
    assert device_peak("cpu (x86_64, 2 cores, 1 threads)") is None


def test_image_pool_cycles_through_a_small_split():
    ds = create_dataset("materials", resolution=RES, size=3)
    pool = _ImagePool(ds, 10, torch.device("cpu"))
    assert len(pool.ids) == 3
    batch = pool.batch(1, 2)  # images 2, 3 -> 2, 0
    assert batch.ids == [ds.sample_id(2), ds.sample_id(0)]
    assert torch.equal(batch.image[1], ds[0].image)


def test_settings_per_method_global_and_capped(join_sets):
    sets = parse_timing_sets(["steps=7", "join-s1:lr=0.05", "predictions:/a:b:x=1=2"],
                             ("join-s1", "unet", "predictions:/a:b"))
    assert sets == {"*": {"steps": "7"}, "join-s1": {"lr": "0.05"}, "predictions:/a:b": {"x": "1=2"}}
    cfg = TimingConfig(methods=("join-s1", "unet"), overrides={"*": {"steps": "7"}, "join-s1": dict(join_sets)})
    resolved, capped = resolve_overrides(cfg, torch.device("cpu"))
    assert resolved["join-s1"]["steps"] == "7" and "steps" not in resolved["unet"]  # unet has no steps
    assert capped == {"join-s1": {}, "unet": {}}  # set explicitly: never capped
    cfg = TimingConfig(methods=("join-s1",), overrides={"join-s1": dict(join_sets)})
    resolved, capped = resolve_overrides(cfg, torch.device("cpu"))
    assert resolved["join-s1"]["steps"] == CPU_MAX_STEPS and capped["join-s1"] == {"steps": 1000}
    cfg.max_steps = 0
    assert "steps" not in resolve_overrides(cfg, torch.device("cpu"))[0]["join-s1"]
    assert step_fields(create_method("join-s1").config) == {"steps": 1000}
    assert parse_batch_sizes("1, 8,64,8") == (1, 8, 64)


@pytest.mark.parametrize("call, match", [
    (lambda: parse_timing_sets(["unte:steps=3"], ("unet",)), "not in --methods .*Did you mean 'unet'"),
    (lambda: parse_timing_sets(["steps"], ("unet",)), "key=value"),
    (lambda: resolve_overrides(TimingConfig(methods=("unet", "trivial"), overrides={"*": {"stepz": "3"}}),
                               torch.device("cpu")), "none of unet, trivial has such a setting"),
    (lambda: resolve_overrides(TimingConfig(methods=("retinex",), overrides={"*": {"gray_treshold": "1"}}),
                               torch.device("cpu")), "Did you mean 'gray_threshold'"),
    (lambda: resolve_overrides(TimingConfig(methods=("unet",), overrides={"unet": {"stepz": "3"}}),
                               torch.device("cpu")), "Unknown setting 'stepz'"),
    (lambda: parse_batch_sizes("1,x"), "comma list of integers"),
    (lambda: run_timing(TimingConfig(methods=("unet", "unet"))), "more than once"),
    (lambda: run_timing(TimingConfig(methods=("unet",), batch_sizes=(0,))), "positive"),
    (lambda: run_timing(TimingConfig(methods=("unet",), dataset="materails")), "Did you mean 'materials'"),
])
def test_user_errors_are_one_line(call, match):
    with pytest.raises(JoinbenchError, match=match) as exc:
        call()
    assert "\n" not in str(exc.value)


def test_unknown_method_fails_before_anything_runs(tmp_path):
    out = tmp_path / "t"
    with pytest.raises(JoinbenchError, match=r"Unknown method 'unte'\. Did you mean 'unet'\?") as exc:
        run_timing(TimingConfig(methods=("trivial", "unte"), batch_sizes=(1,), out=out, device="cpu"))
    assert "\n" not in str(exc.value) and not out.exists()


def test_cli_timing_command(tmp_path):
    from typer.testing import CliRunner

    from joinbench.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["timing", "--dataset", "materials", "--methods", "trivial", "--batch-sizes", "1",
                                      "--images", "1", "--resolution", str(RES), "--device", "cpu", "--out", str(out),
                                      "--quiet", "--no-flops"])
    assert result.exit_code == 0, result.output
    assert "## Seconds per image" in result.output and f"timing report: {out}" in result.output
    data = json.loads((out / "timing.json").read_text())
    assert [(r["method"], r["batch_size"], r["images"]) for r in data["results"]] == [("trivial", 1, 1)]
    assert "flops" not in data["methods"]["trivial"] and (out / "timing.png").is_file()
    bad = CliRunner().invoke(app, ["timing", "--methods", "unte", "--out", str(tmp_path / "x")])
    assert isinstance(bad.exception, JoinbenchError) and "Did you mean 'unet'" in str(bad.exception)
