"""The benchmark runner: one method on one dataset -> a complete run folder.

Records (one JSON line per image and component, every metric, timings) are appended to
``records.jsonl`` batch by batch and fsynced, so a killed run loses at most the batch in
flight; rerunning into the same folder skips the finished images and the final table
equals that of an uninterrupted run. ``summary.json``, ``table.md`` and ``grid.png``
are written atomically at the end.

Under ``torchrun`` (see :mod:`joinbench.distributed`) the images are sharded across the
processes in whole batches; each rank streams its records to ``records.rank{r}.jsonl`` and
rank 0 merges them into ``records.jsonl`` in single-process order, so the folder is the
one a single process would have written. A sharded run interrupted part-way resumes with
any number of processes (the rank files are folded back in first).
"""
from __future__ import annotations

import datetime as _dt
import inspect
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from . import distributed
from .env import (device_name, git_commit, make_folder, peak_memory_mb, resolve_device, synchronize,
                  versions, write_atomic, write_json)
from .errors import JoinbenchError
from .forward import COMPONENTS
from .imageio import write_npz
from .benchmark_metrics import score_references
from .registry import DATASETS, create_method, create_metric
from .tables import run_table_markdown, summarise_records
from .types import Batch, Decomposition
from .viz import grid_image, save_image_atomic

DEFAULT_METRICS = ("mse", "psnr", "ssim", "lpips", "si-mse", "si-lmse", "lmse", "dssim")
IMAGE_ROW = "image"  # the re-rendered image against the input


@dataclass
class RunSettings:
    """Everything that defines a run (the CLI's options)."""

    method: str
    dataset: str
    limit: int | None = None
    batch_size: int = 16
    device: str = "auto"
    resolution: int = 64
    seed: int = 0
    out: Path | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    metrics: tuple[str, ...] | None = None  # None: defaults; (): score nothing
    save_predictions: bool = False
    grid_images: int = 8
    progress: bool = True


def create_dataset_for_run(name: str, resolution: int, seed: int):
    """Create a dataset passing only the options its factory accepts (real photos have no seed)."""
    entry, arg = DATASETS.get(name)
    params = inspect.signature(entry.factory).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in {"resolution": resolution, "seed": seed}.items() if accepts_any or k in params}
    return DATASETS.create(name, **kwargs)


