"""Training data: the procedural stream and the device-resident pool every training draws from.

Why a pool: the procedural renderer costs thousands of small kernel launches per call whatever
its batch size, so rendering one batch per step made a GPU spend its time launching kernels
(issue 14). :class:`DataPool` keeps ``size`` rendered images on the training device, renders
them in large calls, and replaces a fraction at a time; one training batch is then a random
index draw and a gather (two ops, no host sync), and the render cost per step is a small
amortised share. Each image is drawn about ``reuse`` times on average before it is replaced.

Determinism (a resumed run sees exactly the batches an uninterrupted one would):

* every per-image seed comes from ``ProceduralDataset.train_seeds`` over one seeded CPU
  ``torch.Generator``, so it is >= ``TRAIN_SEED_MIN`` (2^40): never a test image;
* the pool's state is that generator, the seed held by every slot, the refresh cursor, the
  number of batches drawn and the device generator of the batch indices; :meth:`state`
  returns them (a few kB) and :meth:`load_state` restores them and re-renders every slot from
  its seed. The pool itself is never saved. This relies on the datasets' contract that a
  sample renders identically whatever batch it is rendered in.

:class:`TrainStream` is the plain stream (one render per batch, optionally in chunks), kept
for callers that want every image exactly once.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from ..errors import JoinbenchError
from ..forward import COMPONENTS

Prepare = Callable[[dict[str, Tensor]], dict[str, Tensor]]


def create_training_dataset(name: str, resolution: int, forward_model: str | None = None):
    """The procedural dataset ``name`` at ``resolution`` (one-line error for datasets without a stream)."""
    from joinbench.datasets.base import ProceduralDataset

    from ..registry import create_dataset

    kwargs: dict[str, Any] = {"resolution": resolution}
    if forward_model:
        kwargs["forward_model"] = forward_model
    ds = create_dataset(name, **kwargs)
    if not isinstance(ds, ProceduralDataset):
        raise JoinbenchError(f"Dataset {name!r} has no procedural training stream; joinbench trains on procedural "
                             "datasets (materials, faces).")
    return ds


def encode_batch(batch: dict[str, Tensor], forward_model, name: str) -> Tensor:
    """Linear components -> the training image of model ``name`` in [-1, 1] (``joint``: the three, 9 channels)."""
    comps = COMPONENTS if name == "joint" else (name,)
    enc = [forward_model.encode(c, batch[c]) for c in comps]
    return torch.cat(enc, dim=1).mul(2.0).sub(1.0)


class TrainStream:
    """``ProceduralDataset.train_stream`` with a checkpointable position, optionally rendered in chunks.

    It draws the same seeds as ``train_stream`` (``train_seeds`` over the same seeded CPU
    generator: one draw of ``batch * chunk`` seeds equals ``chunk`` draws of ``batch``), and a
    sample renders identically whatever batch it is in, so it yields the same batches for any
    ``chunk``. The position (generator state at the chunk start + offset) is saved and restored.
    """

    def __init__(self, dataset, batch_size: int, device: torch.device | str, seed: int, resolution: int,
                 chunk: int = 1):
        self.dataset, self.batch_size, self.device, self.resolution = dataset, batch_size, device, resolution
        self.chunk = max(1, int(chunk))
        self.generator = torch.Generator().manual_seed(int(seed))
        self.batches = 0
        self._chunk_start: Tensor | None = None  # generator state before the pending chunk's seeds
        self._pending: dict[str, Tensor] | None = None
        self._offset = 0

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        return self

    def _render_chunk(self) -> None:
        self._chunk_start = self.generator.get_state()
        seeds = self.dataset.train_seeds(self.generator, self.batch_size * self.chunk)
        self._pending = self.dataset.render_batch_at(seeds, self.device, self.resolution)

    def __next__(self) -> dict[str, Tensor]:
        if self._pending is None or self._offset >= self.batch_size * self.chunk:
            self._render_chunk()
            self._offset = 0
        o, b = self._offset, self.batch_size
        out = {k: v[o:o + b] for k, v in self._pending.items()}
        self._offset += b
        self.batches += 1
        return out

    def state(self) -> dict[str, Any]:
        if self._pending is not None and self._offset < self.batch_size * self.chunk:
            return {"generator": self._chunk_start, "batches": self.batches, "offset": self._offset}
        return {"generator": self.generator.get_state(), "batches": self.batches, "offset": 0}

    def load_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.batches = int(state["batches"])
        self._pending, self._offset = None, 0
        offset = int(state.get("offset", 0))
        if offset:  # skip the seeds already consumed: the next chunk starts at the next unseen image
            self.dataset.train_seeds(self.generator, offset)


def pool_defaults(device: torch.device, batch: int) -> dict[str, int]:
    """Pool size and render call size when the config leaves them open: on CUDA 16,384 images
    rendered 4,096 per call (memory is cheap there and launches are not); elsewhere a pool of
    eight batches rendered in one call (CPU tests and smoke runs)."""
    if device.type == "cuda":
        return {"size": max(16_384, 8 * batch), "render_chunk": 4096}
    return {"size": 8 * batch, "render_chunk": 8 * batch}


class DataPool:
    """``size`` rendered training images on the training device, drawn ``batch`` at a time.

    ``prepare(rendered) -> {name: tensor}`` turns one render call's output (linear components,
    ``image``) into what the training keeps (e.g. encoded components in [-1, 1]); the pool
    stores those tensors, ``(size, ...)`` each. Every ``refresh_every`` draws, the
    ``refresh_count = round(refresh * size)`` slots after the cursor are re-rendered from new
    seeds (in calls of at most ``render_chunk`` images), with ``refresh_every`` chosen so that
    each image is drawn about ``reuse`` times: ``reuse * refresh_count / batch`` draws.

    :meth:`draw` returns one batch (fresh tensors); :meth:`draw_into` writes it into given
    buffers (static inputs of a captured CUDA graph). Neither synchronises with the host.
    """

    def __init__(self, dataset, prepare: Prepare, device: torch.device | str, seed: int, resolution: int,
                 batch: int, size: int | None = None, refresh: float = 0.25, reuse: float = 4.0,
                 render_chunk: int | None = None):
        self.device = torch.device(device)
        defaults = pool_defaults(self.device, batch)
        self.dataset, self.prepare, self.resolution, self.batch = dataset, prepare, int(resolution), int(batch)
        self.size = int(size if size is not None else defaults["size"])
        self.render_chunk = int(render_chunk if render_chunk is not None else defaults["render_chunk"])
        if self.size < self.batch or self.render_chunk < 1:
            raise JoinbenchError(f"The data pool must hold at least one batch ({self.batch} images) and render at least "
                                 f"one image per call (got pool size {self.size}, render chunk {self.render_chunk}).")
        if not (0 < refresh <= 1 and math.isfinite(reuse) and reuse > 0):
            raise JoinbenchError(f"--pool-refresh must be in (0, 1] and --pool-reuse > 0 (got {refresh}, {reuse}).")
        self.refresh_count = max(1, round(refresh * self.size))
        self.refresh_every = max(1, round(reuse * self.refresh_count / self.batch))
        self.seed_gen = torch.Generator().manual_seed(int(seed))  # per-image seeds, >= 2^40
        self.draw_gen = torch.Generator(device=self.device).manual_seed(int(seed) + 1)  # batch indices
        self.seeds = torch.empty(self.size, dtype=torch.int64)
        self.cursor = 0  # the next slot to refresh
        self.draws = 0  # batches drawn so far
        self.renders = 0  # render calls so far (progress and profiling; not state)
        self.data: dict[str, Tensor] = {}
        self._fill(torch.arange(self.size), self.dataset.train_seeds(self.seed_gen, self.size))

    # -- rendering ------------------------------------------------------------------------
    def _fill(self, slots: Tensor, seeds: Tensor) -> None:
        """Render ``seeds`` into ``slots`` (CPU int64 tensors of equal length), ``render_chunk`` at a time."""
        self.seeds[slots] = seeds
        for i in range(0, len(seeds), self.render_chunk):
            kept = self.prepare(self.dataset.render_batch_at(seeds[i:i + self.render_chunk], self.device, self.resolution))
            self.renders += 1
            idx = slots[i:i + self.render_chunk].to(self.device)
            for k, v in kept.items():
                if k not in self.data:
                    self.data[k] = torch.empty((self.size, *v.shape[1:]), dtype=v.dtype, device=self.device)
                self.data[k].index_copy_(0, idx, v)

    def _refresh(self) -> None:
        slots = (self.cursor + torch.arange(self.refresh_count)) % self.size
        self._fill(slots, self.dataset.train_seeds(self.seed_gen, self.refresh_count))
        self.cursor = (self.cursor + self.refresh_count) % self.size

    # -- drawing --------------------------------------------------------------------------
    def _indices(self) -> Tensor:
        if self.draws and self.draws % self.refresh_every == 0:
            self._refresh()
        self.draws += 1
        return torch.randint(0, self.size, (self.batch,), generator=self.draw_gen, device=self.device)

    def draw(self) -> dict[str, Tensor]:
        idx = self._indices()
        return {k: v.index_select(0, idx) for k, v in self.data.items()}

    def draw_into(self, out: dict[str, Tensor]) -> None:
        idx = self._indices()
        for k, buf in out.items():
            torch.index_select(self.data[k], 0, idx, out=buf)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        return self

    def __next__(self) -> dict[str, Tensor]:
        return self.draw()

    # -- checkpoint -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"seed_gen": self.seed_gen.get_state(), "draw_gen": self.draw_gen.get_state(), "seeds": self.seeds.clone(),
                "cursor": self.cursor, "draws": self.draws, "size": self.size, "refresh_count": self.refresh_count,
                "refresh_every": self.refresh_every}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the counters and generators and re-render every slot from its saved seed."""
        shape = (int(state["size"]), int(state["refresh_count"]), int(state["refresh_every"]))
        if shape != (self.size, self.refresh_count, self.refresh_every):
            raise ValueError(f"the checkpoint's data pool (size, refresh count, refresh interval) {shape} differs from "
                             f"this run's {(self.size, self.refresh_count, self.refresh_every)}")
        self.seed_gen.set_state(state["seed_gen"])
        self.draw_gen.set_state(state["draw_gen"])
        self.cursor, self.draws = int(state["cursor"]), int(state["draws"])
        self._fill(torch.arange(self.size), state["seeds"].to(torch.int64))


__all__ = ["DataPool", "TrainStream", "create_training_dataset", "encode_batch", "pool_defaults"]
