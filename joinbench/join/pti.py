"""JoIN stage 2: pivotal tuning (PTI) of the GAN bank on each image, with a local
discriminator loss.

Stage 1 leaves, per image, one latent per generator (the *pivot*) and that image's noise
maps. Stage 2 keeps both fixed and fine-tunes the generators' weights so the composite
reproduces the image even where the priors cannot (the sim-to-real gap). Per step and
image ``i``::

    x_c    = G_c^i(w_c^i, noise_c^i)                      image i's copy of generator c
    I      = f(decode(clip((x_a + 1) / 2)), ...)          as in stage 1
    L_i    = perceptual_weight * LPIPS-VGG(I, I*_i) + pixel_weight * MSE(I, I*_i)
           + sum_c d_c * [ softplus(-D_c(x_c))                                  the pivot
                           + mean_j softplus(-D_c(G_c^i(0.9 w_c^i + 0.1 w_j))) ]  its neighbourhood
    L      = sum_i L_i

with ``w_j = mapping_c(z_j, psi=0.7)`` for ``disc_samples`` = 8 fresh ``z_j`` per step and
``D_c`` the component's own frozen discriminator (non-saturating generator loss). The
discriminator term is the paper's *local discriminator loss*: it keeps each tuned
generator on its component's distribution around the pivot, so tuning fits the image
without turning the shading generator into a generator of "whatever explains the image".

**Per-image weights.** Every image gets its own copy of each generator's tuned
parameters. The bank runs as one fused network (:mod:`joinbench.gan.fused`), and the copies
fold images into its group dimension: for B images and N generators the fused network
runs as a group of B * N members, one grouped kernel per layer for every image and
generator, called with :func:`torch.func.functional_call` (``batching="vmap"``, the name
kept from the torch.func.vmap implementation it replaces: one batched call); ``batching="loop"``
evaluates the same copies one image at a time (identical results up to rounding; tested).
The loss is a sum of per-image terms, Adam is element-wise, the random latents of a step are
shared by all images, and the discriminator's minibatch-std groups hold one image's samples
only, so an image follows the same trajectory alone or in a batch. The copies (and Adam's
state) exist only inside :meth:`PivotalTuner.tune`: they are freed when it returns unless
``save_tuned`` asks for them. The bank's own generators are never modified.

**The engine** is stage 1's (:mod:`joinbench.join.engine`): every image's copies of every
generator are one tensor (B, N, P), so the gradient is one tensor, the finiteness check
one reduction, Adam torch's fused Adam on one tensor, and freezing an image one masked copy
(per-parameter checks over 198 tensors cost ~1,650 launches per step before). The random
latents of every step are drawn before the loop (the same CPU generator and order) and,
when the mapping is not tuned, mapped in one call; a step indexes them with a step counter
on the device. So a step has no host synchronisation and, on CUDA, is captured once as a
CUDA graph (one graph for steps with the discriminator term, one without) and replayed.

Choices where the sources are silent or differ (see ``reference/join-method.md`` section 5):

* **steps = 300.** The authors' step count is undefined in their released script (its lr
  schedule's denominator hints at ~2000 at 512 px). PTI (Roich et al.) tunes at most 350
  steps at lr 3e-4; with the authors' 3x larger lr 1e-3 and priors of 64 px, 300 steps
  reach the point where the reconstruction curve flattens, at a cost comparable to stage
  1's 1000 latent steps. ``early_stop_lpips`` (PTI uses 0.06) ends an image earlier.
* **lr schedule**: the authors reuse the projector's ramp (5% warm-up, cosine ramp-down
  over the last 25%), so the same :func:`~joinbench.join.stage1.lr_ramp` runs over the
  PTI steps.
* **layers = "synthesis"** (every synthesis-network parameter). The authors tune all
  generator parameters, mapping included (``layers="all"``). With fixed pivots the mapping
  network only produces the discriminator term's random latents, so tuning it lets the
  generator lower that term by moving the random latents instead of by staying realistic,
  and it changes the distribution later random samples come from. Presets: ``all``,
  ``synthesis``, ``affine`` (style affines only), ``torgb``, ``convs``; or a comma list of
  parameter-name prefixes (``synthesis.convs.8,synthesis.torgbs.4``).
* **Random latents**: ``z`` from a CPU generator seeded ``seed``, one draw per step and
  generator, shared by every image of the batch (so results do not depend on the batch),
  mapped by the generator's mapping network at psi = 0.7 (the authors' value).
* **Noise**: the pivot's stage-1 noise maps, for the pivot and its neighbours alike (the
  authors' stage 1 writes the optimised noise into the generator's constant buffers, which
  their PTI then uses for every synthesis).
* **The joint prior** (one 9-channel generator and discriminator, "joint"): the single
  generator is tuned; its discriminator weight ``disc_joint`` = 2e-3, the sum of the three
  per-component weights, so the ablation changes the prior and not the strength of the
  regularisation.
* ``disc_every`` > 1 evaluates the discriminator term only every k-th step, scaled by k
  (lazy regularisation, as StyleGAN2 does with R1): the term costs ~9 generator and
  discriminator passes per component and step, by far the largest cost on a CPU.
* An image whose loss or gradient turns non-finite is frozen at its last finite weights
  and reported in ``errors``; an image that reaches ``early_stop_lpips`` is frozen there
  (the threshold is checked before each update, as in PTI). Frozen images' weights are
  restored after every later Adam step. The loop ends once every image is frozen, which it
  checks at log intervals (reading the device there only): up to ``log_every - 1`` steps
  may run with nothing left to change.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..env import synchronize
from ..errors import JoinbenchError
from ..forward import COMPONENTS, ForwardModel
from ..gan.model import mbstd_group
from ..progress import ProgressCallback
from .engine import ImageVariables, lr_schedule, run_steps, step_graph
from .losses import PERCEPTUAL_LOSSES, PerceptualLoss, pixel_mse

LAYER_PRESETS: dict[str, Callable[[str], bool]] = {
    "all": lambda name: True,
    "synthesis": lambda name: name.startswith("synthesis."),
    "affine": lambda name: name.startswith("synthesis.") and ".affine." in name,
    "torgb": lambda name: name.startswith("synthesis.torgbs."),
    "convs": lambda name: name.startswith("synthesis.convs."),
}
BATCHING = ("vmap", "loop")
DISC_WEIGHT_KEYS = {"albedo": "disc_albedo", "shading": "disc_shading", "specular": "disc_specular",
                    "joint": "disc_joint"}


@dataclass
class PTIConfig:
    """Hyper-parameters of stage 2 (the method exposes each as ``pti_<name>``)."""

    steps: int = 300  # see the module docstring for why
    lr: float = 1e-3  # the authors' pti_lr
    betas: tuple[float, float] = (0.9, 0.999)
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    perceptual: str = "lpips-vgg"  # lpips-vgg | none
    perceptual_weight: float = 1.0
    pixel_weight: float = 1.0
    disc: bool = True  # the local discriminator loss (False: join-pti-nodisc)
    disc_albedo: float = 5e-4
    disc_shading: float = 1e-3
    disc_specular: float = 5e-4
    disc_joint: float = 2e-3  # the joint prior's one discriminator: the sum of the three
    disc_samples: int = 8  # random neighbours of the pivot per step
    disc_every: int = 1  # evaluate the discriminator term every k steps (scaled by k)
    mix: float = 0.1  # neighbour = (1 - mix) * pivot + mix * w_rand
    mix_psi: float = 0.7  # truncation of w_rand
    early_stop_lpips: float | None = None  # stop an image once its LPIPS-VGG is at most this (PTI: 0.06)
    layers: str = "synthesis"  # all | synthesis | affine | torgb | convs | comma list of name prefixes
    batching: str = "vmap"  # vmap (one batched call for all images) | loop (one image at a time)
    seed: int = 0  # random latents of the discriminator term
    log_every: int = 10  # loss-curve sampling (steps)

    def disc_weight(self, key: str) -> float:
        """The discriminator weight of generator ``key`` (0 when the term is off)."""
        return float(getattr(self, DISC_WEIGHT_KEYS[key])) if self.disc else 0.0

    def validate(self) -> None:
        """One-line errors for settings that cannot run."""
        if self.steps < 1:
            raise JoinbenchError(f"PTI steps must be at least 1, got {self.steps} (use pti=false to skip stage 2).")
        if not self.lr > 0:
            raise JoinbenchError(f"PTI lr must be positive, got {self.lr}.")
        if self.perceptual not in PERCEPTUAL_LOSSES:
            raise JoinbenchError(f"Unknown PTI perceptual loss {self.perceptual!r}; use one of {', '.join(PERCEPTUAL_LOSSES)}.")
        if self.batching not in BATCHING:
            raise JoinbenchError(f"Unknown PTI batching {self.batching!r}; use vmap or loop.")
        if self.disc_samples < 0 or self.disc_every < 1:
            raise JoinbenchError(f"PTI disc_samples must be >= 0 and disc_every >= 1, got {self.disc_samples} and "
                                 f"{self.disc_every}.")
        if not 0.0 <= self.mix <= 1.0:
            raise JoinbenchError(f"PTI mix must lie in [0, 1], got {self.mix}.")
        if self.early_stop_lpips is not None and self.perceptual != "lpips-vgg":
            raise JoinbenchError("PTI early_stop_lpips needs the LPIPS term; set pti_perceptual=lpips-vgg or "
                                 "pti_early_stop_lpips=none.")
        if not str(self.layers).strip():
            raise JoinbenchError(f"PTI layers is empty; use one of {', '.join(LAYER_PRESETS)} or name prefixes.")


def select_parameters(G: nn.Module, layers: str) -> list[str]:
    """Names of ``G``'s parameters that ``layers`` (a preset or a comma list of prefixes) tunes."""
    names = [n for n, _ in G.named_parameters()]
    spec = str(layers).strip()
    if spec in LAYER_PRESETS:
        chosen = [n for n in names if LAYER_PRESETS[spec](n)]
    else:
        prefixes = [p.strip() for p in spec.split(",") if p.strip()]
        for p in prefixes:
            if not any(n.startswith(p) for n in names):
                raise JoinbenchError(f"PTI layers: no generator parameter starts with {p!r}; use a preset "
                                     f"({', '.join(LAYER_PRESETS)}) or prefixes such as synthesis.convs.2, "
                                     f"synthesis.torgbs.1.")
        chosen = [n for n in names if any(n.startswith(p) for p in prefixes)]
    if not chosen:
        raise JoinbenchError(f"PTI layers={layers!r} selects no parameters; use one of {', '.join(LAYER_PRESETS)}.")
    return chosen


