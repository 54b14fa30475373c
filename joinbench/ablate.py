"""``joinbench ablate``: the variants of a spec on one dataset, as one table in the paper's form.

Rows are variants (a registered method with ``set`` overrides, see :mod:`joinbench.spec`),
columns per-component MSE / SSIM / LPIPS and the re-render with 95% bootstrap intervals, the
best per column marked, and one generated sentence per comparison telling whether each
paired difference lies outside its 95% interval (:mod:`joinbench.paired`). Runs are planned,
reused and resumed as every suite's (:mod:`joinbench.suite`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .paired import comparison_sentence, component_title, paired_differences
from .plan import run_device, slug
from .spec import AblationSpec, check_spec, load_spec
from .suite import (RunOutcome, SuiteSettings, check_common, check_out, environment_line, finite, images_text,
                    per_image_values, plan_suite_run, planned_code, results_frames, run_plans, runs_section,
                    suite_code, suite_dataset, table_markdown)


@dataclass
class AblationSettings:
    """``joinbench ablate``: one dataset, one spec (None: the shipped default)."""

    dataset: str
    spec: str | Path | None = None
    limit: int | None = None
    batch_size: int = 16
    device: str = "auto"
    resolution: int = 64
    seed: int = 0
    out: Path | None = None  # default runs/ablate/<spec>-<dataset>
    overrides: dict[str, str] = field(default_factory=dict)  # --set for every variant, under its own set
    metrics: tuple[str, ...] | None = None  # --metrics: over the spec's; neither: the dataset's default
    progress: bool = True
    command: str = ""  # recorded at the top of ablation.md
    check_only: bool = False  # validate and plan, run nothing
    runs_from: str | None = None  # re-render from the finished runs made at this commit (see suite.runs_code)


def plan_ablation(settings: AblationSettings):
    """Parse and check the spec and the options, then plan every variant's run (nothing runs).
    Returns (spec, plans, output folder, distributed context, device, dataset)."""
    from . import distributed

    spec = load_spec(settings.spec)
    check_spec(spec, settings.overrides)
    common = SuiteSettings(limit=settings.limit, batch_size=settings.batch_size, device=settings.device,
                           resolution=settings.resolution, seed=settings.seed,
                           metrics=settings.metrics if settings.metrics is not None else spec.metrics,
                           progress=settings.progress)
    check_common(common)
    dataset = suite_dataset(settings.dataset, common)
    ctx = distributed.init(settings.device)
    if (settings.metrics is None and spec.metrics and dataset.benchmark_metrics and not dataset.keeps_harness_metrics
            and not set(spec.metrics) & set(dataset.benchmark_metrics) and ctx.is_main):
        print(f"note: {settings.dataset} is scored by {','.join(dataset.benchmark_metrics)} in the literature, but the spec "
              f"names {','.join(spec.metrics)}; pass --metrics {','.join(dataset.benchmark_metrics)} to score those.")
    device = run_device(settings.device)
    out = Path(settings.out) if settings.out else Path("runs") / "ablate" / f"{slug(spec.stem, 48)}-{slug(settings.dataset, 48)}"
    check_out(out)
    code = suite_code(out, settings.runs_from)
    plans = [plan_suite_run(v.name, v.method, {**settings.overrides, **v.set}, settings.dataset, dataset, device,
                            common, out, code) for v in spec.variants]
    return spec, plans, out, ctx, device, dataset


def run_ablation(settings: AblationSettings) -> Path:
    """Run (or reuse) every variant of the spec on the dataset and write ``ablation.md``,
    ``.csv``, ``.json`` and ``.tex`` into the output folder, which is returned."""
    from .env import write_atomic

    t0 = time.perf_counter()
    spec, plans, out, ctx, device, dataset = plan_ablation(settings)
    outcomes = run_plans(plans, ctx, out, settings.check_only, settings.runs_from)
    if outcomes is None:
        return out
    report = ablation_report(spec, settings, outcomes, dataset, ctx, device, planned_code(plans), time.perf_counter() - t0)
    write_atomic(out / "ablation.md", report["md"])
    write_atomic(out / "ablation.csv", report["csv"])
    write_atomic(out / "ablation.tex", report["latex"])
    write_atomic(out / "ablation.json", json.dumps(report["json"], indent=2, sort_keys=False, default=str) + "\n")
    return out


def ablation_report(spec: AblationSpec, settings: AblationSettings, outcomes: list[RunOutcome], dataset, ctx,
                    device, code: dict[str, str], wall: float) -> dict[str, Any]:
    """The ablation table (md, csv, latex) and everything behind it (json)."""
    import pandas as pd

    from .report import _latex
    from .tables import Scoring

    labels = [o.plan.label for o in outcomes]
    summaries = [o.summary for o in outcomes]
    metrics = outcomes[0].plan.metrics  # --metrics, the spec's, or the dataset's default
    frame, ci, best, directions = results_frames(labels, summaries, metrics)
    n = outcomes[0].plan.images
    ids = {dataset.sample_id(i) for i in range(n)}
    values = {o.plan.label: per_image_values(o.plan.run_dir, ids) for o in outcomes}
    comparisons = []
    for v in spec.variants:
        if v.baseline is None:
            continue
        diffs = paired_differences(values[v.name], values[v.baseline], list(frame.columns), directions)
        comparisons.append({"variant": v.name, "baseline": v.baseline, "group": v.group,
                            "sentence": comparison_sentence(v.name, v.baseline, diffs),
                            "differences": [d.__dict__ for d in diffs]})
    groups = [spec.variant(l).group for l in labels]
    table = table_markdown(frame, ci, best, directions, [("variant", labels), ("group", groups)])
    md = [f"# {spec.title} on {settings.dataset}", "",
          f"Made with `{settings.command or 'the Python API (joinbench.ablate.run_ablation)'}` from {spec.source}.", "",
          environment_line(ctx, device, code, wall, outcomes), ""]
    if spec.description:
        md += [spec.description.strip(), ""]
    scoring = Scoring.of(frame.columns)  # the caption describes the metrics scored, from their declarations
    md += [" ".join(filter(None, [
        f"Each cell: mean over the {images_text(n)} of `{settings.dataset}` at {settings.resolution} px, seed "
        f"{settings.seed}, with its {scoring.averages()}; {scoring.arrows((False, True))}; the best of each "
        "column is in bold (ties all bold).", scoring.suite_caption("variant")])), "", table, ""]
    if comparisons:
        md += ["## Comparisons", "",
               "Each variant against its baseline, image by image: the mean difference (variant − baseline) with "
               "its 95% paired bootstrap interval. A difference counts as better or worse only when it lies "
               "outside the interval, i.e. the interval excludes 0; otherwise this test set cannot tell the two apart.",
               ""]
        md += [f"- {c['sentence']}" for c in comparisons] + [""]
    md += runs_section(outcomes)
    # CSV: the table in long form, each cell with its comparison against the variant's baseline
    diff_of = {(c["variant"], d["component"], d["metric"]): d for c in comparisons for d in c["differences"]}
    rows = []
    for o in outcomes:
        v = spec.variant(o.plan.label)
        for col in frame.columns:
            d = diff_of.get((v.name, *col), {})
            mean = frame.loc[v.name, col]
            rows.append({"variant": v.name, "group": v.group, "method": v.method,
                         "settings": " ".join(f"{k}={val}" for k, val in o.plan.overrides.items()),
                         "component": col[0], "metric": col[1], "higher_is_better": directions.get(col[1], False),
                         "mean": "" if pd.isna(mean) else mean, "ci_low": ci.loc[v.name, col][0],
                         "ci_high": ci.loc[v.name, col][1], "best": bool(best.loc[v.name, col]),
                         "baseline": v.baseline or "", "diff": d.get("diff", ""), "diff_ci_low": d.get("ci_low", ""),
                         "diff_ci_high": d.get("ci_high", ""), "verdict": d.get("verdict", "")})
    latex = _latex(frame, ci, best, directions, summaries, f"{spec.title} on {settings.dataset}")
    data = {
        "title": spec.title, "dataset": settings.dataset, "command": settings.command, "spec_source": spec.source,
        "spec": spec.text, "code": code, "wall_seconds": wall, "images": n, "resolution": settings.resolution,
        "seed": settings.seed, "metrics": list(metrics),
        "variants": [{"name": o.plan.label, "group": spec.variant(o.plan.label).group, "method": o.plan.method_name,
                      "set": o.plan.overrides, "baseline": spec.variant(o.plan.label).baseline,
                      "description": spec.variant(o.plan.label).description,
                      "run_dir": str(o.plan.run_dir), "reused": o.reused, "command": o.plan.command,
                      "results": {c: {m: o.summary["results"].get(c, {}).get(m) for m in metrics}
                                  for c in o.summary["results"]}} for o in outcomes],
        "comparisons": comparisons,
        "table": {f"{component_title(c)} {m}": {l: {"mean": frame.loc[l, (c, m)], "ci": list(ci.loc[l, (c, m)]),
                                                      "best": bool(best.loc[l, (c, m)])} for l in labels}
                  for c, m in frame.columns},
    }
    return {"md": "\n".join(md) + "\n", "csv": pd.DataFrame(rows).to_csv(index=False), "latex": latex,
            "json": finite(data)}


__all__ = ["AblationSettings", "ablation_report", "plan_ablation", "run_ablation"]
