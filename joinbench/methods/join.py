"""JoIN as benchmark methods: the full method ``join``, its ablations, and stage 1 alone
(``join-s1*``).

The full method (:class:`JoinFull`: encoders, stage 1 and PTI as the README's "Methods"
table describes them) per batch:
encoders give each prior an initial latent (``init=encoder``), stage 1 inverts the bank
from there (:mod:`joinbench.join.stage1`, kNN regulariser), and PTI tunes per-image copies of
the generators at those pivots with the local discriminator loss (:mod:`joinbench.join.pti`).
Its variants are configurations of the one class:

======================  ================================================================
``join``                encoder init + stage 1 (kNN) + PTI with the discriminator term
``join-nopti``          ``pti=false``: stops after stage 1
``join-meaninit``       ``init=mean``: stage 1 from the mean latent, no encoders
``join-pti-nodisc``     ``pti_disc=false``: PTI on the reconstruction loss alone
``join-joint-prior``    ``joint_prior=true``: the jointly trained 9-channel prior (and its
                        encoder) instead of the independent bank, same pipeline
======================  ================================================================

Stage 1 alone, all configurations of :class:`JoinStage1`:

=====================  =================================================================
``join-s1``            W latents, LPIPS-VGG + pixel + noise terms, ``knn`` regulariser
``join-s1-noreg``      no latent regulariser
``join-s1-indomain``   ``in-domain``: squared distance to the mean latent
``join-s1-knn-hinge``  the authors' hinge on the distance to the mean of 50 bank neighbours
``join-s1-wplus``      ``join-s1`` in W+ (one latent per layer)
``join-s1-nospecular`` two components (albedo, shading), forward model ``reinhard-nospecular``
=====================  =================================================================

Every hyper-parameter is a config field: ``--set steps=500 --set regulariser=in-domain``;
the PTI ones are ``pti_*`` (``--set pti_steps=100 --set pti_layers=torgb``), the encoders'
folder ``encoders_path``, and ``save_tuned=DIR`` keeps each image's tuned generator weights
(otherwise they are freed after their batch). ``Decomposition.timings`` holds ``encoder``,
``stage1``, ``stage1_per_step``, ``pti`` and ``pti_per_step`` seconds for the stages that
ran; ``extras`` the latents, both loss curves and PTI's stop steps.

The GAN bank is the ``prior`` field (default ``materials``, the method's
:attr:`~joinbench.method.Method.domain_setting`); a run sets it from the dataset's declared
domain (``faces``, ``faces-shift``, ``real-faces`` -> ``faces``) unless ``--set prior=...`` is given. ``priors_path`` names a folder of
exported priors (a ``joinbench train prior`` run's ``--out``); unset, the shipped
``joinbench/weights/`` are used. Priors are loaded on the first ``.to()`` or
``decompose``, so listing methods needs no weights and missing ones are a one-line error.

Images whose size differs from the priors' resolution are resized (bilinear, antialiased)
to it for the inversion and the components are resized back.

On a CPU, 1000 steps per batch take minutes even at 64 px; evaluate a few images, e.g.::

    joinbench run --method join-s1 --dataset materials --device cpu --limit 8 --batch-size 8 \\
        --set priors_path=runs/priors/materials-all-64

(``--set steps=200`` for a quicker, rougher look). ``join`` on a CPU scores 2 images by
default and, for settings not given with ``--set``, uses :attr:`JoinFull.cpu_settings`
(fewer stage-1 and PTI steps, the discriminator term every 4th step; the run's plan prints
what it changed, :mod:`joinbench.plan`); a GPU runs the paper's schedule.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..env import synchronize
from ..errors import JoinbenchError
from ..join.losses import PERCEPTUAL_LOSSES
from ..join.pti import PivotalTuner, PTIConfig
from ..join.regularisers import REGULARISERS
from ..join.stage1 import DTYPES, JointInverter, Stage1Config
from ..method import Method, MethodConfig
from ..registry import register_method
from ..types import Decomposition


@dataclass
class JoinConfig(Stage1Config, MethodConfig):
    """Stage-1 hyper-parameters plus which GAN bank to invert."""

    prior: str = "materials"  # the dataset the GAN bank was trained on (faces: --set prior=faces)
    priors_path: str | None = None  # folder of exported priors; None: the shipped joinbench/weights


class JoinStage1(Method):
    """JoIN stage 1: batched joint inversion of the per-component GAN bank."""

    Config = JoinConfig
    kind = "optimisation"
    needs_grad = True  # the runner must not run decompose under inference_mode
    domain_setting = "prior"  # faces-shift and real-faces invert the faces bank unless --set prior=...
    # 1000 LPIPS-VGG steps cost ~0.5-0.9 s each for a small batch at 64 px on a 2-core CPU
    # (measured on random priors of the default size): a few images keep a CPU run in minutes.
    cpu_default_limit = 4

    def __init__(self, config: JoinConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        cfg = self.config
        for value, allowed, key in ((cfg.regulariser, REGULARISERS, "regulariser"),
                                    (cfg.perceptual, PERCEPTUAL_LOSSES, "perceptual"),
                                    (cfg.dtype, tuple(DTYPES), "dtype")):
            if value not in allowed:
                raise JoinbenchError(f"Unknown {key} {value!r}; use one of {', '.join(allowed)}.")
        if cfg.steps < 1:
            raise JoinbenchError(f"steps must be at least 1, got {cfg.steps}.")
        self._inverter: JointInverter | None = None
        self._setup_reported = False

    # -- priors ---------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> "JoinStage1":
        super().to(device)
        self.load()
        return self

    def load(self) -> JointInverter:
        """Load the GAN bank on ``self.device`` (once per device) and return the inverter."""
        if self._inverter is not None and self._inverter.device == self.device:
            return self._inverter
        from ..gan.bank import PriorError, load_bank

        cfg = self.config
        path = cfg.priors_path if cfg.priors_path not in (None, "", "none", "None") else None
        fm = self.forward_model
        joint = bool(getattr(cfg, "joint_prior", False))
        try:
            bank = load_bank(cfg.prior, self.device, components=fm.components, path=path, joint=joint)
        except PriorError as exc:
            name = self.registry_name or type(self).__name__
            what = "jointly trained" if joint else ", ".join(fm.components)
            raise PriorError(f"{name} needs the {cfg.prior} GAN priors ({what}): {exc} "
                             "For this method pass the folder with --set priors_path=DIR "
                             "(and --set prior=faces for the faces bank).") from None
        self._inverter = JointInverter(bank, fm, cfg, self.device)
        self._setup_reported = False
        return self._inverter

    def reset(self) -> None:
        self._inverter = None

    def prior_source(self) -> dict[str, Any]:
        """The GAN bank this method inverts (``domain``, ``path`` of exported priors or None
        for the shipped ones, ``joint``): relighting samples new lightings from the same prior."""
        cfg = self.config
        path = cfg.priors_path if cfg.priors_path not in (None, "", "none", "None") else None
        return {"domain": cfg.prior, "path": path, "joint": bool(getattr(cfg, "joint_prior", False))}

    # -- hook for encoder-guided initialisation ---------------------------------------------
    def init_latents(self, images: Tensor) -> dict[str, Tensor] | None:
        """Initial latents per prior for ``images`` (B, 3, R, R), the display images at the
        priors' resolution on the method's device: ``{prior: (B, w_dim) or (B, num_ws, w_dim)}``
        (prior: a component, or ``"joint"``); priors left out (or ``None``) start from the
        mean latent. Stage 1 alone returns None; :class:`JoinFull` uses its encoders."""
        return None

    # -- the method -----------------------------------------------------------------------
    def decompose(self, images: Tensor) -> Decomposition:
        with torch.inference_mode(False), torch.enable_grad():
            return self._decompose(images)

    def _decompose(self, images: Tensor) -> Decomposition:
        inv, images, target = self._prepare(images)
        res = inv.invert(target, self.init_latents(target), progress=self.progress)
        timings, extras = self._stage1_report(inv, res)
        return self._finish(images, target, res.linear, timings, res.errors, extras)

    def _prepare(self, images: Tensor) -> tuple[JointInverter, Tensor, Tensor]:
        """(inverter, the caller's images as a normal tensor, the target at the priors' resolution)."""
        if images.ndim != 4 or images.shape[1] != 3:
            name = self.registry_name or "join-s1"
            raise JoinbenchError(f"{name} expects (B, 3, H, W) images, got {tuple(images.shape)}.")
        inv = self.load()
        images = images.detach().clone()  # a normal tensor even if the caller's was made in inference mode
        r = inv.resolution
        target = images.to(self.device, torch.float32)
        if tuple(images.shape[-2:]) != (r, r):
            target = F.interpolate(target, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        return inv, images, target

    def _stage1_report(self, inv: JointInverter, res) -> tuple[dict[str, float], dict[str, Any]]:
        timings = {"stage1": res.seconds, "stage1_per_step": res.seconds / res.steps}
        if not self._setup_reported:
            timings["stage1_setup"] = res.setup_seconds
            self._setup_reported = True
        extras = {
            "latents": {c: v.float().cpu() for c, v in res.latents.items()},
            "noise": {c: [n.float().cpu() for n in maps] for c, maps in res.noise.items()},
            "loss_curve": res.loss_curve,
            "loss_steps": res.loss_steps,
            "final_terms": res.final_terms,
            "stage1": inv.describe(),
        }
        return timings, extras

    def _finish(self, images: Tensor, target: Tensor, linear: dict[str, Tensor], timings: dict[str, float],
                errors: list[str | None], extras: dict[str, Any]) -> Decomposition:
        """Linear components at the priors' resolution -> a Decomposition at the images' size."""
        h, w = images.shape[-2:]
        r = target.shape[-1]
        resized = (h, w) != (r, r)

        def out(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            t = t.float()
            if resized:
                t = F.interpolate(t, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp_min(0.0)
            return t.to(images.device)

        if resized:
            extras["resized"] = {"from": (int(h), int(w)), "to": (r, r)}
        return Decomposition(out(linear["albedo"]), out(linear["shading"]), out(linear.get("specular")),
                             self.forward_model, timings=timings, errors=errors, extras=extras)


# ---------------------------------------------------------------------------------------
# the full method: encoder initialisation + stage 1 + PTI
# ---------------------------------------------------------------------------------------
INITS = ("encoder", "mean")


@dataclass
class JoinFullConfig(JoinConfig):
    """Stage 1 plus encoder initialisation and PTI. Every :class:`PTIConfig` field ``x`` is
    the ``pti_x`` field here (``--set pti_steps=100``); the two must stay in step (tested)."""

    init: str = "encoder"  # encoder | mean: where stage 1 starts
    encoders_path: str | None = None  # folder of exported encoders; None: the shipped joinbench/weights
    joint_prior: bool = False  # the jointly trained 9-channel prior instead of the independent bank
    pti: bool = True  # run stage 2
    save_tuned: str | None = None  # folder for each image's tuned generator weights (safetensors); None: freed
    pti_steps: int = 300
    pti_lr: float = 1e-3
    pti_betas: tuple[float, float] = (0.9, 0.999)
    pti_lr_rampup: float = 0.05
    pti_lr_rampdown: float = 0.25
    pti_perceptual: str = "lpips-vgg"
    pti_perceptual_weight: float = 1.0
    pti_pixel_weight: float = 1.0
    pti_disc: bool = True
    pti_disc_albedo: float = 5e-4
    pti_disc_shading: float = 1e-3
    pti_disc_specular: float = 5e-4
    pti_disc_joint: float = 2e-3
    pti_disc_samples: int = 8
    pti_disc_every: int = 1
    pti_mix: float = 0.1
    pti_mix_psi: float = 0.7
    pti_early_stop_lpips: float | None = None
    pti_layers: str = "synthesis"
    pti_batching: str = "vmap"
    pti_seed: int = 0
    pti_log_every: int = 10


def pti_config(cfg: JoinFullConfig) -> PTIConfig:
    """The :class:`PTIConfig` held in ``cfg``'s ``pti_*`` fields."""
    return PTIConfig(**{f.name: getattr(cfg, f"pti_{f.name}") for f in dataclasses.fields(PTIConfig)})


