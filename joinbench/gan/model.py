"""StyleGAN2 generator and residual discriminator in plain PyTorch (no compiled ops).

The architecture of Karras et al. (StyleGAN2 / StyleGAN2-ADA, config ``auto``), written
compactly from the papers:

* **Mapping** ``z -> w``: pixel norm of z, ``mapping_layers`` equalised-lr fully connected
  layers (width ``w_dim``, learning-rate multiplier 0.01, leaky ReLU), and a tracked
  ``w_avg`` buffer used for truncation (``w = w_avg + psi (w - w_avg)``).
* **Synthesis**: a learned 4x4 constant, then per resolution two 3x3 modulated convolutions
  with weight demodulation (the first upsamples x2), each followed by a per-layer noise
  input with a learned strength, bias and leaky ReLU; skip-style 1x1 toRGB layers whose
  outputs are upsampled and summed. Upsampling is bilinear (``F.interpolate``), which equals
  StyleGAN2's [1, 3, 3, 1] FIR upsampling away from the border. The output is linear
  (no tanh) and lands in [-1, 1] "-ish".
* **Discriminator**: residual (``resnet``) blocks with [1, 3, 3, 1] blur before every
  stride-2 convolution (a fixed depthwise ``conv2d``), a minibatch standard-deviation layer
  and a 4x4 epilogue.

Everything uses the equalised learning rate (weights drawn from N(0, 1), scaled at run time
by ``1 / sqrt(fan_in)``). Modulation is applied to activations instead of per-sample weights
(StyleGAN2-ADA's ``fused_modconv=False``): mathematically identical, and a plain batched
``conv2d``.

Groups: every layer runs a *group* of G networks of one config at once (``groups=G``:
parameters stacked along a leading dim, activations (B, G, ...), one grouped convolution or
batched matmul per layer). ``groups=None`` is the single network, whose parameters have no
group dim (the keys and shapes of the exported files); joinbench.gan.fused builds a domain's
component GANs into one group.

W layout: ``num_ws = 2 log2(resolution) - 2``; conv ``i`` reads ``ws[:, i]`` and the toRGB
after conv ``i`` reads ``ws[:, i + 1]`` (as in StyleGAN2-ADA). Noise inputs, one per
modulated 3x3 conv (``2 log2(resolution) - 3`` of them), are persistent ``noise_const``
buffers of shape (1, 1, r, r) ((G, 1, 1, r, r) for a group); ``synthesis(ws, noise=[...])``
takes explicit (B or 1, 1, r, r) tensors per layer ((B or 1, G, 1, r, r) for a group) so
inversion can optimise them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SQRT2 = math.sqrt(2.0)
NOISE_MODES = ("random", "const", "none")
MIN_RESOLUTION, MAX_RESOLUTION = 8, 512


def _check_resolution(resolution: int) -> int:
    r = int(resolution)
    if r < MIN_RESOLUTION or r > MAX_RESOLUTION or r & (r - 1):
        raise ValueError(f"GAN resolution must be a power of two from {MIN_RESOLUTION} to {MAX_RESOLUTION}, got {resolution}")
    return r


class ConfigDict:
    """``to_dict`` / ``from_dict`` of a config dataclass. ``from_dict`` refuses keys that are
    not fields, unless the class sets ``ignore_unknown_keys`` (then they are dropped)."""

    ignore_unknown_keys: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown and not cls.ignore_unknown_keys:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}")
        return cls(**{k: v for k, v in data.items() if k in known})


class _NetConfig(ConfigDict):
    """Generator and discriminator configs: channels at resolution r are
    ``min(channel_base // r, channel_max)`` (at least 1)."""

    channel_base: int
    channel_max: int

    def channels(self, res: int) -> int:
        return max(1, min(self.channel_base // res, self.channel_max))


@dataclass
class GeneratorConfig(_NetConfig):
    """Generator hyper-parameters. Channels at resolution r: ``min(channel_base // r, channel_max)``."""

    resolution: int = 64
    img_channels: int = 3
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 2
    mapping_lr_mul: float = 0.01
    channel_base: int = 8192
    channel_max: int = 64
    w_avg_beta: float = 0.998  # tracking of w_avg during training (StyleGAN2-ADA)

    def __post_init__(self):
        self.resolution = _check_resolution(self.resolution)
        if self.img_channels < 1 or self.z_dim < 1 or self.w_dim < 1 or self.mapping_layers < 1:
            raise ValueError("img_channels, z_dim, w_dim and mapping_layers must be positive")

    @property
    def num_ws(self) -> int:
        return 2 * int(math.log2(self.resolution)) - 2


@dataclass
class DiscriminatorConfig(_NetConfig):
    """Discriminator hyper-parameters (same channel rule as the generator)."""

    resolution: int = 64
    img_channels: int = 3
    channel_base: int = 8192
    channel_max: int = 64
    mbstd_group_size: int = 4
    mbstd_channels: int = 1

    def __post_init__(self):
        self.resolution = _check_resolution(self.resolution)


# ---------------------------------------------------------------------------------------
# building blocks
#
# Every layer is written for a *group* of G networks at once: activations are laid out
# (B, G, ...) and, with ``groups=G``, each parameter carries a leading group dim. Convolutions
# of the group are one grouped ``conv2d`` and fully connected layers one batched matmul, so
# the G networks cost one kernel per layer (joinbench.gan.fused stacks a domain's three
# component GANs this way). ``groups=None`` is the single network: parameters without the
# group dim (the shipped files' keys and shapes), viewed as a group of one. G is read from the
# parameters at run time, so ``torch.func.functional_call`` may pass parameters with a larger
# group (PTI's per-image copies fold images into it).
# ---------------------------------------------------------------------------------------
def _blur_kernel() -> Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = k[:, None] * k[None, :]
    return k / k.sum()


def blur2d(x: Tensor, kernel: Tensor, pad: int, stride: int = 1) -> Tensor:
    """Depthwise 4x4 FIR filter (zero padding ``pad`` each side), optionally strided."""
    b, c, h, w = x.shape  # channels folded into the batch: one plain conv, no groups (fast double backward)
    y = F.conv2d(F.pad(x.reshape(b * c, 1, h, w), [pad] * 4), kernel.to(x.dtype)[None, None], stride=stride)
    return y.reshape(b, c, y.shape[-2], y.shape[-1])


def upsample2x(x: Tensor) -> Tensor:
    """Bilinear 2x upsampling of (B, C, H, W) or grouped (B, G, C, H, W) maps."""
    if x.ndim == 5:
        return upsample2x(x.flatten(1, 2)).unflatten(1, x.shape[1:3])
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    return x * (x.square().mean(dim=-1, keepdim=True) + eps).rsqrt()


def _shape(groups: int | None, *shape: int) -> tuple[int, ...]:
    return ((groups,) if groups else ()) + shape


class GroupedModule(nn.Module):
    """A layer (or network) of a group of networks; ``lead(t)`` is parameter ``t`` with its group dim."""

    def __init__(self, groups: int | None = None):
        super().__init__()
        if groups is not None and groups < 1:
            raise ValueError(f"groups must be a positive number of networks, got {groups}")
        self.grouped = groups is not None

    def lead(self, t: Tensor) -> Tensor:
        return t if self.grouped else t[None]


def _per_channel(t: Tensor) -> Tensor:
    """(..., C) -> (..., C, 1, 1): per-channel values broadcast over maps (one view, not two unsqueezes)."""
    return t.view(*t.shape, 1, 1)


def grouped_conv2d(x: Tensor, weight: Tensor, **kw: Any) -> Tensor:
    """(B, G, Cin, H, W) activations, (G, Cout, Cin, k, k) weights -> (B, G, Cout, H', W')."""
    g = weight.shape[0]
    y = F.conv2d(x.flatten(1, 2), weight.flatten(0, 1), groups=g, **kw)
    return y.unflatten(1, (g, weight.shape[1]))


def grouped_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """(B, G, I) inputs, (G, O, I) weights, (G, O) bias -> (B, G, O): one batched matmul."""
    xt, wt = x.transpose(0, 1), weight.transpose(1, 2)
    y = torch.bmm(xt, wt) if bias is None else torch.baddbmm(bias[:, None, :].to(x.dtype), xt, wt)
    return y.transpose(0, 1)


class EqualLinear(GroupedModule):
    """Fully connected layer with equalised learning rate and optional lr multiplier; (B, G, I) -> (B, G, O)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: str | None = None, groups: int | None = None):
        super().__init__(groups)
        self.weight = nn.Parameter(torch.randn(_shape(groups, out_features, in_features)) / lr_mul)
        self.bias = nn.Parameter(torch.full(_shape(groups, out_features), float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        b = self.lead(self.bias) * self.bias_gain if self.bias is not None else None
        x = grouped_linear(x, (self.lead(self.weight) * self.weight_gain).to(x.dtype), b)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * SQRT2
        return x


class EqualConv2d(GroupedModule):
    """Convolution with equalised learning rate; ``down`` blurs and strides by 2. (B, G, C, H, W) maps."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str | None = "lrelu", down: bool = False, gain: float = 1.0, groups: int | None = None):
        super().__init__(groups)
        self.weight = nn.Parameter(torch.randn(_shape(groups, out_channels, in_channels, kernel_size, kernel_size)))
        self.bias = nn.Parameter(torch.zeros(_shape(groups, out_channels))) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.activation, self.down, self.gain, self.k = activation, down, gain, kernel_size
        if down:
            self.register_buffer("blur", _blur_kernel(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        w = (self.lead(self.weight) * self.weight_gain).to(x.dtype)
        if self.down:  # anti-aliased: blur the (B, G * C) maps, then convolve
            flat = x.flatten(1, 2)
            if self.k == 1:  # 2x decimation, then 1x1
                x = grouped_conv2d(blur2d(flat, self.blur, pad=1, stride=2).unflatten(1, x.shape[1:3]), w)
            else:  # blur (H -> H + 1), then 3x3 stride 2 (-> H / 2)
                x = grouped_conv2d(blur2d(flat, self.blur, pad=2).unflatten(1, x.shape[1:3]), w, stride=2)
        else:
            x = grouped_conv2d(x, w, padding=self.k // 2)
        if self.bias is not None:
            x = x + _per_channel(self.lead(self.bias).to(x.dtype))
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * SQRT2
        return x * self.gain if self.gain != 1.0 else x


class ModulatedConv2d(GroupedModule):
    """Style-modulated convolution with optional demodulation and 2x upsampling."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int,
                 demodulate: bool = True, up: bool = False, groups: int | None = None):
        super().__init__(groups)
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0, groups=groups)
        self.weight = nn.Parameter(torch.randn(_shape(groups, out_channels, in_channels, kernel_size, kernel_size)))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.demodulate, self.up, self.k = demodulate, up, kernel_size

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w)  # (B, G, Cin)
        weight = self.lead(self.weight) * self.weight_gain  # (G, Cout, Cin, k, k)
        x = x * _per_channel(styles.to(x.dtype))
        if self.up:
            x = upsample2x(x)
        x = grouped_conv2d(x, weight.to(x.dtype), padding=self.k // 2)
        if self.demodulate:  # 1 / ||w * s|| per sample and output channel, at least float32 (not bf16)
            dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
            with torch.autocast(device_type=x.device.type, enabled=False):
                wsq = weight.to(dtype).square().sum(dim=[3, 4])  # (G, Cout, Cin)
                dcoefs = (grouped_linear(styles.to(dtype).square(), wsq) + 1e-8).rsqrt()  # (B, G, Cout)
            x = x * _per_channel(dcoefs.to(x.dtype))
        return x


class StyledConv(GroupedModule):
    """Modulated 3x3 conv + noise (learned strength) + bias + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False,
                 groups: int | None = None):
        super().__init__(groups)
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, demodulate=True, up=up, groups=groups)
        self.noise_strength = nn.Parameter(torch.zeros(_shape(groups)))
        self.bias = nn.Parameter(torch.zeros(_shape(groups, out_channels)))
        self.register_buffer("noise_const", torch.randn(_shape(groups, 1, 1, resolution, resolution)))
        self.resolution = resolution

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None) -> Tensor:
        x = self.conv(x, w)
        if noise is not None:  # (B or 1, G, 1, r, r)
            x = x + noise.to(x.dtype) * self.lead(self.noise_strength).to(x.dtype).view(-1, 1, 1, 1)
        x = x + _per_channel(self.lead(self.bias).to(x.dtype))
        return F.leaky_relu(x, 0.2) * SQRT2


class ToRGB(GroupedModule):
    def __init__(self, in_channels: int, img_channels: int, w_dim: int, groups: int | None = None):
        super().__init__(groups)
        self.conv = ModulatedConv2d(in_channels, img_channels, 1, w_dim, demodulate=False, groups=groups)
        self.bias = nn.Parameter(torch.zeros(_shape(groups, img_channels)))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.conv(x, w) + _per_channel(self.lead(self.bias).to(x.dtype))


# ---------------------------------------------------------------------------------------
# generator
# ---------------------------------------------------------------------------------------
class MappingNetwork(GroupedModule):
    """z -> w; ``w_avg`` (tracked during training) is the truncation centre.
    Single: (B, z_dim) -> (B, w_dim); grouped: (B, G, z_dim) -> (B, G, w_dim)."""

    def __init__(self, cfg: GeneratorConfig, groups: int | None = None):
        super().__init__(groups)
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_mul=cfg.mapping_lr_mul, activation="lrelu", groups=groups)
                                    for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("w_avg", torch.zeros(_shape(groups, cfg.w_dim)))
        self.z_dim, self.w_dim = cfg.z_dim, cfg.w_dim

    def forward(self, z: Tensor, truncation_psi: float = 1.0) -> Tensor:
        nd = 3 if self.grouped else 2
        if z.ndim != nd or z.shape[-1] != self.z_dim:
            raise ValueError(f"z must be ({'B, G, ' if self.grouped else 'B, '}{self.z_dim}), got {tuple(z.shape)}")
        x = normalize_2nd_moment(z if self.grouped else z[:, None])
        for layer in self.layers:
            x = layer(x)
        if truncation_psi != 1.0:
            x = self.lead(self.w_avg).to(x.dtype).lerp(x, truncation_psi)
        return x if self.grouped else x[:, 0]


class SynthesisNetwork(GroupedModule):
    """ws -> image; see the module docstring for the W and noise layout."""

    def __init__(self, cfg: GeneratorConfig, groups: int | None = None):
        super().__init__(groups)
        log2 = int(math.log2(cfg.resolution))
        c4 = cfg.channels(4)
        self.const = nn.Parameter(torch.randn(_shape(groups, c4, 4, 4)))
        self.convs = nn.ModuleList([StyledConv(c4, c4, cfg.w_dim, 4, groups=groups)])
        self.torgbs = nn.ModuleList([ToRGB(c4, cfg.img_channels, cfg.w_dim, groups=groups)])
        for i in range(3, log2 + 1):
            res = 2 ** i
            cin, cout = cfg.channels(res // 2), cfg.channels(res)
            self.convs.append(StyledConv(cin, cout, cfg.w_dim, res, up=True, groups=groups))
            self.convs.append(StyledConv(cout, cout, cfg.w_dim, res, groups=groups))
            self.torgbs.append(ToRGB(cout, cfg.img_channels, cfg.w_dim, groups=groups))
        self.num_ws = len(self.convs) + 1
        self.w_dim, self.resolution, self.img_channels = cfg.w_dim, cfg.resolution, cfg.img_channels

    def noise_shapes(self) -> list[tuple[int, ...]]:
        """Per layer: (1, 1, r, r), or (1, G, 1, r, r) for a group."""
        if self.grouped:
            return [(1, self.const.shape[0], 1, c.resolution, c.resolution) for c in self.convs]
        return [(1, 1, c.resolution, c.resolution) for c in self.convs]

    def forward(self, ws: Tensor, noise: Sequence[Tensor | None] | None = None, noise_mode: str = "random") -> Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if noise is not None and len(noise) != len(self.convs):
            raise ValueError(f"noise must hold {len(self.convs)} tensors (one per layer), got {len(noise)}")
        g = self.lead(self.const).shape[0]
        nd = 2 if self.grouped else 1  # leading dims: (B, G) or (B,)
        if ws.ndim == nd + 1:  # W: one w for every layer
            ws = ws[..., None, :].expand(*ws.shape[:nd], self.num_ws, -1)
        if ws.ndim != nd + 2 or ws.shape[nd:] != (self.num_ws, self.w_dim) or (self.grouped and ws.shape[1] != g):
            grp = f"B, {g}, " if self.grouped else "B, "
            raise ValueError(f"ws must be ({grp}{self.w_dim}) or ({grp}{self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        if not self.grouped:
            ws, noise = ws[:, None], None if noise is None else [None if n is None else n[:, None] for n in noise]
        b = ws.shape[0]

        def layer_noise(i: int) -> Tensor | None:  # (B or 1, G, 1, r, r)
            if noise is not None and noise[i] is not None:
                return noise[i]
            if noise_mode == "random":
                r = self.convs[i].resolution
                return torch.randn(b, g, 1, r, r, device=ws.device, dtype=ws.dtype)
            if noise_mode == "const":
                return self.lead(self.convs[i].noise_const).transpose(0, 1)
            return None

        x = self.lead(self.const)[None].expand(b, -1, -1, -1, -1)
        x = self.convs[0](x, ws[:, :, 0], layer_noise(0))
        img = self.torgbs[0](x, ws[:, :, 1])
        for j, torgb in enumerate(self.torgbs[1:]):
            i = 1 + 2 * j
            x = self.convs[i](x, ws[:, :, i], layer_noise(i))
            x = self.convs[i + 1](x, ws[:, :, i + 1], layer_noise(i + 1))
            img = upsample2x(img).to(x.dtype) + torgb(x, ws[:, :, i + 2])
        return img if self.grouped else img[:, 0]


class Generator(nn.Module):
    """StyleGAN2 generator: ``G(z)``; ``G.mapping(z, truncation_psi)``; ``G.synthesis(ws, noise, noise_mode)``.

    ``groups=N``: N generators of this config as one network (stacked parameters, inputs and
    outputs (B, N, ...)); see :class:`joinbench.gan.fused.FusedGenerator`."""

    def __init__(self, cfg: GeneratorConfig | None = None, groups: int | None = None, **overrides: Any):
        super().__init__()
        cfg = cfg or GeneratorConfig(**overrides)
        self.config = cfg
        self.mapping = MappingNetwork(cfg, groups)
        self.synthesis = SynthesisNetwork(cfg, groups)

    z_dim = property(lambda self: self.config.z_dim)
    w_dim = property(lambda self: self.config.w_dim)
    resolution = property(lambda self: self.config.resolution)
    img_channels = property(lambda self: self.config.img_channels)
    num_ws = property(lambda self: self.synthesis.num_ws)
    grouped = property(lambda self: self.synthesis.grouped)

    def forward(self, z: Tensor, truncation_psi: float = 1.0, noise: Sequence[Tensor | None] | None = None,
                noise_mode: str = "random") -> Tensor:
        return self.synthesis(self.mapping(z, truncation_psi), noise=noise, noise_mode=noise_mode)

    def noise_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the per-layer noise inputs, in synthesis order: (1, 1, r, r), or (1, G, 1, r, r) for a group."""
        return self.synthesis.noise_shapes()

    def noise_buffers(self) -> list[Tensor]:
        """What ``noise_mode='const'`` uses, in order: the registered ``noise_const`` buffers
        (1, 1, r, r), or for a group their (1, G, 1, r, r) views."""
        if self.grouped:
            return [c.noise_const.transpose(0, 1) for c in self.synthesis.convs]
        return [c.noise_const for c in self.synthesis.convs]

    def make_noise(self, batch: int = 1, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> list[Tensor]:
        """Fresh N(0, 1) noise maps per layer, (batch, 1, r, r) or (batch, G, 1, r, r), optionally from ``generator``."""
        dev = device if device is not None else (generator.device if generator is not None else self.synthesis.const.device)
        return [torch.randn(batch, *s[1:], generator=generator, device=dev) for s in self.noise_shapes()]

    @torch.no_grad()
    def mean_latent(self, n: int = 10_000, seed: int = 0, truncation_psi: float = 1.0, chunk: int = 4096) -> Tensor:
        """Mean of ``n`` mapped samples (z from a CPU ``torch.Generator`` seeded ``seed``): (1, w_dim),
        or (1, G, w_dim) for a group (every member maps the same z)."""
        gen = torch.Generator().manual_seed(int(seed))
        ref = self.synthesis.const
        lead = (self.synthesis.const.shape[0],) if self.grouped else ()
        total = torch.zeros(*lead, self.w_dim, dtype=torch.float64, device=ref.device)
        done = 0
        while done < n:
            m = min(chunk, n - done)
            z = torch.randn(m, self.z_dim, generator=gen).to(ref.device, ref.dtype)
            if self.grouped:
                z = z[:, None].expand(-1, lead[0], -1)
            total += self.mapping(z, truncation_psi).double().sum(0)
            done += m
        return (total / n).float()[None]


# ---------------------------------------------------------------------------------------
# discriminator
# ---------------------------------------------------------------------------------------
class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int | None = None):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, groups=groups)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, down=True, gain=math.sqrt(0.5), groups=groups)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, activation=None, down=True,
                                gain=math.sqrt(0.5), groups=groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.conv1(self.conv0(x))


def mbstd_group(n: int, group_size: int) -> int:
    """The minibatch-std group size for a batch of ``n``: at most ``group_size``, dividing ``n``."""
    g = max(1, min(group_size, n))
    while n % g:
        g -= 1
    return g


def minibatch_stddev(x: Tensor, group_size: int, num_channels: int = 1) -> Tensor:
    """Append the std over groups of samples (averaged over features and pixels) as channels.

    x: (n, C, H, W), or (n, G, C, H, W) for a group of networks (statistics per network).
    Groups hold the samples ``k, k + n/g, ...`` (StyleGAN2's layout), so a batch of m samples
    per image stacked sample-major keeps each group within one image when ``group_size`` divides m."""
    if x.ndim == 4:
        return minibatch_stddev(x[:, None], group_size, num_channels)[:, 0]
    n, gr, c, h, w = x.shape
    g = mbstd_group(n, group_size)
    y = x.float().reshape(g, -1, gr, num_channels, c // num_channels, h, w)
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()  # (n/g, G, F, c/F, h, w)
    y = y.mean(dim=[3, 4, 5]).reshape(-1, gr, num_channels, 1, 1).repeat(g, 1, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=2)


class Discriminator(GroupedModule):
    """Residual StyleGAN2 discriminator: image (B, C, H, W) -> logits (B, 1); with ``groups=N``,
    (B, N, C, H, W) -> (B, N, 1) (see :class:`joinbench.gan.fused.FusedDiscriminator`)."""

    def __init__(self, cfg: DiscriminatorConfig | None = None, groups: int | None = None, **overrides: Any):
        super().__init__(groups)
        cfg = cfg or DiscriminatorConfig(**overrides)
        self.config = cfg
        log2 = int(math.log2(cfg.resolution))
        self.from_rgb = EqualConv2d(cfg.img_channels, cfg.channels(cfg.resolution), 1, groups=groups)
        self.blocks = nn.ModuleList(DiscriminatorBlock(cfg.channels(2 ** i), cfg.channels(2 ** (i - 1)), groups)
                                    for i in range(log2, 2, -1))
        c4 = cfg.channels(4)
        self.conv = EqualConv2d(c4 + cfg.mbstd_channels, c4, 3, groups=groups)
        self.fc = EqualLinear(c4 * 16, c4, activation="lrelu", groups=groups)
        self.out = EqualLinear(c4, 1, groups=groups)

    def forward(self, img: Tensor, mbstd_group_size: int | None = None) -> Tensor:
        """``mbstd_group_size`` overrides the config's (e.g. the number of samples per image
        when several images' samples share one call, stacked sample-major)."""
        if self.grouped:
            return self.logits(self.features(img), mbstd_group_size)
        self._check(img, 4)
        return self.logits(self.features(img[:, None]), mbstd_group_size)[:, 0]

    def _check(self, img: Tensor, ndim: int) -> None:
        cfg = self.config
        shape = (cfg.img_channels, cfg.resolution, cfg.resolution)
        if img.ndim != ndim or img.shape[-3:] != shape:
            raise ValueError(f"D expects (B, {'G, ' if self.grouped else ''}{', '.join(map(str, shape))}), "
                             f"got {tuple(img.shape)}")

    def features(self, img: Tensor) -> Tensor:
        """The residual trunk: images (B, G, C, R, R) (G = 1 for a single network) -> (B, G,
        C4, 4, 4), before minibatch std. Split from :meth:`logits` so samples scored with
        different minibatch-std groups (PTI's pivot and its neighbours) share one pass through
        the trunk."""
        self._check(img, 5)
        x = self.from_rgb(img)
        for block in self.blocks:
            x = block(x)
        return x

    def logits(self, x: Tensor, mbstd_group_size: int | None = None) -> Tensor:
        """Minibatch std and the 4x4 epilogue: trunk features (B, G, C4, 4, 4) -> (B, G, 1)."""
        cfg = self.config
        x = minibatch_stddev(x, mbstd_group_size or cfg.mbstd_group_size, cfg.mbstd_channels)
        return self.out(self.fc(self.conv(x).flatten(2)))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def fp16_bytes(module: nn.Module) -> int:
    """Bytes of the module's persistent state (parameters and buffers) stored as float16."""
    return 2 * sum(t.numel() for t in module.state_dict().values())


__all__ = [
    "Discriminator",
    "DiscriminatorConfig",
    "Generator",
    "GeneratorConfig",
    "NOISE_MODES",
    "count_parameters",
    "fp16_bytes",
    "minibatch_stddev",
]
