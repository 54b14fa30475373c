"""One planner: a run is planned in one place, and every engine runs the plan.

``joinbench run``, the suites (``ablate``, ``compare``), ``timing`` and ``relight`` all need
the same step: build the method for a dataset and a device (the dataset's domain weights,
the device's settings), decide how many images it scores, what identifies its results and
where they go. Doing it four times let the copies drift (the suite used to predict what the
runner would do and read ``summary.json`` back to check), so it is done here, once:

- :func:`prepare_method` (method name, overrides, dataset, device) -> the prepared method
  (not yet loaded: ``method.to(device)`` loads its weights) and the notes a user should read
  (the CPU settings it chose);
- :func:`plan_run` (:class:`RunSettings`, and optionally the dataset, the device, and the
  folder a suite keys its runs under) -> a :class:`PlannedRun`: the prepared method, the final
  config, the effective limit, the run's identity and reuse key, its folder and the
  ``joinbench run`` command that makes it. The runner runs exactly this object.

The reuse key (what a suite hashes into a run's folder name) must not change for the same
run, or committed reports stop re-rendering from their runs (``--runs-from``); its fields and
their JSON form are fixed here and tested against the committed reference runs.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import JoinbenchError

if TYPE_CHECKING:  # pragma: no cover
    from joinbench.datasets.base import Dataset

    from .method import Method

DEFAULT_METRICS = ("mse", "psnr", "ssim", "lpips", "si-mse", "si-lmse", "lmse", "dssim")
DEFAULT_GRID_IMAGES = 8


@dataclass
class RunSettings:
    """Everything that defines a run (the options of ``joinbench run``).

    ``command`` is the command line recorded with the results (``summary.json``, reports);
    empty: the equivalent ``joinbench run`` command, rebuilt from these settings."""

    method: str
    dataset: str
    limit: int | None = None
    batch_size: int = 16
    device: str = "auto"
    resolution: int = 64
    seed: int = 0
    out: Path | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    metrics: tuple[str, ...] | None = None  # None: the dataset's (run_metrics); (): score nothing
    save_predictions: bool = False
    grid_images: int = DEFAULT_GRID_IMAGES
    progress: bool = True
    command: str = ""


@dataclass
class PlannedRun:
    """A run decided: what runs, on what, and where its results live.

    ``settings`` are the final ones: ``limit`` is the effective limit (a method's CPU default
    made explicit), ``out`` the folder, ``command`` the command that makes (or resumes) it.
    ``method`` is the prepared method; the runner drops it after running, so a suite of many
    runs does not keep every run's weights in memory."""

    settings: RunSettings
    method: "Method | None"
    dataset: "Dataset"
    device: torch.device
    images: int  # images the run scores
    metrics: tuple[str, ...]
    identity: dict[str, Any]  # run.json: what a folder's run is (resuming checks it)
    key: dict[str, Any]  # identity + limit, images, code version: what reuse matches
    notes: list[str] = field(default_factory=list)  # what the plan chose that the user did not say
    label: str = ""  # a suite's row label

    @property
    def run_dir(self) -> Path:
        return Path(self.settings.out)

    @property
    def method_name(self) -> str:
        return self.settings.method

    @property
    def dataset_name(self) -> str:
        return self.settings.dataset

    @property
    def overrides(self) -> dict[str, str]:
        return self.settings.overrides

    @property
    def limit(self) -> int | None:
        return self.settings.limit

    @property
    def command(self) -> str:
        return self.settings.command

    @property
    def config(self) -> dict[str, Any]:
        return self.identity["method_config"]


