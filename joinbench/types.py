"""The data that crosses the seams: samples and batches from datasets, decompositions
from methods. Images are float32 tensors; display-space images lie in [0, 1]; ground-truth
components are *linear* (encode them with the dataset's forward model for display-space
metrics)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .forward import COMPONENTS, ForwardModel


@dataclass
class Sample:
    """One image with whatever ground truth is known.

    image: (3, H, W) display space in [0, 1].
    albedo / shading / specular: (3, H, W) linear, or None where unknown.
    mask: (1, H, W) float in {0, 1} (1 = evaluate), or None for "all pixels".
    meta: resolution, colour space, source, licence, generator parameters, ...
    """

    id: str
    image: Tensor
    albedo: Tensor | None = None
    shading: Tensor | None = None
    specular: Tensor | None = None
    mask: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def component(self, name: str) -> Tensor | None:
        return getattr(self, name)

    @property
    def has_ground_truth(self) -> bool:
        return any(getattr(self, c) is not None for c in COMPONENTS)


@dataclass
class Batch:
    """Stacked samples: tensors (B, C, H, W); a component is None unless every sample has it."""

    ids: list[str]
    image: Tensor
    albedo: Tensor | None = None
    shading: Tensor | None = None
    specular: Tensor | None = None
    mask: Tensor | None = None
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def component(self, name: str) -> Tensor | None:
        return getattr(self, name)

    @classmethod
    def collate(cls, samples: list[Sample]) -> "Batch":
        def stack(name: str) -> Tensor | None:
            values = [getattr(s, name) for s in samples]
            if any(v is None for v in values):
                return None
            return torch.stack(values)

        masks = [s.mask for s in samples]
        if any(m is not None for m in masks):  # a sample without a mask is evaluated everywhere
            ref = next(m for m in masks if m is not None)
            masks = [torch.ones_like(ref) if m is None else m for m in masks]
            mask = torch.stack(masks)
        else:
            mask = None
        return cls(
            ids=[s.id for s in samples],
            image=torch.stack([s.image for s in samples]),
            albedo=stack("albedo"),
            shading=stack("shading"),
            specular=stack("specular"),
            mask=mask,
            meta=[s.meta for s in samples],
        )

    def samples(self) -> list[Sample]:
        out = []
        for i, sid in enumerate(self.ids):
            get = lambda name: None if getattr(self, name) is None else getattr(self, name)[i]
            out.append(Sample(sid, self.image[i], get("albedo"), get("shading"), get("specular"),
                              get("mask"), self.meta[i] if self.meta else {}))
        return out

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda t: None if t is None else t.to(device)
        return Batch(self.ids, move(self.image), move(self.albedo), move(self.shading),
                     move(self.specular), move(self.mask), self.meta)


@dataclass
class Decomposition:
    """What a method returns for a batch of images.

    albedo / shading / specular: (B, 3, H, W) *linear* components (specular may be None for
    two-component methods; it then counts as zero). ``encoded(c)`` gives the display-space
    version metrics use; ``rerender`` the image the forward model makes of them.
    timings: seconds per stage for the whole batch (e.g. {"encoder": .., "stage1": ..}).
    errors: per image, None or a one-line reason that image failed (NaN loss, ...).
    """

    albedo: Tensor
    shading: Tensor
    specular: Tensor | None
    forward_model: ForwardModel
    timings: dict[str, float] = field(default_factory=dict)
    errors: list[str | None] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    def component(self, name: str) -> Tensor:
        value = getattr(self, name)
        if value is None and name == "specular":
            return torch.zeros_like(self.albedo)
        return value

    def encoded(self, name: str) -> Tensor:
        return self.forward_model.encode(name, self.component(name))

    @property
    def rerender(self) -> Tensor:
        return self.forward_model.render(self.albedo, self.shading, self.specular)
