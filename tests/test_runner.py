"""The runner end to end on tiny splits: outputs, resume, predictions round trip, reports."""
import csv
import io
import json
import subprocess
import sys

import pytest

from joinbench.errors import JoinbenchError
from joinbench.registry import METHODS
from joinbench.report import render_report
from joinbench.runner import RunSettings, read_records, run_benchmark

FAST = ("mse", "psnr", "ssim", "si-mse", "si-lmse", "lmse", "dssim")


def _run(tmp_path, name, **kw):
    kw.setdefault("metrics", FAST)
    kw.setdefault("progress", False)
    kw.setdefault("resolution", 16)
    kw.setdefault("limit", 4)
    kw.setdefault("batch_size", 2)
    kw.setdefault("device", "cpu")
    return run_benchmark(RunSettings(out=tmp_path / name, **kw))


def test_run_folder_is_complete(tmp_path):
    d = _run(tmp_path, "a", method="trivial", dataset="materials")
    for f in ("records.jsonl", "summary.json", "table.md", "grid.png", "run.json"):
        assert (d / f).is_file(), f
    recs = read_records(d / "records.jsonl")
    assert len(recs) == 4 * 4  # albedo, shading, specular, image per image
    assert {r["component"] for r in recs} == {"albedo", "shading", "specular", "image"}
    s = json.loads((d / "summary.json").read_text())
    for key in ("method_config", "dataset", "resolution", "forward_model", "colour_space", "seed"):
        assert key in s["run"]
    for key in ("device_name", "versions", "commit"):
        assert key in s["environment"]
    assert s["timing"]["peak_memory_mb"] > 0 and s["timing"]["images_per_second"] > 0
    assert s["results"]["albedo"]["mse"]["n"] == 4
    assert s["run"]["metrics"]["psnr"]["higher_is_better"] is True
    table = (d / "table.md").read_text()
    assert "psnr ↑" in table and "mse ↓" in table and "albedo" in table


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_equals_uninterrupted(tmp_path, monkeypatch):
    full = _run(tmp_path, "full", method="retinex", dataset="materials", limit=6)
    entry, _ = METHODS.get("retinex")
    original = entry.factory.decompose
    calls = {"n": 0}

    def flaky(self, images):
        calls["n"] += 1
        if calls["n"] == 2:
            raise _Interrupt()
        return original(self, images)

    monkeypatch.setattr(entry.factory, "decompose", flaky)
    with pytest.raises(_Interrupt):
        _run(tmp_path, "part", method="retinex", dataset="materials", limit=6)
    part = tmp_path / "part"
    assert len(read_records(part / "records.jsonl")) == 2 * 4 and not (part / "summary.json").exists()
    with open(part / "records.jsonl", "a") as f:  # a torn line from a kill mid-write
        f.write('{"id": "materials-0000')
    monkeypatch.setattr(entry.factory, "decompose", original)
    _run(tmp_path, "part", method="retinex", dataset="materials", limit=6)
    a = json.loads((full / "summary.json").read_text())["results"]
    b = json.loads((part / "summary.json").read_text())["results"]
    assert a == b
    assert len(read_records(part / "records.jsonl")) == 6 * 4


def test_other_run_in_same_folder_is_refused(tmp_path):
    _run(tmp_path, "x", method="trivial", dataset="materials", limit=2)
    with pytest.raises(JoinbenchError, match="different run"):
        _run(tmp_path, "x", method="retinex", dataset="materials", limit=2)


def test_predictions_round_trip_scores_zero_error(tmp_path):
    from joinbench.export import export_dataset
    from joinbench.plan import open_dataset

    export_dataset(open_dataset("materials", 16, 0), tmp_path / "exp", limit=3, progress=False)
    d = _run(tmp_path, "p", method=f"predictions:{tmp_path / 'exp' / 'linear'}", dataset="materials", limit=3)
    res = json.loads((d / "summary.json").read_text())["results"]
    for comp in ("albedo", "shading", "specular"):
        assert res[comp]["mse"]["mean"] == 0.0
        assert res[comp]["si-mse"]["mean"] == pytest.approx(0.0, abs=1e-12)
        assert res[comp]["ssim"]["mean"] == pytest.approx(1.0)


