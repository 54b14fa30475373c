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
from dataclasses import dataclass
from typing import Callable

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


def _key(key: str | int) -> int:
    return stream_key(key) if isinstance(key, str) else int(key) & _MASK32


def _seed_base(seeds: Tensor) -> Tensor:
    """The per-sample half of :func:`seed_hash`, shared by every stream (B,)."""
    seeds = seeds.to(torch.int64)
    return _mix((seeds & _MASK32) ^ _mix(((seeds >> 32) & _MASK32) + 0x9E3779B))


def seed_hash(seeds: Tensor, key: str | int) -> Tensor:
    """Combine 64-bit per-sample seeds with a stream name into 32-bit hashes (B,)."""
    return _mix(_seed_base(seeds) ^ _key(key))


def hash_uniform(h: Tensor) -> Tensor:
    """32-bit hashes -> float32 uniforms in [0, 1) (24 bits of mantissa)."""
    return (h >> 8).to(torch.float32) / float(1 << 24)


def _index_salts(n: int) -> Tensor:
    """What element i of a vector draw mixes into its stream's hash (n,)."""
    return _mix(torch.arange(n, dtype=torch.int64) + 0x51ED27)


def _lattice_salts(cells: int, channels: int, wrap: bool) -> Tensor:
    """What lattice point (iy, ix, channel) mixes into its stream's hash, flattened in that
    order ((cells+1)^2 * channels,); with ``wrap`` the last row/column repeat the first."""
    i = torch.arange(cells + 1, dtype=torch.int64)
    if wrap:
        i = i % cells
    cell_id = (i[:, None, None] * 7919 + i[None, :, None]) * 131 + torch.arange(channels, dtype=torch.int64)
    return _mix(cell_id.flatten() + 0x1234567)


class DrawPlan:
    """The draws one piece of rendering code makes, learnt on its first call, so that
    later calls compute them all at once.

    Why: a material family draws ~40 named values and ~10 noise lattices. Hashed one by
    one (a 32-bit mix is ~19 integer kernels) a render call cost ~11,000 kernel launches
    in hashing alone; hashed together it is ~50, and scaling every uniform to its range
    and every Box-Muller normal are a few kernels more. Hashing is exact integer
    arithmetic and the rest is the same elementwise float arithmetic on the same inputs,
    so every value is the same bit for bit either way. What a piece of code draws never
    depends on the data (every draw is unconditional; choices are made afterwards with
    ``torch.where``), so the list learnt from one call is the list of every call. A draw
    the plan does not hold yet is made on its own and added for the next call.
    """

    def __init__(self, name: str = ""):
        self.name = name
        self.keys: dict[int, int] = {}  # stream key -> its column among the key hashes
        self.blocks: dict[tuple, Tensor] = {}  # (key, kind, *shape) -> the salts (n,) its key hash is mixed with
        self.uniforms: dict[tuple, None] = {}  # (key, n, low, high) of every uniform draw
        self.normals: dict[tuple, None] = {}  # (key, n) of every normal draw
        self._on: dict[str, _Constants] = {}  # per device

    def add_key(self, key: int) -> None:
        if key not in self.keys:
            self.keys[key] = len(self.keys)
            self._on.clear()

    def add_block(self, spec: tuple, salts) -> Tensor:
        """The salts of block ``spec``, made with ``salts()`` and added if new."""
        if spec not in self.blocks:
            self.add_key(spec[0])
            self.blocks[spec] = salts()
            self._on.clear()
        return self.blocks[spec]

    def add_uniform(self, spec: tuple) -> None:
        key, n = spec[:2]
        if n is None:
            self.add_key(key)
        else:
            self.add_block((key, "index", n), lambda: _index_salts(n))
        self.uniforms[spec] = None
        self._on.clear()

    def add_normal(self, spec: tuple) -> None:
        self.add_block((spec[0], "index", 2 * spec[1]), lambda: _index_salts(2 * spec[1]))
        self.normals[spec] = None
        self._on.clear()

    def constants(self, device: torch.device) -> "_Constants":
        """What :class:`Rand` needs to make the plan's draws, on ``device`` (made once per
        device, not per call)."""
        tag = str(device)
        if tag not in self._on:
            self._on[tag] = _Constants.make(self, device)
        return self._on[tag]


