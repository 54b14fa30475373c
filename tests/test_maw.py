"""MAW intensity / chromaticity errors and the maw: loader on tiny hand-built fixtures.

The prediction's regions are made of 8-bit sRGB codes, so the protocol's 8-bit quantisation
is exact and each region's statistic is known by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab

from joinbench import create_dataset
from joinbench.errors import DatasetError
from joinbench.registry import create_metric

from joinbench.datasets.maw import ADOBE_TO_SRGB, Regions, adobe_to_linear_srgb, rgb_to_xyz_matrix


def lin(code: int) -> float:
    """The linear value of an 8-bit sRGB code (the sRGB EOTF, written out)."""
    s = code / 255
    return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4


def oetf(x):
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0.0031308, 1.055 * np.maximum(x, 0.0031308) ** (1 / 2.4) - 0.055, 12.92 * x)


A, B = lin(100), lin(200)
# labels at the working size 320 x 240 (no resampling): region 1 left, region 2 right, far from
# where the 32-px prediction's two halves blend when upsampled (columns ~155-165)
LABELS = np.zeros((240, 320), np.int32)
LABELS[20:220, 10:100] = 1
LABELS[20:220, 220:310] = 2
N1 = N2 = 200 * 90


def prediction() -> torch.Tensor:
    """(1, 3, 24, 32): gray code 100 on the left half, gray code 200 on the right half."""
    p = torch.empty(1, 3, 24, 32, dtype=torch.float64)
    p[..., :16], p[..., 16:] = A, B
    return p


def score(name, albedo, pred=None) -> float:
    regions = Regions("fixture", LABELS, (1, 2), np.asarray(albedo, dtype=np.float64))
    return float(create_metric(name)(prediction() if pred is None else pred, [regions])[0])


def test_flags():
    for q in ("intensity", "chromaticity"):
        m = create_metric(f"maw-{q}")
        assert m.space == "reference" and m.reference == "maw" and not m.higher_is_better
        assert "320×240" in m.protocol
    assert "×100" in create_metric("maw-intensity").protocol


def test_intensity_known_medians():
    y1, y2 = 0.3, 0.5
    # weighted least squares over the two regions of the channel means: x = (A, B), y = (y1, y2)
    theta = (N1 * A * y1 + N2 * B * y2) / (N1 * A * A + N2 * B * B)
    want = 100 * (N1 * (y1 - theta * A) ** 2 + N2 * (y2 - theta * B) ** 2) / (N1 + N2)
    assert want > 0.1
    assert score("maw-intensity", [[y1] * 3, [y2] * 3]) == pytest.approx(want, rel=1e-9)
    # measured albedo proportional to the prediction (any scale): no error
    assert score("maw-intensity", [[0.7 * A] * 3, [0.7 * B] * 3]) == pytest.approx(0.0, abs=1e-12)
    # a coloured truth counts by its channel mean only
    assert score("maw-intensity", [[0.1, 0.3, 0.5], [0.5, 0.5, 0.5]]) == pytest.approx(want, rel=1e-9)


def test_chromaticity_known_ciede2000_pairs():
    # region 1: gray truth, gray prediction: after its own scale the colours are equal (0)
    # region 2: truth (0.5, 0.3, 0.1) with channel mean 0.3; the gray prediction scaled to
    # mean 0.3 is (0.3, 0.3, 0.3): CIEDE2000 between those two sRGB colours
    truth2, gray = np.array([0.5, 0.3, 0.1]), np.array([0.3, 0.3, 0.3])
    d2 = float(deltaE_ciede2000(rgb2lab(oetf(truth2)), rgb2lab(oetf(gray))))
    assert d2 > 5
    got = score("maw-chromaticity", [[0.2] * 3, truth2])
    assert got == pytest.approx((N1 * 0.0 + N2 * d2) / (N1 + N2), rel=1e-6)
    assert score("maw-chromaticity", [[0.2] * 3, [0.9] * 3]) == pytest.approx(0.0, abs=1e-6)


def test_prediction_is_clipped_and_quantised_like_the_release():
    # values above 1 are clipped before the 8-bit encoding: a 3x brighter right half is white
    p = prediction()
    p[..., 16:] = 3.0
    theta = (N1 * A * 0.3 + N2 * 1.0 * 0.5) / (N1 * A * A + N2 * 1.0)
    want = 100 * (N1 * (0.3 - theta * A) ** 2 + N2 * (0.5 - theta) ** 2) / (N1 + N2)
    assert score("maw-intensity", [[0.3] * 3, [0.5] * 3], pred=p) == pytest.approx(want, rel=1e-9)


def test_no_region_no_value():
    regions = Regions("fixture", np.zeros((240, 320), np.int32), (), np.zeros((0, 3)))
    assert math.isnan(float(create_metric("maw-intensity")(prediction(), [regions])[0]))
    tiny = np.zeros((2400, 3200), np.int32)
    tiny[0, 5] = 1  # one pixel that nearest-neighbour resizing to 320 x 240 does not keep
    gone = Regions("fixture", tiny, (1,), np.full((1, 3), 0.5))
    assert math.isnan(float(create_metric("maw-chromaticity")(prediction(), [gone])[0]))


def test_adobe_rgb_to_srgb():
    # both spaces have the D65 white: white stays white, and rows of the matrix sum to 1
    assert np.allclose(ADOBE_TO_SRGB.sum(axis=1), 1.0, atol=1e-12)
    assert np.allclose(adobe_to_linear_srgb([[1.0, 1.0, 1.0]]), 1.0)
    # the Adobe RGB (1998) specification's RGB -> XYZ matrix (as in the MAW release's albedolib.py)
    spec = np.array([[0.57667, 0.18556, 0.18823], [0.29734, 0.62736, 0.07529], [0.02703, 0.07069, 0.99134]])
    assert np.abs(rgb_to_xyz_matrix(((0.64, 0.33), (0.21, 0.71), (0.15, 0.06))) - spec).max() < 2e-4
    # Adobe's green lies outside sRGB: negative red, clipped to 0
    g = (ADOBE_TO_SRGB @ [0.0, 1.0, 0.0])
    assert g[0] < 0 and adobe_to_linear_srgb([[0.0, 1.0, 0.0]])[0, 0] == 0.0
    # the red primaries share a chromaticity: Adobe red is sRGB red, brighter by the ratio of their
    # luminances (Y = 0.29734 in the Adobe specification, 0.2126 in sRGB)
    red = ADOBE_TO_SRGB @ [1.0, 0.0, 0.0]
    assert np.allclose(red[1:], 0.0, atol=1e-12) and red[0] == pytest.approx(0.29734 / 0.2126, rel=1e-3)


# -- the maw: dataset ---------------------------------------------------------------------------

def write_maw(root, photo_size=(64, 48), mask_size=(64, 48), colours=2, rows=None):
    (root / "labels" / "masks").mkdir(parents=True)
    (root / "images_png" / "scene_1").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (photo_size[1], photo_size[0], 3), dtype=np.uint8)).save(
        root / "images_png" / "scene_1" / "DSC01.png")
    labels = np.zeros((mask_size[1], mask_size[0]), np.uint8)
    labels[5:20, 5:20], labels[25:40, 30:50] = 3, 7
    Image.fromarray(labels).save(root / "labels" / "masks" / "DSC01_mask.png")
    np.save(root / "labels" / "DSC01.npy", np.array([[0.2, 0.3, 0.4], [0.5, 0.5, 0.5], [0.1, 0.1, 0.1]])[:colours])
    lines = rows or ["DSC01.npy\tmasks/DSC01_mask.png\tscene_1\tDSC01\tNone\tNone"]
    (root / "labels" / "meta.csv").write_text("\n".join(lines) + "\n")
    return root


def test_maw_folder(tmp_path):
    root = write_maw(tmp_path / "MAW")
    ds = create_dataset(f"maw:{root}", resolution=16)
    assert len(ds) == 1 and ds.sample_id(0) == "scene_1_DSC01" and ds.components == ()
    s = ds[0]
    assert s.image.shape == (3, 16, 16) and s.mask is None  # the labels are not a mask of the photo
    r = s.meta["references"]["maw"]
    assert r.values == (3, 7) and r.labels.shape == (48, 64)
    assert np.allclose(r.albedo, adobe_to_linear_srgb([[0.2, 0.3, 0.4], [0.5, 0.5, 0.5]]))
    out = create_metric("maw-intensity")(torch.rand(1, 3, 16, 16), [r])
    assert torch.isfinite(out).all()
    # a label image at another resolution but the same shape is fine (both go to 320 x 240)
    assert len(create_dataset(f"maw:{write_maw(tmp_path / 'half', mask_size=(128, 96))}")) == 1


def test_maw_bad_input(tmp_path):
    root = write_maw(tmp_path / "a", colours=3)
    with pytest.raises(DatasetError) as e:
        create_dataset(f"maw:{root}", resolution=16)[0]
    msg = str(e.value)
    assert "DSC01_mask.png" in msg and "DSC01.npy" in msg and "2 regions" in msg and "3 colours" in msg
    with pytest.raises(DatasetError) as e:
        create_dataset(f"maw:{write_maw(tmp_path / 'b', mask_size=(64, 64))}")
    msg = str(e.value)
    assert "DSC01_mask.png is 64x64" in msg and "DSC01.png is 64x48" in msg and "\n" not in msg
    bad_row = "x.npy\tmasks/DSC01_mask.png\tscene_1\tDSC01\tNone\tNone"
    with pytest.raises(DatasetError) as e:
        create_dataset(f"maw:{write_maw(tmp_path / 'c', rows=[bad_row])}")
    assert "x.npy" in str(e.value) and "does not exist" in str(e.value)
    (tmp_path / "d").mkdir()
    with pytest.raises(DatasetError) as e:
        create_dataset(f"maw:{tmp_path / 'd'}")
    assert "labels/meta.csv" in str(e.value)


# -- as a user tries it: no --metrics, the dataset declares its two errors --------------------------

def test_run_and_compare_without_metrics_score_the_maw_protocol(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from joinbench.cli import app

    root = write_maw(tmp_path / "MAW")
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(root / "images_png" / "scene_1" / "DSC01.png")
    monkeypatch.chdir(tmp_path)
    # Hand-derived for a constant gray albedo c (a uniform photo through trivial or color-retinex):
    # labels 3 (15 x 15 px) and 7 (15 x 20 px) become 75 x 75 and 75 x 100 at 320 x 240 (x5,
    # nearest). Intensity: every region reads c, so the best scale fits c to the weighted mean
    # of the measured intensities y, and the error is their weighted variance (x100).
    # Chromaticity: each region scales c to its own y, so the error is the CIEDE2000 distance
    # of each measured colour to the gray of its own intensity.
    w = np.array([75 * 75, 75 * 100], dtype=np.float64)
    colours = adobe_to_linear_srgb([[0.2, 0.3, 0.4], [0.5, 0.5, 0.5]])
    y = colours.mean(axis=1)
    mean = (w * y).sum() / w.sum()
    intensity = 100 * (w * (y - mean) ** 2).sum() / w.sum()
    gray = np.repeat(y[:, None], 3, axis=1)
    chroma = (w * deltaE_ciede2000(rgb2lab(oetf(colours)), rgb2lab(oetf(gray)))).sum() / w.sum()
    assert intensity > 0.1 and chroma > 1  # the fixture discriminates
    res = CliRunner().invoke(app, ["run", "--method", "trivial", "--dataset", f"maw:{root}", "-r", "32", "--out", "run"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "maw-intensity (×100, one scale over all regions, 320×240) ↓" in res.output
    assert "maw-chromaticity (CIEDE2000, one scale per region, 320×240) ↓" in res.output
    albedo = json.loads((tmp_path / "run" / "summary.json").read_text())["results"]["albedo"]
    assert albedo["maw-intensity"]["mean"] == pytest.approx(intensity, rel=1e-9)
    assert albedo["maw-chromaticity"]["mean"] == pytest.approx(chroma, rel=1e-6)
    res = CliRunner().invoke(app, ["compare", "--datasets", f"maw:{root}", "--methods", "color-retinex,trivial", "-r", "32"])
    assert res.exit_code == 0, (res.output, res.exception)
    md = (tmp_path / "runs" / "compare" / "compare.md").read_text()
    assert "albedo maw-intensity (×100, one scale over all regions, 320×240) ↓" in md and "re-render mse" not in md
    cells = json.loads((tmp_path / "runs" / "compare" / "compare.json").read_text())["datasets"][f"maw:{root}"]["methods"]
    for method in ("color-retinex", "trivial"):  # both keep a uniform photo's albedo constant
        got = {c["metric"]: c["mean"] for c in cells[method]["results"]}
        assert got["maw-intensity"] == pytest.approx(intensity, rel=1e-6)
        assert got["maw-chromaticity"] == pytest.approx(chroma, rel=1e-5)
