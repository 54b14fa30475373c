"""JoIN stage 1: batched joint inversion of the GAN bank.

For B target images at once, each image gets its own latent per component generator (W:
one w broadcast to every layer, or W+: one per layer) and its own copy of every
generator's noise maps. The generators are frozen. Per step::

    x_c  = (G_c(w_c, noise_c) + 1) / 2                  encoded component, clipped to [0, 1]
    I    = f(decode(clip(x_a), clip(x_s), clip(x_p)))    clip = the authors' [0.01, 0.99]
    L_i  = perceptual_weight * LPIPS-VGG(I, I*)          (see joinbench.join.losses)
         + pixel_weight      * MSE(I, I*)
         + noise_weight      * sum_c R_noise(noise_c)   StyleGAN2 projector regulariser
         + reg_weight        * sum_c R_latent(w_c)      none | in-domain | knn | knn-hinge
    L    = sum_i L_i                                     summed, never averaged, over images

Because the loss is a sum of per-image terms and nothing in the generators, LPIPS or the
regularisers mixes images, image i's variables get gradients from L_i only; Adam works
element-wise, so each image follows the trajectory it would follow alone (tested). An
image whose loss or gradient turns non-finite is frozen (its gradients zeroed and its
variables restored after every later step) and reported in ``errors``; the others go on.

"The same trajectory" holds up to floating-point rounding: kernels may round differently
for different batch sizes, and the non-convex optimisation amplifies such differences (on
tiny random priors, float32 latents of an image alone vs in a batch differ by ~5e-6 after
12 steps and ~1e-2 after 100). With ``dtype="float64"`` they agree to ~1e-15 (tested to 1e-9).

**The engine** (graph-ready steps, few launches; at 64 px a GPU is bound by kernel launches,
not arithmetic):

* The component generators run as one fused bank (:class:`joinbench.gan.fused.FusedGenerator`):
  one grouped kernel per layer for all components.
* Every image's variables -- its latent and noise maps for each generator -- live in ONE
  tensor (B, N, P) (N generators, P numbers each); latents and noise maps are views of it.
  The gradient arrives as one tensor, the finiteness check is one reduction over it, Adam is
  torch's fused Adam on one tensor, and freezing an image is one masked copy.
* The noise regulariser and the noise re-normalisation run per pyramid level over all maps
  of all generators at once; the kNN search runs for all generators in one batched matmul per
  bank chunk; the target's LPIPS features are computed once.
* No host synchronisation inside a step: the learning-rate schedule is a tensor indexed by a
  step counter on the device, freezing and the first bad step are tensor masks, and losses
  are read back only at log intervals (the loss curve, the progress callback's loss). So on
  CUDA the whole step is captured once as a CUDA graph and replayed (``cuda_graphs``, on by
  default; the CPU runs the same step eagerly). :meth:`JointInverter.start` returns the
  inversion state; its :meth:`Stage1Run.step` is one step, callable on its own (profiling).

Optimisation (the StyleGAN2 projector's loop): Adam (betas 0.9, 0.999), lr 0.1, 1000
steps; lr multiplier ``0.5 - 0.5 cos(pi min(1, (1 - t) / 0.25))`` times ``min(1, t / 0.05)``
with ``t = step / steps`` (so step 0 has lr 0, as in the projector); latent-noise
perturbation off (the authors' ``initial_noise_factor = 0``); noise maps drawn N(0, 1) from a
CPU generator seeded 303 and re-normalised to zero mean, unit variance per image after
every step.

Choices where the sources differ or are silent:

* **Initialisation**: every component starts from the mean of ``mean_samples`` = 10,000
  mapped samples at ψ = ``mean_psi`` = 0.7 (z from a CPU generator seeded ``bank_seed``
  = 123), for *every* regulariser, so the ablations differ only in the regulariser (the
  authors use the 100,000-sample kNN bank mean when their kNN loss is on: the same
  expectation, a different estimate). The same mean is the in-domain regulariser's centre.
  ``init`` (e.g. from an encoder) replaces it per component. The projector's latent-noise
  perturbation is not implemented (the authors set its factor to 0).
* **Noise initialisation per image**: every image's noise maps start from the *same*
  seed-303 draw (one draw per component, in albedo, shading, specular order, broadcast to
  the batch): each image is inverted exactly as the projector inverts one image, whatever
  its position in the batch.
* **noise_weight** = 1000, the value of the authors' published inversion command and their
  plotting script (their argparse default is the projector's 1e5: ``--set noise_weight=1e5``).
  It multiplies the regulariser summed over all layers of all component generators.
* **pixel_weight** = 1: a display-space MSE next to LPIPS (PTI's ``pt_l2_lambda = 1`` with
  LPIPS at 1), which anchors absolute colour and intensity LPIPS is blind to.
* **Regulariser weights**: in-domain 1e-4 and kNN 1e-3 from the authors' command (which
  uses both at once; here one is selected); the ``knn`` (Figure 4) term has the in-domain
  term's form, so it gets the kNN weight 1e-3. Not tuned on trained priors yet.
* **E-LPIPS**, the authors' default distance, is not used: it is not in the lpips package
  and its random transformations would break batch independence; LPIPS-VGG is their
  ``--loss-fn=lpips`` option.

**Jointly trained prior** (``joint_prior=True``, the ablation "independent vs jointly trained
priors"; the paper argues joint training cross-contaminates the components). The bank then
holds one 9-channel generator (``load_bank(..., joint=True)``, its output albedo | shading |
specular encoded). Each image gets ONE latent (W or W+) and one set of noise maps for it; its
output is split into the components and everything else is unchanged: the same loss, the
regulariser built from that prior's own mean latent and kNN bank, batch independence. Results
are keyed by prior: ``latents`` and ``noise`` hold ``"joint"``, ``encoded`` and ``linear`` the
forward model's components. With the two-component forward model the specular channels are
generated but ignored (the joint generator cannot be asked for fewer). ``init`` takes
``{"joint": w}``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from ..env import synchronize
from ..errors import JoinbenchError
from ..forward import COMPONENTS, ForwardModel
from ..gan.fused import FusedGenerator
from ..method import added_setting
from ..progress import ProgressCallback
from .engine import ImageVariables, lr_ramp, lr_schedule, run_steps, step_graph
from .losses import PERCEPTUAL_LOSSES, PerceptualLoss, noise_regularisation, normalise_noise_, pixel_mse
from .regularisers import (REGULARISERS, InDomainRegulariser, KnnHingeRegulariser, KnnRegulariser,
                           LatentRegulariser, NoRegulariser, derive_hinge_radius)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Stage1Config:
    """Hyper-parameters of stage 1 (every field is a ``--set`` key)."""

    steps: int = 1000
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    lr_rampup: float = 0.05  # fraction of steps with a linear warm-up
    lr_rampdown: float = 0.25  # fraction of steps with a cosine ramp-down
    w_plus: bool = False  # False: one w per generator (W); True: one per layer (W+)
    perceptual: str = "lpips-vgg"  # lpips-vgg | none
    perceptual_weight: float = 1.0
    pixel_weight: float = 1.0
    noise_weight: float = 1000.0  # authors' command; the projector's default is 1e5
    optimise_noise: bool = True
    regulariser: str = "knn"  # none | in-domain | knn | knn-hinge
    in_domain_weight: float = 1e-4
    knn_weight: float = 1e-3
    knn_k: int = 5  # paper, Figure 4
    hinge_weight: float = 1e-3
    hinge_k: int = 50  # authors' code
    hinge_radius: float = 0.0  # r of the hinge (zero region r/2); 0: derived from the bank
    hinge_percentile: float = 95.0  # r/2 = this percentile of bank latents' kNN-mean distances
    radius_samples: int = 2000  # bank latents used to derive r
    bank_size: int = 100_000  # N latents in the kNN bank
    bank_psi: float = 0.7
    bank_seed: int = 123
    knn_chunk: int = 16384  # bank rows per distance block
    mean_samples: int = 10_000  # samples of the mean latent (initialisation, in-domain centre)
    mean_psi: float = 0.7
    seed: int = 303  # noise-map initialisation
    log_every: int = 10  # loss-curve sampling (steps)
    dtype: str = "float32"  # float32 | float64 (tests)
    # one jointly trained 9-channel prior (bank from load_bank(..., joint=True)) instead of one per component
    joint_prior: bool = False
    # on CUDA, capture a step once and replay it (stage 1 and PTI); ignored elsewhere. Added after
    # the reference runs: at its default it stays out of their reuse keys (joinbench.method.added_setting)
    cuda_graphs: bool = added_setting(True)


@dataclass
class Stage1Result:
    """What one batched inversion produced (tensors on the inversion device, detached)."""

    latents: dict[str, Tensor]  # per prior (component, or "joint"): (B, w_dim) in W, (B, num_ws, w_dim) in W+
    noise: dict[str, list[Tensor]]  # per prior, per layer (B, 1, r, r)
    encoded: dict[str, Tensor]  # per component: final GAN outputs in encoded space [0, 1], (B, 3, R, R)
    linear: dict[str, Tensor]  # decoded with the [0.01, 0.99] clip
    rerender: Tensor  # f(linear), (B, 3, R, R)
    loss_curve: list[list[float]]  # per image, the total loss at loss_steps
    loss_steps: list[int]
    final_terms: dict[str, list[float]]  # per term, per image, at the last step
    errors: list[str | None]
    seconds: float
    setup_seconds: float
    steps: int


class JointInverter:
    """Stage 1 for one GAN bank and forward model; reuse it across batches (the bank
    statistics -- mean latents, kNN banks, hinge radii -- are computed once). ``setup``
    moves the bank's generators to the inversion device and dtype (in place) and fuses them
    into one :class:`~joinbench.gan.fused.FusedGenerator` (:attr:`G`, members in
    :attr:`priors` order).

    ``components`` are the forward model's components (what is produced and rendered);
    ``priors`` the generators whose latents are optimised, keyed by prior name: the
    components themselves, or ``"joint"`` alone with ``config.joint_prior``."""

    def __init__(self, bank, forward_model: ForwardModel, config: Stage1Config, device: torch.device | str = "cpu"):
        self.cfg = config
        self.fm = forward_model
        self.device = torch.device(device)
        self.components = [c for c in COMPONENTS if c in forward_model.components]
        self.joint = bool(config.joint_prior)
        self.priors = self._select_priors(bank)
        res = {p.resolution for p in self.priors.values()}
        if len(res) != 1:
            raise JoinbenchError(f"The component priors have different resolutions {sorted(res)}; stage 1 needs one.")
        self.resolution = res.pop()
        if config.regulariser not in REGULARISERS:
            raise JoinbenchError(f"Unknown regulariser {config.regulariser!r}; use one of {', '.join(REGULARISERS)}.")
        if config.perceptual not in PERCEPTUAL_LOSSES:
            raise JoinbenchError(f"Unknown perceptual loss {config.perceptual!r}; use one of {', '.join(PERCEPTUAL_LOSSES)}.")
        if config.dtype not in DTYPES:
            raise JoinbenchError(f"Unknown dtype {config.dtype!r}; use float32 or float64.")
        if config.steps < 1:
            raise JoinbenchError(f"steps must be at least 1, got {config.steps}.")
        if not config.lr > 0:
            raise JoinbenchError(f"lr must be positive, got {config.lr}.")
        self.dtype = DTYPES[config.dtype]
        self.means: dict[str, Tensor] = {}
        self.regularisers: dict[str, LatentRegulariser] = {}  # per prior (views of the stacked one)
        self.regulariser: LatentRegulariser = NoRegulariser()  # every prior's, at once
        self.G: FusedGenerator | None = None
        self.perceptual: PerceptualLoss | None = None
        self.setup_seconds = 0.0
        self._ready = False

    def _select_priors(self, bank) -> dict[str, Any]:
        """The priors to invert; a bank of the other kind (joint vs per component) is a
        one-line error naming the switch, since both kinds ship side by side."""
        names = ["joint"] if self.joint else self.components
        try:
            priors = {n: bank[n] for n in names}
        except (KeyError, JoinbenchError):
            held = ", ".join(bank) if hasattr(bank, "__iter__") else "?"
            fix = ("load the bank with load_bank(..., joint=True)" if self.joint
                   else "use --set joint_prior=true for a joint bank, or load the per-component priors")
            raise JoinbenchError(f"Stage 1 with joint_prior={self.joint} needs the prior(s) {', '.join(names)}, but the "
                                 f"bank holds {held}; {fix}.") from None
        if self.joint:
            chans = list(getattr(priors["joint"], "channels", []))
            if chans != list(COMPONENTS):
                raise JoinbenchError(f"The joint prior produces {chans or 'unknown channels'}, not albedo | shading | "
                                     "specular; export it with `joinbench train prior --component joint`.")
        return priors

    # -- one-off statistics ---------------------------------------------------------------
    def setup(self) -> "JointInverter":
        if self._ready:
            return self
        from ..gan.bank import fuse_priors

        t0 = time.perf_counter()
        cfg = self.cfg
        for c, p in self.priors.items():
            self.means[c] = p.mean_latent(cfg.mean_samples, cfg.bank_seed, cfg.mean_psi).to(self.device, self.dtype)
        self.regulariser = self._build_regulariser()
        self.regularisers = {c: self.regulariser.member(i) for i, c in enumerate(self.priors)}
        for p in self.priors.values():
            p.G.to(self.device, self.dtype)  # after the statistics, which map float32 z
        self.G = fuse_priors(self.priors)
        self.perceptual = PerceptualLoss(cfg.perceptual, self.device, self.dtype)
        synchronize(self.device)
        self.setup_seconds = time.perf_counter() - t0
        self._ready = True
        return self

    def _build_regulariser(self) -> LatentRegulariser:
        """One regulariser for every prior at once (their statistics stacked)."""
        cfg = self.cfg
        if cfg.regulariser == "none":
            return NoRegulariser()
        if cfg.regulariser == "in-domain":
            return InDomainRegulariser(torch.cat(list(self.means.values())), cfg.in_domain_weight, grouped=True)
        bank = torch.stack([p.latent_bank(cfg.bank_size, cfg.bank_psi, cfg.bank_seed).to(self.device, self.dtype)
                            for p in self.priors.values()])
        if cfg.regulariser == "knn":
            return KnnRegulariser(bank, cfg.knn_k, cfg.knn_weight, cfg.knn_chunk, grouped=True)
        radii = [cfg.hinge_radius if cfg.hinge_radius > 0 else
                 derive_hinge_radius(b, cfg.hinge_k, cfg.hinge_percentile, cfg.radius_samples, cfg.knn_chunk) for b in bank]
        return KnnHingeRegulariser(bank, cfg.hinge_k, cfg.hinge_weight, radii, cfg.knn_chunk, grouped=True)

    # -- variables -----------------------------------------------------------------------
    def _initial_latent(self, c: str, batch: int, init: Mapping[str, Tensor] | None) -> Tensor:
        p = self.priors[c]
        given = None if init is None else init.get(c)
        w = self.means[c] if given is None else given.to(self.device, self.dtype)
        if w.ndim == 1:
            w = w[None]
        if w.ndim == 2 and w.shape[-1] == p.w_dim:
            w = w.expand(batch, -1) if w.shape[0] == 1 else w
            if self.cfg.w_plus:
                w = w[:, None, :].expand(-1, p.num_ws, -1)
        elif w.ndim == 3 and w.shape[1:] == (p.num_ws, p.w_dim):
            if not self.cfg.w_plus:
                raise JoinbenchError(f"init_latents gave W+ latents {tuple(w.shape)} for {c} but stage 1 runs in W; "
                                     "use --set w_plus=true.")
            w = w.expand(batch, -1, -1) if w.shape[0] == 1 else w
        else:
            raise JoinbenchError(f"init_latents for {c} has shape {tuple(w.shape)}; expected (B, {p.w_dim}) or "
                                 f"(B, {p.num_ws}, {p.w_dim}).")
        if w.shape[0] != batch:
            raise JoinbenchError(f"init_latents for {c} holds {w.shape[0]} latents for a batch of {batch}.")
        return w.detach()

    def _initial_noise(self, batch: int) -> dict[str, list[Tensor]]:
        """Per prior, per layer (batch, 1, r, r): one N(0, 1) draw per map from a CPU generator
        seeded ``seed``, the same for every image."""
        gen = torch.Generator().manual_seed(int(self.cfg.seed))
        out = {}
        for c in (*COMPONENTS, "joint"):  # fixed order: a two-component bank gets the same albedo/shading noise
            if c not in self.priors:
                continue
            maps = [torch.randn(s[2], s[3], generator=gen) for s in self.priors[c].noise_shapes()]
            out[c] = [m.to(self.device, self.dtype)[None, None].expand(batch, 1, -1, -1) for m in maps]
        return out

    def render(self, latents: Mapping[str, Tensor], noise: Mapping[str, list[Tensor]]) -> tuple[dict[str, Tensor], Tensor]:
        """(encoded components, re-rendered display image) of per-prior ``latents`` ((B, w_dim)
        or (B, num_ws, w_dim)) and ``noise`` (per layer (B, 1, r, r)), the layout of
        :class:`Stage1Result` (after :meth:`setup`)."""
        names = list(self.priors)
        ws = torch.stack([latents[c].to(self.device, self.dtype) for c in names], dim=1)
        layers = [torch.stack([noise[c][j].to(self.device, self.dtype) for c in names], dim=1)
                  for j in range(len(noise[names[0]]))]
        return self._render(ws, layers)

    def _render(self, ws: Tensor, noise: list[Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        """Fused synthesis of every prior: ws (B, N, ...), noise per layer (B, N, 1, r, r) ->
        (encoded components, the re-rendered display image)."""
        priors = list(self.priors.values())
        out = priors[0].to_encoded(self.G.synthesis(ws, noise=noise, noise_mode="const"))
        enc = {}
        for n, p in enumerate(priors):
            for c, e in p.split(out[:, n]).items():  # a joint prior's 9 channels -> its components
                if c in self.components:  # two-component model: a joint prior's specular is ignored
                    enc[c] = e
        return enc, self.fm.render_encoded(enc, clip=True)

    # -- the loop -----------------------------------------------------------------------
    def start(self, target: Tensor, init: Mapping[str, Tensor] | None = None) -> "Stage1Run":
        """The inversion of display images ``target`` (B, 3, R, R) in [0, 1] (R = the priors'
        resolution) at its first step; ``init`` optionally gives initial latents per prior."""
        self.setup()
        if target.ndim != 4 or target.shape[1] != 3 or tuple(target.shape[-2:]) != (self.resolution, self.resolution):
            raise JoinbenchError(f"Stage 1 expects (B, 3, {self.resolution}, {self.resolution}) images, got {tuple(target.shape)}.")
        if init is not None:  # a latent meant for the other kind of bank would silently be dropped
            other = [k for k, v in init.items() if v is not None and k not in self.priors
                     and (k == "joint" or self.joint)]
            if other:
                raise JoinbenchError(f"init_latents holds {', '.join(other)} but stage 1 inverts the prior(s) "
                                     f"{', '.join(self.priors)} (joint_prior={self.joint}); give initial latents for those.")
        return Stage1Run(self, target.detach().to(self.device, self.dtype).clone(), init)

    def invert(self, target: Tensor, init: Mapping[str, Tensor] | None = None,
               progress: ProgressCallback | None = None) -> Stage1Result:
        """Invert display images ``target`` (B, 3, R, R) in [0, 1] (R = the priors' resolution);
        ``progress`` receives a "stage1" event after every step."""
        with torch.enable_grad():
            run = self.start(target, init)
            return run.run(progress)

    def describe(self) -> dict[str, Any]:
        return {"components": self.components, "priors": list(self.priors), "joint_prior": self.joint,
                "resolution": self.resolution,
                "regularisers": {c: r.describe() for c, r in self.regularisers.items()}}


class Stage1Run:
    """One batched inversion in progress: every image's latents and noise maps for every prior
    in one tensor (B, N, P) (:attr:`vars`), their optimiser, and the step."""

    def __init__(self, inv: JointInverter, target: Tensor, init: Mapping[str, Tensor] | None):
        cfg = inv.cfg
        synchronize(inv.device)
        self.t0 = time.perf_counter()
        self.inv, self.cfg, self.target = inv, cfg, target
        self.batch = b = target.shape[0]
        names = list(inv.priors)
        ws = torch.stack([inv._initial_latent(c, b, init) for c in names], dim=1)  # (B, N, [L,] w_dim)
        self.ws_shape = ws.shape[2:]
        noise0 = inv._initial_noise(b)
        layers = [torch.stack([noise0[c][j] for c in names], dim=1) for j in range(len(noise0[names[0]]))]
        # consecutive layers of one resolution form one block (B, N, k, r, r): the noise terms run per block
        self.blocks: list[tuple[int, int]] = []  # (resolution, layers)
        for n in layers:
            r = n.shape[-1]
            if self.blocks and self.blocks[-1][0] == r:
                self.blocks[-1] = (r, self.blocks[-1][1] + 1)
            else:
                self.blocks.append((r, 1))
        flat_noise = torch.cat([n.reshape(b, len(names), -1) for n in layers], dim=2)
        flat_ws = ws.reshape(b, len(names), -1)
        self.features = inv.perceptual.features(target)
        if cfg.optimise_noise:
            values, self.noise_store = torch.cat([flat_ws, flat_noise], dim=2), None
        else:
            values, self.noise_store = flat_ws, flat_noise
        schedule = lr_schedule(cfg.lr, cfg.steps, cfg.lr_rampup, cfg.lr_rampdown)
        self.vars = ImageVariables(values, schedule, tuple(cfg.betas), self._renormalise if cfg.optimise_noise else None)
        self.terms = {t: target.new_zeros(b) for t in ("perceptual", "pixel", "noise", "latent")}  # the last step's
        self.graph = step_graph(self._step, self.vars, cfg.cuda_graphs, list(self.terms.values()))

    # -- views of the variables ------------------------------------------------------------
    def unpack(self, values: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """(B, N, P) variables -> latents (B, N, [L,] w_dim), noise per layer (B, N, 1, r, r),
        noise per resolution block (B, N, k, r, r); all views."""
        b, n = values.shape[:2]
        nw = self.ws_shape.numel()
        ws = values[:, :, :nw].view(b, n, *self.ws_shape)
        store = values[:, :, nw:] if self.noise_store is None else self.noise_store
        sizes = [k * r * r for r, k in self.blocks]
        blocks = [part.view(b, n, k, r, r) for part, (r, k) in zip(store.split(sizes, dim=2), self.blocks)]
        layers = [blk[:, :, j:j + 1] for blk in blocks for j in range(blk.shape[2])]
        return ws, layers, blocks

    def _renormalise(self) -> None:
        normalise_noise_(self.unpack(self.vars.values.detach())[2])

    # -- one step ----------------------------------------------------------------------------
    def objective(self, values: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-image loss (B,) and its terms at ``values`` (no host synchronisation)."""
        cfg, inv = self.cfg, self.inv
        ws, layers, blocks = self.unpack(values)
        _, image = inv._render(ws, layers)
        terms = {
            "perceptual": inv.perceptual(image, self.features) * cfg.perceptual_weight,
            "pixel": pixel_mse(image, self.target) * cfg.pixel_weight,
            "noise": noise_regularisation(blocks) * cfg.noise_weight,
            "latent": inv.regulariser.penalty(ws) * inv.regulariser.weight,
        }
        return terms["perceptual"] + terms["pixel"] + terms["noise"] + terms["latent"], terms

    def _step(self) -> None:
        with torch.enable_grad():
            loss, terms = self.objective(self.vars.values)
            for name, value in terms.items():
                self.terms[name].copy_(value.detach())
            self.vars.update(loss)

    def step(self) -> None:
        """One optimisation step (replayed from a CUDA graph where enabled)."""
        self.graph()

    # -- the loop -------------------------------------------------------------------------
    def run(self, progress: ProgressCallback | None = None) -> Stage1Result:
        cfg, inv = self.cfg, self.inv
        curve, curve_steps, steps = run_steps(lambda i: self.step(), cfg.steps, cfg.log_every, self.vars, progress,
                                              "stage1", self.batch)
        with torch.no_grad():
            ws, layers, _ = self.unpack(self.vars.values.detach())
            enc, rerender = inv._render(ws, layers)
            linear = {c: inv.fm.decode(c, enc[c], clip=True) for c in inv.components}
        synchronize(inv.device)
        seconds = time.perf_counter() - self.t0
        errors = [None if s < 0 else f"stage 1: non-finite loss or gradient at step {s}; this image's latents and "
                  f"noise were frozen there" for s in self.vars.bad_step.tolist()]
        return Stage1Result(
            latents={c: ws[:, n].clone() for n, c in enumerate(inv.priors)},
            noise={c: [x[:, n].clone() for x in layers] for n, c in enumerate(inv.priors)},
            encoded=enc, linear=linear, rerender=rerender,
            loss_curve=torch.stack(curve, dim=1).double().cpu().tolist(), loss_steps=curve_steps,
            final_terms={k: v.double().cpu().tolist() for k, v in self.terms.items()},
            errors=errors, seconds=seconds, setup_seconds=inv.setup_seconds, steps=steps,
        )


__all__ = ["DTYPES", "JointInverter", "Stage1Config", "Stage1Result", "Stage1Run", "lr_ramp"]
