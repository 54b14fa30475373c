"""`joinbench profile train|stage1|pti|render|all`: kernel launches, host syncs and FLOPs per
training iteration, stage-1 step, PTI step or render call, and where they come from.

Why: on a GPU these models are bound by launches and syncs, not arithmetic (the H200 ran
54-111 images/s per GAN where the arithmetic allows ~10,000), and both are deterministic
properties of the code that can be counted on any CPU (:mod:`joinbench.launches` says what is
counted and how device placement is emulated).

**Per unit = (count of 2N units - count of N units) / N.** Warm-up (first Adam step, lazy
buffers, caches) and per-run set-up (building the models, bank statistics, the final
render) cancel. (Training and rendering may warm up for W < N units instead, ``--warmup``:
the counted units are then W..W+N-1.) Training and rendering continue one run from N to 2N units; stage 1 and PTI
run their real loops (``JointInverter.invert``, ``PivotalTuner.tune``) with ``steps=N`` and
``steps=2N``. Training defaults to N = 16 = the R1 interval, so the lazy R1 step is
amortised as in a real run. Counts do not depend on the batch (tested) nor on the machine.

**--emulate-cuda** reproduces what the CUDA path adds or removes where the CPU can: the
trainer's bf16 autocast (CPU autocast inserts its casts as ``aten._to_copy``; the CPU's and
CUDA's autocast op lists differ slightly) and its fused Adam (``fused=True`` runs on the
CPU); optimizers created without options pick the multi-tensor ``foreach`` implementation,
as on CUDA, instead of the CPU's per-parameter loop. What cannot be emulated: CUDA graphs
(a captured step replays its kernels with one launch), cuDNN/cuBLAS internals, TF32.

**The adapter layer** (the ``_Train``, ``_Stage1``, ``_PTI`` and ``_Render`` subjects) is
the only code that knows how the trainer, the inverter, the tuner and the renderer are
called: it calls the real code paths, never copies of them.
"""
from __future__ import annotations

import datetime as _dt
import contextlib
import json
import shlex
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, List, Optional

import torch
import typer

from .errors import JoinbenchError, did_you_mean
from .launches import (DEVICE, LaunchCounter, Tally, count_launches, cuda_optimizer_defaults, phase, phases_of,
                       refuse_optimizer)

KINDS = ("train", "stage1", "pti", "render")
UNITS = {"train": "iteration", "stage1": "step", "pti": "step", "render": "call"}
DEFAULT_BATCH = {"train": 16, "stage1": 2, "pti": 2, "render": 16}
DEFAULT_ITERATIONS = {"train": 16, "stage1": 4, "pti": 2, "render": 4}
# the targets (CPU-counted non-view ops per unit at 64 px, amortised render included)
TARGETS = {("train", "materials", "all"): 3000, ("train", "faces", "all"): 2500, ("stage1", None, None): 2000,
           ("pti", None, None): 2000}


@dataclass
class ProfileConfig:
    """One measurement (the CLI's options). ``batch``/``iterations``/``resolution`` None: the
    kind's default (resolution: 64 px, or the priors' own for stage1/pti)."""

    kind: str = "train"
    dataset: str = "materials"
    component: str = "all"  # train only: albedo | shading | specular | all | joint
    batch: int | None = None
    resolution: int | None = None
    iterations: int | None = None  # N
    warmup: int | None = None  # train/render: units run before the N counted ones; None: N (N vs 2N)
    priors: str | None = None  # stage1/pti: folder of exported priors; None: the shipped ones
    emulate_cuda: bool = False
    seed: int = 0
    # programmatic only (scripts/gpu_engine_bench.py): settings of the trainer's / stage 1's / PTI's config
    options: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> "ProfileConfig":
        if self.kind not in KINDS:
            raise JoinbenchError(f"Unknown profile kind {self.kind!r}.{did_you_mean(self.kind, KINDS)} "
                                 f"Use one of {', '.join(KINDS)} or all.")
        cfg = replace(self, batch=self.batch or DEFAULT_BATCH[self.kind],
                      iterations=self.iterations or DEFAULT_ITERATIONS[self.kind])
        if cfg.batch < 1 or cfg.iterations < 1 or (cfg.warmup is not None and cfg.warmup < 1):
            raise JoinbenchError(f"--batch, --iterations and --warmup must be at least 1, got {cfg.batch}, "
                                 f"{cfg.iterations} and {cfg.warmup}.")
        if cfg.kind in ("train", "render") and cfg.resolution is None:
            cfg.resolution = 64
        return cfg

    def command(self) -> str:
        parts = ["joinbench", "profile", self.kind, "--dataset", self.dataset]
        if self.kind == "train":
            parts += ["--component", self.component]
        parts += ["--batch", str(self.batch), "--iterations", str(self.iterations)]
        if self.warmup is not None:
            parts += ["--warmup", str(self.warmup)]
        if self.resolution is not None:
            parts += ["--resolution", str(self.resolution)]
        if self.priors:
            parts += ["--priors", self.priors]
        if self.emulate_cuda:
            parts.append("--emulate-cuda")
        return " ".join(shlex.quote(p) for p in parts)


