"""Dataset interface shared by procedural, real-photo and folder datasets.

A dataset is a fixed, indexable test split of :class:`~joinbench.types.Sample` (image,
optional linear ground truth, mask, metadata). Procedural datasets additionally stream an
infinite training set. Seeds: test image ``i`` has per-sample seed ``TEST_SEED_BASE + seed
* 1_000_003 + i`` (< 2^40); training streams draw per-sample seeds >= 2^40, so a training
image can never coincide with a test image.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any, Iterator

import torch
from torch import Tensor

from joinbench.errors import DatasetError
from joinbench.forward import COMPONENTS, ForwardModel
from joinbench.registry import create_forward_model
from joinbench.types import Batch, Sample

TEST_SEED_BASE = 1 << 20
TRAIN_SEED_MIN = 1 << 40
# test seeds TEST_SEED_BASE + seed * 1_000_003 + i stay below TRAIN_SEED_MIN for every --seed up to this
MAX_SEED = 1_000_000
MIN_RESOLUTION, MAX_RESOLUTION = 16, 512


def domain_of(name: str) -> str | None:
    """The declared :attr:`Dataset.domain` of the registered dataset ``name`` (``faces-shift``
    -> ``faces``), read from its class without building it; None for e.g. ``folder:PATH``."""
    from joinbench.registry import DATASETS

    entry, _ = DATASETS.get(name)
    return entry.factory.domain if isinstance(entry.factory, type) and issubclass(entry.factory, Dataset) else None


def known_domains() -> tuple[str, ...]:
    """Every domain a registered dataset declares (``faces``, ``materials``): the values
    ``--prior`` takes."""
    from joinbench.registry import DATASETS

    return tuple(sorted({d for n, _ in DATASETS.describe() if (d := domain_of(n))}))


def check_resolution(resolution: int) -> int:
    r = int(resolution)
    if r < MIN_RESOLUTION or r > MAX_RESOLUTION or r & (r - 1):
        raise DatasetError(
            f"Resolution {resolution} is not supported: use a power of two from {MIN_RESOLUTION} to {MAX_RESOLUTION} (e.g. --resolution 64)."
        )
    return r


class Dataset(ABC):
    """A fixed evaluation split. Subclasses set the class attributes and implement
    ``__len__`` and ``__getitem__``.

    The contract a run relies on: every registered factory takes ``resolution`` and ``seed``
    keywords (a split that has no seed accepts and ignores it); :attr:`domain` names the
    domain whose trained weights suit the images (methods pick their weights from it; None
    when no trained domain fits, e.g. a user's folder); :meth:`fingerprint` keys results on
    what the name does not fix (the files of a user's folder)."""

    name: str = ""
    description: str = ""
    domain: str | None = None  # "materials", "faces": whose priors / U-Net weights suit these images
    has_ground_truth: bool = True
    references: tuple[str, ...] = ()  # annotation kinds a benchmark hands its metrics ("iiw", "maw", "arap")
    # The metrics a benchmark is scored by in the literature (IIW: WHDR, ...), scored when the user
    # names none; with keeps_harness_metrics they are added to the harness's own defaults instead
    # of replacing them (MIT: its LMSE beside the dense metrics). See default_metrics.
    benchmark_metrics: tuple[str, ...] = ()
    keeps_harness_metrics: bool = False
    forward_model_name: str = "reinhard"
    colour_space: str = "display images: Reinhard s=4; components: linear"
    source: str = ""
    licence: str = ""

    def __init__(self, resolution: int = 64, forward_model: ForwardModel | str | None = None):
        self.resolution = check_resolution(resolution)
        fm = forward_model or self.forward_model_name
        self.forward_model = create_forward_model(fm) if isinstance(fm, str) else fm

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> Sample: ...

    def _position(self, index: int, what: str = "images") -> int:
        """``index`` as a position 0..len-1 (negative ones count from the end), else IndexError."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name} has {len(self)} {what}; index {index} is out of range")
        return index

    @property
    def components(self) -> tuple[str, ...]:
        """Ground-truth components this dataset provides (empty without ground truth)."""
        return self.forward_model.components if self.has_ground_truth else ()

    def sample_id(self, index: int) -> str:
        """The id of sample ``index``; subclasses answer without rendering or reading it."""
        return self[index].id

    def batches(self, batch_size: int = 16, limit: int | None = None, skip: set[str] | None = None) -> Iterator[Batch]:
        """Iterate the split in order as batches, leaving out ids in ``skip``."""
        n = len(self) if limit is None else min(limit, len(self))
        pending: list[Sample] = []
        for i in range(n):
            if skip and self.sample_id(i) in skip:  # decided before the sample is loaded
                continue
            pending.append(self[i])
            if len(pending) == batch_size:
                yield Batch.collate(pending)
                pending = []
        if pending:
            yield Batch.collate(pending)

    def default_metrics(self, harness: tuple[str, ...]) -> tuple[str, ...]:
        """The metrics a run on this dataset scores when the user gives no ``--metrics``.

        ``harness`` is the command's own default (``run``: the dense metrics of
        :data:`joinbench.plan.DEFAULT_METRICS`; ``compare`` / ``ablate``: the table's). A benchmark
        with its own protocol declares :attr:`benchmark_metrics`, because the harness default
        would score only the re-render on photos without dense ground truth, which tells nothing
        about the decomposition (Retinex re-renders exactly). Datasets that declare none keep
        ``harness`` unchanged, so their runs keep their reuse keys."""
        if not self.benchmark_metrics:
            return tuple(harness)
        if self.keeps_harness_metrics:
            return tuple(dict.fromkeys((*harness, *self.benchmark_metrics)))
        return tuple(self.benchmark_metrics)

    def fingerprint(self) -> str | None:
        """A hash of what determines the images beyond the name, resolution and seed (e.g. the
        files a folder holds), so finished results are reused only for the same images; None
        when the name, resolution and seed fix them (generated and packaged splits)."""
        return None

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "size": len(self),
            "domain": self.domain,
            "resolution": self.resolution,
            "has_ground_truth": self.has_ground_truth,
            "forward_model": self.forward_model.name,
            "colour_space": self.colour_space,
            "source": self.source,
            "licence": self.licence,
            # what a run scores without --metrics (only where the dataset declares its protocol)
            **({"benchmark_metrics": list(self.benchmark_metrics)} if self.benchmark_metrics else {}),
        }


class ProceduralDataset(Dataset):
    """A dataset rendered from per-sample seeds by :meth:`render`.

    ``render(seeds, resolution, device)`` must return linear ``albedo``, ``shading``,
    ``specular`` (B, 3, H, W), optionally ``mask`` (B, 1, H, W), and may return ``image``
    (B, 3, H, W, display space) when the image is not simply the forward model of the
    components (e.g. sensor noise or JPEG in shift splits). Everything random must come
    from :class:`datasets.procedural.Rand` keyed by the seeds, so each sample is the same
    whatever batch, device or resolution it is rendered at.
    """

    licence = "CC0 (procedurally generated by joinbench)"
    source = "joinbench procedural generator"
    default_size = 100

    def __init__(self, resolution: int = 64, size: int | None = None, seed: int = 0,
                 forward_model: ForwardModel | str | None = None, shift: bool = False, render_batch: int = 32):
        super().__init__(resolution, forward_model)
        self.size = int(self.default_size if size is None else size)
        if self.size < 1:
            raise DatasetError(f"Dataset size must be at least 1, got {size}.")
        self.seed = int(seed)
        if not 0 <= self.seed <= MAX_SEED:  # beyond it test seeds would reach the training streams' range
            raise DatasetError(f"--seed must be from 0 to {MAX_SEED:,} (test images must never be training images), got {seed}.")
        self.shift = bool(shift)
        self.render_batch = render_batch
        self._cache: dict[int, Sample] = {}

    # -- to implement --------------------------------------------------------------------
    @abstractmethod
    def render(self, seeds: Tensor, resolution: int, device: torch.device | str) -> dict[str, Tensor]: ...

    # -- seeds ---------------------------------------------------------------------------
    def test_seeds(self, indices: Tensor | list[int]) -> Tensor:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return TEST_SEED_BASE + self.seed * 1_000_003 + idx

    @staticmethod
    def train_seeds(generator: torch.Generator, n: int) -> Tensor:
        return torch.randint(TRAIN_SEED_MIN, 1 << 62, (n,), generator=generator, dtype=torch.int64)

    # -- rendering -----------------------------------------------------------------------
    def render_batch_at(self, seeds: Tensor, device: torch.device | str = "cpu", resolution: int | None = None) -> dict[str, Tensor]:
        """Render seeds to a dict with linear components, mask and the display ``image``."""
        res = self.resolution if resolution is None else check_resolution(resolution)
        out = self.render(seeds, res, device)  # where the seeds are: render() moves them (a host copy can plan)
        if "image" not in out:
            out["image"] = self.forward_model.render(out["albedo"], out["shading"], out.get("specular"))
        if not self.forward_model.use_specular:
            out.pop("specular", None)
        return out

    def _fill(self, start: int) -> None:
        stop = min(len(self), start + self.render_batch)
        idx = list(range(start, stop))
        out = self.render_batch_at(self.test_seeds(idx), "cpu")
        for j, i in enumerate(idx):
            self._cache[i] = Sample(
                id=self.sample_id(i),
                image=out["image"][j],
                albedo=out["albedo"][j],
                shading=out["shading"][j],
                specular=out["specular"][j] if "specular" in out else None,
                mask=out["mask"][j] if "mask" in out else None,
                meta={**self.sample_meta(i), "seed": int(self.test_seeds([i])[0])},
            )

    def sample_meta(self, index: int) -> dict[str, Any]:
        return {
            "dataset": self.name, "index": index, "resolution": self.resolution,
            "colour_space": self.colour_space, "forward_model": self.forward_model.name,
            "source": self.source, "licence": self.licence, "shift": self.shift,
        }

    def __len__(self) -> int:
        return self.size

    def sample_id(self, index: int) -> str:
        return f"{self.name}-{self._position(index):05d}"

    def __getitem__(self, index: int) -> Sample:
        index = self._position(index, "test images")
        if index not in self._cache:
            # Render in aligned chunks; each sample is independent of its chunk.
            self._fill(index - index % self.render_batch)
            if len(self._cache) > 4 * self.render_batch:  # bound memory at high resolution
                for k in [k for k in self._cache if abs(k - index) >= self.render_batch]:
                    del self._cache[k]
        return self._cache[index]

    def train_stream(self, batch_size: int, device: torch.device | str = "cpu", seed: int = 0,
                     resolution: int | None = None) -> Iterator[dict[str, Tensor]]:
        """Infinite training batches rendered on ``device`` (never the same image twice)."""
        gen = torch.Generator().manual_seed(int(seed))
        while True:
            yield self.render_batch_at(self.train_seeds(gen, batch_size), device, resolution)

    def checksum(self, limit: int | None = None) -> str:
        """sha256 over the raw float32 bytes of every tensor of the first ``limit`` samples."""
        h = hashlib.sha256()
        n = len(self) if limit is None else min(limit, len(self))
        for i in range(n):
            s = self[i]
            for name in ("image", *COMPONENTS, "mask"):
                t = getattr(s, name)
                if t is not None:
                    h.update(name.encode())
                    h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()
