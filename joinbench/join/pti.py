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
parameters, stacked along a leading image dimension and evaluated with
:func:`torch.func.functional_call` under :func:`torch.func.vmap` (``batching="vmap"``), so
one GPU call tunes many images at once; ``batching="loop"`` evaluates the same copies one
image at a time (identical results up to rounding; tested). The loss is a sum of per-image
terms, Adam is element-wise, the random latents of a step are shared by all images, and
the discriminator's minibatch-std layer sees one image's samples only, so an image follows
the same trajectory alone or in a batch. The copies (and Adam's state) exist only inside
:meth:`PivotalTuner.tune`: they are freed when it returns unless ``save_tuned`` asks for
them. The bank's own generators are never modified.

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
  restored after every later Adam step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..env import synchronize
from ..errors import JoinbenchError
from ..forward import COMPONENTS, ForwardModel
from .losses import PERCEPTUAL_LOSSES, PerceptualLoss, pixel_mse
from .stage1 import lr_ramp

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
    batching: str = "vmap"  # vmap (one batched call) | loop (one image at a time)
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
    steps: int  # steps the loop ran (the maximum over images)
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
    else the forward model's components. ``setup`` moves the discriminators to the
    generators' device and dtype (in place; they stay frozen)."""

    def __init__(self, bank, forward_model: ForwardModel, config: PTIConfig, device: torch.device | str = "cpu"):
        config.validate()
        self.cfg = config
        self.fm = forward_model
        self.device = torch.device(device)
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
        self.names = {k: select_parameters(self.priors[k].G, config.layers) for k in self.keys}
        self.perceptual: PerceptualLoss | None = None
        self.setup_seconds = 0.0
        self._ready = False

    def setup(self) -> "PivotalTuner":
        if self._ready:
            return self
        t0 = time.perf_counter()
        for k in self.keys:
            p = self.priors[k]
            ref = next(p.G.parameters())
            p.D.to(ref.device, ref.dtype).eval().requires_grad_(False)
        dtype = next(self.priors[self.keys[0]].G.parameters()).dtype
        self.perceptual = PerceptualLoss(self.cfg.perceptual, self.device, dtype)
        synchronize(self.device)
        self.setup_seconds = time.perf_counter() - t0
        self._ready = True
        return self

    # -- per-image weight copies ---------------------------------------------------------
    def _make_copies(self, batch: int) -> dict[str, dict[str, Tensor]]:
        """``{key: {name: (B, *shape)}}``: one trainable copy of each tuned parameter per image."""
        out = {}
        for k in self.keys:
            params = dict(self.priors[k].G.named_parameters())
            out[k] = {n: params[n].detach()[None].expand(batch, *params[n].shape).clone().requires_grad_(True)
                      for n in self.names[k]}
        return out

    def _synthesise(self, key: str, copies: Mapping[str, Tensor], ws: Tensor, z: Tensor | None,
                    noise: Sequence[Tensor] | None) -> Tensor:
        """Image-batched synthesis with per-image weights.

        ws: (B, w_dim) or (B, num_ws, w_dim) pivots; z: (n, z_dim) random latents shared by
        all images, or None for the pivot alone; noise: per layer (B, 1, r, r) or None (the
        generator's constant buffers). Returns (B, 1 + n, C, R, R): the pivot, then its n
        neighbours ``(1 - mix) w + mix mapping(z)``."""
        G = self.priors[key].G
        cfg = self.cfg
        syn_names = {n[len("synthesis."):]: n for n in copies if n.startswith("synthesis.")}
        map_names = {n[len("mapping."):]: n for n in copies if n.startswith("mapping.")}
        frozen_w_rand = None
        if z is not None and not map_names:  # the mapping is not tuned: one w_rand for every image
            with torch.no_grad():
                frozen_w_rand = G.mapping(z, cfg.mix_psi)

        def one(params: dict[str, Tensor], w: Tensor, nz: list[Tensor] | None) -> Tensor:
            if z is None:
                batch_ws = w[None]
            else:
                if frozen_w_rand is not None:
                    w_rand = frozen_w_rand
                else:
                    w_rand = functional_call(G.mapping, {m: params[f] for m, f in map_names.items()}, (z, cfg.mix_psi))
                if w.ndim == 2:  # W+: the random w is broadcast to every layer
                    w_rand = w_rand[:, None, :].expand(-1, w.shape[0], -1)
                batch_ws = torch.cat([w[None], (1.0 - cfg.mix) * w[None] + cfg.mix * w_rand.to(w.dtype)])
            syn = {m: params[f] for m, f in syn_names.items()}
            layer_noise = None if nz is None else [n[None] for n in nz]
            return functional_call(G.synthesis, syn, (batch_ws,), {"noise": layer_noise, "noise_mode": "const"})

        if cfg.batching == "vmap":
            return vmap(one, in_dims=(0, 0, 0 if noise is not None else None))(dict(copies), ws, noise)
        outs = [one({n: v[i] for n, v in copies.items()}, ws[i], None if noise is None else [n[i] for n in noise])
                for i in range(ws.shape[0])]
        return torch.stack(outs)

    def _disc_term(self, key: str, images: Tensor) -> Tensor:
        """Per image: softplus(-D(pivot)) + mean_j softplus(-D(neighbour_j)); images (B, 1 + n, C, R, R).
        D runs per image (its minibatch-std layer must not mix images)."""
        D = self.priors[key].D

        def one(x: Tensor) -> Tensor:
            piv = F.softplus(-D(x[:1])).reshape(())
            if x.shape[0] == 1:
                return piv
            return piv + F.softplus(-D(x[1:])).mean()

        if self.cfg.batching == "vmap":
            return vmap(one)(images)
        return torch.stack([one(x) for x in images])

    def _components(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Generator outputs (B, C, R, R) per key -> encoded components per name."""
        enc = {}
        for k, x in outputs.items():
            p = self.priors[k]
            for c, e in p.split(p.to_encoded(x)).items():  # a joint prior's 9 channels -> its components
                if c in self.fm.components:  # two-component model: a joint prior's specular is ignored
                    enc[c] = e
        return enc

    # -- the loop -----------------------------------------------------------------------
    def tune(self, target: Tensor, pivots: Mapping[str, Tensor], noise: Mapping[str, Sequence[Tensor]] | None = None,
             save_tuned: bool = False) -> PTIResult:
        """Tune per-image copies of the generators on display images ``target`` (B, 3, R, R)
        at the stage-1 ``pivots`` ({key: (B, w_dim) or (B, num_ws, w_dim)}) and ``noise``
        ({key: per-layer (B, 1, r, r)}; None: the generators' constant buffers)."""
        self.setup()
        for k in self.keys:
            if k not in pivots:
                raise JoinbenchError(f"PTI needs a pivot latent for {k!r}; stage 1 gave {', '.join(pivots)}.")
        dtype = next(self.priors[self.keys[0]].G.parameters()).dtype
        target = target.detach().to(self.device, dtype)
        b = target.shape[0]
        piv = {k: pivots[k].detach().to(self.device, dtype) for k in self.keys}
        nz = None
        if noise is not None:
            nz = {k: [n.detach().to(self.device, dtype).expand(b, -1, -1, -1) for n in noise[k]] for k in self.keys}
        with torch.enable_grad():
            return self._tune(target, piv, nz, save_tuned)

    def _tune(self, target: Tensor, piv: dict[str, Tensor], nz: dict[str, list[Tensor]] | None,
              save_tuned: bool) -> PTIResult:
        cfg = self.cfg
        b = target.shape[0]
        synchronize(self.device)
        t0 = time.perf_counter()
        copies = self._make_copies(b)
        params = [t for k in self.keys for t in copies[k].values()]
        opt = torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas))
        gen = torch.Generator().manual_seed(int(cfg.seed))
        weights = {k: cfg.disc_weight(k) for k in self.keys}
        use_disc = any(w > 0 for w in weights.values())
        frozen = torch.zeros(b, dtype=torch.bool, device=self.device)
        stop = torch.full((b,), cfg.steps, dtype=torch.long)
        bad_step = torch.full((b,), -1, dtype=torch.long)
        curve: list[Tensor] = []
        curve_steps: list[int] = []
        last_terms = {t: torch.zeros(b, dtype=torch.float64) for t in ("perceptual", "pixel", "disc", "lpips")}
        view = lambda p: frozen.view(-1, *([1] * (p.ndim - 1)))
        steps_run = 0
        for step in range(cfg.steps):
            if frozen.all():
                break
            steps_run = step + 1
            lr = cfg.lr * lr_ramp(step, cfg.steps, cfg.lr_rampup, cfg.lr_rampdown)
            for group in opt.param_groups:
                group["lr"] = lr
            disc_now = use_disc and step % cfg.disc_every == 0
            outputs, disc = {}, target.new_zeros(b)
            for k in self.keys:  # fixed order: the same random latents whatever the batch
                z = None
                if disc_now and weights[k] > 0 and cfg.disc_samples > 0:
                    z = torch.randn(cfg.disc_samples, self.priors[k].z_dim, generator=gen).to(self.device, target.dtype)
                x = self._synthesise(k, copies[k], piv[k], z, None if nz is None else nz[k])
                outputs[k] = x[:, 0]
                if disc_now and weights[k] > 0:
                    disc = disc + self._disc_term(k, x) * (weights[k] * cfg.disc_every)
            image = self.fm.render_encoded(self._components(outputs), clip=True)
            lpips = self.perceptual(image, target)
            pixel = pixel_mse(image, target)
            loss = lpips * cfg.perceptual_weight + pixel * cfg.pixel_weight + disc
            with torch.no_grad():  # each image's terms at the last step it was evaluated
                for name, value in (("perceptual", lpips * cfg.perceptual_weight), ("pixel", pixel * cfg.pixel_weight),
                                    ("disc", disc), ("lpips", lpips)):
                    last_terms[name] = torch.where(~frozen.cpu(), value.detach().double().cpu(), last_terms[name])
            if cfg.early_stop_lpips is not None:  # checked before the update, as in PTI
                reached = (lpips.detach() <= cfg.early_stop_lpips) & ~frozen
                stop = torch.where(reached.cpu(), torch.full_like(stop, step), stop)
                frozen = frozen | reached
            live = ~frozen
            if frozen.all():
                curve.append(loss.detach())
                curve_steps.append(step)
                break
            ok = torch.isfinite(loss) & live
            opt.zero_grad(set_to_none=False)
            torch.where(ok, loss, torch.zeros_like(loss)).sum().backward()
            bad = ~torch.isfinite(loss)
            for p in params:
                if p.grad is None:  # a parameter the loss does not reach (e.g. noise strength with no noise)
                    p.grad = torch.zeros_like(p)
                bad |= ~torch.isfinite(p.grad).reshape(b, -1).all(1)
            newly_bad = bad & ~frozen
            bad_step = torch.where(newly_bad.cpu(), torch.full_like(bad_step, step), bad_step)
            stop = torch.where(newly_bad.cpu(), torch.full_like(stop, step), stop)
            frozen = frozen | bad
            saved = None
            with torch.no_grad():
                for p in params:
                    p.grad.masked_fill_(view(p), 0.0)
                if frozen.any():
                    saved = [p.detach().clone() for p in params]
            opt.step()
            if saved is not None:
                with torch.no_grad():
                    for p, s in zip(params, saved):
                        p.copy_(torch.where(view(p), s, p))
            if step % max(1, cfg.log_every) == 0 or step == cfg.steps - 1:
                curve.append(loss.detach())
                curve_steps.append(step)
            del loss, disc, image, outputs, lpips, pixel
        with torch.no_grad():
            outputs = {k: self._synthesise(k, copies[k], piv[k], None, None if nz is None else nz[k])[:, 0]
                       for k in self.keys}
            enc = self._components(outputs)
            linear = {c: self.fm.decode(c, enc[c], clip=True) for c in enc}
            rerender = self.fm.render_encoded(enc, clip=True)
        tuned = {k: {n: t.detach().clone() for n, t in copies[k].items()} for k in self.keys} if save_tuned else None
        del opt, params, copies
        synchronize(self.device)
        seconds = time.perf_counter() - t0
        per_image = torch.stack(curve, dim=1).double().cpu() if curve else torch.zeros(b, 0, dtype=torch.float64)
        rows = []
        for i in range(b):
            keep = [j for j, s in enumerate(curve_steps) if s <= int(stop[i])]
            rows.append(per_image[i, keep].tolist())
        errors = [None if s < 0 else f"PTI: non-finite loss or gradient at step {s}; this image's generator "
                  f"weights were kept from the step before" for s in bad_step.tolist()]
        return PTIResult(
            encoded=enc, linear=linear, rerender=rerender, loss_curve=rows, loss_steps=curve_steps,
            final_terms={k: v.tolist() for k, v in last_terms.items()}, stop_steps=stop.tolist(), errors=errors,
            seconds=seconds, steps=steps_run, setup_seconds=self.setup_seconds,
            tuned_names={k: list(v) for k, v in self.names.items()}, tuned=tuned,
            pivots={k: v.detach() for k, v in piv.items()},
        )

    def describe(self) -> dict[str, Any]:
        return {"generators": self.keys, "layers": self.cfg.layers,
                "tuned_parameters": {k: sum(self.priors[k].G.get_parameter(n).numel() for n in v)
                                     for k, v in self.names.items()},
                "disc_weights": {k: self.cfg.disc_weight(k) for k in self.keys}}


__all__ = ["BATCHING", "LAYER_PRESETS", "PTIConfig", "PTIResult", "PivotalTuner", "select_parameters",
           "tuned_generator"]
