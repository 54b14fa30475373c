"""The inversion engine (joinbench.join.engine, stage 1 and PTI on the fused bank): its
vectorised pieces equal their per-map / per-generator definitions, a step reads nothing back
to the host and launches as many ops for one image as for three, progress is reported every
step, and (opt-in, ``pytest -m compile``) the step functions compile without a graph break.
Tiny random priors (tiny_world.py, 16 px), CPU, one thread."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from joinbench.errors import JoinbenchError
from joinbench.gan.bank import load_bank
from joinbench.join.losses import PerceptualLoss, noise_regularisation
from joinbench.join.pti import PivotalTuner, PTIConfig
from joinbench.join.regularisers import InDomainRegulariser, KnnHingeRegulariser, KnnRegulariser
from joinbench.join.stage1 import JointInverter, Stage1Config
from joinbench.launches import DEVICE, count_launches
from joinbench.registry import create_forward_model

from .tiny_world import RES, WDIM, export_tiny_priors

pytestmark = pytest.mark.usefixtures("tiny_env")

S1 = dict(bank_size=300, mean_samples=300, radius_samples=100, log_every=1)


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    return export_tiny_priors(tmp_path_factory.mktemp("priors"), seed=70)


def inverter(priors, device="cpu", **kw) -> JointInverter:
    fm = create_forward_model("reinhard")
    return JointInverter(load_bank("materials", device, components=fm.components, path=priors), fm,
                         Stage1Config(**{**S1, **kw}), device)


def targets(n: int, seed: int = 0, device="cpu") -> torch.Tensor:
    return torch.rand(n, 3, RES, RES, generator=torch.Generator().manual_seed(seed)).to(device)


# ---------------------------------------------------------------------------------------
# vectorised pieces equal their definitions
# ---------------------------------------------------------------------------------------
def per_map_noise_regularisation(maps, min_size=8):
    """The projector's regulariser written map by map (the definition)."""
    total = 0.0
    for n in maps:
        level = n
        while True:
            total = total + ((level * torch.roll(level, 1, dims=3)).flatten(1).mean(1).square()
                             + (level * torch.roll(level, 1, dims=2)).flatten(1).mean(1).square())
            if level.shape[2] <= min_size:
                break
            level = F.avg_pool2d(level, 2)
    return total


def test_noise_regulariser_per_level_equals_per_map():
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(3, 1, r, r, generator=g, dtype=torch.float64) for r in (4, 8, 8, 16, 16, 32, 32)]
    ref = per_map_noise_regularisation(maps)
    torch.testing.assert_close(noise_regularisation(maps), ref, rtol=1e-12, atol=0)
    for min_size in (4, 6, 16):
        torch.testing.assert_close(noise_regularisation(maps, min_size), per_map_noise_regularisation(maps, min_size),
                                   rtol=1e-12, atol=0)
    # a fused bank's blocks (B, N, k, r, r): every map of every generator, summed per image
    fused = [torch.stack([maps[i] for _ in range(2)], 1).transpose(2, 1).reshape(3, 2, 1, *maps[i].shape[-2:])
             for i in range(len(maps))]
    blocks = [fused[0], torch.cat(fused[1:3], 2), torch.cat(fused[3:5], 2), torch.cat(fused[5:7], 2)]
    torch.testing.assert_close(noise_regularisation(blocks), 2 * ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("w_plus", [False, True])
def test_grouped_regularisers_equal_the_sum_of_their_members(w_plus):
    """One regulariser for a fused bank's N generators (stacked banks, one batched kNN search)
    is the sum of N single ones, values and gradients."""
    g = torch.Generator().manual_seed(1)
    n, d = 3, 8
    banks = torch.randn(n, 400, d, generator=g, dtype=torch.float64)
    w = torch.randn(4, n, *((5,) if w_plus else ()), d, generator=g, dtype=torch.float64).requires_grad_(True)
    cases = [
        InDomainRegulariser(banks.mean(1), 1.0, grouped=True),
        KnnRegulariser(banks, 5, 1.0, chunk=64, grouped=True),
        KnnHingeRegulariser(banks, 20, 1.0, [0.5, 1.0, 2.0], chunk=64, grouped=True),
    ]
    for reg in cases:
        got = reg.penalty(w)
        grad, = torch.autograd.grad(got.sum(), w)
        singles = [reg.member(i) for i in range(n)]
        ws = [w.detach()[:, i].clone().requires_grad_(True) for i in range(n)]
        ref = sum(s.penalty(x) for s, x in zip(singles, ws))
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12, msg=reg.name)
        ref.sum().backward()
        for i, x in enumerate(ws):
            torch.testing.assert_close(grad[:, i], x.grad, rtol=1e-12, atol=1e-12, msg=reg.name)
        assert got.shape == (4,) and (got > 0).any()


def test_cached_target_features_give_the_lpips_models_distance():
    pl = PerceptualLoss("lpips-vgg")
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(3, 3, RES, RES, generator=g), torch.rand(3, 3, RES, RES, generator=g)
    ref = pl.model(x * 2 - 1, y * 2 - 1).reshape(3)
    assert torch.equal(pl(x, y), ref) and torch.equal(pl(x, pl.features(y)), ref)


