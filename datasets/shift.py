"""Camera degradations for ``*-shift`` test splits: the sim-to-real gap, with known ground truth.

Real photos differ from clean renders in ways a method trained on renders never saw: the
white balance is off, the sensor adds noise, the file is JPEG-compressed. The shift splits
apply exactly these to the *display* image while the ground-truth components stay the
clean linear layers, so how much a method (or PTI) suffers from, or recovers from, the gap
can be measured.

Everything is pure torch and keyed by the per-sample seeds through the hash RNG of
:mod:`procedural` (no ``torch.randn``, no libjpeg): a sample degrades the same way in any
batch and on any device. The display image is treated as sRGB-encoded, as a camera would
write it; white balance and noise act in the linear space under that encoding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from joinbench.forward import srgb_decode, srgb_encode

from .procedural import DrawPlan, Rand, on_device

# ITU-T T.81 Annex K quantisation tables (luminance, chrominance), the ones libjpeg scales.
JPEG_LUMA = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99],
], dtype=torch.float32)
JPEG_CHROMA = torch.full((8, 8), 99.0)
JPEG_CHROMA[:4, :4] = torch.tensor([
    [17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99],
], dtype=torch.float32)


def _dct_matrix() -> Tensor:
    """Orthonormal 8-point DCT-II; D @ X @ D.T is JPEG's 2-D forward DCT."""
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.to(torch.float32)


DCT = _dct_matrix()


def jpeg_tables(quality: Tensor) -> tuple[Tensor, Tensor]:
    """libjpeg's quality scaling of the standard tables: (B,) quality 1..100 -> two (B, 8, 8)."""
    q = quality.to(torch.float32).clamp(1, 100)
    scale = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)[:, None, None]
    luma, chroma = (torch.floor((on_device(t, q.device) * scale + 50) / 100).clamp(1, 255) for t in (JPEG_LUMA, JPEG_CHROMA))
    return luma, chroma


def _blockwise(x: Tensor, table: Tensor, dct: Tensor) -> Tensor:
    """Quantise the 8x8 block DCT of x (B, C, H, W) in level-shifted 0..255 units; H, W % 8 == 0."""
    b, c, h, w = x.shape
    blocks = x.reshape(b, c, h // 8, 8, w // 8, 8).transpose(3, 4)  # (B, C, h/8, w/8, 8, 8)
    coef = dct @ blocks @ dct.T
    t = table[:, None, None, None]
    coef = torch.round(coef / t) * t
    out = dct.T @ coef @ dct
    return out.transpose(3, 4).reshape(b, c, h, w)


def _pad8(x: Tensor) -> Tensor:
    ph, pw = -x.shape[-2] % 8, -x.shape[-1] % 8
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def jpeg_compress(image: Tensor, quality: Tensor) -> Tensor:
    """Baseline JPEG round trip in torch: 8-bit RGB -> YCbCr (JFIF), 4:2:0 chroma, 8x8 DCT,
    quantisation with the standard tables at per-sample ``quality`` (B,), and back."""
    b, _, h, w = image.shape
    x = torch.round(image.clamp(0, 1) * 255)
    r, g, bl = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl
    chroma = torch.cat([cb, cr], 1)
    sub = h >= 16 and w >= 16 and h % 2 == 0 and w % 2 == 0
    if sub:
        chroma = F.avg_pool2d(chroma, 2)
    luma_t, chroma_t = jpeg_tables(quality)
    dct = on_device(DCT, image.device)
    yq = _blockwise(_pad8(y - 128), luma_t, dct)[..., :h, :w] + 128
    cq = _blockwise(_pad8(chroma), chroma_t, dct)[..., : chroma.shape[-2], : chroma.shape[-1]]
    if sub:
        cq = F.interpolate(cq, size=(h, w), mode="bilinear", align_corners=False)
    cb, cr = cq[:, 0:1], cq[:, 1:2]
    rgb = torch.cat([yq + 1.402 * cr, yq - 0.344136 * cb - 0.714136 * cr, yq + 1.772 * cb], 1)
    return (torch.round(rgb.clamp(0, 255)) / 255).to(image.dtype)


def pixel_normals(r: Rand, key: str, shape: tuple[int, int, int]) -> Tensor:
    """Standard normal noise (B, C, H, W), one hash per pixel (Box-Muller on two lattices)."""
    c, h, w = shape
    n = max(h, w) - 1
    u1 = r.lattice(f"{key}/u1", n, c)[..., :h, :w].clamp_min(1e-7)
    u2 = r.lattice(f"{key}/u2", n, c)[..., :h, :w]
    return torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)


_PLANS: dict[tuple, DrawPlan] = {}  # what a degradation draws, per key and image shape (learnt on first use)


def apply_camera_shift(image: Tensor, seeds: Tensor, key: str = "camera", base: Tensor | None = None) -> Tensor:
    """Degrade display images (B, 3, H, W) in [0, 1] like a cheap camera, per sample:

    * white-balance error: per-channel gains (about +-15 % on red and blue, +-4 % on green);
    * sensor noise: shot noise (variance proportional to the signal, 150..3000 photons at
      white) plus read noise (std 0.002..0.01), in linear space;
    * JPEG compression at a quality drawn from 30..80 (pure torch, see :func:`jpeg_compress`).

    ``key`` names the random streams, so two datasets (or two degradations of one image)
    can draw independent parameters from the same seeds. ``base``: the seeds'
    :func:`procedural._seed_base`, when the caller has it.
    """
    seeds = seeds.to(image.device)
    shape = tuple(image.shape[1:])
    r = Rand(seeds, _PLANS.setdefault((key, shape), DrawPlan(key)), base)
    col = lambda t: t.view(-1, 1, 1, 1)
    lin = srgb_decode(image)

    gains = torch.exp(r.normal(f"{key}/wb", 3) * on_device((0.15, 0.04, 0.15), image.device))
    lin = lin * gains[:, :, None, None]

    photons = torch.exp(r.uniform(f"{key}/photons", None, math.log(150), math.log(3000)))
    read = r.uniform(f"{key}/read", None, 0.002, 0.01)
    std = torch.sqrt(lin.clamp_min(0) / col(photons) + col(read) ** 2)
    lin = lin + std * pixel_normals(r, f"{key}/noise", shape)

    out = srgb_encode(lin.clamp(0, 1))
    quality = r.uniform(f"{key}/jpeg", None, 30, 80).round()
    return jpeg_compress(out, quality).clamp(0, 1)
