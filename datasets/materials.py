"""``materials`` and ``materials-shift``: flat material swatches under a camera flash.

The authors' "FlashMaterials" setting: a flat patch of material seen head-on and lit by a
point light next to the camera. Each sample is one of several pattern *families* (plaster,
tiles/bricks, wood, stones, fabric, metal) that produce an albedo, a height map (-> normals),
a roughness map and a specular albedo (Fresnel F0) map. Lighting is rendered physically:

    shading  = sum_lights  colour * I * max(N.L, 0) / d^2   + ambient        (3 channels)
    specular = sum_lights  colour * I / d^2 * pi * F D G / (4 N.V)           (GGX, Smith G,
                                                                                Schlick F)
    image    = reinhard(albedo * shading + specular)

so the ground truth holds normal-map detail, inverse-square falloff and a highlight
hot-spot on glossy samples. The exposure is metered per sample (median luminance mapped to
a random grey level), as a camera would, so the Reinhard display image is well exposed.

``materials-shift`` is the controlled sim-to-real gap: pattern families never seen in
training (marble, terrazzo, leather), one to three lights anywhere above the patch, with
blackbody or coloured-gel colours and area-like extent (several jittered point samples),
and camera degradations of the display image (white balance, sensor noise, JPEG;
:mod:`shift`). Its ground truth stays the clean linear layers under the shifted lighting.

Everything random comes from :class:`procedural.Rand` and seed-keyed lattices, and every
pattern is a function of continuous image coordinates: a sample is the same whatever
batch, device or resolution it is rendered at (higher resolutions are sharper; renders
below 64 px are area-averaged 64 px renders, so they are filtered, not aliased).
Families are rendered per group of samples (a loop over families, never over images),
which keeps a 256 x 64 px training batch well under half a second on two CPU cores. For
GPUs a render call is a fixed number of kernels whatever its size (about 2,500) and waits
for the device nowhere: every family's random draws are made at once
(:class:`procedural.DrawPlan`), and the samples are grouped by family on the host, where
their seeds are made.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from joinbench.forward import srgb_decode
from joinbench.registry import register_dataset

from .base import ProceduralDataset
from .procedural import (DrawPlan, Rand, _mix, _seed_base, batch_invariant, height_to_normals, in_host_pieces,
                         kelvin_to_rgb, on_device, pixel_grid, smoothstep, to_device)
from .shift import apply_camera_shift


# --------------------------------------------------------------------------------------
# helpers: per-sample parameters broadcast as (b, 1, 1, 1); fields are (b, C, H, W)
# --------------------------------------------------------------------------------------
def col(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1, 1, 1)


def mix(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    return a + (b - a) * t


def srgb_table(*rows: tuple[int, int, int]) -> Tensor:
    """Palette rows given as sRGB 0..255 (as one picks them) -> linear (K, 3)."""
    return srgb_decode(torch.tensor(rows, dtype=torch.float32) / 255.0)


@dataclass
class Patch:
    """What a family function sees: the samples' random numbers and coordinates.

    r: the samples' :class:`Rand` (with the family's :class:`DrawPlan`).
    x, y: (b, 1, H, W) pixel centres in image widths, centred (-0.5 .. 0.5; y down).
    px: one pixel in image widths, used only as an anti-aliasing width.
    """

    r: Rand
    x: Tensor
    y: Tensor
    px: float

    def u(self, key: str, low: float = 0.0, high: float = 1.0) -> Tensor:
        return col(self.r.uniform(key, None, low, high))

    def bern(self, key: str, p: float) -> Tensor:
        return col(self.r.bernoulli(key, p))

    def angle(self, key: str) -> Tensor:
        """A uniform orientation in [0, pi) per sample (b,)."""
        return self.r.uniform(key, None, 0.0, math.pi)

    def rotated(self, angle: Tensor) -> tuple[Tensor, Tensor]:
        """Coordinates rotated by ``angle`` (b,): pattern axes at any orientation."""
        c, s = col(torch.cos(angle)), col(torch.sin(angle))
        return c * self.x + s * self.y, -s * self.x + c * self.y

    def pick(self, key: str, table: Tensor, hue: float = 0.06, value: float = 0.12) -> Tensor:
        """One palette colour per sample (b, 3, 1, 1) with per-sample hue and value jitter."""
        c = self.r.choice(key, table)
        jitter = torch.exp(hue * self.r.normal(f"{key}/hue", 3) + value * self.r.normal(f"{key}/val")[:, None])
        return col((c * jitter).clamp(0.003, 0.9))


SPAN = 0.75  # noise lattices cover [-SPAN, SPAN]^2 image widths: the patch, rotated by any angle


def lattice(p: Patch, key: str, ny: int, nx: int, channels: int = 1) -> Tensor:
    """Seed-keyed i.i.d. uniform lattice (b, C, ny + 1, nx + 1) from
    :meth:`procedural.Rand.lattice`; non-square shapes reuse a square lattice's values."""
    if ny == nx:
        return p.r.lattice(key, nx, channels)
    side = math.isqrt((ny + 1) * (nx + 1) - 1) + 1
    lat = p.r.lattice(key, side - 1, channels).flatten(2)
    return lat[..., : (ny + 1) * (nx + 1)].reshape(lat.shape[0], channels, ny + 1, nx + 1)


def noise(p: Patch, key: str, x: Tensor, y: Tensor, fx: float, fy: float | None = None, channels: int = 1,
          mode: str = "bicubic") -> Tensor:
    """Value noise in [0, 1] with about ``fx`` (``fy``) features per image width along x (y),
    at coordinates x, y (b, 1, H, W) in image widths; anisotropic when fy != fx (grain,
    brushing). The lattice spans [-SPAN, SPAN]^2, beyond that it is mirrored."""
    nx = max(1, round(2 * SPAN * fx))
    ny = nx if fy is None else max(1, round(2 * SPAN * fy))
    grid = torch.stack([x[:, 0], y[:, 0]], dim=-1) / SPAN
    lat = lattice(p, key, ny, nx, channels)
    return F.grid_sample(lat, grid, mode=mode, padding_mode="reflection", align_corners=True).clamp(0.0, 1.0)


