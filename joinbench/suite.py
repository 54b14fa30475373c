"""Suites of runs: ``joinbench ablate`` and ``joinbench compare``.

``ablate`` reads a declarative spec (TOML, see ``joinbench/specs/join.toml``; print it with
``joinbench ablate --print-spec``) naming variants -- a registered method plus optional
``set`` overrides, a ``group`` and a ``baseline`` to compare with -- and writes one table in
the paper's form (rows = variants, columns = per-component MSE / SSIM / LPIPS and the
re-render, best per column marked, 95% bootstrap intervals) plus one generated sentence
per comparison telling whether each difference lies outside its 95% paired-bootstrap
interval. ``compare`` runs methods x datasets and writes one report with a table and a
decomposition figure per dataset (datasets without ground truth: re-render metrics and
the figure).

Both validate everything (names, ``set`` keys and values, metrics, datasets) before
running anything, and reuse finished work: every run goes into a folder named from a hash
of what determines its numbers (method, resolved config, dataset, resolution, seed,
effective limit, metrics, batch size, joinbench commit and version), so a finished run is
loaded instead of recomputed and an interrupted one resumes (the runner resumes). Runs go
one after another; under ``torchrun`` each run is sharded across the processes
(:mod:`joinbench.distributed`) and rank 0 writes the reports.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import typer

from .errors import JoinbenchError, did_you_mean

DEFAULT_SPEC = "join"
SPEC_SUFFIX = ".toml"
SPEC_KEYS = ("title", "description", "baseline", "metrics", "variant")
VARIANT_KEYS = ("name", "method", "set", "group", "baseline", "description")
DEFAULT_TABLE_METRICS = ("mse", "ssim", "lpips")
DEFAULT_COMPARE_DATASETS = ("materials", "materials-shift", "faces", "faces-shift", "real-materials", "real-faces")
DEFAULT_COMPARE_METHODS = ("join", "unet", "color-retinex", "retinex", "trivial")
RUN_GRID_IMAGES = 8  # grid rows every run keeps (the runner's default), whatever a report shows


# == the spec ===============================================================================
@dataclass(frozen=True)
class Variant:
    """One row of an ablation: a registered method with setting overrides."""

    name: str
    method: str
    set: dict[str, str] = field(default_factory=dict)  # as `--set key=value` strings
    group: str = ""
    baseline: str | None = None  # the variant this one is compared with
    description: str = ""


@dataclass(frozen=True)
class AblationSpec:
    """A parsed spec: its variants in order, the metrics of the table and where it came from."""

    title: str
    variants: tuple[Variant, ...]
    metrics: tuple[str, ...] = DEFAULT_TABLE_METRICS
    description: str = ""
    source: str = ""  # file path, or "shipped spec NAME"
    stem: str = "ablation"  # names the default output folder
    text: str = ""  # the TOML as read

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)


def shipped_specs_dir() -> Path:
    """The specs shipped in the package (``joinbench/specs/*.toml``)."""
    from importlib.resources import files

    return Path(str(files("joinbench") / "specs"))


def shipped_specs() -> list[str]:
    return sorted(p.stem for p in shipped_specs_dir().glob(f"*{SPEC_SUFFIX}"))


def resolve_spec_path(spec: str | Path | None) -> tuple[Path, bool]:
    """``spec`` as a file (a path that exists) or a shipped spec's name; (path, shipped)."""
    if spec is None or str(spec) == "":
        spec = DEFAULT_SPEC
    path = Path(spec)
    if path.is_file():
        return path, False
    if path.exists():
        raise JoinbenchError(f"--spec {spec} is a folder; give a .toml file or a shipped spec ({', '.join(shipped_specs())}).")
    name = str(spec).removesuffix(SPEC_SUFFIX)
    shipped = shipped_specs_dir() / f"{name}{SPEC_SUFFIX}"
    if "/" not in name and shipped.is_file():
        return shipped, True
    names = shipped_specs()
    raise JoinbenchError(
        f"Spec {str(spec)!r} not found: no such file, and no shipped spec of that name.{did_you_mean(name, names)} "
        f"Shipped specs: {', '.join(names)} (print one with `joinbench ablate --spec NAME --print-spec > my.toml`).")


def load_spec(spec: str | Path | None = None) -> AblationSpec:
    """Read and check the structure of a spec (a path or a shipped name; None: the default).
    Names of methods, settings and metrics are checked by :func:`check_spec`."""
    path, shipped = resolve_spec_path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JoinbenchError(f"Cannot read spec {path}: {exc}.") from None
    return parse_spec(text, source=f"{path.stem} (shipped)" if shipped else str(path), stem=path.stem)


def _kind(value: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def _setting_text(value: Any, where: str) -> str:
    """A TOML value as the ``--set`` text the method's config parses (so a spec is exactly
    ``joinbench run --set key=value``, with the same type checks)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return ",".join(_setting_text(v, where) for v in value)
    raise JoinbenchError(f"{where}: a setting must be a string, number, boolean or array of them, got {_kind(value)}.")


def _flatten_settings(table: dict[str, Any], where: str, prefix: str = "") -> dict[str, str]:
    """``{stage1 = {steps = 10}}`` -> ``{"stage1.steps": "10"}`` (dotted keys reach nested configs)."""
    out: dict[str, str] = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_settings(value, where, f"{full}."))
        else:
            out[full] = _setting_text(value, f"{where}, setting {full!r}")
    return out


def _unknown_key(key: str, valid, where: str) -> JoinbenchError:
    return JoinbenchError(f"{where}: unknown key {key!r}.{did_you_mean(key, valid)} Valid keys: {', '.join(valid)}.")


def parse_spec(text: str, source: str = "<spec>", stem: str = "ablation") -> AblationSpec:
    """Parse a spec's TOML text, checking its structure: known keys only, every variant with
    a name and a method, unique names, baselines that name a variant."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser under its PyPI name
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise JoinbenchError("Reading ablation specs needs Python 3.11+ (tomllib) or `pip install tomli`.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise JoinbenchError(f"Spec {source} is not valid TOML: {exc}.") from None
    where = f"Spec {source}"
    for key in data:
        if key not in SPEC_KEYS:
            raise _unknown_key(key, SPEC_KEYS, where)
    for key in ("title", "description", "baseline"):
        if key in data and not isinstance(data[key], str):
            raise JoinbenchError(f"{where}: {key!r} must be a string, got {_kind(data[key])}.")
    metrics = data.get("metrics", list(DEFAULT_TABLE_METRICS))
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise JoinbenchError(f"{where}: 'metrics' must be a non-empty array of metric names, e.g. metrics = [\"mse\", \"ssim\", \"lpips\"].")
    twice = sorted({m for m in metrics if metrics.count(m) > 1})
    if twice:
        raise JoinbenchError(f"{where}: 'metrics' lists {', '.join(map(repr, twice))} twice.")
    raw = data.get("variant")
    if raw is None or raw == []:
        raise JoinbenchError(f"{where} has no variants: add [[variant]] tables with name = \"...\" and method = \"...\".")
    if not isinstance(raw, list) or not all(isinstance(v, dict) for v in raw):
        raise JoinbenchError(f"{where}: 'variant' must be an array of tables, written [[variant]] (double brackets).")
    variants: list[Variant] = []
    seen: dict[str, int] = {}
    for k, v in enumerate(raw, start=1):
        label = f"{where}, variant #{k}" + (f" ({v['name']!r})" if isinstance(v.get("name"), str) else "")
        for key in v:
            if key not in VARIANT_KEYS:
                raise _unknown_key(key, VARIANT_KEYS, label)
        for key in ("name", "method"):
            if key not in v:
                raise JoinbenchError(f"{label}: missing {key!r} (every [[variant]] needs a name and a method).")
        for key in ("name", "method", "group", "baseline", "description"):
            if key in v and (not isinstance(v[key], str) or (key in ("name", "method") and not v[key].strip())):
                raise JoinbenchError(f"{label}: {key!r} must be a non-empty string, got {_kind(v[key])}.")
        name = v["name"].strip()
        if v.get("baseline") == name:
            raise JoinbenchError(f"{label}: it names itself as its baseline; name another variant, or drop the key to "
                                 "use the spec's baseline.")
        if name in seen:
            raise JoinbenchError(f"{where}: variant name {name!r} is used twice (#{seen[name]} and #{k}); names must be unique.")
        seen[name] = k
        settings = v.get("set", {})
        if not isinstance(settings, dict):
            raise JoinbenchError(f"{label}: 'set' must be a table, e.g. set = {{ regulariser = \"none\" }}, got {_kind(settings)}.")
        variants.append(Variant(name=name, method=v["method"].strip(), set=_flatten_settings(settings, label),
                                group=v.get("group", ""), baseline=v.get("baseline", data.get("baseline")),
                                description=v.get("description", "")))
    names = [v.name for v in variants]
    if "baseline" in data and data["baseline"] not in names:
        raise JoinbenchError(f"{where}: baseline {data['baseline']!r} is not a variant of this spec."
                             f"{did_you_mean(data['baseline'], names)} Variants: {', '.join(names)}.")
    fixed = []
    for v in variants:
        if v.baseline is not None and v.baseline not in names:
            raise JoinbenchError(f"{where}, variant {v.name!r}: baseline {v.baseline!r} is not a variant of this spec."
                                 f"{did_you_mean(v.baseline, names)} Variants: {', '.join(names)}.")
        # the spec-wide baseline is compared with every other variant, not with itself
        fixed.append(Variant(v.name, v.method, v.set, v.group, None if v.baseline == v.name else v.baseline, v.description))
    return AblationSpec(title=data.get("title", "Ablations"), variants=tuple(fixed), metrics=tuple(metrics),
                        description=data.get("description", ""), source=source, stem=stem, text=text)


def check_spec(spec: AblationSpec, overrides: dict[str, str] | None = None) -> None:
    """Check every name in ``spec`` against the registries: each variant's method is created
    with its settings (over ``overrides``, the command line's ``--set``), exactly as
    ``joinbench run`` would, so unknown methods, unknown setting keys and bad values fail
    here, before anything runs; and every metric exists."""
    from .registry import create_method, create_metric

    for v in spec.variants:
        try:
            create_method(v.method, **{**(overrides or {}), **v.set})
        except JoinbenchError as exc:
            raise JoinbenchError(f"Spec {spec.source}, variant {v.name!r}: {exc}") from None
    for m in spec.metrics:
        try:
            create_metric(m)
        except JoinbenchError as exc:
            raise JoinbenchError(f"Spec {spec.source}, metrics: {exc}") from None


# == planned runs and result reuse ============================================================
@dataclass
class SuiteSettings:
    """What every run of a suite shares (the commands' options)."""

    limit: int | None = None
    batch_size: int = 16
    device: str = "auto"
    resolution: int = 64
    seed: int = 0
    metrics: tuple[str, ...] = DEFAULT_TABLE_METRICS
    progress: bool = True


@dataclass
class PlannedRun:
    """One run of a suite: its row label, what runs, and the folder its results live in."""

    label: str
    method: str
    overrides: dict[str, str]
    dataset: str
    key: dict[str, Any]  # everything that determines the numbers; hashed into the folder name
    run_dir: Path
    images: int
    limit: int | None  # effective: a method's CPU default limit is made explicit
    common: SuiteSettings

    def run_settings(self):
        from .runner import RunSettings

        return RunSettings(method=self.method, dataset=self.dataset, limit=self.limit,
                           batch_size=self.common.batch_size, device=self.common.device,
                           resolution=self.common.resolution, seed=self.common.seed, out=self.run_dir,
                           overrides=dict(self.overrides), metrics=tuple(self.common.metrics),
                           grid_images=RUN_GRID_IMAGES, progress=self.common.progress)

    def command(self) -> str:
        """The ``joinbench run`` command that makes (or resumes) this run folder alone."""
        c = self.common
        parts = ["joinbench", "run", "--method", self.method, "--dataset", self.dataset,
                 "--resolution", str(c.resolution), "--seed", str(c.seed), "--batch-size", str(c.batch_size)]
        if self.limit is not None:
            parts += ["--limit", str(self.limit)]
        parts += ["--metrics", ",".join(c.metrics), "--device", c.device]
        for k, v in self.overrides.items():
            parts += ["--set", f"{k}={v}"]
        return shlex.join(parts + ["--out", str(self.run_dir)])


@dataclass
class RunOutcome:
    plan: PlannedRun
    summary: dict[str, Any] | None  # rank 0 only
    reused: bool


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)[:48]


def _norm(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def code_version() -> dict[str, str]:
    """The code a result came from: the git commit (``+dirty`` with local changes) and the
    package version (the only handle of an install without git)."""
    from . import __version__
    from .env import git_commit

    return {"commit": git_commit(), "joinbench": __version__}


def plan_run(label: str, method: str, overrides: dict[str, str], dataset_name: str, dataset, device,
             common: SuiteSettings, root: Path, code: dict[str, str]) -> PlannedRun:
    """Resolve a run's config as the runner will (method created with its overrides, bound to
    the dataset: JoIN picks the dataset's GAN bank) and name its folder from the hash of
    everything that determines its numbers."""
    from .registry import create_method

    m = create_method(method, **overrides)
    if hasattr(m, "bind_dataset"):
        m.bind_dataset(dataset, set(overrides))
    if device.type == "cpu" and hasattr(m, "apply_cpu_settings"):
        # JoIN swaps in cheaper settings on a CPU when it is moved there; do it here without
        # loading weights, so a CPU result and a GPU result are different runs.
        with contextlib.redirect_stdout(io.StringIO()):  # the runner says it again when it runs
            m.apply_cpu_settings()
    limit = common.limit
    if limit is None and device.type == "cpu" and getattr(m, "cpu_default_limit", None):
        limit = m.cpu_default_limit  # explicit, so the folder does not change meaning with the device
    images = len(dataset) if limit is None else min(limit, len(dataset))
    # user folders (folder:, mit:) may change under the same name: key on their files too
    content = dataset.content_fingerprint() if hasattr(dataset, "content_fingerprint") else None
    key = _norm({
        "method": method, "method_config": m.describe()["config"], "dataset": dataset_name,
        "resolution": common.resolution, "seed": common.seed, "limit": limit, "images": images,
        "metrics": list(common.metrics), "batch_size": common.batch_size, **code,
        **({"dataset_content": content} if content else {}),
    })
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    run_dir = root / "runs" / f"{_slug(method)}-{_slug(dataset_name)}-{digest}"
    return PlannedRun(label, method, dict(overrides), dataset_name, key, run_dir, images, limit, common)


KEY_FILE = "reuse-key.json"


def _planned_code(plans: list[PlannedRun]) -> dict[str, str]:
    """The commit and version the runs were keyed with (the tree may move on while they run)."""
    return {k: plans[0].key[k] for k in ("commit", "joinbench")} if plans else code_version()


def _check_out(out: Path) -> None:
    """Before anything runs: the suite's --out must be (or become) a folder."""
    from .env import file_in_the_way

    blocker = file_in_the_way(out)
    if blocker is not None:
        raise JoinbenchError(f"--out {out}: {blocker} is a file; give a folder for the suite's runs and report.")


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


def require_finished(plans: list[PlannedRun], ctx, code: dict[str, str]) -> None:
    """``--runs-from`` re-renders and never computes: fail before anything runs when a planned
    run has no finished result made at that commit (computing it now would file new numbers
    under an old commit)."""
    missing = [p.label for p in plans if finished_summary(p) is None] if ctx.is_main else []
    if ctx.broadcast(bool(missing)):
        raise JoinbenchError(f"--runs-from {code['commit'][:12]} only re-renders finished runs, and "
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
    same = (run.get("method") == plan.method and run.get("dataset") == plan.dataset
            and _norm(run.get("method_config")) == plan.key["method_config"] and run.get("images") == plan.images)
    return summary if same else None


@contextlib.contextmanager
def _command_env(command: str):
    """Record ``command`` as the command of the run being made (summary.json, report provenance)."""
    old = os.environ.get("JOINBENCH_COMMAND")
    os.environ["JOINBENCH_COMMAND"] = command
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("JOINBENCH_COMMAND", None)
        else:
            os.environ["JOINBENCH_COMMAND"] = old


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
            outcomes.append(RunOutcome(plan, summary, True))
            continue
        print(f"[{k}/{len(plans)}] {plan.label}: {plan.command()}")
        if ctx.is_main:
            write_json(plan.run_dir / KEY_FILE, plan.key)
        try:
            with _command_env(plan.command()):
                run_benchmark(plan.run_settings())
        except JoinbenchError as exc:
            done = len(outcomes)
            raise JoinbenchError(f"{plan.label} ({plan.method} on {plan.dataset}): {exc} "
                                 f"({done} earlier run(s) are finished and kept under {where}; rerun the same "
                                 "command to continue from here.)") from None
        summary = load_summary(plan.run_dir) if ctx.is_main else None
        if summary is not None and _norm(summary["run"]["method_config"]) != plan.key["method_config"]:
            changed = sorted(k for k, v in summary["run"]["method_config"].items()
                             if _norm(v) != plan.key["method_config"].get(k))
            print(f"warning: {plan.method} changed its settings when it ran ({', '.join(changed)}), so this run "
                  "cannot be recognised as finished next time and will be resumed instead of reused.",
                  file=sys.stderr)
        outcomes.append(RunOutcome(plan, summary, False))
    return outcomes


# == tables, comparisons, provenance ==========================================================
def _component_title(comp: str) -> str:
    return "re-render" if comp == "image" else comp


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

    headers = [h for h, _ in first] + [f"{_component_title(c)} {metric_heading(m)} {arrow(directions.get(m, False))}"
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
    from .runner import read_records

    out: dict[tuple[str, str], dict[str, float]] = {}
    for r in read_records(Path(run_dir) / "records.jsonl"):
        if r.get("error") or r["id"] not in ids:
            continue
        for m, v in r.get("metrics", {}).items():
            out.setdefault((r["component"], m), {})[r["id"]] = v
    return out


@dataclass
class Difference:
    """Variant minus baseline on one column, paired over the images both scored."""

    component: str
    metric: str
    n: int
    variant_mean: float
    baseline_mean: float
    diff: float
    ci_low: float
    ci_high: float
    verdict: str  # better | worse | inside (the interval holds 0) | n/a (fewer than 2 images)


def paired_differences(variant: dict, baseline: dict, columns, directions: dict[str, bool]) -> list[Difference]:
    """The mean per-image difference of each column with its 95% paired bootstrap interval
    (images resampled together, as both methods saw the same images); the difference is
    'outside the interval' (better or worse) only when the interval excludes 0."""
    import numpy as np

    from .tables import bootstrap_ci

    out = []
    for comp, metric in columns:
        a, b = variant.get((comp, metric), {}), baseline.get((comp, metric), {})
        ids = sorted(i for i in set(a) & set(b) if math.isfinite(a[i]) and math.isfinite(b[i]))
        va, vb = np.array([a[i] for i in ids], float), np.array([b[i] for i in ids], float)
        d = va - vb
        if len(ids) < 2:
            out.append(Difference(comp, metric, len(ids), math.nan, math.nan, math.nan, math.nan, math.nan, "n/a"))
            continue
        lo, hi = bootstrap_ci(d)
        if lo > 0 or hi < 0:
            up = hi < 0 if not directions.get(metric, False) else lo > 0
            verdict = "better" if up else "worse"
        else:
            verdict = "inside"
        out.append(Difference(comp, metric, len(ids), float(va.mean()), float(vb.mean()), float(d.mean()), lo, hi, verdict))
    return out


def _signed(x: float) -> str:
    from .tables import fmt

    return fmt(x) if x < 0 else "+" + fmt(x)


def comparison_sentence(variant: str, baseline: str, diffs: list[Difference]) -> str:
    """One sentence: where ``variant`` is better or worse than ``baseline`` outside the 95%
    interval of the paired difference, and how many differences stay inside it."""
    scored = [d for d in diffs if d.verdict != "n/a"]
    if not scored:
        return f"{variant} vs {baseline}: too few images scored by both (at least 2 are needed) to compare."
    n = max(d.n for d in scored)

    def items(ds):
        return ", ".join(f"{_component_title(d.component)} {d.metric.upper()} ({_signed(d.diff)}, 95% CI "
                         f"[{_signed(d.ci_low)}, {_signed(d.ci_high)}])" for d in ds)

    better = [d for d in scored if d.verdict == "better"]
    worse = [d for d in scored if d.verdict == "worse"]
    head = f"{variant} vs {baseline} ({n} images, paired): "
    if not better and not worse:
        return head + (f"none of the {len(scored)} differences lies outside its 95% interval, so this test set "
                       "does not tell them apart.") + _few_images_caveat(n)
    parts = []
    if worse:
        parts.append(f"worse outside the 95% interval on {items(worse)}")
    if better:
        parts.append(f"better outside the 95% interval on {items(better)}")
    rest = len(scored) - len(better) - len(worse)
    tail = f"; the other {rest} of {len(scored)} differences lie inside their intervals." if rest else "."
    return head + "; ".join(parts) + tail + _few_images_caveat(n)


FEW_IMAGES = 10  # below this, a bootstrap interval is not a test (see _few_images_caveat)


def _few_images_caveat(n: int) -> str:
    """Resampling n images gives at most n distinct means per side: with 2 images the 95%
    interval is the range of the two differences, so 'outside' only means both images
    agree in sign. Say so rather than let a 2-image table read like a significance test."""
    if n >= FEW_IMAGES:
        return ""
    return (f" With only {n} images the interval is little more than the range of the per-image differences "
            f"(a difference lies outside it whenever {'both' if n == 2 else f'all {n}'} agree in sign): descriptive, not a test; "
            "use more images (--limit) for a claim.")


def _environment_line(ctx, device, code: dict[str, str], wall: float, outcomes: list[RunOutcome]) -> str:
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


def _run_line(o: RunOutcome) -> str:
    env = o.summary["environment"]
    how = "reused" if o.reused else "computed now"
    wall = o.summary.get("timing", {}).get("wall_seconds_this_invocation")
    dist = env.get("distributed")
    procs = f" on {dist['world_size']} processes" if dist else ""
    return (f"**{o.plan.label}**: `{o.plan.command()}` ({how}; {env['device_name']}{procs}, commit {env['commit']}"
            + (f", last invocation {wall:.1f} s" if wall is not None else "") + ")")


def _images(n: int) -> str:
    return f"{n} test image" + ("" if n == 1 else "s")


def _split_ids(dataset, n: int) -> list[str]:
    return [dataset.sample_id(i) for i in range(n)]


def _device_for(ctx, device: str):
    from .env import resolve_device

    return ctx.device(device) if ctx.active else resolve_device(device)


def _dataset(name: str, common: SuiteSettings):
    from .runner import create_dataset_for_run

    return create_dataset_for_run(name, common.resolution, common.seed)


def _check_common(common: SuiteSettings) -> None:
    from .registry import create_metric

    if common.batch_size < 1:
        raise JoinbenchError(f"--batch-size must be at least 1, got {common.batch_size}.")
    if common.limit is not None and common.limit < 1:
        raise JoinbenchError(f"--limit must be at least 1, got {common.limit} (leave it out for the whole split).")
    for m in common.metrics:
        create_metric(m)


# == ablate ===================================================================================
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
    progress: bool = True
    command: str = ""  # recorded at the top of ablation.md
    check_only: bool = False  # validate and plan, run nothing
    runs_from: str | None = None  # re-render from the finished runs made at this commit (see runs_code)


def plan_ablation(settings: AblationSettings):
    """Parse and check the spec and the options, then plan every variant's run (nothing runs).
    Returns (spec, plans, output folder, distributed context, device, dataset)."""
    from . import distributed

    spec = load_spec(settings.spec)
    check_spec(spec, settings.overrides)
    common = SuiteSettings(limit=settings.limit, batch_size=settings.batch_size, device=settings.device,
                           resolution=settings.resolution, seed=settings.seed, metrics=spec.metrics,
                           progress=settings.progress)
    _check_common(common)
    dataset = _dataset(settings.dataset, common)
    from .runner import check_scorable

    check_scorable(settings.dataset, dataset, common.metrics)
    ctx = distributed.init(settings.device)
    device = _device_for(ctx, settings.device)
    out = Path(settings.out) if settings.out else Path("runs") / "ablate" / f"{_slug(spec.stem)}-{_slug(settings.dataset)}"
    _check_out(out)
    code = runs_code(out, settings.runs_from) if settings.runs_from is not None else code_version()
    plans = [plan_run(v.name, v.method, {**settings.overrides, **v.set}, settings.dataset, dataset, device,
                      common, out, code) for v in spec.variants]
    return spec, plans, out, ctx, device, dataset


def _show_plans(plans, ctx) -> None:
    """``--check``: each run, whether it is finished (and will be reused) and its command."""
    if ctx.is_main:
        for p in plans:
            state = "finished, will be reused" if finished_summary(p) else "to run"
            print(f"{p.label}: {state}: {p.command()}")


def run_ablation(settings: AblationSettings) -> Path:
    """Run (or reuse) every variant of the spec on the dataset and write ``ablation.md``,
    ``.csv``, ``.json`` and ``.tex`` into the output folder, which is returned."""
    from .env import write_atomic

    t0 = time.perf_counter()
    spec, plans, out, ctx, device, dataset = plan_ablation(settings)
    if settings.check_only:
        _show_plans(plans, ctx)
        return out
    if settings.runs_from is not None:
        require_finished(plans, ctx, plans[0].key)
    outcomes = execute(plans, ctx, out)
    if not ctx.is_main:
        return out
    report = ablation_report(spec, settings, outcomes, dataset, ctx, device, _planned_code(plans), time.perf_counter() - t0)
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

    labels = [o.plan.label for o in outcomes]
    summaries = [o.summary for o in outcomes]
    frame, ci, best, directions = results_frames(labels, summaries, spec.metrics)
    n = outcomes[0].plan.images
    ids = set(_split_ids(dataset, n))
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
          f"Made with `{settings.command or 'the Python API (joinbench.suite.run_ablation)'}` from {spec.source}.", "",
          _environment_line(ctx, device, code, wall, outcomes), ""]
    if spec.description:
        md += [spec.description.strip(), ""]
    md += [f"Each cell: mean over the {_images(n)} of `{settings.dataset}` at {settings.resolution} px, seed "
           f"{settings.seed}, with its 95% bootstrap interval; ↓ lower is better, ↑ higher is better; the best of each "
           "column is in bold (ties all bold). Components are compared in encoded display space (the JoIN "
           "authors' protocol); re-render compares each variant's re-rendered image with the input.", "", table, ""]
    if comparisons:
        md += ["## Comparisons", "",
               "Each variant against its baseline, image by image: the mean difference (variant − baseline) with "
               "its 95% paired bootstrap interval. A difference counts as better or worse only when it lies "
               "outside the interval, i.e. the interval excludes 0; otherwise this test set cannot tell the two apart.",
               ""]
        md += [f"- {c['sentence']}" for c in comparisons] + [""]
    md += ["## Runs", "", "Every run folder is a normal run (`joinbench report` reads it); each command below "
           "remakes one alone.", ""]
    md += [f"- {_run_line(o)}" for o in outcomes]
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
        "seed": settings.seed, "metrics": list(spec.metrics),
        "variants": [{"name": o.plan.label, "group": spec.variant(o.plan.label).group, "method": o.plan.method,
                      "set": o.plan.overrides, "baseline": spec.variant(o.plan.label).baseline,
                      "description": spec.variant(o.plan.label).description,
                      "run_dir": str(o.plan.run_dir), "reused": o.reused, "command": o.plan.command(),
                      "results": {c: {m: o.summary["results"].get(c, {}).get(m) for m in spec.metrics}
                                  for c in o.summary["results"]}} for o in outcomes],
        "comparisons": comparisons,
        "table": {f"{_component_title(c)} {m}": {l: {"mean": frame.loc[l, (c, m)], "ci": list(ci.loc[l, (c, m)]),
                                                      "best": bool(best.loc[l, (c, m)])} for l in labels}
                  for c, m in frame.columns},
    }
    return {"md": "\n".join(md) + "\n", "csv": pd.DataFrame(rows).to_csv(index=False), "latex": latex,
            "json": _finite(data)}


def _finite(obj: Any) -> Any:
    """JSON without NaN/inf (null instead), so any JSON reader takes the file."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalars
        return _finite(obj.item())
    return obj


# == compare ==================================================================================
@dataclass
class CompareSettings:
    """``joinbench compare``: methods x datasets."""

    datasets: tuple[str, ...] = DEFAULT_COMPARE_DATASETS
    methods: tuple[str, ...] = DEFAULT_COMPARE_METHODS
    limit: int | None = None
    batch_size: int = 16
    device: str = "auto"
    resolution: int = 64
    seed: int = 0
    metrics: tuple[str, ...] = DEFAULT_TABLE_METRICS
    out: Path | None = None  # default runs/compare
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)  # method -> --set
    grid_images: int = 4  # images per dataset figure
    progress: bool = True
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
    from .registry import create_method

    if not settings.datasets or not settings.methods:
        raise JoinbenchError("compare needs at least one dataset and one method (--datasets a,b --methods x,y).")
    for group, what in ((settings.datasets, "dataset"), (settings.methods, "method")):
        dup = sorted({x for x in group if group.count(x) > 1})
        if dup:
            raise JoinbenchError(f"--{what}s lists {', '.join(dup)} twice.")
    common = SuiteSettings(limit=settings.limit, batch_size=settings.batch_size, device=settings.device,
                           resolution=settings.resolution, seed=settings.seed, metrics=tuple(settings.metrics),
                           progress=settings.progress)
    _check_common(common)
    for m in settings.methods:
        create_method(m, **settings.overrides.get(m, {}))  # unknown names and settings fail here
    datasets = {d: _dataset(d, common) for d in settings.datasets}
    from .runner import check_scorable

    for d, ds in datasets.items():
        check_scorable(d, ds, common.metrics)
    ctx = distributed.init(settings.device)
    device = _device_for(ctx, settings.device)
    out = Path(settings.out) if settings.out else Path("runs") / "compare"
    _check_out(out)
    code = runs_code(out, settings.runs_from) if settings.runs_from is not None else code_version()
    plans = {d: [plan_run(m, m, settings.overrides.get(m, {}), d, ds, device, common, out, code)
                 for m in settings.methods] for d, ds in datasets.items()}
    return plans, datasets, out, ctx, device


def run_comparison(settings: CompareSettings) -> Path:
    """Run (or reuse) every method on every dataset and write ``compare.md`` (a table and a
    figure per dataset), ``compare.csv`` and ``compare.json``; returns the output folder."""
    from .env import write_atomic

    t0 = time.perf_counter()
    plans, datasets, out, ctx, device = plan_comparison(settings)
    flat = [p for ps in plans.values() for p in ps]
    for p in flat:
        p.label = f"{p.method} on {p.dataset}"
    if settings.check_only:
        _show_plans(flat, ctx)
        return out
    if settings.runs_from is not None:
        require_finished(flat, ctx, flat[0].key)
    outcomes = execute(flat, ctx, out)
    if not ctx.is_main:
        return out
    md, rows, data = comparison_report(settings, outcomes, datasets, out, ctx, device, _planned_code(flat),
                                       time.perf_counter() - t0)
    import pandas as pd

    write_atomic(out / "compare.md", md)
    write_atomic(out / "compare.csv", pd.DataFrame(rows).to_csv(index=False))
    write_atomic(out / "compare.json", json.dumps(_finite(data), indent=2, default=str) + "\n")
    return out


def comparison_report(settings: CompareSettings, outcomes: list[RunOutcome], datasets: dict, out: Path, ctx, device,
                      code: dict[str, str], wall: float):
    """compare.md text, CSV rows and JSON data; writes one figure per dataset."""
    import pandas as pd

    md = [f"# {settings.title}", "", f"Made with `{settings.command or 'the Python API (joinbench.suite.run_comparison)'}`.", "",
          _environment_line(ctx, device, code, wall, outcomes), "",
          "Each cell: mean over the test images with its 95% bootstrap interval; ↓ lower is better, ↑ higher is "
          "better; the best of each column in bold (ties all bold). Components are compared in encoded display "
          "space (the JoIN authors' protocol); re-render compares each method's re-rendered image with the input. "
          "Figures: per image, the input and ground truth, then each method's re-render, albedo, shading and specular.",
          ""]
    rows, data = [], {"command": settings.command, "code": code, "wall_seconds": wall, "datasets": {}}
    for name, ds in datasets.items():
        group = [o for o in outcomes if o.plan.dataset == name]
        labels = [o.plan.method for o in group]
        frame, ci, best, directions = results_frames(labels, [o.summary for o in group], tuple(settings.metrics))
        n = group[0].plan.images
        gt = ds.has_ground_truth
        md += [f"## {name}" + ("" if gt else " (no ground truth)"), "",
               f"{_images(n).capitalize()} at {settings.resolution} px, seed {settings.seed}. " + (
                   "" if gt else "Without ground truth only the re-render is scored: it measures how well the "
                   "predicted layers recompose the photo, not whether they are right (a method can re-render well by "
                   "putting everything into one layer), so judge the layers in the figure."), ""]
        md += [table_markdown(frame, ci, best, directions, [("method", labels)]), ""]
        fig = _comparison_figure(ds, group, out / "figures" / f"{_slug(name)}.png", settings.grid_images)
        if fig is not None:
            md += [f"![{name}: input, ground truth and each method's layers]({fig.relative_to(out).as_posix()})", ""]
        entry = {"images": n, "has_ground_truth": gt, "figure": None if fig is None else str(fig), "methods": {}}
        for o in group:
            entry["methods"][o.plan.method] = {"run_dir": str(o.plan.run_dir), "reused": o.reused,
                                               "command": o.plan.command()}
            for col in frame.columns:
                mean = frame.loc[o.plan.method, col]
                cell = {"dataset": name, "method": o.plan.method, "component": col[0], "metric": col[1],
                        "higher_is_better": directions.get(col[1], False), "mean": "" if pd.isna(mean) else mean,
                        "ci_low": ci.loc[o.plan.method, col][0], "ci_high": ci.loc[o.plan.method, col][1],
                        "best": bool(best.loc[o.plan.method, col])}
                rows.append(cell)
                entry["methods"][o.plan.method].setdefault("results", []).append(cell)
        data["datasets"][name] = entry
    md += ["## Runs", "", "Every run folder is a normal run (`joinbench report` reads it); each command below "
           "remakes one alone.", ""]
    md += [f"- {_run_line(o)}" for o in outcomes]
    return "\n".join(md) + "\n", rows, data


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
                rows.append([label_tile(o.plan.method, size)] + [None] * 4)
                continue
            pred = np.load(path_i)
            rows.append([label_tile(o.plan.method, size), torch.from_numpy(pred["rerender"]),
                         *[torch.from_numpy(pred[f"{c}_encoded"]) for c in COMPONENTS]])
    if not rows:
        return None
    save_image_atomic(grid_image(rows, ["", "image", "albedo", "shading", "specular"], cell=size), path)
    return path


# == the commands ==============================================================================
RUNS_FROM_HELP = ("COMMIT: re-render the report with this code from the finished runs made at COMMIT in --out "
                  "(a prefix; nothing is computed, every run must be finished)")


def _command_line() -> str:
    return "joinbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def ablate_cmd(
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="registered dataset, e.g. materials"),
    spec: str = typer.Option(DEFAULT_SPEC, "--spec", "-s", help="spec file (TOML), or a shipped spec's name: join (default), join-s1"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="only the first N test images (on CPU unless given: 4 for the join-s1 variants, 2 for the other join variants)"),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="images per batch"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    resolution: int = typer.Option(64, "--resolution", "-r", help="power of two, 16..512"),
    seed: int = typer.Option(0, "--seed", help="test-split seed"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default runs/ablate/<spec>-<dataset>); finished runs in it are reused"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="setting for every variant, under the variant's own: key=value (repeatable)"),
    print_spec: bool = typer.Option(False, "--print-spec", help="print the spec's TOML (to copy and edit) and exit"),
    check: bool = typer.Option(False, "--check", help="validate the spec and show each run (reused or to run); run nothing"),
    runs_from: Optional[str] = typer.Option(None, "--runs-from", help=RUNS_FROM_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
):
    """Run the ablation variants of a spec on DATASET: one table (ablation.md, .csv, .json, .tex).

    Example: joinbench ablate --dataset materials --limit 8
    """
    from .method import parse_set_options

    if print_spec:
        typer.echo(load_spec(spec).text, nl=False)
        return
    if not dataset:
        raise JoinbenchError("ablate needs --dataset, e.g. `joinbench ablate --dataset materials` "
                             "(see `joinbench list datasets`).")
    settings = AblationSettings(dataset=dataset, spec=spec, limit=limit, batch_size=batch_size, device=device,
                                resolution=resolution, seed=seed, out=out, overrides=parse_set_options(set_),
                                progress=not quiet, command=_command_line(), check_only=check, runs_from=runs_from)
    folder = run_ablation(settings)
    from .distributed import context

    if context().is_main and not check:
        typer.echo((folder / "ablation.md").read_text())
        typer.echo(f"ablation folder: {folder}")


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def compare_cmd(
    datasets: str = typer.Option(",".join(DEFAULT_COMPARE_DATASETS), "--datasets", help="comma list of datasets"),
    methods: str = typer.Option(",".join(DEFAULT_COMPARE_METHODS), "--methods", help="comma list of methods (table rows)"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="only the first N test images of each dataset"),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="images per batch"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    resolution: int = typer.Option(64, "--resolution", "-r", help="power of two, 16..512"),
    seed: int = typer.Option(0, "--seed", help="test-split seed"),
    metrics: str = typer.Option(",".join(DEFAULT_TABLE_METRICS), "--metrics", help="comma list of metrics (table columns)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default runs/compare); finished runs in it are reused"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="setting of one method: METHOD:key=value (repeatable)"),
    grid_images: int = typer.Option(4, "--grid-images", help="images per dataset figure (at most 8)"),
    title: str = typer.Option("Main comparison", "--title", help="heading of compare.md"),
    check: bool = typer.Option(False, "--check", help="validate and show each run (reused or to run); run nothing"),
    runs_from: Optional[str] = typer.Option(None, "--runs-from", help=RUNS_FROM_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
):
    """Run METHODS on DATASETS: one report (compare.md, .csv, .json) with a table and a figure per dataset.

    Example: joinbench compare --datasets materials,real-materials --methods unet,retinex,trivial --limit 8
    """
    method_list = _comma_list(methods)
    if not 1 <= grid_images <= 8:
        raise JoinbenchError(f"--grid-images must be from 1 to 8, got {grid_images}.")
    if not _comma_list(metrics):
        raise JoinbenchError(f"--metrics {metrics!r} names no metric; give a comma list (see `joinbench list metrics`).")
    settings = CompareSettings(datasets=_comma_list(datasets), methods=method_list, limit=limit,
                               batch_size=batch_size, device=device, resolution=resolution, seed=seed,
                               metrics=_comma_list(metrics), out=out, overrides=parse_method_sets(set_, method_list),
                               grid_images=grid_images, progress=not quiet, command=_command_line(), check_only=check,
                               title=title, runs_from=runs_from)
    folder = run_comparison(settings)
    from .distributed import context

    if context().is_main and not check:
        typer.echo((folder / "compare.md").read_text())
        typer.echo(f"compare folder: {folder}")


__all__ = [
    "AblationSettings", "AblationSpec", "CompareSettings", "Variant", "ablate_cmd", "check_spec", "compare_cmd",
    "comparison_sentence", "finished_summary", "load_spec", "paired_differences", "parse_spec", "plan_ablation",
    "plan_comparison", "run_ablation", "run_comparison", "shipped_specs",
]
