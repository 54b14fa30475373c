"""Step functions that a CUDA graph can capture: Adam as a function of given gradients, and the capture.

At 64 px a GPU training step is bound by kernel launches, not arithmetic (issue 14). A CUDA
graph replays a whole step's kernels with one launch, but only a step that (1) never reads a
tensor back to the host, (2) keeps every tensor it reads or writes at a fixed address, and (3)
has no Python control flow that depends on tensor values. The trainings write their steps so:
random numbers are drawn into fixed buffers *before* the step, batches are gathered into fixed
buffers, learning rates and the EMA coefficient are tensors, and gradients come from
``torch.autograd.grad`` (no ``.grad`` fields to zero), handed to :func:`adam_step`.

:func:`adam_step` runs ``torch.optim.Adam``'s own update (``torch.optim.adam.adam``: fused,
capturable, with the group's settings) on the optimiser's own state, so checkpoints keep the
optimiser's ``state_dict`` layout. Parameters whose gradient is ``None`` (not reached by the
loss) are skipped, exactly as ``Optimizer.step`` skips them; gradients are given the
parameter's memory layout first (what ``.backward()`` guarantees and the fused kernel assumes).

:class:`StepGraph` runs a step eagerly, or on CUDA captures it once and replays it. Capture
needs warm-up runs (lazy allocation, cuDNN autotuning); they would change the weights, so the
step's state tensors are copied before and restored after, and the captured step then starts
from exactly the state the eager one would have.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor


def make_adam(params: Sequence[Tensor], lr: float, betas: tuple[float, float], eps: float, device: torch.device,
              impl: str = "fused") -> torch.optim.Adam:
    """Adam with a tensor learning rate and its state allocated now (a captured step cannot
    allocate it on first use). ``impl``: ``fused`` (one kernel per step; CUDA and CPU) or
    ``foreach`` (what ``torch.compile`` traces; it fuses the update itself)."""
    params = list(params)
    fused, capturable = impl == "fused", device.type == "cuda" or impl == "foreach"
    opt = torch.optim.Adam(params, lr=torch.tensor(float(lr), device=device), betas=betas, eps=eps,
                           fused=fused or None, foreach=(impl == "foreach") or None, capturable=capturable)
    for p in params:
        opt.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
    return opt


@torch.no_grad()
def adam_step(opt: torch.optim.Adam, params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    """``opt``'s Adam update of ``params`` with ``grads`` (``None``: that parameter is skipped).
    All of ``params`` must belong to ``opt``'s single parameter group."""
    from torch.optim.adam import adam

    group = opt.param_groups[0]
    # the parameter's memory layout, as AccumulateGrad gives ``.grad`` for ``loss.backward()``:
    # ``torch.autograd.grad`` returns some gradients with permuted strides (e.g. of grouped
    # convolution weights), and the fused kernel reads them as if they were laid out like the
    # parameter (torch 2.14 CPU: silently wrong updates, measured)
    pairs = [(p, g if g.stride() == p.stride() else g.contiguous()) for p, g in zip(params, grads) if g is not None]
    ps = [p for p, _ in pairs]
    states = [opt.state[p] for p in ps]
    beta1, beta2 = group["betas"]
    adam(ps, [g for _, g in pairs], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
         [s["step"] for s in states], foreach=group["foreach"], capturable=group["capturable"], differentiable=False,
         fused=group["fused"], grad_scale=None, found_inf=None, has_complex=False, amsgrad=False, beta1=beta1,
         beta2=beta2, lr=group["lr"], weight_decay=0.0, eps=group["eps"], maximize=False)


def optimizer_tensors(opt: torch.optim.Adam) -> list[Tensor]:
    """Every state tensor of ``opt`` (what a step mutates besides the parameters)."""
    return [t for s in opt.state.values() for t in s.values() if isinstance(t, Tensor)]


class StepGraph:
    """Run ``fn`` (no arguments, reads and writes fixed tensors) eagerly, or captured as a CUDA graph.

    ``state()`` lists every tensor ``fn`` mutates (weights, buffers, optimiser state,
    accumulators): warm-up runs change them, so they are restored before the capture. The first
    call captures (after ``warmup`` eager runs on a side stream) and then replays, so it
    performs exactly one step like every later call."""

    def __init__(self, fn: Callable[[], None], state: Callable[[], Sequence[Tensor]], enabled: bool, warmup: int = 2):
        self.fn, self.state, self.enabled, self.warmup = fn, state, enabled, warmup
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self) -> None:
        if self.enabled and self.graph is None:
            self._capture()
        if self.graph is None:
            self.fn()
        else:
            self.graph.replay()

    def _capture(self) -> None:
        """Warm up, restore the state, capture; if capturing fails, say so once and stay eager
        (a GPU window is not lost to a step that cannot be captured)."""
        tensors = list(self.state())
        saved = [t.detach().clone() for t in tensors]
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.fn()
            torch.cuda.current_stream().wait_stream(side)
            self._restore(tensors, saved)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.fn()
            self.graph = graph
        except RuntimeError as exc:
            import sys

            name = getattr(self.fn, "__name__", "step")
            print(f"warning: CUDA graph capture of {name} failed ({str(exc).splitlines()[0][:200]}); it runs eagerly",
                  file=sys.stderr)
            torch.cuda.synchronize()
            self._restore(tensors, saved)
            self.enabled = False

    @staticmethod
    @torch.no_grad()
    def _restore(tensors: Sequence[Tensor], saved: Sequence[Tensor]) -> None:
        for t, v in zip(tensors, saved):
            t.copy_(v)


__all__ = ["StepGraph", "adam_step", "make_adam", "optimizer_tensors"]