@dataclass
class PTIResult:
    """What stage 2 produced for a batch (tensors detached, on the tuning device)."""

    encoded: dict[str, Tensor]  # per component, encoded space [0, 1], (B, 3, R, R)
    linear: dict[str, Tensor]  # decoded with the [0.01, 0.99] clip
    rerender: Tensor  # f(linear)
    loss_curve: list[list[float]]  # per image, total loss at loss_steps (until it stopped)
    loss_steps: list[int]
    final_terms: dict[str, list[float]]  # per term, per image, at each image's last evaluated step
    stop_steps: list[int]  # per image: the step it stopped at (= steps when it ran to the end)
    errors: list[str | None]
    seconds: float
    steps: int  # steps the loop ran
    setup_seconds: float
    tuned_names: dict[str, list[str]]  # generator key -> tuned parameter names
    tuned: dict[str, dict[str, Tensor]] | None = None  # key -> name -> (B, ...) when save_tuned
    # per generator key: the stage-1 pivots it was tuned at (with tuned, re-synthesis needs nothing else
    # but the stage-1 noise)
    pivots: dict[str, Tensor] = field(default_factory=dict)


def tuned_generator(G: nn.Module, tuned: Mapping[str, Tensor], index: int) -> nn.Module:
    """A frozen copy of generator ``G`` carrying image ``index``'s tuned weights (for
    sampling, relighting or saving one image's generator)."""
    import copy

    out = copy.deepcopy(G)
    with torch.no_grad():
        params = dict(out.named_parameters())
        for name, value in tuned.items():
            params[name].copy_(value[index])
    return out.eval().requires_grad_(False)