# -----------------------------------------------------------------------------------------
# measuring
# -----------------------------------------------------------------------------------------
def measure_stepwise(step: Callable[[int], None], n: int, warmup: int | None = None) -> tuple[Tally, list[Tally]]:
    """Units 0..W-1 warm up (W = ``warmup``, default N), units W..W+N-1 are the figure: (mean
    per unit, each unit's tally). Warm-up runs counted too, so that placement is tracked."""
    w = n if warmup is None else warmup
    with LaunchCounter() as c:
        for i in range(w):
            step(i)
        start = c.snapshot()
        each = []
        for i in range(w, w + n):
            before = c.snapshot()
            step(i)
            each.append(c.snapshot() - before)
        end = c.snapshot()
    return (end - start) / n, each


def measure_runs(run: Callable[[int], None], n: int) -> Tally:
    """(count of run(2N) - count of run(N)) / N, for loops that only run whole."""
    return (count_launches(lambda: run(2 * n)) - count_launches(lambda: run(n))) / n


# -- the adapter layer: the only code that knows how the subjects are called ---------------
class _Train:
    """One iteration of ``joinbench train prior``. The engine (``PriorTraining.iteration``: a
    batch from the device data pool, whose refreshes re-render a fraction of it now and then,
    and the fused bank's G, D, R1 and EMA steps); before it, the loop body of ``train_prior``:
    the stream's next batch (render), per model encode + ``PriorTrainer.step``, then every
    model's EMA (``end_step``). Logging is not part of an iteration."""

    def __init__(self, cfg: ProfileConfig, device: torch.device = DEVICE):
        from .gan import train

        tcfg = train.TrainConfig(dataset=cfg.dataset, component=cfg.component, batch=cfg.batch,
                                 resolution=cfg.resolution, seed=cfg.seed, device=device.type, progress=False,
                                 **cfg.options).resolved()
        if hasattr(train, "PriorTraining"):  # the engine (CUDA's defaults are its CPU ones but for graphs/pool)
            self.engine = train.PriorTraining(tcfg, device)
            return
        self.engine = None
        self.encode = train.encode_batch
        ds = train.create_training_dataset(cfg.dataset, cfg.resolution)
        self.fm, self.batch = ds.forward_model, cfg.batch
        self.trainers = [train.PriorTrainer(name, tcfg, device) for name in tcfg.model_names()]
        if cfg.emulate_cuda:  # what PriorTrainer did on CUDA: bf16 autocast forward passes, fused Adam
            for t in self.trainers:
                t.autocast = torch.autocast("cpu", dtype=torch.bfloat16)
                t.opt_G, t.opt_D = refuse_optimizer(t.opt_G, fused=True), refuse_optimizer(t.opt_D, fused=True)
        self.stream = train.TrainStream(ds, cfg.batch, device, cfg.seed, cfg.resolution)
        self.nimg = 0

    def __call__(self, i: int) -> None:
        if self.engine is not None:
            self.engine.iteration(i)
            return
        with phase("render"):
            batch = next(self.stream)
        for t in self.trainers:
            with phase(t.name):
                with phase("encode"):
                    x = self.encode(batch, self.fm, t.name)
                t.step(x, i)
        self.nimg += self.batch
        for t in self.trainers:
            with phase(t.name), phase("EMA"):
                t.end_step(self.nimg, self.batch)


