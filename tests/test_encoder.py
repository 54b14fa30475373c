"""Encoders for stage-1 initialisation (joinbench.join.encoder) on tiny random priors.

Tiny random faces priors (16 px, w_dim 16, one per component plus a 9-channel joint one)
are exported into a temporary folder; encoders are tiny too (widths 8, 16). Pixel loss
only (``perceptual="none"``) for speed; the faces stream renders fastest. CPU, one thread.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from joinbench.errors import JoinbenchError
from joinbench.join.encoder import (Encoder, EncoderConfig, EncoderError, EncoderTrainConfig, count_parameters,
                                    load_encoders, steps_to_stay_below, train_encoders)

from .tiny_world import RES, WDIM, WITH_JOINT, export_tiny_priors

pytestmark = pytest.mark.usefixtures("tiny_env")

FAST_GAIN = dict(bank_size=300, mean_samples=500, radius_samples=100)


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    """Tiny random faces priors: albedo, shading, specular and joint (9 channels)."""
    return export_tiny_priors(tmp_path_factory.mktemp("enc-priors"), seed=20, dataset="faces", components=WITH_JOINT)


def tiny_cfg(priors, out, **kw) -> EncoderTrainConfig:
    base = dict(dataset="faces", component="albedo", kimg=0.032, batch=4, device="cpu", out=str(out),
                priors_path=str(priors), perceptual="none", progress=False, stem_width=8, widths=(8, 16),
                log_kimg=0.016, snapshot_kimg=1.0, stats_samples=500, gain_steps=0, gain_stage1=FAST_GAIN)
    base.update(kw)
    return EncoderTrainConfig(**base)


def test_network_output_size_and_batch_independence():
    """Absolute latents (B, w_dim); an untrained encoder predicts exactly w_avg; any input
    size is resized; GroupNorm keeps images independent of their batch; the default
    network fits eight encoders in 6 MB as float16."""
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(resolution=16, w_dim=WDIM, stem_width=8, widths=(8, 16)))
    w_avg, w_scale = torch.randn(WDIM), torch.rand(WDIM) + 0.5
    enc.set_latent_stats(w_avg, w_scale)
    images = torch.rand(3, 3, 24, 24)
    out = enc(images)
    assert out.shape == (3, WDIM)
    assert torch.equal(out, w_avg.expand(3, -1))  # zero-initialised head
    with torch.no_grad():
        enc.head.weight.normal_()
    out = enc(images)
    assert not torch.allclose(out[0], out[1])
    assert torch.allclose(enc(images[1:2]), out[1:2], atol=1e-6)
    assert enc(torch.rand(2, 3, 16, 16)).shape == (2, WDIM)
    with pytest.raises(EncoderError, match=r"\(B, 3, H, W\)"):
        enc(torch.rand(2, 1, 16, 16))
    assert 8 * 2 * count_parameters(Encoder(EncoderConfig(w_dim=128))) <= 6_000_000


def test_training_lowers_the_loss(priors, tmp_path):
    out = train_encoders(tiny_cfg(priors, tmp_path / "run", kimg=0.16))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 1 and log[-1]["nimg"] == 160 and all(r["images_per_s"] > 0 for r in log)
    first = log[0]["loss"]
    late = sum(r["loss"] for r in log[-3:]) / 3
    assert late < 0.8 * first, (first, late)
    side = json.loads((out / "faces-albedo-encoder.json").read_text())
    assert side["first_losses"]["loss"] == first
    assert side["final_losses"]["loss"] == pytest.approx(log[-1]["loss"], abs=1e-6)


def test_lpips_vgg_loss_term(priors, tmp_path):
    """The default loss: pixel MSE + 0.8 LPIPS-VGG, both logged."""
    out = train_encoders(tiny_cfg(priors, tmp_path / "lp", kimg=0.004, perceptual="lpips-vgg"))
    rec = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert rec["perceptual"] > 0 and rec["loss"] == pytest.approx(rec["pixel"] + 0.8 * rec["perceptual"], rel=1e-4)


def test_exact_resume(priors, tmp_path):
    straight = train_encoders(tiny_cfg(priors, tmp_path / "a", component="all"))
    cut = train_encoders(tiny_cfg(priors, tmp_path / "b", component="all", minutes=1e-6))
    assert json.loads((cut / "faces-shading-encoder.json").read_text())["images_seen"] == 4  # one step, then out of time
    with pytest.raises(JoinbenchError, match="--resume"):
        train_encoders(tiny_cfg(priors, tmp_path / "b", component="all"))
    with pytest.raises(JoinbenchError, match="settings differ"):
        train_encoders(tiny_cfg(priors, tmp_path / "b", component="all", lr=0.01), resume=True)
    resumed = train_encoders(tiny_cfg(priors, tmp_path / "b", component="all"), resume=True)
    a = load_file(str(straight / "checkpoint" / "models.safetensors"))
    b = load_file(str(resumed / "checkpoint" / "models.safetensors"))
    assert a.keys() == b.keys() and {k.split(".")[0] for k in a} == {"albedo", "shading", "specular"}
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = torch.load(straight / "checkpoint" / "state.pt", weights_only=True)
    sb = torch.load(resumed / "checkpoint" / "state.pt", weights_only=True)
    for name in ("albedo", "shading", "specular"):
        for i, st in sa["trainers"][name]["opt"]["state"].items():
            for key, t in st.items():
                assert torch.equal(t, sb["trainers"][name]["opt"]["state"][i][key])
    for c in ("albedo", "shading", "specular"):  # and so are the exports
        ea = load_file(str(straight / f"faces-{c}-encoder.safetensors"))
        eb = load_file(str(resumed / f"faces-{c}-encoder.safetensors"))
        assert all(torch.equal(ea[k], eb[k]) for k in ea)


@pytest.fixture(scope="module")
def exported(priors, tmp_path_factory):
    """A trained albedo encoder with the stage-1 gain measured (3 steps, 2 test images)."""
    out = tmp_path_factory.mktemp("enc-export")
    return train_encoders(tiny_cfg(priors, out, kimg=0.016, gain_images=2, gain_steps=4))


def test_export_sidecar_and_load_round_trip(priors, exported):
    side = json.loads((exported / "faces-albedo-encoder.json").read_text())
    prior = json.loads((priors / "faces-albedo.json").read_text())
    assert side["prior"]["sha256"] == prior["sha256"]["G"] and side["images_seen"] == 16
    assert side["commit"] and side["versions"]["torch"] and side["device"].startswith("cpu")
    assert side["network"]["widths"] == [8, 16] and side["network"]["resolution"] == RES
    gain = side["stage1_gain"]
    reach = gain["encoder_steps_to_mean_final"]
    assert reach == steps_to_stay_below(gain["mean_curve"]["encoder_init"], gain["mean_curve"]["mean_init"][-1])
    assert gain["steps_saved"] == (None if reach is None else 4 - reach)
    assert steps_to_stay_below([5, 2, 4, 1, 1], 3) == 3 and steps_to_stay_below([1, 1], 3) == 0
    assert steps_to_stay_below([1, 4], 3) is None
    assert gain["images"] == 2 and gain["steps"] == 4 and gain["encoders"] == ["albedo"]
    assert set(gain["loss_at_steps"]) == {"0", "1", "2", "3"}
    assert all(v["mean_init"] > 0 and v["encoder_init"] > 0 for v in gain["loss_at_steps"].values())
    assert gain["component_mse"]["init"]["mean_init"].keys() == {"albedo", "shading", "specular"}
    assert gain["final_terms"]["encoder_init"].keys() == {"perceptual", "pixel", "noise", "latent"}
    # components without an encoder start from the same mean latent in both runs
    assert gain["component_mse"]["init"]["encoder_init"]["shading"] == gain["component_mse"]["init"]["mean_init"]["shading"]
    tensors = load_file(str(exported / "faces-albedo-encoder.safetensors"))
    assert tensors["head.weight"].dtype == torch.float16 and tensors["w_avg"].dtype == torch.float32
    encs = load_encoders("faces", components=["albedo"], path=exported, priors_path=priors)
    enc = encs["albedo"]
    assert enc.component == "albedo" and enc.prior_sha256 == prior["sha256"]["G"] and not enc.training
    x = torch.rand(2, 3, RES, RES)
    ref = Encoder(enc.config)
    ref.load_state_dict({k: v.float() for k, v in tensors.items()})
    assert torch.equal(enc(x), ref(x))
    # the check against the prior in use: a bank (or sha map) with another generator
    with pytest.raises(EncoderError, match="trained against") as info:
        load_encoders("faces", components=["albedo"], path=exported, bank={"albedo": "0" * 64})
    assert "joinbench train encoder" in str(info.value) and "\n" not in str(info.value)
    assert load_encoders("faces", components=["albedo"], path=exported, bank={"albedo": prior["sha256"]["G"]})


def test_corrupt_and_missing_files_are_one_line_errors(exported, priors, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(exported, folder, ignore=shutil.ignore_patterns("checkpoint*"))
    weights = folder / "faces-albedo-encoder.safetensors"
    sha = json.loads((folder / "faces-albedo-encoder.json").read_text())["sha256"]
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(EncoderError) as info:
        load_encoders("faces", components=["albedo"], path=folder, priors_path=priors)
    msg = str(info.value)
    assert str(weights) in msg and sha in msg and "\n" not in msg
    weights.unlink()  # the sidecar names the hash the missing file should have
    with pytest.raises(EncoderError) as info:
        load_encoders("faces", components=["albedo"], path=folder, priors_path=priors)
    msg = str(info.value)
    assert str(weights) in msg and sha in msg and "joinbench train encoder --dataset faces" in msg and "\n" not in msg
    with pytest.raises(EncoderError, match="joinbench train encoder --dataset faces") as info:  # nothing there at all
        load_encoders("faces", path=tmp_path / "empty")
    assert "\n" not in str(info.value) and "faces-albedo-encoder.safetensors" in str(info.value)


def test_joint_encoder(priors, tmp_path):
    """The joint prior's encoder: one w for the 9-channel generator, supervised on all three
    components; its gain runs stage 1 on the joint prior."""
    out = train_encoders(tiny_cfg(priors, tmp_path / "j", component="joint", kimg=0.008, gain_images=2, gain_steps=3))
    side = json.loads((out / "faces-joint-encoder.json").read_text())
    assert side["channels"] == ["albedo", "shading", "specular"] and side["stage1_gain"]["stage1"]["joint_prior"]
    assert side["stage1_gain"]["component_mse"]["final"]["encoder_init"].keys() == {"albedo", "shading", "specular"}
    enc = load_encoders("faces", components=["joint"], path=out, priors_path=priors)["joint"]
    assert enc(torch.rand(3, 3, RES, RES)).shape == (3, WDIM)
    with pytest.raises(EncoderError, match="component"):
        load_encoders("faces", components=["diffuse"], path=out)


def test_cli_train_encoder(priors, tmp_path):
    from typer.testing import CliRunner

    from joinbench.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["train", "encoder", "-d", "faces", "-c", "shading", "--kimg", "0.004", "--batch", "4",
                            "--device", "cpu", "--out", str(tmp_path / "cli"), "--priors-path", str(priors),
                            "--perceptual", "none", "--gain-steps", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "faces-shading-encoder.safetensors" in r.output and "joinbench/weights" in r.output
    r = runner.invoke(app, ["train", "encoder", "-d", "faces", "-c", "diffuse", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and isinstance(r.exception, JoinbenchError) and "albedo" in str(r.exception)


def test_init_from_continues_an_encoder_against_a_retrained_prior(priors, tmp_path):
    """--init-from: an exported encoder continues against a new prior; its weights carry over,
    its latent statistics are re-anchored on the new prior, the new sidecar is bound to the new
    prior's sha256 (so it loads with it), and images seen and the history add up."""
    from joinbench.gan.bank import load_prior
    from joinbench.join.encoder import EncoderTrainer, latent_stats

    first = train_encoders(tiny_cfg(priors, tmp_path / "first", kimg=0.008))
    new = export_tiny_priors(tmp_path / "new-priors", seed=41, dataset="faces")
    prior = load_prior("faces", "albedo", path=new)
    cfg = tiny_cfg(new, tmp_path / "x").resolved()
    trainer = EncoderTrainer("albedo", cfg, prior, None, torch.device("cpu"), RES, None)
    record = trainer.init_from(first, "faces")
    shipped = load_file(str(first / "faces-albedo-encoder.safetensors"))
    state = trainer.encoder.state_dict()
    assert all(torch.equal(state[k], v.float()) for k, v in shipped.items() if k not in ("w_avg", "w_scale"))
    w_avg, w_scale = latent_stats(prior.G, cfg.stats_samples, seed=cfg.seed)
    assert torch.equal(state["w_avg"], w_avg) and torch.equal(state["w_scale"], w_scale.clamp_min(1e-6))
    assert record["images_seen"] == 8 and record["prior_sha256"] != prior.sha256
    out = train_encoders(tiny_cfg(new, tmp_path / "cont", kimg=0.008, init_from=str(first)))
    side = json.loads((out / "faces-albedo-encoder.json").read_text())
    assert side["prior"]["sha256"] == prior.sha256 and side["images_seen"] == 16
    assert [h["images"] for h in side["history"]] == [8, 8] and side["history"][1]["init_from"] == str(first)
    assert load_encoders("faces", components=["albedo"], path=out, priors_path=new)["albedo"].prior_sha256 == prior.sha256