def _optional_float(value: Any, key: str) -> float | None:
    """``--set`` strings for an optional float field: a number, or none/off/empty for None."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if value is None else float(value)
    text = str(value).strip().lower()
    if text in ("", "none", "null", "off", "false"):
        return None
    try:
        return float(text)
    except ValueError:
        raise JoinbenchError(f"Setting {key}={value!r}: expected a number or none.") from None


def _optional_str(value: Any) -> str | None:
    return None if value in (None, "", "none", "None") else str(value)


class JoinFull(JoinStage1):
    """JoIN: encoder-initialised stage 1 (kNN regulariser) followed by PTI with the local
    discriminator loss. Ablations are configurations (``init=mean``, ``pti=false``,
    ``pti_disc=false``, ``joint_prior=true``)."""

    Config = JoinFullConfig
    # Measured for a batch of 2 images at 64 px, shipped materials priors, one CPU core:
    # stage 1 ~0.55 s per step, a PTI step ~0.7 s without and ~9 s with the discriminator
    # term (1 + 8 generator and discriminator passes per component and image). The paper's
    # schedule (1000 + 300 steps, the term every step) is then ~55 core-minutes per batch;
    # cpu_settings bring it to ~4 (150 x 0.55 + 15 x 9 + 45 x 0.7 s), a quicker, rougher look.
    # (Two intra-op threads on a busy 2-core machine cost more: 200 stage-1 steps took 10 min.)
    cpu_default_limit = 2
    # What a CPU run uses for settings the user did not give (printed when applied); a GPU
    # runs the defaults.
    cpu_settings: ClassVar[dict[str, Any]] = {"steps": 150, "pti_steps": 60, "pti_disc_every": 4}

    def __init__(self, config: JoinFullConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        cfg = self.config
        if cfg.init not in INITS:
            raise JoinbenchError(f"Unknown init {cfg.init!r}; use one of {', '.join(INITS)}.")
        self.config = dataclasses.replace(
            cfg, pti_early_stop_lpips=_optional_float(cfg.pti_early_stop_lpips, "pti_early_stop_lpips"),
            save_tuned=_optional_str(cfg.save_tuned), encoders_path=_optional_str(cfg.encoders_path))
        if self.config.pti:
            pti_config(self.config).validate()
        self._tuner: PivotalTuner | None = None
        self._tuner_for: JointInverter | None = None
        self._encoders: dict[str, Any] | None = None
        self._encoders_for: JointInverter | None = None  # encoders are checked against this inverter's priors
        self._ids: list[str] | None = None
        self._unnamed = 0

    # -- devices and CPU settings ----------------------------------------------------------
    def to(self, device: torch.device | str) -> "JoinFull":
        """Move to ``device`` and load priors and encoders there (missing ones fail here, before a run starts)."""
        super().to(device)
        if self.config.init == "encoder":
            self._ensure_encoders()
        return self

    def reset(self) -> None:
        super().reset()
        self._tuner = None

    def unused_settings(self) -> set[str]:
        """Without PTI the ``pti_*`` settings change nothing (a CPU run still applies them, so a
        configuration has one config per device, but does not announce them)."""
        return set() if self.config.pti else {f.name for f in dataclasses.fields(self.config) if f.name.startswith("pti_")}

    def load(self) -> JointInverter:
        inv = super().load()
        if self.config.pti and (self._tuner is None or self._tuner_for is not inv):
            self._tuner = PivotalTuner(inv.priors, self.forward_model, pti_config(self.config), self.device,
                                       cuda_graphs=self.config.cuda_graphs)
            self._tuner_for = inv
        return inv

    # -- encoder initialisation -------------------------------------------------------------
    def _load_encoders(self) -> dict[str, Any]:
        """The stage-1 encoders, one per prior of the bank (``joint`` for the joint prior),
        checked against the priors in use."""
        cfg = self.config
        inv = self.load()
        name = self.registry_name or type(self).__name__
        try:
            from ..join.encoder import load_encoders
        except ImportError as exc:
            if exc.name != "joinbench.join.encoder":
                raise
            raise JoinbenchError(f"{name} starts stage 1 from encoders, which this installation lacks; "
                                 "use --set init=mean (or the join-meaninit method).") from None
        try:
            return load_encoders(cfg.prior, self.device, components=tuple(inv.priors), path=cfg.encoders_path,
                                 bank=inv.priors)
        except JoinbenchError as exc:
            raise type(exc)(f"{name} starts stage 1 from the {cfg.prior} encoders: {exc} Pass their folder with "
                            "--set encoders_path=DIR, or start from the mean latent with --set init=mean.") from None

    def init_latents(self, images: Tensor) -> dict[str, Tensor] | None:
        """Encoder outputs per prior (absolute w, (B, w_dim)) with ``init=encoder``; None with ``mean``."""
        if self.config.init == "mean":
            return None
        encoders = self._ensure_encoders()
        with torch.no_grad():
            return {k: enc(images).float() for k, enc in encoders.items()}

    def _ensure_encoders(self) -> dict[str, Any]:
        inv = self.load()
        if self._encoders is None or self._encoders_for is not inv:
            self._encoders = self._load_encoders()
            self._encoders_for = inv
        return self._encoders

    # -- the method -----------------------------------------------------------------------
    def decompose_batch(self, batch) -> Decomposition:
        """The runner's entry: like :meth:`decompose`, naming saved tuned weights by sample id."""
        self._ids = list(batch.ids)
        try:
            return self.decompose(batch.image)
        finally:
            self._ids = None

    def _decompose(self, images: Tensor) -> Decomposition:
        cfg = self.config
        inv, images, target = self._prepare(images)
        timings: dict[str, float] = {}
        if cfg.init == "encoder":
            synchronize(self.device)
            t0 = time.perf_counter()
            init = self.init_latents(target)
            synchronize(self.device)
            timings["encoder"] = time.perf_counter() - t0
        else:
            init = None
        res = inv.invert(target, init, progress=self.progress)
        s1_timings, extras = self._stage1_report(inv, res)
        timings.update(s1_timings)
        extras["init"] = cfg.init
        if init is not None:
            extras["init_latents"] = {k: v.float().cpu() for k, v in init.items()}
        linear, errors = res.linear, list(res.errors)
        if self._tuner is not None:
            saving = cfg.save_tuned is not None
            out = self._tuner.tune(target, res.latents, res.noise, save_tuned=saving, progress=self.progress)
            timings["pti"] = out.seconds
            timings["pti_per_step"] = out.seconds / max(1, out.steps)
            linear = out.linear
            errors = [a or b for a, b in zip(errors, out.errors)]
            extras.update({"pti_loss_curve": out.loss_curve, "pti_loss_steps": out.loss_steps,
                           "pti_final_terms": out.final_terms, "pti_stop_steps": out.stop_steps,
                           "pti_steps_run": out.steps, "pti": self._tuner.describe()})
            if saving:
                extras["tuned_files"] = self._save_tuned(out, res, target.shape[0])
        return self._finish(images, target, linear, timings, errors, extras)

    def _save_tuned(self, out, res, batch: int) -> list[str]:
        """One safetensors file per image and generator: the tuned parameters
        (``param.<name>``), the pivot (``pivot``) and the noise maps (``noise.<layer>``), so
        the image's tuned generator can be rebuilt and re-synthesised."""
        from pathlib import Path

        from safetensors.torch import save

        from ..env import write_atomic

        folder = Path(self.config.save_tuned).expanduser()
        if self._ids is not None and len(self._ids) == batch:
            ids = list(self._ids)
        else:
            ids = [f"image{self._unnamed + i}" for i in range(batch)]
            self._unnamed += batch
        paths = []
        for i, sid in enumerate(ids):
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(sid))
            for key, params in out.tuned.items():
                prior = self._tuner.priors[key]
                tensors = {f"param.{n}": v[i].detach().float().cpu().contiguous() for n, v in params.items()}
                tensors["pivot"] = res.latents[key][i].detach().float().cpu().contiguous()
                for j, n in enumerate(res.noise.get(key, [])):
                    tensors[f"noise.{j}"] = n[i].detach().float().cpu().contiguous()
                meta = {"format": "joinbench-pti-tuned", "dataset": prior.dataset, "prior": key, "image": str(sid),
                        "base_sha256": prior.sha256, "layers": self.config.pti_layers}
                paths.append(str(write_atomic(folder / f"{safe}-{key}-G.safetensors", save(tensors, metadata=meta))))
        return paths