class _Render:
    """One ``render_batch_at`` call on fresh training seeds (as the stream draws them)."""

    def __init__(self, cfg: ProfileConfig, device: torch.device = DEVICE):
        from .training.data import create_training_dataset

        self.device = device
        self.ds = create_training_dataset(cfg.dataset, cfg.resolution)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.batch, self.resolution = cfg.batch, cfg.resolution

    def __call__(self, i: int) -> None:
        with phase("render"):
            self.ds.render_batch_at(self.ds.train_seeds(self.gen, self.batch), self.device, self.resolution)


def _bank_and_targets(cfg: ProfileConfig, device: torch.device):
    """The GAN bank of ``cfg.dataset`` on the device stand-in and ``batch`` test images of
    the dataset at the priors' resolution."""
    from .gan.bank import load_bank
    from .registry import create_dataset

    fm = create_dataset(cfg.dataset, resolution=64).forward_model
    bank = load_bank(cfg.dataset, device, components=fm.components, path=cfg.priors)
    res = {p.resolution for p in bank.priors.values()}.pop()
    if cfg.resolution not in (None, res):
        raise JoinbenchError(f"--resolution {cfg.resolution}: {cfg.kind} runs at the priors' resolution ({res} px); "
                             "leave --resolution out or give --priors trained at that size.")
    ds = create_dataset(cfg.dataset, resolution=res)
    target = torch.stack([ds[i % len(ds)].image for i in range(cfg.batch)]).to(device)
    return bank, ds.forward_model, target, res


class _Stage1:
    """``JointInverter.invert`` of ``batch`` test images with ``steps`` = N and 2N (the
    join-s1 configuration: W latents, LPIPS-VGG, kNN regulariser)."""

    def __init__(self, cfg: ProfileConfig, device: torch.device = DEVICE):
        from .join.stage1 import JointInverter, Stage1Config

        bank, fm, self.target, cfg.resolution = _bank_and_targets(cfg, device)
        self.inverter = JointInverter(bank, fm, Stage1Config(**cfg.options), device).setup()

    def __call__(self, steps: int) -> None:
        self.inverter.cfg.steps = steps
        with phase("stage1"):
            self.inverter.invert(self.target)


class _PTI:
    """``PivotalTuner.tune`` of ``batch`` test images at the priors' mean latents (the pivots
    stage 1 would hand over) with per-image noise maps, ``steps`` = N and 2N."""

    def __init__(self, cfg: ProfileConfig, device: torch.device = DEVICE):
        from .join.pti import PivotalTuner, PTIConfig

        bank, fm, self.target, cfg.resolution = _bank_and_targets(cfg, device)
        self.tuner = PivotalTuner(bank, fm, PTIConfig(**cfg.options), device).setup()
        b = cfg.batch
        gen = torch.Generator().manual_seed(cfg.seed)
        self.pivots = {k: bank[k].mean_latent(1000, 0, 0.7).to(device).expand(b, -1) for k in self.tuner.keys}
        self.noise = {k: [torch.randn(s[1:], generator=gen).to(device).expand(b, -1, -1, -1)
                          for s in bank[k].noise_shapes()] for k in self.tuner.keys}

    def __call__(self, steps: int) -> None:
        self.tuner.cfg.steps = steps
        with phase("pti"):
            self.tuner.tune(self.target, self.pivots, self.noise)


SUBJECTS = {"train": _Train, "render": _Render, "stage1": _Stage1, "pti": _PTI}

# Functions whose calls are phases (joinbench.launches.phases_of): the split the issue asks
# about, for code with and without phase()/mark() lines (names that no longer exist are skipped).
_HASHING = {"joinbench.datasets.procedural:_mix": "hash", "joinbench.datasets.procedural:seed_hash": "hash"}
_LOSSES = {"joinbench.join.losses:PerceptualLoss.__call__": "LPIPS", "joinbench.join.losses:pixel_mse": "pixel loss",
           "joinbench.forward:ForwardModel.render_encoded": "composite",
           # the inversion engine's update: gradient with the finiteness check, then Adam
           "joinbench.join.engine:ImageVariables.gradient": "gradient + finiteness",
           "joinbench.join.engine:ImageVariables.apply": "optimizer", "joinbench.training.graphs:adam_step": "optimizer"}
