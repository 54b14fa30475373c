"""``lmse-mit``: the MIT LMSE as Barron & Malik's MIT_mse.m computes it, and its geometric mean
over images; and how it differs from joinbench's Grosse ``lmse``."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from joinbench.registry import create_metric
from joinbench.tables import geometric_summary, metric_heading, summarise_records


def mit_mse_loop(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, k: int = 20) -> float:
    """MIT_mse.m for one channel, written out: masked-out pixels set to 0, distinct k x k blocks
    of the image and of the image from (k/2):end (1-based: offset 9) in each direction, border
    blocks zero-padded, one scale per block, summed errors over summed truth energy."""
    u, t, m = pred * mask, truth * mask, mask.astype(np.float64)
    numer = denom = 0.0
    for oy in (0, k // 2 - 1):
        for ox in (0, k // 2 - 1):
            uu, tt, mm = u[oy:, ox:], t[oy:, ox:], m[oy:, ox:]
            for i in range(0, uu.shape[0], k):
                for j in range(0, uu.shape[1], k):
                    bu, bt, bm = uu[i:i + k, j:j + k], tt[i:i + k, j:j + k], mm[i:i + k, j:j + k]
                    alpha = (bm * bt * bu).sum() / max(np.finfo(float).eps, (bm * bu * bu).sum())
                    numer += (bm * (bt - alpha * bu) ** 2).sum()
                    denom += (bm * bt * bt).sum()
    return numer / denom


def rand(shape, seed):
    return torch.from_numpy(np.random.default_rng(seed).uniform(0.05, 0.95, shape))


@pytest.mark.parametrize("shape", [(47, 63), (20, 20), (64, 48)])
def test_matches_a_loop_over_blocks(shape):
    h, w = shape
    g, p = rand((1, 3, h, w), 1), rand((1, 3, h, w), 2)
    p = 0.6 * g + 0.4 * p
    m = (rand((1, 1, h, w), 3) > 0.3).double()
    got = float(create_metric("lmse-mit")(p, g, m)[0])
    want = np.mean([mit_mse_loop(p[0, c].numpy(), g[0, c].numpy(), m[0, 0].numpy()) for c in range(3)])
    assert got == pytest.approx(want, rel=1e-10)


def test_a_per_channel_scale_is_free_unlike_grosse_lmse():
    # each channel scaled differently: MIT_mse fits every channel's blocks on its own (0), while
    # joinbench's lmse fits one scale per window over the three channels together (> 0)
    g = rand((1, 3, 40, 40), 4)
    p = g * torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64).view(1, 3, 1, 1)
    assert float(create_metric("lmse-mit")(p, g)[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(create_metric("lmse")(p, g)[0]) > 0.05


def test_declares_a_geometric_mean_over_images():
    m = create_metric("lmse-mit")
    assert m.aggregate == "geometric" and m.space == "linear" and not m.higher_is_better
    assert create_metric("lmse").aggregate == "mean"
    assert "geometric mean" in metric_heading("lmse-mit") and metric_heading("lmse") == "lmse"
    records = [{"id": str(i), "component": "albedo", "metrics": {"lmse-mit": v, "lmse": v}} for i, v in enumerate((1e-2, 1e-4))]
    res = summarise_records(records)["albedo"]
    assert res["lmse-mit"]["mean"] == pytest.approx(1e-3, rel=1e-12)  # sqrt(1e-2 * 1e-4)
    assert res["lmse"]["mean"] == pytest.approx(0.00505, rel=1e-12)  # (1e-2 + 1e-4) / 2
    assert res["lmse-mit"]["ci_low"] <= 1e-3 <= res["lmse-mit"]["ci_high"]
    assert geometric_summary(np.array([0.0, 0.2]))[0] == 0.0
    assert all(math.isnan(x) for x in geometric_summary(np.array([])))
