"""The planner (joinbench.plan): one place builds a run, and its reuse keys do not move.

The committed reference reports (reports/ablation-cpu, compare-cpu, join-variants-cpu) name
every run folder they were made from, ``runs/ref-cpu/runs/<method>-<dataset>-<hash of the
reuse key>``, made at commit 73dc730. ``RUNS_FROM=73dc730 bash reports/make_reference_cpu.sh``
re-renders them only if today's planner gives every one of those runs the same key: the tests
here plan each command the reports name and compare the folder, and re-render one report part
from a run made under that key without computing anything.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch

from joinbench.errors import JoinbenchError
from joinbench.method import parse_set_options
from joinbench.plan import RunSettings, open_dataset, plan_run, prepare_method
from joinbench.suite import SuiteSettings, plan_suite_run

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_CODE = {"commit": "73dc730704cafea41e19c95dbad48c2d5413e369", "joinbench": "0.1.0"}
CPU = torch.device("cpu")


def reference_commands() -> list[str]:
    """Every `joinbench run ... --out runs/ref-cpu/runs/...` line of the committed reports."""
    found = set()
    for report in sorted((ROOT / "reports").glob("*/*.md")):
        found |= set(re.findall(r"`(joinbench run [^`]*--out runs/ref-cpu/runs/[^`]*)`", report.read_text()))
    return sorted(found)


def _options(command: str) -> tuple[dict[str, str], list[str]]:
    args, opts, sets = shlex.split(command)[2:], {}, []
    for flag, value in zip(args[::2], args[1::2]):
        if flag == "--set":
            sets.append(value)
        else:
            opts[flag] = value
    return opts, sets


def _suite_plan(command: str, code=REFERENCE_CODE):
    opts, sets = _options(command)
    common = SuiteSettings(limit=int(opts["--limit"]), batch_size=int(opts["--batch-size"]), device=opts["--device"],
                           resolution=int(opts["--resolution"]), seed=int(opts["--seed"]),
                           metrics=tuple(opts["--metrics"].split(",")), progress=False)
    ds = open_dataset(opts["--dataset"], common.resolution, common.seed)
    return opts, plan_suite_run("x", opts["--method"], parse_set_options(sets), opts["--dataset"], ds, CPU, common,
                                Path("runs/ref-cpu"), code)


def test_committed_reference_runs_keep_their_reuse_keys():
    commands = reference_commands()
    assert len(commands) >= 80  # 9 + 9 ablation variants x 4 sets, 4 + 5 compared methods x 4-6 sets
    wrong = []
    for command in commands:
        opts, plan = _suite_plan(command)
        if str(plan.run_dir) != opts["--out"] or plan.command != command:
            wrong.append(f"{opts['--out']} -> {plan.run_dir}")
    assert not wrong, f"{len(wrong)} reference runs would no longer be found: {wrong[:3]}"


def test_reference_report_rerenders_from_a_run_under_its_recorded_key(tmp_path, monkeypatch):
    """`compare --runs-from 73dc730` over a folder holding a run made under the reference key
    finds it where the committed report says and renders the report without computing."""
    import joinbench.runner as runner
    import joinbench.suite as suite
    from joinbench.compare import CompareSettings, run_comparison

    import dataclasses

    command = next(c for c in reference_commands() if "--method trivial --dataset materials " in c)
    opts, _ = _suite_plan(command)
    out = tmp_path / "ref-cpu"
    settings = CompareSettings(datasets=("materials",), methods=("trivial",), limit=2, device="cpu",
                               metrics=("mse", "ssim", "lpips"), out=out, grid_images=1, progress=False, command="test")
    # make the run as commit 73dc730 made it (its key names that commit) ...
    monkeypatch.setattr(suite, "code_version", lambda: dict(REFERENCE_CODE))
    run_comparison(settings)
    monkeypatch.undo()
    assert [p.name for p in (out / "runs").iterdir()] == [Path(opts["--out"]).name]  # the report's folder
    # ... then, with this code, re-render from it: found, reused, nothing computed
    monkeypatch.setattr(runner, "run_benchmark", lambda p: pytest.fail(f"{p.method_name} recomputed"))
    data = json.loads((run_comparison(dataclasses.replace(settings, runs_from="73dc730")) / "compare.json").read_text())
    entry = data["datasets"]["materials"]["methods"]["trivial"]
    assert entry["reused"] and entry["command"].replace(str(out), "runs/ref-cpu") == command and data["code"]["commit"] == REFERENCE_CODE["commit"]


def test_one_plan_is_what_runs(tmp_path, monkeypatch):
    """The runner runs the planned method object itself: its final config is the plan's, and
    the plan names the effective limit, the folder and the command that remakes it."""
    from joinbench.runner import run_benchmark

    full = plan_run(RunSettings(method="retinex", dataset="materials", resolution=16, device="cpu"))
    assert full.images == 100 and full.limit is None and str(full.run_dir).startswith("runs/")
    plan = plan_run(RunSettings(method="retinex", dataset="materials", resolution=16, device="cpu", limit=2,
                                metrics=("mse",), overrides={"gray_threshold": "0.1"}, out=tmp_path / "r", progress=False))
    method = plan.method
    assert plan.config["gray_threshold"] == 0.1 and plan.images == 2
    assert plan.command.startswith("joinbench run --method retinex --dataset materials") and "--set gray_threshold=0.1" in plan.command
    assert plan.key["commit"] and plan.key["images"] == 2 and plan.identity["method_config"] == plan.config
    seen = []
    original = type(method).decompose_batch
    monkeypatch.setattr(type(method), "decompose_batch", lambda self, batch: (seen.append(self), original(self, batch))[1])
    run_benchmark(plan)
    assert seen and all(m is method for m in seen) and plan.method is None  # the runner let it go
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["environment"]["command"] == plan.command and summary["run"]["method_kind"] == "classical"


def test_cpu_plan_applies_and_announces_the_cpu_settings():
    plan = plan_run(RunSettings(method="join", dataset="faces-shift", device="cpu", overrides={"pti_steps": "7"}))
    cfg = plan.config
    assert cfg["prior"] == "faces" and cfg["steps"] == 150 and cfg["pti_steps"] == 7 and cfg["pti_disc_every"] == 4
    assert plan.limit == 2 and plan.images == 2 and "--limit 2" in plan.command
    cpu_note, limit_note = plan.notes
    assert cpu_note.startswith("join on CPU: --set steps=150 --set pti_disc_every=4 (a quicker, rougher run;")
    assert "--set steps=1000 --set pti_disc_every=1, which a GPU runs" in cpu_note
    assert limit_note.startswith("join on CPU: scoring the first 2 of 100 test images")
    # without PTI the PTI settings are applied (one config per device) but not announced
    nopti = plan_run(RunSettings(method="join-nopti", dataset="materials", device="cpu", limit=1))
    assert nopti.config["pti_steps"] == 60 and nopti.notes == [
        "join-nopti on CPU: --set steps=150 (a quicker, rougher run; the defaults are --set steps=1000, which a GPU runs)"]
    # a domain the user set is kept; a dataset without a domain keeps the default
    pinned, _ = prepare_method("join-s1", {"prior": "materials"}, open_dataset("real-faces", 64, 0), CPU)
    assert pinned.config.prior == "materials"


def test_method_contracts_are_declared():
    from joinbench.method import METHOD_KINDS, Method
    from joinbench.registry import METHODS, create_method

    kinds = {n.split(":")[0]: METHODS.get(n)[0].factory.kind for n, _ in METHODS.describe()}
    assert set(kinds.values()) <= set(METHOD_KINDS)
    assert kinds["unet"] == "feed-forward" and kinds["join"] == kinds["join-s1"] == "optimisation"
    assert kinds["retinex"] == kinds["trivial"] == "classical" and kinds["predictions"] == "adapter"
    assert create_method("join-s1").needs_grad and not create_method("unet").needs_grad
    with pytest.raises(TypeError, match="kind must be one of"):
        type("Undeclared", (Method,), {})
    m = create_method("unet")
    assert m.device_settings(CPU) == {} and m.prepare(open_dataset("faces-shift", 16, 0), CPU) == {}
    assert m.config.dataset == "faces"
    j = create_method("join", steps="5")
    before = j.config
    assert j.device_settings(CPU) == {"pti_steps": 60, "pti_disc_every": 4} and j.config is before  # pure
    assert j.device_settings(torch.device("meta")) == {}
    # a setting added after runs were filed stays out of their identity at its default
    assert "cuda_graphs" not in create_method("join-s1").describe()["config"]
    assert create_method("join-s1", cuda_graphs="false").describe()["config"]["cuda_graphs"] is False


def test_dataset_contracts_are_declared(tmp_path):
    from joinbench.datasets.base import domain_of, known_domains
    from joinbench.registry import DATASETS, create_dataset

    assert known_domains() == ("faces", "materials")
    assert [domain_of(n) for n in ("materials", "faces-shift", "real-faces", "folder:x")] == \
        ["materials", "faces", "faces", None]
    for name, _ in DATASETS.describe():
        if name.endswith(":PATH"):
            continue
        ds = create_dataset(name, resolution=64, seed=3)  # every factory takes (resolution, seed)
        assert ds.domain is None or ds.domain in known_domains(), name
    for name in ("materials", "faces-shift", "real-materials"):
        ds = create_dataset(name, resolution=16, seed=3)
        assert ds.domain == domain_of(name) and ds.fingerprint() is None, name
    from joinbench.export import export_dataset

    export_dataset(open_dataset("materials", 16, 0), tmp_path / "f", limit=1, progress=False)
    folder = create_dataset(f"folder:{tmp_path / 'f'}", resolution=16, seed=3)
    assert folder.domain is None and len(folder.fingerprint()) == 64


def test_bad_plans_fail_in_one_line():
    for kw, match in ((dict(batch_size=0), "--batch-size must be at least 1"), (dict(limit=0), "--limit must be"),
                      (dict(metrics=("lpipz",)), "Did you mean 'lpips'"), (dict(grid_images=-1), "--grid-images")):
        with pytest.raises(JoinbenchError, match=match):
            plan_run(RunSettings(method="trivial", dataset="materials", resolution=16, device="cpu", **kw))


def test_commit_of_an_uncommitted_tree_names_its_diff(tmp_path):
    """Results made from local changes (runs, shipped weights sidecars) record which changes:
    ``<sha>+dirty.<sha256 of git diff HEAD>``; regenerated reports/ do not count."""
    import hashlib
    import subprocess

    from joinbench.env import git_commit

    git = lambda *a: subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *a], cwd=tmp_path,
                                    check=True, capture_output=True).stdout
    git("init", "-q")
    (tmp_path / "reports").mkdir()
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "reports" / "r.md").write_text("old\n")
    git("add", ".")
    git("commit", "-qm", "x")
    sha = git("rev-parse", "HEAD").decode().strip()
    assert git_commit(tmp_path) == sha
    (tmp_path / "reports" / "r.md").write_text("new\n")
    assert git_commit(tmp_path) == sha  # a regenerated report is not a code change
    (tmp_path / "code.py").write_text("a = 2\n")
    first = git_commit(tmp_path)
    diff = git("diff", "HEAD", "--binary", "--", ":(top)", ":(top,exclude)reports")
    assert first == f"{sha}+dirty.{hashlib.sha256(diff).hexdigest()[:12]}"
    (tmp_path / "code.py").write_text("a = 3\n")
    assert git_commit(tmp_path) not in (first, sha)  # other changes, another commit string


def test_device_line_counts_cores_and_threads(monkeypatch):
    import joinbench.env as env

    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(env.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(env.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(env, "physical_cores", lambda: 4)
    monkeypatch.setattr(env.platform, "processor", lambda: "x86_64")
    assert env.device_name(CPU) == "cpu (x86_64, 4 cores, 8 logical CPUs, 2 usable, torch 1 thread)"
    monkeypatch.setattr(env.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(env, "physical_cores", lambda: 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert env.device_name(CPU) == "cpu (x86_64, 8 cores, torch 8 threads)"
