"""Datasets from files on disk: ``folder:PATH`` (your images) and ``mit:PATH`` (MIT Intrinsic Images).

``folder:PATH``
    Every image directly in PATH (``.png .jpg .jpeg .tif .tiff .bmp .webp``, any case; not
    recursive; hidden files skipped), sorted by file name; the sample id is the file stem.
    Optional ground truth lives in subfolders ``albedo/``, ``shading/``, ``specular/`` and
    ``mask/``, matched **by file stem** (``photo.jpg`` <- ``albedo/photo.png`` or
    ``albedo/photo.npz``), so JPEG photos can have lossless PNG ground truth. Ground-truth
    PNGs (any image format) hold the *encoded* display values the forward model's
    ``encode`` gives (albedo sRGB, shading / specular Reinhard), and are decoded to linear
    with its ``decode``; ``.npz`` files hold *linear* arrays under the component's name
    (``albedo``), ``arr_0``, or as their only array, shaped (3, H, W), (H, W, 3), (1, H, W)
    or (H, W) (what ``joinbench datasets export`` and the runner's predictions write).
    Masks: 1 = evaluate, thresholded at 0.5. Without a ``mask/`` folder, an image's own
    alpha channel (if not fully opaque) is its mask.

``mit:PATH``
    The MIT Intrinsic Images layout (Grosse et al., ICCV 2009): ``PATH/<object>/`` with
    ``original.png``, ``reflectance.png``, ``shading.png`` and optionally ``specular.png``
    and ``mask.png`` (PATH may also be one object folder). **Assumption:** every MIT PNG is
    linear-valued (16-bit in the release), so reflectance -> linear albedo, shading ->
    linear shading (gray, replicated to 3 channels), specular -> linear specular, and the
    dataset's display ``image`` is ``forward_model.display(original)``. The release
    normalises each file separately, so the components carry arbitrary per-object scales
    relative to the original: prefer scale-invariant metrics; nothing is rescaled here.

Policies, both loaders:
    * a ground-truth folder / file kind that exists for any image must exist for every
      image, otherwise a one-line DatasetError names the first missing file (remove the
      folder to run without that layer): no silently partial ground truth;
    * ground truth must have exactly the image's size (after EXIF orientation), otherwise
      a DatasetError names both files and sizes;
    * every file's header is checked when the dataset is created (unreadable, empty, too
      small or too large files raise an ImageError then); pixels are read per sample;
    * image and ground truth get the same geometry: centre square crop, then area
      resize to ``resolution`` (components resized in linear space, masks re-thresholded).
    * specular ground truth is ignored when the forward model has no specular layer.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from joinbench.errors import DatasetError
from joinbench.forward import COMPONENTS, ForwardModel
from joinbench.imageio import IMAGE_SUFFIXES, centre_square, image_info, npz_shapes, read_image, read_npz, to_resolution
from joinbench.registry import register_dataset
from joinbench.types import Sample

from .base import Dataset

LAYERS = (*COMPONENTS, "mask")
GT_SUFFIXES = (*IMAGE_SUFFIXES, ".npz")
MIT_FILES = {"albedo": "reflectance.png", "shading": "shading.png", "specular": "specular.png", "mask": "mask.png"}


@dataclass
class _Item:
    id: str
    image: Path
    size: tuple[int, int]                       # (W, H), after EXIF orientation
    layers: dict[str, Path] = field(default_factory=dict)


def _resolve_root(path: str | os.PathLike | None, prefix: str, example: str) -> Path:
    if path is None or str(path).strip() == "":
        raise DatasetError(f"{prefix}: needs a path after the colon, e.g. {prefix}:{example}.")
    root = Path(os.path.expanduser(str(path).strip()))
    if not root.exists():
        raise DatasetError(f"{prefix}:{path}: folder {root} does not exist; check the path (e.g. {prefix}:{example}).")
    if not root.is_dir():
        raise DatasetError(f"{prefix}:{path}: {root} is a file, not a folder; pass the folder that holds the images (e.g. {prefix}:{root.parent}).")
    return root


def _npz_key(keys: list[str], layer: str, path: Path) -> str:
    if layer in keys:
        return layer
    if "arr_0" in keys:
        return "arr_0"
    if len(keys) == 1:
        return keys[0]
    raise DatasetError(
        f"{path}: holds arrays {', '.join(keys) or '(none)'} but none named {layer!r} or 'arr_0'; "
        f"save the layer as numpy.savez(path, {layer}=array)."
    )


def _npz_hw(shape: tuple[int, ...], path: Path) -> tuple[int, int]:
    """(H, W) of an array stored as (H, W), (C, H, W) or (H, W, C) with C in (1, 3)."""
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 3 and shape[0] in (1, 3):
        return shape[1], shape[2]
    if len(shape) == 3 and shape[2] in (1, 3):
        return shape[0], shape[1]
    raise DatasetError(f"{path}: array of shape {shape} is not an image layer; store (3, H, W), (H, W, 3) or (H, W).")


def _to_chw(arr: Tensor, path: Path) -> Tensor:
    shape = tuple(arr.shape)
    _npz_hw(shape, path)
    if arr.dim() == 2:
        return arr[None]
    if shape[0] in (1, 3):
        return arr
    return arr.permute(2, 0, 1)


class FileDataset(Dataset):
    """Shared machinery of ``folder:`` and ``mit:``: items with an image and layer files."""

    prefix = ""
    image_is_linear = False     # MIT: the image file is linear; display it through the forward model
    layers_are_linear = False   # MIT: layer PNGs are linear; folder: encoded
    geometry = "crop"           # to_resolution mode; "stretch" keeps the whole view (iiw:, maw:, arap: annotations)
    licence = "unknown (user-supplied files: check their own terms)"

    def __init__(self, path: str | os.PathLike | None, resolution: int = 64,
                 forward_model: ForwardModel | str | None = None, seed: int = 0):
        super().__init__(resolution, forward_model)  # seed: the files are the split, any seed gives them
        self.root = _resolve_root(path, self.prefix, self.example)
        self.name = f"{self.prefix}:{path}"
        self.source = str(self.root.resolve())
        self.items: list[_Item] = self._scan()
        layers = self.items[0].layers if self.items else {}
        self._gt = tuple(c for c in self.forward_model.components if c in layers)
        self.has_ground_truth = bool(self._gt)
        self.has_mask_files = "mask" in layers

    # -- to implement ----------------------------------------------------------------------
    example = "PATH"

    def _scan(self) -> list[_Item]:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    @property
    def components(self) -> tuple[str, ...]:
        return self._gt

    def __len__(self) -> int:
        return len(self.items)

    def sample_id(self, index: int) -> str:
        return self.items[self._position(index)].id

    def _require_all(self, items: list[_Item], found: dict[str, dict[str, Path]], where: dict[str, str],
                     fix: str) -> None:
        """Layers found for any item must be found for every item: fill ``items``' layers or raise."""
        for layer in LAYERS:
            if layer == "specular" and not self.forward_model.use_specular:
                continue
            have = found.get(layer, {})
            if not have:
                continue
            missing = [it for it in items if it.id not in have]
            if missing:
                first = missing[0]
                raise DatasetError(
                    f"{self.prefix}:{self.root}: {layer} ground truth is missing for {len(missing)} of {len(items)} "
                    f"images, first {where[layer].format(id=first.id)} (for {first.image.name}); add it, or {fix.format(layer=layer)}."
                )
            for it in items:
                it.layers[layer] = have[it.id]

    def _check_layer_sizes(self, items: list[_Item]) -> None:
        for it in items:
            w, h = it.size
            for layer, path in it.layers.items():
                if path.suffix.lower() == ".npz":
                    shapes = npz_shapes(path)
                    gh, gw = _npz_hw(shapes[_npz_key(list(shapes), layer, path)], path)
                else:
                    gw, gh = image_info(path)["size"]
                if (gw, gh) != (w, h):
                    raise DatasetError(
                        f"{layer} {path} is {gw}x{gh} px but its image {it.image} is {w}x{h} px; "
                        f"ground truth must have the image's exact size: re-export it at {w}x{h}."
                    )

    def _read_layer(self, layer: str, path: Path) -> Tensor:
        if path.suffix.lower() == ".npz":
            arrays = read_npz(path)
            t = _to_chw(arrays[_npz_key(list(arrays), layer, path)], path)
            if not torch.isfinite(t).all():
                raise DatasetError(f"{path}: {layer} holds NaN or infinite values; re-export it.")
            if layer == "mask":
                return t.amax(0, keepdim=True)
            if t.min() < -1e-3:
                raise DatasetError(f"{path}: linear {layer} has negative values (min {t.min():.4g}); linear layers must be >= 0.")
            return t.clamp_min(0.0)
        if layer == "mask":
            return read_image(path, kind="mask")[0]
        t, _ = read_image(path)
        return t if self.layers_are_linear else self.forward_model.decode_stored(layer, t)

    def __getitem__(self, index: int) -> Sample:
        index = self._position(index)
        item = self.items[index]
        image, info = read_image(item.image)
        if self.image_is_linear:
            image = self.forward_model.display(image)
        h, w = image.shape[-2:]
        layers: dict[str, Tensor] = {}
        for layer, path in item.layers.items():
            if layer != "mask" and layer not in self._gt:
                continue
            t = self._read_layer(layer, path)
            if tuple(t.shape[-2:]) != (h, w):
                raise DatasetError(
                    f"{layer} {path} is {t.shape[-1]}x{t.shape[-2]} px but its image {item.image} is {w}x{h} px; "
                    f"ground truth must have the image's exact size: re-export it at {w}x{h}."
                )
            if layer != "mask" and t.shape[0] == 1:
                t = t.expand(3, -1, -1)
            layers[layer] = t
        mask_from = "mask file" if "mask" in layers else None
        if "mask" not in layers and info["alpha"] is not None and bool((info["alpha"] < 1).any()):
            layers["mask"] = info["alpha"]
            mask_from = "image alpha"
        r = self.resolution
        out = {k: to_resolution(v, r, self.geometry, kind="mask" if k == "mask" else "image") for k, v in layers.items()}
        top, left, size = centre_square(h, w) if self.geometry == "crop" else (0, 0, None)
        meta = {
            "dataset": self.name, "index": index, "resolution": r, "colour_space": self.colour_space,
            "forward_model": self.forward_model.name, "source": str(item.image), "licence": self.licence,
            "file": str(item.image), "original_size": [w, h], "mode": info["mode"], "bit_depth": info["bit_depth"],
            "crop_box": {"top": top, "left": left, "height": size or h, "width": size or w},
            "ground_truth_files": {k: str(p) for k, p in item.layers.items() if k in out},
            "mask_from": mask_from,
        }
        return Sample(
            id=item.id,
            image=to_resolution(image, r, self.geometry).clamp(0.0, 1.0),
            albedo=out.get("albedo"), shading=out.get("shading"), specular=out.get("specular"),
            mask=out.get("mask"), meta=meta,
        )

    def fingerprint(self) -> str:
        """sha256 over every file this dataset reads (path, size, modification time), so that
        ``ablate`` / ``compare`` key their runs on the files, not only on the folder's name:
        replacing or editing an image makes the next run recompute instead of reusing."""
        h = hashlib.sha256()
        for it in self.items:
            for path in (it.image, *(it.layers[k] for k in sorted(it.layers))):
                st = path.stat()
                h.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["components"] = list(self.components)
        out["masks"] = self.has_mask_files
        out["content_sha256"] = self.fingerprint()
        return out


