"""The benchmark runner: one planned run (method x dataset) -> a complete run folder.

:func:`run_benchmark` takes :class:`~joinbench.plan.RunSettings` (it plans them with
:func:`joinbench.plan.plan_run`) or a :class:`~joinbench.plan.PlannedRun` a suite made, and runs
exactly that plan: the prepared method, its final config, the effective limit, the folder.
Records stream to ``records.jsonl`` batch by batch (:mod:`joinbench.records`), so a killed run
loses at most the batch in flight; rerunning into the same folder skips the finished images
and the final table equals that of an uninterrupted run. ``summary.json``, ``table.md`` and
``grid.png`` are written atomically at the end.

Progress: one bar for the run's images and one for the current batch's steps, fed by the
method's :class:`~joinbench.progress.Progress` events (stage, step of steps, loss, rate,
ETA); ``-q`` hides both. Ctrl-C names the folder to resume (or says that nothing finished).

Under ``torchrun`` (see :mod:`joinbench.distributed`) the images are sharded across the
processes in whole batches; each rank streams its own records file and rank 0 merges them
in single-process order, so the folder is the one a single process would have written.
"""
from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from . import distributed
from .env import device_name, git_commit, make_folder, peak_memory_mb, synchronize, versions, write_atomic, write_json
from .errors import Interrupted, JoinbenchError
from .forward import COMPONENTS
from .imageio import write_npz
from .plan import PlannedRun, RunSettings, plan_run
from .progress import Progress
from .records import (IMAGE_ROW, append_records, merge_shares, rank_records_path, read_records,  # noqa: F401
                      resume_sharded)
from .benchmark_metrics import score_references
from .registry import create_metric
from .tables import run_table_markdown, summarise_records
from .types import Batch, Decomposition
from .viz import grid_image, save_image_atomic

WALL_FILE = "invocations.json"  # wall time of every invocation that worked on the folder


# -- scoring -----------------------------------------------------------------------------
def score_batch(batch: Batch, dec: Decomposition, dataset_fm, metrics: list, seconds: float,
                components: tuple[str, ...]) -> list[dict[str, Any]]:
    """One record per image and component (ground-truth components, the components benchmark
    metrics score against the dataset's annotations, then the re-render)."""
    n = len(batch)
    missing: dict[str, list[str]] = dec.extras.get("missing", {})
    rerender = dec.rerender
    rows: dict[str, dict[str, list[float]]] = {}
    for comp in (*components, IMAGE_ROW):
        values: dict[str, list[float]] = {}
        for m in metrics:
            if m.space == "reference":  # IIW / MAW / ARAP protocols: scored against annotations below
                continue
            if comp == IMAGE_ROW:
                if m.space != "encoded":
                    continue
                pred, target = rerender, batch.image
            else:
                gt = batch.component(comp)
                lin = dec.component(comp)
                if m.space == "encoded":
                    pred, target = dataset_fm.encode(comp, lin), dataset_fm.encode(comp, gt)
                else:
                    pred, target = lin, gt
            needed = dec.forward_model.components if comp == IMAGE_ROW else (comp,)
            ok = [i for i in range(n) if not dec.errors[i] and not set(needed) & set(missing.get(batch.ids[i], []))]
            vals = [float("nan")] * n
            if ok:
                idx = torch.tensor(ok, device=pred.device)
                mask = None if batch.mask is None else batch.mask.index_select(0, idx)
                out = m(pred.index_select(0, idx).float(), target.index_select(0, idx).float(), mask)
                for j, i in enumerate(ok):
                    vals[i] = float(out[j])
            values[m.name] = vals
        rows[comp] = values
    unscorable = [set(COMPONENTS) if dec.errors[i] else set(missing.get(sid, [])) for i, sid in enumerate(batch.ids)]
    for comp, values in score_references(batch, dec, metrics, unscorable).items():
        rows.setdefault(comp, {}).update(values)
    order = (*components, *(c for c in rows if c not in components and c != IMAGE_ROW), IMAGE_ROW)  # image row last
    records = []
    for i, sid in enumerate(batch.ids):
        for comp in order:
            needed = dec.forward_model.components if comp == IMAGE_ROW else (comp,)
            err = dec.errors[i] or ("missing prediction" if set(needed) & set(missing.get(sid, [])) else None)
            records.append({
                "id": sid, "component": comp, "error": err, "seconds": seconds / n,
                "metrics": {k: v[i] for k, v in rows[comp].items()},
            })
    return records


