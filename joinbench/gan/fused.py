"""One fused bank per domain: a domain's component GANs as one network.

A domain's albedo, shading and specular GANs share one config. :class:`FusedGenerator`
and :class:`FusedDiscriminator` hold N of them as a *group* of
:mod:`joinbench.gan.model` (``Generator(cfg, groups=N)``): every parameter stacked along a
leading dim N, inputs and outputs (B, N, ...), one grouped convolution or batched matmul per
layer for all N. At 64 px a GPU is bound by kernel launches, not arithmetic, so N networks
in one launch per layer run about N times faster than N networks in turn; the arithmetic is
exactly that of the N networks (float64 outputs and gradients agree to rounding, tested).

The layer code is the single network's, with a group dim (a single network is a group of
one), so there is no second implementation to keep in step. Files stay per component:
:meth:`FusedGenerator.from_modules` stacks loaded ``Generator`` s and :meth:`unstack` gives
them back (state dicts with the exported files' keys and shapes), so ``load_bank``, the
``<dataset>-<component>-G/D.safetensors`` exports, PTI's per-image copies and the joint
(9-channel) prior, a group of one, keep working.

Layout (group member n = the n-th module given to ``from_modules``):

* ``G.mapping(z (B, N, z_dim), psi) -> (B, N, w_dim)``, ``w_avg`` (N, w_dim): truncation per member;
* ``G.synthesis(ws, noise, noise_mode)``: ws (B, N, w_dim) (W) or (B, N, num_ws, w_dim) (W+);
  noise per layer (B or 1, N, 1, r, r); noise modes as the single generator's
  (``const``: each member's own ``noise_const``) -> (B, N, C, R, R);
* ``D(img (B, N, C, R, R)) -> (B, N, 1)``, minibatch std per member.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

import torch
from torch import Tensor

from .model import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

M = TypeVar("M", Generator, Discriminator)


def stack_state_dicts(state_dicts: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Per-network state dicts (equal keys and shapes) -> one state dict with a leading group dim."""
    keys = list(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], start=1):
        if list(sd) != keys:
            raise ValueError(f"state dict {i} has other keys than state dict 0; fused networks need one config")
    return {k: torch.stack([sd[k] for sd in state_dicts]) for k in keys}


def unstack_state_dict(state_dict: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """The inverse of :func:`stack_state_dicts` (clones: the results own their memory)."""
    n = next(iter(state_dict.values())).shape[0]
    return [{k: v[i].clone() for k, v in state_dict.items()} for i in range(n)]


class _Fused:
    """Shared by the fused generator and discriminator: stacking, unstacking, members."""

    single: type

    @property
    def members(self) -> int:
        """N, the number of stacked networks."""
        return next(self.parameters()).shape[0]

    @classmethod
    def from_modules(cls, modules: Sequence[M]):
        """Stack single networks of one config (same device and dtype as the first)."""
        modules = list(modules)
        if not modules or any(type(m) is not cls.single or m.grouped for m in modules):
            raise TypeError(f"{cls.__name__}.from_modules needs single {cls.single.__name__} modules")
        cfg = modules[0].config
        for i, m in enumerate(modules[1:], start=1):
            if m.config != cfg:
                diff = sorted(k for k, v in cfg.to_dict().items() if m.config.to_dict()[k] != v)
                raise ValueError(f"cannot fuse networks of different configs: network {i} differs in {', '.join(diff)}")
        ref = next(modules[0].parameters())
        with torch.random.fork_rng(devices=[]):  # the random init is overwritten; leave the caller's RNG alone
            fused = cls(cfg, len(modules)).to(ref.device, ref.dtype)  # before loading: no rounding to float32
        fused.load_state_dict(stack_state_dicts([m.state_dict() for m in modules]))
        return fused.train(modules[0].training).requires_grad_(ref.requires_grad)

    def unstack(self) -> list:
        """The N single networks (their own copies of the weights), same device, dtype and mode."""
        ref = next(self.parameters())
        out = []
        for sd in unstack_state_dict(self.state_dict()):
            with torch.random.fork_rng(devices=[]):
                m = self.single(self.config).to(ref.device, ref.dtype)
            m.load_state_dict(sd)
            out.append(m.train(self.training).requires_grad_(ref.requires_grad))
        return out


class FusedGenerator(_Fused, Generator):
    """N generators of one :class:`GeneratorConfig` as one network (see the module docstring)."""

    single = Generator

    def __init__(self, cfg: GeneratorConfig, members: int):
        super().__init__(cfg, groups=members)


class FusedDiscriminator(_Fused, Discriminator):
    """N discriminators of one :class:`DiscriminatorConfig` as one network (see the module docstring)."""

    single = Discriminator

    def __init__(self, cfg: DiscriminatorConfig, members: int):
        super().__init__(cfg, groups=members)


__all__ = ["FusedDiscriminator", "FusedGenerator", "stack_state_dicts", "unstack_state_dict"]
