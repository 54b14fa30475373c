"""JoIN stage 2, pivotal tuning (joinbench.join.pti), on tiny CPU priors.

The priors here are *grey*: every generator's three output channels are tied (equal toRGB
rows), so everything the bank can produce is grey, and a tinted image is a controlled
sim-to-real shift stage 1 cannot explain (only tuning the weights can). 16 px, w_dim 16,
LPIPS off except where it is the point; one intra-op thread.
"""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from joinbench.errors import JoinbenchError
from joinbench.gan.bank import load_bank
from joinbench.gan.model import Generator
from joinbench.join.engine import ImageVariables
from joinbench.join.pti import PivotalTuner, PTIConfig, select_parameters, tuned_generator
from joinbench.join.stage1 import JointInverter, Stage1Config
from joinbench.registry import create_forward_model

from .tiny_world import COMPONENTS, RES, export_tiny_prior, liven_, tiny_discriminator, tiny_generator

pytestmark = pytest.mark.usefixtures("tiny_env")

S1 = dict(perceptual="none", regulariser="none", mean_samples=500, log_every=1)
FAST = dict(perceptual="none", log_every=1, disc_samples=4)  # PTI: pixel loss, 4 neighbours per step
TINT = torch.tensor([1.3, 0.9, 0.6]).view(1, 3, 1, 1)


def grey_generator(seed: int, channels: int = 3) -> Generator:
    """A random tiny generator whose output channels are equal within each RGB group."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = liven_(tiny_generator(channels))
        with torch.no_grad():
            for t in G.synthesis.torgbs:
                for g in range(0, channels, 3):
                    t.conv.weight[g + 1:g + 3] = t.conv.weight[g:g + 1]
                    t.bias[g + 1:g + 3] = t.bias[g:g + 1]
                t.conv.weight.mul_(0.3)
    return G


def export_grey_priors(folder, joint: bool = False):
    """Grey priors (generators seeded 10 + i, discriminators 20 + i; the joint one 13 and 30)."""
    for i, c in enumerate(COMPONENTS):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(20 + i)
            D = tiny_discriminator()
        export_tiny_prior(folder, "materials", c, grey_generator(10 + i), D)
    if joint:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(30)
            D = tiny_discriminator(9)
        export_tiny_prior(folder, "materials", "joint", grey_generator(13, 9), D)
    return folder


def chroma(x: torch.Tensor) -> torch.Tensor:
    """RMS deviation of the colour channels from their mean: 0 for grey images."""
    return (x - x.mean(1, keepdim=True)).square().mean().sqrt()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Grey bank, two tinted targets and their stage-1 inversion (shared, read only)."""
    folder = export_grey_priors(tmp_path_factory.mktemp("grey"), joint=True)
    fm = create_forward_model("reinhard")
    bank = load_bank("materials", components=fm.components, path=folder)
    inv = JointInverter(bank, fm, Stage1Config(steps=15, **S1), "cpu")
    g = torch.Generator().manual_seed(3)
    enc = {}
    with torch.no_grad():
        for c, p in bank.items():
            z = torch.randn(2, p.z_dim, generator=g)
            enc[c] = p.to_encoded(p.synthesis(p.mapping(z, 0.7), noise=p.make_noise(2, generator=g)))
        clean = fm.render_encoded(enc).float()
    assert chroma(clean) < 1e-6  # the bank only makes grey images (up to rounding)
    target = (clean * TINT).clamp(0, 1)
    s1 = inv.invert(target)
    return dict(folder=folder, fm=fm, bank=bank, target=target, s1=s1)


def tuner(world, bank=None, **kw) -> PivotalTuner:
    return PivotalTuner(bank or world["bank"], world["fm"], PTIConfig(**{**FAST, **kw}), "cpu")


def mse(a, b):
    return (a - b).square().flatten(1).mean(1)


def state(bank):
    return {c: {k: v.clone() for k, v in p.G.state_dict().items()} for c, p in bank.items()}


# ---------------------------------------------------------------------------------------
def test_pti_fits_a_shifted_image_better_than_stage1(world):
    """The paper's claim for stage 2: tuning the weights explains what the priors cannot.
    With the full loss (reconstruction + the real discriminators' term, default weights)."""
    bank, target, s1 = world["bank"], world["target"], world["s1"]
    before = state(bank)
    res = tuner(world, steps=15, lr=3e-3).tune(target, s1.latents, s1.noise)
    e1, e2 = mse(s1.rerender, target), mse(res.rerender, target)
    assert (e2 < 0.5 * e1).all(), (e1, e2)
    assert all(c[-1] < c[0] for c in res.loss_curve) and res.errors == [None, None]
    assert all(v > 0 for v in res.final_terms["disc"])  # the discriminator term was part of the loss
    assert res.stop_steps == [15, 15] and res.steps == 15 and len(res.loss_steps) == 15
    assert set(res.encoded) == {"albedo", "shading", "specular"} and res.encoded["albedo"].shape == (2, 3, RES, RES)
    # the bank itself is untouched: per-image copies were tuned
    after = state(bank)
    assert all(torch.equal(before[c][k], after[c][k]) for c in before for k in before[c])
    assert not any(p.requires_grad for c in bank for p in bank[c].G.parameters())