def _save_prediction(path: Path, dec: Decomposition, i: int, fm) -> None:
    arrays = {}
    for c in COMPONENTS:
        lin = dec.component(c)[i].detach().float().cpu()
        arrays[c] = lin.numpy()
        arrays[f"{c}_encoded"] = fm.encode(c, lin).numpy()
    arrays["rerender"] = dec.rerender[i].detach().float().cpu().numpy()
    write_npz(path, **arrays)


def timed_decompose(method, batch: Batch, device: torch.device) -> tuple[float, Decomposition]:
    """One ``decompose_batch`` timed as every engine times it: the device synchronised before
    and after (CUDA work is asynchronous), inference mode unless the method optimises."""
    synchronize(device)
    t0 = time.perf_counter()
    with torch.inference_mode(mode=not method.needs_grad):
        dec = method.decompose_batch(batch)
    synchronize(device)
    seconds = time.perf_counter() - t0
    if not dec.errors:
        dec.errors = [None] * len(batch)
    return seconds, dec


# -- progress ------------------------------------------------------------------------------
class RunBars:
    """Two bars: the run's images, and the current batch's steps from the method's
    :class:`Progress` events (stage and images in the description, loss in the postfix;
    tqdm adds the rate and the ETA). A new stage, or a stage starting over for the next
    batch, restarts the step bar so its rate and ETA are the stage's own."""

    def __init__(self, total: int, desc: str, enabled: bool, file=None):
        common = dict(disable=not enabled, dynamic_ncols=True, file=file)
        self.images = tqdm(total=total, unit="img", desc=desc, position=0, **common)
        self.steps = tqdm(total=0, unit="step", position=1, leave=False, **common)
        self.stage: str | None = None

    def __call__(self, event: Progress) -> None:
        bar = self.steps
        if event.stage != self.stage or event.step < bar.n:
            self.stage = event.stage
            bar.reset(total=event.steps)
            bar.set_description_str(f"{event.stage} ({event.images} img)", refresh=False)
            bar.set_postfix_str("", refresh=False)
        if event.loss is not None:
            bar.set_postfix_str(f"loss {event.loss:.4g}", refresh=False)
        bar.update(event.step - bar.n)

    def batch_started(self, images: int, first: bool) -> None:
        """Until the method's first event the step bar says what the batch is doing: on the first
        batch a method loads and sets up (priors' statistics, LPIPS), which takes seconds."""
        self.stage = None
        self.steps.reset(total=0)
        self.steps.set_description_str(f"{'setting up, ' if first else ''}batch of {images}", refresh=False)
        self.steps.set_postfix_str("", refresh=False)
        self.steps.refresh()

    def batch_done(self, images: int) -> None:
        self.images.update(images)

    def close(self) -> None:
        self.steps.close()
        self.images.close()


