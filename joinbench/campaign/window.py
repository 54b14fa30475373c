"""One GPU window of the campaign, on the GPU machine (``bash scripts/gpu_campaign.sh MINUTES``).

A window continues what the repository ships and splits one time budget (at most 9 minutes,
so that one device call of at most 10 also installs, packs and returns) among four stages:

- **a**: the priors, from their shipped state (``train prior --init-from shipped``): materials
  and faces, ``--component all`` (three GANs in one process) and ``joint``, four processes at once;
- **b**: the encoders against the new priors and the U-Nets (``--init-from shipped`` each), six
  processes at once; a stage's trainings stop by ``--minutes`` and export;
- **c**: with the time left, ``join`` and ``join-s1`` on the 100-image test splits (``RUN_DATASETS``),
  ``--save-predictions``, scored on the GPU with every metric that needs no ImageNet weights (the
  exact fp32 LPIPS is computed where the window is shipped, from the predictions);
- **d**: then the default ablation spec's variants on ``materials``, the same way.

Each stage's new weights are installed into the machine's own ``joinbench/weights`` (a copy of
the repository that is thrown away), so later stages use them. Everything a stage makes lands
in the window folder, and ``manifest.json`` there says what ran, how long, and what failed; it is
rewritten after every step, so a window killed at its limit still packs what finished.

Why fixed shares: a window should always improve the priors (a) and keep the encoders bound to
them (b); evaluation (c, d) takes what is left, and a second call with ``--stages cd`` finishes
it (runs already returned, per ``reports/priors/history.jsonl``, are skipped).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import JoinbenchError

STAGES = "abcd"
DEFAULT_SHARES = {"a": 0.45, "b": 0.2, "c": 0.35}  # d: whatever c leaves
DOMAINS = ("materials", "faces")
# Stage c, in order of what the targets need first: join on materials and its shift set
RUN_DATASETS = ("materials", "materials-shift", "bank:materials", "faces", "faces-shift", "bank:faces")
RUN_METHODS = ("join", "join-s1")
ABLATION_DATASET = "materials"
# every default metric except LPIPS (AlexNet's ImageNet weights do not travel; scored when shipped)
GPU_METRICS = ("mse", "psnr", "ssim", "si-mse", "si-lmse", "lmse", "dssim")
MANIFEST_FORMAT = "joinbench-campaign-window"
GRACE_S = 30  # a training stage's processes may overrun its minutes by this much (export, gain measurement)


@dataclass
class WindowConfig:
    """Everything one window does (``joinbench campaign window --help``)."""

    minutes: float = 9.0
    out: str = "runs/campaign/window"
    stages: str = STAGES
    device: str = "cuda"
    resolution: int = 64
    batch: int = 512  # prior training batch (what scripts/gpu_train_priors.sh uses with the engine)
    model_batch: int = 64  # encoder and U-Net training batch (theirs default to 16 / 32: too few for a GPU)
    limit: int = 100  # test images per run (stages c, d)
    join_set: tuple[str, ...] = ()  # extra --set for every JoIN run (CPU smoke: steps=2, ...)
    gain_images: int = 8  # stage-1 gain measurement of the encoders
    gain_steps: int = 100
    shares: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SHARES))
    reserve_minutes: float = 0.4  # left for packing at the end
    overhead_minutes: float = 0.5  # a training process's start-up and export, inside its stage
    skip_runs: tuple[str, ...] = ()  # run labels already returned by an earlier call
    ablation_dataset: str = ABLATION_DATASET
    seed: int = 0  # the trainings' data seed: the window's number, so each window trains on new images

    def check(self) -> None:
        if not 0 < self.minutes <= (9.5 if self.device != "cpu" else 120):
            raise JoinbenchError(f"MINUTES must be above 0 and at most 9.5 (one device call is at most 10 minutes), got {self.minutes}.")
        bad = sorted(set(self.stages) - set(STAGES))
        if bad or not self.stages:
            raise JoinbenchError(f"--stages takes letters of {STAGES!r} (a priors, b encoders + U-Net, c runs, d ablation), "
                                 f"got {self.stages!r}.")
        if self.limit < 1:
            raise JoinbenchError(f"--limit must be at least 1, got {self.limit}.")


def stage_minutes(cfg: WindowConfig) -> dict[str, float]:
    """Minutes per requested stage: shares of the budget (after the packing reserve), a
    skipped stage's share going to the ones left; d gets no share of its own (c's leftovers)."""
    usable = max(cfg.minutes - cfg.reserve_minutes, 0.0)
    shares = {s: cfg.shares.get(s, 0.0) for s in cfg.stages if s in "abc"}
    total = sum(shares.values())
    if total <= 0:  # only d
        return {s: usable for s in cfg.stages}
    out = {s: usable * v / total for s, v in shares.items()}
    if "d" in cfg.stages:
        out["d"] = 0.0
    return out


def run_label(method: str, dataset: str, variant: str | None = None) -> str:
    """``join@materials``, or ``ablation@materials/W+`` for a variant of stage d."""
    return f"ablation@{dataset}/{variant}" if variant else f"{method}@{dataset}"


def _folder(label: str) -> str:
    return "runs/" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)


def stage_c_runs(datasets=RUN_DATASETS, methods=RUN_METHODS) -> list[dict[str, Any]]:
    """(label, method, settings, dataset) of stage c, in order: each dataset's join then join-s1."""
    return [{"label": run_label(m, d), "method": m, "set": {}, "dataset": d} for d in datasets for m in methods]


