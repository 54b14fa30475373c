"""Forward image models: how intrinsic components combine into a photo.

JoIN composes linear components and tone-maps the result::

    raw = albedo * shading (+ specular)       per pixel, RGB, linear HDR
    I   = clip(tonemap(raw), 0, 1)            the display image

Each component also has an *encoded* display space, the space its GAN produces and the
space metrics are reported in (the authors' protocol): albedo is sRGB-encoded, shading and
specular are Reinhard-encoded (``y = s x / (1 + s x)``, s = 4 by default; the authors use
s = 2 for shading on their faces data). ``encode`` / ``decode`` convert between linear and
encoded space and are differentiable, so inversion can optimise through them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .registry import register_forward_model

COMPONENTS = ("albedo", "shading", "specular")

# Encoded values are clipped into [ENC_MIN, ENC_MAX] before decoding, as the authors do
# (`gan_to_raw`): Reinhard's inverse diverges at 1 and GAN outputs overshoot slightly.
ENC_MIN, ENC_MAX = 0.01, 0.99
_DECODE_EPS = 1e-4


def srgb_encode(x: Tensor) -> Tensor:
    """sRGB OETF (IEC 61966-2-1) for linear x >= 0."""
    x = x.clamp_min(0.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def srgb_decode(y: Tensor) -> Tensor:
    """Inverse sRGB OETF: encoded y in [0, 1] -> linear."""
    y = y.clamp(0.0, 1.0)
    return torch.where(y <= 0.04045, y / 12.92, ((y.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def reinhard_encode(x: Tensor, scale: float = 4.0) -> Tensor:
    """Reinhard tone map ``s x / (1 + s x)``: linear [0, inf) -> [0, 1)."""
    sx = scale * x.clamp_min(0.0)
    return sx / (1.0 + sx)


def reinhard_decode(y: Tensor, scale: float = 4.0) -> Tensor:
    """Inverse Reinhard ``y / (s (1 - y))``, with y kept below 1 so it stays finite."""
    y = y.clamp(0.0, 1.0 - _DECODE_EPS)
    return y / (scale * (1.0 - y))


@dataclass(frozen=True)
class ForwardModel:
    """One image formation model: composition, display tone map and component encodings.

    Attributes:
        name: registry name.
        tonemap: ``"reinhard"`` or ``"srgb"``, applied to the linear composite.
        scale: Reinhard scale s of the display tone map.
        use_specular: False for the two-component ``albedo * shading`` model.
        shading_scale / specular_scale: Reinhard scales of the encoded components.
    """

    name: str = "reinhard"
    tonemap: str = "reinhard"
    scale: float = 4.0
    use_specular: bool = True
    shading_scale: float = 4.0
    specular_scale: float = 4.0

    def __post_init__(self):
        if self.tonemap not in ("reinhard", "srgb"):
            raise ValueError(f"unknown tonemap {self.tonemap!r}; use 'reinhard' or 'srgb'")

    @property
    def components(self) -> tuple[str, ...]:
        return COMPONENTS if self.use_specular else COMPONENTS[:2]

    # -- component encodings -------------------------------------------------------------
    def encode(self, component: str, linear: Tensor) -> Tensor:
        """Linear component -> its encoded display space in [0, 1]."""
        if component == "albedo":
            return srgb_encode(linear).clamp(0.0, 1.0)
        if component == "shading":
            return reinhard_encode(linear, self.shading_scale)
        if component == "specular":
            return reinhard_encode(linear, self.specular_scale)
        raise ValueError(f"unknown component {component!r}; expected one of {COMPONENTS}")

    def decode(self, component: str, encoded: Tensor, clip: bool = False) -> Tensor:
        """Encoded component in [0, 1] -> linear. ``clip`` applies the authors' [0.01, 0.99]."""
        if clip:
            encoded = encoded.clamp(ENC_MIN, ENC_MAX)
        if component == "albedo":
            return srgb_decode(encoded)
        if component == "shading":
            return reinhard_decode(encoded, self.shading_scale)
        if component == "specular":
            return reinhard_decode(encoded, self.specular_scale)
        raise ValueError(f"unknown component {component!r}; expected one of {COMPONENTS}")

    def decode_stored(self, component: str, encoded: Tensor) -> Tensor:
        """Decode a component read from an 8/16-bit file. Reinhard cannot hold highlights in
        a file: a saturated value (255) would decode to ~2500, so shading and specular are
        clipped at the authors' ENC_MAX (linear 24.75 at s=4), as GAN outputs are."""
        if component != "albedo":
            encoded = encoded.clamp(max=ENC_MAX)
        return self.decode(component, encoded)

    # -- image formation -----------------------------------------------------------------
    def compose(self, albedo: Tensor, shading: Tensor, specular: Tensor | None = None) -> Tensor:
        """Linear HDR composite ``albedo * shading (+ specular)``."""
        raw = albedo * shading
        if self.use_specular and specular is not None:
            raw = raw + specular
        return raw

    def display(self, raw: Tensor) -> Tensor:
        """Linear composite -> display image in [0, 1]."""
        if self.tonemap == "reinhard":
            out = reinhard_encode(raw, self.scale)
        else:
            out = srgb_encode(raw)
        return out.clamp(0.0, 1.0)

    def undisplay(self, image: Tensor) -> Tensor:
        """Display image -> linear composite (inverse tone map; clipped highlights stay finite)."""
        if self.tonemap == "reinhard":
            return reinhard_decode(image, self.scale)
        return srgb_decode(image)

    def render(self, albedo: Tensor, shading: Tensor, specular: Tensor | None = None) -> Tensor:
        """Linear components -> display image."""
        return self.display(self.compose(albedo, shading, specular))

    def render_encoded(self, encoded: dict[str, Tensor], clip: bool = True) -> Tensor:
        """Encoded components (e.g. GAN outputs mapped to [0, 1]) -> display image."""
        lin = {c: self.decode(c, encoded[c], clip=clip) for c in self.components if c in encoded}
        return self.render(lin["albedo"], lin["shading"], lin.get("specular"))

    def describe(self) -> str:
        enc = f"albedo sRGB, shading Reinhard s={self.shading_scale:g}"
        if self.use_specular:
            enc += f", specular Reinhard s={self.specular_scale:g}"
        tm = f"Reinhard s={self.scale:g}" if self.tonemap == "reinhard" else "sRGB OETF"
        comp = "albedo*shading + specular" if self.use_specular else "albedo*shading"
        return f"{comp}, tone-mapped with {tm}; encodings: {enc}"


@register_forward_model("reinhard", description="albedo*shading + specular, Reinhard tone map (s=4), as in the authors' code")
def reinhard(scale: float = 4.0, shading_scale: float = 4.0, specular_scale: float = 4.0) -> ForwardModel:
    return ForwardModel("reinhard", "reinhard", scale, True, shading_scale, specular_scale)


@register_forward_model("srgb", description="albedo*shading + specular, sRGB OETF display (the paper's Figure 1)")
def srgb(shading_scale: float = 4.0, specular_scale: float = 4.0) -> ForwardModel:
    return ForwardModel("srgb", "srgb", 4.0, True, shading_scale, specular_scale)


@register_forward_model("reinhard-nospecular", description="two-component albedo*shading, Reinhard tone map (s=4), no specular layer")
def reinhard_nospecular(scale: float = 4.0, shading_scale: float = 4.0) -> ForwardModel:
    return ForwardModel("reinhard-nospecular", "reinhard", scale, False, shading_scale, 4.0)
