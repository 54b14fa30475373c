"""FD-VGG: how close a GAN prior's samples are to the procedural data it was trained on.

Features: torchvision's ImageNet VGG16 ``features`` (provisioned offline by
:mod:`joinbench.lpips_weights`), cut after conv5_3's ReLU (``features[:30]``) and
global-average-pooled: 512-d per image. Images are the encoded components in [0, 1]
(albedo sRGB, shading/specular Reinhard: what the GAN produces, mapped by (x + 1) / 2),
ImageNet-normalised, at their **native resolution** (no resize to 224): at 64 px conv5_3's
map is 4x4, which average pooling handles, and it costs 12x less than upsampling. FD figures
are therefore comparable only between priors of the same resolution; every joinbench FD
uses this same protocol.

FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), in float64 with
``scipy.linalg.sqrtm``. Because FD with finite N is biased upwards, each evaluation also
reports the **floor**: the FD between two independent procedural sets of N images
(different stream seeds), and ``ratio = fd / fd_floor`` (1 is as good as it gets).
For joint priors each 3-channel slice is compared with its own component; the top-level
figures are the means over the three slices.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import JoinbenchError
from ..forward import COMPONENTS

CONV5_3_RELU_END = 30  # torchvision vgg16().features[:30] ends with conv5_3's ReLU
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_SEED_A = 1_000_000_007  # procedural stream seeds of the two reference sets
EVAL_SEED_B = 2_000_000_011


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of (N, D) features."""
    f = features.detach().cpu().double().numpy() if isinstance(features, Tensor) else np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm`` without its singular-matrix chatter (``disp`` is deprecated in scipy >= 1.16)."""
    import warnings

    from scipy import linalg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LinAlgWarning for singular covariances (N < 512), deprecations
        try:
            out = linalg.sqrtm(a, disp=False)
        except TypeError:  # a scipy without ``disp``
            out = linalg.sqrtm(a)
    return out[0] if isinstance(out, tuple) else out


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product (N < D): regularise, as pytorch-fid does
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    fd = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(fd, 0.0)


def fd_from_features(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


class VGGFeatures:
    """Images (B, 3, H, W) in [0, 1] -> (B, 512) pooled conv5_3 features."""

    def __init__(self, device: torch.device | str = "cpu"):
        from ..lpips_weights import vgg16_features

        self.device = torch.device(device)
        self.net = vgg16_features(self.device)[:CONV5_3_RELU_END]
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        x = (images.to(self.device, torch.float32).clamp(0, 1) - self.mean) / self.std
        return self.net(x).mean(dim=(2, 3)).double().cpu()


def _dataset_features(dataset, components: Sequence[str], n: int, seed: int, resolution: int,
                      extractor: VGGFeatures, batch: int) -> dict[str, Tensor]:
    stream = dataset.train_stream(batch, extractor.device, seed, resolution)
    feats: dict[str, list[Tensor]] = {c: [] for c in components}
    done = 0
    while done < n:
        b = next(stream)
        m = min(batch, n - done)
        for c in components:
            feats[c].append(extractor(dataset.forward_model.encode(c, b[c][:m])))
        done += m
    return {c: torch.cat(v) for c, v in feats.items()}


def _generated_features(prior, n: int, seed: int, extractor: VGGFeatures, batch: int,
                        truncation_psi: float) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(int(seed))
    feats: dict[str, list[Tensor]] = {c: [] for c in prior.channels}
    with torch.no_grad():
        for i in range(0, n, batch):
            m = min(batch, n - i)
            z = torch.randn(m, prior.z_dim, generator=gen)
            noise = [torch.randn(m, *s[1:], generator=gen).to(prior.device) for s in prior.noise_shapes()]
            img = prior.to_encoded(prior.G(z.to(prior.device), truncation_psi, noise=noise).float())
            for c, part in prior.split(img).items():
                feats[c].append(extractor(part))
    return {c: torch.cat(v) for c, v in feats.items()}


def evaluate_priors(priors: Sequence, n: int = 5000, device: str | torch.device = "auto", seed: int = 0,
                    batch: int = 64, truncation_psi: float = 1.0, update_sidecar: bool = False) -> dict[str, dict[str, Any]]:
    """FD-VGG of several priors of one dataset and resolution, sharing the procedural reference sets."""
    from ..env import resolve_device
    from ..training.data import create_training_dataset

    if not priors:
        return {}
    if n < 2:
        raise JoinbenchError(f"FD needs at least 2 samples per set (got --n {n}).")
    datasets = {(p.dataset, p.resolution, p.sidecar.get("forward_model")) for p in priors}
    if len(datasets) != 1:
        raise JoinbenchError(f"evaluate_priors needs priors of one dataset and resolution, got {sorted(map(str, datasets))}.")
    name, res, fm = datasets.pop()
    dev = resolve_device(device)
    extractor = VGGFeatures(dev)
    ds = create_training_dataset(name, res, fm)
    comps = sorted({c for p in priors for c in p.channels}, key=COMPONENTS.index)
    ref_a = _dataset_features(ds, comps, n, EVAL_SEED_A + 2 * seed, res, extractor, batch)
    ref_b = _dataset_features(ds, comps, n, EVAL_SEED_B + 2 * seed, res, extractor, batch)
    floors = {c: fd_from_features(ref_a[c], ref_b[c]) for c in comps}
    results: dict[str, dict[str, Any]] = {}
    for p in priors:
        orig = p.device
        p.G.to(dev)
        p.device = dev
        try:
            gen = _generated_features(p, n, seed, extractor, batch, truncation_psi)
        finally:
            p.G.to(orig)
            p.device = orig
        per = {c: {"fd": fd_from_features(gen[c], ref_a[c]), "fd_floor": floors[c]} for c in p.channels}
        for v in per.values():
            v["ratio"] = v["fd"] / v["fd_floor"] if v["fd_floor"] > 0 else None
        fd = float(np.mean([v["fd"] for v in per.values()]))
        floor = float(np.mean([v["fd_floor"] for v in per.values()]))
        res_p = {"fd": fd, "fd_floor": floor, "ratio": fd / floor if floor > 0 else None, "n": n}
        if p.component == "joint":
            res_p["components"] = per
        results[p.component] = res_p
        if update_sidecar:
            write_fd(p, res_p, seed=seed, truncation_psi=truncation_psi)
    return results


def evaluate_prior(prior, n: int = 5000, device: str | torch.device = "auto", seed: int = 0, batch: int = 64,
                   truncation_psi: float = 1.0, update_sidecar: bool = False) -> dict[str, Any]:
    """``{fd, fd_floor, ratio, n}`` (joint priors add ``components``) for one loaded prior."""
    return evaluate_priors([prior], n, device, seed, batch, truncation_psi, update_sidecar)[prior.component]


def write_fd(prior, result: dict[str, Any], seed: int = 0, truncation_psi: float = 1.0) -> None:
    """Store FD figures in the prior's sidecar (re-read, updated, written atomically)."""
    import json

    from ..env import write_json

    from .bank import read_sidecar

    data = read_sidecar(prior.sidecar_path, prior.dataset, prior.component)
    data.update({
        "fd": round(result["fd"], 6), "fd_floor": round(result["fd_floor"], 6),
        "fd_ratio": round(result["ratio"], 6) if result["ratio"] is not None else None, "fd_n": result["n"],
        "fd_components": result.get("components"), "fd_seed": seed, "fd_truncation_psi": truncation_psi,
        "fd_date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    write_json(prior.sidecar_path, json.loads(json.dumps(data)))
    prior.sidecar = data


__all__ = [
    "VGGFeatures",
    "evaluate_prior",
    "evaluate_priors",
    "fd_from_features",
    "feature_statistics",
    "frechet_distance",
    "write_fd",
]