def test_score_later_equals_scoring_now(tmp_path):
    now = _run(tmp_path, "now", method="color-retinex", dataset="materials", limit=3)
    later = _run(tmp_path, "later", method="color-retinex", dataset="materials", limit=3, metrics=(), save_predictions=True)
    recs = read_records(later / "records.jsonl")
    assert recs and all(r["metrics"] == {} for r in recs)
    scored = _run(tmp_path, "scored", method=f"predictions:{later}", dataset="materials", limit=3)
    a = json.loads((now / "summary.json").read_text())["results"]
    b = json.loads((scored / "summary.json").read_text())["results"]
    for comp in ("albedo", "shading", "specular"):
        for m in FAST:
            assert b[comp][m]["mean"] == pytest.approx(a[comp][m]["mean"], rel=1e-5, abs=1e-7), (comp, m)


def test_missing_prediction_components_are_reported(tmp_path):
    from joinbench.export import export_dataset
    from joinbench.plan import open_dataset

    exp = tmp_path / "exp"
    export_dataset(open_dataset("materials", 16, 0), exp, limit=2, progress=False)
    for p in (exp / "specular").iterdir():
        p.unlink()
    (exp / "specular").rmdir()
    d = _run(tmp_path, "m", method=f"predictions:{exp}", dataset="materials", limit=2)
    recs = read_records(d / "records.jsonl")
    spec = [r for r in recs if r["component"] == "specular"]
    assert spec and all(r["error"] == "missing prediction" for r in spec)
    alb = [r for r in recs if r["component"] == "albedo"]
    assert all(r["error"] is None and r["metrics"]["mse"] < 1e-4 for r in alb)  # 8-bit PNG quantisation


def test_dataset_without_ground_truth(tmp_path):
    d = _run(tmp_path, "real", method="trivial", dataset="real-materials", limit=2)
    recs = read_records(d / "records.jsonl")
    assert {r["component"] for r in recs} == {"image"}
    assert (d / "grid.png").is_file()


def test_report_every_format(tmp_path):
    a = _run(tmp_path, "t", method="trivial", dataset="materials", limit=3)
    b = _run(tmp_path, "r", method="color-retinex", dataset="materials", limit=3)
    md = render_report([a, b], "md")
    assert "trivial" in md and "color-retinex" in md and "**" in md and "## albedo" in md and "mse ↓" in md
    # provenance (device, commit, versions, wall time of each run) comes before the tables
    assert md.index("Runs:") < md.index("## albedo") and "commit " in md and "torch " in md and "wall " in md
    tex = render_report([a, b], "latex")
    assert r"\begin{tabular}" in tex and r"\textbf{" in tex and r"\toprule" in tex
    rows = list(csv.DictReader(io.StringIO(render_report([a, b], "csv"))))
    assert {r["method"] for r in rows} == {"trivial", "color-retinex"}
    for comp_metric in {(r["component"], r["metric"]) for r in rows}:
        group = [r for r in rows if (r["component"], r["metric"]) == comp_metric]
        assert sum(r["best"] == "True" for r in group) >= 1
    html = render_report([a, b], "html")
    assert html.startswith("<!doctype html>") and "data:image/png;base64," in html and "class=best" in html
    with pytest.raises(JoinbenchError, match="not a finished run folder"):
        render_report([tmp_path], "md")
    with pytest.raises(JoinbenchError, match="Unknown report format"):
        render_report([a], "pdf")


