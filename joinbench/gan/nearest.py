"""Nearest-neighbour check of a GAN prior: are its samples new images or copies?

FD-VGG (:mod:`joinbench.gan.fd`) says how far a prior's samples are from the procedural data
as a distribution; it cannot say whether a good-looking prior merely reproduces images it was
trained on. This check looks at single images: for ``n`` samples of the prior (EMA generator,
psi 1, constant noise, latents from a CPU generator seeded ``seed``: the same samples as
``joinbench priors sample``), it finds the closest of ``pool`` procedural **training** images
by LPIPS-Alex and shows each pair side by side with its distance.

- The pool is the start of the prior's own training stream: the procedural stream seeded
  with the training seed its sidecar records (``train.seed``), rendered at the prior's
  resolution in its encoded space. A stream yields the same images whatever its batch or
  chunk, so for a prior trained by ``joinbench train prior`` these are the first ``pool``
  images it was shown (an engine that draws its batches differently still draws from the
  same distribution).
- A reference puts the distances in scale: ``reference`` held-out procedural images (another
  stream seed, never in the pool) get the same search. Samples whose nearest distance is far
  below the held-out images' are suspiciously close to a training image (copies); samples far
  above them are not images of the training distribution at all (what an undertrained prior
  makes); about equal is what new images of the right kind look like.

LPIPS-Alex of every (sample, pool image) pair without running the network per pair: LPIPS is
``sum_l mean_hw sum_c w_lc (a_lchw - b_lchw)^2`` over unit-normalised features, which expands
to ``|a|_w^2 + |b|_w^2 - 2 (w a) . b``: features are computed once per image and the cross
terms are one matrix product (float64), equal to ``lpips.LPIPS(a, b)`` up to rounding (tested).
The search costs one AlexNet forward per image, so 64 samples against a 4,096-image pool take
about as long as rendering the pool.
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import JoinbenchError
from ..forward import COMPONENTS

DEFAULT_POOL = 4096
REFERENCE_SEED = 3_000_000_019  # stream seed of the held-out reference images (not a training seed)


@dataclass
class NearestConfig:
    """Every setting of one nearest-neighbour check."""

    dataset: str = "materials"
    component: str = "albedo"  # albedo | shading | specular | joint
    n: int = 64  # prior samples
    pool: int = DEFAULT_POOL  # procedural training images searched
    reference: int | None = None  # held-out procedural images for scale (default: n)
    seed: int = 0  # latents of the samples (as `priors sample --seed`)
    pool_seed: int | None = None  # training stream seed (default: the prior's train.seed)
    batch: int = 256  # images per feature / render call
    device: str = "auto"
    path: str | None = None  # folder of the priors (default: shipped weights)

    def check(self) -> None:
        for name in ("n", "pool", "batch"):
            if getattr(self, name) < 1:
                raise JoinbenchError(f"--{name} must be at least 1, got {getattr(self, name)}.")
        if self.reference is not None and self.reference < 0:
            raise JoinbenchError(f"--reference must be 0 or more, got {self.reference}.")


class PairwiseLPIPS:
    """LPIPS (v0.1, AlexNet by default) between every image of one set and every image of
    another, from per-image features (module docstring). Images: (B, 3, H, W) in [0, 1]."""

    def __init__(self, net: str = "alex", device: torch.device | str = "cpu"):
        from ..lpips_weights import lpips_model
        from ..metrics import LPIPS_MIN_SIDE

        self.model = lpips_model(net, device)
        self.device = torch.device(device)
        self.min_side = LPIPS_MIN_SIDE[net]
        self.weights = [lin.model[-1].weight.detach().double().view(1, -1, 1, 1) for lin in self.model.lins]

    @torch.no_grad()
    def features(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(plain, weighted, self term) per image: (B, D) unit-normalised features, the same
        multiplied by the linear weights / (H W), and ``sum_l mean_hw sum_c w a^2`` (B,)."""
        import lpips

        x = images.to(self.device, torch.float32) * 2 - 1
        h, w = x.shape[-2:]
        if min(h, w) < self.min_side:  # as the lpips metric does for images below the trunk's size
            size = (math.ceil(h * self.min_side / min(h, w)), math.ceil(w * self.min_side / min(h, w)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        outs = self.model.net.forward(self.model.scaling_layer(x))
        plain, weighted, own = [], [], 0.0
        for f, wl in zip(outs, self.weights):
            f = lpips.normalize_tensor(f).double()
            fw = f * wl / (f.shape[-2] * f.shape[-1])
            plain.append(f.flatten(1))
            weighted.append(fw.flatten(1))
            own = own + (fw * f).flatten(1).sum(1)
        return torch.cat(plain, 1), torch.cat(weighted, 1), own

    @staticmethod
    def between(a: tuple[Tensor, Tensor, Tensor], b: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """(Na, Nb) LPIPS from :meth:`features` of two sets (clamped at 0 against rounding)."""
        return (a[2][:, None] + b[2][None, :] - 2.0 * a[1] @ b[0].T).clamp_min(0.0)

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        return self.between(self.features(a), self.features(b))


def _parts(images: Tensor) -> list[Tensor]:
    """A joint prior's (B, 9, H, W) as its three 3-channel components; others as they are."""
    return list(images.split(3, dim=1))


@torch.no_grad()
def search(queries: Tensor, pool: Iterable[Tensor], metric: PairwiseLPIPS) -> dict[str, Tensor]:
    """For each query (B, 3k, H, W) the closest pool image (pool: batches of the same shape):
    ``distance`` (B,), ``index`` (B,) into the pool as streamed, ``image`` (B, 3k, H, W).
    With k components the distance is the mean of the per-component LPIPS."""
    q_feats = [metric.features(p) for p in _parts(queries)]
    best = torch.full((queries.shape[0],), math.inf, dtype=torch.float64)
    index = torch.full((queries.shape[0],), -1, dtype=torch.int64)
    image = torch.zeros_like(queries, device="cpu")
    seen = 0
    for chunk in pool:
        d = sum(metric.between(qf, metric.features(p)) for qf, p in zip(q_feats, _parts(chunk))) / len(q_feats)
        d = d.cpu()
        value, where = d.min(dim=1)
        better = value < best
        if better.any():
            best[better] = value[better]
            index[better] = where[better] + seen
            image[better] = chunk.cpu()[where[better]].to(image.dtype)
        seen += chunk.shape[0]
    if seen == 0:
        raise JoinbenchError("The pool of the nearest-neighbour search is empty.")
    return {"distance": best, "index": index, "image": image}


def _stream_images(dataset, channels: list[str], n: int, seed: int, resolution: int, batch: int,
                   device: torch.device) -> Iterator[Tensor]:
    """``n`` images of the procedural training stream seeded ``seed``, in encoded space,
    ``channels`` stacked along dim 1 (a joint prior's albedo | shading | specular)."""
    from .train import TrainStream

    stream = TrainStream(dataset, batch, device, seed, resolution)
    done = 0
    while done < n:
        b = next(stream)
        m = min(batch, n - done)
        yield torch.cat([dataset.forward_model.encode(c, b[c][:m]) for c in channels], 1)
        done += m


def nearest_check(cfg: NearestConfig, progress: bool = True) -> dict[str, Any]:
    """Run the check; returns samples, their nearest pool images and distances, the held-out
    reference distances and the facts of the run (see :func:`write_nearest`)."""
    from tqdm import tqdm

    from ..env import device_name, git_commit, resolve_device, versions
    from .bank import load_prior
    from .train import create_training_dataset

    cfg.check()
    device = resolve_device(cfg.device)
    prior = load_prior(cfg.dataset, cfg.component, device, cfg.path)
    train = prior.sidecar.get("train") or {}
    pool_seed = int(train.get("seed", 0)) if cfg.pool_seed is None else int(cfg.pool_seed)
    reference = cfg.n if cfg.reference is None else cfg.reference
    ds = create_training_dataset(cfg.dataset, prior.resolution, prior.sidecar.get("forward_model"))
    metric = PairwiseLPIPS("alex", device)
    samples = prior.sample(cfg.n, seed=cfg.seed, noise_mode="const").cpu()
    ref_seed = REFERENCE_SEED + cfg.seed
    held_out = [s.cpu() for s in _stream_images(ds, prior.channels, reference, ref_seed, prior.resolution,
                                                 cfg.batch, device)] if reference else []
    pool = tqdm(_stream_images(ds, prior.channels, cfg.pool, pool_seed, prior.resolution, cfg.batch, device),
                total=math.ceil(cfg.pool / cfg.batch), unit="batch", desc=f"nearest: {cfg.pool} training images",
                disable=not progress)
    found = search(torch.cat([samples, *held_out]), pool, metric)  # one pass over the pool for both
    n = cfg.n
    ref = {"n": reference, "stream_seed": ref_seed, "distance": found["distance"][n:]}
    found = {k: v[:n] for k, v in found.items()}
    return {"config": asdict(cfg), "pool_seed": pool_seed, "prior": prior, "samples": samples, **found,
            "reference": ref, "code": {"commit": git_commit(), "device": device_name(device), "versions": versions()},
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def _quantiles(d: Tensor) -> dict[str, float]:
    q = torch.quantile(d.double(), torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)).tolist()
    return dict(zip(("min", "p10", "median", "p90", "max"), (round(v, 4) for v in q)))


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Distances in numbers: quantiles for the samples and the held-out reference, and how many
    samples are closer to a training image than the closest held-out procedural image is."""
    d = result["distance"]
    out = {"samples": _quantiles(d)}
    ref = result["reference"]["distance"]
    if ref.numel():
        out["reference"] = _quantiles(ref)
        out["samples_below_reference_min"] = int((d < ref.min()).sum())
    return out


def nearest_figure(result: dict[str, Any], path: str | Path, per_row: int | None = None) -> Path:
    """Pairs sample | nearest training image | LPIPS, several pairs per row."""
    from ..viz import grid_image, label_tile, save_image_atomic

    samples, image, dist = result["samples"], result["image"], result["distance"]
    k = samples.shape[1] // 3
    cell = max(64, samples.shape[-1])
    per_row = per_row or (4 if k == 1 else 2)
    cells = []
    for s, m, d, i in zip(samples, image, dist.tolist(), result["index"].tolist()):
        cells.append([*s.split(3), *m.split(3), label_tile(f"{d:.3f} (#{i})", cell)])
    rows = [sum(cells[r:r + per_row], []) for r in range(0, len(cells), per_row)]
    comps = COMPONENTS if k == 3 else [""]
    one = [f"sample {c}".strip() for c in comps] + [f"nearest {c}".strip() for c in comps] + ["LPIPS (pool #)"]
    return save_image_atomic(grid_image(rows, one * per_row, cell=cell), path)


def write_nearest(result: dict[str, Any], out: str | Path, command: str = "") -> tuple[Path, Path]:
    """The figure at ``out`` (PNG) and its numbers beside it (same name, ``.json``)."""
    from ..env import write_json

    out = Path(out)
    png = nearest_figure(result, out)
    prior = result["prior"]
    data = {
        "what": "nearest procedural training image (LPIPS-Alex) of each prior sample",
        "command": command, "code": result["code"], "date": result["date"],
        "prior": {"dataset": prior.dataset, "component": prior.component, "sha256": prior.sha256,
                  "images_seen": prior.sidecar.get("images_seen"), "resolution": prior.resolution},
        "config": result["config"], "pool_seed": result["pool_seed"],
        "reference": {k: v for k, v in result["reference"].items() if k != "distance"},
        "summary": summarise(result),
        "distance": [round(v, 6) for v in result["distance"].tolist()],
        "pool_index": result["index"].tolist(),
        "reference_distance": [round(v, 6) for v in result["reference"]["distance"].tolist()],
    }
    return png, write_json(out.with_suffix(".json"), data)


__all__ = ["DEFAULT_POOL", "NearestConfig", "PairwiseLPIPS", "nearest_check", "nearest_figure", "search",
           "summarise", "write_nearest"]