def ablation_variants() -> list[dict[str, Any]]:
    """The default ablation spec's variants (``joinbench ablate --print-spec``: the file users edit)."""
    import tomllib

    text = subprocess.run([sys.executable, "-m", "joinbench", "ablate", "--print-spec"], capture_output=True,
                          text=True, check=True).stdout
    return tomllib.loads(text)["variant"]


def stage_d_runs(dataset: str = ABLATION_DATASET) -> list[dict[str, Any]]:
    return [{"label": run_label(v["method"], dataset, v["name"]), "method": v["method"], "set": dict(v.get("set", {})),
             "dataset": dataset, "variant": v["name"]} for v in ablation_variants()]


# -- the window's record ---------------------------------------------------------------------------
class Window:
    """The window folder and its manifest (rewritten atomically after every change)."""

    def __init__(self, cfg: WindowConfig):
        from ..env import make_folder

        self.cfg = cfg
        self.root = make_folder(cfg.out)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + 60 * max(cfg.minutes - cfg.reserve_minutes, 0.0)
        self.manifest: dict[str, Any] = {"format": MANIFEST_FORMAT, "version": 1, "config": asdict(cfg),
                                         "started": _now(), "environment": _environment(cfg.device),
                                         "stages": {}, "runs": {}, "weights": []}
        self.save()

    def left(self) -> float:
        """Seconds to the deadline (the budget minus the packing reserve)."""
        return self.deadline - time.monotonic()

    def save(self) -> None:
        from ..env import write_json

        self.manifest["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        write_json(self.root / "manifest.json", self.manifest)

    def log(self, name: str) -> Path:
        from ..env import make_folder

        return make_folder(self.root / "logs") / f"{name}.log"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _environment(device: str) -> dict[str, Any]:
    from ..env import device_name, git_commit, resolve_device, versions

    commit = git_commit()
    carried = Path("carry/commit")
    if commit == "unknown" and carried.is_file():  # the device gets the tree without .git: make_carry.sh notes it
        commit = carried.read_text().strip() + " (from carry/commit)"
    return {"device": device_name(resolve_device(device)), "commit": commit, "versions": versions(),
            "host": os.uname().nodename}


def _joinbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "joinbench", *args]


def _run_all(window: Window, jobs: list[tuple[str, list[str]]], seconds: float) -> dict[str, str]:
    """Start ``jobs`` (name, argv) at once, each logging to logs/<name>.log; wait until
    ``seconds`` have passed, then interrupt (Ctrl-C: trainings checkpoint) and finally kill
    what is left. Returns name -> done | failed (exit N) | timeout."""
    procs = {}
    for name, argv in jobs:
        log = window.log(name).open("w")
        log.write("$ " + shlex.join(argv) + "\n")
        log.flush()
        procs[name] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log)
    end = time.monotonic() + max(seconds, 1.0)
    status: dict[str, str] = {}
    for name, (p, log) in procs.items():
        try:
            rc = p.wait(timeout=max(end - time.monotonic(), 0.1))
            status[name] = "done" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGINT)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            status[name] = "timeout"
        log.close()
    return status