# -- the run -----------------------------------------------------------------------------
def run_benchmark(run: RunSettings | PlannedRun) -> Path:
    """Run ``run`` (settings are planned first) into its folder; returns the folder."""
    ctx = distributed.init(run.settings.device if isinstance(run, PlannedRun) else run.device)
    plan = run if isinstance(run, PlannedRun) else plan_run(run)
    settings, dataset, device, method = plan.settings, plan.dataset, plan.device, plan.method
    if method is None:
        raise JoinbenchError(f"{plan.run_dir}: this plan has run already; plan it again to rerun it.")
    metrics = [create_metric(m) for m in plan.metrics]
    components = tuple(dataset.components)
    n_total = plan.images
    run_dir = Path(ctx.broadcast(str(plan.run_dir)))  # every rank in rank 0's folder (timestamps differ)
    if ctx.is_main:
        for note in plan.notes:
            print(note)
    method.to(device)  # loads the weights: missing ones fail here, before the folder is touched
    if run_dir.is_dir() and not any((run_dir / f).is_file() for f in ("run.json", "reuse-key.json")):
        others = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
        if others:  # not a run folder: writing tables and grids among someone's files would be a surprise
            raise JoinbenchError(f"--out {run_dir} already holds other files ({', '.join(others[:3])}"
                                 f"{', ...' if len(others) > 3 else ''}) and no run; give a new or empty folder.")
    make_folder(run_dir)
    _guard_identity(run_dir, plan.identity)
    shrinking = _shrinking_note(run_dir, n_total) if ctx.is_main else None
    if shrinking:
        print(shrinking)

    split_ids = [dataset.sample_id(i) for i in range(n_total)]
    grid_ids = split_ids[: settings.grid_images]
    grid_dir = run_dir / ".grid"
    pred_dir = run_dir / "predictions"
    rec_path = run_dir / "records.jsonl"
    needed_files = lambda i: ([pred_dir / f"{i}.npz"] if settings.save_predictions else []) + (
        [grid_dir / f"{i}.npz"] if i in grid_ids else [])
    done = resume_sharded(ctx, run_dir, rec_path, split_ids, needed_files)
    if done and ctx.is_main:
        print(f"resuming {run_dir}: {len(done)} of {n_total} images already scored, {n_total - len(done)} to go")
    # Sharding: this process takes whole batches of the unfinished images, round-robin.
    mine = distributed.shard([i for i in split_ids if i not in done], settings.batch_size, ctx.rank, ctx.world_size)
    skip = set(split_ids) - set(mine)
    out_path = rank_records_path(run_dir, ctx.rank) if ctx.active else rec_path
    new_records: list[dict[str, Any]] = []
    times, stage_times = [], {}
    ledger = _Ledger(run_dir, enabled=ctx.is_main)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bars = RunBars(len(mine), f"{settings.method} on {settings.dataset}"
                   + (f" (rank 0 of {ctx.world_size})" if ctx.active else ""), settings.progress and ctx.is_main)
    method.progress = bars if settings.progress and ctx.is_main else None
    finished_now = 0
    try:
        for batch in dataset.batches(settings.batch_size, limit=n_total, skip=skip):
            batch = batch.to(device)
            bars.batch_started(len(batch), first=not times)
            seconds, dec = timed_decompose(method, batch, device)
            times.append((len(batch), seconds))
            for k, v in dec.timings.items():  # totals add up over batches; "*_per_step" rates are averaged below
                stage_times.setdefault(k, []).append(float(v))
            with torch.inference_mode():
                records = score_batch(batch, dec, dataset.forward_model, metrics, seconds, components) if metrics else [
                    {"id": sid, "component": c, "error": dec.errors[i], "seconds": seconds / len(batch), "metrics": {}}
                    for i, sid in enumerate(batch.ids) for c in (*components, IMAGE_ROW)
                ]
            for i, sid in enumerate(batch.ids):
                if settings.save_predictions:
                    _save_prediction(pred_dir / f"{sid}.npz", dec, i, dataset.forward_model)
                if sid in grid_ids:
                    _save_prediction(grid_dir / f"{sid}.npz", dec, i, dataset.forward_model)
            append_records(out_path, records)
            finished_now += len(batch)
            ledger.update(finished_now)
            if ctx.active:
                new_records.extend(records)
            bars.batch_done(len(batch))
    except KeyboardInterrupt:
        ledger.update(finished_now)
        kept = len(done) + finished_now
        if kept:
            why = (f"interrupted: {kept} of {n_total} images are finished and kept in {run_dir}; rerun the same "
                   f"command to resume (it continues there: {settings.command})")
        else:
            why = (f"interrupted before any image finished: {run_dir} holds nothing to resume yet; rerunning the "
                   f"same command starts the run again ({settings.command})")
        raise Interrupted(why) from None
    finally:
        bars.close()
        method.progress = None
    if ctx.active:
        shares = ctx.gather({"records": new_records, "times": times, "stage_times": stage_times,
                             "peak_memory_mb": peak_memory_mb(device)})
        if not ctx.is_main:
            plan.method = None
            return _finish_other_rank(ctx, run_dir)
        times, stage_times = merge_shares(rec_path, split_ids, shares)
    wall = ledger.update(finished_now)

    wanted = set(split_ids)
    records = [r for r in read_records(rec_path) if r["id"] in wanted]
    summary = _summary(plan, records, times, stage_times, wall, ledger, metrics)
    if ctx.active:
        summary["environment"]["distributed"] = {
            "world_size": ctx.world_size, "backend": ctx.backend,
            "peak_memory_mb_per_rank": [s["peak_memory_mb"] for s in shares],
            "images_per_rank": [len({r["id"] for r in s["records"]}) for s in shares],
        }
    write_json(run_dir / "summary.json", summary)
    table = run_table_markdown(summary)
    write_atomic(run_dir / "table.md", table)
    _write_grid(run_dir, dataset, grid_ids, components)
    if ctx.active:
        rank_records_path(run_dir, ctx.rank).unlink(missing_ok=True)
        ctx.broadcast(table)  # releases the other ranks (see _finish_other_rank)
    plan.method = None  # a suite keeps its plans: let this run's weights go
    return run_dir


