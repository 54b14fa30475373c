"""JoIN stage 1 as benchmark methods: ``join-s1`` and its ablations.

All variants are configurations of one class, :class:`JoinStage1` (see
:mod:`joinbench.join.stage1` for the loop and the choices it makes):

=====================  =================================================================
``join-s1``            W latents, LPIPS-VGG + pixel + noise terms, ``knn`` regulariser
``join-s1-noreg``      no latent regulariser
``join-s1-indomain``   ``in-domain``: squared distance to the mean latent
``join-s1-knn-hinge``  the authors' hinge on the distance to the mean of 50 bank neighbours
``join-s1-wplus``      ``join-s1`` in W+ (one latent per layer)
``join-s1-nospecular`` two components (albedo, shading), forward model ``reinhard-nospecular``
=====================  =================================================================

Every hyper-parameter is a config field: ``--set steps=500 --set regulariser=in-domain``.
The GAN bank is the ``prior`` field (default ``materials``); ``joinbench run`` sets it
from the dataset's domain (``faces``, ``faces-shift``, ``real-faces`` -> ``faces``) unless
``--set prior=...`` is given. ``priors_path`` names a folder of
exported priors (a ``joinbench train prior`` run's ``--out``); unset, the shipped
``joinbench/weights/`` are used. Priors are loaded on the first ``.to()`` or
``decompose``, so listing methods needs no weights and missing ones are a one-line error.

Images whose size differs from the priors' resolution are resized (bilinear, antialiased)
to it for the inversion and the components are resized back.

On a CPU, 1000 steps per batch take minutes even at 64 px; evaluate a few images, e.g.::

    joinbench run --method join-s1 --dataset materials --device cpu --limit 8 --batch-size 8 \\
        --set priors_path=runs/priors/materials-all-64

(``--set steps=200`` for a quicker, rougher look).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import JoinbenchError
from ..join.losses import PERCEPTUAL_LOSSES
from ..join.regularisers import REGULARISERS
from ..join.stage1 import DTYPES, JointInverter, Stage1Config
from ..method import Method, MethodConfig, dataset_domain
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
    needs_grad = True  # the runner must not run decompose under inference_mode
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
        try:
            bank = load_bank(cfg.prior, self.device, components=fm.components, path=path)
        except PriorError as exc:
            name = self.registry_name or type(self).__name__
            raise PriorError(f"{name} needs the {cfg.prior} GAN priors ({', '.join(fm.components)}): {exc} "
                             "For this method pass the folder with --set priors_path=DIR "
                             "(and --set prior=faces for the faces bank).") from None
        self._inverter = JointInverter(bank, fm, cfg, self.device)
        self._setup_reported = False
        return self._inverter

    def bind_dataset(self, dataset, overridden: set[str]) -> None:
        """Invert the GAN bank of the dataset's domain (``faces-shift`` -> ``faces``,
        ``real-materials`` -> ``materials``) unless ``prior`` was set explicitly.
        ``dataset`` is a Dataset or its registry name."""
        domain = dataset_domain(dataset)
        if "prior" not in overridden and domain not in (None, self.config.prior):
            self.config = dataclasses.replace(self.config, prior=domain)
            self._inverter = None

    # -- hook for encoder-guided initialisation ---------------------------------------------
    def init_latents(self, images: Tensor) -> dict[str, Tensor] | None:
        """Initial latents per component for ``images`` (B, 3, H, W): ``{component: (B, w_dim)
        or (B, num_ws, w_dim)}``; components left out (or ``None``) start from the mean latent.
        Stage 1 alone returns None; an encoder (stage "3" of DESIGN.md) overrides this."""
        return None

    # -- the method -----------------------------------------------------------------------
    def decompose(self, images: Tensor) -> Decomposition:
        with torch.inference_mode(False), torch.enable_grad():
            return self._decompose(images)

    def _decompose(self, images: Tensor) -> Decomposition:
        if images.ndim != 4 or images.shape[1] != 3:
            raise JoinbenchError(f"join-s1 expects (B, 3, H, W) images, got {tuple(images.shape)}.")
        inv = self.load()
        images = images.detach().clone()  # a normal tensor even if the caller's was made in inference mode
        h, w = images.shape[-2:]
        r = inv.resolution
        resized = (h, w) != (r, r)
        target = images.to(self.device, torch.float32)
        if resized:
            target = F.interpolate(target, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        res = inv.invert(target, self.init_latents(images))

        def out(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            t = t.float()
            if resized:
                t = F.interpolate(t, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp_min(0.0)
            return t.to(images.device)

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
        if resized:
            extras["resized"] = {"from": (int(h), int(w)), "to": (r, r)}
        return Decomposition(out(res.linear["albedo"]), out(res.linear["shading"]), out(res.linear.get("specular")),
                             self.forward_model, timings=timings, errors=res.errors, extras=extras)


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

__all__ = ["JoinConfig", "JoinStage1"]
