"""``maw:PATH``: Measured Albedo in the Wild (Wu, Chowdhury, Shanmugaraja, Jacobs, Sengupta,
2023), scored by the release's intensity and chromaticity errors against measured albedo.

Layout: the release's ``labels.zip`` and ``images_png.zip`` unpacked side by side::

    PATH/labels/meta.csv                       tab-separated, one row per image:
                                               colours.npy  mask.png  category  name  gt_albedo  whdr
    PATH/labels/<colours>.npy                  (N, 3) measured albedo of N regions, linear Adobe RGB (1998)
    PATH/labels/<name>_mask.png                region labels (0 = unlabelled, one value per region)
    PATH/images_png/<category>/<name>.png      the photo (``PATH/images/...`` is accepted too)

The paths in ``meta.csv`` are relative to ``labels/``, as the release's ``utils.PathFinder``
reads them; ``gt_albedo`` and ``whdr`` are not used. The sample id is
``<category>_<name>``. As in the release's ``numerical_albedo.py``, the k-th smallest non-zero
label is region k and gets the k-th colour. The colours are converted to linear sRGB as the
release does (Adobe RGB -> sRGB primaries, same D65 white, clipped to [0, 1]). A label file
whose region count differs from its colour count is an error, as is a label image whose shape
(aspect ratio) differs from its photo's. Both are one line naming the files.

Geometry: the whole photo is resized to ``resolution`` x ``resolution`` (aspect not kept). The
``maw-*`` metrics resize the prediction and the labels to the protocol's 320 x 240 themselves
(:mod:`joinbench.benchmark_metrics`). The regions travel in
``sample.meta["references"]["maw"]`` as :class:`Regions`.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from joinbench.errors import DatasetError
from joinbench.imageio import image_info
from joinbench.registry import register_dataset
from joinbench.types import Sample

from .folder import FileDataset, _Item

D65 = (0.3127, 0.3290)
ADOBE_RGB_PRIMARIES = ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06))
SRGB_PRIMARIES = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
IMAGE_FOLDERS = ("images_png", "images")


def rgb_to_xyz_matrix(primaries, white=D65) -> np.ndarray:
    """The normalised primary matrix (linear RGB -> XYZ, Y of white = 1) of an RGB space."""
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T  # columns: the primaries
    wx, wy = white
    scale = np.linalg.solve(xyz, np.array([wx / wy, 1.0, (1 - wx - wy) / wy]))
    return xyz * scale


ADOBE_TO_SRGB = np.linalg.inv(rgb_to_xyz_matrix(SRGB_PRIMARIES)) @ rgb_to_xyz_matrix(ADOBE_RGB_PRIMARIES)


def adobe_to_linear_srgb(colours: np.ndarray) -> np.ndarray:
    """(N, 3) linear Adobe RGB -> linear sRGB clipped to [0, 1]: the release's
    ``srgb_to_linsrgb(adobelin2srgb(c))`` (its sRGB encode / clip / decode is a clip in linear)."""
    return np.clip(np.asarray(colours, dtype=np.float64) @ ADOBE_TO_SRGB.T, 0.0, 1.0)


@dataclass(frozen=True)
class Regions:
    """One MAW image's labelled regions: the label image at its own size, the region label
    values (sorted), and each region's measured albedo in linear sRGB."""

    file: str
    labels: np.ndarray
    values: tuple[int, ...]
    albedo: np.ndarray