@dataclass
class _Constants:
    """A :class:`DrawPlan` as index and value tensors on one device."""

    keys: Tensor  # (K,) stream keys
    block_keys: Tensor | None  # (T,) the key column of every block element
    salts: Tensor | None  # (T,)
    blocks: dict[tuple, tuple[int, int]]  # block spec -> (offset, n) in the block hashes
    scalar: tuple[Tensor, Tensor, Tensor] | None  # draws of one uniform: key columns, low, high - low (float32)
    vector: tuple[Tensor, Tensor, Tensor] | None  # draws of n uniforms: block columns, low, high - low
    uniforms: dict[tuple, int]  # uniform spec -> its column among the scalar or vector draws
    normal_cols: Tensor | None  # block columns of every normal's first uniforms, then of every second ones
    normals: dict[tuple, int]  # normal spec -> its first column among the normals

    @classmethod
    def make(cls, plan: DrawPlan, device: torch.device) -> "_Constants":
        blocks, off = {}, 0
        for spec, salts in plan.blocks.items():
            blocks[spec] = (off, salts.numel())
            off += salts.numel()
        block_keys = salts = None
        if plan.blocks:
            block_keys = torch.cat([torch.full((t.numel(),), plan.keys[spec[0]], dtype=torch.int64)
                                    for spec, t in plan.blocks.items()])
            salts = torch.cat(list(plan.blocks.values()))
        draws: dict[bool, list[tuple[int, float, float]]] = {False: [], True: []}  # vector? -> (column, low, span)
        uniforms = {}
        for key, n, low, high in plan.uniforms:
            cols = [plan.keys[key]] if n is None else range(blocks[(key, "index", n)][0], blocks[(key, "index", n)][0] + n)
            uniforms[(key, n, low, high)] = len(draws[n is not None])
            draws[n is not None] += [(c, low, high - low) for c in cols]
        first, second, normals = [], [], {}
        for key, m in plan.normals:
            o = blocks[(key, "index", 2 * m)][0]
            normals[(key, m)] = len(first)
            first += range(o, o + m)
            second += range(o + m, o + 2 * m)
        to = lambda t: None if t is None else t.to(device)

        def table(rows):
            if not rows:
                return None
            c, lo, span = zip(*rows)
            return (to(torch.tensor(c, dtype=torch.int64)), to(torch.tensor(lo, dtype=torch.float32)),
                    to(torch.tensor(span, dtype=torch.float32)))

        return cls(to(torch.tensor(list(plan.keys), dtype=torch.int64)), to(block_keys), to(salts), blocks,
                   table(draws[False]), table(draws[True]), uniforms,
                   to(torch.tensor(first + second, dtype=torch.int64)) if first else None, normals)


def _box_muller(u: Tensor, m: int) -> Tensor:
    """Standard normals (B, m) from uniforms (B, 2m): the first m and the last m pair up."""
    u = u.clamp_min(1e-7)
    return torch.sqrt(-2.0 * torch.log(u[:, :m])) * torch.cos(2 * math.pi * u[:, m:])


