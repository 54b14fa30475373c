"""Metrics for intrinsic components and re-rendered images.

A metric is a small dataclass with ``name``, ``higher_is_better``, ``space`` and a one-line
``description``; calling it as ``metric(pred, target, mask=None)`` gives one value per image,
a float64 tensor of shape (B,) on the inputs' device (float32 on Apple's MPS, which has no
float64). ``pred`` / ``target`` are (B, C, H, W) float (C = 3 for LPIPS); ``mask`` is
(B, 1, H, W) (or (B, H, W)) with 1 = evaluate; values > 0.5 count as 1, and a (B, C, H, W)
mask counts a pixel only where every channel is 1. Nothing is computed with gradients.

Two families, told apart by ``space`` (the runner picks the tensors to pass from it):

``encoded`` -- display-space components in [0, 1], the JoIN authors' protocol
    ``mse``     mean squared error over masked pixels and channels.
    ``psnr``    10 log10(1 / mse) (data range 1). Identical inputs give +inf (not capped;
                summaries should use medians or count them); values are not clipped.
    ``ssim``    scikit-image ``structural_similarity`` with its defaults (7x7 uniform window,
                sample covariance), data_range 1, over the colour channels. Unmasked: skimage's
                own mean (which skips a border of (win-1)/2 px). Masked: the full SSIM map
                averaged over masked pixels inside that border (over all masked pixels if the
                mask lies only in the border), so an all-ones mask gives the unmasked value.
                Images smaller than 7 px use the largest odd window that fits; < 3 px is an error.
    ``lpips``   LPIPS v0.1 with AlexNet (``lpips-vgg``: VGG16), inputs mapped to [-1, 1] by
                2x - 1 (not clipped), weights from :mod:`joinbench.lpips_weights` (offline,
                hash-verified). Unmasked: the standard value. Masked: the ``spatial=True``
                map averaged over masked pixels (not identical to the unmasked value even for
                an all-ones mask). The networks need at least 31 px (AlexNet) / 16 px (VGG)
                per side: smaller images are scored on bilinearly upsampled copies (the
                shorter side brought to that size; a mask is upsampled nearest).

``linear`` -- linear components, the IID field's scale-invariant metrics
    ``si-mse``  one least-squares scale alpha = sum(g p) / sum(p^2) per image over all masked
                pixels and channels (alpha = 0 when sum(p^2) <= 1e-5), then the MSE of alpha p
                against g, as ``intrinsic-image-eval`` (no clipping of alpha p at 1, unlike the
                MPI-Sintel MATLAB code).
    ``si-lmse`` Sintel / ARAP: window k = round(0.1 max(H, W)) (at least 2), stride round(k/2);
                windows start at 0, s, 2s, ... <= H - s and are cut at the image border, as in
                ``intrinsic-image-eval``; the mean over windows of each window's si-MSE,
                skipping windows without masked pixels (intrinsic-image-eval counts them as 0:
                ``count_empty_windows=True``, used by the ``arap-luo-si-lmse`` protocol).
    ``lmse``    MIT / Grosse et al. 2009: windows of 20 px, stride 10, per-window alpha;
                sum over windows of SSE(alpha p, g) / sum over windows of sum(g^2). RGB images
                use one alpha per window over all channels (Grosse's code is grayscale). A side
                shorter than 20 px uses one window spanning it (the whole image if both are).
                NaN when the ground truth is zero on every masked pixel.
    ``dssim``   (1 - SSIM) / 2 after scaling the prediction by the si-MSE alpha, with the
                Wang et al. SSIM (11-tap Gaussian window, sigma 1.5, population covariance,
                border cropped), data_range 1, no clipping: this reproduces
                ``intrinsic-image-eval``'s ``kornia.losses.ssim_loss(window_size=11,
                max_val=1, padding="valid")`` after ``scale_matching`` (its "val" mode; the
                "test"-mode line search over alpha is not done). With a mask the SSIM map is
                averaged over masked pixels (as ``ssim``) instead of zeroing both images outside
                the mask. Images smaller than 11 px shrink the window (sigma = radius / 3.5).

Errors and edge cases: NaN or Inf anywhere in ``pred`` or ``target`` (masked-out pixels
included, since the windowed metrics read them) raises :class:`MetricError` naming the metric
and the fix; so do mismatched shapes. An image whose mask is empty gets NaN (no error), as do
the windowed metrics when no window holds a masked pixel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import JoinbenchError
from .registry import register_metric

SPACES = ("encoded", "linear")
ENCODED_METRICS = ("mse", "psnr", "ssim", "lpips")
LINEAR_METRICS = ("si-mse", "si-lmse", "lmse", "dssim")
SCALE_EPS = 1e-5  # sum(p^2) at or below this: alpha = 0 (intrinsic-image-eval, Grosse 2009)


class MetricError(JoinbenchError, ValueError):
    """Inputs a metric cannot score (non-finite values, mismatched shapes, too small)."""


# -- input checks ----------------------------------------------------------------------------

def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _prepare(name: str, pred: Tensor, target: Tensor, mask: Tensor | None):
    """Validate and convert inputs: (pred, target) in the work dtype, mask bool (B,1,H,W) or None."""
    for label, t in (("prediction", pred), ("ground truth", target)):
        if not isinstance(t, Tensor):
            raise MetricError(f"metric {name!r}: the {label} is a {type(t).__name__}, expected a torch.Tensor (B, C, H, W).")
    if pred.ndim != 4 or pred.shape != target.shape:
        raise MetricError(
            f"metric {name!r}: prediction {_shape(pred)} and ground truth {_shape(target)} must have the same "
            f"(B, C, H, W) shape; add a batch dimension with unsqueeze(0) or resize one to the other."
        )
    if pred.shape[0] == 0 or pred.shape[2] == 0 or pred.shape[3] == 0:
        raise MetricError(f"metric {name!r}: empty input {_shape(pred)}.")
    device = pred.device
    dtype = _work_dtype(device)
    target = target.to(device)
    for label, t in (("prediction", pred), ("ground truth", target)):
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            raise MetricError(
                f"metric {name!r}: the {label} holds {int(bad.sum())} NaN/Inf values (of {t.numel()}, masked-out "
                f"pixels included); fix the {'method output' if label == 'prediction' else 'dataset'} or replace "
                f"them (e.g. torch.nan_to_num) before scoring."
            )
    p, g = pred.to(dtype), target.to(dtype)
    if mask is None:
        return p, g, None
    if not isinstance(mask, Tensor):
        raise MetricError(f"metric {name!r}: the mask is a {type(mask).__name__}, expected a torch.Tensor (B, 1, H, W).")
    mask = mask.to(device)
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    b, c, h, w = pred.shape
    if mask.ndim != 4 or mask.shape[0] != b or mask.shape[2:] != pred.shape[2:] or mask.shape[1] not in (1, c):
        raise MetricError(
            f"metric {name!r}: mask {_shape(mask)} does not fit images {_shape(pred)}; expected ({b}, 1, {h}, {w})."
        )
    if mask.is_floating_point() and not bool(torch.isfinite(mask).all()):
        raise MetricError(f"metric {name!r}: the mask holds NaN/Inf values; use 0 (ignore) and 1 (evaluate).")
    m = mask > 0.5
    if m.shape[1] != 1:
        m = m.all(dim=1, keepdim=True)
    return p, g, m


def _mask_or_ones(m: Tensor | None, p: Tensor) -> Tensor:
    if m is None:
        return torch.ones(p.shape[0], 1, *p.shape[2:], dtype=p.dtype, device=p.device)
    return m.to(p.dtype)


def _masked_mean(x: Tensor, mm: Tensor) -> Tensor:
    """Per-image mean of ``x`` (B, C, H, W) over channels and the pixels where ``mm`` (B, 1, H, W) is 1."""
    return (mm * x).sum(dim=(1, 2, 3)) / (mm.sum(dim=(1, 2, 3)) * x.shape[1])


def _scale(p: Tensor, g: Tensor, m: Tensor) -> Tensor:
    """Per-image least-squares alpha (B,1,1,1) over masked pixels and channels; 0 if sum p^2 <= eps."""
    spp = (m * p * p).sum(dim=(1, 2, 3), keepdim=True)
    sgp = (m * g * p).sum(dim=(1, 2, 3), keepdim=True)
    return torch.where(spp > SCALE_EPS, sgp / spp.clamp_min(SCALE_EPS), torch.zeros_like(spp))


def _window_stats(p: Tensor, g: Tensor, m: Tensor, kernel: tuple[int, int], stride: int):
    """Per-window sums over pixels and channels of m g^2, m g p, m p^2, and the masked count x C.

    Each (B, nh, nw). Windows are those of ``avg_pool2d`` (no padding) over the given tensors.
    """
    c = p.shape[1]
    pool = lambda x: F.avg_pool2d(x, kernel, stride, divisor_override=1)  # window sums
    sgg = pool(m * g * g).sum(1)
    sgp = pool(m * g * p).sum(1)
    spp = pool(m * p * p).sum(1)
    n = pool(m).sum(1) * c
    return sgg, sgp, spp, n


def _window_sse(sgg: Tensor, sgp: Tensor, spp: Tensor) -> Tensor:
    """SSE(alpha p, g) per window from its sums, alpha the window's least-squares scale."""
    alpha = torch.where(spp > SCALE_EPS, sgp / spp.clamp_min(SCALE_EPS), torch.zeros_like(spp))
    return (sgg - 2 * alpha * sgp + alpha * alpha * spp).clamp_min(0.0)