def _collect(window: Window, folder: Path) -> list[str]:
    """Copy a training run's complete exports (each sidecar and the weight files it names; never
    checkpoints, never weights whose sidecar was not written) into the window's weights/
    (returned) and the machine's joinbench/weights (used by later stages)."""
    from ..env import make_folder
    from ..gan.bank import weights_dir
    from .ship import exported_files

    dest = make_folder(window.root / "weights")
    names = exported_files(folder)
    for name in names:
        shutil.copy2(folder / name, dest / name)
        shutil.copy2(folder / name, weights_dir() / name)
    return names


def _train_stage(window: Window, stage: str, jobs: list[tuple[str, list[str], Path]], minutes: float) -> None:
    t0 = time.monotonic()
    entry = window.manifest["stages"][stage] = {"minutes": round(minutes, 2), "started": _now(), "jobs": {}}
    window.save()
    # The trainings stop themselves after --minutes (the stage's minutes less the overhead) and
    # export; a training still running GRACE_S after the stage's end is interrupted.
    status = _run_all(window, [(n, argv) for n, argv, _ in jobs], min(60 * minutes + GRACE_S, window.left()))
    for name, argv, folder in jobs:
        files = _collect(window, folder) if status[name] in ("done", "timeout") else []
        window.manifest["weights"] += [f for f in files if f not in window.manifest["weights"]]
        entry["jobs"][name] = {"status": status[name], "command": shlex.join(argv[2:]), "exported": files}
    entry["seconds"] = round(time.monotonic() - t0, 1)
    entry["finished"] = _now()
    window.save()


def _train_job(window: Window, minutes: float, model: str, dataset: str, component: str | None,
               *extra: str) -> tuple[str, list[str], Path]:
    """One training of a stage: ``joinbench train MODEL`` continuing the shipped weights, stopped
    by ``--minutes`` (the stage's minutes less the start-up and export overhead)."""
    cfg = window.cfg
    name = "-".join(x for x in (model, dataset, component) if x)
    folder = window.root / "train" / name
    argv = _joinbench("train", model, "--dataset", dataset, *(["--component", component] if component else []),
                      "--device", cfg.device, "--kimg", "1000000",
                      "--minutes", f"{max(minutes - cfg.overhead_minutes, 0.05):.3f}", "--init-from", "shipped",
                      "--seed", str(cfg.seed), *extra, "--quiet", "--out", str(folder))
    return name, argv, folder


def unet_settings(domain: str) -> list[str]:
    """The shipped U-Net's architecture, resolution and loss as ``train unet`` options: a window
    continues that network with its own objective (``--init-from`` needs the same shape)."""
    from ..gan.bank import weights_dir

    sc = weights_dir() / f"{domain}-unet.json"
    if not sc.is_file():
        return []
    data = json.loads(sc.read_text())
    net, train = data.get("network") or {}, data.get("train") or {}
    pairs = (("--width", net.get("base_width")), ("--levels", net.get("levels")),
             ("--resolution", data.get("resolution")), ("--lpips-weight", train.get("lpips_weight")))
    return [x for flag, v in pairs if v is not None for x in (flag, str(v))]


def stage_a(window: Window, minutes: float) -> None:
    cfg = window.cfg
    _train_stage(window, "a", [_train_job(window, minutes, "prior", ds, comp, "--resolution", str(cfg.resolution),
                                          "--batch", str(cfg.batch), "--snapshot-kimg", "1000000")
                               for ds in DOMAINS for comp in ("all", "joint")], minutes)


def stage_b(window: Window, minutes: float) -> None:
    cfg = window.cfg
    extra = ("--batch", str(cfg.model_batch))
    gain = ("--gain-images", str(cfg.gain_images), "--gain-steps", str(cfg.gain_steps))
    jobs = [_train_job(window, minutes, "encoder", ds, comp, *extra, *gain) for ds in DOMAINS for comp in ("all", "joint")]
    jobs += [_train_job(window, minutes, "unet", ds, None, *extra, *unet_settings(ds)) for ds in DOMAINS]
    _train_stage(window, "b", jobs, minutes)


def run_command(cfg: WindowConfig, run: dict[str, Any], out: Path) -> list[str]:
    """The ``joinbench run`` of one stage-c/d run (all images in one batch)."""
    argv = _joinbench("run", "--method", run["method"], "--dataset", run["dataset"], "--limit", str(cfg.limit),
                      "--batch-size", str(cfg.limit), "--resolution", str(cfg.resolution), "--device", cfg.device,
                      "--metrics", ",".join(GPU_METRICS), "--save-predictions", "--quiet", "--out", str(out))
    fields = method_fields(run["method"])
    common = {k: v for k, v in (item.split("=", 1) for item in cfg.join_set) if k.split(".")[0] in fields}
    for k, v in {**common, **run["set"]}.items():
        argv += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    return argv


