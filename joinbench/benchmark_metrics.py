"""Real-image benchmark metrics, each following one published protocol, with the protocol
declared on the metric (``metric.protocol``) so every table heading carries it.

Why a separate family: IIW, MAW and ARAP are not scored by comparing two images of the same
size. IIW has sparse human judgements, MAW measured colours of masked regions, and ARAP's
protocols compare at a fixed working resolution. Any of these read from the run-resolution
square image would mislead. These metrics are *reference* metrics
(``space = "reference"``): ``metric(pred, references)`` scores a method's predicted **linear**
component (``metric.component``, the albedo), shaped (B, C, H, W) at whatever resolution it was
predicted, against each image's own reference data. A dataset hands that data over in
``sample.meta["references"][metric.reference]`` (``"iiw"``, ``"maw"`` or ``"arap"``). The
runner calls :func:`score_references` for them. An image a protocol cannot score gets no value
(NaN, left out of the means, never 0).

``whdr`` (and ``whdr-20``, ``-eq``, ``-ineq``, ``-srgb`` variants), Bell et al. 2014, as in the IIW
release's ``whdr.py`` and ``intrinsic-image-eval``'s ``metrics_iiw.py``: for each comparison the
reflectance is read at the nearest pixel (row ⌊y·H⌋, column ⌊x·W⌋ of the prediction), averaged
over channels and floored at 1e-10. The algorithm says point 1 is darker when l2/l1 > 1+δ, point 2
when l1/l2 > 1+δ, else "about equal" (strict inequalities). A comparison counts only when its
``darker`` is '1', '2' or 'E', its weight ``darker_score`` is present and > 0, and both points are
opaque. WHDR is the weight of the disagreeing comparisons over the total weight. ``-eq`` / ``-ineq``
keep only the 'E' / the '1'-'2' comparisons (``intrinsic-image-eval``'s WHDR_eq / WHDR_ineq). δ
defaults to 0.10; ``-20`` is δ = 0.20. Colour space ``linear`` (default): the prediction as the
method's linear albedo, as ``whdr.py`` expects. ``srgb``: ``max(x, 0) ** (1 / 2.2)`` per channel
first, which is what ``intrinsic-image-eval`` calls "srgb" (CRefNet reports WHDR that way).

``maw-intensity`` / ``maw-chromaticity``, Wu et al. 2023, as the release's ``numerical_albedo.py``
(``run_cmp.py --loss si --metric mean`` and ``--loss per_si --metric deltae``). The prediction is
clipped to [0, 1], sRGB-encoded to 8 bits, resized bilinearly to the 320 x 240 working resolution
(Pillow) and linearised. Each labelled region's statistic is the mean of its linear pixels: the
release's ``_find_robust_median`` returns that mean. Region weights are pixel counts. Intensity:
one weighted least-squares scale θ fits the prediction's channel-mean region values x to the
measured ones y. The error is the weighted mean of (y - θx)², reported ×100. Chromaticity: each
region is scaled by its own θ = y/x. The error is the weighted mean CIEDE2000 between the sRGB
colours (scikit-image ``rgb2lab`` / ``deltaE_ciede2000``, D65).

``arap-careaga-*`` and ``arap-luo-*``: the two ARAP protocols, see :class:`ARAPMetric`.
``lmse-mit`` (a dense linear metric, not a reference one): the MIT LMSE as the field reports it
(Barron & Malik's ``MIT_mse.m``), averaged over images by a geometric mean (``aggregate =
"geometric"``), see :class:`MITLMSE`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .metrics import DSSIM, LMSE, SILMSE, SIMSE, SSIM, Metric, MetricError, _mask_or_ones, _scale
from .registry import register_metric

REFERENCE_SPACE = "reference"
MATLAB_EPS = float(np.finfo(np.float64).eps)  # MIT_mse.m divides by max(eps, ...)


# -- the reference-metric contract ---------------------------------------------------------

def _check_prediction(name: str, pred: Tensor) -> Tensor:
    if not isinstance(pred, Tensor) or pred.ndim != 4 or 0 in pred.shape:
        shape = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
        raise MetricError(f"metric {name!r}: expected a (B, C, H, W) tensor of linear predictions, got {shape}.")
    bad = ~torch.isfinite(pred)
    if bool(bad.any()):
        raise MetricError(f"metric {name!r}: the prediction holds {int(bad.sum())} NaN/Inf values; fix the method "
                          f"output or replace them (e.g. torch.nan_to_num) before scoring.")
    return pred.detach().to("cpu", torch.float64)


@dataclass
class ReferenceMetric(Metric, space=REFERENCE_SPACE):
    """Scores a predicted linear component against each image's reference data.

    Subclasses set ``reference`` (the kind of data: ``"iiw"``, ``"maw"``, ``"arap"``) and
    implement :meth:`score_one`, which returns a float or None (no value for this image)."""

    reference: ClassVar[str] = ""
    component: ClassVar[str] = "albedo"

    def __call__(self, pred: Tensor, references: list[Any]) -> Tensor:  # type: ignore[override]
        p = _check_prediction(self.name, pred)
        if len(references) != p.shape[0]:
            raise MetricError(f"metric {self.name!r}: {p.shape[0]} predictions but {len(references)} references.")
        with torch.no_grad():
            values = [self.score_one(p[i], ref) for i, ref in enumerate(references)]
        return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float64)

    def score_one(self, pred: Tensor, reference: Any) -> float | None:
        raise NotImplementedError


def score_references(batch, dec, metrics: list, unscorable: list[set[str]]) -> dict[str, dict[str, list[float]]]:
    """{component: {metric name: per-image values}} of the reference metrics among ``metrics``.

    ``unscorable[i]``: the components image ``i`` has no prediction for (failed image: every
    component). An image without the metric's reference, or without that prediction, gets NaN.
    A prediction the method made at its own size (``dec.extras["native"][id][component]``,
    e.g. ``predictions:DIR`` at the photo's size) is scored as it is, not at the run's size."""
    rows: dict[str, dict[str, list[float]]] = {}
    native = dec.extras.get("native", {})
    for m in metrics:
        if m.space != REFERENCE_SPACE:
            continue
        refs = [(meta or {}).get("references", {}).get(m.reference) for meta in (batch.meta or [{}] * len(batch))]
        ok = [i for i, ref in enumerate(refs) if ref is not None and m.component not in unscorable[i]]
        own = {i: native[batch.ids[i]][m.component] for i in ok if m.component in native.get(batch.ids[i], {})}
        ok = [i for i in ok if i not in own]
        values = [math.nan] * len(batch)
        if ok:
            pred = dec.component(m.component)
            out = m(pred[ok], [refs[i] for i in ok])
            for j, i in enumerate(ok):
                values[i] = float(out[j])
        for i, pred in own.items():
            values[i] = float(m(pred[None], [refs[i]])[0])
        rows.setdefault(m.component, {})[m.name] = values
    return rows


# -- WHDR (Intrinsic Images in the Wild) ---------------------------------------------------

WHDR_PAIRS = {"all": "all pairs", "eq": "'E' pairs", "ineq": "'1'/'2' pairs"}
WHDR_SPACES = ("linear", "srgb")
SRGB_GAMMA = 2.2  # intrinsic-image-eval's rgb_to_srgb: max(x, 0) ** (1 / 2.2)


def whdr_name(delta: float, colour_space: str, pairs: str) -> str:
    """``whdr``, ``whdr-20``, ``whdr-eq``, ``whdr-20-ineq-srgb``, ..."""
    d = "" if math.isclose(delta, 0.10) else f"-{round(delta * 100):d}"
    return "whdr" + d + ("" if pairs == "all" else f"-{pairs}") + ("" if colour_space == "linear" else f"-{colour_space}")


@dataclass
class WHDR(ReferenceMetric, name="whdr", description=""):
    """Weighted human disagreement rate (Bell et al. 2014) of the albedo on IIW judgements."""

    reference: ClassVar[str] = "iiw"
    delta: float = 0.10
    colour_space: str = "linear"
    pairs: str = "all"

    def __post_init__(self):
        if not (isinstance(self.delta, (int, float)) and 0 < self.delta < 10):
            raise MetricError(f"metric 'whdr': delta must be a number in (0, 10), got {self.delta!r} (0.10 or 0.20 in the literature).")
        if self.colour_space not in WHDR_SPACES:
            raise MetricError(f"metric 'whdr': colour_space must be one of {', '.join(WHDR_SPACES)}, got {self.colour_space!r}.")
        if self.pairs not in WHDR_PAIRS:
            raise MetricError(f"metric 'whdr': pairs must be one of {', '.join(WHDR_PAIRS)}, got {self.pairs!r}.")
        self.delta = float(self.delta)
        self.name = whdr_name(self.delta, self.colour_space, self.pairs)
        space = "linear" if self.colour_space == "linear" else "sRGB γ=2.2"
        subset = "" if self.pairs == "all" else f", {WHDR_PAIRS[self.pairs]}"
        self.protocol = f"δ={self.delta:.2f}, {space}{subset}"
        self.description = (f"IIW weighted human disagreement rate of the albedo ({self.protocol}); nearest pixel, "
                            "channel mean, strict ratio at 1+δ")

    def score_one(self, pred: Tensor, judgements) -> float | None:
        img = pred.clamp_min(0.0) ** (1.0 / SRGB_GAMMA) if self.colour_space == "srgb" else pred
        lum = img.mean(dim=0)  # (H, W): "convert to grayscale"
        h, w = lum.shape
        j = judgements
        counted = torch.as_tensor(j.counted, dtype=torch.bool)
        human = torch.as_tensor(j.darker, dtype=torch.int64)  # 0 = 'E', 1 = '1', 2 = '2' (others: not counted)
        if self.pairs == "eq":
            counted = counted & (human == 0)
        elif self.pairs == "ineq":
            counted = counted & (human != 0)
        if not bool(counted.any()):
            return None

        def reflectance(x, y):
            rows = torch.as_tensor(np.floor(np.asarray(y, dtype=np.float64) * h), dtype=torch.int64).clamp(0, h - 1)
            cols = torch.as_tensor(np.floor(np.asarray(x, dtype=np.float64) * w), dtype=torch.int64).clamp(0, w - 1)
            return lum[rows, cols].clamp_min(1e-10)

        l1, l2 = reflectance(j.x1, j.y1), reflectance(j.x2, j.y2)
        alg = torch.where(l2 / l1 > 1.0 + self.delta, 1, torch.where(l1 / l2 > 1.0 + self.delta, 2, 0))
        weight = torch.as_tensor(j.weight, dtype=torch.float64)[counted]
        wrong = (alg != human)[counted]
        return float((weight * wrong).sum() / weight.sum())


# -- MAW (Measured Albedo in the Wild) ------------------------------------------------------

MAW_SIZE = (320, 240)  # (width, height): the release resizes prediction and mask to this
MAW_QUANTITIES = {"intensity": "×100, one scale over all regions", "chromaticity": "CIEDE2000, one scale per region"}


def srgb_oetf(x: np.ndarray) -> np.ndarray:
    """The MAW release's ``lin2srgb``: the sRGB OETF, capped at 1 (no lower clip)."""
    x = np.asarray(x, dtype=np.float64)
    s = np.where(x > 0.0031308, 1.055 * np.power(np.maximum(x, 0.0031308), 1 / 2.4) - 0.055, 12.92 * x)
    return np.minimum(s, 1.0)


def srgb_eotf(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    return np.where(s > 0.04045, ((np.maximum(s, 0.04045) + 0.055) / 1.055) ** 2.4, s / 12.92)


def maw_prediction(pred: Tensor) -> np.ndarray:
    """(3, H, W) linear albedo -> (240, 320, 3) linear, through the release's path for float
    predictions: clip to [0, 1], sRGB 8-bit, Pillow bilinear resize to 320 x 240, linearise."""
    from PIL import Image

    lin = np.clip(pred.permute(1, 2, 0).numpy(), 0.0, 1.0)
    codes = np.round(srgb_oetf(lin) * 255).astype(np.uint8)
    resized = Image.fromarray(codes).resize(MAW_SIZE, resample=Image.BILINEAR)
    return srgb_eotf(np.asarray(resized, dtype=np.float64) / 255)


def maw_regions(labels: np.ndarray, values: list[int]) -> list[np.ndarray]:
    """Boolean (240, 320) masks of the labelled regions ``values``, after the release's
    nearest-neighbour resize of the label image to 320 x 240."""
    from PIL import Image

    resized = np.asarray(Image.fromarray(labels).resize(MAW_SIZE, resample=Image.NEAREST))
    return [resized == v for v in values]


@dataclass
class MAWError(ReferenceMetric, name="maw-intensity", description=""):
    """MAW albedo error against measured region colours (intensity or chromaticity)."""

    reference: ClassVar[str] = "maw"
    quantity: str = "intensity"

    def __post_init__(self):
        if self.quantity not in MAW_QUANTITIES:
            raise MetricError(f"metric 'maw': quantity must be one of {', '.join(MAW_QUANTITIES)}, got {self.quantity!r}.")
        self.name = f"maw-{self.quantity}"
        self.protocol = f"{MAW_QUANTITIES[self.quantity]}, 320×240"
        self.description = (f"MAW albedo {self.quantity} error against measured region albedo ({self.protocol}; "
                            "Wu et al. 2023 release protocol)")

    def score_one(self, pred: Tensor, regions) -> float | None:
        from skimage.color import deltaE_ciede2000, rgb2lab

        albedo = maw_prediction(pred)
        stats, truth, weights = [], [], []
        for mask, colour in zip(maw_regions(regions.labels, regions.values), regions.albedo):
            n = int(mask.sum())
            if n == 0:  # the region vanished at 320 x 240
                continue
            stats.append(albedo[mask].mean(axis=0))
            truth.append(np.asarray(colour, dtype=np.float64))
            weights.append(n)
        if not weights:
            return None
        stats, truth, w = np.array(stats), np.array(truth), np.array(weights, dtype=np.float64)
        x, y = stats.mean(axis=1), truth.mean(axis=1)
        if self.quantity == "intensity":
            theta = (w * x * y).sum() / max((w * x * x).sum(), 1e-6)
            errors = (y - theta * x) ** 2
            return 100.0 * float((w * errors).sum() / w.sum())
        theta = x * y / np.maximum(x * x, 1e-6)
        scaled = theta[:, None] * stats
        errors = deltaE_ciede2000(rgb2lab(srgb_oetf(truth)), rgb2lab(srgb_oetf(scaled)))
        return float((w * errors).sum() / w.sum())


# -- ARAP: two protocols ---------------------------------------------------------------------

ARAP_PROTOCOLS = {
    # Careaga & Aksoy 2023: albedo at 512 px on the long side. LMSE and RMSE as in Careaga's
    # chrislib (lmse_rgb: 20 px windows, shift 10, one scale per window over the channels;
    # rmse_error); the global least-squares scale before RMSE / SSIM and the SSIM settings
    # (scikit-image defaults, as joinbench's `ssim`) are joinbench's choices.
    "careaga": ("lmse", "rmse", "ssim"),
    # intrinsic-image-eval (Luo et al.: CRefNet, IntrinsicDiffusion): at the ground truth's own
    # resolution, mask > 0.99, scenes of LUO_EXCLUDED left out, "val" mode DSSIM.
    "luo": ("si-mse", "si-lmse", "dssim"),
}
LUO_EXCLUDED = ("amsterdam", "redhead", "butterfly", "office", "caterpillar", "strawberries", "tiger")
CAREAGA_SIDE = 512


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(C, H, W) -> (C, *size): area averaging when shrinking both sides, else bilinear."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    mode = "area" if x.shape[-2] >= size[0] and x.shape[-1] >= size[1] else "bilinear"
    extra = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x[None], size=size, mode=mode, **extra)[0]


def careaga_grid(height: int, width: int, side: int = CAREAGA_SIDE) -> tuple[int, int]:
    """(H, W) with the long side ``side`` and the aspect ratio kept (rounded)."""
    s = side / max(height, width)
    return max(1, round(height * s)), max(1, round(width * s))


@dataclass
class ARAPMetric(ReferenceMetric, name="arap-luo-si-mse", description=""):
    """ARAP albedo error under one named protocol (``careaga`` or ``luo``).

    ``luo`` (``intrinsic-image-eval``'s ``compute_dense_metrics.py``): the prediction is resized
    bilinearly to the ground truth's own size (the authors demand predictions over 1000 px and
    resize the ground truth to them; the ground truth is never resampled here). The mask is
    alpha > 0.5 (their > 0.99 after resizing, a no-op at the truth's size); the scenes whose names
    contain one of ``LUO_EXCLUDED`` get no value. si-MSE: one least-squares scale; si-LMSE: windows of 10 % of
    the long side, stride half, windows without masked pixels count as 0; DSSIM: (1 - SSIM)/2 of
    the scaled prediction and the truth, both zeroed outside the mask (kornia ``ssim_loss``,
    11-tap Gaussian, valid padding, "val" mode: no search over the scale).

    ``careaga`` (Careaga & Aksoy 2023): ground truth area-resized to 512 px on the long side,
    the prediction bilinearly to the same grid, mask re-thresholded at 0.5. LMSE: 20 px windows,
    stride 10, per-window scale, normalised (chrislib ``lmse_rgb``, joinbench ``lmse``). RMSE:
    square root of the masked MSE after one least-squares scale. SSIM: scikit-image SSIM (7 x 7,
    data range 1) of the scaled prediction; higher is better."""

    reference: ClassVar[str] = "arap"
    protocol_name: str = "luo"
    quantity: str = "si-mse"

    def __post_init__(self):
        if self.protocol_name not in ARAP_PROTOCOLS:
            raise MetricError(f"metric 'arap': protocol_name must be one of {', '.join(ARAP_PROTOCOLS)}, got {self.protocol_name!r}.")
        if self.quantity not in ARAP_PROTOCOLS[self.protocol_name]:
            raise MetricError(f"metric 'arap-{self.protocol_name}': quantity must be one of "
                              f"{', '.join(ARAP_PROTOCOLS[self.protocol_name])}, got {self.quantity!r}.")
        self.name = f"arap-{self.protocol_name}-{self.quantity}"
        self.higher_is_better = self.quantity == "ssim"
        self.protocol = ("Careaga & Aksoy 2023: 512 px long side" if self.protocol_name == "careaga"
                         else "intrinsic-image-eval: ground-truth resolution, 7 scenes excluded")
        self.description = f"ARAP albedo {self.quantity} ({self.protocol})"

    def score_one(self, pred: Tensor, scene) -> float | None:
        if self.protocol_name == "luo":
            if any(s in scene.name for s in LUO_EXCLUDED):
                return None
            # alpha > 0.5, resized to the prediction's size, > 0.99: at the truth's own size, alpha > 0.5
            truth, mask = scene.albedo.double(), (scene.mask > 0.5).double()
            p = _resize(pred, tuple(truth.shape[-2:]))
        else:
            size = careaga_grid(*scene.albedo.shape[-2:])
            truth = _resize(scene.albedo.double(), size)
            mask = (_resize((scene.mask > 0.5).double(), size) > 0.5).double()
            p = _resize(pred, size)
        p, g, m = p[None], truth[None], mask[None]
        if not bool(m.any()):
            return None
        if self.quantity == "si-mse":
            out = SIMSE()(p, g, m)
        elif self.quantity == "si-lmse":
            out = SILMSE(count_empty_windows=True)(p, g, m)
        elif self.quantity == "dssim":
            out = DSSIM()(p * m, g * m)
        elif self.quantity == "lmse":
            out = LMSE()(p, g, m)
        elif self.quantity == "rmse":
            mm = _mask_or_ones(m > 0.5, p)
            scaled = _scale(p, g, mm) * p
            out = ((mm * (scaled - g) ** 2).sum() / (mm.sum() * p.shape[1])).sqrt().reshape(1)
        else:  # ssim
            scaled = _scale(p, g, _mask_or_ones(m > 0.5, p)) * p
            out = SSIM()(scaled, g, m)
        return float(out[0])


# -- MIT LMSE as the field reports it --------------------------------------------------------

@dataclass
class MITLMSE(Metric, name="lmse-mit", space="linear", aggregate="geometric",
              protocol="Barron & Malik MIT_mse: per channel, 4 tilings, geometric mean over images",
              description="MIT LMSE as Barron & Malik's MIT_mse.m: per channel, 20 px blocks in 4 tilings; geometric mean over images"):
    """Local MSE of the MIT benchmark as the field computes it (Barron & Malik's ``MIT_mse.m``,
    used by ``compute_MIT_error.m`` of Fan et al. 2018 and CRefNet).

    Per colour channel, with pixels outside the mask set to 0: distinct 20 x 20 blocks in four
    tilings, starting at 0 and at 9 (MATLAB's ``(k/2):end``, 1-based) in each direction, blocks
    at the border zero-padded (MATLAB ``im2col`` 'distinct'). Each block gets its own scale
    α = Σ m t u / max(eps, Σ m u²); the error is Σ blocks Σ m (t - α u)² / Σ blocks Σ m t². The
    image's value is the mean over channels, and ``compute_MIT_error.m`` averages images with
    a geometric mean, which this metric declares (``aggregate = "geometric"``).

    How it differs from joinbench's ``lmse`` (Grosse et al. 2009 ``local_error``): that one
    slides full windows with stride 10 and fits one scale per window over all channels at
    once, and runs are averaged arithmetically. The MIT paper's overall score, ½ LMSE(shading)
    + ½ LMSE(reflectance) per image before the geometric mean, is not one column here: the
    albedo and shading rows give each half."""

    window: int = 20

    def compute(self, p, g, m):
        k = self.window
        mm = _mask_or_ones(m, p)
        t, u = g * mm, p * mm  # X_us(~mask) = 0, X_true(~mask) = 0
        numer = denom = 0.0
        for oy in (0, k // 2 - 1):
            for ox in (0, k // 2 - 1):
                tt, uu, ms = (x[..., oy:, ox:] for x in (t, u, mm.expand_as(t)))
                h, w = tt.shape[-2:]
                pad = (0, (-w) % k, 0, (-h) % k)
                tt, uu, ms = (F.pad(x, pad) for x in (tt, uu, ms))
                pool = lambda x: F.avg_pool2d(x, k, k, divisor_override=1)  # per-block, per-channel sums
                stu, suu, stt = pool(ms * tt * uu), pool(ms * uu * uu), pool(ms * tt * tt)
                alpha = stu / suu.clamp_min(MATLAB_EPS)
                numer = numer + (stt - 2 * alpha * stu + alpha * alpha * suu).clamp_min(0.0).sum(dim=(2, 3))
                denom = denom + stt.sum(dim=(2, 3))
        return (numer / denom).mean(dim=1)  # per channel, then the mean over channels


# -- registration ------------------------------------------------------------------------------

def _register(cls, **defaults) -> None:
    m = cls(**defaults)
    register_metric(m.name, cls, description=m.description, **defaults)


for _delta in (0.10, 0.20):
    for _space in WHDR_SPACES:
        for _pairs in WHDR_PAIRS:
            _register(WHDR, delta=_delta, colour_space=_space, pairs=_pairs)
for _q in MAW_QUANTITIES:
    _register(MAWError, quantity=_q)
for _p, _qs in ARAP_PROTOCOLS.items():
    for _q in _qs:
        _register(ARAPMetric, protocol_name=_p, quantity=_q)
_register(MITLMSE)

__all__ = [
    "ARAPMetric", "ARAP_PROTOCOLS", "LUO_EXCLUDED", "MAWError", "MITLMSE", "REFERENCE_SPACE", "ReferenceMetric", "WHDR",
    "careaga_grid", "maw_prediction", "score_references", "whdr_name",
]
