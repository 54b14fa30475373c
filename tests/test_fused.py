"""The fused bank (joinbench.gan.fused): N networks of one config as one grouped network
are the N independent networks, in outputs and in gradients (float64, tiny config)."""
from __future__ import annotations

import pytest
import torch

from joinbench.gan.fused import FusedDiscriminator, FusedGenerator
from joinbench.gan.model import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

RES, ZDIM, N = 16, 8, 3
TINY = dict(resolution=RES, channel_base=64, channel_max=8)
TOL = dict(rtol=0.0, atol=1e-9)


pytestmark = pytest.mark.usefixtures("tiny_env")  # one intra-op thread


def members(img_channels: int = 3) -> tuple[list[Generator], list[Discriminator]]:
    """N random float64 generators (non-zero noise strengths and w_avg, so both matter) and discriminators."""
    gs, ds = [], []
    for i in range(N):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(100 + i)
            G = Generator(GeneratorConfig(z_dim=ZDIM, w_dim=ZDIM, img_channels=img_channels, **TINY)).double()
            D = Discriminator(DiscriminatorConfig(img_channels=img_channels, **TINY)).double()
            with torch.no_grad():
                for conv in G.synthesis.convs:
                    conv.noise_strength.uniform_(0.1, 0.5)
                G.mapping.w_avg.normal_(0, 0.3)
        gs.append(G)
        ds.append(D)
    return gs, ds


