"""Counter-based randomness and noise for procedural datasets.

Every random number of a synthetic sample is a hash of (the sample's seed, a named
stream, an index). Hashing is exact 32-bit integer arithmetic, so a sample does not
depend on the batch it is rendered in, on the device (CPU and CUDA give the same
parameters) or on the resolution (noise lattices live in continuous [0, 1]^2 image
coordinates and are interpolated to the pixel grid). Test splits are rendered on the CPU
and are bit-identical on every machine; training streams render the same code on the GPU.

Conventions: ``seeds`` is a (B,) int64 tensor; functions return (B, ...) float32 tensors.
Pixel coordinates: ``u`` runs left -> right, ``v`` top -> bottom, both in [0, 1].
"""
from __future__ import annotations

import math
import zlib

import torch
import torch.nn.functional as F
from torch import Tensor

_MASK32 = 0xFFFFFFFF


def _mix(x: Tensor) -> Tensor:
    """A 32-bit avalanche hash (Wang/Murmur-style). Constants < 2^31 keep int64 exact."""
    x = x & _MASK32
    x = (x ^ (x >> 16)) * 0x45D9F3B & _MASK32
    x = (x ^ (x >> 16)) * 0x45D9F3B & _MASK32
    x = (x ^ (x >> 16)) * 0x2C1B3C6D & _MASK32
    x = (x ^ (x >> 15)) * 0x297A2D39 & _MASK32
    return x ^ (x >> 16)


def stream_key(name: str) -> int:
    """A stable 32-bit id for a named random stream ("light", "palette", ...)."""
    return zlib.crc32(name.encode()) & _MASK32


def seed_hash(seeds: Tensor, key: str | int) -> Tensor:
    """Combine 64-bit per-sample seeds with a stream name into 32-bit hashes (B,)."""
    k = stream_key(key) if isinstance(key, str) else int(key) & _MASK32
    seeds = seeds.to(torch.int64)
    lo, hi = seeds & _MASK32, (seeds >> 32) & _MASK32
    return _mix(_mix(lo ^ _mix(hi + 0x9E3779B)) ^ k)


def hash_uniform(h: Tensor) -> Tensor:
    """32-bit hashes -> float32 uniforms in [0, 1) (24 bits of mantissa)."""
    return (h >> 8).to(torch.float32) / float(1 << 24)


class Rand:
    """Per-sample random numbers: ``Rand(seeds).uniform("light", 3)`` -> (B, 3).

    Each (stream name, index) pair gives an independent value for every sample, the
    same whatever else is drawn, so adding a new random choice never changes old ones.
    """

    def __init__(self, seeds: Tensor):
        self.seeds = seeds.to(torch.int64)
        self.device = self.seeds.device

    def hashes(self, key: str, n: int | None = None) -> Tensor:
        base = seed_hash(self.seeds, key)
        if n is None:
            return base
        idx = torch.arange(n, device=self.device, dtype=torch.int64)
        return _mix(base[:, None] ^ _mix(idx + 0x51ED27)[None, :])

    def uniform(self, key: str, n: int | None = None, low: float = 0.0, high: float = 1.0) -> Tensor:
        return low + (high - low) * hash_uniform(self.hashes(key, n))

    def normal(self, key: str, n: int | None = None, mean: float = 0.0, std: float = 1.0) -> Tensor:
        """Box-Muller normals."""
        m = 1 if n is None else n
        u = hash_uniform(self.hashes(key, 2 * m)).clamp_min(1e-7)
        z = torch.sqrt(-2.0 * torch.log(u[:, :m])) * torch.cos(2 * math.pi * u[:, m:])
        z = mean + std * z
        return z[:, 0] if n is None else z

    def randint(self, key: str, high: int, n: int | None = None) -> Tensor:
        """Integers in [0, high)."""
        return (self.uniform(key, n) * high).long().clamp_max(high - 1)

    def bernoulli(self, key: str, p: float | Tensor, n: int | None = None) -> Tensor:
        return self.uniform(key, n) < p

    def choice(self, key: str, table: Tensor) -> Tensor:
        """Pick one row of ``table`` (K, ...) per sample -> (B, ...)."""
        return table.to(self.device)[self.randint(key, table.shape[0])]