class _Ledger:
    """The wall time of each invocation that worked on a run folder (``invocations.json``,
    rewritten after every batch), so a resumed run's summary gives its cumulative wall time
    as well as this invocation's, even when earlier invocations were killed."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.path, self.enabled = run_dir / WALL_FILE, enabled
        self.t0 = time.perf_counter()
        self.earlier: list[dict[str, Any]] = []
        if enabled and self.path.is_file():
            try:
                self.earlier = list(json.loads(self.path.read_text())["invocations"])
            except (OSError, ValueError, KeyError, TypeError):
                self.earlier = []  # an unreadable ledger loses the history, never the run
        self.this = {"started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                     "wall_seconds": 0.0, "images": 0}

    def update(self, images: int) -> float:
        self.this.update(wall_seconds=time.perf_counter() - self.t0, images=images)
        if self.enabled:
            write_json(self.path, {"invocations": [*self.earlier, self.this]})
        return self.this["wall_seconds"]

    @property
    def total_seconds(self) -> float:
        return sum(float(i.get("wall_seconds", 0.0)) for i in self.earlier) + self.this["wall_seconds"]

    @property
    def invocations(self) -> int:
        return len(self.earlier) + 1


def _guard_identity(run_dir: Path, identity: dict[str, Any]) -> None:
    """Write run.json, or refuse a folder that holds a run with another identity."""
    id_path = run_dir / "run.json"
    norm = lambda obj: json.loads(json.dumps(obj, default=str))
    if not id_path.exists():
        write_json(id_path, identity)
        return
    previous = norm(json.loads(id_path.read_text()))
    diff = [k for k in identity if previous.get(k) != norm(identity[k])]
    if diff or set(previous) != set(identity):
        raise JoinbenchError(
            f"{run_dir} holds a different run (differs in {', '.join(diff) or 'its fields'}); "
            "use a new --out folder or delete it."
        )


def _shrinking_note(run_dir: Path, n_total: int) -> str | None:
    """A line saying so when this command summarises fewer images than the folder's finished
    run (a smaller --limit): the scored records stay, the table shows only the first ones."""
    try:
        before = int(json.loads((run_dir / "summary.json").read_text())["run"]["images"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if n_total >= before:
        return None
    return (f"note: {run_dir} held a finished {before}-image run; its summary and table now cover the first {n_total} "
            f"(--limit {n_total}). The other scored images stay in records.jsonl: rerun with --limit {before} to restore "
            "the full table without recomputing.")


def _finish_other_rank(ctx, run_dir: Path) -> Path:
    """Ranks > 0 end here: wait until rank 0 has written the run's files, then drop the own
    records file (its records are merged). ``table.md`` is copied where rank 0's is not
    visible (nodes without a shared disk), so callers that read it work on every rank."""
    table = ctx.broadcast(None)
    rank_records_path(run_dir, ctx.rank).unlink(missing_ok=True)
    if not (run_dir / "table.md").exists():
        write_atomic(run_dir / "table.md", table)
    return run_dir


def _summary(plan: PlannedRun, records, times, stage_times, wall, ledger: _Ledger, metrics) -> dict[str, Any]:
    settings, dataset, device = plan.settings, plan.dataset, plan.device
    n_img = sum(n for n, _ in times)
    per_image = [s / n for n, s in times for _ in range(n)]
    errors = sorted({r["id"] for r in records if r.get("error") and r["error"] != "missing prediction"})
    return {
        "run": {
            "method": settings.method, "method_config": plan.config, "method_kind": plan.method.kind,
            "overrides": settings.overrides, "dataset": settings.dataset, "dataset_info": dataset.info(),
            "resolution": settings.resolution, "seed": settings.seed, "limit": settings.limit,
            "images": plan.images, "batch_size": settings.batch_size,
            "forward_model": dataset.forward_model.name, "forward_model_description": dataset.forward_model.describe(),
            "colour_space": dataset.colour_space,
            "metrics": {m.name: {"higher_is_better": m.higher_is_better, "space": m.space} for m in metrics},
        },
        "environment": {
            "device": str(device), "device_name": device_name(device), "versions": versions(),
            "commit": git_commit(), "command": settings.command,
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "timing": {
            "wall_seconds_this_invocation": wall, "images_this_invocation": n_img,
            "wall_seconds_all_invocations": ledger.total_seconds, "invocations": ledger.invocations,
            "seconds_per_image_mean": float(np.mean(per_image)) if per_image else None,
            "images_per_second": (n_img / sum(s for _, s in times)) if times and sum(s for _, s in times) > 0 else None,
            "stage_seconds_this_invocation": {
                k: (sum(v) / len(v) if k.endswith("per_step") else sum(v)) for k, v in stage_times.items()},
            "peak_memory_mb": peak_memory_mb(device),
        },
        "failed_images": errors,
        "results": summarise_records(records),
    }


def _write_grid(run_dir: Path, dataset, grid_ids: list[str], components: tuple[str, ...]) -> None:
    fm = dataset.forward_model
    rows = []
    for i, sid in enumerate(grid_ids):
        path = run_dir / ".grid" / f"{sid}.npz"
        if not path.exists():
            continue
        pred = np.load(path)
        sample = dataset[i]
        row = [sample.image]
        if components:
            row += [None if sample.component(c) is None else fm.encode(c, sample.component(c)) for c in COMPONENTS]
        row += [torch.from_numpy(pred[f"{c}_encoded"]) for c in COMPONENTS]
        row.append(torch.from_numpy(pred["rerender"]))
        rows.append(row)
    if not rows:
        return
    labels = ["input"] + (["gt alb", "gt shd", "gt spec"] if components else []) + ["alb", "shd", "spec", "rerender"]
    save_image_atomic(grid_image(rows, labels), run_dir / "grid.png")


__all__ = ["RunBars", "RunSettings", "read_records", "run_benchmark", "score_batch", "timed_decompose"]