def fbm(p: Patch, key: str, x: Tensor, y: Tensor, freq: float, octaves: int, stretch: float = 1.0) -> Tensor:
    """Fractal sum of noise octaves (gain 1/2), rescaled to span about [0, 1] (mean 0.5).
    Fine octaves use bilinear lookups: cheaper, and nobody can tell."""
    total, norm = 0.0, 0.0
    for o in range(octaves):
        f = freq * (1 << o)
        n = noise(p, f"{key}/{o}", x, y, f, f * stretch, mode="bicubic" if o < 2 else "bilinear")
        total = total + (n - 0.5) / (1 << o)
        norm += 1.0 / (1 << (2 * o))
    return (0.5 + 1.6 * total / math.sqrt(norm)).clamp(0.0, 1.0)


def cell_values(p: Patch, key: str, i: Tensor, j: Tensor, n: int = 1) -> list[Tensor]:
    """``n`` uniform values per integer cell (i, j) (long (b, 1, H, W)) and sample, from a
    single 32-bit hash per pixel (32 // n bits each: plenty for colour jitter)."""
    h = _mix(col(p.r.hashes(key)) ^ (((i & 0xFFFF) << 16) | (j & 0xFFFF)))
    bits = 32 // n
    mask = (1 << bits) - 1
    return [(((h >> (bits * k)) & mask).to(torch.float32) + 0.5) / (1 << bits) for k in range(n)]


NEIGHBOURS = tuple((dx, dy) for dy in (-1.0, 0.0, 1.0) for dx in (-1.0, 0.0, 1.0))  # the 3 x 3 cells around a pixel's


def cells(p: Patch, key: str, x: Tensor, y: Tensor, density: Tensor, max_density: float, jitter: float = 0.9):
    """Voronoi / Worley cells, ``density`` (b, 1, 1, 1) cells per image width (at most
    ``max_density``, the top of its range), for x, y in [-0.5, 0.5]: F1, F2 (distances to
    the nearest two feature points, image widths) and a uniform value per cell, each
    (b, 1, H, W). Feature points come from one seed-keyed lattice gathered per pixel (five
    times cheaper than hashing per pixel and neighbour); the nine neighbour cells are
    looked at together (one kernel each instead of nine). The lattice's size comes from
    ``max_density``, not from the batch's densities: no host sync, and a feature point is
    the same whatever the lattice's size (its hash depends on its cell only)."""
    b, _, h, w = x.shape
    gx, gy = (x + 0.5) * density, (y + 0.5) * density
    n = int(math.ceil(max_density)) + 3
    table = p.r.lattice(key, n - 1, 3).flatten(2)  # (b, 3, n*n): offset x, offset y, value
    offsets = on_device(NEIGHBOURS, x.device).T.reshape(2, 1, 9, 1, 1)
    nx, ny = torch.floor(gx) + offsets[0], torch.floor(gy) + offsets[1]  # (b, 9, H, W)
    idx = ((ny + 1).clamp(0, n - 1) * n + (nx + 1).clamp(0, n - 1)).long().view(b, 1, 9 * h * w)
    feat = table.gather(2, idx.expand(-1, 3, -1)).view(b, 3, 9, h, w)
    px = nx + 0.5 + jitter * (feat[:, 0] - 0.5)
    py = ny + 0.5 + jitter * (feat[:, 1] - 0.5)
    d = (gx - px) ** 2 + (gy - py) ** 2
    best1, nearest = d.min(dim=1, keepdim=True)  # ties: the first neighbour, as a scan in NEIGHBOURS order would
    best2 = d.scatter(1, nearest, math.inf).amin(1, keepdim=True)
    value = feat[:, 2].gather(1, nearest)
    return best1.sqrt() / density, best2.sqrt() / density, value


def edge_mask(p: Patch, dist: Tensor, width: Tensor | float) -> Tensor:
    """1 where ``dist`` (image widths) exceeds ``width``, with a one-pixel soft edge."""
    return smoothstep(width - 0.5 * p.px, width + 0.5 * p.px, dist)


@dataclass
class Layers:
    """Material maps: linear albedo (b, 3), height in image widths (b, 1), perceptual GGX
    roughness (b, 1) and specular albedo = Fresnel reflectance at normal incidence (b, 3)."""

    albedo: Tensor
    height: Tensor
    rough: Tensor
    f0: Tensor


def dielectric(albedo: Tensor, height: Tensor, rough: Tensor, f0: float = 0.04) -> Layers:
    """Non-metals: a grey specular albedo (F0 about 0.04, the value of most dielectrics)."""
    return Layers(albedo, height, rough, torch.full_like(albedo, f0))


# --------------------------------------------------------------------------------------
# palettes (sRGB, as picked by eye from photos of the materials)
# --------------------------------------------------------------------------------------
PLASTER = srgb_table((236, 231, 220), (226, 212, 182), (205, 165, 100), (190, 115, 85), (152, 152, 146),
                     (172, 190, 204), (162, 176, 142), (216, 172, 160), (96, 100, 106), (200, 190, 175))
BRICK = srgb_table((152, 62, 46), (122, 48, 36), (182, 98, 62), (196, 166, 112), (112, 72, 52),
                   (98, 92, 92), (165, 80, 55))
TILE = srgb_table((232, 232, 226), (222, 206, 170), (62, 102, 162), (72, 132, 102), (42, 42, 44),
                  (182, 92, 62), (52, 132, 142), (190, 60, 50), (235, 200, 80))
MORTAR = srgb_table((192, 187, 176), (162, 157, 146), (122, 117, 112), (222, 217, 206), (72, 72, 72))
WOOD = srgb_table((202, 162, 112), (172, 122, 72), (102, 66, 42), (152, 82, 52), (216, 178, 122),
                  (112, 52, 36), (152, 142, 126), (64, 42, 30))
STONE = srgb_table((132, 132, 130), (192, 162, 122), (82, 86, 92), (142, 122, 102), (152, 92, 72),
                   (102, 112, 122), (202, 192, 172))
GROUT = srgb_table((172, 157, 132), (62, 57, 52), (142, 142, 137), (110, 100, 85))
DYE = srgb_table((40, 50, 92), (162, 30, 40), (40, 92, 52), (202, 152, 40), (62, 62, 66), (202, 187, 162),
                 (62, 82, 122), (102, 26, 42), (30, 112, 122), (232, 229, 220), (212, 132, 152), (92, 62, 122),
                 (212, 102, 42))
# Metals: measured linear F0 (reflectance at normal incidence), not sRGB.
METAL_F0 = torch.tensor([[0.56, 0.57, 0.58], [0.91, 0.92, 0.92], [0.95, 0.64, 0.54], [1.00, 0.71, 0.29],
                         [0.91, 0.78, 0.42], [0.95, 0.93, 0.88], [0.54, 0.50, 0.45], [0.62, 0.64, 0.65]])
