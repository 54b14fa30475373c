"""Nearest-neighbour check of a prior (joinbench/gan/nearest.py): exact pairwise LPIPS, a search
that finds planted copies, and the whole check on tiny random priors."""
from __future__ import annotations

import json

import pytest
import torch

from joinbench.errors import JoinbenchError
from joinbench.gan.nearest import NearestConfig, PairwiseLPIPS, nearest_check, search, summarise, write_nearest
from joinbench.metrics import LPIPSMetric

from .tiny_world import RES, export_tiny_priors

pytestmark = pytest.mark.usefixtures("tiny_env")


@pytest.mark.parametrize("res", [64, 16])  # 16 px: below AlexNet's input size, upsampled as the metric does
def test_pairwise_lpips_equals_the_metric_on_every_pair(res):
    gen = torch.Generator().manual_seed(res)
    a, b = torch.rand(3, 3, res, res, generator=gen), torch.rand(4, 3, res, res, generator=gen)
    got = PairwiseLPIPS()(a, b)
    metric = LPIPSMetric()
    want = torch.stack([metric.compute(a[i:i + 1].expand(4, -1, -1, -1), b, None) for i in range(3)])
    assert got.shape == (3, 4)
    torch.testing.assert_close(got, want.double(), atol=1e-6, rtol=0)


def test_search_finds_planted_copies_across_pool_chunks():
    gen = torch.Generator().manual_seed(1)
    pool = {c: torch.rand(10, 3, 32, 32, generator=gen) for c in ("albedo", "shading", "specular")}
    chunks = [{c: v[a:b] for c, v in pool.items()} for a, b in ((0, 4), (4, 8), (8, 10))]
    a = pool["albedo"]
    queries = {"albedo": (torch.cat([a[[7, 2]], torch.rand(1, 3, 32, 32, generator=gen)]), ["albedo"]),
               # a joint (9-channel) query: the mean of the three components' distances
               "joint": (torch.cat([pool[c][[3]] for c in ("albedo", "shading", "specular")], 1),
                         ["albedo", "shading", "specular"])}
    found = search(queries, chunks, PairwiseLPIPS())
    one = found["albedo"]
    assert one["index"][:2].tolist() == [7, 2]
    assert one["distance"][:2].abs().max() < 1e-9
    assert torch.equal(one["image"][:2], a[[7, 2]])
    assert one["distance"][2] > 0.01
    assert found["joint"]["index"].tolist() == [3] and found["joint"]["distance"].item() < 1e-9
    assert found["joint"]["image"].shape == (1, 9, 32, 32)


@pytest.fixture(scope="module")
def tiny_priors(tmp_path_factory):
    return export_tiny_priors(tmp_path_factory.mktemp("nn-priors"), seed=5)


def test_the_check_on_tiny_priors_writes_figure_and_numbers(tiny_priors, tmp_path):
    cfg = NearestConfig(dataset="materials", component="all", n=3, pool=20, reference=2, batch=8, device="cpu",
                        path=str(tiny_priors))
    results = nearest_check(cfg, progress=False)
    assert [r["prior"].component for r in results] == ["albedo", "shading", "specular"]
    result = results[1]
    assert result["distance"].shape == (3,) and result["reference"]["distance"].shape == (2,)
    assert ((result["index"] >= 0) & (result["index"] < 20)).all()
    # one prior alone finds the same neighbours as inside the shared pass
    alone = nearest_check(NearestConfig(**{**cfg.__dict__, "component": "shading"}), progress=False)[0]
    assert torch.equal(result["distance"], alone["distance"]) and torch.equal(result["index"], alone["index"])
    assert result["pool_seed"] == 0  # the tiny prior's sidecar records no training seed: the default stream
    png, js = write_nearest(result, tmp_path / "nn.png", command="joinbench priors nearest ...")
    assert png.is_file() and png.stat().st_size > 0
    data = json.loads(js.read_text())
    assert data["distance"] == [round(v, 6) for v in result["distance"].tolist()]
    assert data["prior"]["sha256"] == result["prior"].sha256
    assert data["config"]["pool"] == 20 and data["summary"] == json.loads(json.dumps(summarise(result)))
    assert set(data["summary"]) == {"samples", "reference", "samples_below_reference_min"}


def test_bad_settings_are_one_line_errors(tiny_priors):
    with pytest.raises(JoinbenchError, match="--pool"):
        nearest_check(NearestConfig(pool=0, path=str(tiny_priors)), progress=False)
