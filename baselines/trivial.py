"""``trivial``: albedo = the input image, shading = 1, specular = 0.

The floor every method must beat. "Albedo = the input" is taken in the albedo's *encoded*
space: the display image's values are read as an sRGB-encoded albedo, so the linear albedo
is ``forward_model.decode("albedo", image)`` (the inverse sRGB OETF) and the encoded albedo
the metrics see, ``encode("albedo", albedo)``, is the input image itself (up to float
rounding). This is the natural "no decomposition" answer in the authors' protocol, which
scores albedo in its sRGB-encoded space.

Consequences worth knowing when reading tables:

* shading is linear 1 everywhere, i.e. Reinhard-encoded ``4/(1+4) = 0.8`` at s = 4;
* the re-render ``display(albedo * 1)`` is ``reinhard(srgb_decode(image))`` under the
  ``reinhard`` forward models, which is *not* the input (the decomposition is not
  image-consistent); under the ``srgb`` forward model it is the input exactly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from joinbench.method import Method, MethodConfig
from joinbench.registry import register_method
from joinbench.types import Decomposition


@dataclass
class TrivialConfig(MethodConfig):
    """No settings beyond the forward model."""


class TrivialMethod(Method):
    """Albedo = input (as the sRGB-encoded albedo), shading = 1, specular = 0."""

    Config = TrivialConfig
    kind = "classical"

    def decompose(self, images: Tensor) -> Decomposition:
        start = time.perf_counter()
        fm = self.forward_model
        images = images.detach().float()  # outputs live on the inputs' device
        albedo = fm.decode("albedo", images)
        shading = torch.ones_like(images)
        specular = torch.zeros_like(images)
        return Decomposition(
            albedo=albedo, shading=shading, specular=specular, forward_model=fm,
            timings={"total": time.perf_counter() - start}, errors=[None] * images.shape[0],
        )


register_method(
    "trivial", TrivialMethod,
    description="floor: albedo = input image (read as sRGB-encoded albedo), shading = 1, specular = 0",
)