MARBLE = srgb_table((232, 232, 228), (38, 38, 40), (46, 96, 76), (222, 184, 172), (222, 204, 172), (140, 142, 146))
VEIN = srgb_table((112, 112, 118), (222, 222, 216), (200, 212, 200), (152, 92, 82), (162, 132, 102), (50, 50, 54))
TERRAZZO = srgb_table((222, 217, 207), (162, 162, 157), (216, 192, 182), (82, 82, 82), (200, 205, 195))
CHIPS = srgb_table((242, 242, 236), (50, 50, 50), (182, 72, 52), (202, 162, 82), (122, 142, 122),
                   (152, 122, 102), (92, 112, 142), (230, 150, 140))
LEATHER = srgb_table((182, 122, 72), (112, 66, 36), (72, 42, 26), (36, 32, 30), (102, 32, 30), (42, 46, 72),
                     (102, 96, 56))


# --------------------------------------------------------------------------------------
# pattern families (training distribution)
# --------------------------------------------------------------------------------------
def plaster(p: Patch) -> Layers:
    """Painted or raw plaster / render: two-tone blotches, speckle, trowelled relief."""
    base = p.pick("plaster/base", PLASTER)
    stain = base * col(p.r.uniform("plaster/stain", 3, 0.6, 0.95))
    blot = fbm(p, "plaster/blot", p.x, p.y, 3, 4)
    amount = p.u("plaster/stain_amt", 0.2, 1.0)
    speck = noise(p, "plaster/speck", p.x, p.y, 24, mode="bilinear")
    albedo = mix(base, stain, smoothstep(0.3, 0.8, blot) * amount) * (1 + 0.3 * p.u("plaster/speck_amt") * (speck - 0.5))
    relief = fbm(p, "plaster/relief", p.x, p.y, 4, 4)
    trowel = relief ** p.u("plaster/sharp", 1.0, 3.0)  # higher powers: flat areas with raised ridges
    height = p.u("plaster/height", 0.004, 0.02) * trowel + 0.0015 * speck
    satin = p.bern("plaster/satin", 0.3)
    rough = torch.where(satin, p.u("plaster/r1", 0.3, 0.5), p.u("plaster/r2", 0.65, 0.95)) + 0.15 * (relief - 0.5)
    return dielectric(albedo, height, rough)


def bricks(p: Patch) -> Layers:
    """Brick walls (running bond) and glazed tiles (square or subway, sometimes a checker),
    with recessed, rougher mortar and bevelled edges; each brick/tile varies in colour."""
    tile = p.bern("bricks/tile", 0.4)
    rows = torch.where(tile, p.u("bricks/tile_rows", 3, 7), p.u("bricks/rows", 4, 9))
    aspect = torch.where(tile, torch.where(p.bern("bricks/subway", 0.4), 2.0, 1.0), p.u("bricks/aspect", 2.0, 3.2))
    bond = torch.where(tile & (aspect < 1.5), 0.0, 0.5)
    angle = torch.where(p.r.bernoulli("bricks/vertical", 0.25), math.pi / 2, 0.0) + 0.02 * p.r.normal("bricks/tilt")
    xr, yr = p.rotated(angle)
    ry = yr * rows + p.u("bricks/oy", 0, 8)
    row = torch.floor(ry)
    rx = xr * rows / aspect + p.u("bricks/ox", 0, 8) + bond * row
    cl = torch.floor(rx)
    fx, fy = rx - cl, ry - row
    dist = torch.minimum(torch.minimum(fy, 1 - fy), torch.minimum(fx, 1 - fx) * aspect) / rows  # to nearest joint
    joint = torch.where(tile, p.u("bricks/tjoint", 0.025, 0.06), p.u("bricks/joint", 0.06, 0.13)) / rows / 2
    body = edge_mask(p, dist, joint)
    bevel = torch.where(tile, p.u("bricks/tbevel", 0.004, 0.012), p.u("bricks/bevel", 0.002, 0.006))
    dome = smoothstep(joint, joint + bevel, dist)
    row_i, col_i = row.long(), cl.long()
    h1, h2, h3, h4 = cell_values(p, "bricks/cell", row_i, col_i, 4)

    brick_col = torch.where(tile, p.pick("bricks/tcol", TILE, 0.04, 0.08), p.pick("bricks/col", BRICK))
    alt_col = torch.where(tile, p.pick("bricks/tcol2", TILE, 0.04, 0.08), brick_col * col(p.r.uniform("bricks/burnt", 3, 0.45, 0.8)))
    checker = tile & p.bern("bricks/checker", 0.35)
    use_alt = torch.where(checker, torch.remainder(row_i + col_i, 2) == 1, h2 < torch.where(tile, 0.0, 0.25))
    unit = torch.where(use_alt, alt_col, brick_col)
    var = torch.where(tile, 0.08, 0.35)
    unit = unit * (1 + var * (h1 - 0.5)) * (1 + 0.5 * var * (torch.cat([h2, h3, h4], 1) - 0.5))
    grain = fbm(p, "bricks/grain", p.x, p.y, 8, 3)
    unit = unit * (1 + torch.where(tile, 0.06, 0.5) * (grain - 0.5))
    mortar = p.pick("bricks/mortar", MORTAR) * (1 + 0.4 * (noise(p, "bricks/mgrain", p.x, p.y, 32, mode="bilinear") - 0.5))
    albedo = mix(mortar, unit, body)

    # per-unit tilt (uneven laying) catches the flash differently on every tile
    cx, cy = (fx - 0.5) * aspect / rows, (fy - 0.5) / rows
    tilt = torch.where(tile, 0.05, 0.02) * ((h3 - 0.5) * cx + (h4 - 0.5) * cy)
    depth = torch.where(tile, 0.006, 0.01)
    height = depth * dome + tilt * body + torch.where(tile, 0.0001, 0.004) * grain
    unit_rough = torch.where(tile, p.u("bricks/trough", 0.08, 0.3), p.u("bricks/rough", 0.6, 0.9))
    rough = mix(torch.full_like(body, 0.95), unit_rough * (1 + torch.where(tile, 0.03, 0.3) * (grain - 0.5)), body)
    return dielectric(albedo, height, rough, 0.045)


