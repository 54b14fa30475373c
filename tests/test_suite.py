"""`joinbench ablate` and `joinbench compare`: spec parsing and validation, result reuse,
tables with comparisons, and the commands as a user runs them (cheap methods, 16 px)."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from joinbench.errors import JoinbenchError
from joinbench.registry import list_methods
from joinbench.ablate import AblationSettings, run_ablation
from joinbench.compare import CompareSettings, parse_method_sets, run_comparison
from joinbench.paired import Difference, comparison_sentence, paired_differences
from joinbench.spec import check_spec, load_spec, parse_spec, shipped_specs, shipped_specs_dir

SPEC = """
title = "Retinex ablation"
baseline = "trivial"
metrics = ["mse", "ssim"]

[[variant]]
name = "trivial"
method = "trivial"
group = "floor"

[[variant]]
name = "retinex"
method = "retinex"
group = "retinex"

[[variant]]
name = "retinex t=0.2"
method = "retinex"
set = { gray_threshold = 0.2 }
group = "retinex"
baseline = "retinex"
"""

FAST = dict(limit=4, resolution=16, batch_size=2, device="cpu", progress=False)


@pytest.fixture(autouse=True)
def fixed_code_version(monkeypatch):
    """Reuse keys name the code version, and a tree with local changes names its diff: keep it
    fixed while a test runs, so an edit elsewhere in the checkout cannot change the keys."""
    import joinbench.plan as plan
    import joinbench.suite as suite

    fixed = dict(plan.code_version())
    for module in (plan, suite):
        monkeypatch.setattr(module, "code_version", lambda: dict(fixed))


def _spec_file(tmp_path, text=SPEC, name="spec.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# -- parsing ------------------------------------------------------------------------------
def test_parse_spec_fields_and_settings():
    spec = parse_spec(SPEC + """