def default_run_dir(method: str, dataset: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = lambda s: "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)[:60]
    return Path("runs") / f"{stamp}-{safe(method)}-{safe(dataset)}"


# -- records on disk ---------------------------------------------------------------------
def read_records(path: Path) -> list[dict[str, Any]]:
    """Read records.jsonl, ignoring a torn last line from a killed run."""
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn write
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def _finished_ids(records: list[dict[str, Any]]) -> set[str]:
    # The image row is written last for each image, so its presence marks completion.
    return {r["id"] for r in records if r.get("component") == IMAGE_ROW}


def _append_records(path: Path, records: list[dict[str, Any]]) -> None:
    data = "".join(json.dumps(r, sort_keys=True, allow_nan=True) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


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


# -- the run -----------------------------------------------------------------------------
def run_benchmark(settings: RunSettings) -> Path:
    if settings.batch_size < 1:
        raise JoinbenchError(f"--batch-size must be at least 1, got {settings.batch_size}.")
    if settings.limit is not None and settings.limit < 1:
        raise JoinbenchError(f"--limit must be at least 1, got {settings.limit} (leave it out for the whole split).")
    ctx = distributed.init(settings.device)  # the single-process context outside torchrun
    device = ctx.device(settings.device) if ctx.active else resolve_device(settings.device)
    dataset = create_dataset_for_run(settings.dataset, settings.resolution, settings.seed)
    method = create_method(settings.method, **settings.overrides)
    if hasattr(method, "bind_dataset"):  # JoIN picks the dataset's GAN bank; predictions: its forward model
        method.bind_dataset(dataset, set(settings.overrides))
    method.to(device)
    metric_names = DEFAULT_METRICS if settings.metrics is None else settings.metrics
    check_scorable(settings.dataset, dataset, metric_names)
    metrics = [create_metric(m) for m in metric_names]
    components = tuple(dataset.components)
    limit = settings.limit
    if limit is None and device.type == "cpu" and getattr(method, "cpu_default_limit", None):
        limit = method.cpu_default_limit
        print(f"{settings.method} on CPU: scoring the first {limit} of {len(dataset)} test images "
              f"(this method's CPU default; pass --limit N to choose, or run on a GPU for the full split)")
    n_total = len(dataset) if limit is None else min(limit, len(dataset))

    run_dir = Path(settings.out) if settings.out else default_run_dir(settings.method, settings.dataset)
    run_dir = Path(ctx.broadcast(str(run_dir)))  # every rank in rank 0's folder (timestamps differ)
    if run_dir.is_dir() and not any((run_dir / f).is_file() for f in ("run.json", "reuse-key.json")):
        others = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
        if others:  # not a run folder: writing tables and grids among someone's files would be a surprise
            raise JoinbenchError(f"--out {run_dir} already holds other files ({', '.join(others[:3])}"
                                 f"{', ...' if len(others) > 3 else ''}) and no run; give a new or empty folder.")
    make_folder(run_dir)
    identity = {
        "method": settings.method, "method_config": method.describe()["config"],
        "dataset": settings.dataset, "resolution": settings.resolution, "seed": settings.seed,
        "metrics": list(metric_names),
        # float32 optimisation results differ in the last bits between batch sizes
        "batch_size": settings.batch_size,
    }
    if hasattr(dataset, "content_fingerprint"):  # user folders: resuming after their files changed would mix two sets
        identity["dataset_content"] = dataset.content_fingerprint()
    _guard_identity(run_dir, identity)
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
    done = _resume_sharded(ctx, run_dir, rec_path, split_ids, needed_files)
    todo = n_total - len(done)
    if done:
        print(f"resuming {run_dir}: {len(done)} of {n_total} images already scored, {todo} to go")
    # Sharding: this process takes whole batches of the unfinished images, round-robin.
    mine = distributed.shard([i for i in split_ids if i not in done], settings.batch_size, ctx.rank, ctx.world_size)
    skip = set(split_ids) - set(mine)
    out_path = _rank_records_path(run_dir, ctx.rank) if ctx.active else rec_path
    new_records: list[dict[str, Any]] = []
    times, stage_times = [], {}
    t_start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bar = tqdm(total=len(mine), unit="img", desc=f"{settings.method} on {settings.dataset}"
               + (f" (rank 0 of {ctx.world_size})" if ctx.active else ""),
               disable=not settings.progress or not ctx.is_main, dynamic_ncols=True)
    for batch in dataset.batches(settings.batch_size, limit=n_total, skip=skip):
        batch = batch.to(device)
        synchronize(device)
        t0 = time.perf_counter()
        with torch.inference_mode(mode=not getattr(method, "needs_grad", False)):
            dec = _decompose(method, batch)
        synchronize(device)
        seconds = time.perf_counter() - t0
        if not dec.errors:
            dec.errors = [None] * len(batch)
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
        _append_records(out_path, records)
        if ctx.active:
            new_records.extend(records)
        bar.update(len(batch))
    bar.close()
    if ctx.active:
        shares = ctx.gather({"records": new_records, "times": times, "stage_times": stage_times,
                             "peak_memory_mb": peak_memory_mb(device)})
        if not ctx.is_main:
            return _finish_other_rank(ctx, run_dir)
        times, stage_times = _merge_shares(rec_path, split_ids, shares)
    wall = time.perf_counter() - t_start

    wanted = set(split_ids)
    records = [r for r in read_records(rec_path) if r["id"] in wanted]
    summary = _summary(settings, method, dataset, device, records, times, stage_times, wall, n_total, metrics)
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
        _rank_records_path(run_dir, ctx.rank).unlink(missing_ok=True)
        ctx.broadcast(table)  # releases the other ranks (see _finish_other_rank)
    return run_dir


def check_scorable(dataset_name: str, dataset, metric_names) -> None:
    """Without ground truth only the re-render is scored, by encoded-space metrics, plus the
    benchmark metrics whose annotations the dataset declares (``Dataset.references``: WHDR on
    IIW, ...): a metric list that scores nothing would give an empty table, and a benchmark
    metric on a dataset without its annotations an empty column, so say so before running."""
    from .benchmark_metrics import REFERENCE_SPACE

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


def _resume(rec_path: Path, split: set[str], needed_files) -> set[str]:
    """Ids of ``split`` already finished in ``rec_path`` (with every file ``needed_files(id)``
    promises), after rewriting the file without a torn last line and without the records of
    half-finished or to-be-redone images. Finished records of images outside ``split``
    (e.g. beyond a smaller --limit) stay on disk but are not part of this run's table."""
    old = read_records(rec_path)
    finished = _finished_ids(old)
    done = {i for i in finished & split if all(p.is_file() for p in needed_files(i))}
    kept = [r for r in old if r["id"] in done or (r["id"] in finished and r["id"] not in split)]
    if rec_path.exists():
        write_atomic(rec_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    return done


# -- sharding hooks (torchrun; see joinbench.distributed) -----------------------------------
def _rank_records_path(run_dir: Path, rank: int) -> Path:
    return run_dir / f"records.rank{rank}.jsonl"


def _by_split_order(records: list[dict[str, Any]], split_ids: list[str]) -> list[dict[str, Any]]:
    """Records in the order a single process writes them: images in split order, each
    image's records in the order they were made (ids outside the split last)."""
    pos = {sid: k for k, sid in enumerate(split_ids)}
    return sorted(records, key=lambda r: pos.get(r["id"], len(pos)))


def _fold_rank_records(rec_path: Path, split_ids: list[str], rank_records: list[list[dict[str, Any]]]) -> bool:
    """Move the finished images of an interrupted sharded run (``rank_records``: the contents of
    its ``records.rank*.jsonl``) into ``records.jsonl``, after the images it already holds.
    Returns whether anything was added."""
    old = read_records(rec_path)
    have = _finished_ids(old)
    new: list[dict[str, Any]] = []
    for recs in rank_records:
        fresh = _finished_ids(recs) - have
        new += [r for r in recs if r["id"] in fresh]
        have |= fresh
    if not new:
        return False
    added = {r["id"] for r in new}  # drop half-written records of those images from an earlier crash
    records = [r for r in old if r["id"] not in added] + _by_split_order(new, split_ids)
    write_atomic(rec_path, "".join(json.dumps(r, sort_keys=True, allow_nan=True) + "\n" for r in records))
    return True


def _resume_sharded(ctx, run_dir: Path, rec_path: Path, split_ids: list[str], needed_files) -> set[str]:
    """:func:`_resume` for any number of processes: the records of an interrupted sharded run
    (its ``records.rank*.jsonl``, whatever its process count) are folded into ``records.jsonl``
    by rank 0, which then decides which images are finished and tells the others."""
    own = _rank_records_path(run_dir, ctx.rank)
    # A rank's own file travels through the process group: on several nodes without a shared
    # disk rank 0 cannot see it; on one disk rank 0 also picks up files of ranks that no longer exist.
    shares = ctx.gather(read_records(own) if ctx.active and not ctx.is_main else [])
    done: set[str] | None = None
    if ctx.is_main:
        visible = sorted(run_dir.glob("records.rank*.jsonl"))
        _fold_rank_records(rec_path, split_ids, [read_records(p) for p in visible] + list(shares or []))
        for p in visible:
            p.unlink(missing_ok=True)
        done = _resume(rec_path, set(split_ids), needed_files)
    done = set(ctx.broadcast(sorted(done) if done is not None else None))
    own.unlink(missing_ok=True)  # folded by rank 0 (the broadcast came after the fold)
    return done


def _merge_shares(rec_path: Path, split_ids: list[str], shares: list[dict[str, Any]]):
    """Rank 0: append every rank's new records to ``records.jsonl`` in split order, and pool
    the ranks' timings (a summary describes the whole job)."""
    new = _by_split_order([r for s in shares for r in s["records"]], split_ids)
    if new:
        _append_records(rec_path, new)
    times = [t for s in shares for t in s["times"]]
    stage_times: dict[str, list[float]] = {}
    for s in shares:
        for k, v in s["stage_times"].items():
            stage_times.setdefault(k, []).extend(v)
    return times, stage_times


def _finish_other_rank(ctx, run_dir: Path) -> Path:
    """Ranks > 0 end here: wait until rank 0 has written the run's files, then drop the own
    records file (its records are merged). ``table.md`` is copied where rank 0's is not
    visible (nodes without a shared disk), so callers that read it work on every rank."""
    table = ctx.broadcast(None)
    _rank_records_path(run_dir, ctx.rank).unlink(missing_ok=True)
    if not (run_dir / "table.md").exists():
        write_atomic(run_dir / "table.md", table)
    return run_dir


def _decompose(method, batch: Batch) -> Decomposition:
    if hasattr(method, "decompose_batch"):
        return method.decompose_batch(batch)
    return method.decompose(batch.image)


def _summary(settings, method, dataset, device, records, times, stage_times, wall, n_total, metrics) -> dict[str, Any]:
    n_img = sum(n for n, _ in times)
    per_image = [s / n for n, s in times for _ in range(n)]
    errors = sorted({r["id"] for r in records if r.get("error") and r["error"] != "missing prediction"})
    return {
        "run": {
            "method": settings.method, "method_config": method.describe()["config"],
            "overrides": settings.overrides, "dataset": settings.dataset, "dataset_info": dataset.info(),
            "resolution": settings.resolution, "seed": settings.seed, "limit": settings.limit,
            "images": n_total, "batch_size": settings.batch_size,
            "forward_model": dataset.forward_model.name, "forward_model_description": dataset.forward_model.describe(),
            "colour_space": dataset.colour_space,
            "metrics": {m.name: {"higher_is_better": m.higher_is_better, "space": m.space} for m in metrics},
        },
        "environment": {
            "device": str(device), "device_name": device_name(device), "versions": versions(),
            "commit": git_commit(), "command": os.environ.get("JOINBENCH_COMMAND", ""),
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "timing": {
            "wall_seconds_this_invocation": wall, "images_this_invocation": n_img,
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