def wood(p: Patch) -> Layers:
    """Wood planks: flat-sawn growth rings (cathedral arches, fBm-warped), pores along the
    grain, per-plank colour and staggered end joints; varnished (glossy) or raw."""
    xr, yr = p.rotated(p.angle("wood/angle"))  # grain runs along yr
    width = p.u("wood/plank", 0.16, 0.4)
    xs = xr + p.u("wood/ox", 0, 4)
    plank = torch.floor(xs / width)
    fp = xs / width - plank
    plank_i = plank.long()
    length = p.u("wood/length", 0.5, 1.6)
    ys = yr + cell_values(p, "wood/plank", plank_i, plank_i * 0)[0] * length  # staggered end joints
    seg = torch.floor(ys / length)
    fs = ys / length - seg
    hb = cell_values(p, "wood/board", plank_i, seg.long(), 4)  # per board: ring layout, colour

    warp = fbm(p, "wood/warp", xr, yr, 4, 3, stretch=0.15)
    rings = p.u("wood/rings", 9, 24) * (0.8 + 0.4 * hb[0])
    cx = (hb[1] - 0.5) * 0.8
    stretch = p.u("wood/stretch", 0.04, 0.18)
    radius = torch.sqrt((xr - cx) ** 2 + (stretch * (yr - hb[2])) ** 2 + 0.01) * rings
    t = torch.frac(radius + p.u("wood/warp_amt", 0.6, 2.0) * warp + hb[3] * 10)
    late = smoothstep(0.45, 0.9, t) * (1 - smoothstep(0.93, 1.0, t))

    tint = on_device((0.12, 0.1, 0.08), p.x.device).view(1, 3, 1, 1)
    base = p.pick("wood/col", WOOD) * (1 + tint * (torch.cat(hb[:3], 1) - 0.5)) * (1 + 0.3 * (hb[3] - 0.5))
    redder = on_device((1.0, 0.92, 0.85), p.x.device)
    latewood = base * col(p.r.uniform("wood/late", 3, 0.5, 0.75) * redder)
    pores = noise(p, "wood/pores", xr, yr, 40, 2.4, mode="bilinear")
    albedo = mix(base, latewood, late * p.u("wood/contrast", 0.5, 1.0)) * (1 - 0.25 * (pores - 0.5))

    seam_w = p.u("wood/seam", 0.0015, 0.004)
    seam = torch.minimum(torch.minimum(fp, 1 - fp) * width, torch.minimum(fs, 1 - fs) * length)
    open_ = 1 - edge_mask(p, seam, seam_w)
    albedo = albedo * (1 - 0.7 * open_)
    groove = 1 - smoothstep(0.0, seam_w + 0.004, seam)
    height = -0.004 * groove - 0.0008 * late - 0.0006 * pores
    varnish = p.bern("wood/varnish", 0.5)
    rough = torch.where(varnish, p.u("wood/vr", 0.12, 0.35), p.u("wood/rr", 0.5, 0.8)) + 0.1 * late + 0.5 * open_
    return dielectric(albedo, height, rough)


def stones(p: Patch) -> Layers:
    """Cobbles / flagstones / pebbles: Voronoi stones, domed, speckled (granite), in grout."""
    top = 8.0  # cells per image width, at most
    density = p.u("stones/density", 3.0, top)
    f1, f2, val = cells(p, "stones/cells", p.x, p.y, density, top, 0.9)
    edge = (f2 - f1) * 0.5  # about the distance to the cell border
    gap = p.u("stones/gap", 0.004, 0.015)
    stone = edge_mask(p, edge, gap)
    # rounded edges times a paraboloid around the stone's centre: smooth cobbles, no ridges
    round_w = p.u("stones/round", 0.02, 0.06)
    bulge = (1 - 0.8 * (f1 * density) ** 2).clamp_min(0)
    dome = smoothstep(gap, gap + round_w, edge) * (0.4 + 0.6 * bulge)
    surf = fbm(p, "stones/surf", p.x, p.y, 6, 4)

    c1, c2 = p.pick("stones/c1", STONE), p.pick("stones/c2", STONE)
    val2 = torch.frac(val * 137.31)
    tone = mix(c1, c2, (val2 * p.u("stones/mixed", 0.0, 1.0)))
    tone = tone * (1 + 0.5 * (val - 0.5))
    speck = noise(p, "stones/speck", p.x, p.y, 28, mode="bilinear")
    tone = tone * (1 + p.u("stones/speck_amt", 0.1, 0.9) * (speck - 0.5)) * (1 + 0.3 * (surf - 0.5))
    grout = p.pick("stones/grout", GROUT) * (1 + 0.4 * (speck - 0.5))
    albedo = mix(grout, tone, stone)
    height = p.u("stones/height", 0.005, 0.02) * dome + 0.003 * surf
    polished = p.bern("stones/wet", 0.25)
    stone_rough = torch.where(polished, p.u("stones/pr", 0.15, 0.3), p.u("stones/rr", 0.45, 0.85))
    rough = mix(torch.full_like(stone, 0.95), stone_rough + 0.1 * (surf - 0.5), stone)
    return dielectric(albedo, height, rough)


