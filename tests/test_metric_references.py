"""The README's central numbers checked against paths independent of the code under test:

- DSSIM against SSIM written out from its definition (Wang et al. 2004, Gaussian window) in
  plain numpy loops, not scikit-image;
- LPIPS against the ``lpips`` package's own ``LPIPS(pretrained=True)`` network (its linear
  layers loaded by lpips itself) on the same verified AlexNet backbone;
- the bootstrap interval's coverage by simulation: 95% intervals of the mean must hold the
  true mean about 95% of the time.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from joinbench.registry import create_metric
from joinbench.tables import bootstrap_ci


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
    r = int(truncate * sigma + 0.5)  # 5 taps each side: an 11 x 11 window
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    w = np.outer(g, g)
    return w / w.sum()


def ssim_by_definition(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of two (H, W, C) images, data range 1, over the pixels whose whole 11 x 11
    Gaussian window lies inside the image, averaged over channels: for every such pixel the
    weighted means, variances and covariance of its window, then
    ((2 mx my + C1)(2 sxy + C2)) / ((mx^2 + my^2 + C1)(sx^2 + sy^2 + C2))."""
    w = _gaussian_window()
    r = w.shape[0] // 2
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    h, wd, ch = x.shape
    values = []
    for c in range(ch):
        for i in range(r, h - r):
            for j in range(r, wd - r):
                a, b = x[i - r:i + r + 1, j - r:j + r + 1, c], y[i - r:i + r + 1, j - r:j + r + 1, c]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
                cov = (w * (a - ma) * (b - mb)).sum()
                values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_dssim_equals_ssim_written_from_its_definition():
    g = torch.Generator().manual_seed(3)
    gt = 0.05 + 0.9 * torch.rand(2, 3, 15, 17, generator=g, dtype=torch.float64)
    pred = (0.7 * gt + 0.2 * torch.rand(2, 3, 15, 17, generator=g, dtype=torch.float64)) * 1.8  # and a scale error
    ours = create_metric("dssim")(pred, gt)
    for i in range(2):
        p, t = pred[i].numpy().transpose(1, 2, 0), gt[i].numpy().transpose(1, 2, 0)
        alpha = (p * t).sum() / (p * p).sum()  # DSSIM scores the least-squares scaled prediction
        want = (1.0 - ssim_by_definition(alpha * p, t)) / 2.0
        assert ours[i].item() == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert 0 < ours.min() and ours.max() < 0.5


def test_lpips_equals_the_lpips_packages_own_network():
    import lpips

    from joinbench.lpips_weights import load_features

    try:
        features = load_features("alex", verbose=False)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"LPIPS weights are not cached ({exc}); run `joinbench weights lpips` once.")
    # lpips' own construction: its linear layers loaded by lpips from its package; the trunk is
    # torchvision's AlexNet features (random here: pnet_rand, nothing downloaded) set to the
    # verified ImageNet weights through lpips' own slice modules, which keep torchvision's indices
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation inside lpips
        ref = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False).eval()
    for name, module in ref.net.named_modules():
        if name.count(".") == 1 and isinstance(module, torch.nn.Conv2d):
            idx = name.split(".")[1]
            module.weight.data.copy_(features[f"features.{idx}.weight"])
            module.bias.data.copy_(features[f"features.{idx}.bias"])
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 3, 48, 40, generator=g)
    y = (x + 0.15 * torch.randn(3, 3, 48, 40, generator=g)).clamp(0, 1)
    with torch.no_grad():
        want = ref(x, y, normalize=True).flatten().double()  # normalize: [0, 1] inputs, as ours takes
    ours = create_metric("lpips")(x, y).double()
    assert torch.allclose(ours, want, rtol=1e-5, atol=1e-6) and (want > 0.01).all()


def test_bootstrap_interval_covers_the_true_mean_95_percent_of_the_time():
    """Percentile bootstrap of the mean of n = 30 draws from a skewed distribution (gamma,
    shape 2): over 600 simulated test sets the 95% interval must hold the true mean about 95%
    of the time (the percentile bootstrap runs a little narrow at small n: 0.91-0.98 allowed,
    the simulation's own standard error is about 0.009)."""
    rng = np.random.default_rng(11)
    shape, scale, n, reps = 2.0, 0.05, 30, 600
    true_mean = shape * scale
    hits = 0
    widths = []
    for _ in range(reps):
        sample = rng.gamma(shape, scale, size=n)
        lo, hi = bootstrap_ci(sample)
        hits += lo <= true_mean <= hi
        widths.append(hi - lo)
    coverage = hits / reps
    assert 0.91 <= coverage <= 0.98, coverage
    # and the width is what theory says: about 2 x 1.96 x sd / sqrt(n)
    expected = 2 * 1.96 * math.sqrt(shape) * scale / math.sqrt(n)
    assert np.mean(widths) == pytest.approx(expected, rel=0.1)
