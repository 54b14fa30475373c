"""GAN priors: StyleGAN2 model shapes and noise, training steps, exact resume, EMA, fp16
export/load, bad checkpoints, the latent bank cache, FD-VGG. Tiny models (8-16 px), CPU."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from joinbench.errors import JoinbenchError
from joinbench.gan.bank import PriorError, load_bank, load_prior
from joinbench.gan.fd import evaluate_prior, fd_from_features, frechet_distance
from joinbench.gan.model import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from joinbench.gan.train import TrainConfig, d_loss, ema_beta, export_prior, paired_logits, train_prior, update_ema
from joinbench.training.data import TrainStream, create_training_dataset, encode_batch

TINY = dict(channel_base=256, channel_max=16)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convolutions on a shared 2-core machine: one intra-op thread avoids OpenMP spin
    contention that made them ~50x slower with two threads while other processes ran."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_g(res=16, img_channels=3, seed=0, **kw) -> Generator:
    torch.manual_seed(seed)
    return Generator(GeneratorConfig(resolution=res, img_channels=img_channels, z_dim=16, w_dim=16, **TINY, **kw))


def tiny_d(res=16, img_channels=3, seed=0) -> Discriminator:
    torch.manual_seed(seed)
    return Discriminator(DiscriminatorConfig(resolution=res, img_channels=img_channels, **TINY))


def tiny_train_cfg(out, **kw) -> TrainConfig:
    base = dict(dataset="faces", component="albedo", kimg=0.016, batch=4, resolution=16, out=str(out), device="cpu",
                progress=False, z_dim=16, w_dim=16, r1_interval=2, grid_size=4, log_kimg=0.008, snapshot_kimg=1.0, **TINY)
    base.update(kw)
    return TrainConfig(**base)


def export_tiny(folder: Path, dataset="materials", component="albedo", seed=0) -> tuple[Generator, Discriminator]:
    ch = 9 if component == "joint" else 3
    G, D = tiny_g(img_channels=ch, seed=seed), tiny_d(img_channels=ch, seed=seed)
    with torch.no_grad():  # non-trivial noise strengths and w_avg so they are part of the round trip
        for c in G.synthesis.convs:
            c.noise_strength.fill_(0.1)
        G.mapping.w_avg.normal_()
    export_prior(folder, dataset, component, G, D, {"images_seen": 0, "forward_model": "reinhard"})
    return G, D


# ---------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("res", [8, 16, 32])
def test_shapes_generator_and_discriminator(res):
    G, D = tiny_g(res), tiny_d(res)
    z = torch.randn(3, 16)
    img = G(z)
    assert img.shape == (3, 3, res, res)
    assert G.num_ws == 2 * int(math.log2(res)) - 2
    assert len(G.noise_shapes()) == G.num_ws - 1
    assert [s[-1] for s in G.noise_shapes()][-1] == res
    assert D(img).shape == (3, 1)
    assert G.mapping(z).shape == (3, 16)
    assert G.mean_latent(256, seed=1).shape == (1, 16)


def test_w_and_wplus_synthesis():
    G = tiny_g()
    w = G.mapping(torch.randn(2, 16))
    a = G.synthesis(w, noise_mode="const")
    b = G.synthesis(w[:, None].repeat(1, G.num_ws, 1), noise_mode="const")
    torch.testing.assert_close(a, b)
    wplus = w[:, None].repeat(1, G.num_ws, 1).clone()
    wplus[:, -1] += 1.0  # only the last toRGB's style changes
    assert not torch.allclose(G.synthesis(wplus, noise_mode="const"), a)
    with pytest.raises(ValueError):
        G.synthesis(torch.randn(2, G.num_ws + 1, 16))
    # truncation psi = 0 gives w_avg
    G.mapping.w_avg.normal_()
    torch.testing.assert_close(G.mapping(torch.randn(2, 16), truncation_psi=0.0), G.mapping.w_avg.expand(2, -1))


def test_noise_inputs_explicit_const_and_batched():
    G = tiny_g()
    with torch.no_grad():
        for c in G.synthesis.convs:
            c.noise_strength.fill_(0.5)
    w = G.mapping(torch.randn(1, 16)).repeat(2, 1)
    c1, c2 = G.synthesis(w, noise_mode="const"), G.synthesis(w, noise_mode="const")
    assert torch.equal(c1, c2)
    torch.testing.assert_close(G.synthesis(w, noise=G.noise_buffers()), c1)
    assert not torch.allclose(G.synthesis(w, noise_mode="random"), c1)
    assert not torch.allclose(G.synthesis(w, noise_mode="none"), c1)
    noise = G.make_noise(2, generator=torch.Generator().manual_seed(3))
    assert [tuple(n.shape) for n in noise] == [(2, 1, s[2], s[3]) for s in G.noise_shapes()]
    out = G.synthesis(w, noise=noise)
    torch.testing.assert_close(out, G.synthesis(w, noise=[n.clone() for n in noise]))
    assert not torch.allclose(out[0], out[1])  # same w, different per-sample noise
    # noise maps receive gradients (inversion optimises them)
    noise = [n.requires_grad_(True) for n in G.make_noise(1)]
    G.synthesis(w[:1], noise=noise).square().mean().backward()
    assert all(n.grad is not None and n.grad.abs().sum() > 0 for n in noise)


def test_joint_prior_has_nine_channels():
    G, D = tiny_g(img_channels=9), tiny_d(img_channels=9)
    img = G(torch.randn(2, 16))
    assert img.shape == (2, 9, 16, 16) and D(img).shape == (2, 1)
    ds = create_training_dataset("faces", 16)
    batch = next(TrainStream(ds, 2, "cpu", 0, 16))
    x = encode_batch(batch, ds.forward_model, "joint")
    assert x.shape == (2, 9, 16, 16) and x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x[:, 3:6], encode_batch(batch, ds.forward_model, "shading"))


# ---------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------
def test_discriminator_steps_lower_its_loss_on_a_fixed_batch():
    G, D = tiny_g(), tiny_d()
    real = torch.rand(8, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        fake = G(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)))
    opt = torch.optim.Adam(D.parameters(), lr=0.0025, betas=(0.0, 0.99))
    before = d_loss(D, real, fake)[0].item()
    for _ in range(5):
        loss = d_loss(D, real, fake)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert d_loss(D, real, fake)[0].item() < before


def test_ema_formula():
    assert ema_beta(32, 10**6, 10.0, 0.05) == pytest.approx(0.5 ** (32 / 10_000))
    assert ema_beta(32, 1000, 10.0, 0.05) == pytest.approx(0.5 ** (32 / 50))  # ramp-up: min(10k, 0.05 * 1000)
    assert ema_beta(32, 0, 10.0, 0.05) == 0.0  # first step copies
    assert ema_beta(32, 0, 10.0, None) == pytest.approx(0.5 ** (32 / 10_000))
    g, g_ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = [0.9 * pe + 0.1 * p for pe, p in zip(g_ema.state_dict().values(), g.state_dict().values())]
    update_ema(g_ema, g, 0.9)
    for got, want in zip(g_ema.state_dict().values(), expected):
        torch.testing.assert_close(got, want)


def test_train_stream_matches_dataset_train_stream():
    ds = create_training_dataset("faces", 16)
    ours, theirs = TrainStream(ds, 2, "cpu", 5, 16), ds.train_stream(2, "cpu", 5, 16)
    for _ in range(2):
        a, b = next(ours), next(theirs)
        assert all(torch.equal(a[k], b[k]) for k in ("albedo", "shading", "specular"))


def test_exact_resume_joint(tmp_path):
    straight = train_prior(tiny_train_cfg(tmp_path / "a", component="joint"))
    half = train_prior(tiny_train_cfg(tmp_path / "b", component="joint", kimg=0.008))
    with pytest.raises(JoinbenchError, match="--resume"):
        train_prior(tiny_train_cfg(tmp_path / "b", component="joint"))
    with pytest.raises(JoinbenchError, match="settings differ"):
        train_prior(tiny_train_cfg(tmp_path / "b", component="joint", lr=0.001), resume=True)
    resumed = train_prior(tiny_train_cfg(tmp_path / "b", component="joint"), resume=True)
    assert half == resumed
    a = load_file(str(straight / "checkpoint" / "models.safetensors"))
    b = load_file(str(resumed / "checkpoint" / "models.safetensors"))
    assert a.keys() == b.keys() and any(".G_ema." in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = torch.load(straight / "checkpoint" / "state.pt", weights_only=True)
    sb = torch.load(resumed / "checkpoint" / "state.pt", weights_only=True)
    for part in ("opt_G", "opt_D"):
        for i, st in sa["trainers"]["joint"][part]["state"].items():
            for name, t in st.items():
                assert torch.equal(t, sb["trainers"]["joint"][part]["state"][i][name])
    assert torch.equal(sa["stream"]["seed_gen"], sb["stream"]["seed_gen"]) and torch.equal(sa["stream"]["seeds"], sb["stream"]["seeds"])
    # outputs: export, log, sample grids
    for f in ("faces-joint-G.safetensors", "faces-joint-D.safetensors", "faces-joint.json",
              "reals-joint.png", "samples-joint-000000.png"):
        assert (resumed / f).is_file(), f
    log = [json.loads(line) for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert [r["nimg"] for r in log] == [8, 16] and all(r["images_per_s"] > 0 for r in log)
    assert {"loss_G", "loss_D", "r1_penalty"} <= set(log[0])
    side = json.loads((resumed / "faces-joint.json").read_text())
    assert side["images_seen"] == 16 and side["fd"] is None and side["channels"] == ["albedo", "shading", "specular"]
    assert side["commit"] and side["versions"]["torch"] and side["device"].startswith("cpu")
    prior = load_prior("faces", "joint", path=resumed)
    assert prior.sample(2).shape == (2, 9, 16, 16)


# ---------------------------------------------------------------------------------------
# export and loading
# ---------------------------------------------------------------------------------------
def test_fp16_export_load_round_trip(tmp_path):
    G, D = export_tiny(tmp_path)
    prior = load_prior("materials", "albedo", path=tmp_path)
    assert prior.G.synthesis.const.dtype == torch.float32 and not prior.G.training
    assert not any(p.requires_grad for p in prior.G.parameters())
    z = torch.randn(4, 16)
    G.eval()
    with torch.no_grad():
        ref, got = G(z, noise_mode="const"), prior.G(z, noise_mode="const")
        torch.testing.assert_close(got, ref, atol=3e-2, rtol=3e-2)
        G16 = tiny_g()
        G16.load_state_dict({k: v.half().float() for k, v in G.state_dict().items()})
        torch.testing.assert_close(prior.G(z, noise_mode="const"), G16(z, noise_mode="const"))
        x = torch.rand(4, 3, 16, 16)
        torch.testing.assert_close(prior.D(x), D(x), atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(prior.G.mapping.w_avg, G.mapping.w_avg.half().float())
    assert prior.num_ws == G.num_ws and len(prior.noise_shapes()) == G.num_ws - 1
    assert prior.synthesis(prior.mean_latent(64), noise_mode="const").shape == (1, 3, 16, 16)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and isinstance(exc.value, JoinbenchError)
    return msg


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    export_tiny(tmp_path)
    side = tmp_path / "materials-albedo.json"
    # missing sidecar / file
    with pytest.raises(PriorError) as e:
        load_prior("faces", "albedo", path=tmp_path)
    msg = _one_line(e)
    assert "faces-albedo.json" in msg and "joinbench train prior --dataset faces --component albedo" in msg
    data = json.loads(side.read_text())
    (tmp_path / "materials-albedo-D.safetensors").rename(tmp_path / "moved.safetensors")
    with pytest.raises(PriorError) as e:
        load_prior("materials", "albedo", path=tmp_path)
    assert "materials-albedo-D.safetensors" in _one_line(e) and "joinbench train prior" in str(e.value)
    (tmp_path / "moved.safetensors").rename(tmp_path / "materials-albedo-D.safetensors")
    # wrong shape: the sidecar's config no longer fits the tensors (hashes still match)
    bad = json.loads(json.dumps(data))
    bad["generator"]["channel_max"] = 8
    side.write_text(json.dumps(bad))
    with pytest.raises(PriorError) as e:
        load_prior("materials", "albedo", path=tmp_path)
    msg = _one_line(e)
    assert "materials-albedo-G.safetensors" in msg and "has shape" in msg and "expected" in msg
    side.write_text(json.dumps(data))
    # wrong hash: one flipped byte in the G file
    g_file = tmp_path / "materials-albedo-G.safetensors"
    raw = bytearray(g_file.read_bytes())
    raw[-3] ^= 0xFF
    g_file.write_bytes(bytes(raw))
    with pytest.raises(PriorError) as e:
        load_prior("materials", "albedo", path=tmp_path)
    msg = _one_line(e)
    assert "materials-albedo-G.safetensors" in msg and data["sha256"]["G"] in msg and "sha256" in msg
    assert "re-export it" in msg  # a user's own folder; a shipped file is restored instead:
    from joinbench.gan.bank import weights_dir
    from joinbench.weights_io import _fix

    assert "restore the shipped file" in _fix(weights_dir() / "materials-albedo-G.safetensors")
    with pytest.raises(JoinbenchError, match="Unknown prior component"):
        load_prior("materials", "diffuse", path=tmp_path)


def test_prior_name_typos_get_did_you_mean_and_derived_sets_point_to_their_domain():
    with pytest.raises(PriorError) as e:
        load_prior("facez", "shading")
    msg = _one_line(e)
    assert "Unknown dataset 'facez'" in msg and "Did you mean 'faces'" in msg
    with pytest.raises(PriorError) as e:
        load_prior("faces", "shadng")
    assert "Did you mean 'shading'" in _one_line(e)
    with pytest.raises(PriorError) as e:
        load_prior("real-faces", "shading")
    msg = _one_line(e)
    assert "no real-faces priors" in msg and "--dataset faces" in msg
    with pytest.raises(JoinbenchError, match="Did you mean 'specular'"):
        TrainConfig(component="specullar").resolved()


def test_latent_bank_cached_on_disk_keyed_by_weights_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("JOINBENCH_HOME", str(tmp_path / "home"))
    export_tiny(tmp_path / "a", seed=0)
    export_tiny(tmp_path / "b", seed=1)
    p1 = load_prior("materials", "albedo", path=tmp_path / "a")
    w1 = p1.latent_bank(n=300, truncation_psi=0.7, seed=4, chunk=128)
    assert w1.shape == (300, 16) and p1.latent_bank_source == "computed"
    assert p1.latent_bank_path(300, 0.7, 4).is_file() and p1.sha256 in p1.latent_bank_path(300, 0.7, 4).name
    fresh = load_prior("materials", "albedo", path=tmp_path / "a")

    def boom(*a, **k):
        raise AssertionError("mapping called on a cache hit")

    monkeypatch.setattr(fresh.G.mapping, "forward", boom)
    assert torch.equal(fresh.latent_bank(n=300, truncation_psi=0.7, seed=4), w1) and fresh.latent_bank_source == "cache"
    monkeypatch.undo()
    monkeypatch.setenv("JOINBENCH_HOME", str(tmp_path / "home"))
    p2 = load_prior("materials", "albedo", path=tmp_path / "b")  # other weights: other key, recomputed
    w2 = p2.latent_bank(n=300, truncation_psi=0.7, seed=4)
    assert p2.latent_bank_source == "computed" and not torch.allclose(w1, w2)
    p1.latent_bank(n=300, truncation_psi=0.5, seed=4)  # other psi: other key
    assert p1.latent_bank_source == "computed"
    # truncation pulls towards w_avg; the bank's mean is close to mean_latent at psi 0.7
    assert p1.mean_latent(300, seed=4, truncation_psi=0.7).allclose(w1.mean(0, keepdim=True), atol=1e-5)


def test_load_bank(tmp_path):
    for c in ("albedo", "shading", "specular"):
        export_tiny(tmp_path, component=c)
    bank = load_bank("materials", components=None, path=tmp_path)
    assert bank.components == ["albedo", "shading", "specular"] and set(bank.generators) == set(bank)
    assert bank.mean_latents(32)["shading"].shape == (1, 16)
    with pytest.raises(PriorError, match="no 'joint' prior"):
        bank["joint"]


# ---------------------------------------------------------------------------------------
# FD-VGG
# ---------------------------------------------------------------------------------------
def test_frechet_distance_math():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 6))
    assert fd_from_features(x, x) == pytest.approx(0.0, abs=1e-6)
    assert fd_from_features(x, x + 0.5) == pytest.approx(6 * 0.25, rel=1e-6)
    assert frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), 4 * np.eye(2)) == pytest.approx(2.0)
    y = rng.normal(size=(2000, 6))
    assert fd_from_features(x, y) < 0.1 < fd_from_features(x, 2 * y)


def test_evaluate_prior_end_to_end(tmp_path):
    export_tiny(tmp_path, component="joint")
    prior = load_prior("materials", "joint", path=tmp_path)
    res = evaluate_prior(prior, n=16, device="cpu", batch=16, update_sidecar=True)
    assert res["n"] == 16 and res["fd"] > 0 and res["fd_floor"] > 0
    assert res["ratio"] == pytest.approx(res["fd"] / res["fd_floor"])
    assert set(res["components"]) == {"albedo", "shading", "specular"}
    side = json.loads((tmp_path / "materials-joint.json").read_text())
    assert side["fd"] == pytest.approx(res["fd"], rel=1e-5) and side["fd_n"] == 16
    load_prior("materials", "joint", path=tmp_path)  # still verifies after the sidecar update


def test_cli_priors_info_and_sample(tmp_path):
    from typer.testing import CliRunner

    from joinbench.cli import app

    export_tiny(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["priors", "info", "--path", str(tmp_path)])
    assert r.exit_code == 0 and "materials-albedo" in r.output
    assert r.output.splitlines()[1].split()[-1] == "ok"  # the files column checks sizes and hashes
    # a damaged copy: a flipped byte and an unreadable sidecar are shown, not hidden
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tmp_path, bad, ignore=shutil.ignore_patterns("*.png", "bad"))
    g = bad / "materials-albedo-G.safetensors"
    raw = bytearray(g.read_bytes())
    raw[-3] ^= 0xFF
    g.write_bytes(bytes(raw))
    (bad / "faces-shading.json").write_text("{not json")
    r = runner.invoke(app, ["priors", "info", "--path", str(bad)])
    assert r.exit_code == 0 and "G sha256 mismatch" in r.output and "faces-shading.json: unreadable JSON" in r.output
    r = runner.invoke(app, ["priors", "info", "--path", str(tmp_path / "nope")])
    assert isinstance(r.exception, JoinbenchError) and "is not a folder" in str(r.exception)
    r = runner.invoke(app, ["priors", "sample", "-d", "materials", "-c", "albedo", "--n", "4", "--device", "cpu",
                            "--path", str(tmp_path), "--out", str(tmp_path / "g.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g.png").is_file()


def test_component_all_trains_three_independent_models(tmp_path):
    """'all' steps the three GANs as one grouped bank on the same pooled scenes; each member
    trains as it would alone (float64: equal to 1e-9 after two iterations, R1 included)."""
    both = train_prior(tiny_train_cfg(tmp_path / "all", component="all", kimg=0.008, precision="fp64"))
    solo = train_prior(tiny_train_cfg(tmp_path / "shading", component="shading", kimg=0.008, precision="fp64"))
    for c in ("albedo", "shading", "specular"):
        assert (both / f"faces-{c}-G.safetensors").is_file() and (both / f"faces-{c}.json").is_file()
    a = load_file(str(both / "checkpoint" / "models.safetensors"))
    b = load_file(str(solo / "checkpoint" / "models.safetensors"))
    assert b and b.keys() <= a.keys() and any(k.startswith("shading.G_ema.") for k in b)
    for k, v in b.items():
        torch.testing.assert_close(a[k], v, rtol=0, atol=1e-9, msg=k)
    assert not torch.equal(a["albedo.G.synthesis.const"], a["shading.G.synthesis.const"])
    log = [json.loads(line) for line in (both / "log.jsonl").read_text().splitlines()]
    assert sorted(r["component"] for r in log) == ["albedo", "shading", "specular"]
    solo_log = json.loads((solo / "log.jsonl").read_text().splitlines()[0])
    both_log = next(r for r in log if r["component"] == "shading")
    assert all(both_log[k] == pytest.approx(solo_log[k], abs=1e-6) for k in ("loss_G", "loss_D", "r1_penalty"))


def test_paired_logits_equal_two_calls():
    """D scores fakes and reals in one call with the batches interleaved so every minibatch-std
    group stays within one of them: the same logits as two calls (float64), single and grouped D;
    a batch the groups do not divide falls back to two calls."""
    from joinbench.gan.fused import FusedDiscriminator

    torch.manual_seed(0)
    D = tiny_d().double()
    for b in (8, 4, 6, 2):
        fake, real = torch.randn(b, 3, 16, 16, dtype=torch.float64), torch.randn(b, 3, 16, 16, dtype=torch.float64)
        f, r = paired_logits(D, fake, real)
        torch.testing.assert_close(f, D(fake), rtol=0, atol=1e-12)
        torch.testing.assert_close(r, D(real), rtol=0, atol=1e-12)
    group = FusedDiscriminator.from_modules([tiny_d(seed=1).double(), tiny_d(seed=2).double()])
    fake, real = torch.randn(8, 2, 3, 16, 16, dtype=torch.float64), torch.randn(8, 2, 3, 16, 16, dtype=torch.float64)
    f, r = paired_logits(group, fake, real)
    assert f.shape == (8, 2, 1)
    torch.testing.assert_close(f, group(fake), rtol=0, atol=1e-12)
    torch.testing.assert_close(r, group(real), rtol=0, atol=1e-12)


def _tiny_training(component="all", **kw):
    from joinbench.gan.train import PriorTraining
    from joinbench.launches import DEVICE

    cfg = tiny_train_cfg("unused", component=component, **kw).resolved()
    cfg.pool_size, cfg.render_chunk = 8, 8
    return PriorTraining(cfg, DEVICE)


def test_an_iteration_never_waits_for_the_device():
    """A training iteration (pool draw, random draws, G, D, R1, EMA) has no host sync: the
    launch counter, emulating device placement, finds none (steps 0 and 2 run R1)."""
    from joinbench.launches import LaunchCounter

    training = _tiny_training()
    with LaunchCounter() as counter:
        for step in range(3):
            training.iteration(step)
        tally = counter.snapshot()
    assert tally.syncs == 0, tally.sync_sites
    assert set(training.pop_losses()) == {"albedo", "shading", "specular"}


def test_style_mixing_mask_and_tensor_ema():
    """Style mixing: each sample takes w1 below its own cutoff layer (1 .. num_ws - 1) and w2
    from it; no mixing takes w1 everywhere. The EMA coefficient computed on the device is
    StyleGAN2-ADA's formula (ramp-up included)."""
    training = _tiny_training(style_mixing_prob=1.0)
    bank = training.bank
    bank.draw_random()
    ws = bank._ws(bank.rand_g)
    w = bank.G.mapping(bank.rand_g.z)
    b, num_ws = bank.cfg.batch, bank.G.num_ws
    first_w2 = (ws == w[b:, :, None]).all(-1).int().argmax(-1)  # the first layer taken from w2
    assert ((first_w2 >= 1) & (first_w2 <= num_ws - 1)).all()
    for i in range(b):
        for n in range(3):
            k = int(first_w2[i, n])
            assert torch.equal(ws[i, n, :k], w[i, n].expand(k, -1)) and torch.equal(ws[i, n, k:], w[b + i, n].expand(num_ws - k, -1))
    bank.uniform.fill_(0.99)  # no sample below the mixing probability 0.9 ... once it is 0.9
    bank.cfg.style_mixing_prob = 0.9
    assert torch.equal(bank._ws(bank.rand_g), w[:b, :, None].expand(-1, -1, num_ws, -1))
    cfg = bank.cfg
    for nimg in (0, 100, 10**6):
        bank.nimg.fill_(nimg)
        g_ema = {k: v.clone() for k, v in bank.G_ema.state_dict().items()}
        bank.ema_step()
        beta = ema_beta(cfg.batch, nimg, cfg.ema_kimg, cfg.ema_rampup)
        want = (1 - beta) * bank.G.synthesis.const.detach() + beta * g_ema["synthesis.const"]
        torch.testing.assert_close(bank.G_ema.synthesis.const, want)
        assert int(bank.nimg) == nimg + cfg.batch