PHASE_FUNCTIONS = {
    "render": _HASHING,
    "train": {**_HASHING, "joinbench.datasets.base:ProceduralDataset.render_batch_at": "render",
              "joinbench.gan.train:encode_batch": "encode", "joinbench.training.data:encode_batch": "encode",
              # the engine's steps
              "joinbench.gan.train:BankTrainer.draw_random": "random draws", "joinbench.gan.train:BankTrainer.g_step": "G",
              "joinbench.gan.train:BankTrainer.d_step": "D", "joinbench.gan.train:BankTrainer.r1_step": "R1",
              "joinbench.gan.train:BankTrainer.ema_step": "EMA", "joinbench.training.data:DataPool.draw_into": "data",
              "joinbench.training.graphs:adam_step": "optimizer",
              # before it
              "joinbench.gan.train:PriorTrainer._fake": "fakes", "joinbench.gan.train:d_loss": "D loss",
              "joinbench.gan.train:r1_penalty": "R1 penalty", "joinbench.gan.train:update_ema": "EMA"},
    "stage1": {**_LOSSES, "joinbench.join.stage1:JointInverter._render": "generators",
               "joinbench.join.losses:noise_regularisation": "noise regulariser",
               "joinbench.join.losses:normalise_noise_": "noise normalisation",
               **{f"joinbench.join.regularisers:{c}.penalty": "latent regulariser"
                  for c in ("InDomainRegulariser", "KnnRegulariser", "KnnHingeRegulariser", "LatentRegulariser")}},
    "pti": {**_LOSSES, "joinbench.join.pti:PivotalTuner._synthesise": "generators",
            "joinbench.join.pti:PivotalTuner._disc_term": "discriminator term",
            "joinbench.join.pti:PivotalTuner._components": "encode"},
}


def profile(cfg: ProfileConfig) -> dict[str, Any]:
    """Measure one configuration; a JSON-able result."""
    cfg = cfg.resolved()
    torch.manual_seed(cfg.seed)
    emulate = cuda_optimizer_defaults() if cfg.emulate_cuda else contextlib.nullcontext()
    with emulate, phases_of(PHASE_FUNCTIONS[cfg.kind]):  # before building: step functions may be bound at init
        subject = SUBJECTS[cfg.kind](cfg)
        if cfg.kind in ("train", "render"):
            per, each = measure_stepwise(subject, cfg.iterations, cfg.warmup)
        else:
            per, each = measure_runs(subject, cfg.iterations), []
    out = {"kind": cfg.kind, "unit": UNITS[cfg.kind], "config": asdict(cfg), "command": cfg.command(),
           **per.to_json()}
    if each:
        out["range"] = {key: [min(getattr(t, key) for t in each), max(getattr(t, key) for t in each)]
                        for key in ("ops", "nonview", "syncs")}
    return out


def environment() -> dict[str, Any]:
    from .env import git_commit, versions

    return {"commit": git_commit(), "versions": versions(), "torch_threads": torch.get_num_threads(),
            "device": "cpu, with device placement emulated (joinbench.launches)",
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


# -----------------------------------------------------------------------------------------
# the committed report
# -----------------------------------------------------------------------------------------
# name -> configuration: the figures of reports/launches.md (64 px, the settings)
REPORT = {
    # warm-up 2: any 16 consecutive iterations hold one R1 step; 2N = 32 iterations at batch 16 are slow on a CPU
    "train materials all": ProfileConfig("train", "materials", "all", warmup=2),
    "train materials all (CUDA path)": ProfileConfig("train", "materials", "all", warmup=2, emulate_cuda=True),
    "train faces all": ProfileConfig("train", "faces", "all", warmup=2),
    "stage1 materials": ProfileConfig("stage1", "materials"),
    "stage1 materials (CUDA path)": ProfileConfig("stage1", "materials", emulate_cuda=True),
    "pti materials": ProfileConfig("pti", "materials"),
    "pti materials (CUDA path)": ProfileConfig("pti", "materials", emulate_cuda=True),
    "render materials": ProfileConfig("render", "materials"),
    "render faces": ProfileConfig("render", "faces"),
}
# small configurations that tests/test_launches.py recounts against these committed figures
TESTS = {
    "render materials 16px": ProfileConfig("render", "materials", batch=2, resolution=16, iterations=2),
    "render faces 16px": ProfileConfig("render", "faces", batch=2, resolution=16, iterations=2),
    "train faces albedo 16px": ProfileConfig("train", "faces", "albedo", batch=2, resolution=16, iterations=2),
    "stage1 materials b1": ProfileConfig("stage1", "materials", batch=1, iterations=1),
    "pti materials b1": ProfileConfig("pti", "materials", batch=1, iterations=1),
}


def target_for(result: dict[str, Any]) -> int | None:
    c = result["config"]
    return TARGETS.get((c["kind"], c["dataset"], c["component"])) or TARGETS.get((c["kind"], None, None))


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}" if abs(x) < 1e6 else f"{x:.3g}"