def method_fields(method: str) -> set[str]:
    """The config fields of a registered method (``--join-set`` reaches only those it has:
    ``pti_steps`` is for ``join``, not for ``join-s1``)."""
    import dataclasses

    from ..registry import create_method

    return {f.name for f in dataclasses.fields(create_method(method).config)}


def run_stage(window: Window, stage: str, runs: list[dict[str, Any]], until: float) -> None:
    """Runs one after the other until ``until`` (monotonic seconds); a run cut off is dropped
    (its folder removed) and reported as ``timeout``; runs in ``skip_runs`` are not made."""
    entry = window.manifest["stages"].setdefault(stage, {"started": _now()})
    done_commands: dict[str, str] = {}  # the same command twice (the ablation's baseline = stage c's join)
    for run in runs:
        label = run["label"]
        if label in window.cfg.skip_runs:
            window.manifest["runs"][label] = {"status": "returned earlier", "stage": stage, **_meta(run)}
            continue
        folder = window.root / _folder(label)
        argv = run_command(window.cfg, run, folder)
        key = shlex.join(argv[:-1])
        if key in done_commands:
            window.manifest["runs"][label] = {"status": "done", "stage": stage, "same_as": done_commands[key],
                                              "folder": window.manifest["runs"][done_commands[key]]["folder"],
                                              **_meta(run)}
            window.save()
            continue
        seconds = until - time.monotonic()
        if seconds < 5:
            window.manifest["runs"][label] = {"status": "not started (no time left)", "stage": stage, **_meta(run)}
            continue
        t, job = time.monotonic(), f"{stage}-{Path(_folder(label)).name}"
        status = _run_all(window, [(job, argv)], seconds)[job]
        if status != "done":
            shutil.rmtree(folder, ignore_errors=True)
        else:
            done_commands[key] = label
        window.manifest["runs"][label] = {"status": status, "stage": stage, "folder": _folder(label),
                                          "seconds": round(time.monotonic() - t, 1), "command": shlex.join(argv[2:]),
                                          **_meta(run)}
        window.save()
    entry["finished"] = _now()
    window.save()


def _meta(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run[k] for k in ("method", "dataset", "set", "variant") if k in run}


def run_window(cfg: WindowConfig) -> Window:
    """Run the stages of ``cfg`` in order within its budget; returns the window (see manifest.json)."""
    from ..campaign.history import weights_record
    from ..gan.bank import weights_dir

    cfg.check()
    window = Window(cfg)
    budget = stage_minutes(cfg)
    print(f"window: {cfg.minutes:g} minutes, stages {cfg.stages}: "
          + ", ".join(f"{s} {m:.2f} min" for s, m in budget.items()), flush=True)
    later = lambda *stages: sum(budget.get(s, 0.0) for s in stages)  # noqa: E731
    if "a" in cfg.stages:  # a stage that overran shortens the next training stage, never the evaluation's share
        stage_a(window, max(min(budget["a"], window.left() / 60 - later("b", "c")), 0.1))
    if "b" in cfg.stages:
        stage_b(window, max(min(budget["b"], window.left() / 60 - later("c")), 0.1))
    # what the evaluation runs with: the ship step checks the installed priors are these
    window.manifest["evaluated_with"] = {k: v["sha256"] for k, v in weights_record(weights_dir())["priors"].items()}
    window.save()
    if "c" in cfg.stages:
        until = time.monotonic() + min(60 * budget["c"], window.left()) if "d" in cfg.stages else window.deadline
        run_stage(window, "c", stage_c_runs(), until)
    if "d" in cfg.stages:
        run_stage(window, "d", stage_d_runs(cfg.ablation_dataset), window.deadline)
    window.manifest["finished"] = _now()
    window.save()
    for s, e in window.manifest["stages"].items():
        if e.get("jobs"):
            print(f"stage {s}: " + ", ".join(f"{n} {j['status']}" for n, j in e["jobs"].items()), flush=True)
    for label, r in window.manifest["runs"].items():
        print(f"{label}: {r['status']}" + (f" ({r['seconds']} s)" if "seconds" in r else ""), flush=True)
    return window
