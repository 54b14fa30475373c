"""FLOPs per image of a method, and what the device can do: achieved FLOP/s for ``joinbench timing``.

FLOPs are counted with :func:`joinbench.launches.count_flops` (the formulas of
:mod:`torch.utils.flop_counter`: matrix products and convolutions, forward and backward; not
element-wise work nor work outside torch, so counts are lower bounds) over one whole
``decompose``. Counting an inversion at 1000 steps would repeat the same step 1000 times, so
methods with step fields (:func:`step_fields`) are counted at 1 step and at 2 steps per field
and the total at the configured steps is extrapolated (FLOPs are linear in each step count:
the loop runs the same operations every step; tested against a direct count).

The device's peak comes from a small table of datasheet figures (dense, no sparsity) matched
on the device name, and on every device from a float32 matmul timed for a second, the
"measured matmul peak" (the only peak on a CPU).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import torch

from .env import synchronize
from .launches import count_flops

# Datasheet peaks in TFLOP/s, dense (no structured sparsity). First match on the device name
# wins, so the more specific names come first.
DEVICE_PEAKS: tuple[tuple[str, str, dict[str, float]], ...] = (
    ("h100 pcie", "NVIDIA H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0}),
    ("h100 nvl", "NVIDIA H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0}),
    ("h200 nvl", "NVIDIA H200 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0}),
    ("h100", "NVIDIA H100 SXM", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}),
    ("h200", "NVIDIA H200 SXM", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}),
    ("a100", "NVIDIA A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}),
)


def step_fields(config: Any, prefix: str = "") -> dict[str, int]:
    """Dotted names and values of the int fields called ``steps`` or ``*_steps`` of a
    (possibly nested) dataclass config: the optimisation loops whose length the cap and
    the FLOP extrapolation change."""
    found: dict[str, int] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            found.update(step_fields(value, f"{prefix}{f.name}."))
        elif (f.name == "steps" or f.name.endswith("_steps")) and isinstance(value, int) and not isinstance(value, bool):
            found[prefix + f.name] = value
    return found


def method_flops(method, build: Callable[[dict[str, int]], Any], run: Callable[[Any], Any], size: int) -> dict[str, Any]:
    """FLOPs per image of one ``run(method)`` (a decompose of ``size`` images; ``method`` is warm).

    For a method with step fields, fresh instances ``build(extra)`` with every step field at 1,
    and one field at a time at 2, are counted (each after one uncounted warm-up call, which
    does the set-up) and the count at the configured steps is extrapolated: base + sum over
    fields of (steps - 1) x (count at 2 - count at 1).
    """
    fields = step_fields(method.config)
    if not fields:
        total, per_op = count_flops(lambda: run(method))
        return {"flops_per_image": total / size, "per_op_per_image": {k: v / size for k, v in per_op.items()},
                "counted_batch_size": size, "how": "counted over one decompose"}

    def counted(extra: dict[str, int]) -> tuple[int, dict[str, int]]:
        m = build(extra)
        run(m)  # set-up (bank statistics, LPIPS) happens here, uncounted
        return count_flops(lambda: run(m))

    ones = {k: 1 for k in fields}
    base, base_ops = counted(ones)
    per_step, total = {}, float(base)
    ops = {k: float(v) for k, v in base_ops.items()}
    for key, steps in fields.items():
        at2, ops2 = counted({**ones, key: 2})
        delta = at2 - base
        per_step[key] = {"steps": steps, "flops_per_step_per_image": delta / size}
        total += (steps - 1) * delta
        for op in set(ops) | set(ops2):
            ops[op] = ops.get(op, 0.0) + (steps - 1) * (ops2.get(op, 0) - base_ops.get(op, 0))
    return {"flops_per_image": total / size, "per_op_per_image": {k: v / size for k, v in ops.items()},
            "counted_batch_size": size, "base_flops_per_image": base / size, "step_fields": per_step,
            "how": "extrapolated: counted at 1 step and at 2 steps per step field, linear in steps"}


def device_peak(name: str) -> dict[str, Any] | None:
    """Datasheet peaks (TFLOP/s, dense) of a known accelerator, matched on its name; None otherwise."""
    low = name.lower()
    for pattern, label, peaks in DEVICE_PEAKS:
        if pattern in low:
            return {"name": label, "tflops": dict(peaks),
                    "source": "vendor datasheet, dense (no sparsity); fp32 = non-tensor-core"}
    return None


def measure_matmul_peak(device: torch.device, seconds: float = 1.0) -> dict[str, Any]:
    """TFLOP/s of back-to-back float32 square matmuls for about ``seconds``: what torch
    attains on this device for the easiest workload there is (on a CPU, with the threads
    the methods use). On CUDA, TF32 is used only if torch.backends.cuda.matmul.allow_tf32."""
    n = 4096 if device.type == "cuda" else 512
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    c = torch.empty(n, n, device=device)
    torch.mm(a, b, out=c)  # warm-up
    synchronize(device)
    reps, elapsed = 0, 0.0
    t0 = time.perf_counter()
    while elapsed < seconds or reps < 3:
        chunk = max(1, reps)  # double the work between clock reads (each read syncs)
        for _ in range(chunk):
            torch.mm(a, b, out=c)
        synchronize(device)
        reps += chunk
        elapsed = time.perf_counter() - t0
    tflops = 2.0 * n**3 * reps / elapsed / 1e12
    return {"label": "measured matmul peak", "tflops": tflops, "dtype": "float32", "n": n, "reps": reps,
            "seconds": elapsed,
            "tf32": bool(device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)}


def add_flop_rates(results: list[dict[str, Any]], methods: dict[str, dict[str, Any]], peak: dict[str, Any]) -> None:
    """Achieved FLOP/s of every result row (FLOPs per image / mean seconds per image) and its
    share of the measured and datasheet peaks."""
    measured = peak["measured"]["tflops"] * 1e12
    spec = (peak.get("spec") or {}).get("tflops", {})
    for row in results:
        flops = methods[row["method"]].get("flops")
        if not flops:
            continue
        rate = flops["flops_per_image"] / row["seconds_per_image_mean"]
        row["achieved_flops_per_second"] = rate
        row["percent_of_measured_peak"] = 100.0 * rate / measured if measured > 0 else None
        for dtype in ("fp32", "bf16"):
            if dtype in spec:
                row[f"percent_of_{dtype}_peak"] = 100.0 * rate / (spec[dtype] * 1e12)


__all__ = ["DEVICE_PEAKS", "add_flop_rates", "count_flops", "device_peak", "measure_matmul_peak", "method_flops",
           "step_fields"]
