"""The GPU campaign (joinbench/campaign): budgets, what travels back and how, the FD gate, the
history log and the README block. Tiny 16 px priors (tiny_world.py) stand in for shipped ones.

The whole campaign end to end (training, runs, ship, reports) is the CPU smoke
`bash scripts/smoke_campaign.sh`: it takes far longer than a test should (about 25 minutes on a
loaded 2-core CPU), so it is a documented command, not part of the suite."""
from __future__ import annotations

import json
import os
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from joinbench.campaign import history as hist
from joinbench.campaign.pack import COMPACT, PART_PREFIX, compact_predictions, expand_predictions, pack_window, unpack_window
from joinbench.campaign.ship import ablation_spec, fd_gate, install, verify_weights
from joinbench.campaign.window import WindowConfig, run_command, stage_minutes
from joinbench.errors import JoinbenchError

from .tiny_world import export_tiny_priors

pytestmark = pytest.mark.usefixtures("tiny_env")
ROOT = Path(__file__).resolve().parents[1]


# -- the budget ---------------------------------------------------------------------------------
def test_stage_minutes_share_the_budget_after_the_packing_reserve():
    m = stage_minutes(WindowConfig(minutes=9, reserve_minutes=0.5))
    assert m["d"] == 0.0  # d lives on what c leaves
    assert sum(m.values()) == pytest.approx(8.5)
    assert m["a"] / m["c"] == pytest.approx(0.45 / 0.35)
    # a second call: no training, c has the whole budget (and d what c leaves)
    assert stage_minutes(WindowConfig(minutes=9, stages="cd", reserve_minutes=0.5)) == {"c": 8.5, "d": 0.0}
    assert stage_minutes(WindowConfig(minutes=9, stages="d", reserve_minutes=0.5)) == {"d": 8.5}


def test_bad_window_settings_are_one_line_errors():
    for cfg in (WindowConfig(minutes=12), WindowConfig(stages="ax"), WindowConfig(stages=""), WindowConfig(limit=0)):
        with pytest.raises(JoinbenchError):
            cfg.check()


def test_run_command_carries_the_join_settings_and_the_variant_settings():
    cfg = WindowConfig(device="cpu", resolution=16, limit=2, join_set=("steps=2", "pti_steps=1"))
    argv = run_command(cfg, {"method": "join", "set": {"w_plus": True, "steps": 5}, "dataset": "bank:faces"}, Path("o"))
    text = " ".join(argv)
    assert "--dataset bank:faces --limit 2 --batch-size 2 --resolution 16 --device cpu" in text
    assert "--save-predictions" in text and "lpips" not in text.split("--metrics ")[1].split()[0]
    assert "--set pti_steps=1" in text and "--set w_plus=true" in text
    assert "--set steps=5" in text and "--set steps=2" not in text  # the variant's own setting wins


