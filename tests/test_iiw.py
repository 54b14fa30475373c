"""WHDR and the iiw: / iiw-test: loaders on hand-built IIW judgement files.

Every expected WHDR is derived by hand in the test (which comparisons disagree, their
weights), never by rerunning the metric."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from joinbench import create_dataset
from joinbench.errors import DatasetError, JoinbenchError
from joinbench.registry import create_metric, list_metrics

from joinbench.datasets import iiw as iiw_module
from joinbench.datasets.iiw import parse_judgements, read_split

H = W = 10
# point id -> (x, y); pixel (row, col) = (floor(y * 10), floor(x * 10))
POINTS = {1: (0.05, 0.05), 2: (0.95, 0.05), 3: (0.05, 0.95), 4: (0.55, 0.55)}
PIXELS = {1: (0, 0), 2: (0, 9), 3: (9, 0), 4: (5, 5)}
# the truth the humans saw: 1 -> 0.2, 2 -> 0.4, 3 -> 0.8, 4 -> 0.21 (about equal to 1)
TRUTH = {1: 0.2, 2: 0.4, 3: 0.8, 4: 0.21}
#              point1, point2, darker, weight
COMPARISONS = [(1, 2, "1", 1.0),    # 0.2 < 0.4: point 1 darker
               (2, 3, "1", 0.5),    # 0.4 < 0.8
               (1, 4, "E", 0.8),    # 0.21 / 0.2 = 1.05 <= 1.10
               (3, 1, "2", 0.7)]    # 0.8 > 0.2: point 2 darker


def judgement_json(comparisons=COMPARISONS, points=POINTS, opaque=None):
    opaque = opaque or {}
    return {
        "intrinsic_points": [{"id": i, "x": x, "y": y, "opaque": opaque.get(i, True)} for i, (x, y) in points.items()],
        "intrinsic_comparisons": [{"point1": a, "point2": b, "darker": d, "darker_score": w}
                                  for a, b, d, w in comparisons],
    }


def albedo(values: dict[int, float], base: float = 0.5, colour=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """(1, 3, 10, 10) float64 prediction: ``base`` everywhere, ``values[p]`` at point p's pixel
    (gray, times ``colour`` per channel)."""
    x = torch.full((1, 3, H, W), base, dtype=torch.float64)
    for p, v in values.items():
        r, c = PIXELS[p]
        for ch in range(3):
            x[0, ch, r, c] = v * colour[ch]
    return x


def whdr(name="whdr", pred=None, data=None, **overrides) -> float:
    j = parse_judgements(judgement_json() if data is None else data, "fixture.json")
    return float(create_metric(name, **overrides)(pred, [j])[0])


def test_registered_variants_declare_their_protocol():
    names = list_metrics("whdr*")
    assert len(names) == 12  # delta 0.10 / 0.20 x linear / srgb x all / eq / ineq
    m = create_metric("whdr")
    assert (m.delta, m.colour_space, m.pairs, m.space, m.higher_is_better) == (0.10, "linear", "all", "reference", False)
    assert m.protocol == "δ=0.10, linear"
    assert create_metric("whdr-20-srgb").protocol == "δ=0.20, sRGB γ=2.2"
    assert create_metric("whdr-eq").protocol == "δ=0.10, linear, 'E' pairs"
    for n in names:
        assert create_metric(n).name == n and create_metric(n).reference == "iiw"


def test_perfect_ordering_is_zero():
    assert whdr(pred=albedo(TRUTH)) == 0.0


def test_reversed_ordering_is_one():
    unequal = [c for c in COMPARISONS if c[2] != "E"]
    reversed_ = albedo({p: 1.0 / v for p, v in TRUTH.items()})  # every order flips
    assert whdr(pred=reversed_, data=judgement_json(unequal)) == 1.0


def test_constant_albedo_scores_the_weight_share_of_unequal_pairs():
    # every pair reads 'E': the '1'/'2' comparisons (1.0 + 0.5 + 0.7) disagree, of 3.0 in total
    assert whdr(pred=torch.full((1, 3, H, W), 0.3, dtype=torch.float64)) == pytest.approx(2.2 / 3.0, abs=1e-15)


def test_subsets_of_equal_and_unequal_pairs():
    const = torch.full((1, 3, H, W), 0.3, dtype=torch.float64)
    assert whdr("whdr-eq", pred=const) == 0.0  # the one 'E' pair agrees
    assert whdr("whdr-ineq", pred=const) == 1.0  # every '1'/'2' pair is read as 'E'
    # points 1 and 4 pulled apart: only the 'E' comparison (weight 0.8) disagrees
    apart = albedo({**TRUTH, 4: 0.5})
    assert whdr("whdr-eq", pred=apart) == 1.0 and whdr("whdr-ineq", pred=apart) == 0.0
    assert whdr(pred=apart) == pytest.approx(0.8 / 3.0, abs=1e-15)
    # no 'E' comparison at all: whdr-eq has no value (not 0)
    assert math.isnan(whdr("whdr-eq", pred=apart, data=judgement_json(COMPARISONS[:2])))


def test_invariant_to_a_global_scale():
    mixed = albedo({**TRUTH, 3: 0.1})  # point 3 now darker than 1 and 2: comparisons 2 and 4 disagree
    want = (0.5 + 0.7) / 3.0
    assert whdr(pred=mixed) == pytest.approx(want, abs=1e-15)
    for s in (1e-3, 7.3, 250.0):
        assert whdr(pred=mixed * s) == pytest.approx(want, abs=1e-15)


def test_depends_on_gamma():
    # points 1 and 2 at a linear ratio 1.15 > 1.10 ('1' in linear space); after x ** (1/2.2)
    # the ratio is 1.15 ** (1/2.2) ~ 1.066 <= 1.10, so the sRGB variant reads 'E'
    assert 1.15 ** (1 / 2.2) < 1.10 < 1.15
    pred = albedo({1: 0.4, 2: 0.46})
    data = judgement_json([(1, 2, "1", 1.0)])
    assert whdr(pred=pred, data=data) == 0.0
    assert whdr("whdr-srgb", pred=pred, data=data) == 1.0
    # the gamma applies per channel, before the channel mean: point 2 red (1.38, 0, 0) has the
    # linear mean 0.46 (ratio 1.15: '1') but the gamma mean 1.38 ** (1/2.2) / 3 ~ 0.386 < 0.4 ** (1/2.2)
    red = albedo({1: 0.4})
    red[0, 0, 0, 9] = 1.38
    red[0, 1:, 0, 9] = 0.0
    g1, g2 = 0.4 ** (1 / 2.2), 1.38 ** (1 / 2.2) / 3
    assert g1 / g2 > 1.10  # so in sRGB the algorithm says point 2 is darker
    says_2 = judgement_json([(1, 2, "2", 1.0)])
    assert whdr(pred=red, data=says_2) == 1.0 and whdr("whdr-srgb", pred=red, data=says_2) == 0.0


def test_strict_threshold_at_one_plus_delta():
    # 11.0 / 10.0 == 1.0 + 0.1 exactly in float64: not "> 1 + delta", so the algorithm says 'E'
    assert 11.0 / 10.0 == 1.0 + 0.1
    at = albedo({1: 10.0, 2: 11.0})
    above = albedo({1: 10.0, 2: 11.000001})
    says_equal, says_1 = judgement_json([(1, 2, "E", 1.0)]), judgement_json([(1, 2, "1", 1.0)])
    assert whdr(pred=at, data=says_equal) == 0.0 and whdr(pred=at, data=says_1) == 1.0
    assert whdr(pred=above, data=says_equal) == 1.0 and whdr(pred=above, data=says_1) == 0.0
    # the other direction (l1 / l2) and another delta whose 1 + delta is exact in binary
    assert whdr(pred=albedo({1: 12.5, 2: 10.0}), data=judgement_json([(1, 2, "E", 1.0)]), delta=0.25) == 0.0
    assert whdr(pred=albedo({1: 12.5001, 2: 10.0}), data=judgement_json([(1, 2, "2", 1.0)]), delta=0.25) == 0.0
    assert create_metric("whdr", delta=0.25).name == "whdr-25"


def test_skipped_comparisons_do_not_count():
    # each extra comparison would disagree (it says point 3 is darker than point 1) if it counted
    wrong = [(3, 1, "1", 5.0)]
    skipped = [(3, 1, "X", 5.0), (3, 1, None, 5.0), (3, 1, "1", 0.0), (3, 1, "1", None), (3, 1, "1", -2.0)]
    assert whdr(pred=albedo(TRUTH), data=judgement_json(COMPARISONS + wrong)) == pytest.approx(5.0 / 8.0)
    for extra in skipped:
        assert whdr(pred=albedo(TRUTH), data=judgement_json(COMPARISONS + [extra])) == 0.0, extra
    # a non-opaque point drops every comparison it is in: here 1 (w 1.0), 3 (w 0.8) and 4 (w 0.7)
    data = judgement_json(opaque={1: False})
    assert whdr(pred=torch.full((1, 3, H, W), 0.3, dtype=torch.float64), data=data) == 1.0  # only (2, 3, '1')


def test_an_image_without_a_counted_comparison_has_no_value():
    pred = albedo(TRUTH)
    none_count = judgement_json([(1, 2, "1", 0.0), (1, 3, "?", 1.0)])
    assert math.isnan(whdr(pred=pred, data=none_count))
    assert math.isnan(whdr(pred=pred, data=judgement_json([])))
    # in a batch, only that image is NaN
    j = [parse_judgements(judgement_json(), "a.json"), parse_judgements(none_count, "b.json")]
    out = create_metric("whdr")(torch.cat([pred, pred]), j)
    assert out[0] == 0.0 and math.isnan(out[1])


def test_any_prediction_size_reads_the_same_points():
    # a 40 x 40 prediction that is the 10 x 10 one upsampled by pixel replication: same WHDR
    mixed = albedo({**TRUTH, 3: 0.1})
    big = mixed.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    assert whdr(pred=big) == whdr(pred=mixed) == pytest.approx(1.2 / 3.0)


def test_bad_judgement_files_are_one_line_errors():
    for data, needle in (({"intrinsic_points": []}, "intrinsic_comparisons"),
                         (judgement_json([(1, 9, "1", 1.0)]), "point id 9"),
                         ({"intrinsic_comparisons": []}, "intrinsic_points")):
        with pytest.raises(DatasetError) as e:
            parse_judgements(data, "/data/123.json")
        msg = str(e.value)
        assert "/data/123.json" in msg and needle in msg and "\n" not in msg


# -- the iiw: and iiw-test: datasets ------------------------------------------------------------

def write_iiw(root, ids=("7", "12"), size=(40, 30), data=None):
    d = root / "data"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in ids:
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(d / f"{i}.png")
        (d / f"{i}.json").write_text(json.dumps(judgement_json() if data is None else data))
    return root


def test_iiw_folder(tmp_path):
    root = write_iiw(tmp_path / "iiw-dataset", ids=("12", "7", "100"))
    (root / "data" / "55.png").write_bytes((root / "data" / "7.png").read_bytes())  # a photo without judgements
    ds = create_dataset(f"iiw:{root}", resolution=16)
    assert [ds.sample_id(i) for i in range(len(ds))] == ["7", "12", "100"]  # numeric order, 55 skipped
    assert ds.components == () and not ds.has_ground_truth and ds.references == ("iiw",)
    s = ds[0]
    assert s.image.shape == (3, 16, 16) and s.albedo is None and s.mask is None
    assert s.meta["crop_box"] == {"top": 0, "left": 0, "height": 30, "width": 40}  # the whole photo
    j = s.meta["references"]["iiw"]
    assert j.counted.tolist() == [True] * 4 and j.weight.tolist() == [1.0, 0.5, 0.8, 0.7]
    assert create_dataset(f"iiw:{root / 'data'}", resolution=16).sample_id(0) == "7"  # the data/ folder itself
    before = ds.fingerprint()
    (root / "data" / "7.json").write_text(json.dumps(judgement_json(COMPARISONS[:1])))
    assert create_dataset(f"iiw:{root}", resolution=16).fingerprint() != before  # judgements are part of the key


def test_iiw_bad_files_name_the_file(tmp_path):
    root = write_iiw(tmp_path / "a", ids=("3",), data={"intrinsic_points": []})
    ds = create_dataset(f"iiw:{root}", resolution=16)
    with pytest.raises(DatasetError) as e:
        ds[0]
    assert str(root / "data" / "3.json") in str(e.value) and "intrinsic_comparisons" in str(e.value)
    root = write_iiw(tmp_path / "b", ids=("3",), data=judgement_json([(1, 77, "1", 1.0)]))
    with pytest.raises(DatasetError) as e:
        create_dataset(f"iiw:{root}", resolution=16)[0]
    assert "3.json" in str(e.value) and "77" in str(e.value)
    (tmp_path / "c" / "data").mkdir(parents=True)
    (tmp_path / "c" / "data" / "5.json").write_text("{")
    with pytest.raises(DatasetError) as e:
        create_dataset(f"iiw:{tmp_path / 'c'}")
    assert "no <id>.png with its <id>.json" in str(e.value)


def test_shipped_test_split():
    ids = read_split("iiw_test")
    assert len(ids) == 1046 and len(set(ids)) == 1046 and all(i.isdigit() for i in ids)
    assert ids == sorted(ids)  # the source lists them sorted as file names
    for example in ("26616", "63508", "102613", "4136"):  # CRefNet's and IntrinsicDiffusion's IIW examples
        assert example in ids


def test_iiw_test_needs_every_split_image(tmp_path, monkeypatch):
    split = tmp_path / "splits" / "mini.txt"
    split.parent.mkdir()
    split.write_text("# provenance\n7\n12\n")
    monkeypatch.setattr(iiw_module, "split_path", lambda name: split if name == "mini" else tmp_path / "none.txt")
    monkeypatch.setattr(iiw_module.IIWTestDataset, "split", "mini")
    root = write_iiw(tmp_path / "iiw", ids=("7", "12", "99"))
    ds = create_dataset(f"iiw-test:{root}", resolution=16)
    assert [ds.sample_id(i) for i in range(len(ds))] == ["7", "12"]
    (root / "data" / "12.json").unlink()
    with pytest.raises(DatasetError) as e:
        create_dataset(f"iiw-test:{root}", resolution=16)
    msg = str(e.value)
    assert "1 of the 2" in msg and "12.json" in msg and "\n" not in msg
    # the shipped list itself missing: one line naming it and the fix
    monkeypatch.setattr(iiw_module.IIWTestDataset, "split", "iiw_test")
    with pytest.raises(JoinbenchError) as e:
        create_dataset(f"iiw-test:{root}", resolution=16)
    assert "none.txt" in str(e.value) and "reinstall" in str(e.value) and "\n" not in str(e.value)


# -- end to end: run and compare score WHDR with the protocol in the table heading ---------------

def test_run_and_compare_print_whdr_with_its_protocol(tmp_path):
    from typer.testing import CliRunner

    from joinbench.cli import app
    from joinbench.imageio import write_npz

    root = write_iiw(tmp_path / "iiw", ids=("7", "12"))
    (root / "data" / "100.json").write_text(json.dumps(judgement_json([(1, 2, "1", 0.0)])))  # nothing counts
    Image.open(root / "data" / "7.png").save(root / "data" / "100.png")
    r = 16  # point pixels at 16 px: floor(0.05 * 16) = 0, floor(0.95 * 16) = 15, floor(0.55 * 16) = 8
    pixels16 = {1: (0, 0), 2: (0, 15), 3: (15, 0), 4: (8, 8)}
    perfect = torch.full((3, r, r), 0.5)
    for p, v in TRUTH.items():
        perfect[:, pixels16[p][0], pixels16[p][1]] = v
    preds = tmp_path / "preds"
    for sid, a in (("7", perfect), ("12", torch.full((3, r, r), 0.3)), ("100", perfect)):
        write_npz(preds / f"{sid}.npz", albedo=a, shading=torch.ones(3, r, r), specular=torch.zeros(3, r, r))
    run_dir = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--method", f"predictions:{preds}", "--dataset", f"iiw:{root}", "-r", str(r),
                                   "--metrics", "whdr,whdr-20,mse", "--out", str(run_dir), "-q"])
    assert res.exit_code == 0, (res.output, res.exception)
    summary = json.loads((run_dir / "summary.json").read_text())
    # image 7 scores 0, image 12 (constant) 2.2 / 3, image 100 has no value and is left out
    for name in ("whdr", "whdr-20"):
        got = summary["results"]["albedo"][name]
        assert got["n"] == 2 and got["mean"] == pytest.approx((0.0 + 2.2 / 3.0) / 2, abs=1e-12)
    assert "mse" in summary["results"]["image"]  # the re-render is scored as before
    table = (run_dir / "table.md").read_text()
    assert "whdr (δ=0.10, linear) ↓" in table and "whdr-20 (δ=0.20, linear) ↓" in table
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", "--datasets", f"iiw:{root}", "--methods", f"predictions:{preds}",
                                   "-r", str(r), "--metrics", "whdr,whdr-srgb", "--out", str(out), "-q"])
    assert res.exit_code == 0, (res.output, res.exception)
    md = (out / "compare.md").read_text()
    assert "albedo whdr (δ=0.10, linear) ↓" in md and "albedo whdr-srgb (δ=0.10, sRGB γ=2.2) ↓" in md


def test_benchmark_metrics_on_other_datasets_are_refused(tmp_path):
    from typer.testing import CliRunner

    from joinbench.cli import app

    res = CliRunner().invoke(app, ["run", "--method", "trivial", "--dataset", "real-faces", "--metrics", "whdr",
                                   "--out", str(tmp_path / "r"), "-q"])
    assert res.exit_code != 0 and isinstance(res.exception, JoinbenchError)
    msg = str(res.exception)
    assert "real-faces" in msg and "whdr (needs iiw annotations)" in msg and "\n" not in msg


# -- as a user tries it: no --metrics, the dataset declares WHDR ---------------------------------

# gray 8-bit codes of the photo around each judged point (background 60): in linear sRGB
# 0.127 < 0.305 < 0.716, and point 4 / point 1 = 1.043, so every human answer holds
CODES = {1: 100, 2: 150, 3: 220, 4: 102}
WHDR_DEFAULTS = ("whdr", "whdr-20", "whdr-eq", "whdr-ineq")


def user_fixture(root):
    """iiw:ROOT with two 32 x 24 photos judged by COMPARISONS: "1" a uniform gray photo (any
    method that keeps a uniform photo uniform has a constant albedo), "2" gray blocks of CODES
    around the points (radius 0.2 in normalised units, so resizing keeps the point pixels)."""
    write_iiw(root, ids=("1", "2"), size=(32, 24))
    Image.fromarray(np.full((24, 32, 3), 128, np.uint8)).save(root / "data" / "1.png")
    blocks = np.full((24, 32), 60, np.uint8)
    for r in range(24):
        for c in range(32):
            x, y = (c + 0.5) / 32, (r + 0.5) / 24
            for p, (px, py) in POINTS.items():
                if math.hypot(x - px, y - py) < 0.2:
                    blocks[r, c] = CODES[p]
    Image.fromarray(np.repeat(blocks[..., None], 3, axis=2)).save(root / "data" / "2.png")
    return root


def albedo_records(run_dir) -> dict[str, dict[str, float]]:
    rows = [json.loads(ln) for ln in (run_dir / "records.jsonl").read_text().splitlines() if ln.strip()]
    return {r["id"]: r["metrics"] for r in rows if r["component"] == "albedo"}


def test_run_and_compare_without_metrics_score_the_iiw_protocol(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from joinbench.cli import app

    root = user_fixture(tmp_path / "iiw")
    assert create_dataset(f"iiw:{root}", resolution=32).default_metrics(("mse",)) == WHDR_DEFAULTS
    monkeypatch.chdir(tmp_path)  # runs/ goes where the user stands
    non_equal = (1.0 + 0.5 + 0.7) / (1.0 + 0.5 + 0.8 + 0.7)  # a constant albedo calls every pair 'E'
    # hand-derived per image: "1" constant albedo; "2" trivial's albedo is the photo decoded (monotonic)
    trivial = {"1": {"whdr": non_equal, "whdr-20": non_equal, "whdr-eq": 0.0, "whdr-ineq": 1.0},
               "2": {m: 0.0 for m in WHDR_DEFAULTS}}
    res = CliRunner().invoke(app, ["run", "--method", "color-retinex", "--dataset", f"iiw:{root}", "-r", "32"])
    assert res.exit_code == 0, (res.output, res.exception)
    for heading in ("whdr (δ=0.10, linear) ↓", "whdr-20 (δ=0.20, linear) ↓", "whdr-eq (δ=0.10, linear, 'E' pairs) ↓",
                    "whdr-ineq (δ=0.10, linear, '1'/'2' pairs) ↓"):
        assert heading in res.output
    header = next(ln for ln in res.output.splitlines() if ln.startswith("| component"))
    assert "lpips" not in header and "mse" not in header  # the re-render says nothing on IIW
    run_dir = next((tmp_path / "runs").glob("*-color-retinex-iiw*"))
    retinex = albedo_records(run_dir)
    assert retinex["1"] == pytest.approx(trivial["1"], abs=1e-12)  # a uniform photo: constant albedo
    assert all(0.0 <= v <= 1.0 for v in retinex["2"].values())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run"]["dataset_info"]["benchmark_metrics"] == list(WHDR_DEFAULTS)
    res = CliRunner().invoke(app, ["compare", "--datasets", f"iiw:{root}", "--methods", "color-retinex,trivial",
                                   "-r", "32"])
    assert res.exit_code == 0, (res.output, res.exception)
    md = (tmp_path / "runs" / "compare" / "compare.md").read_text()
    assert "albedo whdr (δ=0.10, linear) ↓" in res.output and "albedo whdr (δ=0.10, linear) ↓" in md
    assert "albedo whdr-ineq (δ=0.10, linear, '1'/'2' pairs) ↓" in md and "re-render mse" not in md
    assert "no dense ground truth" in md and "only the re-render is scored" not in md
    data = json.loads((tmp_path / "runs" / "compare" / "compare.json").read_text())
    cells = {(c["method"], c["metric"]): c["mean"] for c in data["datasets"][f"iiw:{root}"]["methods"]["trivial"]["results"]}
    for m in WHDR_DEFAULTS:
        assert cells[("trivial", m)] == pytest.approx((trivial["1"][m] + trivial["2"][m]) / 2, abs=1e-12)
    trivial_run = Path(data["datasets"][f"iiw:{root}"]["methods"]["trivial"]["run_dir"])
    got = albedo_records(trivial_run)
    assert set(got) == set(trivial) and all(got[i] == pytest.approx(trivial[i], abs=1e-12) for i in trivial)


def unscored_metric_names(text: str, scored) -> list[str]:
    """Registered metric names that ``text`` mentions (as whole names) but that were not scored."""
    import re

    return [m for m in list_metrics() if m not in scored and re.search(rf"(?<![\w-]){re.escape(m)}(?![\w-])", text)]


def test_captions_describe_only_the_scored_metrics(tmp_path, monkeypatch):
    """Scored by WHDR alone, the run's table.md and compare.md name no other metric, no
    display-space comparison and no re-render (their captions come from the metrics' declarations)."""
    from typer.testing import CliRunner

    from joinbench.cli import app

    root = user_fixture(tmp_path / "iiw")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["run", "--method", "trivial", "--dataset", f"iiw:{root}", "-r", "32", "--out", "run", "-q"])
    assert res.exit_code == 0, (res.output, res.exception)
    table = (tmp_path / "run" / "table.md").read_text()
    assert unscored_metric_names(table, WHDR_DEFAULTS) == []
    assert "whdr, whdr-20, whdr-eq and whdr-ineq score the albedo against the benchmark's own iiw annotations" in table
    for claim in ("Encoded-space", "display-space", "linear components", "`image` row", "re-render", "↑"):
        assert claim not in table, claim
    res = CliRunner().invoke(app, ["compare", "--datasets", f"iiw:{root}", "--methods", "trivial", "-r", "32",
                                   "--out", "cmp", "-q"])
    assert res.exit_code == 0, (res.output, res.exception)
    md = (tmp_path / "cmp" / "compare.md").read_text()
    caption, figures = next(ln for ln in md.splitlines() if ln.startswith("Each cell:")).split(" Figures: ")
    assert unscored_metric_names(md, WHDR_DEFAULTS) == []
    assert "whdr, whdr-20, whdr-eq and whdr-ineq score the albedo against the benchmark's own iiw annotations" in caption
    for claim in ("encoded display space", "re-render", "ground truth", "↑"):
        assert claim not in caption, claim
    assert figures == "per image, the input, then each method's re-render, albedo, shading and specular."


