"""Stage-1 data terms and noise terms, all **per image** (shape (B,)).

Every function here returns one value per image so that the inversion loop can *sum*
them over the batch: image i's variables then receive gradients from image i's loss only,
and Adam (an element-wise optimiser) follows the same trajectory for an image whether it
is inverted alone or inside a batch.

* :class:`PerceptualLoss` -- ``"lpips-vgg"``: the ``lpips`` package's LPIPS v0.1 with the
  VGG16 trunk (torchvision ImageNet weights provisioned offline by
  :mod:`joinbench.lpips_weights`), i.e. the perceptual distance of the StyleGAN2 projector
  (rosinality's ``lpips.PerceptualLoss(net="vgg")``; NVIDIA's TorchScript ``vgg16.pt`` with
  ``return_lpips=True`` is the same calibrated VGG16 feature distance, summed instead of
  averaged over positions). **All five VGG16 blocks** (relu1_2 .. relu5_3) are used, on the
  image at its native resolution: relu5_3 follows four 2x poolings, so at 64 px it sees
  4x4 maps and at 16 px 1x1 (kept: LPIPS' calibration weights were fitted with all five
  taps, and dropping one would make the loss differ from the metric). The projectors
  only ever *downsample* to 256 px, so nothing is upsampled here either. The computation
  is identical on CPU and GPU. Inputs are display images in [0, 1], mapped to [-1, 1].
  ``"none"`` switches the term off (fast tests, pixel-only inversions). LPIPS-VGG needs at
  least 16 px (four 2x poolings before relu5_3).
* :func:`pixel_mse` -- mean squared error of the display images.
* :func:`noise_regularisation` -- the StyleGAN2 projector's noise regulariser: squared mean
  autocorrelation at a shift of one pixel in x and in y, summed over a pyramid of 2x2
  average poolings down to 8x8 (or the map's own size when it is smaller), summed over
  layers.
* :func:`normalise_noise_` -- re-normalise noise maps to zero mean, unit variance per image
  (the projector does this after every step).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import JoinbenchError

PERCEPTUAL_LOSSES = ("none", "lpips-vgg")
LPIPS_MIN_RESOLUTION = 16


class PerceptualLoss:
    """Per-image perceptual distance between display images in [0, 1]: ``loss(x, y) -> (B,)``."""

    def __init__(self, kind: str = "lpips-vgg", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        if kind not in PERCEPTUAL_LOSSES:
            raise JoinbenchError(f"Unknown perceptual loss {kind!r}; use one of {', '.join(PERCEPTUAL_LOSSES)}.")
        self.kind = kind
        self.model = None
        if kind == "lpips-vgg":
            from ..lpips_weights import lpips_model

            model = lpips_model("vgg", device)  # shared, frozen, float32
            if dtype != torch.float32:  # never change the shared instance (metrics use it)
                model = copy.deepcopy(model).to(dtype)
            self.model = model

    @property
    def enabled(self) -> bool:
        return self.model is not None

    def __call__(self, x: Tensor, y: Tensor | list[Tensor]) -> Tensor:
        """Distance of ``x`` to ``y``: display images, or their :meth:`features` (a fixed target's
        features are computed once instead of at every step)."""
        if self.model is None:
            return x.new_zeros(x.shape[0])
        target = self.features(y) if isinstance(y, Tensor) else y
        total = None
        for lin, fx, fy in zip(self.model.lins, self.features(x), target):  # lpips.LPIPS.forward, term by term
            d = lin((fx - fy) ** 2).mean([2, 3], keepdim=True)
            total = d if total is None else total + d
        return total.reshape(x.shape[0])

    def features(self, x: Tensor) -> list[Tensor]:
        """The unit-normalised VGG16 features of display images ``x`` (empty when the term is off)."""
        import lpips

        if self.model is None:
            return []
        if min(x.shape[-2:]) < LPIPS_MIN_RESOLUTION:
            raise JoinbenchError(f"LPIPS-VGG needs images of at least {LPIPS_MIN_RESOLUTION} px, got "
                                 f"{tuple(x.shape[-2:])}; use --set perceptual=none for smaller priors.")
        outs = self.model.net(self.model.scaling_layer(x * 2.0 - 1.0))
        return [lpips.normalize_tensor(o) for o in outs]


def pixel_mse(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error per image, (B,)."""
    return (x - y).square().flatten(1).mean(1)


def noise_regularisation(noises: Sequence[Tensor], min_size: int = 8) -> Tensor:
    """The StyleGAN2 projector's noise regulariser, per image.

    For each map: ``mean(n * roll(n, 1, x))^2 + mean(n * roll(n, 1, y))^2`` (means over the
    map's pixels), then 2x2 average pooling, repeated while the map is larger than
    ``min_size``; summed over levels and maps. ``noises`` are (B, ..., r, r) tensors of maps
    (e.g. per layer (B, 1, r, r), or a fused bank's (B, N, k, r, r)); tensors of one size must
    agree in all but their third-last dim. Returns (B,).

    Vectorised over maps: every map that is r x r at some level of its pyramid (its own size,
    or pooled down from a larger one) is in one tensor, so each pyramid level costs one set of
    operations, whatever the number of layers and generators."""
    by_size: dict[int, list[Tensor]] = {}
    for n in noises:
        by_size.setdefault(n.shape[-1], []).append(n)
    if not by_size:
        raise ValueError("noise_regularisation needs at least one noise map")
    total = None
    while by_size:
        r = max(by_size)
        maps = by_size.pop(r)
        level = maps[0] if len(maps) == 1 else torch.cat(maps, dim=-3)
        term = ((level * torch.roll(level, shifts=1, dims=-1)).mean(dim=(-2, -1)).square()
                + (level * torch.roll(level, shifts=1, dims=-2)).mean(dim=(-2, -1)).square())
        term = term.flatten(1).sum(1)
        total = term if total is None else total + term
        if r > min_size:  # pooled maps join the next level
            pooled = F.avg_pool2d(level.flatten(0, -3), kernel_size=2)
            by_size.setdefault(pooled.shape[-1], []).append(pooled.unflatten(0, level.shape[:-2]))
    return total


@torch.no_grad()
def normalise_noise_(noises: Sequence[Tensor]) -> None:
    """In place: each map (the last two dims) to zero mean and unit variance (as the projector does)."""
    for n in noises:
        n.sub_(n.mean(dim=(-2, -1), keepdim=True))
        n.mul_(n.square().mean(dim=(-2, -1), keepdim=True).rsqrt())


__all__ = ["LPIPS_MIN_RESOLUTION", "PERCEPTUAL_LOSSES", "PerceptualLoss", "noise_regularisation",
           "normalise_noise_", "pixel_mse"]
