"""Train StyleGAN2 priors on a procedural dataset: the launch-lean engine behind ``joinbench train prior``.

**The maths** (StyleGAN2-ADA's ``StyleGAN2Loss`` without path-length regularisation and
without ADA, which an endless, never-repeating procedural source does not need):

1. **G**: non-saturating logistic loss ``softplus(-D(G(z)))`` with style mixing (probability
   ``style_mixing_prob``, a cutoff layer drawn per sample) and per-layer noise; Adam on G.
2. **D**: ``softplus(D(G(z))) + softplus(-D(x))`` on fresh fakes and the real batch; Adam on D.
3. **R1** every ``r1_interval`` iterations (lazy regularisation): ``gamma / 2 * |grad_x D(x)|^2``
   times the interval, in float32; D's Adam uses ``lr * c`` and ``beta ** c`` with
   ``c = interval / (interval + 1)`` to compensate.
4. **EMA** of G: ``beta = 0.5 ** (batch / ema_nimg)``, ``ema_nimg = min(ema_kimg * 1000,
   images_seen * ema_rampup)``; ``w_avg`` tracks the mean mapped latent.

**Hyper-parameters by batch and resolution** follow StyleGAN2-ADA's ``auto`` config
(its ``train.py``, ``cfg_specs``): the learning rate is **not** scaled with the batch
(``lrate`` is 0.0025 for every batch below 1024 px, 0.002 at 1024 px; G and D alike);
``gamma = 0.0002 * resolution ** 2 / batch``; ``ema_kimg = batch * 10 / 32`` (the EMA
half-life stays 312.5 iterations whatever the batch), ramp-up 0.05 (ADA turns the ramp-up off
when it continues a trained network: so does ``--init-from``); minibatch-std groups of 4.
So ``--batch 512`` trains with lr 0.0025, gamma 0.0016 at 64 px and a 160 kimg EMA.

**The engine** (issue 14): at 64 px a GPU is bound by kernel launches, so an iteration is
written to launch few kernels and never wait for the host:

* the models of a run are one grouped network (:mod:`joinbench.gan.fused`): ``--component
  all`` steps albedo, shading and specular as one bank, one kernel per layer for all three,
  one fused Adam per G and D; a single component or ``joint`` is a group of one. Each member
  keeps its own seed and random stream, so it trains exactly as it would alone;
* batches come from a device-resident :class:`~joinbench.training.data.DataPool` rendered in
  large calls (an index draw and a gather per iteration);
* every random number of an iteration is drawn into fixed buffers first (one ``normal_`` and
  one ``uniform_`` per member); style mixing uses a per-sample cutoff mask, not a slice at a
  random cutoff; the EMA coefficient and the learning rates are tensors; gradients come from
  ``torch.autograd.grad`` into capturable fused Adam; D scores fakes and reals in one call
  (the batch interleaved so every minibatch-std group stays within fakes or within reals);
* so the G step, the D step, the R1 step and the EMA are functions without host syncs that
  a CUDA graph captures (``--cuda-graphs``, on by default on CUDA) and that
  ``torch.compile(fullgraph=True)`` traces without a graph break (tested);
* precision: ``fp32`` (TF32 on CUDA) by default: bf16 autocast inserts a cast per weight and
  activation per layer, ~500 more launches per model step (counted with ``joinbench profile
  train --emulate-cuda``); ``bf16`` keeps that option, ``fp64`` is for exactness tests.

:class:`PriorTraining` is one run's engine; :meth:`PriorTraining.iteration` is one training
iteration (batch draw, the members' random draws, G, D, R1 when due, EMA), which
``joinbench profile train`` counts. :func:`train_prior` runs it in the training wing
(checkpoints, ``--resume``, ``--minutes``, Ctrl-C, logs) and exports
``<dataset>-<component>-{G,D}.safetensors`` (EMA generator, discriminator; float16) with
``<dataset>-<component>.json``. ``--init-from shipped`` (or a folder of exports) continues
exported priors: G and G_ema from the exported EMA generator, D from the exported
discriminator, fresh optimiser state; images seen and the history accumulate in the sidecar.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import JoinbenchError, did_you_mean
from ..forward import COMPONENTS
from ..training.data import DataPool, create_training_dataset, encode_batch, pool_defaults
from ..training.graphs import StepGraph, adam_step, make_adam, optimizer_tensors
from ..training.loop import check_training_numbers, model_seed
from .fused import FusedDiscriminator, FusedGenerator, stack_state_dicts, unstack_state_dict
from .model import ConfigDict, Discriminator, DiscriminatorConfig, Generator, GeneratorConfig, count_parameters
from .prior_format import FD_METHOD, FORMAT, export_stem, grid_rows, to_display

TRAIN_TARGETS = (*COMPONENTS, "all", "joint")
PRECISIONS = ("fp32", "bf16", "fp64")
LOSS_KEYS = ("loss_G", "loss_D", "D_real", "D_fake", "r1_penalty")
# Settings that change the optimisation or the data: a resumed run must keep them.
_RESUME_KEYS = ("dataset", "component", "batch", "resolution", "r1_gamma", "r1_interval", "lr", "beta1", "beta2",
                "ema_kimg", "ema_rampup", "style_mixing_prob", "seed", "z_dim", "w_dim", "mapping_layers",
                "channel_base", "channel_max", "mbstd_group_size", "forward_model", "pool_size", "pool_refresh",
                "pool_reuse", "precision")


@dataclass
class TrainConfig(ConfigDict):
    """Everything a training run depends on. ``None`` fields are resolved by :meth:`resolved`
    (and the pool's by :func:`train_prior`, which knows the device)."""

    # saved configs carry extra keys (e.g. the checkpoint's device_type): from_dict drops them
    ignore_unknown_keys: ClassVar[bool] = True

    dataset: str = "materials"
    component: str = "albedo"  # albedo | shading | specular | all | joint
    kimg: float = 5000.0
    batch: int = 32
    resolution: int = 64
    r1_gamma: float | None = None  # None: StyleGAN2-ADA 'auto', 0.0002 * res^2 / batch
    r1_interval: int = 16
    lr: float = 0.0025  # StyleGAN2-ADA 'auto' below 1024 px, for every batch size
    beta1: float = 0.0
    beta2: float = 0.99
    ema_kimg: float | None = None  # None: StyleGAN2-ADA 'auto', batch * 10 / 32
    ema_rampup: float | None = 0.05  # None with --init-from (as ADA when it resumes)
    style_mixing_prob: float = 0.9
    seed: int = 0
    device: str = "auto"
    snapshot_kimg: float = 100.0
    log_kimg: float = 4.0
    out: str | None = None  # None: runs/priors/<dataset>-<component>-<resolution>
    # network defaults come from the model configs, so the two cannot drift apart
    z_dim: int = GeneratorConfig.z_dim
    w_dim: int = GeneratorConfig.w_dim
    mapping_layers: int = GeneratorConfig.mapping_layers
    channel_base: int = GeneratorConfig.channel_base
    channel_max: int = GeneratorConfig.channel_max
    mbstd_group_size: int = DiscriminatorConfig.mbstd_group_size
    forward_model: str | None = None  # None: the dataset's own
    grid_size: int = 32
    progress: bool = True
    minutes: float | None = None  # stop (checkpoint + export) after this much training time in this invocation
    # the engine
    pool_size: int | None = None  # images in the device pool; None: 16,384 on CUDA, 8 batches elsewhere
    pool_refresh: float = 0.25  # fraction of the pool re-rendered at a time
    pool_reuse: float = 4.0  # times each pooled image is drawn, on average, before it is replaced
    render_chunk: int | None = None  # images per render call; None: 4,096 on CUDA, the pool elsewhere
    precision: str = "fp32"  # fp32 (TF32 on CUDA) | bf16 (autocast forward passes) | fp64 (tests)
    cuda_graphs: bool | None = None  # None: on for CUDA
    adam: str = "fused"  # fused | foreach (what torch.compile traces)
    init_from: str | None = None  # "shipped" or a folder of exported priors to continue

    def resolved(self) -> "TrainConfig":
        cfg = copy.copy(self)
        if cfg.component not in TRAIN_TARGETS:
            raise JoinbenchError(f"Unknown component {cfg.component!r}.{did_you_mean(cfg.component, TRAIN_TARGETS)} Use one of {', '.join(TRAIN_TARGETS)}.")
        check_training_numbers(cfg.batch, cfg.kimg, cfg.minutes, cfg.lr)
        if cfg.r1_gamma is not None and not (math.isfinite(cfg.r1_gamma) and cfg.r1_gamma >= 0):
            raise JoinbenchError(f"--r1-gamma must be 0 or more, got {cfg.r1_gamma}.")
        if cfg.precision not in PRECISIONS:
            raise JoinbenchError(f"Unknown precision {cfg.precision!r}.{did_you_mean(cfg.precision, PRECISIONS)} Use one of {', '.join(PRECISIONS)}.")
        from joinbench.datasets.base import check_resolution

        check_resolution(cfg.resolution)  # the datasets' own bounds: the pool renders at this size
        if cfg.r1_gamma is None:
            cfg.r1_gamma = 0.0002 * cfg.resolution ** 2 / cfg.batch
        if cfg.ema_kimg is None:
            cfg.ema_kimg = cfg.batch * 10 / 32
        if cfg.init_from is not None:
            cfg.ema_rampup = None
        if cfg.out is None:
            cfg.out = str(Path("runs") / "priors" / f"{cfg.dataset}-{cfg.component}-{cfg.resolution}")
        return cfg

    def model_names(self) -> tuple[str, ...]:
        return COMPONENTS if self.component == "all" else (self.component,)

    def generator_config(self, name: str) -> GeneratorConfig:
        return GeneratorConfig(resolution=self.resolution, img_channels=9 if name == "joint" else 3, z_dim=self.z_dim,
                               w_dim=self.w_dim, mapping_layers=self.mapping_layers,
                               channel_base=self.channel_base, channel_max=self.channel_max)

    def discriminator_config(self, name: str) -> DiscriminatorConfig:
        return DiscriminatorConfig(resolution=self.resolution, img_channels=9 if name == "joint" else 3,
                                   channel_base=self.channel_base, channel_max=self.channel_max,
                                   mbstd_group_size=self.mbstd_group_size)


# ---------------------------------------------------------------------------------------
# the losses and the EMA (single networks, or groups with a member dim after the batch)
# ---------------------------------------------------------------------------------------
def ema_beta(batch: int, cur_nimg: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """StyleGAN2-ADA's EMA coefficient: half-life ``ema_kimg`` (ramped up early in training)."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(g_ema: torch.nn.Module, g: torch.nn.Module, beta: float | Tensor) -> None:
    """``p_ema <- beta * p_ema + (1 - beta) * p`` for parameters; buffers are copied. ``beta``
    may be a 0-d tensor: it is then passed as one weight tensor per parameter (the overload
    that reads nothing back to the host; a tensor as the scalar weight would be ``.item()``-ed)."""
    ema = list(g_ema.parameters())
    weight = [1.0 - beta] * len(ema) if isinstance(beta, Tensor) else 1.0 - beta
    torch._foreach_lerp_(ema, [p.detach() for p in g.parameters()], weight)
    buffers = list(g_ema.buffers())
    if buffers:
        torch._foreach_copy_(buffers, list(g.buffers()))


def paired_logits(D: torch.nn.Module, fake: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
    """(fake logits, real logits) of D, in one call when the minibatch-std groups allow it.

    D's minibatch-std layer groups samples ``k, k + n/g, ...`` of its batch. Interleaving the
    two batches as ``stack([fake.view(g, B/g), real.view(g, B/g)], 1)`` makes every group of
    the 2B batch exactly the corresponding group of fakes or of reals, so each sample's logit
    is the one the separate calls give (same maths, half the launches). Otherwise: two calls."""
    from .model import mbstd_group

    b = fake.shape[0]
    g = mbstd_group(b, D.config.mbstd_group_size)
    if mbstd_group(2 * b, D.config.mbstd_group_size) != g:
        return D(fake), D(real)
    both = torch.stack([fake.reshape(g, b // g, *fake.shape[1:]), real.to(fake.dtype).reshape(g, b // g, *real.shape[1:])], 1)
    logits = D(both.reshape(2 * b, *fake.shape[1:])).reshape(g, 2, b // g, *fake.shape[1:-3], 1)
    return logits[:, 0].reshape(b, *logits.shape[3:]), logits[:, 1].reshape(b, *logits.shape[3:])


def d_loss(D: torch.nn.Module, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Non-saturating logistic D loss; also returns the mean real and fake logits."""
    fake_logits, real_logits = paired_logits(D, fake, real)
    loss = F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()
    return loss, real_logits.float().mean().detach(), fake_logits.float().mean().detach()


def r1_penalty(D: torch.nn.Module, real: Tensor) -> Tensor:
    """Per-sample ``|grad_x D(x)|^2`` (over the last three dims: channels and pixels), at
    least in float32: (B,) for a single D, (B, N) for a group."""
    real = real.detach().to(torch.promote_types(real.dtype, torch.float32)).requires_grad_(True)
    logits = D(real)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.square().sum(dim=[-3, -2, -1])


# ---------------------------------------------------------------------------------------
# the bank: one or more GANs of one config, stepped as one grouped network
# ---------------------------------------------------------------------------------------
def _dtype(precision: str) -> torch.dtype:
    return torch.float64 if precision == "fp64" else torch.float32


class BankTrainer:
    """The GANs of one run (``members``: albedo, shading, specular, or one of them, or joint)
    as one grouped G, D and G_ema with one fused Adam each, and the four step functions.

    ``real`` is the fixed (B, N, C, H, W) buffer the data pool fills before each iteration.
    :meth:`draw_random` fills the fixed random buffers (per member, from its own generator,
    so a member's numbers do not depend on the others); then :attr:`g`, :attr:`d`, :attr:`r1`
    and :attr:`ema` run the steps (CUDA graphs where enabled). It is also the checkpoint unit:
    weights are saved per member under the keys of single networks (``albedo.G.…``)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, real: Tensor, graphs: bool = False):
        self.cfg, self.device, self.real = cfg, device, real
        self.members = cfg.model_names()
        self.name = cfg.component
        self.dtype = _dtype(cfg.precision)
        gs, ds = [], []
        for name in self.members:
            with torch.random.fork_rng(devices=[]):  # the same initial weights on every device, as alone
                torch.manual_seed(model_seed(cfg.seed, name))
                gs.append(Generator(cfg.generator_config(name)))
                ds.append(Discriminator(cfg.discriminator_config(name)))
        self.G = FusedGenerator.from_modules(gs).to(device, self.dtype).train()
        self.D = FusedDiscriminator.from_modules(ds).to(device, self.dtype).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.g_params, self.d_params = list(self.G.parameters()), list(self.D.parameters())
        c = cfg.r1_interval / (cfg.r1_interval + 1)
        self.opt_G = make_adam(self.g_params, cfg.lr, (cfg.beta1, cfg.beta2), 1e-8, device, cfg.adam)
        self.opt_D = make_adam(self.d_params, cfg.lr * c, (cfg.beta1 ** c, cfg.beta2 ** c), 1e-8, device, cfg.adam)
        self.gens = [torch.Generator(device=device).manual_seed(model_seed(cfg.seed, n)) for n in self.members]
        self._make_random_buffers()
        n = len(self.members)
        self.stats = {k: torch.zeros(n, dtype=torch.float64, device=device) for k in LOSS_KEYS}
        self.counts = {k: 0 for k in LOSS_KEYS}
        self.nimg = torch.zeros((), dtype=torch.float64, device=device)  # images seen (with --init-from's): EMA ramp-up
        self.layer_index = torch.arange(self.G.num_ws, dtype=self.dtype, device=device)
        self.autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False))
                         if cfg.precision == "bf16" else contextlib.nullcontext)
        self.g = StepGraph(self.g_step, self.state_tensors, graphs)
        self.d = StepGraph(self.d_step, self.state_tensors, graphs)
        self.r1 = StepGraph(self.r1_step, self.state_tensors, graphs)
        self.ema = StepGraph(self.ema_step, self.state_tensors, graphs)

    # -- random inputs ----------------------------------------------------------------------
    def _make_random_buffers(self) -> None:
        """One row of normals and one of uniforms per member, and views of them in the
        layout the networks take (B, N, ...): z, noise maps, mixing cutoffs, for G and D."""
        b, n, zd = self.cfg.batch, len(self.members), self.cfg.z_dim
        nz = (2 if self.cfg.style_mixing_prob > 0 else 1) * b
        shapes = [s[-2:] for s in self.G.noise_shapes()]
        per_step = nz * zd + b * sum(h * w for h, w in shapes)
        self.normal = torch.empty(n, 2 * per_step, dtype=self.dtype, device=self.device)
        self.uniform = torch.empty(n, 4 * b, dtype=self.dtype, device=self.device)

        def views(k: int) -> SimpleNamespace:
            o = k * per_step
            z = self.normal[:, o:o + nz * zd].view(n, nz, zd).transpose(0, 1)
            o += nz * zd
            noise = []
            for h, w in shapes:
                noise.append(self.normal[:, o:o + b * h * w].view(n, b, 1, h, w).transpose(0, 1))
                o += b * h * w
            u = self.uniform[:, 2 * k * b:2 * (k + 1) * b].view(n, 2, b).permute(1, 2, 0)  # (2, B, N)
            return SimpleNamespace(z=z, noise=noise, cut=u[0], mix=u[1])

        self.rand_g, self.rand_d = views(0), views(1)

    def draw_random(self) -> None:
        """Fresh random inputs for one iteration: two in-place draws per member, no host sync."""
        for i, gen in enumerate(self.gens):
            self.normal[i].normal_(generator=gen)
            self.uniform[i].uniform_(generator=gen)

    def _ws(self, r: SimpleNamespace) -> Tensor:
        """Mapped latents with style mixing: (B, N, num_ws, w_dim), or (B, N, w_dim) without mixing.
        Each sample mixes with probability ``style_mixing_prob`` at its own cutoff layer
        (uniform in 1 .. num_ws - 1): layers below the cutoff take w1, the others w2."""
        w = self.G.mapping(r.z)
        b = self.cfg.batch
        if self.cfg.style_mixing_prob <= 0:
            return w
        cutoff = torch.where(r.mix < self.cfg.style_mixing_prob, (r.cut * (self.G.num_ws - 1)).floor() + 1,
                             float(self.G.num_ws))
        below = self.layer_index < cutoff[..., None]  # (B, N, num_ws)
        return torch.where(below[..., None], w[:b, :, None], w[b:, :, None])

    # -- the four steps (no host sync in any of them) ---------------------------------------
    def g_step(self) -> None:
        with self.autocast():
            img = self.G.synthesis(self._ws(self.rand_g), noise=self.rand_g.noise)
            logits = self.D(img)
        loss = F.softplus(-logits.float()).mean(dim=(0, 2))  # (N,): one loss per member
        adam_step(self.opt_G, self.g_params, torch.autograd.grad(loss.sum(), self.g_params))
        self.stats["loss_G"].add_(loss.detach())

    def d_step(self) -> None:
        with torch.no_grad(), self.autocast():
            ws = self._ws(self.rand_d)
            fake = self.G.synthesis(ws, noise=self.rand_d.noise)
            w1 = ws[:, :, 0] if ws.ndim == 4 else ws
            self.G.mapping.w_avg.lerp_(w1.to(self.dtype).mean(0), 1.0 - self.G.config.w_avg_beta)
        with self.autocast():
            fake_logits, real_logits = paired_logits(self.D, fake, self.real)
        fake_logits, real_logits = fake_logits.float(), real_logits.float()
        loss = F.softplus(fake_logits).mean(dim=(0, 2)) + F.softplus(-real_logits).mean(dim=(0, 2))
        adam_step(self.opt_D, self.d_params, torch.autograd.grad(loss.sum(), self.d_params))
        self.stats["loss_D"].add_(loss.detach())
        self.stats["D_real"].add_(real_logits.detach().mean(dim=(0, 2)))
        self.stats["D_fake"].add_(fake_logits.detach().mean(dim=(0, 2)))

    def r1_step(self) -> None:
        cfg = self.cfg
        penalty = r1_penalty(self.D, self.real)  # (B, N), float32 or float64
        loss = (penalty * (cfg.r1_gamma / 2)).mean(0) * cfg.r1_interval
        grads = torch.autograd.grad(loss.sum(), self.d_params, allow_unused=True)  # D's output bias: None, skipped
        adam_step(self.opt_D, self.d_params, grads)
        self.stats["r1_penalty"].add_(penalty.detach().mean(0))

    @torch.no_grad()
    def ema_step(self) -> None:
        cfg = self.cfg
        if cfg.ema_rampup is None:
            ema_nimg = torch.full_like(self.nimg, cfg.ema_kimg * 1000)
        else:
            ema_nimg = (self.nimg * cfg.ema_rampup).clamp(max=cfg.ema_kimg * 1000)
        beta = torch.pow(0.5, cfg.batch / ema_nimg.clamp(min=1e-8))
        update_ema(self.G_ema, self.G, beta.to(self.dtype))
        self.nimg.add_(cfg.batch)

    def step(self, r1: bool) -> None:
        """One iteration after the batch is in :attr:`real`: random draws, G, D, R1 if ``r1``, EMA."""
        self.draw_random()
        self.g()
        self.d()
        if r1:
            self.r1()
        self.ema()
        self.counts["loss_G"] += 1
        self.counts["loss_D"] += 1
        self.counts["D_real"] += 1
        self.counts["D_fake"] += 1
        self.counts["r1_penalty"] += int(r1)

    def state_tensors(self) -> list[Tensor]:
        """Every tensor a step mutates (restored after a CUDA graph's warm-up runs)."""
        mods = (self.G, self.D, self.G_ema)
        return [*(t for m in mods for t in (*m.parameters(), *m.buffers())), *optimizer_tensors(self.opt_G),
                *optimizer_tensors(self.opt_D), *self.stats.values(), self.nimg]

    # -- losses ------------------------------------------------------------------------------
    def pop_losses(self) -> dict[str, dict[str, float]]:
        """Per member, the mean of each loss since the last call (one read-back for all)."""
        keys = [k for k in LOSS_KEYS if self.counts[k]]
        if not keys:
            return {}
        values = torch.stack([self.stats[k] for k in keys]).tolist()
        out = {m: {k: values[i][j] / self.counts[k] for i, k in enumerate(keys)} for j, m in enumerate(self.members)}
        for k in LOSS_KEYS:
            self.stats[k].zero_()
            self.counts[k] = 0
        return out

    # -- members as single networks (checkpoints, export, --init-from) ----------------------
    def singles(self) -> list[tuple[Generator, Discriminator]]:
        """(G_ema, D) of each member as single networks (copies), for grids and export."""
        return list(zip(self.G_ema.unstack(), self.D.unstack()))

    def tensors(self) -> dict[str, Tensor]:
        out = {}
        for part in ("G", "D", "G_ema"):
            for name, sd in zip(self.members, unstack_state_dict(getattr(self, part).state_dict())):
                out.update({f"{name}.{part}.{k}": v.detach().cpu().contiguous() for k, v in sd.items()})
        return out

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        for part in ("G", "D", "G_ema"):
            sds = []
            for name in self.members:
                prefix = f"{name}.{part}."
                sds.append({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            getattr(self, part).load_state_dict(stack_state_dicts(sds), strict=True)

    def state(self) -> dict[str, Any]:
        return {"opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                "gens": [g.get_state() for g in self.gens], "nimg": self.nimg.cpu(),
                "stats": {k: v.cpu() for k, v in self.stats.items()}, "counts": dict(self.counts)}

    def load_state(self, state: dict[str, Any]) -> None:
        for opt, key in ((self.opt_G, "opt_G"), (self.opt_D, "opt_D")):
            lr = opt.param_groups[0]["lr"]
            opt.load_state_dict(state[key])
            opt.param_groups[0]["lr"] = lr  # the tensor on this device (a checkpointed run keeps --lr)
        for g, s in zip(self.gens, state["gens"]):
            g.set_state(s)
        with torch.no_grad():
            self.nimg.copy_(state["nimg"])
            for k, v in state["stats"].items():
                self.stats[k].copy_(v)
        self.counts = {k: int(state["counts"].get(k, 0)) for k in LOSS_KEYS}

    def init_from(self, folder: Path, dataset: str, label: str | None = None) -> dict[str, dict[str, Any]]:
        """Continue the exported priors in ``folder``: G and G_ema from each member's exported
        EMA generator, D from its discriminator; returns each member's initialisation record
        (``label``: how the history names the source, e.g. ``shipped``; default the folder)."""
        from ..training.sidecar import init_record
        from .bank import load_prior

        priors = [load_prior(dataset, name, self.device, folder) for name in self.members]
        for p, name in zip(priors, self.members):
            wanted = (self.cfg.generator_config(name), self.cfg.discriminator_config(name))
            diff = [f"{k}: {a!r} there, {want.to_dict().get(k)!r} here" for have, want in zip((p.g_config, p.d_config), wanted)
                    for k, a in have.to_dict().items() if want.to_dict().get(k) != a]
            if diff:
                raise JoinbenchError(f"--init-from {folder}: the {dataset} {name} prior has another network "
                                     f"({'; '.join(diff)}); train with its settings (e.g. --resolution "
                                     f"{p.g_config.resolution}) or drop --init-from.")
        with torch.no_grad():
            g = stack_state_dicts([p.G.state_dict() for p in priors])
            for module, sd in ((self.G, g), (self.G_ema, g), (self.D, stack_state_dicts([p.D.state_dict() for p in priors]))):
                module.load_state_dict(sd, strict=True)
        init = {name: init_record(p.sidecar, label or folder, sha256=p.sha256) for p, name in zip(priors, self.members)}
        self.nimg.fill_(max(r["images_seen"] for r in init.values()))
        return init


# ---------------------------------------------------------------------------------------
# one run's engine: the data pool and the bank
# ---------------------------------------------------------------------------------------
def use_graphs(cfg: TrainConfig, device: torch.device) -> bool:
    """``--cuda-graphs``: on by default with CUDA; asked for elsewhere, a one-line error."""
    if cfg.cuda_graphs and device.type != "cuda":
        raise JoinbenchError("--cuda-graphs needs a CUDA device; drop it or use --device cuda.")
    return device.type == "cuda" if cfg.cuda_graphs is None else bool(cfg.cuda_graphs)


class PriorTraining:
    """The engine of one ``train prior`` run (a :class:`~joinbench.training.loop.Trainer`):
    the device-resident pool of encoded training images and the :class:`BankTrainer`.

    ``cfg`` must be resolved (:meth:`TrainConfig.resolved`). Building it renders the pool;
    :meth:`iteration` is one training iteration. The pool keeps, per image, the encoded
    components the run trains on (9 channels for ``all`` and ``joint``) in [-1, 1]."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.dataset = create_training_dataset(cfg.dataset, cfg.resolution, cfg.forward_model)
        fm = self.dataset.forward_model
        dtype = _dtype(cfg.precision)
        encoded = "joint" if cfg.component in ("all", "joint") else cfg.component
        self.data = DataPool(self.dataset, lambda b: {"x": encode_batch(b, fm, encoded).to(dtype)}, device, cfg.seed,
                             cfg.resolution, cfg.batch, cfg.pool_size, cfg.pool_refresh, cfg.pool_reuse, cfg.render_chunk)
        channels = 9 if encoded == "joint" else 3
        self.batch_x = torch.empty(cfg.batch, channels, cfg.resolution, cfg.resolution, dtype=dtype, device=device)
        n = len(cfg.model_names())
        real = self.batch_x.view(cfg.batch, n, channels // n, cfg.resolution, cfg.resolution)
        self.bank = BankTrainer(cfg, device, real, use_graphs(cfg, device))
        self.units = [self.bank]

    def iteration(self, step: int = 0, progress: float = 0.0) -> None:
        """One training iteration: a batch from the pool into the fixed buffer, then the bank's
        step (R1 on every ``r1_interval``-th iteration). No host sync."""
        cfg = self.cfg
        self.data.draw_into({"x": self.batch_x})
        self.bank.step(r1=cfg.r1_gamma > 0 and step % cfg.r1_interval == 0)

    def pop_losses(self) -> dict[str, dict[str, float]]:
        return self.bank.pop_losses()

    def grid_latents(self) -> Tensor:
        return torch.randn(self.cfg.grid_size, self.cfg.z_dim, generator=torch.Generator().manual_seed(self.cfg.seed + 12345))

    def save_reals(self, out: Path) -> None:
        """A grid of the first pooled training images per member (``reals-<name>.png``)."""
        x = self.data.data["x"][: self.cfg.grid_size]
        n = len(self.bank.members)
        for i, name in enumerate(self.bank.members):
            save_grid(x.view(x.shape[0], n, -1, *x.shape[-2:])[:, i], name, out / f"reals-{name}.png")

    def snapshot(self, out: Path, clock) -> None:
        z = self.grid_latents()
        for name, G in zip(self.bank.members, self.bank.G_ema.unstack()):
            save_grid(sample_images(G, z), name, out / f"samples-{name}-{clock.cur_nimg // 1000:06d}.png")


# ---------------------------------------------------------------------------------------
# grids and export
# ---------------------------------------------------------------------------------------
def save_grid(images: Tensor, name: str, path: Path, per_row: int = 8) -> Path:
    from ..viz import grid_image, save_image_atomic

    rows = grid_rows(to_display(images).cpu(), name, per_row)
    return save_image_atomic(grid_image(rows, cell=max(64, images.shape[-1])), path)


@torch.no_grad()
def sample_images(G: Generator, z: Tensor, truncation_psi: float = 1.0, noise_mode: str = "const", chunk: int = 64) -> Tensor:
    p = next(G.parameters())
    return torch.cat([G(z[i:i + chunk].to(p.device, p.dtype), truncation_psi, noise_mode=noise_mode).float()
                      for i in range(0, z.shape[0], chunk)])


def _state_fp16(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in module.state_dict().items()}


def export_prior(out: Path, dataset: str, name: str, G_ema: Generator, D: Discriminator,
                 info: dict[str, Any]) -> Path:
    """Write ``<dataset>-<name>-G/D.safetensors`` (float16) and the sidecar ``<dataset>-<name>.json``."""
    from safetensors.torch import save

    from ..env import sha256_file, write_atomic, write_json

    stem = export_stem(dataset, name)
    files = {"G": f"{stem}-G.safetensors", "D": f"{stem}-D.safetensors"}
    meta = {"format": FORMAT, "dataset": dataset, "component": name, "dtype": "float16"}
    hashes = {}
    for part, module in (("G", G_ema), ("D", D)):
        path = write_atomic(Path(out) / files[part], save(_state_fp16(module), metadata={**meta, "part": part}))
        hashes[part] = sha256_file(path)
    sidecar = {
        "format": FORMAT, "version": 1, "dataset": dataset, "component": name,
        "channels": list(COMPONENTS) if name == "joint" else [name],
        "resolution": G_ema.resolution, "img_channels": G_ema.img_channels, "dtype": "float16",
        "output": "G(z) is about [-1, 1]; the encoded component is (G(z) + 1) / 2 clipped to [0, 1]",
        "generator": G_ema.config.to_dict(), "discriminator": D.config.to_dict(),
        "params": {"G": count_parameters(G_ema), "D": count_parameters(D)},
        "files": files, "sha256": hashes,
        "fd": None, "fd_floor": None, "fd_ratio": None, "fd_n": None, "fd_components": None, "fd_method": FD_METHOD,
        **info,
    }
    return write_json(Path(out) / f"{stem}.json", sidecar)


# ---------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------
def train_prior(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train (or resume) the prior(s) of ``cfg``; returns the output folder holding the export."""
    from ..env import resolve_device
    from ..training.loop import RunSpec, TrainingRun
    from ..training.sidecar import resolve_init_from, run_record

    cfg = cfg.resolved()
    device = resolve_device(cfg.device)
    defaults = pool_defaults(device, cfg.batch)
    cfg.pool_size = cfg.pool_size or defaults["size"]
    cfg.render_chunk = cfg.render_chunk or defaults["render_chunk"]
    init_folder = resolve_init_from(cfg.init_from) if cfg.init_from is not None else None
    use_graphs(cfg, device)
    run = TrainingRun(cfg.out, resume)
    if run.resuming and run.saved_init and cfg.init_from is None:  # --resume of an --init-from run needs no flag
        cfg.init_from, cfg.ema_rampup = run.saved["config"].get("init_from"), None
    run.check_settings(cfg, _RESUME_KEYS, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    training = PriorTraining(cfg, device)
    init = run.saved_init
    if not run.resuming:
        if init_folder is not None:
            init = training.bank.init_from(init_folder, cfg.dataset, cfg.init_from)
        training.save_reals(run.out)
    spec = RunSpec(kimg=cfg.kimg, batch=cfg.batch, desc=f"{cfg.dataset}/{cfg.component}", device=device,
                   minutes=cfg.minutes, log_kimg=cfg.log_kimg, snapshot_kimg=cfg.snapshot_kimg, progress=cfg.progress,
                   scalars={"config": {**cfg.to_dict(), "device_type": device.type}, "init": init},
                   postfix=lambda last: f"x{len(last)} models" if len(last) > 1 else "")
    done = run.train(training, spec)

    fm = training.dataset.forward_model
    train = {k: v for k, v in cfg.to_dict().items() if k not in ("out", "progress")}
    for name, (G, D) in zip(training.bank.members, training.bank.singles()):
        info = run_record(done.cur_nimg, done.steps, done.wall_s, device, done.log_path, train, (init or {}).get(name))
        export_prior(run.out, cfg.dataset, name, G, D, {**info, "forward_model": fm.name, "encoding": fm.describe(),
                                                        "losses": done.last_losses.get(name, {})})
    return run.out


__all__ = [
    "BankTrainer",
    "PriorTraining",
    "TRAIN_TARGETS",
    "TrainConfig",
    "d_loss",
    "ema_beta",
    "export_prior",
    "paired_logits",
    "r1_penalty",
    "sample_images",
    "train_prior",
    "update_ema",
]
