"""Image grids with column labels (previews, run grids, report figures)."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
import torch
from torch import Tensor

from .env import write_atomic


def to_uint8(img: Tensor) -> np.ndarray:
    """(3, H, W) or (1, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    img = img.detach().float().cpu().clamp(0, 1)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return (img.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def grid_image(rows: list[list[Tensor | None]], labels: list[str] | None = None,
               cell: int | None = None, pad: int = 2) -> Image.Image:
    """A grid of images: ``rows[i][j]`` is a (C, H, W) tensor in [0, 1] or None (left grey).

    Cells are resized (nearest) to ``cell`` px so small test images stay visible; the
    optional header row holds ``labels``.
    """
    first = next(t for r in rows for t in r if t is not None)
    size = cell or max(64, first.shape[-1])
    ncol = max(len(r) for r in rows)
    font = ImageFont.load_default()
    wrapped = [wrap_label(label, font, size - 4) for label in labels or []]
    header = 12 * max(len(w) for w in wrapped) + 2 if wrapped else 0
    width = ncol * (size + pad) + pad
    height = header + len(rows) * (size + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, lines in enumerate(wrapped):
        x = pad + j * (size + pad)
        for k, line in enumerate(lines):
            draw.text((x + 2, 1 + 12 * k), line, fill=(0, 0, 0), font=font)
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            x, y = pad + j * (size + pad), header + pad + i * (size + pad)
            if t is None:
                draw.rectangle([x, y, x + size - 1, y + size - 1], fill=(200, 200, 200))
                continue
            tile = Image.fromarray(to_uint8(t))
            if tile.size != (size, size):
                tile = tile.resize((size, size), Image.NEAREST)
            canvas.paste(tile, (x, y))
    return canvas


def wrap_label(text: str, font, width: int) -> list[str]:
    """``text`` broken into lines at most ``width`` px wide in ``font``, at spaces and after
    hyphens ("join-meaninit" -> "join-" / "meaninit"); a piece longer than a line is cut.
    Every figure label goes through here, so labels are never silently truncated."""
    lines: list[str] = []
    for word in text.split():
        for k, piece in enumerate(re.findall(r"[^-]+-*|-+", word)):
            while font.getlength(piece) > width and len(piece) > 1:
                piece = piece[:-1]
            glue = "" if k > 0 else " "  # continuing a hyphenated word: no space
            if lines and font.getlength(lines[-1] + glue + piece) <= width:
                lines[-1] += glue + piece
            else:
                lines.append(piece)
    return lines or [""]


def label_tile(text: str, size: int) -> Tensor:
    """A (3, size, size) white tile showing ``text`` wrapped to its width (a row label inside
    an image grid); lines that do not fit the tile's height are dropped."""
    font = ImageFont.load_default()
    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for k, line in enumerate(wrap_label(text, font, size - 4)[: max(1, (size - 4) // 12)]):
        draw.text((2, 2 + 12 * k), line, fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0


def save_image_atomic(image: Image.Image, path: str | Path) -> Path:
    """Save a PIL image (format from the suffix, PNG without one) so readers never see a
    half-written file (:func:`joinbench.env.write_atomic`)."""
    path = Path(path)
    buf = io.BytesIO()
    image.save(buf, format=(path.suffix.lstrip(".") or "png").upper().replace("JPG", "JPEG"))
    return write_atomic(path, buf.getvalue())


def dataset_rows(dataset, n: int) -> tuple[list[list[Tensor | None]], list[str]]:
    """Rows image | albedo | shading | specular (encoded display space) for a preview; for
    datasets without ground truth, rows of eight images."""
    fm = dataset.forward_model
    if not dataset.has_ground_truth:  # real photos: the images alone, several per row
        images = [dataset[i].image for i in range(min(n, len(dataset)))]
        return [images[k:k + 8] for k in range(0, len(images), 8)], []
    rows = []
    for i in range(min(n, len(dataset))):
        s = dataset[i]
        row: list[Tensor | None] = [s.image]
        for c in ("albedo", "shading", "specular"):
            gt = s.component(c)
            row.append(None if gt is None else fm.encode(c, gt))
        if s.mask is not None:
            row.append(s.mask.float())
        rows.append(row)
    labels = ["image", "albedo", "shading", "specular"]
    if any(len(r) > 4 for r in rows):
        labels.append("mask")
    return rows, labels