def fabric(p: Patch) -> Layers:
    """Woven cloth close up: plain, 2/2 twill or basket weave of round, twisted threads;
    solid, denim-like (white weft), two-colour (chambray) or striped/tartan dyes; slubs,
    dark gaps between threads; matte (sometimes satin-ish)."""
    n = p.u("fabric/threads", 10.0, 24.0)
    xr, yr = p.rotated(0.03 * p.r.normal("fabric/angle"))
    gx, gy = xr * n + p.u("fabric/ox", 0, 8), yr * n + p.u("fabric/oy", 0, 8)
    ix, iy = torch.floor(gx), torch.floor(gy)
    fx, fy = gx - ix, gy - iy
    ix, iy = ix.long(), iy.long()
    weave = col(p.r.randint("fabric/weave", 3))
    half = lambda i: torch.div(i, 2, rounding_mode="floor")
    warp_top = torch.where(weave == 0, torch.remainder(ix + iy, 2) == 0,
                           torch.where(weave == 1, torch.remainder(ix + iy, 4) < 2,
                                       torch.remainder(half(ix) + half(iy), 2) == 0))
    warp_prof = torch.sin(math.pi * fx).clamp_min(0) ** 0.6  # round threads (warp runs along y)
    weft_prof = torch.sin(math.pi * fy).clamp_min(0) ** 0.6
    prof = torch.where(warp_top, warp_prof * (0.6 + 0.4 * weft_prof), weft_prof * (0.6 + 0.4 * warp_prof))
    twist = torch.where(warp_top, torch.sin(2 * math.pi * (3 * fy + fx)), torch.sin(2 * math.pi * (3 * fx + fy)))

    mode = p.u("fabric/mode")  # < .4 solid, < .6 denim, < .8 two-colour, else stripes/tartan
    warp_col = p.pick("fabric/warp", DYE)
    other = p.pick("fabric/weft", DYE)
    white = p.pick("fabric/white", DYE[9:10], 0.03, 0.05)
    weft_col = torch.where(mode < 0.4, warp_col * col(p.r.uniform("fabric/shade", 3, 0.85, 1.1)),
                           torch.where(mode < 0.6, white, other))
    band = p.u("fabric/band", 3, 10).long()
    tartan = mode >= 0.8
    warp_band = cell_values(p, "fabric/bx", torch.div(ix, band, rounding_mode="floor"), ix * 0)[0] < 0.35
    weft_band = cell_values(p, "fabric/by", torch.div(iy, band, rounding_mode="floor"), iy * 0)[0] < 0.35
    warp_map = torch.where(tartan & warp_band, other, warp_col)
    weft_map = torch.where(tartan, torch.where(weft_band, other, warp_col), weft_col)
    thread = cell_values(p, "fabric/t", torch.where(warp_top, ix, -1 - iy), ix * 0)[0]
    slub = noise(p, "fabric/slub", p.x, p.y, 20, mode="bilinear")
    albedo = (torch.where(warp_top, warp_map, weft_map) * (0.55 + 0.45 * prof) * (1 + 0.06 * twist)
              * (1 + 0.16 * (thread - 0.5)) * (1 + 0.2 * (slub - 0.5)))
    height = (prof + 0.05 * twist) * (0.25 / n) * p.u("fabric/depth", 0.6, 1.2)
    satin = p.bern("fabric/satin", 0.2)
    rough = torch.where(satin, p.u("fabric/sr", 0.3, 0.45), p.u("fabric/rr", 0.7, 1.0)) + 0.1 * (1 - prof)
    return dielectric(albedo, height, rough, 0.035)


def metal(p: Patch) -> Layers:
    """Brushed and scratched metals (steel, aluminium, copper, gold, brass, silver, ...):
    coloured specular albedo, dark diffuse, anisotropic brush streaks, straight scratches,
    patches of tarnish that raise roughness and the diffuse part."""
    f0 = p.r.choice("metal/kind", METAL_F0) * torch.exp(0.03 * p.r.normal("metal/hue", 3))
    f0 = col(f0.clamp(0.05, 1.0))
    xr, yr = p.rotated(p.angle("metal/angle"))
    brush_amt = p.u("metal/brush", 0.2, 1.0)
    brush = noise(p, "metal/brush", xr, yr, 1.6, 40, mode="bilinear") + 0.5 * noise(p, "metal/brush2", xr, yr, 2, 20)

    # straight scratches: distance to K random segments, at most a pixel-coverage strength
    k = 8
    r = p.r
    cx, cy = col(r.uniform("metal/sx", k, -0.55, 0.55)), col(r.uniform("metal/sy", k, -0.55, 0.55))
    ang = col(r.uniform("metal/sa", k, 0, math.pi))
    half = col(r.uniform("metal/sl", k, 0.05, 0.45))
    count = col(r.uniform("metal/sn", None, -2.0, float(k)))
    active = torch.arange(k, device=p.x.device).view(1, k, 1, 1) < count
    width = col(r.uniform("metal/sw", k, 0.001, 0.004))
    dx, dy = p.x - cx, p.y - cy
    dirx, diry = torch.cos(ang), torch.sin(ang)
    t = (dx * dirx + dy * diry).clamp(-half, half)
    dist = torch.sqrt((dx - t * dirx) ** 2 + (dy - t * diry) ** 2)
    soft = torch.maximum(width, torch.full_like(width, 0.7 * p.px))
    scratch = ((1 - smoothstep(0.0, soft, dist)) * (width / soft) * active).amax(1, keepdim=True)

    tarnish = smoothstep(0.45, 1.0, fbm(p, "metal/tarnish", p.x, p.y, 4, 4)) * p.u("metal/tarnish_amt", 0.0, 0.4)
    diffuse = f0 * p.u("metal/diffuse", 0.12, 0.3)
    dull = diffuse.mean(1, keepdim=True) * 0.6  # tarnish: greyer, darker, rougher
    albedo = mix(diffuse, dull, tarnish) * (1 + 0.2 * scratch)
    f0_map = f0 * (1 - 0.3 * tarnish) * (1 + 0.1 * scratch)
    height = 0.0012 * brush_amt * brush - 0.002 * scratch
    rough = p.u("metal/rough", 0.22, 0.5) + 0.12 * brush_amt * (brush - 0.75) + 0.15 * tarnish + 0.2 * scratch
    return Layers(albedo, height, rough, f0_map)


# --------------------------------------------------------------------------------------
# pattern families withheld for the shift split
# --------------------------------------------------------------------------------------
def turbulence(p: Patch, key: str, freq: int, octaves: int) -> Tensor:
    """Perlin's turbulence, sum of |2 n - 1| over octaves: creased, vein-like, in [0, 1]."""
    total, norm = 0.0, 0.0
    for o in range(octaves):
        total = total + (2 * noise(p, f"{key}/{o}", p.x, p.y, freq << o) - 1).abs() / (1 << o)
        norm += 1 / (1 << o)
    return total / norm


