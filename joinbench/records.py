"""A run's records on disk: the ``records.jsonl`` stream, resuming it, and merging the
streams of a sharded run.

One JSON line per image and component, appended batch by batch and fsynced, so a killed run
loses at most the batch in flight. An image's ``image`` row (the re-render) is written last,
so its presence marks the image finished; a torn last line from a kill is ignored. Under
``torchrun`` every rank streams ``records.rank{r}.jsonl`` and rank 0 folds them into
``records.jsonl`` in single-process order (see :mod:`joinbench.distributed`), so the folder is
the one a single process would have written, and an interrupted sharded run resumes with any
number of processes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from .env import write_atomic

IMAGE_ROW = "image"  # the re-rendered image against the input


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


def finished_ids(records: Iterable[dict[str, Any]]) -> set[str]:
    # The image row is written last for each image, so its presence marks completion.
    return {r["id"] for r in records if r.get("component") == IMAGE_ROW}


def _lines(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True, allow_nan=True) + "\n" for r in records)


def append_records(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(_lines(records))
        f.flush()
        os.fsync(f.fileno())


def resume(rec_path: Path, split: set[str], needed_files: Callable[[str], list[Path]]) -> set[str]:
    """Ids of ``split`` already finished in ``rec_path`` (with every file ``needed_files(id)``
    promises), after rewriting the file without a torn last line and without the records of
    half-finished or to-be-redone images. Finished records of images outside ``split``
    (e.g. beyond a smaller --limit) stay on disk but are not part of this run's table."""
    old = read_records(rec_path)
    finished = finished_ids(old)
    done = {i for i in finished & split if all(p.is_file() for p in needed_files(i))}
    kept = [r for r in old if r["id"] in done or (r["id"] in finished and r["id"] not in split)]
    if rec_path.exists():
        write_atomic(rec_path, _lines(kept))
    return done


# -- sharded runs (torchrun) --------------------------------------------------------------
def rank_records_path(run_dir: Path, rank: int) -> Path:
    return run_dir / f"records.rank{rank}.jsonl"


def by_split_order(records: list[dict[str, Any]], split_ids: list[str]) -> list[dict[str, Any]]:
    """Records in the order a single process writes them: images in split order, each
    image's records in the order they were made (ids outside the split last)."""
    pos = {sid: k for k, sid in enumerate(split_ids)}
    return sorted(records, key=lambda r: pos.get(r["id"], len(pos)))


def fold_rank_records(rec_path: Path, split_ids: list[str], rank_records: list[list[dict[str, Any]]]) -> bool:
    """Move the finished images of an interrupted sharded run (``rank_records``: the contents of
    its ``records.rank*.jsonl``) into ``records.jsonl``, after the images it already holds.
    Returns whether anything was added."""
    old = read_records(rec_path)
    have = finished_ids(old)
    new: list[dict[str, Any]] = []
    for recs in rank_records:
        fresh = finished_ids(recs) - have
        new += [r for r in recs if r["id"] in fresh]
        have |= fresh
    if not new:
        return False
    added = {r["id"] for r in new}  # drop half-written records of those images from an earlier crash
    write_atomic(rec_path, _lines([r for r in old if r["id"] not in added] + by_split_order(new, split_ids)))
    return True


def resume_sharded(ctx, run_dir: Path, rec_path: Path, split_ids: list[str], needed_files) -> set[str]:
    """:func:`resume` for any number of processes: the records of an interrupted sharded run
    (its ``records.rank*.jsonl``, whatever its process count) are folded into ``records.jsonl``
    by rank 0, which then decides which images are finished and tells the others."""
    own = rank_records_path(run_dir, ctx.rank)
    # A rank's own file travels through the process group: on several nodes without a shared
    # disk rank 0 cannot see it; on one disk rank 0 also picks up files of ranks that no longer exist.
    shares = ctx.gather(read_records(own) if ctx.active and not ctx.is_main else [])
    done: set[str] | None = None
    if ctx.is_main:
        visible = sorted(run_dir.glob("records.rank*.jsonl"))
        fold_rank_records(rec_path, split_ids, [read_records(p) for p in visible] + list(shares or []))
        for p in visible:
            p.unlink(missing_ok=True)
        done = resume(rec_path, set(split_ids), needed_files)
    done = set(ctx.broadcast(sorted(done) if done is not None else None))
    own.unlink(missing_ok=True)  # folded by rank 0 (the broadcast came after the fold)
    return done


def merge_shares(rec_path: Path, split_ids: list[str], shares: list[dict[str, Any]]):
    """Rank 0: append every rank's new records to ``records.jsonl`` in split order, and pool
    the ranks' timings (a summary describes the whole job)."""
    new = by_split_order([r for s in shares for r in s["records"]], split_ids)
    if new:
        append_records(rec_path, new)
    times = [t for s in shares for t in s["times"]]
    stage_times: dict[str, list[float]] = {}
    for s in shares:
        for k, v in s["stage_times"].items():
            stage_times.setdefault(k, []).extend(v)
    return times, stage_times


__all__ = ["IMAGE_ROW", "append_records", "by_split_order", "finished_ids", "fold_rank_records", "merge_shares",
           "rank_records_path", "read_records", "resume", "resume_sharded"]
