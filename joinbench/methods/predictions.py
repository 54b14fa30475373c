"""``predictions:DIR``: score another tool's saved outputs as if they were a method.

Per image id, the folder holds either ``<id>.npz`` with linear ``albedo`` / ``shading`` /
``specular`` arrays (what ``joinbench run --save-predictions`` and ``joinbench datasets
export`` write; a ``predictions/`` or ``linear/`` subfolder is looked into too), or PNGs in
encoded display space under ``albedo/<id>.png``, ``shading/<id>.png``,
``specular/<id>.png`` (8- or 16-bit). A component that is absent is reported as missing
for that image instead of being scored.

Size: a prediction has the run's size (``--resolution``), except on datasets whose images
are the whole photo resized to a square (``geometry = "stretch"``: ``iiw:``, ``maw:``, ``arap:``).
There an external method's output at the photo's own size (or its aspect ratio, or a square
of another size: joinbench's own stretched view at another ``--resolution``) covers the same
content, and the benchmark metrics read it as it is: WHDR at normalised point coordinates, MAW
and ARAP after their own resize to the protocol's grid. So it is scored at its own size there
(kept in ``Decomposition.extras["native"]``), and resized to the run's square (whole view,
linear) only for the re-render, the dense metrics and the figures. Any other size is a
one-line error naming the sizes that work.
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
        what ``joinbench datasets export`` wrote), unless ``forward_model`` was set; note
        whether the dataset's images are whole photos (predictions of any whole-view size fit)."""
        if dataset is not None and "forward_model" not in self.explicit:
            self._bound_fm = dataset.forward_model
        self._whole_view = getattr(dataset, "geometry", None) == "stretch"
        return super().prepare(dataset, device)

    @property
    def forward_model(self):
        return getattr(self, "_bound_fm", None) or super().forward_model

    def _load(self, sid: str) -> tuple[dict[str, torch.Tensor], list[str]]:
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
        missing = [c for c in COMPONENTS if c not in found]
        return found, missing

    def _fit(self, sid: str, c: str, t: torch.Tensor, shape: tuple[int, ...], meta: dict) -> torch.Tensor | None:
        """``t`` itself when it has the run's ``shape``; None when it is a whole-view prediction
        at another size (scored at its own size, see the module docstring); else a one-line error."""
        if tuple(t.shape) == shape:
            return t
        w0, h0 = (meta or {}).get("original_size") or (shape[2], shape[1])
        if getattr(self, "_whole_view", False) and t.dim() == 3 and t.shape[0] == shape[0]:
            h, w = t.shape[-2:]
            if h == w or abs(h * w0 - w * h0) <= max(w0, h0):  # the photo's aspect, up to rounding
                return None
        sizes = f" or, on this whole-photo benchmark, {w0}x{h0} px (the photo's size or aspect)" if getattr(
            self, "_whole_view", False) else ""
        raise JoinbenchError(f"Prediction {c} for {sid} ({self.root}) has shape {tuple(t.shape)}, but this run needs "
                             f"(3, {shape[1]}, {shape[2]}){sizes}; save predictions at --resolution {shape[1]} "
                             "or rerun with the --resolution they were saved at.")

    def decompose_batch(self, batch: Batch) -> Decomposition:
        from ..imageio import to_resolution

        shape = tuple(batch.image.shape[1:])
        comps = {c: [] for c in COMPONENTS}
        missing, native = {}, {}
        for i, sid in enumerate(batch.ids):
            found, miss = self._load(sid)
            if miss:
                missing[sid] = miss
            for c in COMPONENTS:
                default = torch.ones(shape) if c == "shading" else torch.zeros(shape)
                t = found.get(c, default)
                fitted = self._fit(sid, c, t, shape, batch.meta[i] if batch.meta else {})
                if fitted is None:  # whole view at its own size: benchmark metrics read it as it is
                    native.setdefault(sid, {})[c] = t
                    fitted = to_resolution(t, shape[1], "stretch")
                    self._note_native(sid, c, t, shape[1])
                comps[c].append(fitted)
        stack = {c: torch.stack(v).to(batch.image.device) for c, v in comps.items()}
        report(self.progress, "batch", 1, 1, images=len(batch))
        return Decomposition(stack["albedo"], stack["shading"], stack["specular"], self.forward_model,
                             errors=[None] * len(batch), extras={"missing": missing, "native": native})

    def _note_native(self, sid: str, c: str, t: torch.Tensor, resolution: int) -> None:
        """Say once per run that predictions are scored at their own size (stderr, above the bars)."""
        if getattr(self, "_noted", False):
            return
        self._noted = True
        from tqdm import tqdm

        tqdm.write(f"note: predictions in {self.root} are not at the run's {resolution} px (e.g. {sid}'s {c}: "
                   f"{t.shape[-1]}x{t.shape[-2]} px): benchmark metrics (whdr*, maw-*, arap-*) score them at their own "
                   f"size; the re-render, dense metrics and figures use them resized to {resolution}x{resolution} "
                   "(whole view).")

    def decompose(self, images):
        raise JoinbenchError("predictions:DIR needs image ids; it is used through `joinbench run`.")


register_method("predictions", PredictionsMethod, prefix=True,
                description="score saved predictions: DIR of <id>.npz (linear) or albedo|shading|specular/<id>.png (encoded)")