# -- what travels back ------------------------------------------------------------------------------
def _fake_run(folder: Path, ids: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    (folder / "predictions").mkdir(parents=True)
    for sid in ids:
        arrays = {c: rng.uniform(0, 3, (3, 16, 16)).astype(np.float32) for c in ("albedo", "shading", "specular")}
        arrays["rerender"] = rng.uniform(0, 1, (3, 16, 16)).astype(np.float32)
        np.savez_compressed(folder / "predictions" / f"{sid}.npz", **arrays)
    for name in ("records.jsonl", "summary.json", "run.json"):
        (folder / name).write_text("{}\n")


def test_predictions_travel_as_float16_and_come_back_per_image(tmp_path):
    run = tmp_path / "run"
    _fake_run(run, ["materials-00001", "materials-00000"], 0)
    assert compact_predictions(run).name == COMPACT
    back = tmp_path / "back"
    back.mkdir()
    shutil.copy2(run / COMPACT, back / COMPACT)
    folder = expand_predictions(back)
    assert sorted(p.name for p in folder.glob("*.npz")) == ["materials-00000.npz", "materials-00001.npz"]
    for sid in ("materials-00000", "materials-00001"):
        with np.load(run / "predictions" / f"{sid}.npz") as a, np.load(folder / f"{sid}.npz") as b:
            assert set(b.files) == {"albedo", "shading", "specular"}
            for c in b.files:
                assert b[c].dtype == np.float32
                np.testing.assert_allclose(b[c], a[c], rtol=2.0 ** -11, atol=0)
    assert compact_predictions(tmp_path / "none") is None


def _window(tmp_path: Path, run_images: int = 200) -> Path:
    w = tmp_path / "window"
    (w / "weights").mkdir(parents=True)
    (w / "logs").mkdir()
    (w / "logs" / "a.log").write_text("trained\n")
    (w / "weights" / "materials-albedo-G.safetensors").write_bytes(os.urandom(3 << 20))
    (w / "weights" / "materials-albedo.json").write_text("{}")
    runs = {}
    for k, label in enumerate(["join@materials", "join-s1@materials", "join@faces"]):
        folder = f"runs/r{k}"
        _fake_run(w / folder, [f"materials-{i:05d}" for i in range(run_images)], k)
        runs[label] = {"status": "done", "folder": folder}
    runs["join-s1@faces"] = {"status": "timeout", "folder": "runs/r9"}
    (w / "manifest.json").write_text(json.dumps({"config": {"resolution": 16}, "runs": runs}))
    return w


def test_pack_keeps_to_the_budget_and_unpacks_whole(tmp_path):
    w = _window(tmp_path)
    out = tmp_path / "out"
    m = pack_window(w, out, budget_mb=4.6, part_mb=1)
    assert m["packed"][:2] == ["logs", "weights"]
    assert m["left_out"] and "join-s1@faces" not in m["packed"] + m["left_out"]  # a run cut off never travels
    parts = sorted(out.glob(f"{PART_PREFIX}*"))
    assert all(p.stat().st_size <= 1 << 20 for p in parts) and len(parts) <= 7
    assert sum(p.stat().st_size for p in parts) <= 4.6 * (1 << 20)
    back = unpack_window([*reversed(parts), out / "manifest.json"], tmp_path / "back")
    assert json.loads((back / "manifest.json").read_text())["left_out"] == m["left_out"]
    assert (back / "weights" / "materials-albedo-G.safetensors").read_bytes() == \
        (w / "weights" / "materials-albedo-G.safetensors").read_bytes()
    for label in m["packed"][2:]:
        folder = json.loads((w / "manifest.json").read_text())["runs"][label]["folder"]
        assert (back / folder / COMPACT).is_file() and not (back / folder / "predictions").exists()
    with pytest.raises(JoinbenchError, match="missing"):
        unpack_window(parts[1:], tmp_path / "again")
    with pytest.raises(JoinbenchError, match="part"):
        unpack_window([out / "manifest.json"], tmp_path / "again")


# -- weights: hashes and the FD gate ------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A shipped folder and a returned one (other weights), with encoders bound to their priors."""
    shipped = export_tiny_priors(tmp_path_factory.mktemp("shipped"), seed=3, encoders=True)
    returned = export_tiny_priors(tmp_path_factory.mktemp("returned"), seed=7, encoders=True)
    return shipped, returned


def test_returned_weights_are_checked_against_their_sidecars(folders, tmp_path):
    shipped, returned = folders
    assert verify_weights(returned, shipped) == []
    new = shutil.copytree(returned, tmp_path / "new")
    (new / "materials-shading-G.safetensors").write_bytes(b"not the file")
    (new / "materials-albedo.json").unlink()  # the encoder's prior is then the shipped one: not its own
    (new / "materials-albedo-G.safetensors").unlink()
    problems = " | ".join(verify_weights(new, shipped))
    assert "materials-shading.json: materials-shading-G.safetensors does not match" in problems
    assert "materials-albedo-encoder.json: trained against a materials-albedo.json" in problems


def test_fd_gate_refuses_a_worse_ratio_measured_at_the_same_n(folders, tmp_path):
    shipped, returned = folders
    shipped = shutil.copytree(shipped, tmp_path / "shipped")
    new = shutil.copytree(returned, tmp_path / "new")
    for c, ratio in (("albedo", 1e-9), ("shading", 1e9)):  # shipped figures at the gate's n: used as they are
        sc = shipped / f"materials-{c}.json"
        sc.write_text(json.dumps({**json.loads(sc.read_text()), "fd_ratio": ratio, "fd_n": 8}))
    for c in ("specular",):
        (new / f"materials-{c}.json").unlink()
    rows = {r["prior"]: r for r in fd_gate(new, shipped, n=8, device="cpu")}
    assert set(rows) == {"materials-albedo", "materials-shading"}
    assert rows["materials-albedo"]["worse"] and not rows["materials-shading"]["worse"]
    assert rows["materials-albedo"]["returned"] > 0
    assert json.loads((new / "materials-albedo.json").read_text())["fd_n"] == 8  # measured into the sidecar
    # a shipped figure at another n is measured again at this n, not compared across n
    sc = shipped / "materials-albedo.json"
    sc.write_text(json.dumps({**json.loads(sc.read_text()), "fd_n": 5000}))
    again = {r["prior"]: r for r in fd_gate(new, shipped, n=8, device="cpu")}
    assert again["materials-albedo"]["shipped"] not in (None, 1e-9)


def test_install_replaces_files_and_adds_no_copies(folders, tmp_path):
    shipped, returned = folders
    dest = shutil.copytree(shipped, tmp_path / "dest")
    new = shutil.copytree(returned, tmp_path / "new")
    (new / "materials-shading-encoder.json").unlink()  # an export cut off before its sidecar
    before = sorted(p.name for p in dest.iterdir())
    installed = install(new, dest)
    assert sorted(p.name for p in dest.iterdir()) == before
    assert "materials-shading-encoder.safetensors" not in installed
    assert (dest / "materials-shading-encoder.safetensors").read_bytes() == \
        (shipped / "materials-shading-encoder.safetensors").read_bytes()
    for name in installed:
        assert (dest / name).read_bytes() == (new / name).read_bytes()
    assert len(installed) == len(list(new.iterdir())) - 1


# -- the log -----------------------------------------------------------------------------------------
def test_a_record_of_the_shipped_weights_and_its_rendering(folders, tmp_path):
    shipped, _ = folders
    r = hist.shipped_record(shipped, 0, "before the campaign", date="2026-11-26")
    assert r["window"] == 0 and r["date"] == "2026-11-26" and r["results"] == {}
    assert set(r["priors"]) == {"materials-albedo", "materials-shading", "materials-specular"}
    assert r["encoders"]["materials"]["prior_sha256"] == r["priors"]["materials-albedo"]["sha256"]
    records = hist.put_record([], r)
    assert hist.current_window(records, hist.weights_record(shipped)) == r
    md = hist.render_history(records)
    assert "| 0 | 2026-11-26 |" in md and "before the campaign" in md
    one = {**r, "window": 1, "note": ""}
    assert [x["window"] for x in hist.put_record(hist.put_record(records, one), {**one, "note": "again"})] == [0, 1]
    jsonl, page = tmp_path / "h.jsonl", tmp_path / "h.md"
    hist.write_history(records, jsonl, page)
    assert hist.load_history(jsonl) == json.loads(json.dumps(records)) and page.read_text() == md


def test_results_cells_targets_and_the_readme_block(tmp_path):
    res = {"materials": {"join": {"albedo_lpips": [0.20, 0.18, 0.22]}, "trivial": {"albedo_lpips": [0.40, 0.35, 0.45]},
                         "color-retinex": {"albedo_lpips": [0.21, 0.19, 0.23]}},
           "faces-shift": {"join": {"albedo_lpips": [0.30, 0.25, 0.35]}, "unet": {"albedo_lpips": [0.20, 0.15, 0.26]}}}
    r = {"window": 2, "date": "d", "device": "GPU", "priors": {"materials-albedo": {"fd_ratio": 9.5}}, "results": res}
    lines = hist.target_lines(res)
    assert "- `join` below `trivial` on materials (intervals apart): **yes**" in lines
    assert "- `join` below `color-retinex` on materials (intervals apart): **no**" in lines  # overlapping intervals
    assert "- `join` below `unet` on faces-shift (the paper's central claim): **no**" in lines
    assert "| 2 | join 0.200 · c-rtx 0.210 · triv 0.400 | - | - | join 0.300 · unet 0.200 | - | - |" in hist.render_history([r])
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Results\n\n{hist.README_START}\nold\n{hist.README_END}\n\nafter\n")
    assert hist.update_readme(readme, [r]) and not hist.update_readme(readme, [r])
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{hist.README_END}\n\nafter\n") and "| materials | 0.200 [0.180, 0.220]" in text
    readme.write_text("no markers\n")
    with pytest.raises(JoinbenchError, match="marker"):
        hist.update_readme(readme, [r])


def test_committed_history_renders_from_its_log():
    """reports/priors/history.md is exactly the rendering of history.jsonl (nobody edits it by hand)."""
    records = hist.load_history(ROOT / "reports/priors/history.jsonl")
    assert records and records[0]["window"] == 0
    assert (ROOT / "reports/priors/history.md").read_text() == hist.render_history(records)


# -- scoring the ablation here ---------------------------------------------------------------------------
def test_ablation_spec_of_returned_variants(tmp_path):
    variants = tmp_path / "ablation"
    for name in ("JoIN", "no PTI"):
        (variants / name.replace(" ", "_")).mkdir(parents=True)
        (variants / name.replace(" ", "_") / "materials-00000.npz").write_bytes(b"")
    (variants / "W_").mkdir()
    (variants / "W_" / "materials-shift-00000.npz").write_bytes(b"")  # another dataset's: not this table's
    spec = tomllib.loads(ablation_spec(variants, "materials", 3))
    assert [v["name"] for v in spec["variant"]] == ["JoIN", "no PTI"]
    assert spec["variant"][1]["method"] == f"predictions:{(variants / 'no_PTI').resolve()}"
    assert "GPU window 3" in spec["title"] and spec["baseline"] == "JoIN"
    shutil.rmtree(variants / "JoIN")
    assert ablation_spec(variants, "materials", 3) == ""  # without the baseline there is no table


def test_evaluation_runs_travel_and_pool_back_by_method(tmp_path):
    """Stage c/d's machinery with a fast method: runs in order, the same command made once, a run
    without time left not started; packed, unpacked and pooled into pred/<method>/ with its ids."""
    from joinbench.campaign.ship import pool_predictions
    from joinbench.campaign.window import Window, run_stage

    cfg = WindowConfig(out=str(tmp_path / "w"), device="cpu", resolution=16, limit=2, minutes=5)
    window = Window(cfg)
    runs = [{"label": "trivial@materials", "method": "trivial", "set": {}, "dataset": "materials"},
            {"label": "ablation@materials/base", "method": "trivial", "set": {}, "dataset": "materials", "variant": "base"}]
    run_stage(window, "c", runs, until=float("inf"))
    run_stage(window, "d", [{**runs[0], "label": "late@faces", "dataset": "faces"}], until=0.0)
    m = window.manifest["runs"]
    assert m["trivial@materials"]["status"] == "done" and m["ablation@materials/base"]["same_as"] == "trivial@materials"
    assert m["late@faces"]["status"].startswith("not started")
    summary = json.loads((window.root / m["trivial@materials"]["folder"] / "summary.json").read_text())
    assert "lpips" not in summary["results"]["albedo"]  # scored where it is shipped
    pack_window(window.root, tmp_path / "out")
    call = unpack_window(sorted((tmp_path / "out").glob(f"{PART_PREFIX}*")), tmp_path / "call")
    pooled = pool_predictions(call, tmp_path / "win")
    assert set(pooled) == {"trivial@materials", "ablation@materials/base"}
    names = sorted(p.name for p in (tmp_path / "win" / "pred" / "trivial").glob("*.npz"))
    assert names == ["materials-00000.npz", "materials-00001.npz"]
    assert sorted(p.name for p in (tmp_path / "win" / "pred" / "ablation" / "base").glob("*.npz")) == names


def test_ship_refuses_a_window_whose_priors_got_worse_and_installs_nothing(folders, tmp_path, monkeypatch):
    import joinbench.gan.bank as gan_bank
    from joinbench.campaign.ship import ShipConfig, ship

    shipped = shutil.copytree(folders[0], tmp_path / "shipped")
    for c in ("albedo", "shading", "specular"):  # shipped figures no returned prior can beat
        sc = shipped / f"materials-{c}.json"
        sc.write_text(json.dumps({**json.loads(sc.read_text()), "fd_ratio": 1e-9, "fd_n": 8}))
    before = {p.name: p.read_bytes() for p in shipped.iterdir()}
    window = tmp_path / "window"
    shutil.copytree(folders[1], window / "weights")
    (window / "manifest.json").write_text(json.dumps({"config": {"resolution": 16}, "runs": {}}))
    pack_window(window, tmp_path / "out")
    monkeypatch.setattr(gan_bank, "weights_dir", lambda: shipped)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(JoinbenchError, match="Refused: the FD ratio of materials-albedo, materials-shading, materials-specular"):
        ship(ShipConfig(files=tuple(map(str, (tmp_path / "out").iterdir())), fd_n=8, nn_pool=0))
    assert {p.name: p.read_bytes() for p in shipped.iterdir()} == before
    assert not (tmp_path / "reports").exists()