@pytest.mark.compile
def test_steps_trace_as_one_graph_each():
    """torch.compile(fullgraph=True) traces the G, D, R1 and EMA steps without a graph break:
    no host sync, no data-dependent Python, nothing CUDA graphs could not capture (Adam as
    'foreach', which compile fuses itself; 'eager' backend: the check is the tracing).
    Opt-in (about a minute): pytest -m compile tests/test_gan.py"""
    import torch._dynamo

    training = _tiny_training(adam="foreach")
    training.data.draw_into({"x": training.batch_x})
    training.bank.draw_random()
    bank = training.bank
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        for step in (bank.g_step, bank.d_step, bank.r1_step, bank.ema_step):
            torch._dynamo.reset()
            torch.compile(step, fullgraph=True, backend="eager")()


def test_time_budget_stops_exports_and_resumes(tmp_path):
    """--minutes: a tiny budget stops after the first step with a checkpoint and an export;
    --resume then finishes the run exactly as an uninterrupted one."""
    cut = train_prior(tiny_train_cfg(tmp_path / "t", kimg=0.016, minutes=1e-6))
    side = json.loads((cut / "faces-albedo.json").read_text())
    assert side["images_seen"] == 4  # one step of batch 4, then the budget was spent
    resumed = train_prior(tiny_train_cfg(tmp_path / "t", kimg=0.016), resume=True)
    straight = train_prior(tiny_train_cfg(tmp_path / "s", kimg=0.016))
    a = load_file(str(straight / "checkpoint" / "models.safetensors"))
    b = load_file(str(resumed / "checkpoint" / "models.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_checkpoints_after_the_batch_and_resumes_exactly(tmp_path, monkeypatch):
    """The first SIGINT ends the loop after the current batch with a checkpoint and no export;
    --resume then finishes exactly like an uninterrupted run."""
    from joinbench.training import clock as loop

    real_advance = loop.TrainClock.advance

    def advance_then_interrupt(self):
        if self.step == 1:  # Ctrl-C arrives during the second batch
            self._on_sigint(2, None)
        real_advance(self)

    monkeypatch.setattr(loop.TrainClock, "advance", advance_then_interrupt)
    with pytest.raises(KeyboardInterrupt) as stop:
        train_prior(tiny_train_cfg(tmp_path / "t", kimg=0.016))
    assert str(tmp_path / "t") in str(stop.value) and "--resume" in str(stop.value)  # the CLI prints this line
    monkeypatch.undo()
    state = json.loads((tmp_path / "t" / "checkpoint" / "state.json").read_text())
    assert state["cur_nimg"] == 8 and not list((tmp_path / "t").glob("*-G.safetensors"))  # two batches, no export
    resumed = train_prior(tiny_train_cfg(tmp_path / "t", kimg=0.016), resume=True)
    straight = train_prior(tiny_train_cfg(tmp_path / "s", kimg=0.016))
    a = load_file(str(straight / "checkpoint" / "models.safetensors"))
    b = load_file(str(resumed / "checkpoint" / "models.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_needs_an_intact_checkpoint(tmp_path):
    with pytest.raises(JoinbenchError, match="holds no complete checkpoint.*drop --resume"):
        train_prior(tiny_train_cfg(tmp_path / "empty", kimg=0.008), resume=True)
    out = train_prior(tiny_train_cfg(tmp_path / "t", kimg=0.008, minutes=1e-6))
    models = out / "checkpoint" / "models.safetensors"
    raw = bytearray(models.read_bytes())
    raw[-100:] = bytes(100)  # damaged, still a loadable safetensors file
    models.write_bytes(bytes(raw))
    with pytest.raises(JoinbenchError, match="models.safetensors has sha256 .* expected .*damaged"):
        train_prior(tiny_train_cfg(tmp_path / "t", kimg=0.016), resume=True)
    (out / "checkpoint" / "state.json").write_text("{not json")
    with pytest.raises(JoinbenchError, match="state.json is unreadable"):
        train_prior(tiny_train_cfg(tmp_path / "t", kimg=0.016), resume=True)


@pytest.mark.parametrize("kw, message", [(dict(kimg=float("nan")), "--kimg a finite number"),
                                         (dict(minutes=0.0), "--minutes must be"), (dict(lr=-1.0), "--lr must be"),
                                         (dict(r1_gamma=-1.0), "--r1-gamma must be")])
def test_training_numbers_are_checked(tmp_path, kw, message):
    with pytest.raises(JoinbenchError, match=message):
        train_prior(tiny_train_cfg(tmp_path / "t", **{"kimg": 0.008, **kw}))


def test_train_stream_chunks_yield_the_same_batches_and_resume_inside_a_chunk():
    ds = create_training_dataset("materials", 16)
    plain, chunked = TrainStream(ds, 2, "cpu", 3, 16), TrainStream(ds, 2, "cpu", 3, 16, chunk=3)
    keys = ("albedo", "shading", "specular", "image")
    for i in range(4):
        a, b = next(plain), next(chunked)
        assert all(torch.equal(a[k], b[k]) for k in keys), i
    state = chunked.state()  # 4 batches = one full chunk + 1 batch into the second
    assert state["offset"] == 2 and state["batches"] == 4
    expect = [next(chunked) for _ in range(3)]
    for chunk in (3, 1, 5):  # resume with the same or another chunk size
        again = TrainStream(ds, 2, "cpu", 0, 16, chunk=chunk)
        again.load_state(state)
        for want in expect:
            got = next(again)
            assert all(torch.equal(got[k], want[k]) for k in keys), chunk
    assert next(plain)["image"].shape == (2, 3, 16, 16)


def test_exact_resume_with_render_chunks(tmp_path):
    straight = train_prior(tiny_train_cfg(tmp_path / "a", component="albedo", render_chunk=12))
    train_prior(tiny_train_cfg(tmp_path / "b", component="albedo", render_chunk=12, kimg=0.008))
    resumed = train_prior(tiny_train_cfg(tmp_path / "b", component="albedo", render_chunk=12), resume=True)
    a = load_file(str(straight / "checkpoint" / "models.safetensors"))
    b = load_file(str(resumed / "checkpoint" / "models.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_init_from_continues_exported_priors_and_their_history(tmp_path):
    """--init-from a folder of exports: G, G_ema and D start from the exported weights (fp16),
    images seen and the history add up over runs, a resumed --init-from run keeps them, and
    a prior of another network is a one-line error."""
    from joinbench.gan.bank import load_prior, weights_dir
    from joinbench.training.sidecar import resolve_init_from

    first = train_prior(tiny_train_cfg(tmp_path / "w1", component="all", kimg=0.008))
    training = _tiny_training(component="all")
    init = training.bank.init_from(first, "faces")
    assert init["albedo"]["images_seen"] == 8 and init["albedo"]["history"][0]["images"] == 8
    shipped = load_prior("faces", "specular", path=first)
    singles = training.bank.G_ema.unstack()
    z = torch.randn(3, 16)
    torch.testing.assert_close(singles[2](z, noise_mode="const"), shipped.G(z, noise_mode="const"))
    cut = train_prior(tiny_train_cfg(tmp_path / "w2", component="all", kimg=0.008, init_from=str(first), minutes=1e-6))
    assert json.loads((cut / "faces-shading.json").read_text())["images_seen"] == 8 + 4
    second = train_prior(tiny_train_cfg(tmp_path / "w2", component="all", kimg=0.008), resume=True)  # no --init-from needed
    side = json.loads((second / "faces-shading.json").read_text())
    assert side["images_seen"] == 16 and [h["images"] for h in side["history"]] == [8, 8]
    assert side["history"][1]["init_from"] == str(first) and side["train"]["ema_rampup"] is None
    assert side["wall_time_s"] == pytest.approx(sum(h["wall_time_s"] for h in side["history"]), abs=0.11)
    with pytest.raises(JoinbenchError, match="another network.*channel_max") as err:
        train_prior(tiny_train_cfg(tmp_path / "w3", component="all", kimg=0.008, init_from=str(first), channel_max=8))
    assert "\n" not in str(err.value)
    assert resolve_init_from("shipped") == weights_dir()
    with pytest.raises(JoinbenchError, match="no such folder"):
        resolve_init_from(tmp_path / "nope")