class PivotalTuner:
    """Stage 2 for one GAN bank and forward model; reuse it across batches.

    ``bank`` maps generator keys to priors (``bank[key].G`` / ``.D`` / ``.channels`` /
    ``.to_encoded``); the tuned keys are ``joint`` when the bank holds the joint prior,
    else the forward model's components. ``setup`` fuses the generators and the
    discriminators (:attr:`G`, :attr:`D`, members in :attr:`keys` order) in the generators'
    device and dtype; :attr:`D` may be replaced before (any module with a fused
    discriminator's ``features(images (n, N, C, R, R))`` and ``logits(features,
    mbstd_group_size) -> (n, N, 1)``). ``cuda_graphs``: on CUDA, capture the step once and
    replay it."""

    def __init__(self, bank, forward_model: ForwardModel, config: PTIConfig, device: torch.device | str = "cpu",
                 cuda_graphs: bool = True):
        config.validate()
        self.cfg = config
        self.fm = forward_model
        self.device = torch.device(device)
        self.cuda_graphs = cuda_graphs
        keys = list(bank.keys()) if hasattr(bank, "keys") else list(bank)
        if "joint" in keys:
            self.keys = ["joint"]
        else:
            missing = [c for c in forward_model.components if c not in keys]
            if missing:
                raise JoinbenchError(f"PTI needs a {' and '.join(missing)} prior for forward model "
                                     f"{forward_model.name!r}; the bank holds {', '.join(keys)}.")
            self.keys = [c for c in COMPONENTS if c in forward_model.components]
        self.priors = {k: bank[k] for k in self.keys}
        covered = [c for k in self.keys for c in self.priors[k].channels]
        if not set(forward_model.components) <= set(covered):
            raise JoinbenchError(f"The bank's generators give {', '.join(covered)}; forward model "
                                 f"{forward_model.name!r} needs {', '.join(forward_model.components)}.")
        tuned = select_parameters(self.priors[self.keys[0]].G, config.layers)  # one config: the same names for all
        self.mbstd_group_size = self.priors[self.keys[0]].d_config.mbstd_group_size
        self.names = {k: tuned for k in self.keys}
        self.G: nn.Module | None = None
        self.D: nn.Module | None = None
        self.perceptual: PerceptualLoss | None = None
        self.setup_seconds = 0.0
        self._ready = False

    def setup(self) -> "PivotalTuner":
        if self._ready:
            return self
        from ..gan.bank import fuse_priors

        t0 = time.perf_counter()
        self.G = fuse_priors(self.priors)  # in the generators' device and dtype (stage 1 may have moved them)
        ref = next(self.G.parameters())
        if self.D is None:
            self.D = fuse_priors(self.priors, "D")
        self.D.to(ref.device, ref.dtype).eval().requires_grad_(False)
        self.perceptual = PerceptualLoss(self.cfg.perceptual, self.device, ref.dtype)
        synchronize(self.device)
        self.setup_seconds = time.perf_counter() - t0
        self._ready = True
        return self

    # -- per-image generators ------------------------------------------------------------
    def _synthesise(self, params: Mapping[str, Tensor], ws: Tensor, noise: Sequence[Tensor] | None) -> Tensor:
        """Synthesis of the bank folded over images: ``params`` with a leading group dim of
        B * N (image-major), ws (S, B * N, ...), noise per layer (1, B * N, 1, r, r) or None
        (the generators' constant buffers) -> (S, B * N, C, R, R)."""
        syn = {n[len("synthesis."):]: v for n, v in params.items() if n.startswith("synthesis.")}
        return functional_call(self.G.synthesis, syn, (ws,), {"noise": noise, "noise_mode": "const"})

    def _disc_term(self, images: Tensor, weights: Tensor) -> Tensor:
        """Per image (B,): sum_c d_c [softplus(-D_c(pivot)) + mean_j softplus(-D_c(neighbour_j))];
        images (S, B, N, C, R, R), S = 1 + neighbours. One pass through the discriminators'
        trunk for every sample; their minibatch-std groups never mix images: the pivot alone
        (a group of 1), the neighbours stacked sample-major (groups of each image's own samples)."""
        s, b = images.shape[:2]
        x = self.D.features(images.flatten(0, 1))  # (S * B, N, ...)
        term = F.softplus(-self.D.logits(x[:b], 1))[..., 0]  # (B, N)
        if s > 1:
            logits = self.D.logits(x[b:], mbstd_group(s - 1, self.mbstd_group_size))  # ((S - 1) * B, N, 1)
            term = term + F.softplus(-logits).view(s - 1, b, -1).mean(0)
        return (term * weights).sum(1)

    def _components(self, outputs: Tensor) -> dict[str, Tensor]:
        """Generator outputs (B, N, C, R, R) -> encoded components per name."""
        priors = list(self.priors.values())
        x = priors[0].to_encoded(outputs)
        enc = {}
        for n, p in enumerate(priors):
            for c, e in p.split(x[:, n]).items():  # a joint prior's 9 channels -> its components
                if c in self.fm.components:  # two-component model: a joint prior's specular is ignored
                    enc[c] = e
        return enc

    # -- the loop -----------------------------------------------------------------------
    def start(self, target: Tensor, pivots: Mapping[str, Tensor],
              noise: Mapping[str, Sequence[Tensor]] | None = None) -> "PTIRun":
        """Stage 2 of display images ``target`` (B, 3, R, R) at its first step: per-image
        copies of the generators at the stage-1 ``pivots`` ({key: (B, w_dim) or (B, num_ws,
        w_dim)}) and ``noise`` ({key: per-layer (B, 1, r, r)}; None: the generators' constant
        buffers)."""
        self.setup()
        for k in self.keys:
            if k not in pivots:
                raise JoinbenchError(f"PTI needs a pivot latent for {k!r}; stage 1 gave {', '.join(pivots)}.")
        return PTIRun(self, target, pivots, noise)

    def tune(self, target: Tensor, pivots: Mapping[str, Tensor], noise: Mapping[str, Sequence[Tensor]] | None = None,
             save_tuned: bool = False, progress: ProgressCallback | None = None) -> PTIResult:
        """Tune per-image copies of the generators on ``target`` (see :meth:`start`);
        ``progress`` receives a "pti" event after every step."""
        with torch.enable_grad():
            return self.start(target, pivots, noise).run(save_tuned, progress)

    def describe(self) -> dict[str, Any]:
        G = self.priors[self.keys[0]].G
        return {"generators": self.keys, "layers": self.cfg.layers,
                "tuned_parameters": {k: sum(G.get_parameter(n).numel() for n in v) for k, v in self.names.items()},
                "disc_weights": {k: self.cfg.disc_weight(k) for k in self.keys}}