[[variant]]
name = "typed"
method = "retinex"
set = { colour = true, eps = 1e-4, anchor_percentile = 90, stage1 = { steps = 5 }, betas = [0.5, 0.9] }
""")
    assert spec.title == "Retinex ablation" and spec.metrics == ("mse", "ssim")
    assert [v.name for v in spec.variants] == ["trivial", "retinex", "retinex t=0.2", "typed"]
    # the spec-wide baseline applies to every other variant, a variant's own wins, never itself
    assert [v.baseline for v in spec.variants] == [None, "trivial", "retinex", "trivial"]
    assert spec.variant("retinex t=0.2").set == {"gray_threshold": "0.2"}
    # TOML values become the `--set` text the config parses; nested tables become dotted keys
    assert spec.variant("typed").set == {"colour": "true", "eps": "0.0001", "anchor_percentile": "90",
                                         "stage1.steps": "5", "betas": "0.5,0.9"}
    assert spec.variant("retinex").group == "retinex"


@pytest.mark.parametrize("text, message", [
    ('title = "x"\nvaraint = 1\n', r"unknown key 'varaint'\. Did you mean 'variant'\? Valid keys: title"),
    ('[[variant]]\nname = "a"\nmethod = "trivial"\nsett = { a = 1 }\n',
     r"variant #1 \('a'\): unknown key 'sett'\. Did you mean 'set'\? Valid keys: name, method, set"),
    ('[[variant]]\nname = "a"\n', r"variant #1 \('a'\): missing 'method'"),
    ('[[variant]]\nmethod = "trivial"\n', r"variant #1: missing 'name'"),
    ('[[variant]]\nname = "a"\nmethod = "trivial"\n[[variant]]\nname = "a"\nmethod = "retinex"\n',
     r"variant name 'a' is used twice \(#1 and #2\)"),
    ('baseline = "trival"\n[[variant]]\nname = "trivial"\nmethod = "trivial"\n',
     r"baseline 'trival' is not a variant of this spec\. Did you mean 'trivial'\?"),
    ('[[variant]]\nname = "a"\nmethod = "trivial"\nbaseline = "b"\n', r"variant 'a': baseline 'b' is not a variant"),
    ('[[variant]]\nname = "a"\nmethod = "trivial"\nset = "x=1"\n', r"'set' must be a table"),
    ('[[variant]]\nname = "a"\nmethod = 3\n', r"'method' must be a non-empty string, got an integer"),
    ('[variant]\nname = "a"\nmethod = "trivial"\n', r"array of tables, written \[\[variant\]\]"),
    ('title = "nothing"\n', r"has no variants"),
    ('variant = []\n', r"has no variants"),
    ('metrics = ["mse", "mse"]\n[[variant]]\nname = "a"\nmethod = "trivial"\n', r"'metrics' lists 'mse' twice"),
    ('[[variant]]\nname = "a"\nmethod = "trivial"\nbaseline = "a"\n', r"variant #1 \('a'\): it names itself as its baseline"),
    ('metrics = "mse"\n[[variant]]\nname = "a"\nmethod = "trivial"\n', r"'metrics' must be a non-empty array"),
    ('[[variant]]\nname = "a"\nmethod = "trivial"\nset = { x = { y = [{ z = 1 }] } }\n', r"setting 'x\.y'"),
    ('[[variant]\nname = "a"\n', r"is not valid TOML: .*line 1"),
])
def test_bad_specs_fail_with_one_clear_line(text, message):
    with pytest.raises(JoinbenchError, match=message) as err:
        parse_spec(text, source="my.toml")
    assert "\n" not in str(err.value) and str(err.value).startswith("Spec my.toml")


@pytest.mark.parametrize("variant, message", [
    ('method = "retinx"', r"variant 'v': Unknown method 'retinx'\. Did you mean 'retinex'"),
    ('method = "retinex"\nset = { gray_treshold = 0.1 }',
     r"variant 'v': Unknown setting 'gray_treshold' for RetinexConfig\. Did you mean gray_threshold.* Valid: .*chroma_threshold"),
    ('method = "retinex"\nset = { gray_threshold = "high" }', r"gray_threshold='high': expected a float"),
    ('method = "join-s1"\nset = { regulariser = "knn-hinges" }', r"Unknown regulariser 'knn-hinges'"),
])
def test_check_spec_instantiates_each_variant(variant, message):
    spec = parse_spec(f'[[variant]]\nname = "ok"\nmethod = "trivial"\n[[variant]]\nname = "v"\n{variant}\n',
                      source="s.toml")
    with pytest.raises(JoinbenchError, match=message):
        check_spec(spec)


def test_check_spec_metrics_and_command_line_settings():
    spec = parse_spec('metrics = ["mse", "lpipz"]\n[[variant]]\nname = "a"\nmethod = "trivial"\n', source="s.toml")
    with pytest.raises(JoinbenchError, match=r"metrics: Unknown metric 'lpipz'\. Did you mean 'lpips'"):
        check_spec(spec)
    spec = parse_spec('[[variant]]\nname = "a"\nmethod = "retinex"\n[[variant]]\nname = "b"\nmethod = "trivial"\n')
    check_spec(spec, {"forward_model": "srgb"})  # a key every method has
    with pytest.raises(JoinbenchError, match=r"variant 'b': Unknown setting 'gray_threshold' for TrivialConfig"):
        check_spec(spec, {"gray_threshold": "0.1"})  # --set applies to every variant


def test_shipped_specs_express_the_ablations():
    assert {"join", "join-s1"} <= set(shipped_specs())
    spec = load_spec(None)  # the default
    assert spec.source == "join (shipped)" and spec.metrics == ("mse", "ssim", "lpips")
    by_method = {(v.method, tuple(sorted(v.set.items()))) for v in spec.variants}
    assert by_method == {
        ("join", ()), ("join-joint-prior", ()), ("join", (("regulariser", "none"),)),
        ("join", (("regulariser", "in-domain"),)), ("join", (("regulariser", "knn-hinge"),)),
        ("join-meaninit", ()), ("join-nopti", ()), ("join-pti-nodisc", ()), ("join", (("w_plus", "true"),)),
    }
    assert all(v.baseline == "JoIN" for v in spec.variants if v.name != "JoIN")
    assert all(v.group for v in spec.variants)
    # what users copy is what is shipped
    assert spec.text == (shipped_specs_dir() / "join.toml").read_text()
    check_spec(load_spec("join-s1"))  # stage-1 methods exist now


def test_default_spec_names_registered_methods():
    spec = load_spec("join")
    missing = sorted({v.method for v in spec.variants} - set(list_methods()))
    assert not missing, f"the shipped spec names methods that are not registered: {', '.join(missing)}"
    check_spec(spec)


def test_spec_names_resolve(tmp_path):
    assert load_spec(_spec_file(tmp_path)).source == str(tmp_path / "spec.toml")
    assert load_spec("join-s1.toml").stem == "join-s1"
    with pytest.raises(JoinbenchError, match=r"Spec 'jion' not found.*Did you mean 'join'\?.*Shipped specs: join"):
        load_spec("jion")
    with pytest.raises(JoinbenchError, match="is a folder"):
        load_spec(tmp_path)


# -- comparisons ---------------------------------------------------------------------------
def test_paired_differences_and_sentences():
    ids = [f"i{k}" for k in range(12)]
    base = {("albedo", "mse"): {i: 0.1 + 0.01 * k for k, i in enumerate(ids)},
            ("albedo", "ssim"): {i: 0.5 + 0.01 * k for k, i in enumerate(ids)},
            ("image", "mse"): {i: 0.2 for i in ids}}
    # worse MSE on every image (higher), better SSIM on every image, re-render noise around 0
    var = {("albedo", "mse"): {i: v + 0.05 for i, v in base[("albedo", "mse")].items()},
           ("albedo", "ssim"): {i: v + 0.1 for i, v in base[("albedo", "ssim")].items()},
           ("image", "mse"): {i: 0.2 + (0.01 if k % 2 else -0.01) for k, i in enumerate(ids)}}
    cols = [("albedo", "mse"), ("albedo", "ssim"), ("image", "mse")]
    diffs = paired_differences(var, base, cols, {"mse": False, "ssim": True})
    assert [d.verdict for d in diffs] == ["worse", "better", "inside"]
    assert diffs[0].diff == pytest.approx(0.05) and diffs[0].n == 12 and diffs[0].ci_low > 0
    s = comparison_sentence("none", "knn", diffs)
    assert s.startswith("none vs knn (12 images, paired): worse outside the 95% interval on albedo MSE (+0.0500")
    assert "better outside the 95% interval on albedo SSIM (+0.1000" in s
    assert s.endswith("the other 1 of 3 differences lie inside their intervals.")
    same = paired_differences(base, base, cols, {"mse": False, "ssim": True})
    assert {d.verdict for d in same} == {"inside"}
    assert "none of the 3 differences lies outside its 95% interval" in comparison_sentence("a", "b", same)
    one = paired_differences({("albedo", "mse"): {"i0": 1.0}}, base, cols[:1], {})
    assert one[0].verdict == "n/a" and "too few images" in comparison_sentence("a", "b", one)
    assert isinstance(one[0], Difference)
    # 2 images that agree in sign are 'outside' the interval: the sentence must say that this is no test
    two = {k: {i: v[i] for i in ids[:2]} for k, v in var.items()}
    few = comparison_sentence("none", "knn", paired_differences(two, base, cols, {"mse": False, "ssim": True}))
    assert "worse outside the 95% interval on albedo MSE" in few
    assert "With only 2 images" in few and "descriptive, not a test" in few
    assert "With only" not in s


# -- ablate end to end --------------------------------------------------------------------
def _ablate(tmp_path, **kw):
    kw = {**FAST, **kw}
    spec = kw.pop("spec", None) or _spec_file(tmp_path)
    return run_ablation(AblationSettings(dataset="materials", spec=spec,
                                         out=tmp_path / "abl", command="joinbench ablate (test)", **kw))


def test_ablate_writes_the_table_and_reuses_finished_runs(tmp_path, monkeypatch):
    out = _ablate(tmp_path)
    md = (out / "ablation.md").read_text()
    assert md.startswith("# Retinex ablation on materials\n\nMade with `joinbench ablate (test)`")
    assert "Commit " in md and "wall time" in md and "torch " in md and "0 of 3 runs reused" in md
    header = next(line for line in md.splitlines() if line.startswith("| variant"))
    for col in ("group", "albedo mse ↓", "albedo ssim ↑", "shading mse ↓", "specular ssim ↑", "re-render mse ↓"):
        assert col in header
    assert "**" in md and "[" in md  # best marked, intervals shown
    assert "- retinex vs trivial (4 images, paired): " in md and "- retinex t=0.2 vs retinex (4 images, paired): " in md
    data = json.loads((out / "ablation.json").read_text())
    assert [v["name"] for v in data["variants"]] == ["trivial", "retinex", "retinex t=0.2"]
    assert [c["baseline"] for c in data["comparisons"]] == ["trivial", "retinex"]
    assert (out / "ablation.csv").read_text().startswith("variant,group,method,settings,component,metric")
    assert r"\textbf{" in (out / "ablation.tex").read_text()
    dirs = [v["run_dir"] for v in data["variants"]]
    assert len(set(dirs)) == 3 and all(Path(p).parent == tmp_path / "abl" / "runs" for p in dirs)

    # Rerun: everything is loaded, nothing decomposed, the same table.
    import joinbench.runner as runner

    def no_runs(settings):
        raise AssertionError(f"{settings.method} recomputed")

    with monkeypatch.context() as mp:
        mp.setattr(runner, "run_benchmark", no_runs)
        again = _ablate(tmp_path)
    data2 = json.loads((again / "ablation.json").read_text())
    assert all(v["reused"] for v in data2["variants"])
    assert data2["table"] == data["table"] and data2["comparisons"] == data["comparisons"]

    # A run without its summary (interrupted) resumes: the others stay reused.
    (Path(dirs[1]) / "summary.json").unlink()
    data3 = json.loads((_ablate(tmp_path) / "ablation.json").read_text())
    assert [v["reused"] for v in data3["variants"]] == [True, False, True]
    assert data3["table"] == data["table"]

    # Another setting or limit is another run folder; unchanged variants are still reused.
    data4 = json.loads((_ablate(tmp_path, limit=3) / "ablation.json").read_text())
    assert not any(v["reused"] for v in data4["variants"]) and {v["run_dir"] for v in data4["variants"]}.isdisjoint(dirs)


def test_ablate_validates_everything_before_running(tmp_path):
    bad = _spec_file(tmp_path, SPEC + '\n[[variant]]\nname = "late typo"\nmethod = "retinex"\nset = { gray_treshold = 1 }\n',
                     name="bad.toml")
    with pytest.raises(JoinbenchError, match="variant 'late typo': Unknown setting 'gray_treshold'"):
        _ablate(tmp_path, spec=bad)
    assert not (tmp_path / "abl").exists()  # the valid variants before it did not run
    with pytest.raises(JoinbenchError, match=r"Unknown dataset 'materails'\. Did you mean 'materials'"):
        run_ablation(AblationSettings(dataset="materails", spec=_spec_file(tmp_path), out=tmp_path / "x", **FAST))
    with pytest.raises(JoinbenchError, match="--limit must be at least 1"):
        _ablate(tmp_path, limit=0)


def test_ablate_command_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from joinbench.cli import app

    res = CliRunner().invoke(app, ["ablate", "--print-spec"])
    assert res.exit_code == 0 and res.output == (shipped_specs_dir() / "join.toml").read_text()
    res = CliRunner().invoke(app, ["ablate", "--spec", "join-s1"])
    assert isinstance(res.exception, JoinbenchError) and "ablate needs --dataset" in str(res.exception)
    # as a user sees it: one line on stderr, exit status 2
    _spec_file(tmp_path, SPEC.replace('name = "retinex"\nmethod = "retinex"', 'name = "retinex"\nmethod = "retinx"'))
    res = subprocess.run([sys.executable, "-m", "joinbench", "ablate", "--dataset", "materials", "--spec", "spec.toml"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.startswith("error: Spec spec.toml, variant 'retinex': Unknown method 'retinx'. Did you mean 'retinex'")
    assert not (tmp_path / "runs").exists()


# -- compare --------------------------------------------------------------------------------
def test_compare_report_with_real_and_synthetic_datasets(tmp_path):
    settings = CompareSettings(datasets=("materials", "real-faces"), methods=("retinex", "trivial"), limit=2,
                               resolution=16, batch_size=2, device="cpu", metrics=("mse", "ssim"), out=tmp_path / "cmp",
                               grid_images=2, progress=False, command="joinbench compare (test)")
    out = run_comparison(settings)
    md = (out / "compare.md").read_text()
    assert md.startswith("# Main comparison\n\nMade with `joinbench compare (test)`")
    assert "## materials\n" in md and "## real-faces (no ground truth)\n" in md
    real = md.split("## real-faces")[1].split("## Runs")[0]
    header = next(line for line in real.splitlines() if line.startswith("| method"))
    assert "re-render mse ↓" in header and "albedo" not in header  # nothing else to score without ground truth
    synthetic = md.split("## materials")[1].split("## real-faces")[0]
    assert "albedo mse ↓" in synthetic and "| retinex" in synthetic and "| trivial" in synthetic and "**" in synthetic
    for name in ("materials", "real-faces"):
        assert f"](figures/{name}.png)" in md and (out / "figures" / f"{name}.png").is_file()
    rows = (out / "compare.csv").read_text().splitlines()
    assert rows[0].startswith("dataset,method,component,metric") and len(rows) == 1 + 2 * 8 + 2 * 2
    again = run_comparison(dataclasses.replace(settings, title="Retinex against trivial"))
    data = json.loads((again / "compare.json").read_text())
    assert all(m["reused"] for d in data["datasets"].values() for m in d["methods"].values())
    assert (again / "compare.md").read_text().startswith("# Retinex against trivial\n")


def test_runs_from_rerenders_old_runs_with_new_code_and_never_computes(tmp_path, monkeypatch):
    import joinbench.plan as plan
    import joinbench.runner as runner
    import joinbench.suite as suite

    settings = CompareSettings(datasets=("materials",), methods=("retinex", "trivial"), limit=2, resolution=16,
                               batch_size=2, device="cpu", metrics=("mse",), out=tmp_path / "cmp", grid_images=1,
                               progress=False, command="joinbench compare (test)")
    first = json.loads((run_comparison(settings) / "compare.json").read_text())
    old = plan.code_version()["commit"]
    # the code moves on: plain reuse no longer applies, --runs-from OLD re-renders without computing
    for module in (plan, suite):
        monkeypatch.setattr(module, "code_version", lambda: {"commit": "f" * 40, "joinbench": "9.9"})
    monkeypatch.setattr(runner, "run_benchmark", lambda s: (_ for _ in ()).throw(AssertionError(f"{s.method} recomputed")))
    with pytest.raises(AssertionError, match="recomputed"):
        run_comparison(settings)
    out = run_comparison(dataclasses.replace(settings, runs_from=old[:7]))
    md = (out / "compare.md").read_text()
    assert f"Runs made at commit {old}" in md and f"rendered from them at commit {'f' * 40} (--runs-from)" in md
    data = json.loads((out / "compare.json").read_text())
    assert all(m["reused"] for m in data["datasets"]["materials"]["methods"].values())
    assert [m["run_dir"] for m in data["datasets"]["materials"]["methods"].values()] == \
        [m["run_dir"] for m in first["datasets"]["materials"]["methods"].values()]
    # a run missing at that commit is refused before anything runs; so is a commit with no runs
    with pytest.raises(JoinbenchError, match=r"only re-renders finished runs, and 1 of 3 have none .*color-retinex"):
        run_comparison(dataclasses.replace(settings, runs_from=old[:7], methods=("retinex", "trivial", "color-retinex")))
    with pytest.raises(JoinbenchError, match="--runs-from needs a commit"):
        run_comparison(dataclasses.replace(settings, runs_from=""))
    with pytest.raises(JoinbenchError, match=r"--runs-from 'abc123' matches no run under .* \(commits of the runs there: "):
        run_comparison(dataclasses.replace(settings, runs_from="abc123"))


def test_folder_datasets_are_keyed_on_their_files(tmp_path):
    """A user folder keeps its name when its images change: the run must not be reused."""
    from joinbench.export import export_dataset
    from joinbench.plan import open_dataset

    exp, photos = tmp_path / "exp", tmp_path / "photos"
    export_dataset(open_dataset("materials", 16, 0), exp, limit=2, progress=False)
    photos.mkdir()
    (photos / "a.png").write_bytes((exp / "materials-00000.png").read_bytes())
    settings = CompareSettings(datasets=(f"folder:{photos}",), methods=("trivial",), resolution=16, batch_size=1,
                               device="cpu", metrics=("mse",), out=tmp_path / "cmp", grid_images=1, progress=False)
    first = json.loads((run_comparison(settings) / "compare.json").read_text())
    again = json.loads((run_comparison(settings) / "compare.json").read_text())
    (photos / "a.png").write_bytes((exp / "materials-00001.png").read_bytes())  # same name, other image
    changed = json.loads((run_comparison(settings) / "compare.json").read_text())
    runs = [next(iter(d["datasets"].values()))["methods"]["trivial"] for d in (first, again, changed)]
    assert runs[1]["reused"] and runs[1]["run_dir"] == runs[0]["run_dir"]
    assert not runs[2]["reused"] and runs[2]["run_dir"] != runs[0]["run_dir"]
    # a plain run folder refuses to resume over changed files
    from joinbench.runner import RunSettings, run_benchmark

    folder = tmp_path / "run"
    run_benchmark(RunSettings(method="trivial", dataset=f"folder:{photos}", resolution=16, out=folder, progress=False,
                              metrics=("mse",)))
    (photos / "a.png").write_bytes((exp / "materials-00000.png").read_bytes())
    with pytest.raises(JoinbenchError, match="holds a different run .*dataset_content"):
        run_benchmark(RunSettings(method="trivial", dataset=f"folder:{photos}", resolution=16, out=folder,
                                  progress=False, metrics=("mse",)))


def test_suite_out_must_be_a_folder_before_anything_runs(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    with pytest.raises(JoinbenchError, match="f is a file; give a folder"):
        run_comparison(CompareSettings(datasets=("materials",), methods=("trivial",), out=tmp_path / "f", **FAST))
    assert "[1/" not in capsys.readouterr().out


def test_datasets_without_ground_truth_need_an_encoded_metric(tmp_path):
    with pytest.raises(JoinbenchError, match="real-faces has no ground truth, so only the re-render is scored"):
        run_comparison(CompareSettings(datasets=("materials", "real-faces"), methods=("trivial",), metrics=("si-mse",),
                                       check_only=True, out=tmp_path / "c"))
    with pytest.raises(JoinbenchError, match="no ground truth"):
        from joinbench.runner import RunSettings, run_benchmark

        run_benchmark(RunSettings(method="trivial", dataset="real-faces", metrics=("lmse",), limit=1, resolution=16,
                                  out=tmp_path / "r", progress=False))


def test_compare_options_are_checked():
    assert parse_method_sets(["retinex:gray_threshold=0.1"], ("retinex", "trivial")) == {"retinex": {"gray_threshold": "0.1"}}
    with pytest.raises(JoinbenchError, match="METHOD:key=value"):
        parse_method_sets(["gray_threshold=0.1"], ("retinex",))
    with pytest.raises(JoinbenchError, match=r"'retinx' is not one of the compared methods\. Did you mean 'retinex'"):
        parse_method_sets(["retinx:gray_threshold=0.1"], ("retinex",))
    with pytest.raises(JoinbenchError, match=r"Unknown method 'trivail'\. Did you mean 'trivial'"):
        run_comparison(CompareSettings(datasets=("materials",), methods=("trivail",), check_only=True))
    with pytest.raises(JoinbenchError, match="lists trivial twice"):
        run_comparison(CompareSettings(datasets=("materials",), methods=("trivial", "trivial"), check_only=True))
    with pytest.raises(JoinbenchError, match=r"Unknown dataset 'real-face'\. Did you mean 'real-faces'"):
        run_comparison(CompareSettings(datasets=("real-face",), methods=("trivial",), check_only=True))