def test_a_bank_of_mixed_configs_cannot_be_fused(tmp_path):
    from joinbench.gan.bank import PriorError
    from joinbench.gan.model import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
    from joinbench.gan.train import export_prior

    for c, cmax in (("albedo", 16), ("shading", 8), ("specular", 16)):
        G = Generator(GeneratorConfig(resolution=RES, z_dim=WDIM, w_dim=WDIM, channel_base=256, channel_max=cmax))
        D = Discriminator(DiscriminatorConfig(resolution=RES, channel_base=256, channel_max=16))
        export_prior(tmp_path, "materials", c, G, D, {"images_seen": 0, "forward_model": "reinhard"})
    bank = load_bank("materials", path=tmp_path)
    with pytest.raises(PriorError, match="one fused bank.*channel_max") as info:
        bank.fused_generator()
    assert "\n" not in str(info.value)
    assert bank.fused_discriminator().members == 3  # the discriminators do share one config
    with pytest.raises(JoinbenchError, match="channel_max"):
        inverter(tmp_path, steps=1).setup()


# ---------------------------------------------------------------------------------------
# graph-ready steps
# ---------------------------------------------------------------------------------------
def stage1_step(priors, batch: int):
    inv = inverter(priors, DEVICE, steps=4, perceptual="lpips-vgg", regulariser="knn")
    with torch.enable_grad():
        run = inv.start(targets(batch, device=DEVICE))
        run.step()  # the first step allocates Adam's state lazily nowhere, but warms the caches
        return count_launches(run.step, flops=False)


def pti_step(priors, batch: int):
    fm = create_forward_model("reinhard")
    bank = load_bank("materials", DEVICE, components=fm.components, path=priors)
    tuner = PivotalTuner(bank, fm, PTIConfig(steps=4, disc_samples=4, log_every=1), DEVICE)
    pivots = {k: bank[k].mean_latent(200, 0, 0.7).to(DEVICE).expand(batch, -1) for k in tuner.keys}
    noise = {k: [n.expand(batch, -1, -1, -1) for n in bank[k].make_noise(1, torch.Generator().manual_seed(3))]
             for k in tuner.keys}
    with torch.enable_grad():
        run = tuner.start(targets(batch, device=DEVICE), pivots, noise)
        run.step(0)
        return count_launches(lambda: run.step(1), flops=False)


@pytest.mark.parametrize("make", [stage1_step, pti_step], ids=["stage1", "pti"])
def test_a_step_reads_nothing_back_and_its_launches_do_not_grow_with_the_batch(priors, make):
    """No host synchronisation inside a step (device placement emulated: joinbench.launches),
    and the same dispatched ops for two images as for four: every layer is one kernel for all
    images and generators. (One image can save a copy where a reshape happens to be a view.)"""
    two, four = make(priors, 2), make(priors, 4)
    assert two.syncs == 0 and four.syncs == 0, (two.sync_sites, four.sync_sites)
    assert two.ops == four.ops and two.nonview == four.nonview


def test_progress_every_step_and_the_loss_at_log_intervals(priors):
    events = []
    inv = inverter(priors, steps=5, perceptual="none", log_every=2)
    res = inv.invert(targets(2), progress=events.append)
    assert [(e.stage, e.step, e.steps, e.images) for e in events] == [("stage1", i, 5, 2) for i in range(1, 6)]
    logged = [e.step - 1 for e in events if e.loss is not None]
    assert logged == res.loss_steps == [0, 2, 4]
    assert [e.loss for e in events if e.loss is not None] == pytest.approx(
        [sum(c[j] for c in res.loss_curve) / 2 for j in range(3)], rel=1e-6)
    # PTI: every step; it ends at the first log interval after every image stopped early
    fm = create_forward_model("reinhard")
    tuner = PivotalTuner(inv.priors, fm, PTIConfig(steps=20, perceptual="lpips-vgg", early_stop_lpips=10.0,
                                                   disc=False, log_every=3), "cpu")
    events.clear()
    out = tuner.tune(targets(2), res.latents, res.noise, progress=events.append)
    assert out.stop_steps == [0, 0] and out.steps == 1 and [e.step for e in events] == [1]
    assert events[0].stage == "pti" and events[0].loss is not None


@pytest.mark.compile
def test_step_functions_compile_without_a_graph_break(priors, monkeypatch):
    """The loss and gradient of a stage-1 and of a PTI step (where nearly all of a step's ops
    are) trace as ONE graph under torch.compile(fullgraph=True) and give the eager values.
    Opt-in (``pytest -m compile``, ~1 min on 2 cores): dynamo traces every layer."""
    monkeypatch.setattr(torch._dynamo.config, "trace_autograd_ops", True)  # torch.autograd.grad in the graph
    inv = inverter(priors, steps=3, perceptual="none", regulariser="knn")
    fm = create_forward_model("reinhard")
    with torch.enable_grad():
        s1 = inv.start(targets(2))
        res = inv.invert(targets(2))
        tuner = PivotalTuner(inv.priors, fm, PTIConfig(steps=3, perceptual="none", disc_samples=2), "cpu")
        pti = tuner.start(targets(2), res.latents, res.noise)

        def stage1_gradient(values):
            loss, _ = s1.objective(values)
            grad, newly = s1.vars.gradient(loss)
            return loss.detach(), grad, newly

        def pti_gradient(values, w_rand):
            loss, _ = pti.objective(values, pti.target, pti.features, pti.pivots, pti.noise, True, w_rand)
            grad, newly = pti.vars.gradient(loss)
            return loss.detach(), grad, newly

        w_rand = pti.w_rand[0]
        for fn, args in ((stage1_gradient, (s1.vars.values,)), (pti_gradient, (pti.vars.values, w_rand))):
            torch._dynamo.reset()
            got = torch.compile(fn, fullgraph=True, backend="aot_eager")(*args)
            want = fn(*args)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