def slug(text: str, width: int = 60) -> str:
    """``text`` as a file-name part: letters, digits and ``-_.`` kept, the rest ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:width]


def default_run_dir(method: str, dataset: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{slug(method)}-{slug(dataset)}"


def code_version() -> dict[str, str]:
    """The code a result comes from: the git commit (see :func:`joinbench.env.git_commit` for
    a tree with local changes) and the package version (the only handle of an install without git)."""
    from . import __version__
    from .env import git_commit

    return {"commit": git_commit(), "joinbench": __version__}


def open_dataset(name: str, resolution: int, seed: int) -> "Dataset":
    """The registered dataset ``name`` at ``resolution`` with test-split ``seed`` (every
    dataset factory takes both; a split without a seed ignores it)."""
    from .registry import create_dataset

    return create_dataset(name, resolution=resolution, seed=seed)


def run_device(device: str) -> torch.device:
    """The device of this process for ``--device``: under torchrun one GPU per process."""
    from . import distributed
    from .env import resolve_device

    ctx = distributed.init(device)
    return ctx.device(device) if ctx.active else resolve_device(device)


# -- the method ---------------------------------------------------------------------------
def prepare_method(name: str, overrides: dict[str, Any], dataset: "Dataset | None",
                   device: torch.device) -> tuple["Method", list[str]]:
    """``name`` created with ``overrides`` and prepared for ``dataset`` (its domain's weights)
    and ``device`` (its settings), nothing loaded; and the lines that tell the user what the
    device changed. Unknown names and settings fail here, in one line."""
    from .registry import create_method

    method = create_method(name, **overrides)
    changes = method.prepare(dataset, device)
    return method, [note] if (note := _settings_note(name, method, changes, device)) else []


def _settings_note(name: str, method: "Method", changes: dict[str, Any], device: torch.device) -> str | None:
    shown = [k for k in changes if k not in method.unused_settings()]
    if not shown:
        return None
    told = " ".join(f"--set {k}={changes[k]}" for k in shown)
    defaults = " ".join(f"--set {k}={getattr(type(method.config), k)}" for k in shown)
    where = "CPU" if device.type == "cpu" else str(device)
    return f"{name} on {where}: {told} (a quicker, rougher run; the defaults are {defaults}, which a GPU runs)"


def run_metrics(metrics: tuple[str, ...] | None, dataset: "Dataset",
                harness: tuple[str, ...] = DEFAULT_METRICS) -> tuple[str, ...]:
    """The metrics a run scores: those the user named, else the dataset's default
    (:meth:`Dataset.default_metrics`: a benchmark's own protocol, e.g. WHDR on IIW, or
    ``harness``, the command's default: ``run``'s dense metrics, the suites' table metrics).
    The only place a default metric list is chosen."""
    return dataset.default_metrics(tuple(harness)) if metrics is None else tuple(metrics)


def check_scorable(dataset_name: str, dataset: "Dataset", metric_names) -> None:
    """Without ground truth only the re-render is scored, by encoded-space metrics, plus the
    benchmark metrics whose annotations the dataset declares (``Dataset.references``: WHDR on
    IIW, ...): a metric list that scores nothing would give an empty table, and a benchmark
    metric on a dataset without its annotations an empty column, so say so before running."""
    from .benchmark_metrics import REFERENCE_SPACE
    from .registry import create_metric

    declared = [create_metric(m) for m in metric_names]
    unserved = [f"{m.name} (needs {m.reference} annotations)" for m in declared
                if m.space == REFERENCE_SPACE and m.reference not in dataset.references]
    if unserved:
        raise JoinbenchError(f"{dataset_name} has no annotations for {', '.join(unserved)}: whdr* score iiw:/iiw-test:, "
                             "maw-* score maw:, arap-* score arap:; drop them or pick such a dataset.")
    if dataset.has_ground_truth or not metric_names:
        return
    if not any(m.space in ("encoded", REFERENCE_SPACE) for m in declared):
        raise JoinbenchError(f"{dataset_name} has no ground truth, so only the re-render is scored, by encoded-space "
                             f"metrics (mse, psnr, ssim, lpips); {', '.join(metric_names)} score none of it: add one.")


# -- the run ------------------------------------------------------------------------------
def plan_run(settings: RunSettings, *, dataset: "Dataset | None" = None, device: torch.device | None = None,
             root: Path | None = None, code: dict[str, str] | None = None, label: str = "",
             harness_metrics: tuple[str, ...] = DEFAULT_METRICS) -> PlannedRun:
    """Plan ``settings``: prepare the method, fix the metrics (``settings.metrics``, else the
    dataset's default over ``harness_metrics``: :func:`run_metrics`), the effective limit, the
    identity and reuse key, the folder and the command. ``dataset`` and ``device`` are made
    from the settings when not given. ``root``: key the folder (``root/runs/<method>-<dataset>-<hash of the key>``), as
    the suites do, so a finished run is found again; otherwise ``settings.out`` or a new
    timestamped folder. ``code``: the code version the key names (default: this checkout's;
    ``--runs-from`` passes an older one)."""
    if settings.batch_size < 1:
        raise JoinbenchError(f"--batch-size must be at least 1, got {settings.batch_size}.")
    if settings.limit is not None and settings.limit < 1:
        raise JoinbenchError(f"--limit must be at least 1, got {settings.limit} (leave it out for the whole split).")
    if settings.grid_images < 0:
        raise JoinbenchError(f"--grid-images must be 0 or more, got {settings.grid_images}.")
    device = device if device is not None else run_device(settings.device)
    dataset = dataset if dataset is not None else open_dataset(settings.dataset, settings.resolution, settings.seed)
    metrics = run_metrics(settings.metrics, dataset, harness_metrics)
    check_scorable(settings.dataset, dataset, metrics)
    from .registry import create_metric

    for m in metrics:
        create_metric(m)  # unknown names fail before anything runs
    method, notes = prepare_method(settings.method, settings.overrides, dataset, device)
    limit = settings.limit
    if limit is None and device.type == "cpu" and method.cpu_default_limit:
        limit = method.cpu_default_limit  # explicit, so a folder does not change meaning with the device
        notes.append(f"{settings.method} on CPU: scoring the first {min(limit, len(dataset))} of {len(dataset)} test "
                     "images (this method's CPU default; pass --limit N to choose, or run on a GPU for the full split)")
    images = len(dataset) if limit is None else min(limit, len(dataset))
    config = method.describe()["config"]
    identity = {
        "method": settings.method, "method_config": config, "dataset": settings.dataset,
        "resolution": settings.resolution, "seed": settings.seed, "metrics": list(metrics),
        # float32 optimisation results differ in the last bits between batch sizes
        "batch_size": settings.batch_size,
    }
    content = dataset.fingerprint()  # user folders may change under the same name: key on their files too
    if content:
        identity["dataset_content"] = content
    key = _norm({
        "method": settings.method, "method_config": config, "dataset": settings.dataset,
        "resolution": settings.resolution, "seed": settings.seed, "limit": limit, "images": images,
        "metrics": list(metrics), "batch_size": settings.batch_size, **(code or code_version()),
        **({"dataset_content": content} if content else {}),
    })
    if root is not None:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        out = Path(root) / "runs" / f"{slug(settings.method, 48)}-{slug(settings.dataset, 48)}-{digest}"
    else:
        out = Path(settings.out) if settings.out else default_run_dir(settings.method, settings.dataset)
    final = replace(settings, limit=limit, out=out)
    final.command = settings.command or run_command(final, metrics)
    return PlannedRun(final, method, dataset, device, images, metrics, identity, key, notes, label)


def run_command(settings: RunSettings, metrics: tuple[str, ...]) -> str:
    """The ``joinbench run`` command that makes (or resumes) the run of ``settings`` alone."""
    s = settings
    parts = ["joinbench", "run", "--method", s.method, "--dataset", s.dataset, "--resolution", str(s.resolution),
             "--seed", str(s.seed), "--batch-size", str(s.batch_size)]
    if s.limit is not None:
        parts += ["--limit", str(s.limit)]
    parts += ["--metrics", ",".join(metrics) or "none", "--device", s.device]
    for k, v in s.overrides.items():
        parts += ["--set", f"{k}={v}"]
    if s.save_predictions:
        parts.append("--save-predictions")
    if s.grid_images != DEFAULT_GRID_IMAGES:
        parts += ["--grid-images", str(s.grid_images)]
    return shlex.join(parts + ["--out", str(s.out)])


def _norm(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


__all__ = ["DEFAULT_METRICS", "PlannedRun", "RunSettings", "check_scorable", "code_version", "default_run_dir",
           "open_dataset", "plan_run", "prepare_method", "run_command", "run_device", "run_metrics", "slug"]