def pixel_grid(resolution: int, batch: int, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates u, v in [0, 1], each (B, H, W)."""
    t = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution
    v, u = torch.meshgrid(t, t, indexing="ij")
    return u.expand(batch, -1, -1), v.expand(batch, -1, -1)


def lattice_values(seeds: Tensor, key: str, cells: int, channels: int = 1, wrap: bool = False) -> Tensor:
    """Uniform [0,1) values on a (cells+1)^2 lattice per sample: (B, C, cells+1, cells+1).

    With ``wrap`` the last row/column repeat the first, so the noise tiles.
    """
    n = cells + 1
    h = seed_hash(seeds, key)  # (B,)
    dev = seeds.device
    iy, ix, ic = torch.meshgrid(
        torch.arange(n, device=dev), torch.arange(n, device=dev), torch.arange(channels, device=dev), indexing="ij"
    )
    if wrap:
        iy, ix = iy % cells, ix % cells
    cell_id = (iy * 7919 + ix) * 131 + ic  # (n, n, C)
    vals = hash_uniform(_mix(h[:, None, None, None] ^ _mix(cell_id[None] + 0x1234567)))
    return vals.permute(0, 3, 1, 2).contiguous()


def sample_at(field: Tensor, u: Tensor, v: Tensor, mode: str = "bicubic") -> Tensor:
    """Sample a (B, C, h, w) field at continuous coordinates u, v (B, H, W) in [0, 1]
    (the field's corners sit at 0 and 1) -> (B, C, H, W)."""
    grid = torch.stack([u * 2 - 1, v * 2 - 1], dim=-1)
    return F.grid_sample(field, grid, mode=mode, padding_mode="reflection", align_corners=True)


def smoothstep(e0: float | Tensor, e1: float | Tensor, x: Tensor) -> Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0)
    return t * t * (3 - 2 * t)


SIMD_ROWS = 64  # rows: any per-sample tensor padded to this is a whole number of every CPU's SIMD blocks


def batch_invariant(fn, *xs: Tensor) -> Tensor:
    """``fn(*xs)`` for a row-wise ``fn`` of small per-sample tensors (B, ...), computed so that
    a sample's result does not depend on the batch it is in.

    Why: ATen's CPU kernels run a contiguous tensor in SIMD blocks (16 or 32 floats) and
    the last few elements through scalar code. For ``pow`` (also ``atan2``, ``exp2``) the
    two paths differ in the last bit, so a light's colour in a (B,) tensor changed with B
    and with the sample's place in the batch. Padded to a multiple of ``SIMD_ROWS`` rows
    (with copies of row 0), every element takes the SIMD path, which is also the path the
    committed test splits (rendered 32 at a time) took. Pixel fields (B, C, H, W) need no
    padding: each sample is a whole number of SIMD blocks."""
    n = xs[0].shape[0]
    pad = -n % SIMD_ROWS
    if pad:
        xs = tuple(torch.cat([x, x[:1].expand(pad, *x.shape[1:])]) for x in xs)
    return fn(*xs)[:n]


def kelvin_to_rgb(kelvin: Tensor) -> Tensor:
    """Approximate linear-RGB colour of a black body (1000 K .. 12000 K), normalised so the
    green channel is 1: (B,) -> (B, 3). Tanner Helland's fit, applied in linear light."""
    return batch_invariant(_kelvin_to_rgb, kelvin)


def _kelvin_to_rgb(kelvin: Tensor) -> Tensor:
    t = (kelvin / 100.0).clamp(10.0, 120.0)
    r = torch.where(t <= 66, torch.full_like(t, 255.0), 329.698727446 * (t - 60).clamp_min(1e-3) ** -0.1332047592)
    g = torch.where(t <= 66, 99.4708025861 * torch.log(t) - 161.1195681661,
                    288.1221695283 * (t - 60).clamp_min(1e-3) ** -0.0755148492)
    b = torch.where(t >= 66, torch.full_like(t, 255.0),
                    torch.where(t <= 19, torch.zeros_like(t), 138.5177312231 * torch.log((t - 10).clamp_min(1e-3)) - 305.0447927307))
    rgb = torch.stack([r, g, b], dim=-1).clamp(1.0, 255.0) / 255.0
    rgb = rgb ** 2.2  # the fit is in display values
    return rgb / rgb[:, 1:2]


def height_to_normals(height: Tensor, strength: float | Tensor = 1.0) -> Tensor:
    """Height map (B, 1, H, W) in image units -> unit normals (B, 3, H, W), z towards the camera.

    Slopes are taken with central differences per unit of image width, so the same
    height field gives the same normals at any resolution.
    """
    res = height.shape[-1]
    hp = F.pad(height, (1, 1, 1, 1), mode="replicate")
    dx = (hp[..., 1:-1, 2:] - hp[..., 1:-1, :-2]) * (res / 2.0)
    dy = (hp[..., 2:, 1:-1] - hp[..., :-2, 1:-1]) * (res / 2.0)
    if isinstance(strength, Tensor):
        strength = strength.view(-1, 1, 1, 1)
    dx, dy = dx * strength, dy * strength
    inv = torch.rsqrt(dx * dx + dy * dy + 1.0)  # Tensor.norm(dim=1) is several times slower on CPU
    return torch.cat([-dx * inv, -dy * inv, inv], dim=1)
