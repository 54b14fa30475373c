"""``iiw:PATH`` and ``iiw-test:PATH``: Intrinsic Images in the Wild (Bell, Bala, Snavely,
SIGGRAPH 2014), scored by WHDR against its human reflectance judgements.

Layout: the release's ``data/`` folder (PATH may be the release root that holds it), with
``<id>.png`` (the sRGB photo) and ``<id>.json`` beside it. The JSON holds
``intrinsic_points`` (``id``, ``x``, ``y`` normalised to [0, 1], ``opaque``) and
``intrinsic_comparisons`` (``point1``, ``point2``, ``darker`` in "1" / "2" / "E",
``darker_score``: the weight). ``iiw:PATH`` takes every photo that has its JSON, sorted by
numeric id; ``iiw-test:PATH`` takes the standard 1,046-image test split shipped in
``joinbench/splits/iiw_test.txt`` (where it comes from is written at the top of that file), and
every one of those photos must be there.

Geometry: the whole photo is resized to ``resolution`` x ``resolution`` (aspect ratio not kept,
nothing cropped), so that every judged point stays in view and its normalised coordinates
still address the same content. WHDR reads the prediction at those coordinates, whatever its
size. There is no dense ground truth. The judgements travel in
``sample.meta["references"]["iiw"]`` as :class:`Judgements`, which the ``whdr`` metrics read
(:mod:`joinbench.benchmark_metrics`). A malformed JSON is a one-line error naming the file.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from joinbench.errors import DatasetError
from joinbench.imageio import image_info
from joinbench.registry import register_dataset
from joinbench.types import Sample

from .folder import FileDataset, _Item

DARKER_CODES = {"E": 0, "1": 1, "2": 2}  # anything else: the comparison does not count


def split_path(name: str) -> Path:
    """The shipped id list ``joinbench/splits/<name>.txt``."""
    return Path(str(resources.files("joinbench") / "splits" / f"{name}.txt"))


def read_split(name: str) -> list[str]:
    """Ids of a shipped split (one per line; ``#`` lines are its provenance)."""
    path = split_path(name)
    if not path.is_file():
        raise DatasetError(f"The {name} split list {path} is missing from this joinbench install; reinstall joinbench "
                           f"(pip install -e <checkout>) so joinbench/splits/{name}.txt is packaged.")
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]


@dataclass(frozen=True)
class Judgements:
    """An IIW judgement file as arrays, one entry per comparison: both points' normalised
    coordinates, the human answer (0 'E', 1 '1', 2 '2'; -1 anything else), the weight (NaN when
    missing) and whether the comparison counts (valid answer, weight > 0, both points opaque)."""

    file: str
    x1: np.ndarray
    y1: np.ndarray
    x2: np.ndarray
    y2: np.ndarray
    darker: np.ndarray
    weight: np.ndarray
    counted: np.ndarray