class Rand:
    """Per-sample random numbers: ``Rand(seeds).uniform("light", 3)`` -> (B, 3).

    Each (stream name, index) pair gives an independent value for every sample, the
    same whatever else is drawn, so adding a new random choice never changes old ones.
    With a :class:`DrawPlan`, every draw the plan holds is made when the Rand is made, in
    about 20 kernels whatever the number of draws. ``base`` is :func:`_seed_base` of the
    seeds when the caller has it already.
    """

    def __init__(self, seeds: Tensor, plan: DrawPlan | None = None, base: Tensor | None = None):
        self.seeds = seeds.to(torch.int64)
        self.device = self.seeds.device
        self.base = _seed_base(self.seeds) if base is None else base
        self.plan = DrawPlan() if plan is None else plan
        self._columns: dict[int, int] = {}  # what the draws made here hold
        self._offsets: dict[tuple, tuple[int, int]] = {}
        self._uniform_at: dict[tuple, int] = {}
        self._normal_at: dict[tuple, int] = {}
        if self.plan.keys:
            c = self.plan.constants(self.device)
            self._columns, self._offsets = dict(self.plan.keys), c.blocks
            self._uniform_at, self._normal_at = c.uniforms, c.normals
            self._keys = _mix(self.base[:, None] ^ c.keys)  # (B, K): seed_hash of every stream
            self._ukeys = hash_uniform(self._keys)
            if c.block_keys is not None:
                self._blocks = _mix(self._keys.index_select(1, c.block_keys) ^ c.salts)  # (B, T)
                self._ublocks = hash_uniform(self._blocks)
            if c.scalar is not None:
                cols, low, span = c.scalar
                self._scalar = low + span * self._ukeys.index_select(1, cols)
            if c.vector is not None:
                cols, low, span = c.vector
                self._vector = low + span * self._ublocks.index_select(1, cols)
            if c.normal_cols is not None:
                self._normals = _box_muller(self._ublocks.index_select(1, c.normal_cols), c.normal_cols.numel() // 2)

    # -- hashes --------------------------------------------------------------------------
    def _key_hash(self, key: int, uniform: bool = False) -> Tensor:
        """seed_hash(seeds, key) (B,), or its uniform."""
        col = self._columns.get(key)
        if col is not None:
            return (self._ukeys if uniform else self._keys)[:, col]
        self.plan.add_key(key)
        h = _mix(self.base ^ key)
        return hash_uniform(h) if uniform else h

    def _block(self, spec: tuple, salts, uniform: bool = False) -> Tensor:
        """The key spec[0]'s hash mixed with each of the salts ``salts()`` (B, n), or uniforms."""
        hit = self._offsets.get(spec)
        if hit is not None:
            off, n = hit
            return (self._ublocks if uniform else self._blocks)[:, off:off + n]
        salt = self.plan.add_block(spec, salts)
        h = _mix(self._key_hash(spec[0])[:, None] ^ salt.to(self.device)[None, :])
        return hash_uniform(h) if uniform else h

    def hashes(self, key: str | int, n: int | None = None) -> Tensor:
        k = _key(key)
        if n is None:
            return self._key_hash(k)
        return self._block((k, "index", n), lambda: _index_salts(n))

    def _uniforms(self, key: int, n: int | None) -> Tensor:
        if n is None:
            return self._key_hash(key, uniform=True)
        return self._block((key, "index", n), lambda: _index_salts(n), uniform=True)

    # -- draws ---------------------------------------------------------------------------
    def uniform(self, key: str, n: int | None = None, low: float = 0.0, high: float = 1.0) -> Tensor:
        spec = (_key(key), n, low, high)
        at = self._uniform_at.get(spec)
        if at is not None:
            return self._scalar[:, at] if n is None else self._vector[:, at:at + n]
        self.plan.add_uniform(spec)
        return low + (high - low) * self._uniforms(spec[0], n)

    def normal(self, key: str, n: int | None = None, mean: float = 0.0, std: float = 1.0) -> Tensor:
        """Box-Muller normals."""
        m = 1 if n is None else n
        spec = (_key(key), m)
        at = self._normal_at.get(spec)
        if at is not None:
            z = self._normals[:, at:at + m]
        else:
            self.plan.add_normal(spec)
            z = _box_muller(self._uniforms(spec[0], 2 * m), m)
        z = mean + std * z
        return z[:, 0] if n is None else z

    def randint(self, key: str, high: int, n: int | None = None) -> Tensor:
        """Integers in [0, high)."""
        return (self.uniform(key, n) * high).long().clamp_max(high - 1)

    def bernoulli(self, key: str, p: float | Tensor, n: int | None = None) -> Tensor:
        return self.uniform(key, n) < p

    def choice(self, key: str, table: Tensor) -> Tensor:
        """Pick one row of ``table`` (K, ...) per sample -> (B, ...)."""
        return on_device(table, self.device)[self.randint(key, table.shape[0])]

    def lattice(self, key: str, cells: int, channels: int = 1, wrap: bool = False) -> Tensor:
        """Uniform [0,1) values on a (cells+1)^2 lattice per sample: (B, C, cells+1, cells+1).

        With ``wrap`` the last row/column repeat the first, so the noise tiles."""
        spec = (_key(key), "lattice", cells, channels, bool(wrap))
        vals = self._block(spec, lambda: _lattice_salts(cells, channels, wrap), uniform=True)
        return vals.reshape(-1, cells + 1, cells + 1, channels).permute(0, 3, 1, 2).contiguous()


_ON_DEVICE: dict[tuple, tuple[object, Tensor]] = {}


def on_device(value: Tensor | float | tuple, device: torch.device | str) -> Tensor:
    """``value`` -- a module-level table, or numbers (a float, nested tuples of floats) made
    float32 -- as a tensor on ``device``, made once per device and shared: never modify it.

    Why: ``torch.tensor(..., device="cuda")`` or ``table.to("cuda")`` inside a render call
    is a blocking host-to-device copy, which waits for every kernel queued so far: a host
    sync on every call, that no op count shows."""
    dev = str(torch.device(device))
    key = (id(value), dev) if isinstance(value, Tensor) else (value, dev)
    hit = _ON_DEVICE.get(key)
    if hit is None:  # the entry keeps a table alive, so its id stays its own
        t = value if isinstance(value, Tensor) else torch.tensor(value, dtype=torch.float32)
        hit = _ON_DEVICE[key] = (value, t.to(device))
    return hit[1]


def to_device(t: Tensor, device: torch.device | str) -> Tensor:
    """A host tensor on ``device``; to a GPU through pinned memory, so the copy does not wait
    for the kernels already queued (``.to("cuda")`` from pageable memory does)."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def in_host_pieces(render: Callable[[Tensor], dict[str, Tensor]], seeds: Tensor, device: torch.device | str,
                   piece: int) -> dict[str, Tensor]:
    """``render(seeds)``, called on pieces of ``piece`` samples when rendering on the host CPU
    (once elsewhere: on CUDA, and on the launch profiler's stand-in for it, ``cpu:0``).

    Why: on the CPU a render call's temporaries grow with the batch; beyond glibc's largest
    mmap threshold (32 MB) every one is mapped afresh and its pages zeroed by the kernel, so
    a 4,096-image materials call spent twice its arithmetic in page faults (and 4 GB). A
    sample does not depend on its batch, so pieces give the same images."""
    if torch.device(device) != torch.device("cpu") or seeds.shape[0] <= piece:
        return render(seeds)
    parts = [render(seeds[i:i + piece]) for i in range(0, seeds.shape[0], piece)]
    return {k: torch.cat([q[k] for q in parts]) for k in parts[0]}


def pixel_grid(resolution: int, batch: int, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates u, v in [0, 1], each (B, H, W)."""
    t = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution
    v, u = torch.meshgrid(t, t, indexing="ij")
    return u.expand(batch, -1, -1), v.expand(batch, -1, -1)


def lattice_values(seeds: Tensor, key: str, cells: int, channels: int = 1, wrap: bool = False) -> Tensor:
    """Uniform [0,1) values on a (cells+1)^2 lattice per sample: (B, C, cells+1, cells+1)
    (:meth:`Rand.lattice` without a plan)."""
    return Rand(seeds).lattice(key, cells, channels, wrap)


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