def test_cli_run_and_report(tmp_path):
    cmd = [sys.executable, "-m", "joinbench", "run", "--method", "trivial", "--dataset", "materials",
           "--limit", "2", "--resolution", "16", "--device", "cpu", "--metrics", "mse,ssim,lpips", "-q",
           "--out", str(tmp_path / "cli")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "lpips ↓" in res.stdout and "run folder:" in res.stdout
    res = subprocess.run([sys.executable, "-m", "joinbench", "report", str(tmp_path / "cli"), "--format", "csv",
                          "--out", str(tmp_path / "r.csv")], capture_output=True, text=True)
    assert res.returncode == 0 and (tmp_path / "r.csv").read_text().startswith("method,component")
    bad = subprocess.run([sys.executable, "-m", "joinbench", "run", "--method", "trivail", "--dataset", "materials"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Did you mean 'trivial'" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "joinbench", "run", "--method", "retinex", "--dataset", "materials",
                          "--set", "nonsense=1", "--limit", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Unknown setting 'nonsense'" in bad.stderr


def test_summary_statistics():
    from joinbench.tables import bootstrap_ci, summarise_records

    recs = [{"id": f"i{k}", "component": "albedo", "error": None,
             "metrics": {"mse": v, "psnr": float("inf")}} for k, v in enumerate([0.1, 0.2, 0.3, float("nan")])]
    recs.append({"id": "bad", "component": "albedo", "error": "NaN loss", "metrics": {"mse": 99.0}})
    s = summarise_records(recs)["albedo"]
    assert s["mse"]["n"] == 3 and s["mse"]["mean"] == pytest.approx(0.2)
    assert s["mse"]["ci_low"] < 0.2 < s["mse"]["ci_high"]
    assert s["psnr"]["mean"] == float("inf")
    import numpy as np

    lo, hi = bootstrap_ci(np.array([1.0, 1.0, 1.0]))
    assert lo == hi == 1.0


def test_cpu_default_limit_applies_only_without_limit(tmp_path, monkeypatch):
    entry, _ = METHODS.get("trivial")
    monkeypatch.setattr(entry.factory, "cpu_default_limit", 3, raising=False)
    d = _run(tmp_path, "auto", method="trivial", dataset="materials", limit=None)
    assert len({r["id"] for r in read_records(d / "records.jsonl")}) == 3
    d = _run(tmp_path, "explicit", method="trivial", dataset="materials", limit=5)
    assert len({r["id"] for r in read_records(d / "records.jsonl")}) == 5


def test_resume_with_smaller_limit_reports_only_those_images(tmp_path, capsys):
    _run(tmp_path, "shrink", method="trivial", dataset="materials", limit=4)
    capsys.readouterr()
    d = _run(tmp_path, "shrink", method="trivial", dataset="materials", limit=2)
    assert "held a finished 4-image run" in capsys.readouterr().out  # said, not silent
    s = json.loads((d / "summary.json").read_text())
    assert s["run"]["images"] == 2 and s["results"]["albedo"]["mse"]["n"] == 2
    d = _run(tmp_path, "shrink", method="trivial", dataset="materials", limit=4)  # and back: nothing lost
    assert json.loads((d / "summary.json").read_text())["results"]["albedo"]["mse"]["n"] == 4


def test_resume_adding_save_predictions_redoes_images_without_files(tmp_path):
    _run(tmp_path, "sp", method="trivial", dataset="materials", limit=3, grid_images=1)
    d = _run(tmp_path, "sp", method="trivial", dataset="materials", limit=3, grid_images=1, save_predictions=True)
    assert sorted(p.name for p in (d / "predictions").iterdir()) == [f"materials-0000{i}.npz" for i in range(3)]
    assert len(read_records(d / "records.jsonl")) == 3 * 4


def test_rerender_needs_every_component(tmp_path):
    from joinbench.export import export_dataset
    from joinbench.plan import open_dataset

    exp = tmp_path / "exp"
    export_dataset(open_dataset("materials", 16, 0), exp, limit=2, progress=False)
    import shutil

    shutil.rmtree(exp / "shading")
    d = _run(tmp_path, "noshd", method=f"predictions:{exp}", dataset="materials", limit=2)
    img = [r for r in read_records(d / "records.jsonl") if r["component"] == "image"]
    assert img and all(r["error"] == "missing prediction" for r in img)
    s = json.loads((d / "summary.json").read_text())
    assert "image" not in s["results"] and s["results"]["albedo"]["mse"]["n"] == 2


def test_out_must_be_a_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(JoinbenchError, match="is a file"):
        run_benchmark(RunSettings(method="trivial", dataset="materials", out=f, limit=1, resolution=16, progress=False))


def test_out_folder_with_other_files_is_refused(tmp_path):
    own = tmp_path / "photos"
    own.mkdir()
    (own / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(JoinbenchError, match="already holds other files .*holiday.jpg.* and no run"):
        run_benchmark(RunSettings(method="trivial", dataset="materials", out=own, limit=1, resolution=16, progress=False))
    assert sorted(p.name for p in own.iterdir()) == ["holiday.jpg"]
    (tmp_path / "empty").mkdir()
    assert (_run(tmp_path, "empty", method="trivial", dataset="materials", limit=1) / "summary.json").is_file()


def test_paths_that_cannot_be_written_fail_in_one_line(tmp_path):
    from joinbench.env import make_folder, write_atomic

    (tmp_path / "f.png").write_text("x")
    (tmp_path / "dir").mkdir()
    with pytest.raises(JoinbenchError, match="is a folder; give a file name"):
        write_atomic(tmp_path / "dir", "text")
    with pytest.raises(JoinbenchError, match="f.png is a file, so .* cannot be written"):
        write_atomic(tmp_path / "f.png" / "x.md", "text")
    with pytest.raises(JoinbenchError, match="f.png is a file; give a folder"):
        make_folder(tmp_path / "f.png" / "sub")
    assert make_folder(tmp_path / "a" / "b").is_dir()


@pytest.mark.parametrize("kw, message", [
    (dict(device="mps"), "Device 'mps' is not supported"),
    (dict(seed=-1), "--seed must be from 0 to 1,000,000"),
    (dict(seed=10 ** 20), "--seed must be from 0 to 1,000,000"),
    (dict(method="retinex", overrides={"gray_threshold": "nan"}), "expected a finite number"),
    (dict(method="retinex", overrides={"gray_threshold": "-5"}), "thresholds must be >= 0"),
])
def test_bad_run_settings_fail_before_running(tmp_path, kw, message):
    kw = {"method": "trivial", "dataset": "materials", **kw}
    with pytest.raises(JoinbenchError, match=message):
        _run(tmp_path, "bad", **kw)


def test_out_with_a_trailing_slash_is_a_folder_not_a_file(tmp_path):
    from typer.testing import CliRunner

    from joinbench.cli import app

    res = CliRunner().invoke(app, ["datasets", "preview", "materials", "--n", "1", "--out", str(tmp_path / "pv") + "/"])
    assert isinstance(res.exception, JoinbenchError) and "names a folder; give a file name" in str(res.exception)
    assert not (tmp_path / "pv").exists()


def test_cli_rejects_empty_metrics_and_negative_grid(tmp_path):
    for extra, message in ((["--metrics", ""], "names no metric"), (["--grid-images", "-1"], "--grid-images must be")):
        res = subprocess.run([sys.executable, "-m", "joinbench", "run", "--method", "trivial", "--dataset", "materials",
                              "--limit", "1", *extra], capture_output=True, text=True, cwd=tmp_path)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_ctrl_c_says_how_to_resume(tmp_path):
    import signal
    import time

    cmd = [sys.executable, "-m", "joinbench", "run", "--method", "trivial", "--dataset", "materials", "--resolution", "16",
           "--batch-size", "1", "--metrics", "mse", "--device", "cpu", "--out", "r", "-q"]
    # a shell's background job inherits SIGINT ignored, and Python keeps it so: give the child the default
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    records = tmp_path / "r" / "records.jsonl"
    deadline = time.time() + 60
    while not (records.is_file() and records.stat().st_size) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.fail("the run finished before it could be interrupted; make it longer")
    assert proc.returncode == 130 and "Traceback" not in err
    # the run's own line: how many images are kept, where, and the command that resumes it
    assert "are finished and kept in r; rerun the same command to resume" in err and "--out r" in err, err


def test_interrupt_names_the_folder_and_says_when_nothing_finished(tmp_path, monkeypatch):
    """Ctrl-C inside a batch: the message names the folder and what is kept; a resumed run's
    summary gives its cumulative wall time over every invocation as well as this one's."""
    from joinbench.errors import Interrupted

    entry, _ = METHODS.get("trivial")
    original = entry.factory.decompose
    calls = {"n": 0, "stop_at": 1}

    def interrupted(self, images):
        calls["n"] += 1
        if calls["n"] == calls["stop_at"]:
            raise KeyboardInterrupt
        return original(self, images)

    monkeypatch.setattr(entry.factory, "decompose", interrupted)
    with pytest.raises(Interrupted) as first:
        _run(tmp_path, "cc", method="trivial", dataset="materials", limit=4, batch_size=2)
    msg = str(first.value)
    assert "before any image finished" in msg and str(tmp_path / "cc") in msg and "nothing to resume yet" in msg
    calls.update(n=0, stop_at=2)
    with pytest.raises(Interrupted) as second:
        _run(tmp_path, "cc", method="trivial", dataset="materials", limit=4, batch_size=2)
    assert f"2 of 4 images are finished and kept in {tmp_path / 'cc'}" in str(second.value)
    assert "joinbench run --method trivial" in str(second.value)  # the command that resumes it
    monkeypatch.setattr(entry.factory, "decompose", original)
    d = _run(tmp_path, "cc", method="trivial", dataset="materials", limit=4, batch_size=2)
    timing = json.loads((d / "summary.json").read_text())["timing"]
    ledger = json.loads((d / "invocations.json").read_text())["invocations"]
    assert timing["invocations"] == len(ledger) == 3 and [i["images"] for i in ledger] == [0, 2, 2]
    assert timing["wall_seconds_all_invocations"] == pytest.approx(sum(i["wall_seconds"] for i in ledger))
    assert timing["wall_seconds_all_invocations"] > timing["wall_seconds_this_invocation"] > 0


def test_report_marks_best_within_a_dataset_only(tmp_path):
    a = _run(tmp_path, "m1", method="trivial", dataset="materials", limit=2)
    b = _run(tmp_path, "f1", method="trivial", dataset="faces", limit=2)
    rows = list(csv.DictReader(io.StringIO(render_report([a, b], "csv"))))
    assert {r["method"] for r in rows} == {"trivial [materials]", "trivial [faces]"}
    assert not any(r["best"] == "True" for r in rows)  # one run per dataset: nothing to compare


def test_latex_escape_is_single_pass():
    from joinbench.report import _latex_escape

    assert _latex_escape("predictions:~/a_b\\c{x}^") == (
        r"predictions:\textasciitilde{}/a\_b\textbackslash{}c\{x\}\textasciicircum{}")


def test_saturated_png_prediction_decodes_finitely():
    import torch

    from joinbench.registry import create_forward_model

    fm = create_forward_model("reinhard")
    lin = fm.decode_stored("shading", torch.tensor([250 / 255, 1.0]))
    assert lin.max().item() == pytest.approx(0.99 / (4 * 0.01), rel=1e-4)
    assert fm.decode_stored("albedo", torch.tensor([1.0])).item() == pytest.approx(1.0)


def test_sample_ids_are_known_without_loading(tmp_path):
    """Resume skips finished images by id before loading them: sample_id must agree with
    the loaded sample for every kind of dataset."""
    from joinbench.export import export_dataset
    from joinbench.plan import open_dataset

    export_dataset(open_dataset("faces", 16, 0), tmp_path / "f", limit=3, progress=False)
    for name in ("materials-shift", "real-faces", f"folder:{tmp_path / 'f'}"):
        ds = open_dataset(name, 16, 0)
        n = min(len(ds), 3)
        assert [ds.sample_id(i) for i in range(n)] == [ds[i].id for i in range(n)], name
