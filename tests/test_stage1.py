"""JoIN stage 1 (joinbench.join, joinbench.methods.join) on tiny random priors.

No trained priors exist in the repository, so every test exports tiny random StyleGAN2
priors (16 px, w_dim 16) into a temporary folder. Most tests switch LPIPS off
(``perceptual="none"``) for speed; one runs the real LPIPS-VGG loss. CPU, one thread.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from joinbench.errors import JoinbenchError
from joinbench.gan.bank import load_bank
from joinbench.join.losses import noise_regularisation, normalise_noise_
from joinbench.join.regularisers import KnnHingeRegulariser, derive_hinge_radius, hinge_value, knn_search
from joinbench.join.stage1 import JointInverter, Stage1Config, lr_ramp
from joinbench.registry import create_forward_model, create_method, list_methods
from joinbench.runner import RunSettings, read_records, run_benchmark

from .tiny_world import RES, WDIM, export_tiny_priors

pytestmark = pytest.mark.usefixtures("tiny_env")

VARIANTS = ("join-s1", "join-s1-noreg", "join-s1-indomain", "join-s1-knn-hinge", "join-s1-wplus", "join-s1-nospecular")
# fast defaults for the inverter: no LPIPS, small banks and statistics
FAST = dict(perceptual="none", bank_size=500, mean_samples=1000, radius_samples=200, log_every=1)


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    """A folder with tiny random materials priors for albedo, shading and specular."""
    return export_tiny_priors(tmp_path_factory.mktemp("priors"), seed=10)


def make_inverter(priors, fm="reinhard", **kw) -> JointInverter:
    cfg = Stage1Config(**{**FAST, **kw})
    f = create_forward_model(fm)
    return JointInverter(load_bank("materials", components=f.components, path=priors), f, cfg, "cpu")


def gan_targets(inv: JointInverter, n: int, seed: int = 0) -> torch.Tensor:
    """Display images the bank can produce (random latents, random noise)."""
    g = torch.Generator().manual_seed(seed)
    enc = {}
    with torch.no_grad():
        for c in inv.components:
            p = inv.priors[c]
            z = torch.randn(n, p.z_dim, generator=g)
            enc[c] = p.to_encoded(p.synthesis(p.mapping(z, 0.7), noise=p.make_noise(n, generator=g)))
        return inv.fm.render_encoded(enc).float()


# ---------------------------------------------------------------------------------------
# pieces
# ---------------------------------------------------------------------------------------
def test_lr_schedule_key_points():
    assert lr_ramp(0, 1000) == 0.0  # the projector's step 0 has lr 0
    assert lr_ramp(25, 1000) == pytest.approx(0.5)  # half-way through the 5% warm-up
    assert lr_ramp(50, 1000) == pytest.approx(1.0)
    assert lr_ramp(500, 1000) == 1.0 and lr_ramp(750, 1000) == 1.0
    assert lr_ramp(875, 1000) == pytest.approx(0.5)  # half-way through the 25% cosine ramp-down
    assert lr_ramp(999, 1000) == pytest.approx(0.5 - 0.5 * math.cos(math.pi * 0.004))
    assert 0 < lr_ramp(999, 1000) < 1e-4
    assert lr_ramp(1, 4, rampup=0.0, rampdown=0.0) == 1.0


def test_knn_chunked_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    bank, q = torch.randn(1000, 16, generator=g), torch.randn(37, 16, generator=g)
    d, i = knn_search(q, bank, k=7, chunk=64, query_chunk=10)
    bd, bi = (q[:, None] - bank[None]).square().sum(-1).topk(7, dim=1, largest=False)
    assert torch.equal(i, bi)
    assert torch.allclose(d, bd, rtol=1e-4, atol=1e-4)
    # excluding each query's own bank row (queries taken from the bank)
    _, i2 = knn_search(bank[:50], bank, k=5, chunk=128, exclude=torch.arange(50))
    full = (bank[:50, None] - bank[None]).square().sum(-1)
    full[torch.arange(50), torch.arange(50)] = float("inf")
    assert torch.equal(i2, full.topk(5, dim=1, largest=False).indices)
    with pytest.raises(JoinbenchError, match="bank_size"):
        knn_search(q, bank[:3], k=5)


def test_noise_regulariser_and_renormalisation():
    g = torch.Generator().manual_seed(0)
    white = [torch.randn(2, 1, 32, 32, generator=g)]
    smooth = [torch.nn.functional.interpolate(torch.randn(2, 1, 8, 8, generator=g), size=(32, 32), mode="bilinear")]
    assert noise_regularisation(white).shape == (2,)
    assert (noise_regularisation(smooth) > 10 * noise_regularisation(white)).all()
    maps = [torch.randn(3, 1, 8, 8, generator=g) * 5 + 2]
    normalise_noise_(maps)
    assert torch.allclose(maps[0].mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-6)
    assert torch.allclose(maps[0].square().mean(dim=(1, 2, 3)), torch.ones(3), atol=1e-5)


def test_knn_hinge_zero_inside_positive_outside():
    g = torch.Generator().manual_seed(1)
    bank = torch.randn(500, 8, generator=g) * 0.5
    # the formula: zero while ||w - mu|| <= r/2 * D, quadratic growth beyond
    mu = torch.zeros(1, 8)
    inside, outside = torch.full((1, 8), 0.9 / math.sqrt(8)), torch.full((1, 8), 1.5 / math.sqrt(8))
    assert hinge_value(inside, mu, radius=2.0).item() == 0.0
    assert hinge_value(outside, mu, radius=2.0).item() == pytest.approx(1.5 ** 2 - 1)
    assert hinge_value(outside[:, None].expand(1, 3, 8), mu[:, None].expand(1, 3, 8), radius=2.0).item() == 0.0  # W+: D=3
    # the radius comes from the bank: r/2 is the 95th percentile, over the first 400 bank
    # latents, of the distance to the mean of their 50 nearest *other* latents -- computed here
    # by brute force (full distance matrix, a sort, numpy's percentile), not by the code under test
    r = derive_hinge_radius(bank, k=50, percentile=95.0, samples=400)
    b = bank.double().numpy()
    d2 = ((b[:400, None, :] - b[None, :, :]) ** 2).sum(-1)
    d2[np.arange(400), np.arange(400)] = np.inf
    nearest = np.argsort(d2, axis=1, kind="stable")[:, :50]
    dist = np.linalg.norm(b[:400] - b[nearest].mean(1), axis=1)
    assert r / 2 == pytest.approx(float(np.percentile(dist, 95.0)), rel=1e-5)
    reg = KnnHingeRegulariser(bank, 50, 1.0, r)
    assert (reg.penalty(bank[:100]) == 0).double().mean() >= 0.9  # the prior's own samples: inside
    far = bank.mean(0, keepdim=True) + 6.0
    assert reg.penalty(far).item() > 0


# ---------------------------------------------------------------------------------------
# the inversion
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, message", [(dict(lr=-1.0), "lr must be positive"), (dict(lr=0.0), "lr must be positive"),
                                         (dict(steps=0), "steps must be at least 1")])
def test_settings_that_cannot_run_are_refused(priors, kw, message):
    with pytest.raises(JoinbenchError, match=message):
        make_inverter(priors, **kw)


def test_pti_learning_rate_must_be_positive():
    from joinbench.join.pti import PTIConfig

    with pytest.raises(JoinbenchError, match="PTI lr must be positive"):
        PTIConfig(lr=0.0).validate()


def test_loss_decreases(priors):
    inv = make_inverter(priors, steps=40, noise_weight=0.0, regulariser="none")
    target = gan_targets(inv, 2, seed=3)
    res = inv.invert(target)
    for curve in res.loss_curve:
        assert curve[-1] < 0.5 * curve[0]
    assert res.loss_steps == list(range(40))
    assert res.errors == [None, None]
    # with the full loss too (noise and kNN terms), the total goes down
    res = make_inverter(priors, steps=25, regulariser="knn", knn_weight=1e-2).invert(target)
    assert all(c[-1] < c[0] for c in res.loss_curve)


def _far_init(inv, scale=8.0):
    init = {}
    for c, p in inv.priors.items():
        bank = p.latent_bank(inv.cfg.bank_size, inv.cfg.bank_psi, inv.cfg.bank_seed)
        init[c] = (bank.mean(0) + scale * bank.std(0))[None].expand(2, -1)
    return init


def _dist_to_bank(inv, w):
    bank = inv.priors["albedo"].latent_bank(inv.cfg.bank_size, inv.cfg.bank_psi, inv.cfg.bank_seed)
    return knn_search(w, bank, k=5)[0].sqrt().mean().item()


@pytest.mark.parametrize("reg", ["none", "knn", "in-domain", "knn-hinge"])
def test_regularisers_pull_far_latents(priors, reg):
    """Only the latent term in the loss: a far-away start moves toward the bank (knn,
    knn-hinge) or the mean (in-domain), and stays put without a regulariser."""
    inv = make_inverter(priors, steps=30, pixel_weight=0.0, noise_weight=0.0, regulariser=reg,
                        knn_weight=1.0, in_domain_weight=1.0, hinge_weight=1.0)
    target = torch.rand(2, 3, RES, RES)
    inv.setup()
    init = _far_init(inv)
    res = inv.invert(target, init=init)
    w0, w1 = init["albedo"], res.latents["albedo"]
    if reg == "none":
        assert torch.equal(w0, w1)
        return
    if reg == "in-domain":
        mean = inv.means["albedo"]
        assert (w1 - mean).norm() < 0.7 * (w0 - mean).norm()
    else:
        assert _dist_to_bank(inv, w1) < 0.7 * _dist_to_bank(inv, w0)
    if reg == "knn-hinge":
        r = inv.regularisers["albedo"]
        assert r.radius > 0 and r.penalty(w0).min() > 0
        assert (r.penalty(w1) < r.penalty(w0)).all()


def test_w_plus_shapes_and_w_broadcast(priors):
    inv_w = make_inverter(priors, steps=1)
    inv_wp = make_inverter(priors, steps=1, w_plus=True)
    target = gan_targets(inv_w, 2)
    rw, rwp = inv_w.invert(target), inv_wp.invert(target)  # one step has lr 0: the initial state
    nws = inv_w.priors["albedo"].num_ws
    assert rw.latents["albedo"].shape == (2, WDIM)
    assert rwp.latents["albedo"].shape == (2, nws, WDIM)
    assert torch.allclose(rw.rerender, rwp.rerender, atol=1e-6)  # W is W+ with equal rows
    rwp = make_inverter(priors, steps=6, w_plus=True).invert(target)
    rows = rwp.latents["shading"][0]
    assert not torch.allclose(rows[0], rows[-1])  # per-layer latents move separately


def test_noise_maps_optimised_and_renormalised(priors):
    inv = make_inverter(priors, steps=6)
    target = gan_targets(inv, 2)
    res = inv.invert(target)
    start = inv._initial_noise(2)
    for c in inv.components:
        for n, n0 in zip(res.noise[c], start[c]):
            assert n.shape == n0.shape and n.shape[0] == 2
            assert not torch.allclose(n, n0, atol=1e-3)
            assert torch.allclose(n.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)
            assert torch.allclose(n.square().mean(dim=(1, 2, 3)), torch.ones(2), atol=1e-4)
    fixed = make_inverter(priors, steps=6, optimise_noise=False).invert(target)
    assert all(torch.equal(n, n0) for c in inv.components for n, n0 in zip(fixed.noise[c], start[c]))


def _alone_vs_batch(priors, **kw):
    inv = make_inverter(priors, **kw)
    target = gan_targets(inv, 3, seed=5)
    batch = inv.invert(target)
    alone = make_inverter(priors, **kw).invert(target[2:3])
    assert not torch.allclose(batch.latents["albedo"][0], batch.latents["albedo"][2])  # images differ
    diff = max((batch.latents[c][2:3] - alone.latents[c]).abs().max().item() for c in inv.components)
    diff_noise = max((nb[2:3] - na).abs().max().item() for c in inv.components
                     for nb, na in zip(batch.noise[c], alone.noise[c]))
    return diff, diff_noise, batch.loss_curve[2], alone.loss_curve[0]


def test_batch_independence(priors):
    """An image inverted alone or inside a batch follows the same trajectory: losses are
    summed over images and nothing mixes them. float64 on CPU, 12 steps, kNN + noise terms:
    latents, noise maps and loss curves agree to 1e-9 (observed ~1e-15). In float32 the
    rounding of a (1, C) vs (B, C) matmul grows during optimisation (~1e-2 after 100 steps),
    so float32 results depend slightly on the batch size."""
    kw = dict(steps=12, dtype="float64", regulariser="knn", knn_weight=1e-2)
    diff, diff_noise, curve_b, curve_a = _alone_vs_batch(priors, **kw)
    assert diff < 1e-9 and diff_noise < 1e-9
    assert curve_b == pytest.approx(curve_a, rel=1e-9)


def test_nan_image_is_frozen_others_finish(priors):
    kw = dict(steps=8, dtype="float64")
    inv = make_inverter(priors, **kw)
    target = gan_targets(inv, 3, seed=7).double()
    bad = target.clone()
    bad[1, 0, 4, 4] = float("nan")
    res = inv.invert(bad)
    assert res.errors[0] is None and res.errors[2] is None
    assert "non-finite" in res.errors[1] and "\n" not in res.errors[1] and "step 0" in res.errors[1]
    assert torch.equal(res.latents["albedo"][1], inv.means["albedo"][0])  # frozen at its start
    assert torch.isfinite(res.rerender).all()
    good = make_inverter(priors, **kw).invert(target[[0, 2]])
    for c in inv.components:
        assert torch.allclose(res.latents[c][[0, 2]], good.latents[c], atol=1e-9)


def test_lpips_vgg_loss_runs(priors):
    """The real LPIPS-VGG perceptual loss (all five VGG16 blocks; 1x1 maps at 16 px)."""
    inv = make_inverter(priors, steps=3, perceptual="lpips-vgg")
    target = gan_targets(inv, 2, seed=9)
    res = inv.invert(target)
    assert inv.perceptual.enabled
    assert all(v > 0 for v in res.final_terms["perceptual"]) and res.errors == [None, None]
    with pytest.raises(JoinbenchError, match="16 px"):
        inv.perceptual(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


# ---------------------------------------------------------------------------------------
# the methods
# ---------------------------------------------------------------------------------------
def test_variants_registered_as_configurations():
    assert set(VARIANTS) <= set(list_methods("join-s1*"))
    classes = {type(create_method(n)) for n in VARIANTS}  # no priors needed to create them
    assert len(classes) == 1
    assert create_method("join-s1-wplus").config.w_plus is True
    assert create_method("join-s1-nospecular").forward_model.components == ("albedo", "shading")
    m = create_method("join-s1", **{"steps": "7", "betas": "0.8,0.99", "w_plus": "yes", "prior": "faces",
                                   "hinge_radius": "14.57", "regulariser": "in-domain"})
    cfg = m.config
    assert (cfg.steps, cfg.betas, cfg.w_plus, cfg.prior, cfg.hinge_radius, cfg.regulariser) == \
        (7, (0.8, 0.99), True, "faces", 14.57, "in-domain")
    assert m.needs_grad is True
    with pytest.raises(JoinbenchError, match="regulariser"):
        create_method("join-s1", regulariser="knn5")


def test_missing_priors_is_one_line_error(tmp_path, monkeypatch):
    import joinbench.gan.bank as bank

    monkeypatch.setattr(bank, "weights_dir", lambda: tmp_path / "weights")  # stays empty when weights ship
    m = create_method("join-s1")
    with pytest.raises(JoinbenchError, match="joinbench train prior") as info:
        m.decompose(torch.rand(1, 3, RES, RES))
    assert "\n" not in str(info.value) and "priors_path" in str(info.value)


def test_decompose_returns_decomposition(priors):
    m = create_method("join-s1", priors_path=str(priors), steps=3, bank_size=64, perceptual="none",
                      mean_samples=256)
    with torch.inference_mode():  # the method turns gradients back on for itself
        images = torch.rand(2, 3, 2 * RES, 2 * RES)  # resized to the priors' 16 px and back
        dec = m.decompose(images)
    assert dec.albedo.shape == dec.shading.shape == dec.specular.shape == (2, 3, 2 * RES, 2 * RES)
    assert (dec.shading >= 0).all() and dec.errors == [None, None]
    assert set(dec.timings) >= {"stage1", "stage1_per_step", "stage1_setup"}
    assert dec.timings["stage1_per_step"] == pytest.approx(dec.timings["stage1"] / 3)
    assert dec.extras["latents"]["specular"].device.type == "cpu"
    assert dec.extras["latents"]["albedo"].shape == (2, WDIM) and len(dec.extras["loss_curve"]) == 2
    assert dec.extras["resized"] == {"from": (2 * RES, 2 * RES), "to": (RES, RES)}
    dec2 = m.decompose(images[:1, :, :RES, :RES])
    assert "stage1_setup" not in dec2.timings  # bank statistics are computed once


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_runs_through_the_runner(priors, tmp_path, name):
    overrides = {"priors_path": str(priors), "steps": "3", "bank_size": "64", "perceptual": "none",
                 "mean_samples": "256", "radius_samples": "32"}
    out = run_benchmark(RunSettings(method=name, dataset="materials", resolution=RES, limit=2, batch_size=2,
                                    device="cpu", metrics=("mse", "si-mse"), overrides=overrides,
                                    progress=False, out=tmp_path / name))
    records = read_records(out / "records.jsonl")
    assert len(records) == 2 * 4 and all(r["error"] is None for r in records)
    assert all(math.isfinite(r["metrics"]["mse"]) for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timing"]["stage_seconds_this_invocation"]["stage1"] > 0
    assert summary["run"]["method_config"]["steps"] == 3


def test_prepare_picks_the_dataset_domain_prior():
    from joinbench.registry import create_dataset

    m = create_method("join-s1")
    m.prepare(create_dataset("faces-shift", resolution=RES), "cpu")
    assert m.config.prior == "faces"
    m.prepare(create_dataset("real-materials", resolution=RES), "cpu")
    assert m.config.prior == "materials"
    m = create_method("join-s1", prior="faces")  # set by the caller: kept
    m.prepare(create_dataset("materials", resolution=RES), "cpu")
    assert m.config.prior == "faces"


# ---------------------------------------------------------------------------------------
# the jointly trained prior (ablation "independent vs jointly trained priors")
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def joint_prior(tmp_path_factory):
    """A folder with a tiny random 9-channel materials joint prior (albedo | shading | specular)."""
    return export_tiny_priors(tmp_path_factory.mktemp("joint-prior"), seed=40, components=("joint",))


def make_joint_inverter(folder, fm="reinhard", **kw) -> JointInverter:
    cfg = Stage1Config(**{**FAST, "joint_prior": True, **kw})
    f = create_forward_model(fm)
    return JointInverter(load_bank("materials", components=f.components, path=folder, joint=True), f, cfg, "cpu")


def joint_targets(inv: JointInverter, n: int, seed: int = 0) -> torch.Tensor:
    """Display images the joint prior can produce (random latents, random noise)."""
    g = torch.Generator().manual_seed(seed)
    p = inv.priors["joint"]
    with torch.no_grad():
        z = torch.randn(n, p.z_dim, generator=g)
        enc = p.split(p.to_encoded(p.synthesis(p.mapping(z, 0.7), noise=p.make_noise(n, generator=g))))
        return inv.fm.render_encoded(enc).float()


def test_joint_prior_inversion_lowers_loss_and_returns_components(joint_prior):
    bank = load_bank("materials", path=joint_prior, joint=True)
    assert bank.joint and bank.components == ["joint"] and bank.produces == ["albedo", "shading", "specular"]
    inv = make_joint_inverter(joint_prior, steps=40, noise_weight=0.0, regulariser="none")
    target = joint_targets(inv, 2, seed=3)
    res = inv.invert(target)
    assert all(curve[-1] < 0.5 * curve[0] for curve in res.loss_curve) and res.errors == [None, None]
    assert set(res.latents) == set(res.noise) == {"joint"} and res.latents["joint"].shape == (2, WDIM)
    assert set(res.encoded) == set(res.linear) == {"albedo", "shading", "specular"}
    assert all(e.shape == (2, 3, RES, RES) for e in res.encoded.values())
    # the output is the joint generator's 9 channels, split: re-rendering them gives the final image
    p = inv.priors["joint"]
    with torch.no_grad():
        out = p.split(p.to_encoded(p.synthesis(res.latents["joint"], noise=res.noise["joint"], noise_mode="const")))
    assert all(torch.allclose(out[c], res.encoded[c]) for c in out)
    assert torch.allclose(inv.fm.render_encoded(out), res.rerender, atol=1e-6)
    # with the full loss (noise and kNN terms on the joint prior's own bank) the total goes down
    full = make_joint_inverter(joint_prior, steps=25, regulariser="knn", knn_weight=1e-2)
    res = full.invert(target)
    assert all(c[-1] < c[0] for c in res.loss_curve) and set(full.regularisers) == {"joint"}
    assert full.describe()["priors"] == ["joint"] and full.describe()["joint_prior"] is True
    # W+, an encoder-style init keyed "joint", and the two-component model (specular ignored)
    wp = make_joint_inverter(joint_prior, steps=2, w_plus=True).invert(target, init={"joint": res.latents["joint"]})
    assert wp.latents["joint"].shape == (2, p.num_ws, WDIM)
    two = make_joint_inverter(joint_prior, fm="reinhard-nospecular", steps=3).invert(target)
    assert set(two.encoded) == {"albedo", "shading"} and set(two.latents) == {"joint"}


def test_joint_prior_batch_independence(joint_prior):
    """As test_batch_independence, with one latent and one set of noise maps per image for the joint prior."""
    kw = dict(steps=12, dtype="float64", regulariser="knn", knn_weight=1e-2)
    inv = make_joint_inverter(joint_prior, **kw)
    target = joint_targets(inv, 3, seed=5)
    batch = inv.invert(target)
    alone = make_joint_inverter(joint_prior, **kw).invert(target[2:3])
    assert not torch.allclose(batch.latents["joint"][0], batch.latents["joint"][2])
    assert (batch.latents["joint"][2:3] - alone.latents["joint"]).abs().max().item() < 1e-9
    assert max((nb[2:3] - na).abs().max().item() for nb, na in zip(batch.noise["joint"], alone.noise["joint"])) < 1e-9
    assert batch.loss_curve[2] == pytest.approx(alone.loss_curve[0], rel=1e-9)


def test_joint_prior_and_bank_kind_must_agree(priors, joint_prior):
    f = create_forward_model("reinhard")
    indep = load_bank("materials", path=priors)
    with pytest.raises(JoinbenchError, match=r"joint=True") as info:
        JointInverter(indep, f, Stage1Config(**FAST, joint_prior=True))
    assert "\n" not in str(info.value)
    with pytest.raises(JoinbenchError, match="joint_prior=true"):
        JointInverter(load_bank("materials", path=joint_prior, joint=True), f, Stage1Config(**FAST))
    inv = make_joint_inverter(joint_prior, steps=1)
    with pytest.raises(JoinbenchError, match="init_latents holds albedo"):
        inv.invert(torch.rand(1, 3, RES, RES), init={"albedo": torch.zeros(1, WDIM)})
    with pytest.raises(JoinbenchError, match="Unknown component"):
        load_bank("materials", components=("albedo", "diffuse"), path=joint_prior, joint=True)
