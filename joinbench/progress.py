"""The progress contract between long-running work and whoever shows it.

Methods (stage-1 inversion, PTI, encoders, feed-forward batches) and trainings report
:class:`Progress` events to an optional callback; the runner turns them into progress bars
(and ``-q`` simply passes no callback). The event carries what a user needs to tell a slow
run from a hung one: which stage, which step of how many, the current loss, and how many
images the current batch holds.

Reporting must never slow the work it reports on: a loss is a Python float only at log
intervals (reading a GPU tensor forces a host sync), so ``loss`` is ``None`` on the other
events.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Progress:
    """One progress event.

    ``stage``: what is running ("encoder", "stage1", "pti", "batch", "train", ...);
    ``step``: steps finished in this stage (1 after the first step);
    ``steps``: steps this stage will take in total;
    ``loss``: the current loss (mean per image), or None between log intervals;
    ``images``: images in the batch being worked on.
    """

    stage: str
    step: int
    steps: int
    loss: Optional[float] = None
    images: int = 1


ProgressCallback = Callable[[Progress], None]


def report(callback: ProgressCallback | None, stage: str, step: int, steps: int,
           loss: float | None = None, images: int = 1) -> None:
    """Send one event to ``callback`` if there is one (the common no-callback case costs nothing)."""
    if callback is not None:
        callback(Progress(stage, step, steps, loss, images))


__all__ = ["Progress", "ProgressCallback", "report"]