# -- base class ------------------------------------------------------------------------------

_FLAGS = ("name", "higher_is_better", "space", "description", "protocol", "aggregate")
AGGREGATES = ("mean", "geometric")  # how a run's per-image values become the table's number


@dataclass
class Metric:
    """A per-image metric: ``metric(pred, target, mask=None) -> Tensor (B,)``.

    A subclass states its flags once, as class keywords, and implements :meth:`compute`::

        @dataclass
        class MSE(Metric, name="mse", space="encoded", description="..."):
            def compute(self, p, g, m): ...

    The flags become fields that the constructor does not take (``MSE()``); those not given
    keep the parent's values (for a direct subclass, the defaults below).
    """

    name: str = ""
    higher_is_better: bool = False
    space: str = "encoded"  # "encoded" | "linear" | "reference" (joinbench.benchmark_metrics)
    description: str = ""
    protocol: str = ""  # the published protocol a benchmark metric follows; tables print it in the heading
    aggregate: str = "mean"  # over images: "mean", or "geometric" (exp of the mean log, as the MIT benchmark)

    def __init_subclass__(cls, **flags):
        super().__init_subclass__()
        unknown = sorted(set(flags) - set(_FLAGS))
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown metric flags {unknown}; use {', '.join(_FLAGS)}")
        if not flags:  # e.g. a variant of a finished metric: it keeps that metric's flags
            return
        # Re-declare every flag (before @dataclass reads the class) as a field the constructor
        # does not take; inherited fields keep their place in the field order.
        inherited = next(b.__dataclass_fields__ for b in cls.__mro__[1:] if "__dataclass_fields__" in vars(b))
        annotations = vars(cls).get("__annotations__")
        if annotations is None:
            annotations = cls.__annotations__ = {}
        for flag in _FLAGS:
            annotations[flag] = inherited[flag].type
            setattr(cls, flag, field(default=flags.get(flag, inherited[flag].default), init=False))

    def __call__(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        p, g, m = _prepare(self.name, pred, target, mask)
        with torch.no_grad():
            return self.compute(p, g, m)

    def compute(self, pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        raise NotImplementedError


# -- encoded-space metrics -------------------------------------------------------------------

@dataclass
class MSE(Metric, name="mse", space="encoded",
          description="mean squared error over masked pixels and channels (encoded components)"):
    """Mean squared error over masked pixels and channels (display space)."""

    def compute(self, p, g, m):
        return _masked_mean((p - g) ** 2, _mask_or_ones(m, p))


@dataclass
class PSNR(Metric, name="psnr", higher_is_better=True, space="encoded",
          description="PSNR in dB, data range 1, from the masked MSE (+inf when identical)"):
    """Peak signal-to-noise ratio in dB from the masked MSE; +inf for identical images."""

    data_range: float = 1.0

    def compute(self, p, g, m):
        mse = MSE().compute(p, g, m)
        return 10.0 * torch.log10(self.data_range**2 / mse)


def _ssim_values(p: Tensor, g: Tensor, m: Tensor | None, *, name: str, win_size: int,
                 gaussian: bool) -> Tensor:
    """skimage SSIM per image; masked images average the SSIM map over masked pixels."""
    from skimage.metrics import structural_similarity

    b, _, h, w = p.shape
    win = min(win_size, h, w)
    win -= 1 - win % 2  # largest odd window that fits
    if win < 3:
        raise MetricError(f"metric {name!r}: images of {h}x{w} px are too small for SSIM (needs at least 3x3).")
    kwargs = {"data_range": 1.0, "channel_axis": -1, "full": True, "win_size": win}
    if gaussian:
        sigma = 1.5 if win == 11 else (win // 2) / 3.5  # skimage sizes the Gaussian from sigma
        kwargs.update(gaussian_weights=True, sigma=sigma, use_sample_covariance=False)
    pn = p.detach().cpu().double().permute(0, 2, 3, 1).numpy()
    gn = g.detach().cpu().double().permute(0, 2, 3, 1).numpy()
    mn = None if m is None else m[:, 0].detach().cpu().numpy()
    pad = (win - 1) // 2
    interior = np.zeros((h, w), dtype=bool)
    interior[pad:h - pad, pad:w - pad] = True
    out = np.empty(b, dtype=np.float64)
    for i in range(b):
        mssim, smap = structural_similarity(pn[i], gn[i], **kwargs)
        if mn is None:
            out[i] = mssim
            continue
        sel = mn[i] & interior
        if not sel.any():
            sel = mn[i]
        out[i] = smap[sel].mean() if sel.any() else np.nan
    return torch.from_numpy(out).to(device=p.device, dtype=p.dtype)


@dataclass
class SSIM(Metric, name="ssim", higher_is_better=True, space="encoded",
          description="SSIM (scikit-image, 7x7 window, data range 1); masked: SSIM map averaged over the mask"):
    """Structural similarity (scikit-image defaults: 7x7 uniform window), data range 1."""

    win_size: int = 7

    def compute(self, p, g, m):
        return _ssim_values(p, g, m, name=self.name, win_size=self.win_size, gaussian=False)


LPIPS_MIN_SIDE = {"alex": 31, "vgg": 16}


@dataclass
class LPIPSMetric(Metric, name="lpips", space="encoded"):
    """Learned perceptual image patch similarity (v0.1), inputs in [0, 1] mapped to [-1, 1]."""

    net: str = "alex"
    batch_size: int = 32

    def __post_init__(self):
        from .lpips_weights import backbone

        self.net = backbone(self.net).net
        self.name = "lpips" if self.net == "alex" else f"lpips-{self.net}"
        arch = "AlexNet" if self.net == "alex" else "VGG16"
        self.description = f"LPIPS v0.1 ({arch}), inputs scaled to [-1, 1]; masked: spatial map averaged over the mask"

    def compute(self, p, g, m):
        from .lpips_weights import lpips_model

        b, c, h, w = p.shape
        if c != 3:
            raise MetricError(f"metric {self.name!r}: needs 3-channel images, got {c} channels.")
        x, y = p.float() * 2 - 1, g.float() * 2 - 1
        side = LPIPS_MIN_SIDE[self.net]
        if min(h, w) < side:  # the trunk cannot take it: score bilinearly upsampled copies
            size = (math.ceil(h * side / min(h, w)), math.ceil(w * side / min(h, w)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            if m is not None:
                m = F.interpolate(m.float(), size=size, mode="nearest") > 0.5
        model = lpips_model(self.net, device=p.device, spatial=m is not None)
        chunks = [model(x[i:i + self.batch_size], y[i:i + self.batch_size]) for i in range(0, b, self.batch_size)]
        d = torch.cat(chunks).to(p.dtype)
        if m is None:
            return d.reshape(b)
        return _masked_mean(d, m.to(p.dtype))  # d is (B, 1, H, W)


# -- linear-space metrics --------------------------------------------------------------------

@dataclass
class SIMSE(Metric, name="si-mse", space="linear",
          description="scale-invariant MSE, one least-squares scale per image over masked pixels and channels"):
    """Scale-invariant MSE: one least-squares scale per image (intrinsic-image-eval)."""

    def compute(self, p, g, m):
        mm = _mask_or_ones(m, p)
        return _masked_mean((_scale(p, g, mm) * p - g) ** 2, mm)


def sintel_window(h: int, w: int, fraction: float = 0.1) -> tuple[int, int]:
    """(window, stride) of the Sintel/ARAP si-LMSE: k = round(0.1 max(H, W)) >= 2, s = round(k / 2)."""
    k = max(2, int(fraction * max(h, w) + 0.5))
    return k, max(1, int(k / 2.0 + 0.5))


@dataclass
class SILMSE(Metric, name="si-lmse", space="linear",
          description="local si-MSE (Sintel/ARAP): windows of 10% of the long side, stride half, mean over windows"):
    """Local scale-invariant MSE, Sintel / ARAP convention (mean of per-window si-MSE)."""

    fraction: float = 0.1
    count_empty_windows: bool = False  # True: windows without masked pixels count as 0 (intrinsic-image-eval)

    def compute(self, p, g, m):
        h, w = p.shape[2:]
        k, s = sintel_window(h, w, self.fraction)
        mm = _mask_or_ones(m, p)
        # Windows start at 0, s, ... <= H - s and are cut at the border: pad with masked-out zeros.
        nh, nw = max(1, (h - s) // s + 1), max(1, (w - s) // s + 1)
        ph, pw = (nh - 1) * s + k - h, (nw - 1) * s + k - w
        pad = lambda x: F.pad(x, (0, pw, 0, ph))
        sgg, sgp, spp, n = _window_stats(pad(p), pad(g), pad(mm), (k, k), s)
        per_window = _window_sse(sgg, sgp, spp) / n.clamp_min(1)
        valid = n > 0
        total = torch.where(valid, per_window, torch.zeros_like(per_window)).sum(dim=(1, 2))
        if self.count_empty_windows:
            valid = torch.ones_like(valid)
        return total / valid.sum(dim=(1, 2)).to(p.dtype)  # 0/0 = NaN: no window holds a masked pixel


@dataclass
class LMSE(Metric, name="lmse", space="linear",
          description="MIT/Grosse LMSE: 20 px windows, stride 10, per-window scale, normalised by sum of g^2"):
    """Local MSE of the MIT Intrinsic Images benchmark (Grosse et al. 2009), normalised."""

    window: int = 20
    stride: int = 10

    def compute(self, p, g, m):
        h, w = p.shape[2:]
        kernel = (min(self.window, h), min(self.window, w))
        sgg, sgp, spp, _ = _window_stats(p, g, _mask_or_ones(m, p), kernel, self.stride)
        return _window_sse(sgg, sgp, spp).sum(dim=(1, 2)) / sgg.sum(dim=(1, 2))


@dataclass
class DSSIM(Metric, name="dssim", space="linear",
          description="(1 - SSIM)/2 after per-image scale matching (11-tap Gaussian SSIM, data range 1)"):
    """Structural dissimilarity (1 - SSIM) / 2 after least-squares scale matching."""

    win_size: int = 11

    def compute(self, p, g, m):
        alpha = _scale(p, g, _mask_or_ones(m, p))
        ssim = _ssim_values(alpha * p, g, m, name=self.name, win_size=self.win_size, gaussian=True)
        return (1.0 - ssim) / 2.0


# -- registration ----------------------------------------------------------------------------

def _register(name: str, cls, **defaults) -> None:
    register_metric(name, cls, description=cls(**defaults).description, **defaults)


_register("mse", MSE)
_register("psnr", PSNR)
_register("ssim", SSIM)
_register("lpips", LPIPSMetric)
_register("lpips-vgg", LPIPSMetric, net="vgg")
_register("si-mse", SIMSE)
_register("si-lmse", SILMSE)
_register("lmse", LMSE)
_register("dssim", DSSIM)

__all__ = [
    "DSSIM",
    "ENCODED_METRICS",
    "LINEAR_METRICS",
    "LMSE",
    "MSE",
    "PSNR",
    "SILMSE",
    "SIMSE",
    "SPACES",
    "SSIM",
    "LPIPSMetric",
    "Metric",
    "MetricError",
    "sintel_window",
]
