"""``arap:PATH``: the ARAP synthetic scenes ("As Realistic As Possible", Bonneel, Kovacs,
Paris, Bala, Eurographics STAR 2017) with ground-truth albedo and shading, scored by the
harness's dense metrics and by the two named ARAP protocols (``arap-careaga-*``,
``arap-luo-*``: :class:`joinbench.benchmark_metrics.ARAPMetric`).

Layout, as ``intrinsic-image-eval`` expects it (``data/ARAP``)::

    PATH/input/<name>.png                the rendered image (display values as stored)
    PATH/reflectance/<scene>_albedo.png  albedo; <scene> is <name> without "light<k>_"
    PATH/shading/<name>_shading.png      shading of this lighting
    PATH/mask/<scene>_alpha.png          1 = scene, 0 = background

so ``alley_light0`` uses ``alley_albedo.png`` and ``alley_alpha.png``. Every image found in
``input/`` is a sample, with its file stem as the id. The ground truth is read as stored and
taken as linear, as ``intrinsic-image-eval`` reads it. Ground truth must have its image's exact
size, otherwise a one-line error names both files. Geometry: the whole image is resized to
``resolution`` x ``resolution`` (aspect not kept), so the dense metrics see the whole scene.
The protocols compare at their own resolution, from the original files, which travel in
``sample.meta["references"]["arap"]`` as :class:`Scene`.
"""
from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path

from torch import Tensor

from joinbench.errors import DatasetError
from joinbench.imageio import image_info, read_image
from joinbench.registry import register_dataset
from joinbench.types import Sample

from .folder import FileDataset, _Item

LIGHTING = re.compile(r"light\d+_")


def scene_files(root: Path, name: str) -> dict[str, Path]:
    """The ground-truth files of image ``name`` (``intrinsic-image-eval``'s naming)."""
    scene = LIGHTING.sub("", f"{name}_")[:-1]
    return {"albedo": root / "reflectance" / f"{scene}_albedo.png",
            "shading": root / "shading" / f"{name}_shading.png",
            "mask": root / "mask" / f"{scene}_alpha.png"}


class Scene:
    """One ARAP image's original-resolution albedo and mask, read on first use (only the
    protocol metrics need them)."""

    def __init__(self, name: str, albedo: Path, mask: Path):
        self.name, self.albedo_file, self.mask_file = name, albedo, mask

    @cached_property
    def albedo(self) -> Tensor:
        return read_image(self.albedo_file)[0]

    @cached_property
    def mask(self) -> Tensor:
        return read_image(self.mask_file, kind="mask")[0]


class ARAPDataset(FileDataset):
    """ARAP scenes: input/, reflectance/, shading/ and mask/ as intrinsic-image-eval lays them out."""

    prefix = "arap"
    example = "/path/to/ARAP"
    geometry = "stretch"
    layers_are_linear = True
    references = ("arap",)
    benchmark_metrics = ("arap-careaga-lmse", "arap-careaga-rmse", "arap-careaga-ssim",
                         "arap-luo-si-mse", "arap-luo-si-lmse", "arap-luo-dssim")
    licence = "ARAP (Bonneel et al. 2017): see the dataset's own terms"
    description = ("ARAP synthetic scenes: PATH/input/<name>.png, reflectance/<scene>_albedo.png, shading/<name>_shading.png, "
                   "mask/<scene>_alpha.png; protocols arap-careaga-* and arap-luo-*")
    colour_space = "image: display values as stored; albedo / shading: as stored, taken as linear (intrinsic-image-eval)"

    def _scan(self) -> list[_Item]:
        root = self.root
        inputs = sorted((p for p in (root / "input").glob("*.png") if not p.name.startswith(".")), key=lambda p: p.name)
        if not inputs:
            raise DatasetError(f"arap:{root}: no images in {root / 'input'}; point arap: at the folder that holds input/, "
                               "reflectance/, shading/ and mask/ (intrinsic-image-eval's data/ARAP).")
        items = []
        for p in inputs:
            files = scene_files(root, p.stem)
            for layer, f in files.items():
                if not f.is_file():
                    raise DatasetError(f"arap:{root}: {layer} ground truth {f} for {p.name} does not exist; every ARAP image "
                                       "needs its albedo, shading and mask.")
            items.append(_Item(p.stem, p, tuple(image_info(p)["size"]), files))
        self._check_layer_sizes(items)
        return items

    def __getitem__(self, index: int) -> Sample:
        sample = super().__getitem__(index)
        layers = self.items[self._position(index)].layers
        sample.meta["references"] = {"arap": Scene(sample.id, layers["albedo"], layers["mask"])}
        return sample


register_dataset("arap", ARAPDataset, prefix=True, description=ARAPDataset.description)