def leaf(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


def assert_grads_equal(fused, singles) -> None:
    """Every parameter's gradient in the fused network equals the single networks' ones."""
    params = dict(fused.named_parameters())
    for i, m in enumerate(singles):
        for name, p in m.named_parameters():
            assert p.grad is not None, name
            torch.testing.assert_close(params[name].grad[i], p.grad, **TOL, msg=name)


# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("w_plus", [False, True])
def test_fused_generator_equals_independent_generators(w_plus):
    """z -> mapping (truncation with each member's w_avg) -> synthesis with explicit per-member
    noise, in W and W+: outputs and gradients w.r.t. z, ws, noise and every parameter."""
    gs, _ = members()
    fused = FusedGenerator.from_modules(gs)
    b = 4
    upstream = torch.randn(b, N, 3, RES, RES, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z = leaf(b, N, ZDIM, seed=2)
    noise = [leaf(b, N, 1, s[-1], s[-1], seed=10 + j) for j, s in enumerate(fused.noise_shapes())]
    extra = leaf(b, N, fused.num_ws, ZDIM, seed=3)  # a W+ offset, so every layer's latent differs
    ws = fused.mapping(z, 0.7)
    ws = ws[:, :, None] + extra if w_plus else ws
    out = fused.synthesis(ws, noise=noise, noise_mode="const")
    assert out.shape == (b, N, 3, RES, RES)
    (out * upstream).sum().backward()
    zs = [z.detach()[:, i].clone().requires_grad_(True) for i in range(N)]
    ns = [[n.detach()[:, i].clone().requires_grad_(True) for n in noise] for i in range(N)]
    es = [extra.detach()[:, i].clone().requires_grad_(True) for i in range(N)]
    for i, G in enumerate(gs):
        w = G.mapping(zs[i], 0.7)
        w = w[:, None] + es[i] if w_plus else w
        o = G.synthesis(w, noise=ns[i], noise_mode="const")
        torch.testing.assert_close(out[:, i], o, **TOL)
        (o * upstream[:, i]).sum().backward()
        torch.testing.assert_close(z.grad[:, i], zs[i].grad, **TOL)
        for n, n_i in zip(noise, ns[i]):
            torch.testing.assert_close(n.grad[:, i], n_i.grad, **TOL)
        if w_plus:
            torch.testing.assert_close(extra.grad[:, i], es[i].grad, **TOL)
    assert_grads_equal(fused, gs)


def test_fused_generator_noise_modes_and_mean_latent():
    gs, _ = members()
    fused = FusedGenerator.from_modules(gs)
    ws = torch.randn(2, N, ZDIM, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for mode in ("const", "none"):  # const: each member's own noise_const buffers
            out = fused.synthesis(ws, noise_mode=mode)
            for i, G in enumerate(gs):
                torch.testing.assert_close(out[:, i], G.synthesis(ws[:, i], noise_mode=mode), **TOL)
        # random: one draw (B, N, 1, r, r) per layer, in layer order
        torch.manual_seed(5)
        out = fused.synthesis(ws, noise_mode="random")
        torch.manual_seed(5)
        drawn = [torch.randn(2, N, 1, s[-1], s[-1], dtype=torch.float64) for s in fused.noise_shapes()]
        torch.testing.assert_close(out, fused.synthesis(ws, noise=drawn), **TOL)
        for i, G in enumerate(gs):
            torch.testing.assert_close(out[:, i], G.synthesis(ws[:, i], noise=[n[:, i] for n in drawn]), **TOL)
        # noise_buffers / make_noise in the fused layout; a missing layer falls back to the mode
        assert [tuple(n.shape) for n in fused.noise_buffers()] == [s for s in fused.noise_shapes()]
        assert [tuple(n.shape) for n in fused.make_noise(3)] == [(3, *s[1:]) for s in fused.noise_shapes()]
        mixed = [None] + fused.noise_buffers()[1:]
        torch.testing.assert_close(fused.synthesis(ws, noise=mixed, noise_mode="const"), fused.synthesis(ws, noise_mode="const"))
        # the mean latent of every member from the same z draws
        mean = fused.mean_latent(300, seed=7)
        assert mean.shape == (1, N, ZDIM)
        for i, G in enumerate(gs):
            torch.testing.assert_close(mean[:, i], G.mean_latent(300, seed=7), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"ws must be \(B, 3, 8\)"):
        fused.synthesis(torch.zeros(2, 2, ZDIM, dtype=torch.float64))
    with pytest.raises(ValueError, match="z must be"):
        fused.mapping(torch.zeros(2, ZDIM))


@pytest.mark.parametrize("batch, group", [(8, None), (6, None), (6, 2)])
def test_fused_discriminator_equals_independent_discriminators(batch, group):
    """Outputs and gradients (images and every parameter); minibatch std per member, with
    the config's group size (4, or 3 for a batch of 6) or an explicit one."""
    _, ds = members()
    fused = FusedDiscriminator.from_modules(ds)
    img = leaf(batch, N, 3, RES, RES, seed=6)
    upstream = torch.randn(batch, N, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    out = fused(img, group)
    assert out.shape == (batch, N, 1)
    (out * upstream).sum().backward()
    for i, D in enumerate(ds):
        x = img.detach()[:, i].clone().requires_grad_(True)
        o = D(x, group)
        torch.testing.assert_close(out[:, i], o, **TOL)
        (o * upstream[:, i]).sum().backward()
        torch.testing.assert_close(img.grad[:, i], x.grad, **TOL)
    assert_grads_equal(fused, ds)


def test_state_dicts_round_trip_and_keep_the_files_layout():
    gs, ds = members(img_channels=9)  # the joint prior's 9 channels fuse like any other config
    for singles, cls in ((gs, FusedGenerator), (ds, FusedDiscriminator)):
        fused = cls.from_modules(singles)
        assert fused.members == N and fused.config == singles[0].config
        assert list(fused.state_dict()) == list(singles[0].state_dict())  # the same keys, stacked
        for k, v in fused.state_dict().items():
            assert v.shape == (N, *singles[0].state_dict()[k].shape) and v.dtype == torch.float64
        back = fused.unstack()
        assert [type(m) for m in back] == [cls.single] * N
        for a, b in zip(singles, back):
            sa, sb = a.state_dict(), b.state_dict()
            assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
        # the copies own their memory: editing one leaves the fused network alone
        with torch.no_grad():
            next(back[0].parameters()).add_(1.0)
        assert torch.equal(next(fused.parameters())[0], next(singles[0].parameters()))
    # frozen, eval-mode members give a frozen, eval-mode fused network (and back)
    for m in gs:
        m.eval().requires_grad_(False)
    fused = FusedGenerator.from_modules(gs)
    assert not fused.training and not any(p.requires_grad for p in fused.parameters())
    assert not any(m.training for m in fused.unstack())
    # one config only
    odd = Generator(GeneratorConfig(z_dim=ZDIM, w_dim=ZDIM, **{**TINY, "channel_max": 4})).double()
    with pytest.raises(ValueError, match="differ.* in channel_max"):
        FusedGenerator.from_modules([gs[0], odd])
    with pytest.raises(TypeError, match="single Generator"):
        FusedGenerator.from_modules([FusedGenerator.from_modules(gs)])