_S1 = "JoIN stage 1 (joint GAN-bank inversion, LPIPS-VGG)"
register_method("join-s1", JoinStage1, description=f"{_S1}, kNN latent regulariser (k=5), W", regulariser="knn")
register_method("join-s1-noreg", JoinStage1, description=f"{_S1}, no latent regulariser", regulariser="none")
register_method("join-s1-indomain", JoinStage1, description=f"{_S1}, in-domain regulariser (distance to the mean latent)",
                regulariser="in-domain")
register_method("join-s1-knn-hinge", JoinStage1,
                description=f"{_S1}, the authors' kNN hinge (50 neighbours, radius from the bank)",
                regulariser="knn-hinge")
register_method("join-s1-wplus", JoinStage1, description=f"{_S1}, kNN regulariser, W+ latents", regulariser="knn",
                w_plus=True)
register_method("join-s1-nospecular", JoinStage1, description=f"{_S1}, albedo*shading only (no specular generator)",
                regulariser="knn", forward_model="reinhard-nospecular")

register_method("join", JoinFull,
                description="JoIN: encoder init, stage 1 (kNN regulariser), PTI with the local discriminator loss")
register_method("join-nopti", JoinFull, description="JoIN without PTI: encoder init + stage 1", pti=False)
register_method("join-meaninit", JoinFull, description="JoIN with stage 1 from the mean latent (no encoders)",
                init="mean")
register_method("join-pti-nodisc", JoinFull, description="JoIN with PTI on the reconstruction loss alone "
                "(no discriminator term)", pti_disc=False)
register_method("join-joint-prior", JoinFull, description="JoIN with one jointly trained 9-channel prior instead "
                "of the independent bank", joint_prior=True)

__all__ = ["INITS", "JoinConfig", "JoinFull", "JoinFullConfig", "JoinStage1", "pti_config"]