def _phases_text(result: dict[str, Any], n: int = 5, depth: int = 2) -> str:
    agg: dict[str, float] = {}
    for p in result["phases"]:
        key = "/".join(p["phase"].split("/")[:depth])
        agg[key] = agg.get(key, 0) + p["nonview_ops"]
    top = sorted(agg.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return ", ".join(f"{k} {_fmt(v)}" for k, v in top)


def _table(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) if rows else "(none)"


def result_markdown(r: dict[str, Any], top: int = 12) -> str:
    """One measurement as Markdown: totals, phases, top ops, where the syncs are."""
    lines = [f"## `{r['command']}`", "",
             f"Per {r['unit']}: **{_fmt(r['ops'])} ops** ({_fmt(r['nonview_ops'])} non-view), "
             f"**{_fmt(r['syncs'], 1)} host syncs**, {_fmt(r['flops'] / 1e9, 2)} GFLOP"
             + (f" (per {r['unit']}, ops {r['range']['ops'][0]:,.0f}-{r['range']['ops'][1]:,.0f}, syncs "
                f"{r['range']['syncs'][0]:,.0f}-{r['range']['syncs'][1]:,.0f})" if r.get("range") else "") + ".", "",
             "Phases (non-view ops, syncs, GFLOP):", ""]
    lines.append(_table([{"phase": p["phase"], "ops": _fmt(p["ops"], 1), "non-view": _fmt(p["nonview_ops"], 1),
                          "syncs": _fmt(p["syncs"], 1), "GFLOP": _fmt(p["flops"] / 1e9, 3)}
                         for p in r["phases"][:top * 2]]))
    lines += ["", "Top ops:", ""]
    lines.append(_table([{"op": o["op"] + (" (view)" if o["view"] else ""), "per " + r["unit"]: _fmt(o["ops"], 1)}
                         for o in r["top_ops"][:top]]))
    if r["sync_sites"]:
        lines += ["", "Host syncs (phase: op):", ""]
        lines.append(_table([{"where": k, "per " + r["unit"]: _fmt(v, 2)} for k, v in r["sync_sites"].items()]))
    return "\n".join(lines) + "\n"


def _block_line(label: str, block: dict[str, Any] | None) -> str:
    if not block:
        return f"- {label}: not measured"
    env = block["environment"]
    code = env.get("code_commit", env["commit"])
    how = f" ({env['how']})" if env.get("how") else ""
    made = f", made with `{block['command']}`" if block.get("command") else ""
    return (f"- {label}: code at `{code}`{how}{made}, {env['date']}, "
            + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if k in ("python", "torch")))


