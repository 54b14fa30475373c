"""``joinbench compare``: methods x datasets, one report with a table and a figure per dataset.

Without ``--metrics`` each dataset is scored by its own default (:func:`joinbench.plan.run_metrics`):
a benchmark by its protocol (WHDR on ``iiw:``, ...), other datasets by the table's metrics.
Datasets without ground truth and without a benchmark protocol get the re-render metrics and
the figure (the layers are judged by eye). Runs are planned, reused and resumed as every suite's (:mod:`joinbench.suite`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import JoinbenchError, did_you_mean
from .plan import run_device, slug
from .spec import DEFAULT_TABLE_METRICS
from .suite import (RUN_GRID_IMAGES, RunOutcome, SuiteSettings, check_common, check_out, environment_line, finite,
                    images_text, plan_suite_run, planned_code, results_frames, run_plans, runs_section, suite_code,
                    suite_dataset, table_markdown)

DEFAULT_COMPARE_DATASETS = ("materials", "materials-shift", "faces", "faces-shift", "real-materials", "real-faces")
DEFAULT_COMPARE_METHODS = ("join", "unet", "color-retinex", "retinex", "trivial")


@dataclass
class CompareSettings(SuiteSettings):
    """``joinbench compare``: methods x datasets. The options every run shares (limit, batch
    size, device, resolution, seed, metrics, progress) are the suite's own fields, so the
    settings are what each run is planned from; pass them as keywords."""

    datasets: tuple[str, ...] = DEFAULT_COMPARE_DATASETS
    methods: tuple[str, ...] = DEFAULT_COMPARE_METHODS
    out: Path | None = None  # default runs/compare
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)  # method -> --set
    grid_images: int = 4  # images per dataset figure
    command: str = ""
    check_only: bool = False
    title: str = "Main comparison"  # heading of compare.md
    runs_from: str | None = None  # re-render from the finished runs made at this commit (see runs_code)


def parse_method_sets(items: list[str] | None, methods: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``["join:steps=200"]`` -> ``{"join": {"steps": "200"}}``; each method must be compared."""
    out: dict[str, dict[str, str]] = {}
    for item in items or []:
        head, eq, value = item.partition("=")
        method, colon, key = head.rpartition(":")
        if not eq or not colon or not method or not key.strip():
            raise JoinbenchError(f"--set expects METHOD:key=value for compare, got {item!r} (e.g. --set join:steps=200).")
        if method not in methods:
            raise JoinbenchError(f"--set {item!r}: {method!r} is not one of the compared methods.{did_you_mean(method, methods)} "
                                 f"Compared: {', '.join(methods)}.")
        out.setdefault(method, {})[key.strip()] = value.strip()
    return out


def plan_comparison(settings: CompareSettings):
    """Check every method (with its overrides), dataset and metric, then plan the runs
    (dataset-major, methods in the given order). Returns (plans by dataset, datasets, out, ctx, device)."""
    from . import distributed
    from .plan import check_scorable, run_metrics
    from .registry import create_method

    if not settings.datasets or not settings.methods:
        raise JoinbenchError("compare needs at least one dataset and one method (--datasets a,b --methods x,y).")
    for group, what in ((settings.datasets, "dataset"), (settings.methods, "method")):
        dup = sorted({x for x in group if group.count(x) > 1})
        if dup:
            raise JoinbenchError(f"--{what}s lists {', '.join(dup)} twice.")
    check_common(settings)  # the suite's shared options are the settings' own
    for m in settings.methods:
        create_method(m, **settings.overrides.get(m, {}))  # unknown names and settings fail here
    datasets = {d: suite_dataset(d, settings) for d in settings.datasets}
    for d, ds in datasets.items():
        check_scorable(d, ds, run_metrics(settings.metrics, ds, DEFAULT_TABLE_METRICS))
    ctx = distributed.init(settings.device)
    device = run_device(settings.device)
    out = Path(settings.out) if settings.out else Path("runs") / "compare"
    check_out(out)
    code = suite_code(out, settings.runs_from)
    plans = {d: [plan_suite_run(f"{m} on {d}", m, settings.overrides.get(m, {}), d, ds, device, settings, out, code)
                 for m in settings.methods] for d, ds in datasets.items()}
    return plans, datasets, out, ctx, device


def run_comparison(settings: CompareSettings) -> Path:
    """Run (or reuse) every method on every dataset and write ``compare.md`` (a table and a
    figure per dataset), ``compare.csv`` and ``compare.json``; returns the output folder."""
    from .env import write_atomic

    t0 = time.perf_counter()
    plans, datasets, out, ctx, device = plan_comparison(settings)
    flat = [p for ps in plans.values() for p in ps]
    outcomes = run_plans(flat, ctx, out, settings.check_only, settings.runs_from)
    if outcomes is None:
        return out
    md, rows, data = comparison_report(settings, outcomes, datasets, out, ctx, device, planned_code(flat),
                                       time.perf_counter() - t0)
    import pandas as pd

    write_atomic(out / "compare.md", md)
    write_atomic(out / "compare.csv", pd.DataFrame(rows).to_csv(index=False))
    write_atomic(out / "compare.json", json.dumps(finite(data), indent=2, default=str) + "\n")
    return out


