"""The bookkeeping every training shares (priors, encoders, the U-Net): images and steps seen,
wall time, the ``--minutes`` budget, the log and snapshot intervals, Ctrl-C, ``log.jsonl``
lines and the progress bar.
"""
from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Any

import torch

from ..env import synchronize


def crossed(prev: int, cur: int, every_kimg: float) -> bool:
    """Whether going from ``prev`` to ``cur`` images passes a multiple of ``every_kimg`` thousand."""
    every = max(1, int(round(every_kimg * 1000)))
    return cur // every > prev // every


class TrainClock:
    """Counts a training run's images, steps and wall time, and decides when it logs, snapshots and stops.

    It exists so that every training counts these identically: a run resumed
    with ``--resume`` continues ``cur_nimg``, ``step`` and ``wall_s`` from the checkpoint's scalars
    (:meth:`scalars` gives them back for the next one), and ``--minutes`` stops both after the
    same budget, on a step that logs and snapshots (``done``) so nothing trained is lost. Ctrl-C
    does the same: the first SIGINT ends the loop after the current batch (so the checkpoint
    resumes exactly), and leaving the ``with`` block then raises KeyboardInterrupt instead of
    going on to export; a second Ctrl-C interrupts at once. Wall time
    counts only the loop (``t_seg`` segments), not setup or export, and accumulates over resumes.

    Use as a context manager (it owns the tqdm bar)::

        with TrainClock(total_nimg, batch, cfg.minutes, resumed_scalars, desc, cfg.progress) as clock:
            while not clock.done:
                ...train one batch...
                clock.advance()
                if clock.due(cfg.log_kimg):
                    rate = clock.log(log_path, device, {name: losses})
                if clock.due(cfg.snapshot_kimg):
                    clock.fold_wall()
                    save_checkpoint(..., clock.scalars())
    """

    def __init__(self, total_nimg: int, batch: int, minutes: float | None, resumed: dict[str, Any] | None,
                 desc: str, progress: bool = True) -> None:
        from tqdm import tqdm

        self.total_nimg, self.batch = total_nimg, batch
        self.cur_nimg, self.step, self.wall_s = 0, 0, 0.0
        if resumed is not None:  # the checkpoint's scalars
            self.cur_nimg, self.step = int(resumed["cur_nimg"]), int(resumed["step"])
            self.wall_s = float(resumed["wall_s"])
        self.prev = self.cur_nimg
        self.out_of_time = False
        self.done = self.cur_nimg >= total_nimg  # all images seen, or out of time
        self.bar = tqdm(total=total_nimg, initial=min(self.cur_nimg, total_nimg), unit="img", unit_scale=True,
                        disable=not progress, desc=desc, dynamic_ncols=True)
        self._t_log, self._n_log = time.perf_counter(), 0
        self._t_seg = self._t_start = time.perf_counter()
        self._deadline = None if minutes is None else self._t_seg + 60.0 * minutes
        self.interrupted = False
        self._old_handler: Any = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.interrupted:  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.interrupted = True
        self.bar.write("interrupt: finishing this batch and writing a checkpoint (Ctrl-C again to stop at once)")

    def __enter__(self) -> TrainClock:
        with contextlib.suppress(ValueError):  # only the main thread may handle signals
            self._old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        self.bar.close()
        if self._old_handler is not None:
            signal.signal(signal.SIGINT, self._old_handler)
        if self.interrupted and exc_type is None:  # checkpointed by the loop's last snapshot: do not export
            raise KeyboardInterrupt

    def advance(self) -> None:
        """Count one trained batch and check the time budget."""
        self.prev, self.cur_nimg, self.step = self.cur_nimg, self.cur_nimg + self.batch, self.step + 1
        self._n_log += self.batch
        self.bar.update(min(self.batch, self.total_nimg - self.prev))
        self.out_of_time = self._deadline is not None and time.perf_counter() >= self._deadline
        self.done = self.cur_nimg >= self.total_nimg or self.out_of_time or self.interrupted

    def progress(self) -> float:
        """How far the run is, 0..1: the larger of images seen / total and time spent / budget
        (so a learning-rate schedule still anneals when ``--minutes`` ends the run first)."""
        done = self.cur_nimg / max(self.total_nimg, 1)
        if self._deadline is not None:
            budget = self._deadline - self._t_start
            done = max(done, (time.perf_counter() - self._t_start) / max(budget, 1e-9))
        return min(max(done, 0.0), 1.0)

    def due(self, every_kimg: float) -> bool:
        """Whether the last batch crossed an ``every_kimg`` interval, or was the last one."""
        return crossed(self.prev, self.cur_nimg, every_kimg) or self.done

    def fold_wall(self, now: float | None = None) -> None:
        """Add the time since the last fold to ``wall_s`` (before it is logged or checkpointed)."""
        now = time.perf_counter() if now is None else now
        self.wall_s += now - self._t_seg
        self._t_seg = now

    def log(self, path: Path, device: torch.device, losses: dict[str, dict[str, float]], **extra: Any) -> float:
        """Append one ``log.jsonl`` line per model (``losses``: model name -> its losses, already
        rounded; ``extra`` keys go after ``images_per_s``) and return the images/s since the last
        log. Synchronizes ``device`` first, so the rate and wall time count finished work."""
        synchronize(device)
        now = time.perf_counter()
        rate = self._n_log / max(now - self._t_log, 1e-9)
        self.fold_wall(now)
        self._t_log, self._n_log = now, 0
        head = {"nimg": self.cur_nimg, "kimg": self.cur_nimg / 1000, "step": self.step}
        lines = [json.dumps({**head, "component": name, **model_losses, "images_per_s": round(rate, 2), **extra,
                             "wall_s": round(self.wall_s, 2)}) for name, model_losses in losses.items()]
        with open(path, "a") as f:
            f.write("".join(line + "\n" for line in lines))
        return rate

    def scalars(self) -> dict[str, Any]:
        """The counters a checkpoint saves and a resumed clock starts from."""
        return {"cur_nimg": self.cur_nimg, "step": self.step, "wall_s": self.wall_s}


__all__ = ["TrainClock", "crossed"]
