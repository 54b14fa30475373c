"""Procedural faces: heads with exact albedo, diffuse shading and specular layers.

Why: the JoIN authors evaluate on rendered faces (Lumos), which are not public. This
generator gives the same kind of data (a frontal-ish head under a dominant light, with
skin sheen) with exact ground truth, at any resolution, in pure torch so that training
streams render on the GPU as well as the CPU.

How a face is built (everything in continuous image coordinates, so 128 px is a sharper
64 px, and every random choice hashed from the sample's seed):

* Geometry. The head is an ellipsoid that narrows towards the chin (the jaw), turned by a
  small yaw / pitch / roll and ray-cast orthographically. Features live in head
  coordinates (s, t) = (X / a, Y / b) on the surface, so they move coherently with the
  pose. Nose, brow ridge, eye sockets, cheekbones, lips and chin are Gaussian bumps whose
  analytic slopes bend the ellipsoid normal (no finite differences, so normals do not
  depend on the pixel grid); eyes get eyeball normals. Ears, neck, a hair shell (a second,
  larger ellipsoid) and a long-hair curtain are simple analytic shapes. All normals stay
  in the head frame; the lights are rotated into it instead (cheaper, same result).
* Materials are composited back to front (wall, hair curtain, neck, shirt, ears, head,
  hair) into per-pixel albedo, normal, gloss, occlusion, ... with anti-aliased coverage,
  then shaded once: a directional light with a colour temperature, wrapped Lambert (a
  soft terminator, as skin scatters light), hemispherical ambient with soft occlusion,
  Blinn-Phong specular whose strength follows a T-zone oiliness map, Kajiya-Kay sheen on
  hair, glints on the eyes. Exposure follows the skin tone, as a photographer's would, so
  the Reinhard (s=4) image is well exposed for very light and very dark skin alike.
* Variety: skin from very light to very dark with undertones, blotches, freckles and
  flush; seven iris colours; natural hair colours (incl. grey); hair from bald and
  receding through short, fringe and long to voluminous; brow, eye, nose and lip shapes;
  wall colours, gradients and textures; shirt colours and collars.

``mask`` is 1 on the head (skin, hair, ears) and neck, 0 on the wall and the shirt.

Shift split (``faces-shift``): the same identities as ``faces`` (same test seeds) plus
what ``faces`` never shows: glasses, beards or stubble, face paint, unusual hair colours
(each shift face has at least one); an area-like key light (four jittered directions)
plus coloured rim and fill lights; and camera degradations of the display image
(:func:`datasets.shift.apply_camera_shift`). The ground-truth layers stay exact.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from joinbench.forward import srgb_decode
from joinbench.registry import register_dataset

from .base import ProceduralDataset
from .procedural import DrawPlan, Rand, in_host_pieces, kelvin_to_rgb, on_device, pixel_grid, sample_at, to_device

WITHHELD = ("glasses", "beard", "face_paint", "unusual_hair")
CPU_CHUNK_PIXELS = 1 << 17
WRAP = 0.25  # wrapped Lambert max(0, (n.l + w) / (1 + w)): skin and hair scatter light past the terminator
# head size (half width a, image widths), height / width, depth / width and the largest pose angles (degrees)
HEAD_A, HEAD_ASPECT, HEAD_DEPTH = (0.22, 0.27), (1.25, 1.42), (1.0, 1.2)
YAW, PITCH, ROLL = 12.0, 7.0, 6.0


def _srgb(rows: list[tuple[int, int, int]]) -> Tensor:
    """8-bit sRGB swatches -> linear RGB table (K, 3)."""
    return srgb_decode(torch.tensor(rows, dtype=torch.float32) / 255.0)


# Skin tones along one melanin axis, very light to very dark (sRGB swatches).
SKIN = _srgb([(245, 218, 200), (228, 188, 160), (205, 155, 118), (170, 116, 80),
              (128, 82, 55), (88, 55, 38), (58, 38, 28)])
IRIS = _srgb([(55, 32, 18), (105, 62, 30), (125, 100, 50), (85, 115, 65),
              (70, 115, 170), (115, 135, 150), (150, 105, 40)])
HAIR = _srgb([(22, 18, 16), (50, 35, 26), (90, 60, 38), (120, 55, 28), (170, 80, 38),
              (150, 115, 75), (210, 180, 125)])
GREY_HAIR = _srgb([(150, 146, 140), (215, 210, 205)])
UNUSUAL_HAIR = _srgb([(235, 80, 165), (40, 90, 220), (40, 185, 90), (130, 50, 200),
                      (20, 175, 180), (225, 25, 25), (190, 170, 240)])
PAINT = _srgb([(30, 70, 210), (30, 160, 60), (235, 235, 230), (200, 20, 20),
               (240, 200, 20), (20, 20, 25)])
FRAMES = _srgb([(15, 15, 18), (90, 50, 25), (150, 150, 160), (160, 30, 40), (25, 50, 120)])

# Hair style presets: hairline t, temple recession, length t, volume, side width, has hair.
HAIR_STYLES = torch.tensor([
    [-0.95, 0.2, -0.6, 0.02, 0.0, 0.0],   # bald
    [-0.75, 0.5, -0.05, 0.04, 0.12, 1.0],  # receding
    [-0.5, 0.35, -0.05, 0.05, 0.12, 1.0],  # short
    [-0.22, 0.12, 0.2, 0.07, 0.14, 1.0],   # fringe / bob
    [-0.48, 0.3, 1.55, 0.07, 0.2, 1.0],    # long
    [-0.5, 0.25, 0.55, 0.28, 0.2, 1.0],    # voluminous
])

# Gaussian bumps of the face: (s0, t0, sigma_s, sigma_t, height / a, mirrored, anchor, scale).
# t0 is relative to the anchor (a per-face position) when one is named.
BUMPS = (
    (0.0, -0.22, 0.075, 0.2, 0.09, False, "nose_t", "nose"),     # nose bridge
    (0.0, 0.0, 0.085, 0.075, 0.1, False, "nose_t", "nose"),       # nose tip
    (0.1, 0.03, 0.055, 0.045, 0.045, True, "nose_t", "nose"),     # alae
    (0.3, -0.14, 0.2, 0.06, 0.03, True, "ey", "brow_ridge"),      # brow ridge
    (0.36, 0.0, 0.16, 0.085, -0.055, True, "ey", None),           # eye sockets
    (0.5, 0.25, 0.17, 0.12, 0.035, True, None, "cheek"),          # cheekbones
    (0.0, -0.035, 0.2, 0.035, 0.025, False, "mouth_t", "lip_lo"), # upper lip
    (0.0, 0.04, 0.16, 0.04, 0.03, False, "mouth_t", "lip_lo"),    # lower lip
    (0.0, 0.13, 0.13, 0.03, -0.012, False, "mouth_t", None),      # groove under the lip
    (0.0, 0.88, 0.18, 0.09, 0.03, False, None, None),             # chin
)


def _col(t: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1) for broadcasting against (B, H, W) fields."""
    return t.view(-1, 1, 1)


def _rgb(t: Tensor) -> Tensor:
    """(B, 3) -> (B, 3, 1, 1)."""
    return t.view(-1, 3, 1, 1)


def _cov(dist: Tensor, res: int) -> Tensor:
    """Anti-aliased coverage from a signed distance in image units (> 0 inside); in place."""
    return dist.mul_(res).add_(0.5).clamp_(0.0, 1.0)


