"""``predictions:DIR``: score another tool's saved outputs as if they were a method.

Per image id, the folder holds either ``<id>.npz`` with linear ``albedo`` / ``shading`` /
``specular`` arrays (what ``joinbench run --save-predictions`` and ``joinbench datasets
export`` write; a ``predictions/`` or ``linear/`` subfolder is looked into too), or PNGs in
encoded display space under ``albedo/<id>.png``, ``shading/<id>.png``,
``specular/<id>.png`` (8- or 16-bit). A component that is absent is reported as missing
for that image instead of being scored.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import JoinbenchError
from ..forward import COMPONENTS
from ..method import Method, MethodConfig
from ..progress import report
from ..registry import register_method
from ..types import Batch, Decomposition

PNG_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass
class PredictionsConfig(MethodConfig):
    path: str = ""


class PredictionsMethod(Method):
    """Score saved predictions (npz linear or encoded PNGs) found by image id."""

    Config = PredictionsConfig
    kind = "adapter"

    def __init__(self, path: str | None = None, **overrides):
        super().__init__(**({"path": path} if path else {}), **overrides)
        root = Path(self.config.path).expanduser()
        if not root.is_dir():
            raise JoinbenchError(f"Predictions folder {root} does not exist; pass --method predictions:DIR with a folder of <id>.npz or albedo/<id>.png files.")
        has_own = any(root.glob("*.npz")) or any((root / c).is_dir() for c in COMPONENTS)
        for sub in ("predictions", "linear"):  # a run folder, or an export's lossless copies
            if not has_own and (root / sub).is_dir():
                root = root / sub
                break
        self.root = root
        if not any(root.glob("*.npz")) and not any((root / c).is_dir() for c in COMPONENTS):
            raise JoinbenchError(f"{root} holds no predictions: expected <id>.npz files or albedo/, shading/, specular/ subfolders of PNGs.")

    def prepare(self, dataset, device) -> dict:
        """Decode PNGs and re-render with the dataset's own forward model (its encodings are
        what ``joinbench datasets export`` wrote), unless ``forward_model`` was set."""
        if dataset is not None and "forward_model" not in self.explicit:
            self._bound_fm = dataset.forward_model
        return super().prepare(dataset, device)

    @property
    def forward_model(self):
        return getattr(self, "_bound_fm", None) or super().forward_model

    def _load(self, sid: str, shape) -> tuple[dict[str, torch.Tensor], list[str]]:
        from ..imageio import read_image, read_npz

        fm = self.forward_model
        npz = self.root / f"{sid}.npz"
        found: dict[str, torch.Tensor] = {}
        if npz.is_file():
            found = {c: t for c, t in read_npz(npz).items() if c in COMPONENTS}
        for c in COMPONENTS:
            if c in found:
                continue
            for suffix in PNG_SUFFIXES:
                png = self.root / c / f"{sid}{suffix}"
                if png.is_file():
                    enc, _ = read_image(png)
                    found[c] = fm.decode_stored(c, enc)
                    break
        for c, t in found.items():
            if tuple(t.shape) != tuple(shape):
                raise JoinbenchError(
                    f"Prediction {c} for {sid} has shape {tuple(t.shape)} but the image is {tuple(shape)}; "
                    f"save predictions at the dataset's --resolution."
                )
        missing = [c for c in COMPONENTS if c not in found]
        return found, missing

    def decompose_batch(self, batch: Batch) -> Decomposition:
        shape = tuple(batch.image.shape[1:])
        comps = {c: [] for c in COMPONENTS}
        missing = {}
        for sid in batch.ids:
            found, miss = self._load(sid, shape)
            if miss:
                missing[sid] = miss
            for c in COMPONENTS:
                default = torch.ones(shape) if c == "shading" else torch.zeros(shape)
                comps[c].append(found.get(c, default))
        stack = {c: torch.stack(v).to(batch.image.device) for c, v in comps.items()}
        report(self.progress, "batch", 1, 1, images=len(batch))
        return Decomposition(stack["albedo"], stack["shading"], stack["specular"], self.forward_model,
                             errors=[None] * len(batch), extras={"missing": missing})

    def decompose(self, images):
        raise JoinbenchError("predictions:DIR needs image ids; it is used through `joinbench run`.")


register_method("predictions", PredictionsMethod, prefix=True,
                description="score saved predictions: DIR of <id>.npz (linear) or albedo|shading|specular/<id>.png (encoded)")
