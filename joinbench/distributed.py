"""Scaling a run beyond one process with torch.distributed, as launched by ``torchrun``.

Every image is decomposed independently, so a run (and each run of ``ablate`` and
``compare``) shards its images across processes and needs nothing from torch.distributed
beyond a handful of object collectives: rank 0 tells the others which images are already
finished (resume), every rank decomposes its share and streams its records to
``records.rank{r}.jsonl``, and at the end the records travel to rank 0 through the process
group, which merges them into ``records.jsonl`` in single-process order and writes the
summary, table and grid. Nothing here is home-made networking: ``torchrun`` sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and
:func:`init` hands them to ``torch.distributed.init_process_group`` (``env://``).

Backend: NCCL when the run uses CUDA (each process on ``cuda:LOCAL_RANK``), Gloo on CPU.
Outside torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) everything is a no-op and
:func:`init` returns the single-process context, so the runner has one code path.

Only rank 0 prints to stdout (the others' stdout goes to ``os.devnull``; stderr, and so
errors and warnings, stay), so ``torchrun --nproc-per-node 8 -m joinbench run ...`` prints
one table, not eight. Set ``JOINBENCH_ALL_RANKS_PRINT=1`` to keep every rank's stdout.
"""
from __future__ import annotations

import atexit
import datetime as _dt
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch

from .errors import JoinbenchError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Ranks wait for each other at the end of every run: a rank whose share holds one more batch
# of a slow method (a JoIN batch is minutes) must not trip the collective timeout.
DEFAULT_TIMEOUT_MINUTES = 120.0


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job: ``rank`` of ``world_size`` processes, ``local_rank``
    on its node, and the torch.distributed ``backend`` (None for a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        """True when several processes share the work (launched by torchrun)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 merges records and writes every table, figure and report."""
        return self.rank == 0

    def device(self, requested: str = "auto") -> torch.device:
        """The device of this process for a run asked to use ``requested``: ``auto`` and
        ``cuda`` become ``cuda:LOCAL_RANK`` (one GPU per process); ``cpu`` and explicit
        ``cuda:N`` are kept."""
        from .env import resolve_device

        name = str(requested)
        if self.active and name in ("auto", "cuda") and torch.cuda.is_available():
            return torch.device(f"cuda:{self.local_rank}")
        return resolve_device(name)

    # -- collectives (identity operations for a single process) ----------------------------
    def barrier(self) -> None:
        if not self.active:
            return
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj``, in rank order, on rank 0; None on the other ranks."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out


SINGLE = DistContext()
_context: DistContext | None = None


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        if default is None:
            raise JoinbenchError(
                f"WORLD_SIZE is set but {name} is not: launch several processes with torchrun, e.g. "
                "`torchrun --nproc-per-node 2 -m joinbench run ...`, or unset WORLD_SIZE.")
        return default
    try:
        return int(raw)
    except ValueError:
        raise JoinbenchError(f"Environment variable {name}={raw!r} is not an integer (torchrun sets it).") from None


def env_context() -> DistContext:
    """The context the environment describes (torchrun's variables), without initialising
    anything; the single-process context when ``WORLD_SIZE`` is unset or 1."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return SINGLE
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise JoinbenchError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world}).")
    return DistContext(rank=rank, world_size=world, local_rank=local_rank)


def init(device: str = "auto") -> DistContext:
    """Join the torchrun job described by the environment (once per process) and return
    this process's context. ``device`` is the first run's ``--device``: it picks NCCL
    (any CUDA device) or Gloo (``cpu``, or no GPU)."""
    global _context
    if _context is not None:
        return _context
    ctx = env_context()
    if not ctx.active:
        _context = SINGLE
        return _context
    import torch.distributed as dist

    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise JoinbenchError(
            f"WORLD_SIZE={ctx.world_size} but {' and '.join(missing)} unset: launch with torchrun "
            "(`torchrun --nproc-per-node N -m joinbench run ...`), which sets them.")
    use_cuda = torch.cuda.is_available() and not str(device).startswith("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        if ctx.local_rank >= torch.cuda.device_count():
            raise JoinbenchError(
                f"LOCAL_RANK={ctx.local_rank} but this node has {torch.cuda.device_count()} GPU(s): "
                "use --nproc-per-node at most the number of GPUs, or --device cpu.")
        torch.cuda.set_device(ctx.local_rank)  # NCCL's object collectives use the current device
    if not dist.is_initialized():
        minutes = float(os.environ.get("JOINBENCH_DIST_TIMEOUT_MINUTES", DEFAULT_TIMEOUT_MINUTES))
        dist.init_process_group(backend=backend, init_method="env://", rank=ctx.rank,
                                world_size=ctx.world_size, timeout=_dt.timedelta(minutes=minutes))
        atexit.register(_shutdown)
    else:  # someone else (a test harness, a notebook) set the group up: use it as it is
        backend = dist.get_backend()
    _context = DistContext(ctx.rank, ctx.world_size, ctx.local_rank, backend)
    if not _context.is_main and os.environ.get("JOINBENCH_ALL_RANKS_PRINT", "") in ("", "0"):
        sys.stdout = open(os.devnull, "w")  # one table per job, not one per rank
    return _context


def context() -> DistContext:
    """The current context: the one :func:`init` made, else the single-process one."""
    return _context or SINGLE


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def shard(ids: list[str], batch_size: int, rank: int, world_size: int) -> list[str]:
    """This rank's share of ``ids``: whole batches, dealt round-robin (batch k to rank
    k mod world_size).

    Dealing batches rather than single images keeps every batch exactly the batch a
    single-process run would decompose, so a sharded run reproduces a single-process run
    bit for bit even for batched optimisers (JoIN's float32 results change in the last
    bits with the batch's composition). On a GPU a batch costs about what one image costs,
    so images dealt one by one would not finish sooner.
    """
    if batch_size < 1:
        raise JoinbenchError(f"--batch-size must be at least 1, got {batch_size}.")
    batches = [ids[k:k + batch_size] for k in range(0, len(ids), batch_size)]
    return [i for b in batches[rank::world_size] for i in b]


__all__ = ["SINGLE", "DistContext", "context", "env_context", "init", "shard"]