def load_regions(mask: Path, colours: Path) -> Regions:
    from PIL import Image

    image_info(mask)  # size limits and readability, one line on failure
    with Image.open(mask) as im:
        labels = np.asarray(im)
    if labels.ndim != 2:
        raise DatasetError(f"{mask}: a {labels.shape[-1]}-channel image; MAW region masks are single-channel label images "
                           "(0 = unlabelled, one value per region).")
    try:
        albedo = np.load(colours, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{colours}: not a readable .npy of region colours ({' '.join(str(exc).split())[:80]}).") from None
    albedo = np.asarray(albedo, dtype=np.float64)
    if albedo.ndim != 2 or albedo.shape[1] != 3 or not np.isfinite(albedo).all():
        raise DatasetError(f"{colours}: holds an array of shape {albedo.shape}; expected finite (N, 3) region colours.")
    values = tuple(int(v) for v in np.unique(labels) if v != 0)
    if len(values) != len(albedo):
        raise DatasetError(f"{mask} labels {len(values)} regions but {colours} holds {len(albedo)} colours; "
                           "they must match one to one (k-th smallest label = k-th colour).")
    return Regions(str(mask), labels.astype(np.int32), values, adobe_to_linear_srgb(albedo))


class MAWDataset(FileDataset):
    """Measured Albedo in the Wild: photos with labelled regions of measured albedo (intensity, chromaticity)."""

    prefix = "maw"
    example = "/path/to/MAW"
    geometry = "stretch"
    references = ("maw",)
    benchmark_metrics = ("maw-intensity", "maw-chromaticity")
    licence = "MAW (Wu et al. 2023): see the dataset's own terms"
    description = ("Measured Albedo in the Wild: PATH/labels/meta.csv, region masks + measured colours, photos in "
                   "PATH/images_png/<category>/<name>.png; scored by maw-intensity / maw-chromaticity")
    colour_space = "image: sRGB photo as published; region albedo: measured, linear sRGB"

    def _scan(self) -> list[_Item]:
        labels = self.root / "labels"
        meta = labels / "meta.csv"
        if not meta.is_file():
            raise DatasetError(f"maw:{self.root}: no labels/meta.csv; unpack the MAW release's labels.zip into {self.root} "
                               "(PATH/labels/meta.csv) and its images_png.zip beside it.")
        photos = next((self.root / d for d in IMAGE_FOLDERS if (self.root / d).is_dir()), None)
        if photos is None:
            raise DatasetError(f"maw:{self.root}: no images_png/ (or images/) folder with <category>/<name>.png photos; "
                               "unpack the MAW release's images_png.zip there.")
        with open(meta, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f, delimiter="\t") if r and any(c.strip() for c in r)]
        items = []
        for n, row in enumerate(rows, 1):
            if len(row) < 4:
                raise DatasetError(f"{meta}: line {n} has {len(row)} fields; expected tab-separated colours, mask, "
                                   "category, name, gt_albedo, whdr.")
            colours, mask, category, name = (row[0].strip(), row[1].strip(), row[2].strip(), row[3].strip())
            files = {"photo": photos / category / f"{name}.png", "labels": labels / mask, "colours": labels / colours}
            for what, p in files.items():
                if not p.is_file():
                    raise DatasetError(f"{meta}: line {n} ({category}/{name}) needs the {what} file {p}, which does not exist.")
            size, mask_size = tuple(image_info(files["photo"])["size"]), tuple(image_info(files["labels"])["size"])
            if abs(size[0] * mask_size[1] - size[1] * mask_size[0]) > 0.01 * size[0] * mask_size[1]:
                raise DatasetError(f"{files['labels']} is {mask_size[0]}x{mask_size[1]} px but its photo {files['photo']} is "
                                   f"{size[0]}x{size[1]} px: a differently shaped label image cannot be aligned with the photo.")
            items.append(_Item(f"{category}_{name}", files["photo"], size,
                               {"labels": files["labels"], "colours": files["colours"]}))
        if not items:
            raise DatasetError(f"{meta}: lists no images.")
        return items

    def __getitem__(self, index: int) -> Sample:
        sample = super().__getitem__(index)
        layers = self.items[self._position(index)].layers
        sample.meta["references"] = {"maw": load_regions(layers["labels"], layers["colours"])}
        sample.meta["ground_truth_files"] = {k: str(v) for k, v in layers.items()}
        return sample


register_dataset("maw", MAWDataset, prefix=True, description=MAWDataset.description)