def test_external_predictions_at_the_photo_size_are_scored_at_that_size(tmp_path, monkeypatch):
    """WHDR reads normalised points, so a prediction saved at the photo's own 32 x 24 is scored
    as it is. The fixture discriminates: one-pixel values on a bright background score 0 at
    their own size, but blur into a wrong answer when first resized to the run's 32 x 32."""
    from typer.testing import CliRunner

    from joinbench.cli import app
    from joinbench.imageio import to_resolution, write_npz

    root = user_fixture(tmp_path / "iiw")
    native = torch.full((3, 24, 32), 1.0)
    for p, (x, y) in POINTS.items():
        native[:, math.floor(y * 24), math.floor(x * 32)] = TRUTH[p] / 5
    j = parse_judgements(judgement_json(), "fixture.json")
    assert float(create_metric("whdr")(to_resolution(native, 32, "stretch")[None], [j])[0]) > 0  # resized: wrong
    preds = tmp_path / "preds"
    for sid in ("1", "2"):
        write_npz(preds / f"{sid}.npz", albedo=native, shading=torch.ones(3, 24, 32), specular=torch.zeros(3, 24, 32))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["run", "--method", f"predictions:{preds}", "--dataset", f"iiw:{root}", "-r", "32",
                                   "--out", "run"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "not at the run's 32 px" in res.output and "32x24 px" in res.output
    assert albedo_records(tmp_path / "run") == {sid: {m: 0.0 for m in WHDR_DEFAULTS} for sid in ("1", "2")}  # exact
    # a size that is neither the run's nor a whole view of the photo: one line naming the sizes that work
    write_npz(preds / "1.npz", albedo=torch.ones(3, 30, 20), shading=torch.ones(3, 30, 20), specular=torch.zeros(3, 30, 20))
    res = CliRunner().invoke(app, ["run", "--method", f"predictions:{preds}", "--dataset", f"iiw:{root}", "-r", "32",
                                   "--out", "run2"])
    assert res.exit_code != 0 and isinstance(res.exception, JoinbenchError)
    msg = str(res.exception)
    assert "(3, 30, 20)" in msg and "(3, 32, 32)" in msg and "32x24 px" in msg and "--resolution 32" in msg
    assert "\n" not in msg


def test_ablate_scores_the_dataset_metrics_unless_the_spec_or_the_command_names_others(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from joinbench.cli import app

    root = user_fixture(tmp_path / "iiw")
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "spec.toml"  # no `metrics`: the dataset's
    spec.write_text('title = "floor vs retinex"\nbaseline = "trivial"\n\n[[variant]]\nname = "trivial"\nmethod = "trivial"\n\n'
                    '[[variant]]\nname = "color-retinex"\nmethod = "color-retinex"\n')
    res = CliRunner().invoke(app, ["ablate", "--dataset", f"iiw:{root}", "--spec", str(spec), "-r", "32", "--out", "a", "-q"])
    assert res.exit_code == 0, (res.output, res.exception)
    md = (tmp_path / "a" / "ablation.md").read_text()
    assert "albedo whdr (δ=0.10, linear) ↓" in md and "albedo whdr-ineq (δ=0.10, linear, '1'/'2' pairs) ↓" in md
    data = json.loads((tmp_path / "a" / "ablation.json").read_text())
    assert data["metrics"] == list(WHDR_DEFAULTS)
    res = CliRunner().invoke(app, ["ablate", "--dataset", f"iiw:{root}", "--spec", str(spec), "-r", "32", "--out", "b",
                                   "--metrics", "whdr-srgb", "-q"])
    assert res.exit_code == 0, (res.output, res.exception)
    md = (tmp_path / "b" / "ablation.md").read_text()
    assert "albedo whdr-srgb (δ=0.10, sRGB γ=2.2) ↓" in md and "whdr-20" not in md