def marble(p: Patch) -> Layers:
    """Polished marble: clouded base, broad soft veins and sharp fine veins that follow a
    turbulent flow and fade in and out."""
    xr, yr = p.rotated(p.angle("marble/angle"))
    flow = turbulence(p, "marble/turb", 2, 5)
    t1 = xr * p.u("marble/f1", 1.0, 3.0) + p.u("marble/w1", 2.0, 4.0) * flow
    t2 = yr * p.u("marble/f2", 1.0, 3.0) + p.u("marble/w2", 3.0, 6.0) * turbulence(p, "marble/turb2", 3, 3)
    fade = smoothstep(0.3, 0.7, noise(p, "marble/fade", p.x, p.y, 3))
    broad = (1 - torch.sin(math.pi * t1).abs()) ** p.u("marble/s1", 3.0, 8.0) * p.u("marble/a1", 0.3, 0.8)
    fine = (1 - torch.sin(math.pi * t2).abs()) ** p.u("marble/s2", 25.0, 60.0) * fade
    cloud = fbm(p, "marble/cloud", p.x, p.y, 3, 4)
    kind = p.r.randint("marble/kind", MARBLE.shape[0])
    jitter = torch.exp(0.05 * p.r.normal("marble/hue", 3) + 0.1 * p.r.normal("marble/val")[:, None])
    base = col(on_device(MARBLE, p.x.device)[kind] * jitter) * (1 + 0.3 * (cloud - 0.5))
    vein = col(on_device(VEIN, p.x.device)[kind] * jitter)
    albedo = mix(base, vein, (broad + fine).clamp(0, 1))
    height = 0.0006 * cloud
    rough = p.u("marble/rough", 0.1, 0.25) + 0.03 * cloud
    return dielectric(albedo, height, rough, 0.045)


def terrazzo(p: Patch) -> Layers:
    """Polished terrazzo: irregular stone chips of 2-3 colours set in a speckled matrix."""
    top = 20.0  # cells per image width, at most
    density = p.u("terrazzo/density", 9.0, top)
    f1, _, val = cells(p, "terrazzo/cells", p.x, p.y, density, top, 1.0)
    wobble = noise(p, "terrazzo/wobble", p.x, p.y, 32, mode="bilinear")
    size = (p.u("terrazzo/size", 0.2, 0.4) * (0.5 + torch.frac(val * 71.3))) / density
    chip = 1 - edge_mask(p, f1 + (wobble - 0.5) * 0.4 / density, size)
    chip = chip * (torch.frac(val * 13.7) < p.u("terrazzo/fill", 0.6, 1.0))
    colours = [p.pick(f"terrazzo/chip{i}", CHIPS) for i in range(3)]
    chip_col = torch.where(val < 0.45, colours[0], torch.where(val < 0.8, colours[1], colours[2]))
    matrix = p.pick("terrazzo/matrix", TERRAZZO) * (1 + 0.3 * (noise(p, "terrazzo/speck", p.x, p.y, 40, mode="bilinear") - 0.5))
    albedo = mix(matrix, chip_col * (1 + 0.3 * (wobble - 0.5)), chip)
    height = 0.0004 * wobble
    rough = p.u("terrazzo/rough", 0.15, 0.35) + 0.05 * chip
    return dielectric(albedo, height, rough, 0.045)


def leather(p: Patch) -> Layers:
    """Grained leather: a network of creases around small pebbled bumps, mottled dye."""
    top = 30.0  # cells per image width, at most
    density = p.u("leather/density", 14.0, top)
    f1, f2, val = cells(p, "leather/cells", p.x, p.y, density, top, 1.0)
    edge = (f2 - f1) * density  # cell units
    lod = 1 - smoothstep(0.3, 0.7, density * p.px)  # grain finer than ~2 pixels fades out
    crease = (1 - smoothstep(0.0, p.u("leather/crease", 0.1, 0.25), edge)) * lod
    bump = smoothstep(0.0, 0.5, edge).sqrt() * lod
    wrinkle = fbm(p, "leather/wrinkle", p.x, p.y, 4, 3)
    mottle = fbm(p, "leather/mottle", p.x, p.y, 3, 3)
    albedo = p.pick("leather/col", LEATHER) * (1 - 0.35 * crease) * (1 + 0.35 * (mottle - 0.5)) * (1 + 0.1 * (val - 0.5))
    height = p.u("leather/height", 0.8, 1.6) * (0.35 * bump / density) + 0.004 * wrinkle
    rough = p.u("leather/rough", 0.35, 0.7) + 0.2 * crease
    return dielectric(albedo, height, rough)


@dataclass(frozen=True)
class Family:
    name: str
    fn: Callable[[Patch], Layers]
    shift: bool = False


FAMILIES: tuple[Family, ...] = (
    Family("plaster", plaster), Family("bricks", bricks), Family("wood", wood),
    Family("stones", stones), Family("fabric", fabric), Family("metal", metal),
    Family("marble", marble, True), Family("terrazzo", terrazzo, True), Family("leather", leather, True),
)
TRAIN_FAMILIES = tuple(f.name for f in FAMILIES if not f.shift)
SHIFT_FAMILIES = tuple(f.name for f in FAMILIES if f.shift)


# --------------------------------------------------------------------------------------
# lights and shading
# --------------------------------------------------------------------------------------
def flash_light(r: Rand, camera: Tensor) -> tuple[Tensor, Tensor]:
    """One point light a little off the camera: positions (B, 1, 1, 3), colours (B, 1, 3)."""
    rad = r.uniform("light/offset", None, 0.02, 0.25)
    ang = r.uniform("light/angle", None, 0.0, 2 * math.pi)
    offset = torch.stack([rad * torch.cos(ang), rad * torch.sin(ang), r.uniform("light/dz", None, -0.05, 0.1)], -1)
    colour = kelvin_to_rgb(r.uniform("light/kelvin", None, 3500.0, 6500.0))
    return (camera + offset)[:, None, None], colour[:, None]


def hsv_colour(hue: Tensor, sat: Tensor) -> Tensor:
    """Fully bright colour of ``hue`` (0..1) and ``sat`` -> linear RGB (B, 3), max 1."""
    k = torch.remainder(on_device((5.0, 3.0, 1.0), hue.device) + 6 * hue[:, None], 6.0)
    rgb = 1 - sat[:, None] * torch.minimum(k, 4 - k).clamp(0, 1)
    return batch_invariant(srgb_decode, rgb)  # a pow of (B, 3): see batch_invariant