def comparison_report(settings: CompareSettings, outcomes: list[RunOutcome], datasets: dict, out: Path, ctx, device,
                      code: dict[str, str], wall: float):
    """compare.md text, CSV rows and JSON data; writes one figure per dataset."""
    import pandas as pd

    from .benchmark_metrics import REFERENCE_SPACE
    from .registry import create_metric
    from .tables import Scoring

    md, columns = [], []  # the datasets' sections; every column they hold (the caption describes those only)
    rows, data = [], {"command": settings.command, "code": code, "wall_seconds": wall, "datasets": {}}
    for name, ds in datasets.items():
        group = [o for o in outcomes if o.plan.dataset_name == name]
        labels = [o.plan.method_name for o in group]
        frame, ci, best, directions = results_frames(labels, [o.summary for o in group], group[0].plan.metrics)
        columns += list(frame.columns)
        n = group[0].plan.images
        gt = ds.has_ground_truth
        refs = [m for m in group[0].plan.metrics if create_metric(m).space == REFERENCE_SPACE]
        if gt:
            note, heading = "", ""
        elif refs:
            note, heading = (f"No dense ground truth: the albedo is scored against this benchmark's own annotations "
                             f"({', '.join(refs)}), each column heading naming its protocol."), " (no dense ground truth)"
        else:
            note, heading = ("Without ground truth only the re-render is scored: it measures how well the "
                             "predicted layers recompose the photo, not whether they are right (a method can re-render "
                             "well by putting everything into one layer), so judge the layers in the figure."), " (no ground truth)"
        md += [f"## {name}{heading}", "", f"{images_text(n).capitalize()} at {settings.resolution} px, seed {settings.seed}. " + note, ""]
        md += [table_markdown(frame, ci, best, directions, [("method", labels)]), ""]
        fig = _comparison_figure(ds, group, out / "figures" / f"{slug(name, 48)}.png", settings.grid_images)
        if fig is not None:
            md += [f"![{name}: input, ground truth and each method's layers]({fig.relative_to(out).as_posix()})", ""]
        entry = {"images": n, "has_ground_truth": gt, "figure": None if fig is None else str(fig), "methods": {}}
        for o in group:
            entry["methods"][o.plan.method_name] = {"run_dir": str(o.plan.run_dir), "reused": o.reused,
                                               "command": o.plan.command}
            for col in frame.columns:
                mean = frame.loc[o.plan.method_name, col]
                cell = {"dataset": name, "method": o.plan.method_name, "component": col[0], "metric": col[1],
                        "higher_is_better": directions.get(col[1], False), "mean": "" if pd.isna(mean) else mean,
                        "ci_low": ci.loc[o.plan.method_name, col][0], "ci_high": ci.loc[o.plan.method_name, col][1],
                        "best": bool(best.loc[o.plan.method_name, col])}
                rows.append(cell)
                entry["methods"][o.plan.method_name].setdefault("results", []).append(cell)
        data["datasets"][name] = entry
    md += runs_section(outcomes)
    scoring = Scoring.of(columns)
    truth = "the input and ground truth" if any(ds.has_ground_truth for ds in datasets.values()) else "the input"
    head = [f"# {settings.title}", "", f"Made with `{settings.command or 'the Python API (joinbench.compare.run_comparison)'}`.", "",
            environment_line(ctx, device, code, wall, outcomes), "",
            " ".join(filter(None, [
                f"Each cell: mean over the test images with its {scoring.averages()}; {scoring.arrows((False, True))}; "
                "the best of each column in bold (ties all bold).", scoring.suite_caption("method"),
                f"Figures: per image, {truth}, then each method's re-render, albedo, shading and specular."])),
            ""]
    return "\n".join(head + md) + "\n", rows, data


def _comparison_figure(dataset, outcomes: list[RunOutcome], path: Path, n_images: int) -> Path | None:
    """Per image: a row with the input and the ground truth layers, then a row per method with
    its re-render, albedo, shading and specular (encoded display space), from each run's
    saved grid predictions."""
    import numpy as np
    import torch

    from .forward import COMPONENTS
    from .viz import grid_image, label_tile, save_image_atomic

    fm = dataset.forward_model
    size = max(64, dataset.resolution)
    rows = []
    for i in range(min(n_images, RUN_GRID_IMAGES, outcomes[0].plan.images)):
        sample = dataset[i]
        gts = [None if sample.component(c) is None else fm.encode(c, sample.component(c)) for c in COMPONENTS]
        rows.append([label_tile(f"{sample.id} input" + (", truth" if dataset.has_ground_truth else ""), size),
                     sample.image, *gts])
        for o in outcomes:
            path_i = o.plan.run_dir / ".grid" / f"{sample.id}.npz"
            if not path_i.is_file():
                rows.append([label_tile(o.plan.method_name, size)] + [None] * 4)
                continue
            pred = np.load(path_i)
            rows.append([label_tile(o.plan.method_name, size), torch.from_numpy(pred["rerender"]),
                         *[torch.from_numpy(pred[f"{c}_encoded"]) for c in COMPONENTS]])
    if not rows:
        return None
    save_image_atomic(grid_image(rows, ["", "image", "albedo", "shading", "specular"], cell=size), path)
    return path


__all__ = ["CompareSettings", "DEFAULT_COMPARE_DATASETS", "DEFAULT_COMPARE_METHODS", "comparison_report",
           "parse_method_sets", "plan_comparison", "run_comparison"]
