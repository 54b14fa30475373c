"""The full JoIN method (joinbench.methods.join.JoinFull: encoder init + stage 1 + PTI) and
its registered variants, on tiny CPU priors and encoders exported into a temporary folder."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from joinbench.errors import JoinbenchError
from joinbench.join.pti import PTIConfig
from joinbench.methods.join import JoinFull, JoinFullConfig, pti_config
from joinbench.registry import create_method, list_methods
from joinbench.runner import RunSettings, read_records, run_benchmark

from .tiny_world import RES, WDIM, WITH_JOINT, export_tiny_priors

pytestmark = pytest.mark.usefixtures("tiny_env")

VARIANTS = ("join", "join-nopti", "join-meaninit", "join-pti-nodisc", "join-joint-prior")
# small everything: 2 stage-1 steps, 3 PTI steps, pixel losses only, small statistics
QUICK = {"steps": "2", "pti_steps": "3", "perceptual": "none", "pti_perceptual": "none", "bank_size": "64",
         "mean_samples": "256", "pti_disc_samples": "2", "pti_log_every": "1"}


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory):
    """Random tiny materials priors (albedo, shading, specular, joint) and an encoder for
    each, with a random head so their latents differ from the mean latent."""
    return export_tiny_priors(tmp_path_factory.mktemp("bank"), seed=40, components=WITH_JOINT, encoders=True,
                              encoder_head=(0.1, 0.5))


def quick(bank_dir, **kw):
    return {"priors_path": str(bank_dir), "encoders_path": str(bank_dir), **QUICK, **kw}


# ---------------------------------------------------------------------------------------
def test_variants_are_configurations_of_one_class():
    assert set(VARIANTS) <= set(list_methods("join*"))
    methods = {n: create_method(n) for n in VARIANTS}  # no priors needed to create them
    assert {type(m) for m in methods.values()} == {JoinFull}
    c = {n: m.config for n, m in methods.items()}
    assert (c["join"].init, c["join"].pti, c["join"].pti_disc, c["join"].joint_prior) == ("encoder", True, True, False)
    assert c["join"].regulariser == "knn" and c["join"].pti_steps == 300 and c["join"].steps == 1000
    assert c["join-nopti"].pti is False and c["join-meaninit"].init == "mean"
    assert c["join-pti-nodisc"].pti_disc is False and c["join-joint-prior"].joint_prior is True
    for n in VARIANTS:  # each differs from `join` in its one field only
        diff = {f.name for f in dataclasses.fields(JoinFullConfig) if getattr(c[n], f.name) != getattr(c["join"], f.name)}
        assert len(diff) == (0 if n == "join" else 1), (n, diff)
    assert JoinFull.cpu_default_limit == 2 and JoinFull.needs_grad


def test_pti_fields_mirror_ptiConfig_and_parse():
    """Every PTIConfig field is a pti_* setting with the same default, so --set reaches all."""
    assert pti_config(JoinFullConfig()) == PTIConfig()
    m = create_method("join", pti_steps="50", pti_early_stop_lpips="0.06", pti_layers="torgb", pti_disc="no",
                      pti_betas="0.5,0.9", save_tuned="none")
    p = pti_config(m.config)
    assert (p.steps, p.early_stop_lpips, p.layers, p.disc, p.betas) == (50, 0.06, "torgb", False, (0.5, 0.9))
    assert m.config.save_tuned is None
    assert create_method("join", pti_early_stop_lpips="none").config.pti_early_stop_lpips is None
    for kw, match in ((dict(init="encoders"), "Unknown init"), (dict(pti_batching="jit"), "vmap or loop"),
                      (dict(pti_early_stop_lpips="low"), "expected a number or none"),
                      (dict(pti_steps="0"), "at least 1"), (dict(pti_typo="1"), "Did you mean")):
        with pytest.raises(JoinbenchError, match=match) as info:
            create_method("join", **kw)
        assert "\n" not in str(info.value)
    create_method("join-nopti", pti_steps="0")  # PTI settings are not checked when PTI is off


def test_join_decomposes_with_encoder_stage1_and_pti(bank_dir):
    images = torch.rand(2, 3, 2 * RES, 2 * RES)  # resized to the priors' 16 px and back
    m = create_method("join", **quick(bank_dir, steps="1"))  # one stage-1 step has lr 0: latents = init
    with torch.inference_mode():
        dec = m.decompose(images)
    assert dec.albedo.shape == dec.shading.shape == dec.specular.shape == (2, 3, 2 * RES, 2 * RES)
    assert dec.errors == [None, None]
    assert {"encoder", "stage1", "stage1_per_step", "pti", "pti_per_step"} <= set(dec.timings)
    assert dec.timings["pti_per_step"] == pytest.approx(dec.timings["pti"] / 3)
    ex = dec.extras
    assert ex["init"] == "encoder" and set(ex["init_latents"]) == {"albedo", "shading", "specular"}
    inv = m.load()
    for c in ("albedo", "shading", "specular"):
        assert torch.equal(ex["latents"][c], ex["init_latents"][c])  # stage 1 started at the encoder's w
        assert not torch.allclose(ex["latents"][c], inv.means[c].expand(2, -1))
    assert len(ex["loss_curve"]) == 2 and len(ex["pti_loss_curve"]) == 2 and ex["pti_stop_steps"] == [3, 3]
    assert ex["pti"]["generators"] == ["albedo", "shading", "specular"]
    # without PTI the components are stage 1's; with it they differ
    nopti = create_method("join-nopti", **quick(bank_dir, steps="1")).decompose(images)
    assert "pti" not in nopti.timings and "pti_loss_curve" not in nopti.extras
    assert not torch.allclose(nopti.albedo, dec.albedo, atol=1e-4)
    mean = create_method("join-meaninit", **quick(bank_dir, steps="1")).decompose(images)
    assert "encoder" not in mean.timings and mean.extras["init"] == "mean"
    assert torch.allclose(mean.extras["latents"]["albedo"], inv.means["albedo"].expand(2, -1))


def test_missing_encoders_is_one_line_error(bank_dir, tmp_path):
    m = create_method("join", **quick(bank_dir, encoders_path=str(tmp_path)))
    with pytest.raises(JoinbenchError, match="init=mean") as info:
        m.decompose(torch.rand(1, 3, RES, RES))
    assert "\n" not in str(info.value) and "joinbench train encoder" in str(info.value)
    with pytest.raises(JoinbenchError, match="init=mean"):  # a run fails before it starts
        create_method("join", **quick(bank_dir, encoders_path=str(tmp_path))).to("cpu")
    create_method("join-meaninit", **quick(bank_dir, encoders_path=str(tmp_path))).to("cpu")  # needs none


def test_cpu_settings_fill_only_what_the_user_left(bank_dir, capsys):
    cpu = torch.device("cpu")
    m = create_method("join", **quick(bank_dir, steps="3"), pti_disc_every="1")
    assert m.prepare(None, cpu) == {}  # all chosen by the caller
    m.to("cpu")
    assert (m.config.steps, m.config.pti_steps, m.config.pti_disc_every) == (3, 3, 1)
    m = create_method("join", priors_path=str(bank_dir), encoders_path=str(bank_dir), steps="7")
    assert m.prepare(None, cpu) == {k: JoinFull.cpu_settings[k] for k in ("pti_steps", "pti_disc_every")}
    assert m.config.steps == 7
    assert m.config.pti_steps == JoinFull.cpu_settings["pti_steps"] < JoinFullConfig.pti_steps
    assert m.config.pti_disc_every == JoinFull.cpu_settings["pti_disc_every"]
    assert m.prepare(None, cpu) == {}  # once applied, nothing left to change
    assert m.device_settings(torch.device("cuda")) == {}  # a GPU runs the defaults
    assert capsys.readouterr().out == ""  # preparing prints nothing: the plan announces (tests/test_plan.py)
    # without PTI the PTI settings are applied (one config per device) but are not worth announcing
    m = create_method("join-nopti", priors_path=str(bank_dir), encoders_path=str(bank_dir))
    assert "pti_steps" in m.prepare(None, cpu) and "pti_steps" in m.unused_settings() and "steps" not in m.unused_settings()


def test_save_tuned_writes_each_images_generators(bank_dir, tmp_path):
    from safetensors import safe_open

    out = run_benchmark(RunSettings(method="join", dataset="materials", resolution=RES, limit=2, batch_size=2,
                                    device="cpu", metrics=("mse",), overrides=quick(bank_dir, save_tuned=str(tmp_path / "tuned")),
                                    progress=False, out=tmp_path / "run"))
    ids = sorted({r["id"] for r in read_records(out / "records.jsonl")})
    files = sorted(p.name for p in (tmp_path / "tuned").iterdir())
    safe = lambda s: "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)
    assert files == sorted(f"{safe(i)}-{c}-G.safetensors" for i in ids for c in ("albedo", "shading", "specular"))
    with safe_open(str(tmp_path / "tuned" / files[0]), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
        assert f.get_tensor("pivot").shape == (WDIM,)
    assert meta["format"] == "joinbench-pti-tuned" and meta["layers"] == "synthesis"
    assert any(k.startswith("param.synthesis.") for k in keys) and "noise.0" in keys


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_runs_through_the_runner(bank_dir, tmp_path, name):
    out = run_benchmark(RunSettings(method=name, dataset="materials", resolution=RES, limit=2, batch_size=2,
                                    device="cpu", metrics=("mse", "si-mse"), overrides=quick(bank_dir),
                                    progress=False, out=tmp_path / name))
    records = read_records(out / "records.jsonl")
    assert len(records) == 2 * 4 and all(r["error"] is None for r in records)
    assert all(math.isfinite(r["metrics"]["mse"]) for r in records)
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["timing"]["stage_seconds_this_invocation"]
    assert stages["stage1"] > 0 and ("pti" in stages) == (name != "join-nopti")
    assert ("encoder" in stages) == (name != "join-meaninit")
    assert summary["run"]["method_config"]["pti_steps"] == 3  # explicit settings beat the CPU ones
