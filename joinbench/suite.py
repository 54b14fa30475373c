"""Suites of runs -- ``joinbench ablate`` (:mod:`joinbench.ablate`) and ``joinbench compare``
(:mod:`joinbench.compare`): what both share.

Both validate everything (names, ``set`` keys and values, metrics, datasets) before running
anything, plan every run with :func:`joinbench.plan.plan_run` and run exactly those plans.
Finished work is reused: every run goes into a folder named from a hash of its reuse key
(method, resolved config, dataset, resolution, seed, effective limit, metrics, batch size,
joinbench commit and version), so a finished run is loaded instead of recomputed and an
interrupted one resumes (the runner resumes). ``--runs-from COMMIT`` keys the plans with an
older commit to re-render a report from old runs without computing. Runs go one after
another; under ``torchrun`` each run is sharded across the processes
(:mod:`joinbench.distributed`) and rank 0 writes the reports.

Here: the settings every run of a suite shares, planning and executing the runs, result
reuse, and the tables and provenance lines of the reports.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Interrupted, JoinbenchError
from .paired import component_title
from .plan import PlannedRun, RunSettings, code_version, open_dataset, plan_run
from .spec import DEFAULT_TABLE_METRICS

RUN_GRID_IMAGES = 8  # grid rows every run keeps (the runner's default), whatever a report shows
KEY_FILE = "reuse-key.json"


@dataclass
class SuiteSettings:
    """What every run of a suite shares (the commands' options)."""

    limit: int | None = None
    batch_size: int = 16
    device: str = "auto"
    resolution: int = 64
    seed: int = 0
    metrics: tuple[str, ...] | None = None  # None: each dataset's default (plan.run_metrics over the table's)
    progress: bool = True


@dataclass
class RunOutcome:
    plan: PlannedRun
    summary: dict[str, Any] | None  # rank 0 only
    reused: bool


# == planning ==================================================================================
def plan_suite_run(label: str, method: str, overrides: dict[str, str], dataset_name: str, dataset, device,
                   common: SuiteSettings, root: Path, code: dict[str, str]) -> PlannedRun:
    """One run of a suite, planned by the planner and keyed under ``root/runs``."""
    settings = RunSettings(method=method, dataset=dataset_name, limit=common.limit, batch_size=common.batch_size,
                           device=common.device, resolution=common.resolution, seed=common.seed,
                           overrides=dict(overrides), metrics=None if common.metrics is None else tuple(common.metrics),
                           grid_images=RUN_GRID_IMAGES, progress=common.progress)
    return plan_run(settings, dataset=dataset, device=device, root=root, code=code, label=label,
                    harness_metrics=DEFAULT_TABLE_METRICS)


def suite_dataset(name: str, common: SuiteSettings):
    return open_dataset(name, common.resolution, common.seed)


def check_common(common: SuiteSettings) -> None:
    from .registry import create_metric

    if common.batch_size < 1:
        raise JoinbenchError(f"--batch-size must be at least 1, got {common.batch_size}.")
    if common.limit is not None and common.limit < 1:
        raise JoinbenchError(f"--limit must be at least 1, got {common.limit} (leave it out for the whole split).")
    for m in common.metrics or ():
        create_metric(m)


def check_out(out: Path) -> None:
    """Before anything runs: the suite's --out must be (or become) a folder."""
    from .env import file_in_the_way

    blocker = file_in_the_way(out)
    if blocker is not None:
        raise JoinbenchError(f"--out {out}: {blocker} is a file; give a folder for the suite's runs and report.")


def suite_code(out: Path, runs_from: str | None) -> dict[str, str]:
    """The code version the plans are keyed with: this checkout's, or (``--runs-from``) the
    version of the finished runs under ``out`` made at that commit."""
    return runs_code(out, runs_from) if runs_from is not None else code_version()


def planned_code(plans: list[PlannedRun]) -> dict[str, str]:
    """The commit and version the runs were keyed with (the tree may move on while they run)."""
    return {k: plans[0].key[k] for k in ("commit", "joinbench")} if plans else code_version()


# == reuse =====================================================================================
def runs_code(out: Path, commit: str) -> dict[str, str]:
    """The code version (full commit, joinbench version) of the finished runs under ``out/runs``
    whose commit starts with ``commit``: ``--runs-from`` keys the plans with it, so a report made
    by newer code (a new table column, a new caveat sentence) is re-rendered from hours of old
    runs instead of recomputing them. Only finished runs are used (:func:`require_finished`)."""
    if not commit.strip():
        raise JoinbenchError("--runs-from needs a commit (a prefix of the one the runs were made at).")
    found: dict[str, dict[str, str]] = {}
    for key_path in sorted((out / "runs").glob(f"*/{KEY_FILE}")):
        try:
            key = json.loads(key_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        c = str(key.get("commit", ""))
        found.setdefault(c, {"commit": c, "joinbench": key.get("joinbench")})
    matches = [c for c in found if c.startswith(commit)]
    if len(matches) == 1:
        return found[matches[0]]
    seen = ", ".join(c[:12] for c in sorted(found)) or "none"
    why = "matches several commits" if matches else "matches no run"
    raise JoinbenchError(f"--runs-from {commit!r} {why} under {out / 'runs'} (commits of the runs there: {seen}); "
                         "give a longer or another commit, or --out the folder that holds those runs.")


def require_finished(plans: list[PlannedRun], ctx) -> None:
    """``--runs-from`` re-renders and never computes: fail before anything runs when a planned
    run has no finished result made at that commit (computing it now would file new numbers
    under an old commit)."""
    missing = [p.label for p in plans if finished_summary(p) is None] if ctx.is_main else []
    if ctx.broadcast(bool(missing)):
        raise JoinbenchError(f"--runs-from {plans[0].key['commit'][:12]} only re-renders finished runs, and "
                             f"{len(missing) or 'some'} of {len(plans)} have none made at that commit"
                             + (f" ({', '.join(missing)})" if missing else "")
                             + "; drop --runs-from to compute them with this code.")


def finished_summary(plan: PlannedRun) -> dict[str, Any] | None:
    """The summary of ``plan``'s folder when it holds the finished run (summary.json present,
    identity equal), else None (not started, or interrupted: the runner resumes it)."""
    from .report import load_summary

    key_path, summary_path = plan.run_dir / KEY_FILE, plan.run_dir / "summary.json"
    if not (key_path.is_file() and summary_path.is_file()):
        return None
    try:
        stored = json.loads(key_path.read_text())
    except json.JSONDecodeError:
        return None
    if stored != plan.key:
        raise JoinbenchError(f"{plan.run_dir} holds a run with another identity than its name says ({KEY_FILE} was "
                             "edited?); delete the folder to recompute it.")
    summary = load_summary(plan.run_dir)
    run = summary.get("run", {})
    same = (run.get("method") == plan.method_name and run.get("dataset") == plan.dataset_name
            and json.loads(json.dumps(run.get("method_config"), sort_keys=True, default=str)) == plan.key["method_config"]
            and run.get("images") == plan.images)
    return summary if same else None


def execute(plans: list[PlannedRun], ctx, where: Path) -> list[RunOutcome]:
    """Run the plans in order, each sharded across the job's processes, loading finished ones.
    Rank 0 decides what is finished and tells the others (they may not see its disk)."""
    from .env import write_json
    from .report import load_summary
    from .runner import run_benchmark

    outcomes = []
    for k, plan in enumerate(plans, start=1):
        summary = finished_summary(plan) if ctx.is_main else None
        if ctx.broadcast(summary is not None):
            print(f"[{k}/{len(plans)}] {plan.label}: reusing the finished run in {plan.run_dir}")
            plan.method = None
            outcomes.append(RunOutcome(plan, summary, True))
            continue
        print(f"[{k}/{len(plans)}] {plan.label}: {plan.command}")
        if ctx.is_main:
            write_json(plan.run_dir / KEY_FILE, plan.key)
        kept = (f"{len(outcomes)} earlier run(s) are finished and kept under {where}; rerun the same command to "
                "continue from here.")
        try:
            run_benchmark(plan)
        except JoinbenchError as exc:
            raise JoinbenchError(f"{plan.label} ({plan.method_name} on {plan.dataset_name}): {exc} ({kept})") from None
        except Interrupted as exc:
            raise Interrupted(f"{exc.args[0] if exc.args else 'interrupted'} ({kept})") from None
        summary = load_summary(plan.run_dir) if ctx.is_main else None
        outcomes.append(RunOutcome(plan, summary, False))
    return outcomes


def run_plans(plans: list[PlannedRun], ctx, out: Path, check_only: bool, runs_from: str | None) -> list[RunOutcome] | None:
    """What both suites do with their plans: ``--check`` shows them; ``--runs-from`` first makes
    sure every run is finished; then every plan is executed (or reused). Returns the outcomes
    on rank 0, None where no report is to be written (``--check``, other ranks)."""
    if check_only:
        show_plans(plans, ctx)
        return None
    if runs_from is not None:
        require_finished(plans, ctx)
    outcomes = execute(plans, ctx, out)
    return outcomes if ctx.is_main else None


def show_plans(plans: list[PlannedRun], ctx) -> None:
    """``--check``: each run, whether it is finished (and will be reused) and its command."""
    if ctx.is_main:
        for p in plans:
            state = "finished, will be reused" if finished_summary(p) else "to run"
            print(f"{p.label}: {state}: {p.command}")


# == tables and provenance =====================================================================
def results_frames(labels: list[str], summaries: list[dict[str, Any]], metrics: tuple[str, ...]):
    """(means, intervals, best, directions) with rows = ``labels`` and columns = (component,
    metric) for ``metrics`` only, components in the usual order with the re-render last."""
    from .tables import best_mask, comparison_frame

    frame, ci, directions = comparison_frame(summaries)  # rows in the order of summaries
    frame.index = ci.index = labels
    cols = [c for c in frame.columns if c[1] in metrics]
    comp_rank = {c: k for k, c in enumerate(dict.fromkeys(c for c, _ in frame.columns))}
    cols.sort(key=lambda c: (comp_rank[c[0]], metrics.index(c[1])))
    frame, ci = frame[cols], ci[cols]
    return frame, ci, best_mask(frame, directions), directions


def table_markdown(frame, ci, best, directions, first: list[tuple[str, list[str]]]) -> str:
    """A GitHub table: the ``first`` columns (header, values), then 'mean [95% CI]' per
    (component, metric), the best of each column in bold."""
    from tabulate import tabulate

    from .tables import arrow, fmt, metric_heading

    headers = [h for h, _ in first] + [f"{component_title(c)} {metric_heading(m)} {arrow(directions.get(m, False))}"
                                        for c, m in frame.columns]
    rows = []
    for k, label in enumerate(frame.index):
        row = [vals[k] for _, vals in first]
        for col in frame.columns:
            mean, (lo, hi) = frame.loc[label, col], ci.loc[label, col]
            if mean is None or (isinstance(mean, float) and math.isnan(mean)):
                row.append("–")
                continue
            cell = f"**{fmt(mean)}**" if best.loc[label, col] else fmt(mean)
            row.append(f"{cell} [{fmt(lo)}, {fmt(hi)}]")
        rows.append(row)
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def per_image_values(run_dir: Path, ids: set[str]) -> dict[tuple[str, str], dict[str, float]]:
    """{(component, metric): {image id: value}} of a run's scored images among ``ids``."""
    from .records import read_records

    out: dict[tuple[str, str], dict[str, float]] = {}
    for r in read_records(Path(run_dir) / "records.jsonl"):
        if r.get("error") or r["id"] not in ids:
            continue
        for m, v in r.get("metrics", {}).items():
            out.setdefault((r["component"], m), {})[r["id"]] = v
    return out


def environment_line(ctx, device, code: dict[str, str], wall: float, outcomes: list[RunOutcome]) -> str:
    from .env import device_name, versions

    v = versions()
    reused = sum(o.reused for o in outcomes)
    procs = f", {ctx.world_size} processes ({ctx.backend})" if ctx.active else ""
    now = code_version()["commit"]
    commit = f"Commit {code['commit']}"
    if code["commit"] != now:  # --runs-from: old numbers, this code's tables and sentences
        took = sum(o.summary.get("timing", {}).get("wall_seconds_this_invocation") or 0.0 for o in outcomes if o.summary)
        commit = (f"Runs made at commit {code['commit']} (their last invocations took {took:.0f} s together), "
                  f"this report rendered from them at commit {now} (--runs-from)")
    return (f"{commit}; device {device_name(device)}{procs}; joinbench {v.get('joinbench')}, "
            f"torch {v.get('torch')}, python {v.get('python')}; wall time {wall:.1f} s for this command "
            f"({reused} of {len(outcomes)} runs reused finished results, {len(outcomes) - reused} computed).")


def run_line(o: RunOutcome) -> str:
    env = o.summary["environment"]
    how = "reused" if o.reused else "computed now"
    wall = o.summary.get("timing", {}).get("wall_seconds_this_invocation")
    dist = env.get("distributed")
    procs = f" on {dist['world_size']} processes" if dist else ""
    return (f"**{o.plan.label}**: `{o.plan.command}` ({how}; {env['device_name']}{procs}, commit {env['commit']}"
            + (f", last invocation {wall:.1f} s" if wall is not None else "") + ")")


def runs_section(outcomes: list[RunOutcome]) -> list[str]:
    """The '## Runs' part of a report: every run folder with the command that remakes it."""
    return (["## Runs", "", "Every run folder is a normal run (`joinbench report` reads it); each command below "
             "remakes one alone.", ""] + [f"- {run_line(o)}" for o in outcomes])


def images_text(n: int) -> str:
    return f"{n} test image" + ("" if n == 1 else "s")


def finite(obj: Any) -> Any:
    """JSON without NaN/inf (null instead), so any JSON reader takes the file."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    import numpy as np

    if isinstance(obj, np.generic):
        return finite(obj.item())
    return obj


__all__ = ["KEY_FILE", "RUN_GRID_IMAGES", "RunOutcome", "SuiteSettings", "check_common", "check_out", "execute",
           "finished_summary", "per_image_values", "plan_suite_run", "require_finished", "results_frames",
           "runs_code", "show_plans", "suite_code", "table_markdown"]