def shift_lights(r: Rand, camera: Tensor, n_lights: int = 3, samples: int = 6) -> tuple[Tensor, Tensor]:
    """1..3 lights anywhere above the patch (elevation 25..85 deg), blackbody or coloured
    gels, each an area light of radius up to 0.3 sampled by ``samples`` jittered points:
    positions (B, lights, samples, 3), colours (B, lights, 3)."""
    b = camera.shape[0]
    count = 1 + r.randint("shift/count", n_lights)
    az = r.uniform("shift/az", n_lights, 0.0, 2 * math.pi)
    el = r.uniform("shift/el", n_lights, math.radians(25), math.radians(85))
    dist = r.uniform("shift/dist", n_lights, 0.8, 2.5)
    centre = torch.stack([dist * torch.cos(el) * torch.cos(az), dist * torch.cos(el) * torch.sin(az), dist * torch.sin(el)], -1)
    flash = r.bernoulli("shift/flash", 0.4)  # sometimes the first light is still the flash
    centre[:, 0] = torch.where(flash[:, None], camera + on_device((0.1, -0.1, 0.0), camera.device), centre[:, 0])
    kelvin = kelvin_to_rgb(r.uniform("shift/kelvin", n_lights, 2500.0, 9000.0).flatten()).view(b, n_lights, 3)
    gel = hsv_colour(r.uniform("shift/hue", n_lights).flatten(), r.uniform("shift/sat", n_lights, 0.1, 0.45).flatten()).view(b, n_lights, 3)
    colour = torch.where(r.bernoulli("shift/gel", 0.5, n_lights)[..., None], gel, kelvin)
    power = r.uniform("shift/power", n_lights, 0.3, 1.0) * (dist ** 2)  # comparable irradiance at any distance
    power = power * (torch.arange(n_lights, device=camera.device)[None] < count[:, None])
    colour = colour * (power / samples)[..., None]
    radius = r.uniform("shift/radius", n_lights, 0.0, 0.3)
    jitter = (r.uniform("shift/jitter", n_lights * samples * 3) - 0.5).view(b, n_lights, samples, 3) * 2
    pos = centre[:, :, None] + jitter * radius[..., None, None]
    pos[..., 2] = pos[..., 2].clamp_min(0.15)
    return pos, colour


def shade(x: Tensor, y: Tensor, normal: tuple[Tensor, Tensor, Tensor], layers: Layers, camera: Tensor,
          light_pos: Tensor, light_rgb: Tensor) -> tuple[Tensor, Tensor]:
    """Diffuse irradiance and GGX specular radiance (B, 3, H, W) on the plane z = 0 at x, y
    (B, 1, H, W), seen from ``camera`` (B, 3), of lights made of point samples: positions
    (B, K, S, 3), colours (B, K, 3) shared by a light's S samples.

    Per sample only scalars are summed; Schlick's Fresnel is linear in F0, so
    sum F lobe = F0 sum lobe + (1 - F0) sum lobe (1 - V.H)^5, and colour enters once per light.
    A light's S point samples are evaluated together ((B, S, H, W) fields: one kernel per
    step instead of one per point sample; all K * S at once were 40% slower on the CPU, out
    of cache); the sums then run point by point in the same order as a loop would, so the
    result does not depend on that grouping."""
    b, k, s = light_pos.shape[:3]
    nx, ny, nz = normal
    vx, vy, vz = col(camera[:, 0]) - x, col(camera[:, 1]) - y, col(camera[:, 2]).expand_as(x)
    inv = torch.rsqrt(vx * vx + vy * vy + vz * vz)
    vx, vy, vz = vx * inv, vy * inv, vz * inv
    nv = (nx * vx + ny * vy + nz * vz).clamp_min(1e-3)
    alpha = layers.rough.clamp(0.03, 1.0) ** 2
    a2 = alpha * alpha
    g1v = 2 * nv / (nv + torch.sqrt(a2 + (1 - a2) * nv * nv))

    diffuse = spec = 0.0
    for light in range(k):  # a light's S point samples together: (B, S, H, W) fields
        p = light_pos[:, light].reshape(b, s, 3, 1, 1)
        lx, ly, lz = p[:, :, 0] - x, p[:, :, 1] - y, p[:, :, 2].expand(-1, -1, *x.shape[2:])
        inv2 = 1.0 / (lx * lx + ly * ly + lz * lz)
        inv = torch.sqrt(inv2)
        lx, ly, lz = lx * inv, ly * inv, lz * inv
        nl = (nx * lx + ny * ly + nz * lz).clamp_min(0.0)
        hx, hy, hz = lx + vx, ly + vy, lz + vz
        hinv = torch.rsqrt(hx * hx + hy * hy + hz * hz)
        nh = ((nx * hx + ny * hy + nz * hz) * hinv).clamp_min(0.0)
        vh = ((vx * hx + vy * hy + vz * hz) * hinv).clamp(0.0, 1.0)
        d = a2 / (math.pi * (nh * nh * (a2 - 1) + 1) ** 2)
        g1l = 2 * nl / (nl + torch.sqrt(a2 + (1 - a2) * nl * nl))
        # pi * F D G / (4 NL NV) * NL * E  ==  pi * F D G1v G1l / (4 NV) * E   (E = I / d^2)
        lobe = (math.pi / 4) * d * g1l * g1v / nv * inv2
        irradiance, grazing = nl * inv2, lobe * (1 - vh) ** 5
        irr = lobe_sum = grazing_sum = 0.0
        for i in range(s):
            irr = irr + irradiance[:, i:i + 1]
            lobe_sum = lobe_sum + lobe[:, i:i + 1]
            grazing_sum = grazing_sum + grazing[:, i:i + 1]
        rgb = col(light_rgb[:, light])
        diffuse = diffuse + irr * rgb
        spec = spec + (layers.f0 * (lobe_sum - grazing_sum) + grazing_sum) * rgb
    return diffuse, spec


# --------------------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------------------
SUPERSAMPLE_TO = 64  # smaller renders are area-averaged from this resolution
CPU_PIECE_PIXELS = 1 << 19  # on the host CPU, render calls go in pieces of this many pixels (128 images at 64 px)


