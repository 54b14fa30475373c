"""The one training loop: what a training hands the wing (:class:`Trainer`) and how the wing runs it.

Priors, encoders and the U-Net differ in their models and losses, not in their bookkeeping,
so the bookkeeping lives here once: the ``--out`` folder and its checkpoint (``--resume``
continues exactly, with one-line errors for everything that would not), the image budget and
``--minutes`` (:class:`~joinbench.training.clock.TrainClock`), Ctrl-C (a checkpoint after the
current batch, then :class:`~joinbench.errors.Interrupted` naming the folder), ``log.jsonl``
lines at ``log_kimg``, and checkpoints (with the trainer's snapshot files) at
``snapshot_kimg`` and at the end. A family builds its :class:`Trainer`, calls
:meth:`TrainingRun.train`, and exports from what it returns.

The loop never reads a tensor back between log intervals: :meth:`Trainer.iteration` must not
synchronise with the host, and losses are read only in :meth:`Trainer.pop_losses`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import Tensor

from ..errors import Interrupted, JoinbenchError
from .checkpoint import check_resume, load_checkpoint, open_checkpoint, save_checkpoint, truncate_log
from .clock import TrainClock

MODEL_NAMES = ("albedo", "shading", "specular", "joint")


class Checkpointable(Protocol):
    """One model's share of a checkpoint (its weights, and its optimiser and RNG state)."""

    name: str

    def tensors(self) -> dict[str, Tensor]: ...

    def load_tensors(self, tensors: dict[str, Tensor]) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


class DataSource(Protocol):
    """Where batches come from (:class:`~joinbench.training.data.DataPool`, ``TrainStream``); its position is checkpointed."""

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


class Trainer(Protocol):
    """What the wing drives: models (``units``), their data, one iteration, and the losses."""

    units: Sequence[Checkpointable]
    data: DataSource

    def iteration(self, step: int, progress: float) -> None:
        """One batch through every model (``step``: iterations done before it; ``progress``:
        0..1, see :meth:`TrainClock.progress`). No host synchronisation: the loop depends on it."""

    def pop_losses(self) -> dict[str, dict[str, float]]:
        """Per model, the mean losses since the last call (reads them back: log intervals only)."""

    def snapshot(self, out: Path, clock: TrainClock) -> None:
        """Files written beside each checkpoint (e.g. sample grids); may do nothing."""


def check_training_numbers(batch: int, kimg: float, minutes: float | None, lr: float,
                           error_cls: type[JoinbenchError] = JoinbenchError) -> None:
    """The budget and step size every training command shares, as one-line errors (nan and inf
    included, which would otherwise fail deep inside the loop or the optimiser)."""
    if batch < 1 or not (math.isfinite(kimg) and kimg > 0):
        raise error_cls(f"--batch must be >= 1 and --kimg a finite number > 0 (got batch {batch}, kimg {kimg}).")
    if minutes is not None and not (math.isfinite(minutes) and minutes > 0):
        raise error_cls(f"--minutes must be a finite number > 0, got {minutes} (leave it out for no time budget).")
    if not (math.isfinite(lr) and lr > 0):
        raise error_cls(f"--lr must be a finite number > 0, got {lr}.")


def model_seed(seed: int, name: str) -> int:
    """Per-model seed: a component's model trains identically alone or beside the others."""
    return int(seed) * 1_000_003 + MODEL_NAMES.index(name) * 7919 + 1


@dataclass
class RunSpec:
    """How long and how loudly a training runs, and what its checkpoints carry besides the models."""

    kimg: float
    batch: int
    desc: str  # progress bar label, e.g. "materials/all"
    device: torch.device
    minutes: float | None = None
    log_kimg: float = 4.0
    snapshot_kimg: float = 100.0
    progress: bool = True
    log_first_step: bool = False  # also log after step 1 (a first loss to compare the last with)
    scalars: dict[str, Any] = field(default_factory=dict)  # saved in state.json (config, init, prior hashes)
    postfix: Callable[[dict[str, dict[str, float]]], str] | None = None  # progress bar text after the rate