class FolderDataset(FileDataset):
    """Images in a folder, with optional albedo/ shading/ specular/ mask/ ground-truth subfolders."""

    prefix = "folder"
    example = "/path/to/photos"
    description = ("your images in PATH (png/jpg/tif/bmp/webp, not recursive); optional ground truth in albedo/ "
                   "shading/ specular/ mask/ subfolders matched by file stem (PNG: encoded as the forward model "
                   "encodes; .npz: linear)")
    colour_space = ("image: display space as stored; ground truth: PNG encoded (albedo sRGB, shading/specular "
                    "Reinhard) decoded to linear, .npz linear")

    def _scan(self) -> list[_Item]:
        root = self.root
        files = sorted(
            (p for p in root.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: p.name,
        )
        if not files:
            subs = [d for d in LAYERS if (root / d).is_dir()]
            hint = f" (it has {', '.join(s + '/' for s in subs)}: the images themselves go directly in {root})" if subs else ""
            raise DatasetError(
                f"folder:{root}: no images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)}) in this folder{hint}; "
                f"put images there or point folder: at the folder that holds them."
            )
        seen: dict[str, Path] = {}
        items = []
        for p in files:
            if p.stem in seen:
                raise DatasetError(
                    f"folder:{root}: {seen[p.stem].name} and {p.name} share the id {p.stem!r}; rename one of them "
                    f"(ids and ground truth are matched by file stem)."
                )
            seen[p.stem] = p
            items.append(_Item(p.stem, p, tuple(image_info(p)["size"])))

        found: dict[str, dict[str, Path]] = {}
        where: dict[str, str] = {}
        for layer in LAYERS:
            d = root / layer
            if not d.is_dir():
                continue
            by_stem: dict[str, list[Path]] = {}
            for p in sorted(d.iterdir(), key=lambda q: q.name):
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in GT_SUFFIXES:
                    by_stem.setdefault(p.stem, []).append(p)
            for it in items:
                cands = by_stem.get(it.id, [])
                if len(cands) > 1:
                    raise DatasetError(
                        f"folder:{root}: {layer}/ holds {' and '.join(c.name for c in cands)} for {it.image.name}; "
                        f"keep exactly one {layer} file per image."
                    )
            # An existing subfolder counts even when it matches nothing, so a folder of
            # misnamed files is reported instead of silently ignored.
            found[layer] = {stem: c[0] for stem, c in by_stem.items() if len(c) == 1}
            if not any(it.id in found[layer] for it in items):
                first = items[0]
                raise DatasetError(
                    f"folder:{root}: {layer}/ has no file matching any image (e.g. {layer}/{first.id}.png for "
                    f"{first.image.name}); name ground-truth files like their images, or remove {layer}/."
                )
            where[layer] = f"{d}/{{id}}.*"
        self._require_all(items, found, where, fix="remove the {layer}/ folder")
        self._check_layer_sizes(items)
        return items


class MITDataset(FileDataset):
    """MIT Intrinsic Images layout: <object>/original.png, reflectance.png, shading.png[, specular.png, mask.png]."""

    prefix = "mit"
    example = "/path/to/MIT-intrinsic/data"
    image_is_linear = True
    layers_are_linear = True
    benchmark_metrics = ("lmse-mit",)  # the field's MIT LMSE, beside the harness's dense metrics
    keeps_harness_metrics = True
    licence = "MIT Intrinsic Images (Grosse et al., ICCV 2009): see the dataset's own terms"
    description = ("MIT Intrinsic Images in PATH/<object>/original.png, reflectance.png, shading.png[, specular.png, "
                   "mask.png]; files assumed linear, image = forward model display(original)")
    colour_space = ("MIT files assumed linear: image = forward model display(original.png); albedo = reflectance, "
                    "shading (gray, replicated), specular: linear as stored")

    def _scan(self) -> list[_Item]:
        root = self.root
        if (root / "original.png").is_file():
            objects = [root]
        else:
            objects = sorted((d for d in root.iterdir() if d.is_dir() and (d / "original.png").is_file()),
                             key=lambda d: d.name)
        if not objects:
            raise DatasetError(
                f"mit:{root}: no MIT objects here; expected {root}/<object>/original.png, optionally with "
                f"reflectance.png, shading.png, specular.png and mask.png beside it (point mit: at the folder that holds the object folders)."
            )
        items = [_Item(d.name, d / "original.png", tuple(image_info(d / "original.png")["size"])) for d in objects]
        found = {layer: {it.id: it.image.parent / fname for it in items if (it.image.parent / fname).is_file()}
                 for layer, fname in MIT_FILES.items()}
        where = {layer: f"{root if len(objects) > 1 else root.parent}/{{id}}/{fname}" for layer, fname in MIT_FILES.items()}
        self._require_all(items, found, where, fix="remove every {layer} file to run without it")
        self._check_layer_sizes(items)
        return items


register_dataset("folder", FolderDataset, prefix=True, description=FolderDataset.description)
register_dataset("mit", MITDataset, prefix=True, description=MITDataset.description)
