"""`joinbench timing`: how long each method takes per image, how that changes with the
batch size, and how far the arithmetic is from what the hardware can do.

For every method and batch size the same test images are decomposed batch after batch.
Methods are built by the planner (:func:`joinbench.plan.prepare_method`: the dataset's domain
weights, the device's settings) and every batch is timed by the runner's own
:func:`joinbench.runner.timed_decompose` (the device synchronised around ``decompose``,
inference mode unless the method optimises). The first ``warmup`` batches at every batch
size are run but not counted: they pay for lazy set-up (loading weights, GAN-bank
statistics, LPIPS), allocator growth and kernel selection, which a long benchmark run pays
once. Seconds per image are batch seconds / batch size; mean, median and p95 are taken over
the counted batches (every batch is full: images cycle through the test split when a batch
needs more than the split holds, which changes nothing for timing).

Inversion methods optimise for ``steps`` iterations per image (1000 for JoIN), minutes per
batch on a CPU; on a CPU every config field named ``steps`` or ``*_steps`` is capped at
``CPU_MAX_STEPS`` unless set with ``--set`` (``--max-steps`` chooses the cap, 0 removes
it). The stage breakdown reports seconds per step, which do not depend on the cap.

FLOPs and peaks: :mod:`joinbench.flops`. The JoIN / feed-forward ratio takes the first
``optimisation`` and the first ``feed-forward`` method of ``--methods`` (their declared
:attr:`~joinbench.method.Method.kind`). Speed figures mean nothing on a busy machine, so the
load during the measurement is recorded and the report warns when the load average exceeded
the cores in use or other processes took a share of the CPU (:class:`MachineLoad`).

Outputs (written atomically into ``--out``): ``timing.json`` (everything, including every
batch's seconds and stage timings), ``timing.md`` (how the numbers were made and tables)
and ``timing.png`` (seconds per image against batch size, log scale).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import torch
import typer

from .env import command_line, device_name, git_commit, peak_memory_mb, resolve_device, versions, write_atomic, write_json
from .errors import JoinbenchError, did_you_mean
from .flops import add_flop_rates, device_peak, measure_matmul_peak, method_flops, step_fields
from .plan import open_dataset, prepare_method, slug
from .registry import DATASETS, METHODS, create_method
from .runner import timed_decompose
from .types import Batch

CPU_MAX_STEPS = 10  # default cap of step fields on a CPU (per-step times do not depend on it)
GLOBAL = "*"  # key of settings that apply to every method that has the field
BUSY_OTHERS_SHARE = 0.1  # other processes' share of the machine's CPU time above which timing warns


@dataclass
class TimingConfig:
    """Everything that defines a timing report (the CLI's options).

    overrides: method settings, ``{method: {key: value}}``; the key ``"*"`` holds settings for
    every method whose config has that field (``--set steps=100``), a method's own entry
    wins (``--set join-s1:steps=100``). See :func:`parse_timing_sets`.
    max_steps: cap on step fields not set explicitly; None: ``CPU_MAX_STEPS`` on a CPU and no
    cap on a GPU; 0: no cap.
    """

    dataset: str = "materials"
    methods: tuple[str, ...] = ("join-s1", "unet", "color-retinex")
    batch_sizes: tuple[int, ...] = (1, 8, 64)
    device: str = "auto"
    images: int = 16  # images timed per method and batch size (at least one batch)
    warmup: int = 1  # batches run first at every batch size and not counted
    resolution: int = 64
    seed: int = 0  # test-split seed (procedural datasets)
    out: Path | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_steps: int | None = None
    count_flops: bool = True
    peak_seconds: float = 1.0  # how long the matmul peak is measured
    progress: bool = True
    command: str | None = None  # recorded in the report; default: an equivalent command rebuilt from the config


# ---------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------
def parse_timing_sets(items: list[str] | None, methods: tuple[str, ...] | list[str]) -> dict[str, dict[str, str]]:
    """``--set`` items -> overrides: ``key=value`` applies to every method with that field,
    ``METHOD:key=value`` to one method of ``methods`` (method names may hold colons, as in
    ``predictions:DIR``: the last colon before ``=`` separates method and key)."""
    out: dict[str, dict[str, str]] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise JoinbenchError(f"--set expects key=value or METHOD:key=value, got {item!r} (e.g. --set join-s1:steps=100).")
        method, colon, bare = key.rpartition(":")
        if colon:
            if method not in methods:
                raise JoinbenchError(f"--set {item!r} names method {method!r}, which is not in --methods "
                                     f"({', '.join(methods)}).{did_you_mean(method, methods)}")
            if not bare:
                raise JoinbenchError(f"--set {item!r} has no setting name after {method + ':'!r}.")
            out.setdefault(method, {})[bare] = value.strip()
        else:
            out.setdefault(GLOBAL, {})[key] = value.strip()
    return out


def _has_field(config: Any, key: str) -> bool:
    if not dataclasses.is_dataclass(config):
        return False
    head, dot, rest = key.partition(".")
    names = {f.name: f for f in dataclasses.fields(config)}
    if head not in names:
        return False
    return _has_field(getattr(config, head), rest) if dot else True



def resolve_overrides(cfg: TimingConfig, device: torch.device) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, int]]]:
    """Per method: the overrides to create it with (global settings it has, its own, and
    the step cap) and which step fields were capped (from -> to). Creating the methods
    here also checks every name before anything runs."""
    globals_ = dict(cfg.overrides.get(GLOBAL, {}))
    unused = set(globals_)
    cap = cfg.max_steps if cfg.max_steps is not None else (CPU_MAX_STEPS if device.type == "cpu" else 0)
    if cap < 0:
        raise JoinbenchError(f"--max-steps must be 0 (no cap) or more, got {cap}.")
    resolved, capped = {}, {}
    for name in cfg.methods:
        default_cfg = create_method(name).config
        own = {k: v for k, v in globals_.items() if _has_field(default_cfg, k)}
        unused -= set(own)
        own.update(cfg.overrides.get(name, {}))
        method_cfg = create_method(name, **own).config  # unknown keys fail here, naming the valid ones
        capped[name] = {}
        if cap:
            for key, steps in step_fields(method_cfg).items():
                if key not in own and steps > cap:
                    own[key] = cap
                    capped[name][key] = steps
        resolved[name] = own
    if unused:
        fields = sorted({f.name for name in cfg.methods for f in dataclasses.fields(create_method(name).config)})
        hint = "".join(did_you_mean(k, fields) for k in sorted(unused))
        raise JoinbenchError(f"--set {', '.join(sorted(unused))}: none of {', '.join(cfg.methods)} has such a setting."
                             f"{hint} (Use METHOD:key=value for one method; see `joinbench list methods`.)")
    return resolved, capped


def _check(cfg: TimingConfig) -> None:
    if not cfg.methods:
        raise JoinbenchError("--methods is empty; name one or more methods, e.g. --methods unet,color-retinex.")
    dup = sorted({m for m in cfg.methods if list(cfg.methods).count(m) > 1})
    if dup:
        raise JoinbenchError(f"--methods names {', '.join(dup)} more than once.")
    if not cfg.batch_sizes or any(b < 1 for b in cfg.batch_sizes):
        raise JoinbenchError(f"--batch-sizes must be positive integers, got {','.join(map(str, cfg.batch_sizes)) or 'none'}.")
    if cfg.images < 1:
        raise JoinbenchError(f"--images must be at least 1, got {cfg.images}.")
    if cfg.warmup < 0:
        raise JoinbenchError(f"--warmup must be 0 or more, got {cfg.warmup}.")
    for name in cfg.methods:
        METHODS.get(name)  # unknown names: one line with a did-you-mean hint
    DATASETS.get(cfg.dataset)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise JoinbenchError(f"--batch-sizes expects a comma list of integers such as 1,8,64, got {text!r}.") from None
    return tuple(dict.fromkeys(sizes))


# ---------------------------------------------------------------------------------------
# running methods
# ---------------------------------------------------------------------------------------
class _ImagePool:
    """The first test images on the device; batch ``k`` of size ``b`` takes the next ``b``
    images, cycling, so every batch is full and consecutive batches differ."""

    def __init__(self, dataset, n: int, device: torch.device):
        n = max(1, min(n, len(dataset)))
        samples = [dataset[i] for i in range(n)]
        try:
            self.images = torch.stack([s.image for s in samples]).to(device, torch.float32)
        except RuntimeError:
            raise JoinbenchError(f"{dataset.name or 'the dataset'}'s test images have different sizes; timing "
                                 "needs batches of one size (use a procedural dataset or images of one size).") from None
        self.ids = [s.id for s in samples]

    def batch(self, k: int, size: int) -> Batch:
        idx = [(k * size + j) % len(self.ids) for j in range(size)]
        return Batch(ids=[self.ids[i] for i in idx], image=self.images[idx])


def _batches_for(cfg: TimingConfig, size: int) -> int:
    return max(1, math.ceil(cfg.images / size))


def _stats(per_image: list[float]) -> dict[str, float]:
    a = np.asarray(per_image, dtype=np.float64)
    mean = float(a.mean())
    return {"seconds_per_image_mean": mean, "seconds_per_image_median": float(np.median(a)),
            "seconds_per_image_p95": float(np.percentile(a, 95)), "seconds_per_image_min": float(a.min()),
            "images_per_second": 1.0 / mean if mean > 0 else None}


def _stages(timed: list[dict[str, Any]], size: int, per_image_mean: float) -> dict[str, dict[str, float]]:
    """Per stage key (all but "total" and one-off "*_setup"): seconds per image (and their
    share of the whole), or seconds per step for ``*_per_step`` keys, over counted batches."""
    keys: list[str] = []
    for b in timed:
        keys += [k for k in b["timings"] if k not in keys and k != "total" and not k.endswith("_setup")]
    out = {}
    for k in keys:
        vals = [float(b["timings"][k]) for b in timed if k in b["timings"]]
        if k.endswith("_per_step"):
            out[k] = {"seconds_per_step": float(np.mean(vals))}
        else:
            sec = float(np.mean(vals)) / size
            out[k] = {"seconds_per_image": sec, "share": sec / per_image_mean if per_image_mean > 0 else None}
    return out



def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()



class MachineLoad:
    """How busy the machine was while timing ran: the 1-minute load average at the end
    against the cores the measurement used (torch's threads on a CPU, one on a GPU), and the
    share of the machine's CPU time that other processes took (Linux ``/proc/stat`` minus this
    process's own CPU time). Either above its threshold makes the speed figures unreliable."""

    def __init__(self, device: torch.device):
        self.cores_in_use = torch.get_num_threads() if device.type == "cpu" else 1
        self.t0, self.cpu0, self.busy0 = time.perf_counter(), time.process_time(), self._machine_busy()

    @staticmethod
    def _machine_busy() -> tuple[float, float] | None:
        """(busy, total) CPU seconds of the whole machine since boot, or None off Linux."""
        try:
            fields = [float(x) for x in open("/proc/stat").readline().split()[1:]]
        except (OSError, ValueError):
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        return (sum(fields) - idle) / ticks, sum(fields) / ticks

    def report(self) -> dict[str, Any]:
        wall, own = time.perf_counter() - self.t0, time.process_time() - self.cpu0
        out: dict[str, Any] = {"cores_in_use": self.cores_in_use, "logical_cpus": os.cpu_count(),
                               "load_average_1min": os.getloadavg()[0] if sys.platform != "win32" else None,
                               "wall_seconds": wall, "own_cpu_seconds": own, "others_cpu_share": None}
        end = self._machine_busy()
        if self.busy0 is not None and end is not None and end[1] > self.busy0[1]:
            busy, total = end[0] - self.busy0[0], end[1] - self.busy0[1]
            out["others_cpu_share"] = max(0.0, busy - own) / total
        reasons = []
        if out["load_average_1min"] is not None and out["load_average_1min"] > self.cores_in_use:
            reasons.append(f"load average {out['load_average_1min']:.2f} above the {self.cores_in_use} core(s) in use")
        if out["others_cpu_share"] is not None and out["others_cpu_share"] > BUSY_OTHERS_SHARE:
            reasons.append(f"other processes took {100 * out['others_cpu_share']:.0f}% of the machine's CPU time")
        out["busy"] = bool(reasons)
        out["warning"] = ("The machine was busy during this measurement (" + "; ".join(reasons) + "): the speed figures "
                          "are not this machine's, rerun it on an idle machine.") if reasons else None
        return out


def _build(name: str, overrides: dict[str, Any], dataset, device: torch.device):
    """A method as a run builds it (the planner), loaded on ``device``; and the planner's notes."""
    method, notes = prepare_method(name, overrides, dataset, device)
    return method.to(device), notes


# ---------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------
def run_timing(cfg: TimingConfig) -> dict[str, Any]:
    """Time every method at every batch size, count FLOPs, write timing.json / .md / .png
    into ``cfg.out`` and return the report (what timing.json holds, plus ``out``)."""
    from tqdm import tqdm

    _check(cfg)
    device = resolve_device(cfg.device)
    overrides, capped = resolve_overrides(cfg, device)
    dataset = open_dataset(cfg.dataset, cfg.resolution, cfg.seed)
    out = Path(cfg.out) if cfg.out else Path("runs") / (
        f"timing-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{slug(cfg.dataset)}")
    if out.exists() and not out.is_dir():
        raise JoinbenchError(f"--out {out} is a file; give a folder for the timing report.")
    sizes = tuple(sorted(set(cfg.batch_sizes)))
    pool = _ImagePool(dataset, max(b * (cfg.warmup + _batches_for(cfg, b)) for b in sizes), device)
    total_batches = len(cfg.methods) * sum(cfg.warmup + _batches_for(cfg, b) for b in sizes)
    load = MachineLoad(device)
    bar = tqdm(total=total_batches, unit="batch", desc="timing", disable=not cfg.progress, dynamic_ncols=True)
    results: list[dict[str, Any]] = []
    methods: dict[str, dict[str, Any]] = {}
    for name in cfg.methods:
        bar.set_description(f"timing {name}")
        method, notes = _build(name, overrides[name], dataset, device)
        for note in notes:
            bar.write(note)
        setup: dict[str, float] = {}
        for size in sizes:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            batches = []
            n_timed = _batches_for(cfg, size)
            for k in range(cfg.warmup + n_timed):
                bar.set_postfix_str(f"batch size {size}")
                seconds, dec = timed_decompose(method, pool.batch(k, size), device)
                timings = {kk: float(v) for kk, v in dec.timings.items()}
                setup.update({kk: v for kk, v in timings.items() if kk.endswith("_setup")})
                batches.append({"seconds": seconds, "images": size, "warmup": k < cfg.warmup, "timings": timings,
                                "failed": sum(e is not None for e in dec.errors)})
                del dec
                bar.update(1)
            timed = [b for b in batches if not b["warmup"]]
            per_image = [b["seconds"] / size for b in timed]
            row = {"method": name, "batch_size": size, "images": size * len(timed), "batches_timed": len(timed),
                   **_stats(per_image), "peak_memory_mb": peak_memory_mb(device),
                   "failed_images": sum(b["failed"] for b in timed)}
            row["stages"] = _stages(timed, size, row["seconds_per_image_mean"])
            row["batches"] = batches
            results.append(row)
        info = {"kind": method.kind, "config": method.describe().get("config", {}),
                "overrides": {k: v for k, v in overrides[name].items()}, "notes": notes,
                "capped_steps": {k: {"from": v, "to": overrides[name][k]} for k, v in capped[name].items()},
                "setup_seconds": setup}
        if cfg.count_flops:
            bar.set_postfix_str("counting FLOPs")
            counted = pool.batch(0, sizes[0])
            info["flops"] = method_flops(
                method, lambda extra: _build(name, {**overrides[name], **extra}, dataset, device)[0],
                lambda m: timed_decompose(m, counted, device), sizes[0])
        methods[name] = info
        del method
        _free(device)
    bar.close()
    peak = {"measured": measure_matmul_peak(device, cfg.peak_seconds), "spec": device_peak(device_name(device))}
    add_flop_rates(results, methods, peak)
    report = {
        "config": _config_json(cfg, sizes),
        "environment": {
            "command": _command(cfg), "device": str(device), "device_name": device_name(device),
            "versions": versions(), "commit": git_commit(), "torch_threads": torch.get_num_threads(),
            "cuda_matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "peak_memory": ("torch.cuda.max_memory_allocated, reset per batch size" if device.type == "cuda" else
                            "peak resident set size of the process so far (cumulative over the run, not per row)"),
            "machine_load": load.report(),
        },
        "dataset": {"name": cfg.dataset, "resolution": cfg.resolution, "size": len(dataset),
                    "images_in_pool": len(pool.ids)},
        "peak": peak,
        "methods": methods,
        "results": results,
        "ratios": ratios(results, methods),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "timing.json", report)
    write_atomic(out / "timing.md", timing_markdown(report))
    from .viz import save_image_atomic

    save_image_atomic(timing_plot(report), out / "timing.png")
    report["out"] = str(out)
    return report


def ratios(results: list[dict[str, Any]], methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Optimisation / feed-forward seconds per image at each batch size (the first method of
    each declared kind in --methods order, e.g. JoIN / U-Net), and per method the images/s at
    the largest batch size over those at batch size 1 (else the smallest) -- the speed-up of
    batched over sequential processing."""
    names = list(methods)
    first = lambda kind: next((n for n in names if methods[n]["kind"] == kind), None)
    join, ff = first("optimisation"), first("feed-forward")
    by = {(r["method"], r["batch_size"]): r for r in results}
    out: dict[str, Any] = {}
    if join and ff:
        per_bs = {}
        for (m, b), r in by.items():
            if m == join and (ff, b) in by:
                per_bs[str(b)] = r["seconds_per_image_mean"] / by[(ff, b)]["seconds_per_image_mean"]
        out["optimisation_vs_feedforward"] = {"numerator": join, "denominator": ff,
                                      "seconds_per_image_ratio": dict(sorted(per_bs.items(), key=lambda kv: int(kv[0])))}
    speedups = {}
    for m in names:
        sizes = sorted(b for (mm, b) in by if mm == m)
        if len(sizes) < 2:
            continue
        base = 1 if 1 in sizes else sizes[0]
        top = sizes[-1]
        speedups[m] = {"kind": methods[m]["kind"], "from_batch_size": base, "to_batch_size": top,
                       "speedup": by[(m, top)]["images_per_second"] / by[(m, base)]["images_per_second"]}
    out["batched_speedup"] = speedups
    return out


def _config_json(cfg: TimingConfig, sizes: tuple[int, ...]) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["batch_sizes"] = list(sizes)
    d["methods"] = list(cfg.methods)
    d["out"] = None if cfg.out is None else str(cfg.out)
    return d


def _command(cfg: TimingConfig) -> str:
    if cfg.command:
        return cfg.command
    parts = ["joinbench", "timing", "--dataset", cfg.dataset, "--methods", ",".join(cfg.methods),
             "--batch-sizes", ",".join(map(str, cfg.batch_sizes)), "--device", cfg.device, "--images", str(cfg.images),
             "--warmup", str(cfg.warmup), "--resolution", str(cfg.resolution)]
    if cfg.max_steps is not None:
        parts += ["--max-steps", str(cfg.max_steps)]
    for method, sets in cfg.overrides.items():
        for k, v in sets.items():
            parts += ["--set", (k if method == GLOBAL else f"{method}:{k}") + f"={v}"]
    if cfg.out:
        parts += ["--out", str(cfg.out)]
    return " ".join(shlex.quote(p) for p in parts)

# ---------------------------------------------------------------------------------------
# Markdown and plot
# ---------------------------------------------------------------------------------------
def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 1000 or abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def _table(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) if rows else "(none)"


def timing_markdown(report: dict[str, Any]) -> str:
    env, cfg, peak = report["environment"], report["config"], report["peak"]
    ds = report["dataset"]
    lines = [f"# Timing on {ds['name']} at {ds['resolution']} px: {env['device_name']}", "",
             f"Made with `{env['command']}`.", "",
             f"- commit: `{env['commit']}`; date: {env['date']}",
             f"- device: {env['device_name']}; torch threads: {env['torch_threads']}; "
             f"TF32 matmul: {env['cuda_matmul_tf32']}, cuDNN TF32: {env['cudnn_tf32']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
             f"- per method and batch size: {cfg['warmup']} warm-up batch(es) not counted, then enough batches for "
             f"{cfg['images']} images (at least one); the device is synchronised around every `decompose`; "
             f"test images of {ds['name']} (first {ds['images_in_pool']}, cycled)",
             f"- peak memory: {env['peak_memory']}"]
    load = env.get("machine_load") or {}
    if load:
        share = load.get("others_cpu_share")
        lines.append(f"- machine load: 1-minute load average {_num(load.get('load_average_1min'))} with "
                     f"{load['cores_in_use']} core(s) in use; other processes' share of the CPU time "
                     + ("unknown" if share is None else f"{100 * share:.0f}%"))
    lines.append("")
    if load.get("warning"):
        lines += [f"**Warning: {load['warning']}**", ""]
    notes = [n for info in report["methods"].values() for n in info.get("notes", [])]
    if notes:
        lines += ["Device settings: " + "; ".join(notes) + ".", ""]
    caps = [f"{m}: " + ", ".join(f"{k} {c['from']} -> {c['to']}" for k, c in info["capped_steps"].items())
            for m, info in report["methods"].items() if info["capped_steps"]]
    if caps:
        lines += ["Step counts capped for this run (per-step times are unaffected; `--max-steps 0` removes the cap): "
                  + "; ".join(caps) + ".", ""]

    lines += ["## Seconds per image", ""]
    lines.append(_table([{
        "method": r["method"], "batch": r["batch_size"], "images": r["images"],
        "s/img mean": _num(r["seconds_per_image_mean"]), "median": _num(r["seconds_per_image_median"]),
        "p95": _num(r["seconds_per_image_p95"]), "img/s": _num(r["images_per_second"]),
        "peak MB": _num(r["peak_memory_mb"], 4), "failed": r["failed_images"],
    } for r in report["results"]]))
    lines.append("")

    staged = [r for r in report["results"] if r["stages"]]
    if staged:
        lines += ["## Stage breakdown", "",
                  "Seconds per image of each stage (share of the whole), and seconds per optimisation step "
                  "of a whole batch.", ""]
        keys: list[str] = []
        for r in staged:
            keys += [k for k in r["stages"] if k not in keys]
        rows = []
        for r in staged:
            row: dict[str, Any] = {"method": r["method"], "batch": r["batch_size"]}
            for k in keys:
                s = r["stages"].get(k)
                if k.endswith("_per_step"):
                    row[f"{k[:-len('_per_step')]} s/step"] = _num(s["seconds_per_step"]) if s else "–"
                else:
                    row[f"{k} s/img"] = (f"{_num(s['seconds_per_image'])} ({100 * s['share']:.0f}%)"
                                         if s and s.get("share") is not None else "–")
            rows.append(row)
        lines.append(_table(rows))
        setups = [f"{m}: " + ", ".join(f"{k} {_num(v)} s" for k, v in info["setup_seconds"].items())
                  for m, info in report["methods"].items() if info["setup_seconds"]]
        if setups:
            lines += ["", "One-off set-up (in the first warm-up batch): " + "; ".join(setups) + "."]
        lines.append("")

    lines += ["## Achieved FLOP/s", ""]
    meas = peak["measured"]
    spec = peak.get("spec")
    lines.append(f"Peaks: measured matmul peak {_num(meas['tflops'])} TFLOP/s ({meas['dtype']} {meas['n']}x{meas['n']} "
                 f"matmuls for {meas['seconds']:.1f} s{', TF32' if meas['tf32'] else ''})" +
                 (f"; datasheet ({spec['name']}, dense): " + ", ".join(f"{k} {v:g}" for k, v in spec["tflops"].items())
                  + " TFLOP/s" if spec else "; no datasheet peak known for this device") + ".")
    lines += ["", "FLOPs counted by `torch.utils.flop_counter` (matrix products and convolutions, forward and "
              "backward; element-wise work and work outside torch, such as NumPy/SciPy, are not counted, so these are "
              "lower bounds). Inversion methods: counted at 1 and 2 steps and extrapolated linearly to the "
              "configured steps.", ""]
    rows = []
    for r in report["results"]:
        fl = report["methods"][r["method"]].get("flops")
        if not fl:
            continue
        seen = fl["flops_per_image"] > 0  # 0: no torch matmul/conv (e.g. NumPy/SciPy work), rate unknown
        row = {"method": r["method"], "batch": r["batch_size"], "GFLOP/img": _num(fl["flops_per_image"] / 1e9),
               "achieved TFLOP/s": _num(r["achieved_flops_per_second"] / 1e12) if seen else "–",
               "% measured peak": _num(r.get("percent_of_measured_peak")) if seen else "–"}
        if spec:
            row["% fp32 peak"] = _num(r.get("percent_of_fp32_peak")) if seen else "–"
            row["% bf16 peak"] = _num(r.get("percent_of_bf16_peak")) if seen else "–"
        rows.append(row)
    lines += [_table(rows) if rows else "(FLOPs not counted: --no-flops)", ""]

    rat = report["ratios"]
    lines += ["## Ratios", ""]
    jf = rat.get("optimisation_vs_feedforward")
    if jf:
        lines += [f"{jf['numerator']} / {jf['denominator']} seconds per image: " + ", ".join(
            f"batch {b}: {_num(v)}x" for b, v in jf["seconds_per_image_ratio"].items()) + ".", ""]
    else:
        lines += ["Optimisation / feed-forward: needs a method of each kind in --methods (e.g. join and unet).", ""]
    if rat["batched_speedup"]:
        lines.append(_table([{"method": m, "kind": s["kind"], "images/s speed-up": f"{_num(s['speedup'])}x",
                              "batch": f"{s['to_batch_size']} vs {s['from_batch_size']}"}
                             for m, s in rat["batched_speedup"].items()]))
    else:
        lines.append("Batched / sequential speed-up: needs two or more batch sizes.")
    lines += ["", "![seconds per image against batch size](timing.png)", ""]
    return "\n".join(lines)


PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def timing_plot(report: dict[str, Any], width: int = 720, height: int = 440):
    """Seconds per image (mean, log scale) against batch size (log-spaced), one line per
    method, drawn with PIL so the figure looks the same on every machine and needs no
    plotting library."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 70, 170, 30, 45
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    series: dict[str, list[tuple[int, float]]] = {}
    for r in report["results"]:
        series.setdefault(r["method"], []).append((r["batch_size"], max(r["seconds_per_image_mean"], 1e-12)))
    sizes = sorted({b for pts in series.values() for b, _ in pts})
    values = [v for pts in series.values() for _, v in pts]
    lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    hi = max(hi, lo + 1)
    lx0, lx1 = math.log2(sizes[0]), math.log2(sizes[-1])
    xpos = lambda b: (x0 + x1) / 2 if lx1 == lx0 else x0 + (math.log2(b) - lx0) / (lx1 - lx0) * (x1 - x0)
    ypos = lambda v: y1 - (math.log10(v) - lo) / (hi - lo) * (y1 - y0)
    d.text((x0, 8), f"seconds per image (log) vs batch size: {report['dataset']['name']}, "
                    f"{report['environment']['device_name'][:48]}", fill=(0, 0, 0), font=font)
    for e in range(lo, hi + 1):
        y = ypos(10.0 ** e)
        d.line([(x0, y), (x1, y)], fill=(225, 225, 225))
        d.text((6, y - 6), f"1e{e} s", fill=(60, 60, 60), font=font)
    for b in sizes:
        x = xpos(b)
        d.line([(x, y0), (x, y1)], fill=(235, 235, 235))
        d.text((x - 6, y1 + 6), str(b), fill=(60, 60, 60), font=font)
    d.text(((x0 + x1) / 2 - 30, y1 + 24), "batch size", fill=(0, 0, 0), font=font)
    d.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
    for i, (name, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        xy = [(xpos(b), ypos(v)) for b, v in sorted(pts)]
        if len(xy) > 1:
            d.line(xy, fill=colour, width=2)
        for x, y in xy:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        ly = y0 + 4 + 16 * i
        d.line([(x1 + 12, ly + 6), (x1 + 32, ly + 6)], fill=colour, width=3)
        d.text((x1 + 38, ly), name[:20], fill=(0, 0, 0), font=font)
    return img


# ---------------------------------------------------------------------------------------
# the command

def timing_cmd(
    dataset: str = typer.Option("materials", "--dataset", "-d", help="registered dataset whose test images are timed"),
    methods: str = typer.Option("join-s1,unet,color-retinex", "--methods", "-m", help="comma list of registered methods"),
    batch_sizes: str = typer.Option("1,8,64", "--batch-sizes", "-b", help="comma list of batch sizes"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    images: int = typer.Option(16, "--images", "-n", help="images timed per method and batch size (at least one batch)"),
    warmup: int = typer.Option(1, "--warmup", help="batches run first at every batch size and not counted"),
    resolution: int = typer.Option(64, "--resolution", "-r", help="power of two, 16..512"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="folder for timing.md/.json/.png (default runs/timing-<time>-<dataset>)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="key=value for every method with that setting, or METHOD:key=value (repeatable)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help=f"cap on steps/*_steps settings not given with --set (default {CPU_MAX_STEPS} on CPU, none on GPU; 0: no cap)"),
    flops: bool = typer.Option(True, "--flops/--no-flops", help="count FLOPs and report achieved FLOP/s"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
):
    """Time methods at several batch sizes: timing.md, timing.json and timing.png.

    Per method and batch size: seconds per image (mean, median, p95 after warm-up), images/s,
    peak memory, JoIN's stage breakdown, achieved FLOP/s against the device's peak, and the
    optimisation / feed-forward (JoIN / U-Net) and batched / sequential ratios. Device, versions and commit are recorded.

    Example: joinbench timing --dataset materials --methods join-s1,unet,color-retinex --batch-sizes 1,8 --images 8
    """
    method_list = tuple(m.strip() for m in methods.split(",") if m.strip())
    # The shell command as typed when run as `joinbench` / `python -m joinbench`; otherwise
    # (e.g. typer's test runner) run_timing rebuilds an equivalent one from the config.
    prog = Path(sys.argv[0])
    typed = prog.name == "joinbench" or (prog.name == "__main__.py" and prog.parent.name == "joinbench")
    command = command_line() if typed else None
    cfg = TimingConfig(dataset=dataset, methods=method_list, batch_sizes=parse_batch_sizes(batch_sizes), device=device,
                       images=images, warmup=warmup, resolution=resolution, out=out,
                       overrides=parse_timing_sets(set_, method_list), max_steps=max_steps, count_flops=flops,
                       progress=not quiet, command=command)
    report = run_timing(cfg)
    typer.echo((Path(report["out"]) / "timing.md").read_text())
    typer.echo(f"timing report: {report['out']}")


__all__ = ["MachineLoad", "TimingConfig", "parse_timing_sets", "ratios", "resolve_overrides", "run_timing", "timing_cmd",
           "timing_markdown", "timing_plot"]