def _step(e0: float, e1: float, x: Tensor) -> Tensor:
    """smoothstep(e0, e1, x) on a fresh tensor."""
    t = ((x - e0) * (1.0 / (e1 - e0))).clamp_(0.0, 1.0)
    return t * t * (3 - 2 * t)


def _gauss(s: Tensor, t: Tensor, s0, t0, ss: float, st: float) -> Tensor:
    """exp(-((s - s0) / ss)^2 - ((t - t0) / st)^2)."""
    ds = (s - s0).mul_(1.0 / ss)
    dt = (t - t0).mul_(1.0 / st)
    return ds.mul_(ds).addcmul_(dt, dt).clamp_(max=20.0).neg_().exp_()  # clamp: no denormals (slow)


def _bell(x: Tensor, x0, sx: float) -> Tensor:
    """exp(-((x - x0) / sx)^2) on a fresh tensor."""
    dx = (x - x0).mul_(1.0 / sx)
    return dx.mul_(dx).clamp_(max=20.0).neg_().exp_()


def _hsv(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """HSV in [0, 1] -> display RGB (B, 3)."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], -1)
    return v[:, None] * (1 - s[:, None] * torch.minimum(k, 4 - k).clamp(0, 1))


def _rotation(yaw: Tensor, pitch: Tensor, roll: Tensor) -> Tensor:
    """Head-to-camera rotation Rz(roll) Ry(yaw) Rx(pitch): (B, 3, 3); x right, y down, z to camera."""
    o, z = torch.ones_like(yaw), torch.zeros_like(yaw)
    cy, sy, cp, sp, cr, sr = yaw.cos(), yaw.sin(), pitch.cos(), pitch.sin(), roll.cos(), roll.sin()
    rx = torch.stack([o, z, z, z, cp, -sp, z, sp, cp], -1).view(-1, 3, 3)
    ry = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cr, -sr, z, sr, cr, z, z, z, o], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True)


# -- per-sample parameters --------------------------------------------------------------

class _Draws:
    """Named per-sample uniforms from one hashed vector: one hash call instead of one per
    name. Column order is fixed by ``names`` (append new names at the end, so existing
    samples keep their values). The range each name is drawn in is learnt on the first
    call (as :class:`procedural.DrawPlan` learns draws), so later calls scale every name
    in three kernels instead of two per name, in float64 as one by one: the same numbers."""

    _ranges: dict[str, dict[tuple[str, float, float], int]] = {}  # key -> (name, low, high) -> position
    _tables: dict[tuple, tuple[Tensor, Tensor, Tensor, dict]] = {}  # (key, device, size) -> cols, low, span, positions

    def __init__(self, r: Rand, key: str, names: str):
        names = names.split()
        self.u = r.uniform(key, len(names)).double()
        self.col = {n: i for i, n in enumerate(names)}
        self.learnt = self._ranges.setdefault(key, {})
        self.at: dict[tuple[str, float, float], int] = {}
        if self.learnt:
            cols, low, span, self.at = self._table(key)
            self.scaled = low + span * self.u.index_select(1, cols)

    def _table(self, key: str) -> tuple[Tensor, Tensor, Tensor, dict]:
        tag = (key, str(self.u.device), len(self.learnt))
        if tag not in self._tables:
            spec = list(self.learnt)
            f64 = lambda xs: torch.tensor(xs, dtype=torch.float64).to(self.u.device)
            self._tables[tag] = (torch.tensor([self.col[n] for n, _, _ in spec]).to(self.u.device),
                                 f64([lo for _, lo, _ in spec]), f64([hi - lo for _, lo, hi in spec]),
                                 {d: i for i, d in enumerate(spec)})
        return self._tables[tag]

    def __call__(self, name: str, low: float = 0.0, high: float = 1.0) -> Tensor:
        at = self.at.get((name, low, high))
        if at is not None:
            return self.scaled[:, at]
        self.learnt.setdefault((name, low, high), len(self.learnt))
        return low + (high - low) * self.u[:, self.col[name]]

    def index(self, name: str, n: int) -> Tensor:
        return (self(name) * n).long().clamp_max(n - 1)

    def pick(self, name: str, table: Tensor) -> Tensor:
        table = on_device(table, self.u.device)
        return table[self.index(name, table.shape[0])]


_FACE_DRAWS = """cx cy a aspect depth jaw yaw pitch roll ex ey ew eh tilt gaze_x gaze_y iris pupil
iris_col iris_bright brow_y brow_arch brow_th brow_dens brow_col nose nose_t mouth_t mouth_w lip_up
lip_lo smile brow_ridge cheek melanin undertone blotch flush freckled freckles oil skin_gloss lip_tint
style hl_j len_j vol_j side_j grey hair_col grey_col hair_bright hair_ks wall_h wall_s wall_v wall_gx
wall_gy wall_tex shirt_h shirt_s shirt_v collar light_x light_y light_z kelvin amb_kelvin amb exposure"""
_SHIFT_DRAWS = """glasses beard face_paint unusual_hair forced hair frame lens full_beard paint paint_style
area0x area0y area1x area1y area2x area2y area3x area3y rim_side rim_y rim_h rim_s rim_i fill_side
fill_y fill_h fill_s fill_i"""


def face_params(seeds: Tensor, shift: bool = False, rand: Rand | None = None) -> dict[str, Tensor]:
    """Every random choice of a face, as (B,) / (B, 3) / (B, 3, 3) tensors keyed by name.

    ``faces`` and ``faces-shift`` share these draws (same identities); the withheld
    attributes are zero unless ``shift``, and their draws come from a separate stream.
    ``rand``: the seeds' :class:`Rand`, when the caller has one.
    """
    rand = Rand(seeds, PLANS["shift" if shift else "faces"]) if rand is None else rand
    r = _Draws(rand, "faces/params", _FACE_DRAWS)
    deg = math.pi / 180
    p: dict[str, Tensor] = {}
    # framing, head shape, pose
    p["cx"], p["cy"] = r("cx", 0.46, 0.54), r("cy", 0.42, 0.47)
    p["a"] = r("a", *HEAD_A)
    p["b"] = p["a"] * r("aspect", *HEAD_ASPECT)
    p["c"] = p["a"] * r("depth", *HEAD_DEPTH)
    p["jaw"] = r("jaw", 0.12, 0.32)
    p["R"] = _rotation(r("yaw", -YAW, YAW) * deg, r("pitch", -PITCH, PITCH) * deg, r("roll", -ROLL, ROLL) * deg)
    # features (head units: s = X / a, t = Y / b)
    p["ex"], p["ey"] = r("ex", 0.37, 0.44), r("ey", -0.02, 0.06)
    p["ew"], p["eh"] = r("ew", 0.18, 0.22), r("eh", 0.035, 0.058)
    p["tilt"] = r("tilt", -0.015, 0.025)
    p["gaze_x"], p["gaze_y"] = r("gaze_x", -0.04, 0.04), r("gaze_y", -0.02, 0.02)
    p["iris_r"], p["pupil"] = r("iris", 0.085, 0.1), r("pupil", 0.3, 0.48)
    p["iris_col"] = r.pick("iris_col", IRIS) * r("iris_bright", 0.75, 1.2)[:, None]
    p["brow_y"], p["brow_arch"] = r("brow_y", 0.16, 0.21), r("brow_arch", 0.0, 0.05)
    p["brow_th"], p["brow_dens"] = r("brow_th", 0.018, 0.035), r("brow_dens", 0.55, 0.95)
    p["nose"], p["nose_t"] = r("nose", 0.75, 1.3), r("nose_t", 0.3, 0.38)
    p["mouth_t"], p["mouth_w"] = r("mouth_t", 0.55, 0.62), r("mouth_w", 0.24, 0.32)
    p["lip_up"], p["lip_lo"] = r("lip_up", 0.035, 0.06), r("lip_lo", 0.7, 1.3)
    p["smile"] = r("smile", -0.01, 0.04)
    p["brow_ridge"], p["cheek"] = r("brow_ridge", 0.5, 1.5), r("cheek", 0.5, 1.5)
    # skin
    mel, under = r("melanin") ** 1.3, r("undertone", -1.0, 1.0)  # ** 1.3: a few more light tones
    f = mel * (SKIN.shape[0] - 1)
    i = f.long().clamp_max(SKIN.shape[0] - 2)
    w = (f - i)[:, None]
    table = on_device(SKIN, seeds.device)
    tint = 1 + torch.stack([0.05 * under, 0 * under, -0.08 * under], -1)  # warm / cool undertone
    p["skin"] = (table[i] * (1 - w) + table[i + 1] * w) * tint
    p["blotch"], p["flush"] = r("blotch", 0.05, 0.35), r("flush", 0.0, 0.35)
    p["freckles"] = (r("freckled") < 0.6 - mel).float() * r("freckles", 0.4, 1.0)
    p["oil"], p["skin_gloss"] = r("oil", 0.04, 0.12), r("skin_gloss", 12.0, 40.0)
    lip = on_device((0.9, 0.5, 0.52), seeds.device)
    p["lip_col"] = p["skin"] ** 1.08 * lip * r("lip_tint", 0.6, 1.0)[:, None]
    # hair: a style preset, jittered
    lut = on_device(HAIR_STYLES, seeds.device)[r.index("style", HAIR_STYLES.shape[0])]
    p["hairline"] = lut[:, 0] + r("hl_j", -0.06, 0.06)
    p["temple"] = lut[:, 1]
    p["hair_len"] = lut[:, 2] + r("len_j", -0.15, 0.15) * (lut[:, 2] > 0.3)
    p["hair_vol"] = lut[:, 3] * r("vol_j", 0.8, 1.2)
    p["hair_side"] = lut[:, 4] * r("side_j", 0.8, 1.3)
    p["has_hair"] = lut[:, 5]
    natural = r.pick("hair_col", HAIR) * r("hair_bright", 0.8, 1.15)[:, None]
    p["hair_col"] = torch.where((r("grey") < 0.12)[:, None], r.pick("grey_col", GREY_HAIR), natural)
    p["brow_col"] = natural * 0.7  # brows keep the natural colour (grey or dyed hair too)
    p["hair_ks"] = r("hair_ks", 0.015, 0.05)
    # wall and shirt
    p["wall"] = srgb_decode(_hsv(r("wall_h"), r("wall_s", 0.05, 0.6), r("wall_v", 0.35, 0.95)))
    p["wall_gx"], p["wall_gy"] = r("wall_gx", -0.6, 0.6), r("wall_gy", -0.6, 0.6)
    p["wall_tex"] = r("wall_tex", 0.0, 0.5)
    p["shirt"] = srgb_decode(_hsv(r("shirt_h"), r("shirt_s", 0.0, 0.8), r("shirt_v", 0.1, 0.9)))
    p["collar"] = r("collar", 0.0, 0.12)
    # light: mostly frontal and from above, warm to cool; exposure follows the skin
    p["light_dir"] = _unit(torch.stack([r("light_x", -0.7, 0.7), r("light_y", -0.8, 0.15), r("light_z", 0.7, 1.2)], -1))
    p["light_col"] = kelvin_to_rgb(r("kelvin", 3300.0, 7500.0))
    p["amb_col"] = kelvin_to_rgb(r("amb_kelvin", 4500.0, 10000.0))
    p["amb"] = r("amb", 0.12, 0.35)
    lum = 0.2126 * p["skin"][:, 0] + 0.7152 * p["skin"][:, 1] + 0.0722 * p["skin"][:, 2]
    p["exposure"] = (0.32 / lum).clamp(0.9, 20.0) ** 0.7 * r("exposure", 0.6, 0.9)
    for name in WITHHELD:
        p[name] = torch.zeros_like(mel)
    if shift:
        _shift_params(rand, p)
    # Parameters are computed in float64 and rounded: float32 transcendentals on (B,)
    # tensors differ in the last bit between vectorised and scalar code paths, which
    # depend on the batch size; rounded float64 results do not.
    p["lights"] = [(dl.float(), rad.float()) for dl, rad in p.get("lights", [])]
    return {k: v.float() if isinstance(v, Tensor) and v.is_floating_point() else v for k, v in p.items()}


def _shift_params(rand: Rand, p: dict[str, Tensor]) -> None:
    """Withheld attributes (at least one per face) and the multi-light rig of the shift split."""
    r = _Draws(rand, "faces/shift", _SHIFT_DRAWS)
    flags = torch.stack([r(n) < q for n, q in zip(WITHHELD, (0.45, 0.45, 0.3, 0.35), strict=True)], -1)
    forced = r.index("forced", len(WITHHELD))[:, None] == torch.arange(len(WITHHELD), device=flags.device)  # one-hot (F.one_hot syncs)
    flags = torch.where(flags.any(-1, keepdim=True), flags, forced)
    for i, name in enumerate(WITHHELD):
        p[name] = flags[:, i].float()
    p["hair_col"] = torch.where(flags[:, 3:4], r.pick("hair", UNUSUAL_HAIR), p["hair_col"])
    p["frame_col"], p["lens_r"] = r.pick("frame", FRAMES), r("lens", 0.17, 0.24)
    p["full_beard"] = (r("full_beard") < 0.5).float()
    p["paint_col"], p["paint_style"] = r.pick("paint", PAINT), r.index("paint_style", 3)
    key = p["light_col"]
    lights = [(_unit(p["light_dir"] + torch.stack([r(f"area{i}x", -0.35, 0.35), r(f"area{i}y", -0.35, 0.35),
                                                   torch.zeros_like(key[:, 0])], -1)), 0.2 * key) for i in range(4)]
    for name, z in (("rim", -0.2), ("fill", 0.6)):
        side = torch.where(r(f"{name}_side") < 0.5, -1.0, 1.0)
        d = _unit(torch.stack([side, r(f"{name}_y", -0.6, 0.3), torch.full_like(side, z)], -1))
        col = srgb_decode(_hsv(r(f"{name}_h"), r(f"{name}_s", 0.5, 1.0), torch.ones_like(side)))
        lights.append((d, col * r(f"{name}_i", 0.3, 0.7)[:, None]))
    p["lights"] = lights


def _lights(p: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
    """(camera-frame direction (B, 3), radiance (B, 3)) of every light."""
    e = p["exposure"][:, None]
    if p["lights"]:
        return [(d, rad * e) for d, rad in p["lights"]]
    return [(p["light_dir"], 0.95 * p["light_col"] * e)]


# -- compositing ------------------------------------------------------------------------

class _Canvas:
    """Per-pixel material channels, composited back to front with coverage ``alpha``.

    Why: shading is computed once, after compositing, so each layer only describes its
    material (albedo, head-frame normal, gloss, occlusion, ...) and lighting stays
    consistent across layers. Channels are (B, H, W) except albedo (B, 3, H, W).
    """

    def __init__(self, **base: Tensor):
        self.ch = base

    def over(self, alpha: Tensor, **values: Tensor | float) -> None:
        for k, v in values.items():
            dst = self.ch[k]
            if not isinstance(v, Tensor):
                v = on_device(float(v), dst.device)
            dst.lerp_(v, alpha.unsqueeze(1) if dst.dim() == 4 else alpha)

    def over_window(self, idx: Tensor, alpha: Tensor, **values: Tensor | float) -> None:
        """``over`` on a window of pixels given by flat indices ``idx`` (B, n); the values
        are shaped like the window."""
        a = alpha.reshape(idx.shape)
        for k, v in values.items():
            dst = self.ch[k]
            flat = dst.view(*dst.shape[:-2], -1)
            i = idx if dst.dim() == 3 else idx[:, None].expand(-1, dst.shape[1], -1)
            win = flat.gather(-1, i)
            if isinstance(v, Tensor):
                v = v.reshape(*v.shape[:-2], -1) if v.dim() >= 3 else v.view(-1, *[1] * (win.dim() - 1))
            else:
                v = on_device(float(v), dst.device)
            flat.scatter_(-1, i, win.lerp_(v, a if dst.dim() == 3 else a[:, None]))

    @staticmethod
    def gather(field: Tensor, idx: Tensor) -> Tensor:
        """Values of a (B, H, W) field at flat pixel indices (B, n)."""
        return field.reshape(field.shape[0], -1).gather(-1, idx)

    def __getitem__(self, k: str) -> Tensor:
        return self.ch[k]


def _ellipsoid(q: tuple[Tensor, Tensor, Tensor], d: Tensor, ia, ib, ic):
    """Orthographic ray cast of pixels q (head frame, at camera depth 0) along d (B, 3)
    into X^2 ia + Y^2 ib + Z^2 ic = 1. Returns g = 1 - rho^2 (> 0 inside the silhouette)
    and the front hit point X, Y, Z."""
    d0, d1, d2 = (_col(d[:, i]) for i in range(3))
    qa, qb, qc = q
    al = (d0 * d0) * ia + (d1 * d1) * ib + (d2 * d2) * ic
    be = qa * (d0 * ia)
    be.addcmul_(qb, d1 * ib).addcmul_(qc, d2 * ic)
    g = qa * qa * ia
    g.addcmul_(qb * qb, ib).addcmul_(qc * qc, ic).sub_(1.0).neg_().addcmul_(be, be / al)
    z = (g * al).clamp_(min=0).sqrt_().sub_(be).div_(al)
    return g, qa + z * d0, qb + z * d1, qc + z * d2


def _bumps(p: dict[str, Tensor], s: Tensor, t: Tensor, sgn: Tensor):
    """Slopes dH/dX, dH/dY of the face bumps and the depth of the concave ones (image units)."""
    a, b = _col(p["a"]), _col(p["b"])
    sa = s.abs()
    hs, ht, hollow = torch.zeros_like(s), torch.zeros_like(s), torch.zeros_like(s)
    for s0, t0, ss, st, h, mirror, anchor, scale in BUMPS:
        t0 = _col(p[anchor]) + t0 if anchor else t0
        amp = a * h * (_col(p[scale]) if scale else 1.0)
        ds = ((sa if mirror else s) - s0).mul_(1.0 / ss)
        dt = (t - t0).mul_(1.0 / st)
        g = ds * ds
        g.addcmul_(dt, dt).clamp_(max=20.0).neg_().exp_().mul_(amp)
        if h < 0:
            hollow.add_(g)
        hs.addcmul_(g * sgn if mirror else g, ds, value=-2.0 / ss)
        ht.addcmul_(g, dt, value=-2.0 / st)
    return hs.div_(a), ht.div_(b), hollow


# -- the dataset ------------------------------------------------------------------------

class FacesDataset(ProceduralDataset):
    """Procedural heads (skin, eyes, brows, nose, lips, ears, hair, neck, wall) with exact
    albedo / shading / specular; ``shift=True`` adds glasses, beards, face paint, unusual
    hair colours, coloured multi-light rigs and camera degradations (module docstring)."""

    domain = "faces"
    description = ("procedural heads (skin tones very light to very dark, eyes, brows, nose, lips, "
                   "ears, hair styles, small pose changes) under a directional light; mask = head, hair, neck")
    shift_description = ("faces with a controlled shift: glasses, beards/stubble, face paint, unusual hair "
                         "colours (never in `faces`), coloured area-like multi-light rigs, camera noise / "
                         "white balance / JPEG on the image")

    def __init__(self, resolution: int = 64, size: int | None = None, seed: int = 0, forward_model=None,
                 shift: bool = False, render_batch: int = 32):
        super().__init__(resolution, size, seed, forward_model, shift, render_batch)
        self.name = "faces-shift" if self.shift else "faces"
        self.description = self.shift_description if self.shift else type(self).description

    def attributes(self, seeds: Tensor | list[int]) -> dict[str, Tensor]:
        """Withheld-attribute flags per name, (B,) bool: all False unless ``shift``."""
        p = face_params(torch.as_tensor(seeds, dtype=torch.int64), self.shift)
        return {n: p[n] > 0.5 for n in WITHHELD}

    def sample_meta(self, index: int) -> dict[str, Any]:
        meta = super().sample_meta(index)
        if self.shift:
            flags = self.attributes(self.test_seeds([index]))
            meta["attributes"] = [n for n in WITHHELD if bool(flags[n][0])]
        return meta

    def render(self, seeds: Tensor, resolution: int, device: torch.device | str) -> dict[str, Tensor]:
        # on the host CPU in pieces of ~128k pixels: the many temporaries then stay in cache and
        # below malloc's mmap threshold (7x faster here)
        return in_host_pieces(lambda s: self._render(s, resolution, device), seeds, device,
                              max(1, CPU_CHUNK_PIXELS // resolution ** 2))

    def _render(self, seeds: Tensor, resolution: int, device: torch.device | str) -> dict[str, Tensor]:
        seeds = to_device(seeds.to(torch.int64), device)
        r = Rand(seeds, PLANS["shift" if self.shift else "faces"])
        p = face_params(seeds, self.shift, r)
        p.update(_lattices(r))
        out = _render(p, resolution, self.shift)
        if self.shift:
            from .shift import apply_camera_shift  # a sibling module, only needed here
            fm = self.forward_model
            clean = fm.render(out["albedo"], out["shading"], out["specular"] if fm.use_specular else None)
            out["image"] = apply_camera_shift(clean, seeds, "camera", r.base)
        return out


# -- rendering --------------------------------------------------------------------------

def _lattices(r: Rand) -> dict[str, Tensor]:
    """The noise lattices of the faces (per-sample random values like the parameters, so
    they are drawn with them and split into CPU chunks with them)."""
    return {"lattice_skin_lo": r.lattice("faces/skin_lo", 6, 2),
            "lattice_skin_hi": r.lattice("faces/skin_hi", SKIN_CELLS, 1),
            "lattice_strand": r.lattice("faces/strand", 31, 1), "lattice_wall": r.lattice("faces/wall", 5, 1)}


SKIN_CELLS = 32  # the fine skin lattice's cells; the smooth one is refined to the same size


def _skin_noise(p: dict[str, Tensor], uh: Tensor, vh: Tensor) -> Tensor:
    """Blotch, flush modulation and freckle noise (B, 3, H, W) at head coordinates uh, vh:
    one bilinear grid_sample of a stack of a smooth (bicubically refined) and a fine lattice."""
    n = SKIN_CELLS + 1
    lo = F.interpolate(p["lattice_skin_lo"], size=(n, n), mode="bicubic", align_corners=True)
    return sample_at(torch.cat([lo, p["lattice_skin_hi"]], 1), uh, vh, mode="bilinear")


def _noise(p: dict[str, Tensor], xs: Tensor, ys: Tensor, res: int):
    """Hair strands (B, H, W), fine across and coarse along the hair (coordinates xs, ys), and
    the wall texture (B, H, W): an image-space field upsampled at pixel centres (resolution
    independent, like every field here). Few lattices and samples: they dominate the cost."""
    strand = p["lattice_strand"].reshape(-1, 1, 16, 64)  # i.i.d. values: any shape
    strand = sample_at(strand, xs, ys, mode="bilinear")[:, 0]
    wall = F.interpolate(p["lattice_wall"], size=(24, 24), mode="bicubic", align_corners=True)
    wall = F.interpolate(wall, size=(res, res), mode="bilinear", align_corners=False)[:, 0]
    return strand, wall


def _coords(p: dict[str, Tensor], res: int, oy: Tensor | None = None, ox: Tensor | None = None):
    """Head-frame coordinates of the pixels (all, or the window at rows oy.., columns ox..,
    (B, h, 1) and (B, 1, w) integer tensors): q0, the pixel ray's point at camera depth 0,
    and (Xp, Yp) on a plane behind the head centre (ears, neck, hair curtain)."""
    R, c = p["R"], _col(p["c"])
    if oy is None:
        u, v = pixel_grid(res, R.shape[0], R.device)
    else:  # the same arithmetic as pixel_grid, so values match the full grid bit for bit
        u = (ox.to(torch.float32) + 0.5) / res
        v = (oy.to(torch.float32) + 0.5) / res
        u, v = torch.broadcast_tensors(u, v)
    x, y = u - _col(p["cx"]), v - _col(p["cy"])
    d = R[:, 2, :]
    q0 = tuple(torch.addcmul(x * _col(R[:, 0, i]), y, _col(R[:, 1, i])) for i in range(3))
    k = -0.15 * c / _col(d[:, 2])
    Xp = torch.addcmul(q0[0] + k * _col(d[:, 0]), q0[2], _col(-d[:, 0] / d[:, 2]))
    Yp = torch.addcmul(q0[1] + k * _col(d[:, 1]), q0[2], _col(-d[:, 1] / d[:, 2]))
    return q0, Xp, Yp


def _head_extent(p: dict[str, Tensor], res: int) -> tuple[Tensor, Tensor]:
    """First and one-past-last pixel (B, 2) (x, y) of each head's silhouette (the posed
    ellipsoid's exact bounding box, plus two pixels)."""
    R = p["R"]
    axes2 = torch.stack([p["a"], p["b"], p["c"]], -1) ** 2
    half = ((R[:, :2, :] ** 2) * axes2[:, None, :]).sum(-1).sqrt()  # (B, 2): x, y half extents
    centre = torch.stack([p["cx"], p["cy"]], -1)
    lo = torch.floor((centre - half) * res - 0.5).long() - 2
    hi = torch.ceil((centre + half) * res - 0.5).long() + 2
    return lo, hi


def _window_size(res: int) -> tuple[int, int]:
    """The head window's width and height at ``res``: enough for any head the parameter
    ranges allow, in multiples of 16, at most ``res``.

    Why fixed, not the batch's largest head: reading the batch's extent back would stop
    the host for the GPU on every call. Bound: with the largest half axes a, b = a *
    aspect, c = a * depth, a silhouette is at most max(a, b, c) from its centre, and
    across at most sqrt(a^2 R00^2 + max(b, c)^2 (1 - R00^2)) with R00 = cos(roll)
    cos(yaw) >= cos(ROLL) cos(YAW); a window of extent e needs at most 2 e res + 6 pixels
    (the bounding box's rounding and its two-pixel margins), plus one for rounding in
    float32. Sizes in multiples of 16 keep every element on the same (vectorised) code
    path whatever the batch; a sample's values do not depend on the window's size."""
    a = HEAD_A[1]
    bc = a * max(HEAD_ASPECT[1], HEAD_DEPTH[1], 1.0)
    r00 = math.cos(math.radians(ROLL)) * math.cos(math.radians(YAW))
    half = (math.sqrt(a * a * r00 * r00 + bc * bc * (1 - r00 * r00)), bc)
    return tuple(min(res, (math.floor(2 * h * res + 7) + 16) // 16 * 16) for h in half)


def _head_window(p: dict[str, Tensor], res: int):
    """A pixel window per sample that holds its head's silhouette: row and column indices
    (B, h, 1), (B, 1, w) and flat indices (B, h * w); every sample's window has the size
    :func:`_window_size`."""
    R = p["R"]
    lo, _ = _head_extent(p, res)
    w, h = _window_size(res)
    ox, oy = (lo[:, i].clamp(0, res - size) for i, size in ((0, w), (1, h)))
    cols = ox[:, None, None] + torch.arange(w, device=R.device)[None, None, :]
    rows = oy[:, None, None] + torch.arange(h, device=R.device)[None, :, None]
    return rows, cols, (rows * res + cols).reshape(R.shape[0], -1)


def _render(p: dict[str, Tensor], res: int, shift: bool) -> dict[str, Tensor]:
    """Build the materials layer by layer, then shade: the body of :meth:`FacesDataset.render`."""
    B, dev = p["a"].shape[0], p["a"].device
    u, v = pixel_grid(res, B, dev)
    R = p["R"]
    a, b, c = _col(p["a"]), _col(p["b"]), _col(p["c"])
    x, y = u - _col(p["cx"]), v - _col(p["cy"])
    d = R[:, 2, :]  # the view ray (camera z) in head coordinates
    q0, Xp, Yp = _coords(p, res)
    strand, wall_n = _noise(p, 0.5 + 1.2 * Xp, 0.5 + 0.28 * Yp, res)
    ones = torch.ones_like(x)
    zeros = torch.zeros_like(x)

    # -- wall, with a soft drop shadow of the head ------------------------------------------
    ld = p["light_dir"]
    wall = ((x * _col(p["wall_gx"])).addcmul_(y, _col(p["wall_gy"])).add_(1.0)
            .mul_(wall_n.sub(0.5).mul_(1.5 * _col(p["wall_tex"])).add_(1.0)).clamp_(min=0.05))
    sx = (x + _col(0.25 * ld[:, 0] / ld[:, 2]) * b).div_(a * 1.05)
    sy = (y + _col(0.25 * ld[:, 1] / ld[:, 2]) * b).div_(b * 1.05)
    drop = sx.mul_(sx).addcmul_(sy, sy).sqrt_()
    drop = 1 - 0.6 * _step(1.35, 0.75, drop)
    cv = _Canvas(albedo=_rgb(p["wall"]) * wall.unsqueeze(1), nx=ones * _col(d[:, 0]), ny=ones * _col(d[:, 1]),
                 nz=ones * _col(d[:, 2]), ks=ones * 0.01, gloss=ones * 8.0, ao=ones.clone(), vis=drop,
                 aniso=zeros.clone(), person=zeros.clone())

    hair_alb = _rgb(p["hair_col"]) * (0.45 + 1.1 * strand).unsqueeze(1)
    has_hair, L = _col(p["has_hair"]), _col(p["hair_len"])
    ah = a * (1 + _col(p["hair_vol"]))

    # -- long hair falling behind the neck ---------------------------------------------------
    yb = Yp / b
    wc = ah * torch.where(yb > 0, 1 + 0.25 * yb, (1 - (yb / 1.15) ** 2).clamp_min(0).sqrt())
    edge = torch.minimum(wc - Xp.abs(), (L - yb + 0.06 * (strand - 0.5)) * b)
    curtain = _cov(torch.minimum(edge, (yb + 1.1) * b), res).mul_(has_hair * (L > 0.8))
    cn = (Xp / wc).clamp_(-1, 1)
    cv.over(curtain, albedo=hair_alb * 0.8, nx=cn * 0.8, ny=1.2 * (strand - 0.5), nz=(1 - cn * cn).sqrt_().add_(0.3),
            ks=_col(p["hair_ks"]) * ones, gloss=60.0, ao=0.5 + 0.3 * strand, vis=0.8, aniso=1.0, person=1.0)

    # -- neck and shirt ----------------------------------------------------------------------
    skin = _rgb(p["skin"])
    rn = a * 0.5
    xn = (Xp / rn).clamp_(-1, 1)
    neck = _cov(rn - Xp.abs(), res).mul_(yb > 0)
    cv.over(neck, albedo=skin * 0.92, nx=xn, ny=zeros, nz=(1 - xn * xn).sqrt_().add_(0.05), ks=0.3 * _col(p["oil"]),
            gloss=10.0, ao=0.45 + 0.55 * _step(0.9, 1.4, yb), vis=0.35 + 0.65 * _step(1.0, 1.35, yb),
            aniso=0.0, person=1.0)
    top = (_col(p["cy"]) + 1.22 * b).addcmul(x, x, value=0.5)
    top.add_(_col(p["collar"]) * (1 - (x / (1.3 * rn)) ** 2).clamp_(min=0))
    shirt = _cov(v - top, res)
    # the shoulders' normal is set in the head frame too: the pose is a few degrees
    cv.over(shirt, albedo=_rgb(p["shirt"]) * (0.85 + 0.3 * wall_n).unsqueeze(1), nx=2.0 * x, ny=-0.4, nz=1.0,
            ks=0.01, gloss=8.0, ao=0.6 + 0.4 * _step(0.0, 0.06, v - top), vis=1.0, aniso=0.0, person=0.0)

    # -- ears (behind the head's silhouette; long hair hides them) ----------------------------
    jaw = _col(p["jaw"])
    ew = (Xp.abs() / a - (1 - jaw * 0.2)).mul_(1 / 0.13)
    et = (yb - 0.13 - _col(p["ey"])).mul_(1 / 0.25)
    er = (ew * ew).addcmul_(et, et).sqrt_()
    hidden = has_hair * (L > 0.3) * (_col(p["hair_side"]) > 0)
    ear = _cov((1 - er) * (0.13 * a), res).mul_(1 - hidden)
    inner = _step(0.3, 0.65, er)
    ear_alb = skin * on_device((1.0, 0.88, 0.86), dev).view(1, 3, 1, 1)  # redder than the face
    cv.over(ear, albedo=ear_alb * (0.75 + 0.25 * inner).unsqueeze(1),
            nx=Xp.sign() * (0.5 + 0.4 * er), ny=0.3 * et, nz=ones, ks=0.3 * _col(p["oil"]), gloss=12.0,
            ao=0.5 + 0.5 * inner, vis=1.0, aniso=0.0, person=1.0)

    # -- head --------------------------------------------------------------------------------
    # computed on a window around each head only (half the pixels; a sample's values do
    # not depend on the window: outside its silhouette the head's coverage is exactly 0)
    win = _head_window(p, res)
    q0w, Xpw, Ypw = _coords(p, res, *win[:2])
    skin_n = _skin_noise(p, 0.5 + 0.3 * Xpw / a, 0.5 + 0.3 * Ypw / a)
    strand_w = cv.gather(strand, win[2]).view_as(Xpw)
    hair_w = _rgb(p["hair_col"]) * (0.45 + 1.1 * strand_w).unsqueeze(1)
    head = _head(p, q0w, d, skin, skin_n, strand_w, res, shift, hair_w)
    cv.over_window(win[2], head.pop("alpha"), **head, person=1.0)

    # -- hair shell over the head ------------------------------------------------------------
    vol = _col(p["hair_vol"])
    bh, ch = b * (1 + 0.6 * vol), c * (1 + vol)
    gh, Xh, Yh, Zh = _ellipsoid((q0[0], q0[1] + 0.6 * vol * b, q0[2]), d, 1 / ah ** 2, 1 / bh ** 2, 1 / ch ** 2)
    sh, th = Xh / a, Yh / b - 0.6 * vol  # head units, so the hairline matches the forehead's
    jag = 0.08 * (strand - 0.5)
    front = _cov((_col(p["hairline"]) + _col(p["temple"]) * sh * sh + jag - th) * b, res)
    side = _cov((sh.abs() - 1 + _col(p["hair_side"])) * a, res).mul_(_cov((L + jag - th) * b, res))
    hair = _cov(gh * (ah * 0.5), res).mul_(torch.maximum(front, side)).mul_(has_hair)
    cv.over(hair, albedo=hair_alb, nx=Xh / ah ** 2 + (2.0 * (strand - 0.5)) / a,
            ny=Yh / bh ** 2 + (1.5 * (strand - 0.5)) / a, nz=Zh / ch ** 2, ks=_col(p["hair_ks"]), gloss=40.0,
            ao=0.55 + 0.45 * strand, vis=0.75 + 0.25 * strand, aniso=1.0, person=1.0)
    return _shade(cv, p)


def _head(p, q0, d, skin, skin_n, strand, res, shift, hair_alb) -> dict[str, Tensor]:
    """The head's coverage and materials: skin, nostrils, lips, eyes, brows (+ shift attributes)."""
    dev = d.device
    a, b, c = _col(p["a"]), _col(p["b"]), _col(p["c"])
    jaw = _col(p["jaw"])
    # the jaw narrows the ellipsoid below the cheeks: width w(t) = 1 - jaw * smoothstep(t)
    xj = (q0[1] / b - 0.05).clamp_(0, 1)  # t at camera depth 0: the pose is small
    ssj = xj * xj * (3 - 2 * xj)
    w = 1 - jaw * ssj
    ia = 1 / (a * w) ** 2
    ib, ic = 1 / b ** 2, 1 / c ** 2
    g, X, Y, Z = _ellipsoid(q0, d, ia, ib, ic)
    alpha = _cov(g * (a * 0.5), res)
    s, t = X / a, Y / b
    sa = s.abs()
    sgn = torch.where(s < 0, -1.0, 1.0)
    hs, ht, hollow = _bumps(p, s, t, sgn)
    zc = Z * ic
    nx = (X * ia).addcmul_(zc, hs, value=-1)
    ny = (Y * ib).addcmul_(zc, ht, value=-1)
    ny.addcmul_(X * X * ia, jaw * 6 * xj * (1 - xj) / (b * w))  # d/dY of the jaw narrowing
    nz = zc
    kc = lambda *rgb: on_device(rgb, dev).view(1, 3, 1, 1)

    # skin albedo: tone, blotches, flush, freckles; T-zone oiliness
    blotch, flush_n, fine = skin_n[:, 0], skin_n[:, 1], skin_n[:, 2]
    flush = _gauss(sa, t, 0.5, 0.3, 0.22, 0.18).mul_(0.6 + 0.8 * flush_n)
    flush.add_(_gauss(s, t, 0.0, _col(p["nose_t"]), 0.1, 0.08), alpha=0.5).mul_(_col(p["flush"]))
    freck = _step(0.68, 0.82, fine).mul_(_gauss(sa, t, 0.25, 0.25, 0.35, 0.2)).mul_(_col(p["freckles"]))
    lum = (blotch - 0.5).mul_(_col(p["blotch"])).add_(1)
    alb = skin * (lum.unsqueeze(1) + flush.unsqueeze(1) * kc(0.06, -0.18, -0.15)
                  - freck.unsqueeze(1) * kc(0.3, 0.42, 0.5))
    ks = _gauss(s, t, 0.0, -0.45, 0.3, 0.3).add_(_gauss(s, t, 0.0, 0.2, 0.12, 0.22))
    ks.add_(_gauss(sa, t, 0.45, 0.25, 0.2, 0.15), alpha=0.5).add_(0.5).mul_(0.8 + 0.4 * fine).mul_(_col(p["oil"]))
    gloss = _col(p["skin_gloss"]) * torch.ones_like(s)
    ao = 1 - 3.0 * hollow / a
    hl = _col(p["hairline"]) + _col(p["temple"]) * s * s  # the hair's shadow on the forehead
    ao.mul_(1 - 0.45 * _col(p["has_hair"]) * _step(0.18, 0.0, t - hl))

    # nostrils
    nr = ((sa - 0.075 * _col(p["nose"])) * (1 / 0.04)) ** 2 + ((t - _col(p["nose_t"]) - 0.05) * (1 / 0.022)) ** 2
    nostril = _cov((1 - nr.sqrt_()) * (0.022 * b), res)
    alb.mul_((1 - 0.65 * nostril).unsqueeze(1))
    ao.mul_(1 - 0.6 * nostril)

    # lips and the line between them
    mw, mt = _col(p["mouth_w"]), _col(p["mouth_t"])
    sm = s / mw
    arc = (1 - sm * sm).clamp_(min=0)
    y_top = mt - _col(p["lip_up"]) * arc.sqrt() * (1 - 0.3 * _bell(sm, 0.0, 0.12))
    y_bot = mt + 0.06 * _col(p["lip_lo"]) * arc ** 0.6
    lips = _cov(torch.minimum(t - y_top, y_bot - t) * b, res).mul_(_cov((1 - sm.abs()) * mw * a, res))
    alb.lerp_(_rgb(p["lip_col"]), lips.unsqueeze(1))
    ks.lerp_(on_device(0.06, dev), lips)
    gloss.lerp_(on_device(40.0, dev), lips)
    mline = _bell(t, mt - _col(p["smile"]) * sm * sm, 0.014).mul_(_step(1.05, 0.8, sm.abs()))
    alb.mul_((1 - 0.7 * mline).unsqueeze(1))
    ao.mul_(1 - 0.5 * mline)

    # eyes: opening between the lids, sclera, iris, pupil, crease, lashes; eyeball normals
    ex, ey = _col(p["ex"]), _col(p["ey"])
    ewid, eh = _col(p["ew"]), _col(p["eh"])
    dxn = (sa - ex) / ewid
    dy = t - ey + _col(p["tilt"]) * dxn
    lid = 1 - dxn * dxn
    y_u = -eh * lid - 0.004
    opening = _cov(torch.minimum(dy - y_u, 0.85 * eh * lid - dy) * b, res)
    dxi = (s - sgn * ex - _col(p["gaze_x"])) * a
    dyi = (t - ey - _col(p["gaze_y"])) * b
    di = (dxi * dxi).addcmul_(dyi, dyi).sqrt_()
    ri = _col(p["iris_r"]) * a
    iris = _cov(ri - di, res)
    pupil = _cov(ri * _col(p["pupil"]) - di, res)
    rr = di / ri
    streak = torch.atan2(dyi, dxi).mul_(13).add_(3 * rr).sin_().mul_(0.175).add_(0.925)
    iris_alb = _rgb(p["iris_col"]) * (streak * (1 - 0.55 * _step(0.7, 1.0, rr))).unsqueeze(1)
    eye = kc(0.62, 0.56, 0.52) * (1 - 0.35 * dxn * dxn).clamp_(min=0.3).unsqueeze(1)
    eye.lerp_(iris_alb, iris.unsqueeze(1)).lerp_(kc(0.01, 0.01, 0.01), pupil.unsqueeze(1))
    above = dy - y_u  # distance below the upper lid's edge
    crease = _bell(above, -0.05, 0.018).mul_(_step(1.2, 0.6, dxn.abs()))
    lash = _bell(above, -0.006, 0.012).mul_(_step(1.15, 0.7, dxn.abs()))
    alb.mul_((1 - 0.25 * crease).unsqueeze(1)).lerp_(eye, opening.unsqueeze(1))
    alb.lerp_(kc(0.015, 0.012, 0.01), (0.9 * lash).unsqueeze(1))
    ao.mul_(1 - 0.25 * crease).mul_(1 - 0.4 * opening * _bell(above, 0.0, 0.03))
    re = ewid * a * (1.15 / 1.6)
    nx.lerp_(nz * (sa - ex) * a * sgn / re, opening)
    ny.lerp_(nz * dyi / re, opening)
    ks.lerp_(on_device(0.2, dev), opening)
    gloss.lerp_(on_device(90.0, dev), opening)

    # brows: an arch above each eye, thick inside, thin at the tail, with hair strands
    dxb = (sa - ex + 0.02) / 0.24
    y_c = ey - _col(p["brow_y"]) - _col(p["brow_arch"]) * (1 - dxb * dxb) + 0.025 * dxb
    th = _col(p["brow_th"]) * (1 - 0.5 * _step(-0.3, 1.0, dxb))
    brow = _cov((th - (t - y_c).abs()) * b, res).mul_(_cov((1 - dxb.abs()) * 0.24 * a, res))
    brow.mul_(_col(p["brow_dens"]) * (0.55 + 0.6 * strand).clamp_(0, 1))
    alb.lerp_(_rgb(p["brow_col"]) * (0.6 + 0.6 * strand).unsqueeze(1), brow.unsqueeze(1))

    m = {"albedo": alb, "nx": nx, "ny": ny, "nz": nz, "ks": ks, "gloss": gloss, "ao": ao, "aniso": torch.zeros_like(s)}
    if shift:
        _shift_attributes(p, m, s, t, sgn, fine, strand, hair_alb, opening, lips, res)
    m["ao"] = m["ao"].clamp_(0.05, 1)
    m["vis"] = m["ao"].sqrt()
    m["alpha"] = alpha
    return m


def _shift_attributes(p, m, s, t, sgn, fine, strand, hair_alb, opening, lips, res) -> None:
    """Glasses, beards / stubble and face paint, painted into the head materials ``m``."""
    a, b = _col(p["a"]), _col(p["b"])
    ex, ey, mt, mw = _col(p["ex"]), _col(p["ey"]), _col(p["mouth_t"]), _col(p["mouth_w"])
    sa = s.abs()
    one = torch.ones_like(s)

    # face paint: cheek stripes, an eye band or half the face
    stripes = ((sa > 0.35) & (sa < 0.8) & (t > 0.1) & (t < 0.45) & (torch.sin((t - 0.2) * 60) > 0.5)).float()
    band = ((t - ey).abs() < 0.13).float() * (1 - opening)
    half = ((s > 0.02) & (t < 0.85)).float() * (1 - opening) * (1 - lips)
    style = _col(p["paint_style"])
    paint = torch.where(style == 0, stripes, torch.where(style == 1, band, half)) * (0.92 * _col(p["face_paint"]))
    m["albedo"].lerp_(_rgb(p["paint_col"]) * (0.9 + 0.2 * fine).unsqueeze(1), paint.unsqueeze(1))
    m["ks"].lerp_(0.01 * one, paint)

    # beard (full) or stubble on the jaw, chin and upper lip
    region = _step(0.0, 0.06, t - 0.65 + 0.4 * s * s)
    region.add_(_step(0.05, 0.03, (t - mt + 0.07).abs()) * (sa < 1.1 * mw))
    region = region.clamp_(0, 1) * (1 - lips) * _step(1.2, 0.95, t) * _col(p["beard"])
    full = _col(p["full_beard"])
    amount = region * (full * (0.6 + 0.4 * strand) + (1 - full) * (0.25 + 0.45 * _step(0.5, 0.7, strand)))
    m["albedo"].lerp_(hair_alb * 0.8, amount.unsqueeze(1))
    m["aniso"].lerp_(one, region * full)
    m["ao"].mul_(1 - 0.3 * region * full * (1 - strand))

    # glasses: two rims, a bridge and temples; tinted, glossy, slightly curved lenses
    on = _col(p["glasses"])
    lr = _col(p["lens_r"])
    lx, ly = (sa - ex) / lr, (t - ey - 0.02) / (0.7 * lr)
    lrad = (lx * lx + ly * ly).sqrt_()
    rim = _cov((0.1 - (lrad - 1).abs()) * lr * a, res)
    lens = _cov((1 - lrad) * lr * a, res).mul_(on)
    bridge = _cov((0.018 - (t - ey + 0.03).abs()) * b, res).mul_(sa < ex - lr * 0.95)
    temple = _cov((0.018 - (t - ey + 0.01).abs()) * b, res).mul_(sa > ex + lr * 0.95)
    frame = torch.maximum(torch.maximum(rim, bridge), temple).mul_(on)
    m["albedo"].mul_((1 - 0.15 * lens).unsqueeze(1)).lerp_(_rgb(p["frame_col"]), frame.unsqueeze(1))
    m["ks"].lerp_(0.35 * one, lens).lerp_(0.25 * one, frame)
    m["gloss"].lerp_(120.0 * one, lens).lerp_(60.0 * one, frame)
    m["nx"].lerp_(m["nz"] * 0.6 * lx * lr * sgn, lens)
    m["ny"].lerp_(m["nz"] * 0.6 * ly * lr, lens)
    m["ao"].mul_(1 - 0.3 * _cov((1.25 - lrad) * lr * a, res) * (1 - lens) * on)


def _shade(cv: _Canvas, p: dict[str, Tensor]) -> dict[str, Tensor]:
    """One lighting pass over the composited materials, in the head frame."""
    R = p["R"]
    nx, ny, nz = cv["nx"], cv["ny"], cv["nz"]
    inv = (nx * nx).addcmul_(ny, ny).addcmul_(nz, nz).clamp_(min=1e-12).rsqrt_()
    nx, ny, nz = nx.mul_(inv), ny.mul_(inv), nz.mul_(inv)
    ks, gloss, vis, ao, aniso = cv["ks"], cv["gloss"], cv["vis"], cv["ao"], cv["aniso"]
    norm = (gloss + 8) * (1 / (8 * math.pi))
    to_head = lambda vec: (R * vec[:, :, None]).sum(1)  # R^T vec
    dot = lambda vec: (nx * _col(vec[:, 0])).addcmul_(ny, _col(vec[:, 1])).addcmul_(nz, _col(vec[:, 2]))
    # hemispherical ambient: more light from above, less in cavities
    up = to_head(on_device((0.0, -1.0, 0.0), R.device).expand(R.shape[0], 3))
    amb = dot(up).mul_(0.35).add_(0.75).mul_(ao)
    shading = _rgb(p["amb_col"] * (p["amb"] * p["exposure"])[:, None]) * amb.unsqueeze(1)
    specular = torch.zeros_like(shading)
    nyz = (ny * ny).addcmul_(nz, nz).clamp_(min=1e-8).rsqrt_()
    view = to_head(on_device((0.0, 0.0, 1.0), R.device).expand(R.shape[0], 3))
    # every light at once: fields (B, L, H, W), one kernel per step whatever the number of
    # lights; the sums then run light by light, in the order a loop over lights would take
    lights = _lights(p)
    lh = [to_head(ld) for ld, _ in lights]
    h = torch.stack([_unit(v + view) for v in lh], 1)[..., None, None]  # (B, L, 3, 1, 1)
    lh = torch.stack(lh, 1)[..., None, None]
    nx, ny, nz, nyz, ks, gloss, vis, aniso, norm = (t[:, None] for t in (nx, ny, nz, nyz, ks, gloss, vis, aniso, norm))
    ndl = (nx * lh[:, :, 0]).addcmul_(ny, lh[:, :, 1]).addcmul_(nz, lh[:, :, 2])
    diffuse = ((ndl + WRAP) * (1 / (1 + WRAP))).clamp_(min=0).mul_(vis)
    ndh = (nx * h[:, :, 0]).addcmul_(ny, h[:, :, 1]).addcmul_(nz, h[:, :, 2]).clamp_(0, 1)
    # Kajiya-Kay on hair: the strand tangent runs down the head, T ~ (0, nz, -ny)
    tdh = (nz * h[:, :, 1]).addcmul_(ny, -h[:, :, 2]).mul_(nyz)
    kk = tdh.mul_(tdh).neg_().add_(1).clamp_(0, 1).sqrt_()
    # x^gloss as exp(gloss log x), floored at e^-20: denormals would make it 20x slower
    lobe = ndh.lerp_(kk, aniso).clamp_(min=1e-6).log_().mul_(gloss).clamp_(min=-20.0).exp_()
    ndl.mul_(1 / 0.15).clamp_(0, 1)
    spec = lobe.mul_(ks).mul_(norm).mul_(ndl * ndl * (3 - 2 * ndl)).mul_(vis)
    for i, (_, rad) in enumerate(lights):
        shading.addcmul_(_rgb(rad), diffuse[:, i:i + 1])
        specular.addcmul_(_rgb(rad), spec[:, i:i + 1])
    return {"albedo": cv["albedo"].clamp_(0, 1), "shading": shading.clamp_(min=0),
            "specular": specular.clamp_(min=0), "mask": (cv["person"] > 0.5).float().unsqueeze(1)}


# what a face's parameters and noise lattices draw (faces, faces-shift), learnt on the first render
PLANS = {name: DrawPlan(name) for name in ("faces", "shift")}


register_dataset("faces", FacesDataset, description=FacesDataset.description)
register_dataset("faces-shift", FacesDataset, description=FacesDataset.shift_description, shift=True)
