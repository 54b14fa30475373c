"""Summary statistics and tables: per-image records -> means with bootstrap intervals,
one run's table, and multi-run comparison tables (Markdown, LaTeX, CSV, HTML)."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
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


def spoken_list(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _verb(items: list[str], plural: str, singular: str) -> str:
    return plural if len(items) > 1 else singular


@dataclass
class Scoring:
    """What a report's numbers are, read from the columns it holds and each metric's declared
    contract (:class:`joinbench.metrics.Metric`: space, direction, aggregate, reference), so
    a caption describes only the metrics that were scored: an ``iiw:`` report scored by WHDR
    says nothing about MSE or a re-render it does not hold."""

    encoded: list[str] = field(default_factory=list)  # encoded-space metrics that scored a layer
    linear: list[str] = field(default_factory=list)  # linear-space metrics (layers only)
    reference: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)  # annotations -> (metrics, layers)
    image: list[str] = field(default_factory=list)  # metrics that scored the re-render
    geometric: list[str] = field(default_factory=list)  # averaged over images geometrically
    directions: set[bool] = field(default_factory=set)  # higher_is_better of the scored metrics

    @classmethod
    def of(cls, columns, recorded: dict[str, dict[str, Any]] | None = None) -> "Scoring":
        """From (component, metric) columns; ``recorded``: a run's ``summary["run"]["metrics"]``
        (the contract as the run recorded it), else the registry's declaration."""
        s = cls()
        layers: dict[str, set[str]] = {}
        for comp, metric in columns:
            layers.setdefault(metric, set())
            if comp == "image":
                s.image.append(metric)
            else:
                layers[metric].add(comp)
        for metric in sorted(layers, key=metric_rank):
            declared = metric_declaration(metric)
            info = (recorded or {}).get(metric, {})
            space = info.get("space", declared.space if declared is not None else "encoded")
            hib = info.get("higher_is_better", declared.higher_is_better if declared is not None else False)
            s.directions.add(bool(hib))
            if declared is not None and declared.aggregate == "geometric":
                s.geometric.append(metric)
            if not layers[metric]:
                continue
            if space == "encoded":
                s.encoded.append(metric)
            elif space == "linear":
                s.linear.append(metric)
            else:
                names, comps = s.reference.setdefault(getattr(declared, "reference", ""), ([], []))
                names.append(metric)
                comps.extend(sorted(layers[metric] - set(comps), key=_component_rank))
        s.image = sorted(dict.fromkeys(s.image), key=metric_rank)
        return s

    def averages(self) -> str:
        """How the cells average over images (a metric may declare a geometric mean)."""
        if not self.geometric:
            return "95% bootstrap interval"
        return (f"95% bootstrap interval ({spoken_list(self.geometric)}: the geometric mean, its interval "
                f"bootstrapped on the logs)")

    def arrows(self, order: tuple[bool, ...]) -> str:
        return ", ".join(f"{arrow(h)} {'higher' if h else 'lower'} is better" for h in order if h in self.directions)

    def layer_clauses(self, encoded: str) -> list[str]:
        """One clause per metric space that scored a layer; ``encoded``: the encoded one's wording."""
        out = [encoded] if self.encoded and encoded else []
        if self.linear:
            out.append(f"{spoken_list(self.linear)} {_verb(self.linear, 'compare', 'compares')} linear components")
        for ref, (names, comps) in self.reference.items():
            out.append(f"{spoken_list(names)} {_verb(names, 'score', 'scores')} the {spoken_list(comps)} against "
                       f"the benchmark's own {ref + ' ' if ref else ''}annotations")
        if self.reference:
            out[-1] += " (each heading names its protocol)"
        return out

    def image_note(self) -> str:
        """The re-render's metrics, named when no layer clause already says they are encoded-space."""
        return "" if set(self.image) <= set(self.encoded) else f" by {spoken_list(self.image)} (encoded display space)"

    def run_caption(self) -> str:
        """The caption of one run's table."""
        text = f"Mean over images with a {self.averages()}" + (f"; {self.arrows((True, False))}." if self.directions else ".")
        clauses = self.layer_clauses(f"Encoded-space metrics ({', '.join(self.encoded)}) compare display-space "
                                     f"components as the JoIN authors do")
        if clauses:
            text += " " + "; ".join(clauses) + "."
        if self.image:
            text += f" The `image` row compares the method's re-render with the input{self.image_note()}."
        return text

    def suite_caption(self, who: str) -> str:
        """The caption of a suite's tables (``who``: "method" or "variant", a row of them)."""
        alone = not (self.linear or self.reference)
        clauses = self.layer_clauses("Components are compared in encoded display space (the JoIN authors' protocol)"
                                     + ("" if alone or not self.encoded else f" by {spoken_list(self.encoded)}"))
        if self.image:
            clauses.append(f"{'re-render' if clauses else 'Re-render'} compares each {who}'s re-rendered image with "
                           f"the input{self.image_note()}")
        return "; ".join(clauses) + "." if clauses else ""


def _component_rank(c: str) -> int:
    return COMPONENT_ORDER.index(c) if c in COMPONENT_ORDER else len(COMPONENT_ORDER)


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
    scoring = Scoring.of([(c, m) for c, vals in results.items() for m in vals if m in metrics], run["metrics"])
    head = (
        f"# {run['method']} on {run['dataset']}\n\n"
        f"{n} images at {run['resolution']} px, forward model `{run['forward_model']}`, seed {run['seed']}, "
        f"device {summary['environment']['device_name']}, commit {summary['environment']['commit']}.\n"
        f"{scoring.run_caption()}\n\n"
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