class GreyCritic(nn.Module):
    """Stands in for the trained discriminators of the grey bank (a fused discriminator's
    features -> logits, images (n, N, C, R, R) -> (n, N, 1)): real images are grey, so it
    scores an image by how far its colour channels stray from grey."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def logits(self, x: torch.Tensor, mbstd_group_size: int | None = None) -> torch.Tensor:
        return (2.0 - 100.0 * (x - x.mean(2, keepdim=True)).square().mean((2, 3, 4)))[..., None]


def test_discriminator_term_keeps_random_samples_on_the_prior(world):
    """Proxy for "random samples of the tuned generator stay close to the prior's": the
    prior's samples are exactly grey, so the colour (chroma) of the tuned generators' samples
    at fresh latents (never seen in tuning) measures how far tuning pulled the generator
    off its distribution. The tint of the target pulls; the discriminator term must hold it
    back."""
    bank = load_bank("materials", components=world["fm"].components, path=world["folder"])
    s1, target = world["s1"], world["target"]
    weights = dict(disc_albedo=0.01, disc_shading=0.01, disc_specular=0.01)

    def run(disc: bool):
        t = tuner(world, bank, steps=15, lr=3e-3, disc=disc, **weights)
        t.D = GreyCritic()  # the fused discriminators' place
        return t.tune(target, s1.latents, s1.noise, save_tuned=True)

    runs = {d: run(d) for d in (False, True)}

    def sample_chroma(res) -> float:
        g = torch.Generator().manual_seed(99)
        values = []
        for k, p in bank.items():
            z = torch.randn(16, p.z_dim, generator=g)
            noise = p.make_noise(16, generator=g)
            with torch.no_grad():
                assert chroma(p.G(z, 0.7, noise=noise)) < 1e-6  # the original prior: grey
                for i in range(2):
                    values.append(chroma(p.to_encoded(tuned_generator(p.G, res.tuned[k], i)(z, 0.7, noise=noise))))
        return torch.stack(values).mean().item()

    free, held = sample_chroma(runs[False]), sample_chroma(runs[True])
    assert free > 0.03  # without it, tuning colours the generators (observed ~0.095)
    assert held < 0.5 * free, (held, free)  # observed ~0.027
    for res in runs.values():  # both still fit the image better than stage 1
        assert (mse(res.rerender, target) < mse(s1.rerender, target)).all()


def test_vmap_and_per_image_loop_agree(world):
    s1, target = world["s1"], world["target"]
    a = tuner(world, steps=4, batching="vmap").tune(target, s1.latents, s1.noise)
    b = tuner(world, steps=4, batching="loop").tune(target, s1.latents, s1.noise)
    for c in a.encoded:
        assert torch.allclose(a.encoded[c], b.encoded[c], atol=1e-5)
    for ca, cb in zip(a.loss_curve, b.loss_curve):
        assert ca == pytest.approx(cb, rel=1e-4)
    assert not torch.allclose(a.rerender, s1.rerender, atol=1e-4)  # the weights did move


def test_an_image_alone_follows_its_trajectory_in_a_batch(world):
    """Per-image copies, summed losses, shared random latents and a per-image discriminator
    call: image 1 tuned alone ends where it ends inside the batch (up to float32 rounding)."""
    s1, target = world["s1"], world["target"]
    batch = tuner(world, steps=5).tune(target, s1.latents, s1.noise)
    alone = tuner(world, steps=5).tune(target[1:], {k: v[1:] for k, v in s1.latents.items()},
                                       {k: [n[1:] for n in v] for k, v in s1.noise.items()})
    assert torch.allclose(batch.rerender[1:], alone.rerender, atol=1e-5)
    assert batch.loss_curve[1] == pytest.approx(alone.loss_curve[0], rel=1e-4)
    assert not torch.allclose(batch.rerender[0], batch.rerender[1])


def test_weight_copies_are_freed_unless_saved(world, monkeypatch):
    """The per-image copies (one tensor of every image's tuned weights, and Adam's state of it)
    die with the tune call."""
    s1, target = world["s1"], world["target"]
    refs: list[weakref.ref] = []
    original = ImageVariables.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        refs.extend(weakref.ref(t) for t in (self.values, *self.opt.state[self.values].values()))

    monkeypatch.setattr(ImageVariables, "__init__", spy)
    res = tuner(world, steps=3).tune(target, s1.latents, s1.noise)
    gc.collect()
    assert refs and all(r() is None for r in refs)
    assert res.tuned is None
    refs.clear()
    res = tuner(world, steps=3).tune(target, s1.latents, s1.noise, save_tuned=True)
    gc.collect()
    assert refs and all(r() is None for r in refs)  # the result holds detached clones, not the copies
    # the saved weights rebuild each image's tuned generator exactly
    for k, p in world["bank"].items():
        assert set(res.tuned[k]) == set(res.tuned_names[k])
        for i in range(2):
            G = tuned_generator(p.G, res.tuned[k], i)
            with torch.no_grad():
                x = p.to_encoded(G.synthesis(s1.latents[k][i:i + 1], noise=[n[i:i + 1] for n in s1.noise[k]],
                                             noise_mode="const"))
            assert torch.allclose(x, res.encoded[k][i:i + 1], atol=1e-6)


def test_layer_choice(world):
    G = world["bank"]["albedo"].G
    names = [n for n, _ in G.named_parameters()]
    assert select_parameters(G, "synthesis") == [n for n in names if n.startswith("synthesis.")]
    assert any(n.startswith("mapping.") for n in select_parameters(G, "all"))
    assert all(".affine." in n for n in select_parameters(G, "affine"))
    assert select_parameters(G, "synthesis.convs.0, synthesis.torgbs.0") == \
        [n for n in names if n.startswith(("synthesis.convs.0.", "synthesis.torgbs.0."))]
    with pytest.raises(JoinbenchError, match="no generator parameter starts with 'synthesis.conv9'") as info:
        select_parameters(G, "synthesis.conv9")
    assert "\n" not in str(info.value)
    s1, target = world["s1"], world["target"]
    res = tuner(world, steps=3, layers="torgb").tune(target, s1.latents, s1.noise, save_tuned=True)
    tuned = res.tuned["shading"]
    assert set(tuned) == {n for n in names if n.startswith("synthesis.torgbs.")}
    assert any(not torch.equal(v[0], G.get_parameter(n)) for n, v in res.tuned["albedo"].items())
    # "all" tunes the mapping too: it makes the discriminator term's random latents
    res = tuner(world, steps=3, layers="all").tune(target, s1.latents, s1.noise, save_tuned=True)
    mapped = {n: v for n, v in res.tuned["albedo"].items() if n.startswith("mapping.")}
    assert mapped and any(not torch.equal(v[0], G.get_parameter(n)) for n, v in mapped.items())


def test_early_stop_at_an_lpips_threshold(world):
    s1, target = world["s1"], world["target"]
    kw = dict(steps=4, disc=False, perceptual="lpips-vgg")
    res = tuner(world, early_stop_lpips=10.0, **kw).tune(target, s1.latents, s1.noise)
    assert res.stop_steps == [0, 0] and res.steps == 1  # reached before the first update
    assert all(0 < v <= 10.0 for v in res.final_terms["lpips"])  # the value it stopped at
    assert torch.allclose(res.rerender, s1.rerender, atol=1e-6)
    res = tuner(world, early_stop_lpips=1e-9, **kw).tune(target, s1.latents, s1.noise)
    assert res.stop_steps == [4, 4] and res.steps == 4 and all(v > 0 for v in res.final_terms["lpips"])
    with pytest.raises(JoinbenchError, match="early_stop_lpips needs the LPIPS term"):
        tuner(world, early_stop_lpips=0.06, perceptual="none")


def test_non_finite_image_is_frozen_others_finish(world):
    s1, target = world["s1"], world["target"]
    bad = target.clone()
    bad[1, 0, 3, 3] = float("nan")
    res = tuner(world, steps=4).tune(bad, s1.latents, s1.noise)
    assert res.errors[0] is None and "non-finite" in res.errors[1] and "\n" not in res.errors[1]
    assert res.stop_steps == [4, 0] and torch.isfinite(res.rerender).all()
    assert torch.allclose(res.rerender[1], s1.rerender[1], atol=1e-6)  # its weights never moved


def test_joint_prior_tunes_its_one_generator(world):
    fm = world["fm"]
    bank = load_bank("materials", components=fm.components, path=world["folder"], joint=True)
    target = world["target"]
    s1 = JointInverter(bank, fm, Stage1Config(steps=20, joint_prior=True, **S1), "cpu").invert(target)
    t = tuner(world, bank, steps=20)
    assert t.keys == ["joint"] and t.describe()["disc_weights"] == {"joint": 2e-3}
    res = t.tune(target, s1.latents, s1.noise, save_tuned=True)
    assert set(res.tuned) == {"joint"} and set(res.encoded) == {"albedo", "shading", "specular"}
    assert (mse(res.rerender, target) < 0.5 * mse(s1.rerender, target)).all()
    with pytest.raises(JoinbenchError, match="pivot latent for 'joint'"):
        t.tune(target, {"albedo": s1.latents["joint"]})


def test_config_errors_are_one_line(world):
    for kw, match in ((dict(steps=0), "at least 1"), (dict(batching="jit"), "vmap or loop"),
                      (dict(mix=1.5), r"\[0, 1\]"), (dict(disc_every=0), "disc_every"),
                      (dict(layers="nothing.here"), "no generator parameter")):
        with pytest.raises(JoinbenchError, match=match) as info:
            tuner(world, **kw)
        assert "\n" not in str(info.value)
    two = create_forward_model("reinhard-nospecular")
    t = PivotalTuner(world["bank"], two, PTIConfig(**FAST, steps=1), "cpu")
    assert t.keys == ["albedo", "shading"]