class PTIRun:
    """One batch being tuned: every image's copies of every generator's tuned parameters in
    one tensor (B, N, P) (:attr:`vars`), the pivots, noise and random latents, and the step."""

    def __init__(self, tuner: PivotalTuner, target: Tensor, pivots: Mapping[str, Tensor],
                 noise: Mapping[str, Sequence[Tensor]] | None):
        cfg, G = tuner.cfg, tuner.G
        ref = next(G.parameters())
        synchronize(tuner.device)
        self.t0 = time.perf_counter()
        self.tuner, self.cfg = tuner, cfg
        self.target = target.detach().to(tuner.device, ref.dtype)
        self.batch = b = self.target.shape[0]
        self.members = n = len(tuner.keys)
        self.pivots = torch.stack([pivots[k].detach().to(tuner.device, ref.dtype) for k in tuner.keys], dim=1)
        self.noise = None  # per layer (1, B * N, 1, r, r)
        if noise is not None:
            self.noise = [torch.stack([noise[k][j].detach().to(tuner.device, ref.dtype).expand(b, -1, -1, -1)
                                       for k in tuner.keys], dim=1).view(1, b * n, *noise[tuner.keys[0]][j].shape[1:])
                          for j in range(len(noise[tuner.keys[0]]))]
        self.features = tuner.perceptual.features(self.target)
        # the tuned parameters' layout in each (image, generator) row, and everything else folded to B * N members
        params = dict(G.named_parameters())
        self.names = tuner.names[tuner.keys[0]]
        self.shapes = [params[k].shape[1:] for k in self.names]
        fold = lambda t: t[None].expand(b, *t.shape).reshape(b * n, *t.shape[1:])
        self.fixed = {k: fold(v.detach()) for k, v in [*G.named_parameters(), *G.named_buffers()] if k not in self.names}
        values = torch.cat([params[k].detach()[None].expand(b, *params[k].shape).reshape(b, n, -1) for k in self.names],
                           dim=2)
        # the discriminator term: weights, and every step's random latents drawn now (same generator and order)
        self.weights = torch.tensor([cfg.disc_weight(k) * cfg.disc_every for k in tuner.keys],
                                    dtype=ref.dtype, device=tuner.device)
        self.use_disc = any(cfg.disc_weight(k) > 0 for k in tuner.keys)
        self.mapping_tuned = any(k.startswith("mapping.") for k in self.names)
        self.w_rand = self._random_latents() if self.use_disc and cfg.disc_samples > 0 else None
        self.last_terms = {t: self.target.new_zeros(b) for t in ("perceptual", "pixel", "disc", "lpips")}
        self.stop = torch.full((b,), cfg.steps, dtype=torch.long, device=tuner.device)
        schedule = lr_schedule(cfg.lr, cfg.steps, cfg.lr_rampup, cfg.lr_rampdown)
        self.vars = ImageVariables(values, schedule, tuple(cfg.betas))
        state = [self.stop, *self.last_terms.values()]
        self.graphs = {disc: step_graph(lambda d=disc: self._step(d), self.vars, tuner.cuda_graphs, state)
                       for disc in (False, True)}

    def _random_latents(self) -> Tensor:
        """Every step's random latents of the discriminator term: (steps, n, N, z_dim) z drawn
        from a CPU generator seeded ``seed`` (per step of the term, per generator with a
        weight, in order, as the loop used to draw them), mapped at ``mix_psi`` unless the
        mapping is tuned (then per image and step): (steps, n, N, w_dim)."""
        cfg, tuner = self.cfg, self.tuner
        gen = torch.Generator().manual_seed(int(cfg.seed))
        z_dim = tuner.G.z_dim
        z = torch.zeros(cfg.steps, cfg.disc_samples, self.members, z_dim)
        for step in range(0, cfg.steps, cfg.disc_every):
            for i, k in enumerate(tuner.keys):
                if cfg.disc_weight(k) > 0:
                    z[step, :, i] = torch.randn(cfg.disc_samples, z_dim, generator=gen)
        z = z.to(tuner.device, self.target.dtype)
        if self.mapping_tuned:
            return z
        with torch.no_grad():
            return tuner.G.mapping(z.flatten(0, 1), cfg.mix_psi).view(cfg.steps, cfg.disc_samples, self.members, -1)

    # -- one step ----------------------------------------------------------------------------
    def unpack(self, values: Tensor) -> dict[str, Tensor]:
        """(b, N, P) per-image copies -> {name: (b * N, *shape)} views (image-major members)."""
        rows = values.reshape(-1, values.shape[-1])
        parts = rows.split([s.numel() for s in self.shapes], dim=1)
        return {k: p if len(s) == 1 else p.view(-1, *s) for k, p, s in zip(self.names, parts, self.shapes)}

    def outputs(self, values: Tensor, pivots: Tensor, noise: list[Tensor] | None, w_rand: Tensor | None) -> Tensor:
        """Images of b images' tuned generators (S, b, N, C, R, R): the pivot, then its neighbours
        ``(1 - mix) w + mix w_rand`` for ``w_rand`` (n, N, w_dim) (or z (n, N, z_dim) when the
        mapping is tuned)."""
        b, n = values.shape[:2]
        fixed = self.fixed if b == self.batch else {k: v[:b * n] for k, v in self.fixed.items()}  # loop: b = 1
        params = {**fixed, **self.unpack(values)}
        ws = pivots[None]  # (1, b, N, ...)
        if w_rand is not None:
            if self.mapping_tuned:
                z = w_rand[:, None].expand(-1, b, -1, -1).reshape(w_rand.shape[0], b * n, -1)
                maps = {k[len("mapping."):]: v for k, v in params.items() if k.startswith("mapping.")}
                w_rand = functional_call(self.tuner.G.mapping, maps, (z, self.cfg.mix_psi)).view(-1, b, n, pivots.shape[-1])
            else:
                w_rand = w_rand[:, None]  # shared by the images
            if pivots.ndim == 4:  # W+: the random w is broadcast to every layer
                w_rand = w_rand[:, :, :, None, :]
            ws = torch.cat([ws, (1.0 - self.cfg.mix) * ws + self.cfg.mix * w_rand.to(pivots.dtype)])
        ws = ws.expand(-1, b, *ws.shape[2:]).flatten(1, 2)
        x = self.tuner._synthesise(params, ws, noise)
        return x.view(x.shape[0], b, n, *x.shape[2:])

    def objective(self, values: Tensor, target: Tensor, features: list[Tensor], pivots: Tensor,
                  noise: list[Tensor] | None, disc: bool, w_rand: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-image loss (b,) and terms for b images, with the discriminator term or not (no
        host synchronisation)."""
        cfg, tuner = self.cfg, self.tuner
        x = self.outputs(values, pivots, noise, w_rand)
        disc = tuner._disc_term(x, self.weights) if disc else target.new_zeros(target.shape[0])
        image = tuner.fm.render_encoded(tuner._components(x[0]), clip=True)
        lpips = tuner.perceptual(image, features)
        pixel = pixel_mse(image, target)
        terms = {"perceptual": lpips * cfg.perceptual_weight, "pixel": pixel * cfg.pixel_weight, "disc": disc,
                 "lpips": lpips}
        return terms["perceptual"] + terms["pixel"] + disc, terms

    def _step(self, disc: bool) -> None:
        cfg, v = self.cfg, self.vars
        w_rand = None
        if disc and self.w_rand is not None:
            w_rand = self.w_rand.index_select(0, v.step_t)[0]
        with torch.enable_grad():
            if cfg.batching == "loop":
                noise = lambda i: None if self.noise is None else [x[:, i * self.members:(i + 1) * self.members]
                                                                   for x in self.noise]
                parts = [self.objective(v.values[i:i + 1], self.target[i:i + 1], [f[i:i + 1] for f in self.features],
                                        self.pivots[i:i + 1], noise(i), disc, w_rand) for i in range(self.batch)]
                loss = torch.cat([p[0] for p in parts])
                terms = {t: torch.cat([p[1][t] for p in parts]) for t in parts[0][1]}
            else:
                loss, terms = self.objective(v.values, self.target, self.features, self.pivots, self.noise, disc,
                                             w_rand)
            with torch.no_grad():  # each image's terms at the last step it was evaluated
                for name, value in terms.items():
                    self.last_terms[name].copy_(torch.where(v.frozen, self.last_terms[name], value.detach()))
                if cfg.early_stop_lpips is not None:  # checked before the update, as in PTI
                    reached = (terms["lpips"].detach() <= cfg.early_stop_lpips) & ~v.frozen
                    self.stop.copy_(torch.where(reached, v.step_t, self.stop))
                    v.freeze(reached)
            newly = v.update(loss)
            self.stop.copy_(torch.where(newly, v.bad_step, self.stop))

    def step(self, index: int) -> None:
        """Step ``index`` (replayed from a CUDA graph where enabled)."""
        disc = self.use_disc and index % self.cfg.disc_every == 0
        self.graphs[disc]()

    # -- the loop -------------------------------------------------------------------------
    def run(self, save_tuned: bool = False, progress: ProgressCallback | None = None) -> PTIResult:
        cfg, tuner, b = self.cfg, self.tuner, self.batch
        curve, curve_steps, steps = run_steps(self.step, cfg.steps, cfg.log_every, self.vars, progress, "pti", b,
                                              stop_when_frozen=True)
        with torch.no_grad():
            enc = tuner._components(self.outputs(self.vars.values.detach(), self.pivots, self.noise, None)[0])
            linear = {c: tuner.fm.decode(c, enc[c], clip=True) for c in enc}
            rerender = tuner.fm.render_encoded(enc, clip=True)
        tuned = None
        if save_tuned:
            parts = self.vars.values.detach().split([s.numel() for s in self.shapes], dim=2)
            tuned = {k: {name: p[:, i].reshape(b, *s).clone() for name, p, s in zip(self.names, parts, self.shapes)}
                     for i, k in enumerate(tuner.keys)}
        synchronize(tuner.device)
        seconds = time.perf_counter() - self.t0
        stop = self.stop.tolist()
        per_image = torch.stack(curve, dim=1).double().cpu()
        rows = [per_image[i, [j for j, s in enumerate(curve_steps) if s <= stop[i]]].tolist() for i in range(b)]
        errors = [None if s < 0 else f"PTI: non-finite loss or gradient at step {s}; this image's generator "
                  f"weights were kept from the step before" for s in self.vars.bad_step.tolist()]
        return PTIResult(
            encoded=enc, linear=linear, rerender=rerender, loss_curve=rows, loss_steps=curve_steps,
            final_terms={k: v.double().cpu().tolist() for k, v in self.last_terms.items()}, stop_steps=stop,
            errors=errors, seconds=seconds, steps=steps, setup_seconds=tuner.setup_seconds,
            tuned_names={k: list(v) for k, v in tuner.names.items()}, tuned=tuned,
            pivots={k: self.pivots[:, i] for i, k in enumerate(tuner.keys)},
        )


__all__ = ["BATCHING", "LAYER_PRESETS", "PTIConfig", "PTIResult", "PTIRun", "PivotalTuner", "select_parameters",
           "tuned_generator"]
