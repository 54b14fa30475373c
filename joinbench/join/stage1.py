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
12 steps and ~1e-2 after 100). With ``dtype="float64"`` the loop itself agrees to ~1e-15;
the remaining ~1e-7 comes from the generator's demodulation, which
:class:`joinbench.gan.model.ModulatedConv2d` always computes in float32.

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

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from ..env import synchronize
from ..errors import JoinbenchError
from ..forward import COMPONENTS, ForwardModel
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


def lr_ramp(step: int, steps: int, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """The StyleGAN2 projector's learning-rate multiplier at ``step`` of ``steps``."""
    t = step / max(1, steps)
    r = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    r = 0.5 - 0.5 * math.cos(math.pi * r)
    return r * (min(1.0, t / rampup) if rampup > 0 else 1.0)


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
    moves the bank's generators to the inversion device and dtype (in place).

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
        self.regularisers: dict[str, LatentRegulariser] = {}
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
        t0 = time.perf_counter()
        cfg = self.cfg
        for c, p in self.priors.items():
            self.means[c] = p.mean_latent(cfg.mean_samples, cfg.bank_seed, cfg.mean_psi).to(self.device, self.dtype)
            self.regularisers[c] = self._build_regulariser(c, p)
            p.G.to(self.device, self.dtype)  # after the statistics, which map float32 z
        self.perceptual = PerceptualLoss(cfg.perceptual, self.device, self.dtype)
        synchronize(self.device)
        self.setup_seconds = time.perf_counter() - t0
        self._ready = True
        return self

    def _build_regulariser(self, component: str, prior) -> LatentRegulariser:
        cfg = self.cfg
        if cfg.regulariser == "none":
            return NoRegulariser()
        if cfg.regulariser == "in-domain":
            return InDomainRegulariser(self.means[component], cfg.in_domain_weight)
        bank = prior.latent_bank(cfg.bank_size, cfg.bank_psi, cfg.bank_seed).to(self.device, self.dtype)
        if cfg.regulariser == "knn":
            return KnnRegulariser(bank, cfg.knn_k, cfg.knn_weight, cfg.knn_chunk)
        radius = cfg.hinge_radius
        if radius <= 0:
            radius = derive_hinge_radius(bank, cfg.hinge_k, cfg.hinge_percentile, cfg.radius_samples, cfg.knn_chunk)
        return KnnHingeRegulariser(bank, cfg.hinge_k, cfg.hinge_weight, radius, cfg.knn_chunk)

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
        return w.detach().clone().requires_grad_(True)

    def _initial_noise(self, batch: int) -> dict[str, list[Tensor]]:
        gen = torch.Generator().manual_seed(int(self.cfg.seed))
        out = {}
        for c in (*COMPONENTS, "joint"):  # fixed order: a two-component bank gets the same albedo/shading noise
            if c not in self.priors:
                continue
            maps = [torch.randn(s[2], s[3], generator=gen) for s in self.priors[c].noise_shapes()]
            out[c] = [m.to(self.device, self.dtype)[None, None].expand(batch, 1, -1, -1).clone()
                      .requires_grad_(self.cfg.optimise_noise) for m in maps]
        return out

    def _render(self, ws: dict[str, Tensor], noise: dict[str, list[Tensor]]) -> tuple[dict[str, Tensor], Tensor]:
        enc = {}
        for name, p in self.priors.items():
            out = p.to_encoded(p.synthesis(ws[name], noise=noise[name], noise_mode="const"))
            for c, e in p.split(out).items():  # a joint prior's 9 channels -> its components
                if c in self.components:  # two-component model: a joint prior's specular is ignored
                    enc[c] = e
        return enc, self.fm.render_encoded(enc, clip=True)

    # -- the loop -----------------------------------------------------------------------
    def invert(self, target: Tensor, init: Mapping[str, Tensor] | None = None) -> Stage1Result:
        """Invert display images ``target`` (B, 3, R, R) in [0, 1] (R = the priors' resolution)."""
        self.setup()
        if target.ndim != 4 or target.shape[1] != 3 or tuple(target.shape[-2:]) != (self.resolution, self.resolution):
            raise JoinbenchError(f"Stage 1 expects (B, 3, {self.resolution}, {self.resolution}) images, got {tuple(target.shape)}.")
        target = target.detach().to(self.device, self.dtype).clone()
        b = target.shape[0]
        with torch.enable_grad():
            return self._invert(target, b, init)

    def _invert(self, target: Tensor, b: int, init) -> Stage1Result:
        cfg = self.cfg
        synchronize(self.device)
        t0 = time.perf_counter()
        names = list(self.priors)
        if init is not None:  # a latent meant for the other kind of bank would silently be dropped
            other = [k for k, v in init.items() if v is not None and k not in self.priors
                     and (k == "joint" or self.joint)]
            if other:
                raise JoinbenchError(f"init_latents holds {', '.join(other)} but stage 1 inverts the prior(s) "
                                     f"{', '.join(names)} (joint_prior={self.joint}); give initial latents for those.")
        ws = {c: self._initial_latent(c, b, init) for c in names}
        noise = self._initial_noise(b)
        noise_vars = [n for c in names for n in noise[c]] if cfg.optimise_noise else []
        params = [ws[c] for c in names] + noise_vars
        opt = torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas))
        frozen = torch.zeros(b, dtype=torch.bool, device=self.device)
        first_bad = torch.full((b,), -1, dtype=torch.long, device=self.device)
        curve, curve_steps = [], []
        terms: dict[str, Tensor] = {}
        view = lambda p: frozen.view(-1, *([1] * (p.ndim - 1)))
        for step in range(cfg.steps):
            lr = cfg.lr * lr_ramp(step, cfg.steps, cfg.lr_rampup, cfg.lr_rampdown)
            for group in opt.param_groups:
                group["lr"] = lr
            _, image = self._render(ws, noise)
            terms = {
                "perceptual": self.perceptual(image, target) * cfg.perceptual_weight,
                "pixel": pixel_mse(image, target) * cfg.pixel_weight,
                "noise": sum(noise_regularisation(noise[c]) for c in names) * cfg.noise_weight,
                "latent": sum(self.regularisers[c].penalty(ws[c]) * self.regularisers[c].weight
                              for c in names),
            }
            loss = terms["perceptual"] + terms["pixel"] + terms["noise"] + terms["latent"]
            ok = torch.isfinite(loss) & ~frozen
            opt.zero_grad(set_to_none=False)
            torch.where(ok, loss, torch.zeros_like(loss)).sum().backward()
            bad = ~torch.isfinite(loss)
            for p in params:
                if p.grad is None:  # a variable the loss does not reach (e.g. a noise map with strength 0)
                    p.grad = torch.zeros_like(p)
                bad |= ~torch.isfinite(p.grad).flatten(1).all(1)
            first_bad = torch.where(bad & ~frozen, torch.full_like(first_bad, step), first_bad)
            frozen |= bad
            saved = []
            with torch.no_grad():
                for p in params:
                    p.grad.masked_fill_(view(p), 0.0)
                    saved.append(p.detach().clone())
            opt.step()
            with torch.no_grad():
                normalise_noise_(noise_vars)
                for p, s in zip(params, saved):
                    p.copy_(torch.where(view(p), s, p))
            if step % max(1, cfg.log_every) == 0 or step == cfg.steps - 1:
                curve.append(loss.detach())
                curve_steps.append(step)
        with torch.no_grad():
            enc, rerender = self._render(ws, noise)
            linear = {c: self.fm.decode(c, enc[c], clip=True) for c in self.components}
        synchronize(self.device)
        seconds = time.perf_counter() - t0
        per_image = torch.stack(curve, dim=1).double().cpu().tolist()  # (B, n_logged)
        bad_steps = first_bad.cpu().tolist()
        errors = [None if s < 0 else f"stage 1: non-finite loss or gradient at step {s}; this image's latents and "
                  f"noise were frozen there" for s in bad_steps]
        return Stage1Result(
            latents={c: w.detach() for c, w in ws.items()},
            noise={c: [n.detach() for n in noise[c]] for c in names},
            encoded={c: e.detach() for c, e in enc.items()},
            linear=linear, rerender=rerender.detach(), loss_curve=per_image, loss_steps=curve_steps,
            final_terms={k: v.detach().double().cpu().tolist() for k, v in terms.items()},
            errors=errors, seconds=seconds, setup_seconds=self.setup_seconds, steps=cfg.steps,
        )

    def describe(self) -> dict[str, Any]:
        return {"components": self.components, "priors": list(self.priors), "joint_prior": self.joint,
                "resolution": self.resolution,
                "regularisers": {c: r.describe() for c, r in self.regularisers.items()}}


__all__ = ["DTYPES", "JointInverter", "Stage1Config", "Stage1Result", "lr_ramp"]
