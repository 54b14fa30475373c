"""The exported prior's file format, shared by the writer (training) and the readers (``gan.bank``, the CLI).

Kept apart from the trainer so that loading a prior never imports training code.
"""
from __future__ import annotations

from torch import Tensor

FORMAT = "joinbench-gan-prior"
FD_METHOD = ("FD-VGG16: Frechet distance of VGG16 conv5_3 (after ReLU) features, global-average-pooled "
             "(512-d), images at native resolution in [0, 1] display encoding, ImageNet-normalised")


def export_stem(dataset: str, component: str) -> str:
    """``<dataset>-<component>``: the prefix of a prior's files (``-G``/``-D.safetensors``, ``.json``)."""
    return f"{dataset}-{component}"


def to_display(img: Tensor) -> Tensor:
    """Generator output (about [-1, 1]) -> encoded display space [0, 1]."""
    return img.float().add(1.0).mul(0.5).clamp(0.0, 1.0)


def grid_rows(images: Tensor, name: str, per_row: int = 8) -> list[list[Tensor]]:
    """(N, C, H, W) in [0, 1] -> rows of cells; a joint sample occupies 3 cells (al | sh | sp)."""
    cells = [s for img in images for s in (img.split(3, dim=0) if name == "joint" else (img,))]
    per_row = 9 if name == "joint" else per_row
    return [cells[i:i + per_row] for i in range(0, len(cells), per_row)]


__all__ = ["FD_METHOD", "FORMAT", "export_stem", "grid_rows", "to_display"]