def report_markdown(report: dict[str, Any]) -> str:
    """reports/launches.md: before/after per measurement, where the launches are, the test
    configurations, then every measurement in detail."""
    before, after, tests = report.get("before"), report.get("after"), report.get("tests")
    bres, ares = (before or {}).get("results", {}), (after or {}).get("results", {})
    lines = ["# Kernel launches, host syncs and FLOPs per step", "",
             "Made with `joinbench profile all --out reports/launches.md` or parts of it (each block below names its "
             "command; `joinbench profile --help`; what is counted and how device placement is emulated: "
             "`joinbench/launches.py`). Counts are deterministic: the same on any machine and under any "
             "load. Per unit = (count of 2N units - count of N units) / N, or of the N units after a `--warmup` of W: "
             "warm-up and set-up cancel.", "",
             _block_line("before", before), _block_line("after", after), _block_line("test figures", tests),
             "- device: the CPU, with device placement emulated (only reads of device tensors are host syncs). "
             "\"CUDA path\" = `--emulate-cuda`: the trainer's bf16 autocast and fused Adam, foreach Adam elsewhere. "
             "CUDA graphs cannot be emulated.", "",
             "How to read it: a training iteration includes its data (the stream's render call before the engine; the "
             "pool draw and the amortised pool refreshes after it, at the CPU's pool size, which re-renders more often "
             "than CUDA's 16,384-image pool). Rows without \"CUDA path\" run what the CPU runs: Adam's per-parameter "
             "loop where no implementation is chosen. Reads of host tensors are not syncs: Adam's per-parameter step "
             "counters (`.item()` per parameter in that loop) live on the host unless Adam is capturable, so they stall "
             "nothing. A count that includes them (the engine issue's 30 syncs per stage-1 step: 3 latents + 27 noise "
             "maps; about 200 per PTI step: 198 tuned tensors) is higher than the syncs here.", "",
             "| measurement | unit | ops before | ops after | non-view before | non-view after | syncs before | "
             "syncs after | GFLOP (before → after) | target |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys([*bres, *ares]):
        b, a = bres.get(name), ares.get(name)
        r = a or b
        t = target_for(r)
        target = (f"≤ {t:,} non-view, 0 syncs" if t else ("0 syncs" if r["kind"] != "render" else "≤ 3,000 non-view"))
        cell = lambda x, key, d=0: _fmt(x[key], d) if x else "–"
        lines.append(f"| {name} | {r['unit']} | {cell(b, 'ops')} | {cell(a, 'ops')} | {cell(b, 'nonview_ops')} | "
                     f"{cell(a, 'nonview_ops')} | {cell(b, 'syncs', 1)} | {cell(a, 'syncs', 1)} | "
                     f"{' → '.join(_fmt(x['flops'] / 1e9, 2) for x in (b, a) if x)} | {target} |")
    for label, res in (("after", ares), ("before", bres)):
        if res:
            lines += ["", f"Where the launches are ({label}; non-view ops per unit, phases two levels deep):", ""]
            lines += [f"- **{name}**: {_phases_text(r)}" for name, r in res.items()]
    lines += ["", "Rerun: `joinbench profile all --out reports/launches.md` (keeps the before column; `--names A,B` "
              "redoes some rows); the before column: `bash scripts/launches_before.sh`, then the `joinbench profile all "
              "--before ... --only none` command it prints. `tests/test_launches.py` recounts the small "
              "configurations below and fails when one grows by more than 10% (`--only tests` refreshes them alone).", ""]
    if tests:
        lines.append(_table([{"test configuration": k, "command": f"`{v['command']}`", "ops": _fmt(v["ops"], 1),
                              "non-view": _fmt(v["nonview_ops"], 1), "syncs": _fmt(v["syncs"], 1)}
                             for k, v in tests["results"].items()]))
    for label, res in (("after", ares), ("before", bres)):
        if res:
            lines += ["", f"# Details ({label})", ""]
            lines += [result_markdown(r) for r in res.values()]
    return "\n".join(lines)


def measure_block(configs: dict[str, ProfileConfig], progress: bool = True) -> dict[str, Any]:
    """Measure named configurations: ``{"environment": ..., "results": {name: result}}``."""
    results = {}
    for name, cfg in configs.items():
        if progress:
            typer.echo(f"profile: {name} ...", err=True)
        results[name] = profile(cfg)
    return {"environment": environment(), "results": results}


def _as_block(report: dict[str, Any]) -> dict[str, Any] | None:
    """The measured block of a written report (older files kept results at the top level)."""
    if "after" in report:
        return report["after"]
    return {"environment": report["environment"], "results": report["results"]} if "results" in report else None


# -----------------------------------------------------------------------------------------
# the command
# -----------------------------------------------------------------------------------------
def profile_cmd(
    kind: str = typer.Argument(..., help="train | stage1 | pti | render | all"),
    dataset: str = typer.Option("materials", "--dataset", "-d", help="materials | faces"),
    component: str = typer.Option("all", "--component", help="train: albedo | shading | specular | all | joint"),
    batch: Optional[int] = typer.Option(None, "--batch", "-b", help="images per unit (default: train/render 16, stage1/pti 2)"),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", help="train/render: power of two (default 64); stage1/pti: the priors'"),
    iterations: Optional[int] = typer.Option(None, "--iterations", "-n", help="N: units counted = those from N to 2N (default: train 16, render/stage1 4, pti 2)"),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="train/render: units before the N counted ones (default N)"),
    priors: Optional[str] = typer.Option(None, "--priors", help="stage1/pti: folder of exported priors (default: the shipped ones)"),
    emulate_cuda: bool = typer.Option(False, "--emulate-cuda", help="bf16 autocast + fused Adam in training, foreach Adam elsewhere, as on CUDA"),
    format: str = typer.Option("md", "--format", "-f", help="md | json"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="file to write (all: the .md; its .json is written beside)"),
    before: Optional[List[Path]] = typer.Option(None, "--before", help="all: JSON(s) a `profile all` wrote at older code: the before column (repeatable, merged)"),
    only: str = typer.Option("both", "--only", help="all: report | tests (measure one part, keep the other) | none (only merge --before and re-render)"),
    names: Optional[str] = typer.Option(None, "--names", help="all: comma list of report measurements to redo (others are kept)"),
):
    """Count kernel launches (dispatched aten ops), host syncs and FLOPs per training
    iteration, stage-1 step, PTI step or render call, with the top ops and phases.

    Example: joinbench profile train --dataset materials --component all --batch 16

    Example: joinbench profile all --out reports/launches.md
    """
    if format not in ("md", "json"):
        raise JoinbenchError(f"--format must be md or json, got {format!r}.")
    if kind == "all":
        from .env import write_atomic, write_json

        if out is None or out.suffix != ".md":
            raise JoinbenchError("profile all writes a report: give --out FILE.md (e.g. --out reports/launches.md).")
        if only not in ("both", "report", "tests", "none"):
            raise JoinbenchError(f"--only must be report, tests or none (re-render with --before), got {only!r}.")
        json_path = out.with_suffix(".json")
        report = _read_json(json_path) if json_path.is_file() else {}
        if "after" not in report and "results" in report:  # an older layout
            report = {"before": report.get("before"), "after": _as_block(report), "tests": None}
        if before:
            blocks = [_as_block(_read_json(path)) for path in before]
            report["before"] = {"environment": blocks[0]["environment"], "from": [str(p) for p in before],
                                "command": blocks[0].get("command"),
                                "results": {k: v for b in blocks for k, v in b["results"].items()}}
            report["before"]["results"] = {k: report["before"]["results"][k] for k in REPORT
                                           if k in report["before"]["results"]}  # the report's order
        chosen = REPORT
        if names:
            wanted = [n.strip() for n in names.split(",") if n.strip()]
            unknown = [n for n in wanted if n not in REPORT]
            if unknown:
                raise JoinbenchError(f"--names: unknown measurement {unknown[0]!r}.{did_you_mean(unknown[0], REPORT)} "
                                     f"Use some of: {', '.join(REPORT)}.")
            chosen = {n: REPORT[n] for n in wanted}
        command = _typed_command() or f"joinbench profile all --out {out}"
        if only in ("both", "report"):
            kept = (report.get("after") or {}).get("results", {}) if names else {}
            block = {**measure_block(chosen), "command": command}
            merged = {**kept, **block["results"]}
            block["results"] = {k: merged[k] for k in REPORT if k in merged}
            report["after"] = block
        if only in ("both", "tests"):
            report["tests"] = {**measure_block(TESTS), "command": command}
        report.update(format="joinbench-launches", version=2, command=command)
        write_json(json_path, report)
        write_atomic(out, report_markdown(report))
        typer.echo(f"wrote {out} and {json_path}")
        return
    cfg = ProfileConfig(kind=kind, dataset=dataset, component=component, batch=batch, resolution=resolution,
                        iterations=iterations, warmup=warmup, priors=priors, emulate_cuda=emulate_cuda)
    result = {**profile(cfg), "environment": environment()}
    text = json.dumps(result, indent=2) + "\n" if format == "json" else result_markdown(result)
    if out:
        from .env import write_atomic

        write_atomic(out, text)
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text, nl=False)


def _typed_command() -> str | None:
    """The command as typed when run as ``joinbench``, None otherwise (a test's runner, or
    ``python -m joinbench.profile`` in an old checkout). Not env.command_line: the before
    column runs this file in a checkout that predates it."""
    prog = Path(sys.argv[0])
    if prog.name == "joinbench" or (prog.name == "__main__.py" and prog.parent.name == "joinbench"):
        return "joinbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise JoinbenchError(f"Cannot read {path}: {type(exc).__name__}; give the .json a `profile all` wrote.") from None


__all__ = ["KINDS", "REPORT", "TESTS", "ProfileConfig", "measure_block", "measure_runs", "measure_stepwise", "profile",
           "profile_cmd", "report_markdown", "result_markdown"]

if __name__ == "__main__":  # the before column runs this file inside an older checkout (scripts/launches_before.sh)
    typer.run(profile_cmd)
