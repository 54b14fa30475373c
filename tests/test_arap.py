"""The two ARAP protocols and the arap: loader on tiny synthetic scenes with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from joinbench import create_dataset
from joinbench.benchmark_metrics import ARAP_PROTOCOLS, LUO_EXCLUDED, careaga_grid
from joinbench.errors import DatasetError
from joinbench.imageio import write_png
from joinbench.registry import create_metric

from joinbench.datasets.arap import Scene, scene_files


class FixedScene(Scene):
    """A scene whose original-resolution albedo and mask are given tensors."""

    def __init__(self, name, albedo, mask=None):
        super().__init__(name, None, None)
        self.__dict__["albedo"] = albedo
        self.__dict__["mask"] = torch.ones(1, *albedo.shape[1:]) if mask is None else mask


def halves(h, w, left=0.2, right=0.6):
    a = torch.full((3, h, w), left, dtype=torch.float64)
    a[..., w // 2:] = right
    return a


def score(name, scene, pred) -> float:
    return float(create_metric(name)(pred, [scene])[0])


def test_protocols_are_named_and_declared():
    assert ARAP_PROTOCOLS == {"careaga": ("lmse", "rmse", "ssim"), "luo": ("si-mse", "si-lmse", "dssim")}
    for protocol, quantities in ARAP_PROTOCOLS.items():
        for q in quantities:
            m = create_metric(f"arap-{protocol}-{q}")
            assert m.space == "reference" and m.reference == "arap" and m.component == "albedo"
            assert m.higher_is_better is (q == "ssim")
    assert "512 px" in create_metric("arap-careaga-lmse").protocol
    assert "7 scenes excluded" in create_metric("arap-luo-dssim").protocol
    assert careaga_grid(1000, 750) == (512, 384) and careaga_grid(40, 60) == (341, 512)


def test_luo_si_mse_at_the_truth_resolution():
    # truth 0.2 | 0.6 halves; any constant prediction scales to the mean 0.4: si-MSE = 0.2^2
    scene = FixedScene("alley_light0", halves(40, 60))
    assert score("arap-luo-si-mse", scene, torch.full((1, 3, 16, 16), 0.7)) == pytest.approx(0.04, abs=1e-12)
    # the prediction is resized to the truth's 40 x 60 grid: an upsampled copy of the truth scores 0
    exact = halves(40, 60)[None].float()
    assert score("arap-luo-si-mse", scene, 3.0 * exact) == pytest.approx(0.0, abs=1e-12)


def test_luo_excludes_seven_scenes():
    assert LUO_EXCLUDED == ("amsterdam", "redhead", "butterfly", "office", "caterpillar", "strawberries", "tiger")
    pred = torch.full((1, 3, 16, 16), 0.5)
    for name in ("tiger", "tiger_light1", "office_light2"):
        assert math.isnan(score("arap-luo-si-mse", FixedScene(name, halves(40, 60)), pred)), name
    # careaga keeps them
    assert not math.isnan(score("arap-careaga-rmse", FixedScene("tiger", halves(40, 60)), pred))


def test_luo_si_lmse_counts_empty_windows_as_zero():
    # 40 x 60: window k = round(0.1 * 60) = 6, stride 3; window rows start at 0, 3, ..., 36 and
    # columns at 0, 3, ..., 57 (20 starts). The mask keeps columns 30..59, a 0.2 / 0.6 pixel
    # checkerboard there, so every window with masked pixels holds as many of each (all counts
    # even): its si-MSE against a constant is 0.2^2 = 0.04. Column starts 0..24 (9 of 20) see
    # no masked pixel: intrinsic-image-eval counts them as 0, so the mean is 0.04 * 11 / 20.
    checker = torch.full((3, 40, 60), 0.2, dtype=torch.float64)
    yy, xx = torch.meshgrid(torch.arange(40), torch.arange(60), indexing="ij")
    checker[:, (yy + xx) % 2 == 1] = 0.6
    mask = torch.zeros(1, 40, 60)
    mask[..., 30:] = 1
    scene = FixedScene("corridor", checker, mask)
    pred = torch.full((1, 3, 8, 8), 0.9)
    assert score("arap-luo-si-lmse", scene, pred) == pytest.approx(0.04 * 11 / 20, abs=1e-12)
    # joinbench's own si-lmse skips those windows instead
    assert float(create_metric("si-lmse")(torch.full((1, 3, 40, 60), 0.9), checker[None], mask[None])[0]) == \
        pytest.approx(0.04, abs=1e-12)


def test_luo_dssim_and_careaga_of_a_scaled_truth():
    truth = halves(256, 512)
    scene = FixedScene("alley", truth)
    pred = 2.5 * truth[None].float()
    assert score("arap-luo-dssim", scene, pred) == pytest.approx(0.0, abs=1e-6)
    assert score("arap-careaga-lmse", scene, pred) == pytest.approx(0.0, abs=1e-9)
    assert score("arap-careaga-rmse", scene, pred) == pytest.approx(0.0, abs=1e-6)
    assert score("arap-careaga-ssim", scene, pred) == pytest.approx(1.0, abs=1e-6)


def test_careaga_rmse_of_a_constant():
    # 256 x 512 is already 512 px on the long side: the truth is not resampled. A constant
    # prediction scales to the mean 0.4, so the RMSE is the standard deviation 0.2.
    scene = FixedScene("alley", halves(256, 512))
    assert score("arap-careaga-rmse", scene, torch.full((1, 3, 16, 16), 0.3)) == pytest.approx(0.2, abs=1e-9)
    # masked to the left half, the constant fits exactly
    mask = torch.zeros(1, 256, 512)
    mask[..., :200] = 1
    masked = FixedScene("alley", halves(256, 512), mask)
    assert score("arap-careaga-rmse", masked, torch.full((1, 3, 16, 16), 0.3)) == pytest.approx(0.0, abs=1e-9)


# -- the arap: dataset ----------------------------------------------------------------------------

def write_arap(root, names=("alley", "alley_light0", "tiger"), size=(60, 40), albedo_size=None):
    for d in ("input", "reflectance", "shading", "mask"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    w, h = size
    for name in names:
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "input" / f"{name}.png")
        files = scene_files(root, name)
        aw, ah = albedo_size or size
        write_png(files["albedo"], halves(ah, aw).float(), bits=16)
        write_png(files["shading"], torch.full((3, h, w), 0.5), bits=16)
        alpha = np.full((h, w), 255, np.uint8)
        alpha[:, :5] = 0
        Image.fromarray(alpha).save(files["mask"])
    return root


def test_arap_folder(tmp_path):
    root = write_arap(tmp_path / "ARAP")
    assert scene_files(root, "alley_light0")["albedo"].name == "alley_albedo.png"
    assert scene_files(root, "alley_light0")["shading"].name == "alley_light0_shading.png"
    ds = create_dataset(f"arap:{root}", resolution=16)
    assert [ds.sample_id(i) for i in range(len(ds))] == ["alley", "alley_light0", "tiger"]
    assert ds.components == ("albedo", "shading") and ds.has_ground_truth
    s = ds[1]
    assert s.albedo.shape == s.shading.shape == (3, 16, 16) and s.mask.shape == (1, 16, 16)
    # albedo taken as stored (linear): the 16-bit halves come back, stretched to 16 x 16
    assert s.albedo[0, 8, 0].item() == pytest.approx(0.2, abs=1e-4) and s.albedo[0, 8, 15].item() == pytest.approx(0.6, abs=1e-4)
    scene = s.meta["references"]["arap"]
    assert scene.name == "alley_light0" and scene.albedo.shape == (3, 40, 60) and scene.mask[0, 0, :5].sum() == 0
    # the luo protocol on the original 40 x 60 truth (mask: columns 5..59): a constant prediction
    # scales to the masked mean; halves at column 30: 25 columns of 0.2, 30 of 0.6
    mean = (25 * 0.2 + 30 * 0.6) / 55
    want = (25 * (0.2 - mean) ** 2 + 30 * (0.6 - mean) ** 2) / 55
    assert score("arap-luo-si-mse", scene, torch.full((1, 3, 16, 16), 0.5)) == pytest.approx(want, abs=1e-7)
    assert math.isnan(score("arap-luo-si-mse", ds[2].meta["references"]["arap"], torch.full((1, 3, 16, 16), 0.5)))


def test_arap_bad_input(tmp_path):
    root = write_arap(tmp_path / "a", names=("alley",), albedo_size=(30, 20))
    with pytest.raises(DatasetError) as e:
        create_dataset(f"arap:{root}")
    msg = str(e.value)
    assert "alley_albedo.png is 30x20" in msg and "alley.png is 60x40" in msg and "\n" not in msg
    root = write_arap(tmp_path / "b", names=("alley",))
    (root / "shading" / "alley_shading.png").unlink()
    with pytest.raises(DatasetError) as e:
        create_dataset(f"arap:{root}")
    assert "alley_shading.png" in str(e.value) and "does not exist" in str(e.value)
    (tmp_path / "c").mkdir()
    with pytest.raises(DatasetError) as e:
        create_dataset(f"arap:{tmp_path / 'c'}")
    assert "input" in str(e.value)


def test_run_scores_dense_metrics_and_both_protocols(tmp_path):
    from typer.testing import CliRunner

    from joinbench.cli import app

    root = write_arap(tmp_path / "ARAP")
    run_dir = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--method", "trivial", "--dataset", f"arap:{root}", "-r", "16", "--metrics",
                                   "si-mse,arap-luo-si-mse,arap-careaga-rmse", "--out", str(run_dir), "-q"])
    assert res.exit_code == 0, (res.output, res.exception)
    albedo = __import__("json").loads((run_dir / "summary.json").read_text())["results"]["albedo"]
    assert albedo["si-mse"]["n"] == 3 and albedo["arap-careaga-rmse"]["n"] == 3
    assert albedo["arap-luo-si-mse"]["n"] == 2  # tiger is one of the seven scenes luo leaves out
    table = (run_dir / "table.md").read_text()
    assert "arap-luo-si-mse (intrinsic-image-eval: ground-truth resolution, 7 scenes excluded)" in table


# -- as a user tries it: no --metrics, the dataset declares both protocols --------------------------

def test_run_and_compare_without_metrics_score_both_protocols(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from joinbench.cli import app

    root = write_arap(tmp_path / "ARAP")
    for name in ("alley", "alley_light0", "tiger"):  # uniform inputs: trivial's albedo is constant
        Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(root / "input" / f"{name}.png")
    monkeypatch.chdir(tmp_path)
    headings = [f"{m} ({create_metric(m).protocol})" for p, qs in ARAP_PROTOCOLS.items() for m in
                (f"arap-{p}-{q}" for q in qs)]
    assert "arap-careaga-lmse (Careaga & Aksoy 2023: 512 px long side)" in headings
    res = CliRunner().invoke(app, ["run", "--method", "trivial", "--dataset", f"arap:{root}", "-r", "32", "--out", "run"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert all(h in res.output for h in headings), res.output
    # luo on the 40 x 60 truth, mask columns 5..59: a constant scales to the masked mean of
    # 25 columns of 0.2 and 30 of 0.6, leaving their variance; tiger is excluded (no value)
    mean = (25 * 0.2 + 30 * 0.6) / 55
    want = (25 * (0.2 - mean) ** 2 + 30 * (0.6 - mean) ** 2) / 55
    albedo = json.loads((tmp_path / "run" / "summary.json").read_text())["results"]["albedo"]
    assert albedo["arap-luo-si-mse"]["n"] == 2 and albedo["arap-luo-si-mse"]["mean"] == pytest.approx(want, abs=1e-7)
    assert albedo["arap-careaga-rmse"]["n"] == 3 and set(albedo) == {m.split(" ")[0] for m in headings}
    res = CliRunner().invoke(app, ["compare", "--datasets", f"arap:{root}", "--methods", "color-retinex,trivial", "-r", "32"])
    assert res.exit_code == 0, (res.output, res.exception)
    md = (tmp_path / "runs" / "compare" / "compare.md").read_text()
    assert all(f"albedo {h}" in md for h in headings) and "albedo mse" not in md
