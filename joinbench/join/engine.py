"""The per-image optimisation engine shared by stage 1 and PTI.

Both stages optimise, for B images at once, variables that belong to one image each (stage 1:
latents and noise maps; PTI: copies of generator weights), with a loss that is a sum of
per-image terms. :class:`ImageVariables` holds all of them as ONE tensor (B, ...) and makes
each step launch-lean and free of host synchronisation, so that a CUDA graph can capture it:

* one gradient tensor (``torch.autograd.grad`` of the summed loss, no ``.grad`` fields to zero);
* one finiteness check: ``isfinite`` of the per-image losses and one reduction over the
  gradient tensor. An image whose loss or gradient is non-finite is *frozen*: its gradient is
  zeroed, its variables are restored after every later update (Adam's momentum would still
  move them), and the step it happened at is recorded, all as tensor masks;
* torch's fused Adam on the one tensor (``capturable`` on CUDA), its learning rate a tensor
  read from the schedule at a step counter that lives on the device.

:func:`run_steps` drives the loop: steps (replayed from a CUDA graph where enabled), the loss
curve at log intervals, progress events, and (PTI) the end once every image is frozen, a
check that reads the device only at log intervals.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from ..progress import ProgressCallback, report
from ..training.graphs import StepGraph, adam_step, make_adam, optimizer_tensors


def lr_ramp(step: int, steps: int, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """The StyleGAN2 projector's learning-rate multiplier at ``step`` of ``steps``."""
    import math

    t = step / max(1, steps)
    r = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    r = 0.5 - 0.5 * math.cos(math.pi * r)
    return r * (min(1.0, t / rampup) if rampup > 0 else 1.0)


class ImageVariables:
    """Every image's variables as one leaf tensor ``values`` (B, ...), optimised by Adam with
    per-image freezing (see the module docstring). ``schedule`` (steps,) holds the learning
    rate of each step; ``after_update`` (optional, no arguments) runs after each Adam update,
    before frozen images are restored (stage 1 re-normalises its noise maps there)."""

    def __init__(self, values: Tensor, schedule: Tensor, betas: tuple[float, float],
                 after_update: Callable[[], None] | None = None):
        dev = values.device
        self.values = values.detach().clone().requires_grad_(True)
        b = values.shape[0]
        self.schedule = schedule.to(dev, values.dtype)
        self.opt = make_adam([self.values], 0.0, tuple(betas), 1e-8, dev)
        self.lr = self.opt.param_groups[0]["lr"] = torch.zeros((), dtype=values.dtype, device=dev)  # not rounded to float32
        self.after_update = after_update
        self.step_t = torch.zeros(1, dtype=torch.long, device=dev)  # the next step's index
        self.frozen = torch.zeros(b, dtype=torch.bool, device=dev)
        self.bad_step = torch.full((b,), -1, dtype=torch.long, device=dev)  # first non-finite step, or -1
        self.loss = torch.zeros(b, dtype=values.dtype, device=dev)  # the last step's per-image losses

    def state(self) -> list[Tensor]:
        """Every tensor an update mutates (what a CUDA-graph warm-up must restore)."""
        return [self.values, self.step_t, self.frozen, self.bad_step, self.lr, self.loss, *optimizer_tensors(self.opt)]

    def rows(self, mask: Tensor) -> Tensor:
        """A (B,) mask shaped to broadcast over ``values``."""
        return mask.view(-1, *([1] * (self.values.ndim - 1)))

    def freeze(self, mask: Tensor) -> None:
        """Freeze the images of ``mask`` (B,) from this step on (PTI's early stop)."""
        self.frozen |= mask

    def update(self, loss: Tensor) -> Tensor:
        """One step on the per-image losses ``loss`` (B,), computed from :attr:`values` (kept
        in :attr:`loss`, a tensor at a fixed address). Returns the images newly found non-finite (B,)."""
        self.loss.copy_(loss.detach())
        grad, newly = self.gradient(loss)
        self.apply(grad)
        return newly

    def gradient(self, loss: Tensor) -> tuple[Tensor, Tensor]:
        """The gradient of the live images' summed loss, zero for frozen images (those found
        non-finite now are frozen here), and the newly non-finite images (B,)."""
        ok = torch.isfinite(loss) & ~self.frozen
        grad, = torch.autograd.grad(torch.where(ok, loss, torch.zeros_like(loss)).sum(), self.values)
        with torch.no_grad():
            bad = ~(torch.isfinite(loss) & torch.isfinite(grad).flatten(1).all(1))
            newly = bad & ~self.frozen
            self.bad_step.copy_(torch.where(newly, self.step_t, self.bad_step))
            self.frozen |= bad
            return grad.masked_fill(self.rows(self.frozen), 0.0), newly

    @torch.no_grad()
    def apply(self, grad: Tensor) -> None:
        """The Adam update with ``grad`` at this step's learning rate; frozen images keep their values."""
        saved = self.values.detach().clone()
        self.lr.copy_(self.schedule.index_select(0, self.step_t).view(()))
        adam_step(self.opt, [self.values], [grad])
        if self.after_update is not None:
            self.after_update()
        self.values.copy_(torch.where(self.rows(self.frozen), saved, self.values))
        self.step_t += 1


def lr_schedule(lr: float, steps: int, rampup: float, rampdown: float) -> Tensor:
    """The learning rate of every step (CPU, float64), for :class:`ImageVariables`."""
    return torch.tensor([lr * lr_ramp(s, steps, rampup, rampdown) for s in range(steps)], dtype=torch.float64)


def step_graph(step: Callable[[], None], variables: ImageVariables, enabled: bool,
               state: Sequence[Tensor] = ()) -> StepGraph:
    """``step`` run eagerly, or captured once as a CUDA graph and replayed (``enabled`` on CUDA).
    ``state``: tensors the step mutates besides ``variables``' (restored after the warm-up)."""
    return StepGraph(step, lambda: [*variables.state(), *state], enabled and variables.values.device.type == "cuda")


def run_steps(step: Callable[[int], None], steps: int, log_every: int, variables: ImageVariables,
              progress: ProgressCallback | None, stage: str, images: int,
              stop_when_frozen: bool = False) -> tuple[list[Tensor], list[int], int]:
    """Run ``step(i)`` for i < ``steps``; at log intervals (and the last step) keep a copy of
    the per-image losses for the curve and read their mean for ``progress`` (the only host
    reads); with ``stop_when_frozen``, end once every image is frozen (checked at log
    intervals). Every step sends a progress event. Returns (curve, curve steps, steps run)."""
    curve: list[Tensor] = []
    curve_steps: list[int] = []
    every = max(1, log_every)
    for i in range(steps):
        step(i)
        logged = i % every == 0 or i == steps - 1
        value = None
        if logged:
            curve.append(variables.loss.clone())
            curve_steps.append(i)
            if progress is not None:
                value = float(curve[-1].float().mean())
        report(progress, stage, i + 1, steps, value, images)
        if logged and stop_when_frozen and bool(variables.frozen.all()):
            return curve, curve_steps, i + 1
    return curve, curve_steps, steps


__all__ = ["ImageVariables", "lr_ramp", "lr_schedule", "run_steps", "step_graph"]