@dataclass
class Finished:
    """What a training run ended with (this invocation's counters include resumed ones)."""

    cur_nimg: int
    steps: int
    wall_s: float
    last_losses: dict[str, dict[str, float]]
    first_losses: dict[str, dict[str, float]]
    log_path: Path


class TrainingRun:
    """One ``--out`` folder: opened first (so --resume mistakes fail before models are built),
    then :meth:`train` runs a :class:`Trainer` in it."""

    def __init__(self, out: str | Path, resume: bool, error_cls: type[JoinbenchError] = JoinbenchError):
        self.out, self.error_cls = Path(out), error_cls
        self.checkpoint, self.saved = open_checkpoint(self.out, resume, error_cls)
        self.log_path = self.out / "log.jsonl"

    @property
    def resuming(self) -> bool:
        return self.checkpoint is not None

    @property
    def saved_init(self) -> dict[str, Any] | None:
        """The initialisation record of the checkpoint being resumed (``--init-from``), if any."""
        return (self.saved or {}).get("init")

    def check_settings(self, cfg: Any, keys: Sequence[str], device: torch.device) -> None:
        """Refuse to resume with settings that change the optimisation (see :func:`check_resume`)."""
        if self.checkpoint is not None:
            check_resume((self.saved or {}).get("config", {}), cfg, keys, device, self.checkpoint, self.error_cls)

    def train(self, trainer: Trainer, spec: RunSpec) -> Finished:
        scalars = None
        last: dict[str, dict[str, float]] = {}
        first: dict[str, dict[str, float]] = {}
        if self.checkpoint is not None:
            scalars = load_checkpoint(self.checkpoint, trainer.units, trainer.data, self.error_cls)
            last = {k: dict(v) for k, v in scalars.get("losses", {}).items()}
            first = {k: dict(v) for k, v in scalars.get("first_losses", {}).items()}
            truncate_log(self.log_path, int(scalars["cur_nimg"]))
        total = int(round(spec.kimg * 1000))
        clock = TrainClock(total, spec.batch, spec.minutes, scalars, spec.desc, spec.progress)
        try:
            with clock:
                while not clock.done:
                    trainer.iteration(clock.step, clock.progress())
                    clock.advance()
                    if clock.due(spec.log_kimg) or (spec.log_first_step and clock.step == 1):
                        losses = {k: {n: round(v, 6) for n, v in d.items()} for k, d in trainer.pop_losses().items()}
                        for k, d in losses.items():
                            last.setdefault(k, {}).update(d)
                            first.setdefault(k, d)
                        rate = clock.log(self.log_path, spec.device, losses,
                                         **({"models": len(losses)} if len(losses) > 1 else {}))
                        shown = spec.postfix(last) if spec.postfix else ""
                        clock.bar.set_postfix_str(f"{rate:.1f} img/s" + (f" {shown}" if shown else ""))
                    if clock.due(spec.snapshot_kimg):
                        clock.fold_wall()
                        trainer.snapshot(self.out, clock)
                        save_checkpoint(self.out, trainer.units, trainer.data,
                                        {**clock.scalars(), **spec.scalars, "losses": last, "first_losses": first})
        except KeyboardInterrupt:
            if clock.done:  # the first Ctrl-C: the loop ended on a step that wrote a checkpoint
                why = f"interrupted after {clock.cur_nimg:,} images: checkpoint written in {self.out}"
            else:  # the second: stopped at once, the last checkpoint (if any) stays
                why = f"interrupted: {self.out} keeps its last checkpoint, if it had one"
            raise Interrupted(f"{why}; continue with the same command plus --resume") from None
        return Finished(clock.cur_nimg, clock.step, clock.wall_s, last, first, self.log_path)


__all__ = ["Checkpointable", "DataSource", "Finished", "RunSpec", "Trainer", "TrainingRun", "check_training_numbers",
           "model_seed"]
