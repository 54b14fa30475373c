"""Summary statistics and tables: per-image records -> means with bootstrap intervals,
one run's table, and multi-run comparison tables (Markdown, LaTeX, CSV, HTML)."""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pandas as pd

COMPONENT_ORDER = ("albedo", "shading", "specular", "image")
# Column order: the authors' encoded-space metrics, then the field's linear ones.
METRIC_ORDER = ("mse", "psnr", "ssim", "lpips", "lpips-vgg", "si-mse", "si-lmse", "lmse", "dssim")


def metric_rank(name: str) -> tuple[int, str]:
    return (METRIC_ORDER.index(name) if name in METRIC_ORDER else len(METRIC_ORDER), name)
BOOTSTRAP_SAMPLES = 2000


def bootstrap_ci(values: np.ndarray, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (seeded, so tables are reproducible)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return (math.nan, math.nan)
    if len(values) == 1:
        return (float(values[0]), float(values[0]))
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(BOOTSTRAP_SAMPLES, len(values)), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def geometric_summary(values: np.ndarray) -> tuple[float, float, float]:
    """(geometric mean, 95% interval) of positive values, the interval bootstrapped on the logs
    (the MIT benchmark averages LMSE over images this way). A value of 0 makes the mean 0."""
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    if (values <= 0).any():
        return (0.0, math.nan, math.nan) if (values >= 0).all() else (math.nan, math.nan, math.nan)
    logs = np.log(values)
    lo, hi = bootstrap_ci(logs)
    return float(np.exp(logs.mean())), float(np.exp(lo)), float(np.exp(hi))


@functools.lru_cache(maxsize=None)
def metric_declaration(name: str):
    """The registered metric ``name`` as it declares itself (protocol, aggregate), or None for a
    name the registry does not know (e.g. a run made by other code)."""
    from .errors import UnknownNameError
    from .registry import create_metric

    try:
        return create_metric(name)
    except UnknownNameError:
        return None


def metric_heading(name: str) -> str:
    """A table heading: the metric's name and, for a benchmark metric, the protocol it follows
    (``whdr (δ=0.10, linear)``), so no number appears without its protocol."""
    m = metric_declaration(name)
    return f"{name} ({m.protocol})" if m is not None and m.protocol else name


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Long format: one row per (id, component, metric, value); errors dropped."""
    rows = [
        {"id": r["id"], "component": r["component"], "metric": k, "value": v}
        for r in records if not r.get("error")
        for k, v in r.get("metrics", {}).items()
    ]
    return pd.DataFrame(rows, columns=["id", "component", "metric", "value"])


def summarise_records(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{component: {metric: {mean, ci_low, ci_high, n}}}, deduplicated by image id. ``mean`` is
    the arithmetic mean, or the geometric one for a metric that declares ``aggregate = "geometric"``."""
    df = records_frame(records).drop_duplicates(subset=["id", "component", "metric"], keep="last")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (comp, metric), group in df.groupby(["component", "metric"], sort=False):
        vals = group["value"].astype(float).to_numpy()
        vals = vals[~np.isnan(vals)]  # NaN: not scorable (e.g. empty mask); +inf (PSNR of a perfect match) counts
        declared = metric_declaration(metric)
        if declared is not None and declared.aggregate == "geometric":
            mean, lo, hi = geometric_summary(vals)
        elif np.isinf(vals).any():
            mean = float(vals.mean())
            lo = hi = mean if np.isinf(vals).all() else math.nan
        else:
            mean = float(vals.mean()) if len(vals) else math.nan
            lo, hi = bootstrap_ci(vals)
        out.setdefault(comp, {})[metric] = {"mean": mean, "ci_low": lo, "ci_high": hi, "n": int(len(vals))}
    return {c: out[c] for c in sorted(out, key=lambda c: COMPONENT_ORDER.index(c) if c in COMPONENT_ORDER else 99)}


def fmt(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "–" if x is None or math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 100:
        return f"{x:.1f}"
    if a >= 0.01:
        return f"{x:.4f}"
    return f"{x:.2e}"


def arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def run_table_markdown(summary: dict[str, Any]) -> str:
    """One run: rows = components, columns = metrics, 'mean [95% CI]'."""
    from tabulate import tabulate

    run = summary["run"]
    results = summary["results"]
    scored = {m for vals in results.values() for m in vals}  # e.g. no linear metrics without ground truth
    metrics = {m: run["metrics"][m] for m in sorted(run["metrics"], key=metric_rank) if m in scored}
    headers = ["component"] + [f"{metric_heading(m)} {arrow(info['higher_is_better'])}" for m, info in metrics.items()]
    rows = []
    for comp, vals in results.items():
        row = [comp]
        for m in metrics:
            v = vals.get(m)
            row.append("" if v is None else f"{fmt(v['mean'])} [{fmt(v['ci_low'])}, {fmt(v['ci_high'])}]")
        rows.append(row)
    n = max((v["n"] for c in results.values() for v in c.values()), default=0)
    head = (
        f"# {run['method']} on {run['dataset']}\n\n"
        f"{n} images at {run['resolution']} px, forward model `{run['forward_model']}`, seed {run['seed']}, "
        f"device {summary['environment']['device_name']}, commit {summary['environment']['commit']}.\n"
        f"Mean over images with a 95% bootstrap interval; ↑ higher is better, ↓ lower is better. "
        f"Encoded-space metrics (mse, psnr, ssim, lpips) compare display-space components as the JoIN "
        f"authors do; si-mse, si-lmse, lmse and dssim compare linear components. The `image` row compares "
        f"the method's re-render with the input.\n\n"
    )
    if summary.get("failed_images"):
        head += f"Failed images ({len(summary['failed_images'])}): {', '.join(summary['failed_images'][:10])}\n\n"
    return head + tabulate(rows, headers=headers, tablefmt="github") + "\n"


def run_label(run: dict[str, Any]) -> str:
    """A run's row name: the method, with its overrides when it has any."""
    label = run["method"]
    if run.get("overrides"):
        label += " (" + ", ".join(f"{k}={v}" for k, v in sorted(run["overrides"].items())) + ")"
    return label


def comparison_frame(summaries: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, bool]]:
    """Rows = runs, columns = (component, metric): the means, their 95% intervals, and each
    metric's direction. Components in COMPONENT_ORDER, metrics in METRIC_ORDER."""
    means: dict[str, dict] = {}
    cis: dict[str, dict] = {}
    directions: dict[str, bool] = {}
    several = len({s["run"]["dataset"] for s in summaries}) > 1
    for s in summaries:
        label = base = run_label(s["run"]) + (f" [{s['run']['dataset']}]" if several else "")
        k = 2
        while label in means:
            label, k = f"{base} #{k}", k + 1
        means[label] = {(c, m): v["mean"] for c, vals in s["results"].items() for m, v in vals.items()}
        cis[label] = {(c, m): (v["ci_low"], v["ci_high"]) for c, vals in s["results"].items() for m, v in vals.items()}
        for metric, info in s["run"]["metrics"].items():
            directions.setdefault(metric, info["higher_is_better"])
    comp_rank = lambda c: COMPONENT_ORDER.index(c) if c in COMPONENT_ORDER else len(COMPONENT_ORDER)
    cols = sorted({c for r in means.values() for c in r}, key=lambda c: (comp_rank(c[0]), metric_rank(c[1])))
    index = pd.MultiIndex.from_tuples(cols, names=["component", "metric"])
    frame = pd.DataFrame([[r.get(c, math.nan) for c in cols] for r in means.values()], index=list(means), columns=index)
    ci = pd.DataFrame([[r.get(c, (math.nan, math.nan)) for c in cols] for r in cis.values()], index=list(cis), columns=index)
    return frame, ci, directions


def best_mask(frame: pd.DataFrame, directions: dict[str, bool], groups: pd.Series | None = None) -> pd.DataFrame:
    """True where a cell is the best of its column (ties all marked), given each metric's
    direction. With ``groups`` (row -> dataset), best is decided within each group only; a
    cell is marked only when at least two rows of its group have a value to compare."""
    best = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    groups = groups if groups is not None else pd.Series("", index=frame.index)
    for _, rows in frame.groupby(groups.reindex(frame.index), sort=False):
        for col in rows.columns:
            vals = rows[col].astype(float)
            if vals.notna().sum() < 2:
                continue
            target = vals.max() if directions.get(col[1], False) else vals.min()
            best.loc[rows.index, col] = np.isclose(vals, target, rtol=1e-9, atol=0) & vals.notna()
    return best
