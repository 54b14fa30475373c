"""Real photographs without ground truth, from the images bundled inside scikit-image.

Nothing is downloaded: every photo used here ships in the scikit-image wheel
(``skimage/data/*.png|jpg``) and is loaded through its ``skimage.data`` function, which
checks the file's hash. Licences are quoted from the docstrings of those functions in
scikit-image 0.26 (``tests/test_real_folder.py`` checks that the installed version still
says so).

* ``real-materials``: 21 square crops of material textures: 4 quadrant crops (256 px)
  each of ``brick``, ``grass`` and ``gravel`` (grayscale in scikit-image; replicated to
  RGB), 5 crops of the wooden table and 1 of the glazed saucer in ``coffee``, and 3 crops
  of fur in ``chelsea``.
* ``real-faces``: 3 face crops: two of ``astronaut`` (Eileen Collins; face and head) and
  one of ``camera`` (the cameraman, grayscale; replicated to RGB). The boxes are hard-coded
  from scikit-image's own LBP frontal-face cascade (``skimage.feature.Cascade`` with
  ``skimage.data.lbp_frontal_face_cascade_filename()``), which found the astronaut's face
  at rows 62-159, columns 187-284 and the cameraman's at rows 124-180, columns 207-263;
  the crops enlarge those boxes to include hair and chin.

Colour: the photos are 8-bit sRGB display images as published. They are presented as the
dataset's display ``image`` unchanged, i.e. treated as if they were the display image of
the ``reinhard`` forward model (methods need *some* forward model to invert); this is a
modelling assumption, not a property of the photos. There is no ground truth: these splits
are for qualitative grids and for checking that methods run on real photos.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from joinbench.errors import DatasetError
from joinbench.forward import ForwardModel
from joinbench.imageio import to_resolution
from joinbench.registry import register_dataset
from joinbench.types import Sample

from .base import Dataset


@dataclass(frozen=True)
class PhotoSource:
    """One bundled scikit-image photo: where it comes from and its licence, as scikit-image states it."""

    function: str        # skimage.data.<function>()
    file: str            # file inside skimage/data
    credit: str
    licence: str         # quoted from the function's docstring
    licence_short: str


SOURCES = {
    "brick": PhotoSource(
        "brick", "brick.png",
        "CC0Textures 'Bricks25' (https://cc0textures.com/view.php?tex=Bricks25), perspective-corrected, "
        "rotated, cropped, scaled and converted to grayscale by scikit-image",
        "licensed under the Creative Commons CC0 License", "CC0 1.0"),
    "grass": PhotoSource(
        "grass", "grass.png",
        "DeviantArt user linolafett, 'Grass-01' (https://www.deviantart.com/linolafett/art/Grass-01-434853879), "
        "cropped and converted to grayscale by scikit-image",
        "licensed under the Creative Commons CC0 License", "CC0 1.0"),
    "gravel": PhotoSource(
        "gravel", "gravel.png",
        "CC0Textures 'Gravel04' (https://cc0textures.com/view.php?tex=Gravel04), rescaled, cropped and converted "
        "to grayscale by scikit-image",
        "licensed under the Creative Commons CC0 License", "CC0 1.0"),
    "coffee": PhotoSource(
        "coffee", "coffee.png",
        "photograph by Rachel Michetti, courtesy of Pikolo Espresso Bar",
        "No copyright restrictions.  CC0 by the photographer (Rachel Michetti).", "CC0 1.0"),
    "chelsea": PhotoSource(
        "chelsea", "chelsea.png",
        "photograph of Chelsea the cat by Stefan van der Walt",
        "No copyright restrictions.  CC0 by the photographer (Stefan van der Walt).", "CC0 1.0"),
    "astronaut": PhotoSource(
        "astronaut", "astronaut.png",
        "NASA portrait of astronaut Eileen Collins, NASA Great Images database (https://flic.kr/p/r9qvLn)",
        "No known copyright restrictions, released into the public domain.", "public domain"),
    "camera": PhotoSource(
        "camera", "camera.png",
        "photograph of a cameraman by Lav Varshney",
        "No copyright restrictions. CC0 by the photographer (Lav Varshney).", "CC0 1.0"),
}


@dataclass(frozen=True)
class Crop:
    """A square crop of a bundled photo, in original pixel coordinates."""

    id: str
    photo: str           # key of SOURCES
    top: int
    left: int
    size: int
    content: str


def _quadrants(photo: str, content: str) -> list[Crop]:
    names = {(0, 0): "tl", (0, 256): "tr", (256, 0): "bl", (256, 256): "br"}
    return [Crop(f"{photo}-{n}", photo, t, l, 256, content) for (t, l), n in names.items()]


MATERIAL_CROPS: tuple[Crop, ...] = (
    *_quadrants("brick", "brick wall (grayscale)"),
    *_quadrants("grass", "grass (grayscale)"),
    *_quadrants("gravel", "gravel (grayscale)"),
    Crop("coffee-wood-1", "coffee", 0, 440, 120, "wooden table top"),
    Crop("coffee-wood-2", "coffee", 130, 485, 115, "wooden table top"),
    Crop("coffee-wood-3", "coffee", 275, 480, 120, "wooden table top"),
    Crop("coffee-wood-4", "coffee", 320, 0, 80, "wooden table top"),
    Crop("coffee-wood-5", "coffee", 120, 0, 70, "wooden table top"),
    Crop("coffee-saucer", "coffee", 230, 95, 80, "glazed ceramic saucer with highlights"),
    Crop("chelsea-fur-1", "chelsea", 0, 180, 100, "tabby cat fur (forehead)"),
    Crop("chelsea-fur-2", "chelsea", 140, 25, 100, "tabby cat fur and whiskers (cheek)"),
    Crop("chelsea-fur-3", "chelsea", 20, 50, 90, "tabby cat fur (side of head)"),
)

FACE_CROPS: tuple[Crop, ...] = (
    Crop("astronaut-face", "astronaut", 33, 158, 155, "face (Eileen Collins)"),
    Crop("astronaut-head", "astronaut", 3, 116, 224, "head and collar (Eileen Collins)"),
    Crop("camera-face", "camera", 100, 170, 100, "face in profile behind a camera (grayscale)"),
)


@lru_cache(maxsize=None)
def load_photo(photo: str) -> np.ndarray:
    """The bundled photo as read-only uint8 (H, W, 3) (gray ones replicated to RGB)."""
    try:
        import skimage.data
    except ImportError as exc:  # pragma: no cover - scikit-image is a dependency
        raise DatasetError(f"Real-photo datasets need scikit-image ({exc}); pip install scikit-image.") from None
    try:
        arr = np.asarray(getattr(skimage.data, SOURCES[photo].function)())
    except Exception as exc:  # a broken or trimmed scikit-image install
        raise DatasetError(
            f"Cannot load skimage.data.{SOURCES[photo].function}() ({' '.join(str(exc).split())[:120]}); "
            f"reinstall scikit-image (pip install --force-reinstall scikit-image)."
        ) from None
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    arr = np.ascontiguousarray(arr[:, :, :3], dtype=np.uint8)
    arr.setflags(write=False)
    return arr


class RealPhotoDataset(Dataset):
    """Fixed crops of CC0 / public-domain photos bundled with scikit-image; no ground truth."""

    crops: tuple[Crop, ...] = ()
    has_ground_truth = False
    forward_model_name = "reinhard"
    colour_space = "sRGB display (8-bit photos as published), used as the forward model's display image; no ground truth"
    source = "photos bundled with scikit-image (skimage.data)"
    licence = "CC0 1.0 / public domain (per image: see meta['licence'])"

    def __init__(self, resolution: int = 64, forward_model: ForwardModel | str | None = None, seed: int = 0):
        super().__init__(resolution, forward_model)  # seed: the crops are fixed, any seed gives them
        self._cache: dict[int, Sample] = {}

    def __len__(self) -> int:
        return len(self.crops)

    def sample_id(self, index: int) -> str:
        return self.crops[self._position(index)].id

    def __getitem__(self, index: int) -> Sample:
        index = self._position(index)
        if index not in self._cache:
            crop = self.crops[index]
            photo = load_photo(crop.photo)
            patch = photo[crop.top:crop.top + crop.size, crop.left:crop.left + crop.size]
            image = torch.from_numpy(patch.transpose(2, 0, 1).astype(np.float32) / 255.0)
            image = to_resolution(image, self.resolution).clamp(0.0, 1.0)
            self._cache[index] = Sample(crop.id, image, meta=self.sample_meta(index, photo.shape))
        return self._cache[index]

    def sample_meta(self, index: int, photo_shape: tuple[int, ...]) -> dict[str, Any]:
        import skimage

        crop = self.crops[index]
        src = SOURCES[crop.photo]
        return {
            "dataset": self.name, "index": index, "resolution": self.resolution,
            "colour_space": "sRGB display", "forward_model": self.forward_model.name,
            "source": f"skimage.data.{src.function}() (file skimage/data/{src.file}, scikit-image {skimage.__version__}): {src.credit}",
            "licence": f"{src.licence_short} (scikit-image: \"{src.licence}\")",
            "content": crop.content,
            "crop_box": {"top": crop.top, "left": crop.left, "height": crop.size, "width": crop.size},
            "original_size": [int(photo_shape[1]), int(photo_shape[0])],
        }


class RealMaterials(RealPhotoDataset):
    """Real material photos (scikit-image: brick, grass, gravel, coffee wood/glaze, cat fur), no ground truth."""

    name = "real-materials"
    domain = "materials"
    crops = MATERIAL_CROPS
    description = (f"{len(MATERIAL_CROPS)} crops of CC0 texture photos bundled in scikit-image (brick, grass, gravel "
                   "x4 each, coffee table wood x5 + saucer, cat fur x3); sRGB display, no ground truth")


class RealFaces(RealPhotoDataset):
    """Real face photos (scikit-image: astronaut, camera), no ground truth."""

    name = "real-faces"
    domain = "faces"
    crops = FACE_CROPS
    description = (f"{len(FACE_CROPS)} face crops of public-domain / CC0 photos bundled in scikit-image "
                   "(astronaut x2, cameraman); sRGB display, no ground truth")


register_dataset("real-materials", RealMaterials, description=RealMaterials.description)
register_dataset("real-faces", RealFaces, description=RealFaces.description)