class MaterialsDataset(ProceduralDataset):
    """Flat material swatches under a flash (FlashMaterials): albedo, shading, specular."""

    name = "materials"
    domain = "materials"
    description = ("flat material patches (plaster, bricks/tiles, wood, stones, fabric, metal) lit by a flash "
                   "near the camera; GGX specular, normal-map shading, inverse-square falloff")
    shift_description = ("sim-to-real shift of materials: unseen families (marble, terrazzo, leather), 1-3 "
                         "coloured/area lights anywhere above, white-balance error, sensor noise, JPEG; "
                         "ground truth = clean linear layers")
    colour_space = "display images: Reinhard s=4 (shift: + camera WB, noise, JPEG); components: linear"

    def __init__(self, resolution: int = 64, size: int | None = None, seed: int = 0, forward_model=None,
                 shift: bool = False, render_batch: int = 32):
        super().__init__(resolution, size, seed, forward_model, shift, render_batch)
        if self.shift:
            self.name = "materials-shift"
            self.description = self.shift_description

    # -- families ------------------------------------------------------------------------
    def family_index(self, seeds: Tensor, base: Tensor | None = None) -> Tensor:
        """Index into FAMILIES per seed (B,): training families, or only withheld ones."""
        pool = [i for i, f in enumerate(FAMILIES) if f.shift == self.shift]  # consecutive: withheld ones come last
        return pool[0] + Rand(seeds, base=base).randint("family", len(pool))

    def families(self, seeds: Tensor) -> list[str]:
        """Pattern family name per seed (cheap: nothing is rendered)."""
        return [FAMILIES[i].name for i in self.family_index(seeds).tolist()]

    def sample_meta(self, index: int) -> dict:
        meta = super().sample_meta(index)
        meta["family"] = self.families(self.test_seeds([index]))[0]
        return meta

    # -- rendering -----------------------------------------------------------------------
    def render(self, seeds: Tensor, resolution: int, device: torch.device | str) -> dict[str, Tensor]:
        """Linear layers (and, for the shift split, the degraded display image).

        Samples are rendered grouped by family, in one call per family: which sample has
        which family is decided where the seeds are made, on the host (seeds come from a
        CPU generator or a test index), so grouping needs no host sync; seeds already on
        a GPU cost one copy back. The grouped batch is put back in the callers' order at
        the end (one gather per layer).

        Renders below 64 px are rendered at 64 px and area-averaged: bricks' mortar, weave
        and grain are a pixel or two wide at 64 px and would alias into a different-looking
        swatch at 16 or 32 px (costs nothing that matters: a 64 px batch is cheap).

        On the host CPU large calls render in pieces of 128 images at 64 px
        (:func:`procedural.in_host_pieces`): 2.3 times faster at 4,096 images per call."""
        work = max(resolution, SUPERSAMPLE_TO)
        return in_host_pieces(lambda s: self._render(s, resolution, device), seeds, device,
                              max(1, CPU_PIECE_PIXELS // work ** 2))

    def _render(self, seeds: Tensor, resolution: int, device: torch.device | str) -> dict[str, Tensor]:
        host = seeds.to(torch.int64).cpu()
        base = _seed_base(host)
        family = self.family_index(host, base)
        order = torch.argsort(family, stable=True)
        counts = torch.bincount(family, minlength=len(FAMILIES)).tolist()
        # one copy to the device: grouped seeds, their seed_hash base, and where each goes back
        packed = to_device(torch.stack([host[order], base[order], torch.argsort(order)]), device)
        grouped, base, back = packed[0], packed[1], packed[2]
        work = max(resolution, SUPERSAMPLE_TO)
        out = self.render_linear(grouped, work, device, counts, base)
        if work != resolution:
            out = {k: F.avg_pool2d(v, work // resolution) for k, v in out.items()}
        if self.shift:
            clean = self.forward_model.render(out["albedo"], out["shading"], out["specular"])
            out["image"] = apply_camera_shift(clean, grouped, "camera", base)
        return {k: v.index_select(0, back) for k, v in out.items()}

    def render_linear(self, seeds: Tensor, resolution: int, device: torch.device | str, counts: list[int],
                      base: Tensor) -> dict[str, Tensor]:
        """Albedo, shading and specular (B, 3, H, W), linear, at exactly ``resolution``, of
        ``seeds`` grouped by family: ``counts[f]`` samples of FAMILIES[f] in a row.
        ``base``: :func:`procedural._seed_base` of the seeds."""
        b = seeds.shape[0]
        u, v = pixel_grid(resolution, b, device)
        x, y = (u - 0.5)[:, None], (v - 0.5)[:, None]
        parts, start = [], 0
        for f, n in enumerate(counts):
            if n:
                rows = slice(start, start + n)
                r = Rand(seeds[rows], PLANS[FAMILIES[f].name], base[rows])
                layers = FAMILIES[f].fn(Patch(r, x[:n], y[:n], 1.0 / resolution))
                parts.append([layers.albedo.clamp(0.002, 0.95).expand(n, 3, -1, -1), layers.height.expand(n, 1, -1, -1),
                              layers.rough.expand(n, 1, -1, -1), layers.f0.clamp(0.0, 1.0).expand(n, 3, -1, -1)])
                start += n
        albedo, height, rough, f0 = (torch.cat(maps) if len(parts) > 1 else maps[0] for maps in zip(*parts))
        layers = Layers(albedo, height, rough.clamp(0.05, 1.0), f0)

        r = Rand(seeds, PLANS["scene-shift" if self.shift else "scene"], base)
        dist = r.uniform("camera/dist", None, 1.0, 2.4)
        camera = torch.stack([r.uniform("camera/x", None, -0.04, 0.04), r.uniform("camera/y", None, -0.04, 0.04), dist], -1)
        pos, rgb = shift_lights(r, camera) if self.shift else flash_light(r, camera)
        diffuse, specular = shade(x, y, height_to_normals(height).split(1, dim=1), layers, camera, pos, rgb)
        # ambient fill, relative to a flash's irradiance at the camera's distance
        amb_colour = kelvin_to_rgb(r.uniform("ambient/kelvin", None, 4000.0, 10000.0))
        if self.shift:
            amb_colour = amb_colour * hsv_colour(r.uniform("ambient/hue"), r.uniform("ambient/sat", None, 0.0, 0.3))
        ambient = r.uniform("ambient/level", None, 0.02, 0.15)[:, None] * amb_colour / dist[:, None] ** 2
        shading = diffuse + col(ambient)

        # meter: map the median luminance of the raw composite to a random mid grey
        raw = albedo * shading + specular
        lum = (raw * on_device((0.2126, 0.7152, 0.0722), raw.device).view(1, 3, 1, 1)).sum(1)
        median = lum.flatten(1).median(dim=1).values.clamp_min(1e-6)
        exposure = col(r.uniform("exposure", None, 0.12, 0.3) / median)
        return {"albedo": albedo, "shading": shading * exposure, "specular": specular * exposure}


# what each family and the scene (camera, lights, exposure) draw, learnt on their first render
PLANS = {name: DrawPlan(name) for name in (*(f.name for f in FAMILIES), "scene", "scene-shift")}


register_dataset("materials", MaterialsDataset, description=MaterialsDataset.description)
register_dataset("materials-shift", MaterialsDataset, description=MaterialsDataset.shift_description, shift=True)