def _number(value, what: str, path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DatasetError(f"{path}: {what} is {value!r}, not a finite number; is this an IIW judgement file?")
    return float(value)


def parse_judgements(data, path: str | os.PathLike) -> Judgements:
    """Check an IIW judgement JSON (already loaded) and turn it into :class:`Judgements`."""
    if not isinstance(data, dict) or not isinstance(data.get("intrinsic_comparisons"), list):
        raise DatasetError(f"{path}: no 'intrinsic_comparisons' list; an IIW judgement file (<id>.json of the IIW "
                           "release) holds 'intrinsic_points' and 'intrinsic_comparisons'.")
    if not isinstance(data.get("intrinsic_points"), list):
        raise DatasetError(f"{path}: no 'intrinsic_points' list; an IIW judgement file (<id>.json of the IIW "
                           "release) holds 'intrinsic_points' and 'intrinsic_comparisons'.")
    points = {}
    for p in data["intrinsic_points"]:
        if not isinstance(p, dict) or not {"id", "x", "y", "opaque"} <= set(p):
            raise DatasetError(f"{path}: a point lacks one of id, x, y, opaque ({str(p)[:60]}); re-download the IIW release.")
        points[p["id"]] = p
    rows = []
    for k, c in enumerate(data["intrinsic_comparisons"]):
        if not isinstance(c, dict) or "point1" not in c or "point2" not in c:
            raise DatasetError(f"{path}: comparison {k} lacks point1/point2; re-download the IIW release.")
        pair = []
        for key in ("point1", "point2"):
            if c[key] not in points:
                raise DatasetError(f"{path}: comparison {k} refers to point id {c[key]!r}, which is not among the "
                                   f"file's {len(points)} intrinsic_points; the file is damaged: re-download it.")
            pair.append(points[c[key]])
        code = DARKER_CODES.get(c.get("darker"), -1)
        weight = c.get("darker_score")
        weight = math.nan if weight is None else _number(weight, f"comparison {k}'s darker_score", path)
        counted = code >= 0 and weight > 0 and bool(pair[0]["opaque"]) and bool(pair[1]["opaque"])
        xy = []
        for p in pair:
            x, y = _number(p["x"], f"point {p['id']!r}'s x", path), _number(p["y"], f"point {p['id']!r}'s y", path)
            if counted and not (0 <= x <= 1 and 0 <= y <= 1):
                raise DatasetError(f"{path}: point {p['id']!r} lies at ({x}, {y}), outside the normalised [0, 1] range.")
            xy += [x, y]
        rows.append((*xy, code, weight, counted))
    cols = list(zip(*rows)) if rows else [()] * 7
    f = lambda i, dt: np.asarray(cols[i], dtype=dt)
    return Judgements(str(path), f(0, np.float64), f(1, np.float64), f(2, np.float64), f(3, np.float64),
                      f(4, np.int64), f(5, np.float64), f(6, bool))


def load_judgements(path: Path) -> Judgements:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not readable as JSON ({' '.join(str(exc).split())[:100]}); re-download it.") from None
    return parse_judgements(data, path)


class IIWDataset(FileDataset):
    """Intrinsic Images in the Wild: <id>.png photos with <id>.json human judgements (WHDR)."""

    prefix = "iiw"
    example = "/path/to/iiw-dataset"
    geometry = "stretch"
    split: str | None = None  # a shipped split name, or None for every photo
    references = ("iiw",)
    benchmark_metrics = ("whdr", "whdr-20", "whdr-eq", "whdr-ineq")
    forward_model_name = "reinhard"
    licence = "IIW photos: Flickr, Creative Commons licences per photo (see the release)"
    description = ("Intrinsic Images in the Wild: PATH/data/<id>.png + <id>.json judgements; no dense ground truth, "
                   "scored by WHDR (whdr, whdr-20, ...); whole photo resized to a square")
    colour_space = "image: sRGB photo as published, used as the display image; WHDR reads the predicted linear albedo"

    def _scan(self) -> list[_Item]:
        root = self.root / "data" if (self.root / "data").is_dir() else self.root
        photos = {p.stem: p for p in root.glob("*.png") if not p.name.startswith(".")}
        found = {stem: p for stem, p in photos.items() if (root / f"{stem}.json").is_file()}
        if self.split is None:
            if not found:
                raise DatasetError(f"{self.prefix}:{self.root}: no <id>.png with its <id>.json in {root}; point {self.prefix}: at "
                                   "the IIW release (iiw-dataset/ or its data/ folder).")
            ids = sorted(found, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
        else:
            ids = read_split(self.split)
            missing = [i for i in ids if i not in found]
            if missing:
                what = "photo" if missing[0] not in photos else "judgement file"
                raise DatasetError(f"{self.prefix}:{self.root}: {len(missing)} of the {len(ids)} {self.split} images are missing "
                                   f"from {root}, first {missing[0]} (no {what} {root / (missing[0] + ('.png' if what == 'photo' else '.json'))}); "
                                   f"use the complete IIW release, or iiw:PATH for the photos you have.")
        # The JSON is a layer that is never resampled: the fingerprint covers it, __getitem__ parses it.
        return [_Item(i, found[i], tuple(image_info(found[i])["size"]), {"judgements": root / f"{i}.json"}) for i in ids]

    def __getitem__(self, index: int) -> Sample:
        sample = super().__getitem__(index)
        path = self.items[self._position(index)].layers["judgements"]
        sample.meta["references"] = {"iiw": load_judgements(path)}
        sample.meta["ground_truth_files"] = {"judgements": str(path)}
        return sample


class IIWTestDataset(IIWDataset):
    """The standard 1,046-image IIW test split (joinbench/splits/iiw_test.txt)."""

    prefix = "iiw-test"
    split = "iiw_test"
    description = ("IIW test split: the 1,046 ids of joinbench/splits/iiw_test.txt (Narihira et al. 2015 / CGIntrinsics "
                   "split) from PATH/data/<id>.png + <id>.json; scored by WHDR")


register_dataset("iiw", IIWDataset, prefix=True, description=IIWDataset.description)
register_dataset("iiw-test", IIWTestDataset, prefix=True, description=IIWTestDataset.description)
