"""Nearest-neighbour check of a GAN prior: are its samples new images or copies?

FD-VGG (:mod:`joinbench.gan.fd`) says how far a prior's samples are from the procedural data
as a distribution; it cannot say whether a good-looking prior merely reproduces images it was
trained on. This check looks at single images: for ``n`` samples of the prior (EMA generator,
psi 1, constant noise, latents from a CPU generator seeded ``seed``: the same samples as
``joinbench priors sample``), it finds the closest of ``pool`` procedural **training** images
by LPIPS-Alex and shows each pair side by side with its distance.

- The pool is the start of the prior's own training stream: the procedural stream seeded
  with the training seed its sidecar records (``train.seed``), rendered at the prior's
  resolution in its encoded space. The per-image seeds come from one seeded generator drawn
  in order, whatever the batch, chunk or data-pool size, so these are the first ``pool``
  images its training rendered (``joinbench.training.data``).
- A reference puts the distances in scale: ``reference`` held-out procedural images (another
  stream seed, never in the pool) get the same search. Samples whose nearest distance is far
  below the held-out images' are suspiciously close to a training image (copies); samples far
  above them are not images of the training distribution at all (what an undertrained prior
  makes); about equal is what new images of the right kind look like.

LPIPS-Alex of every (sample, pool image) pair without running the network per pair: LPIPS is
``sum_l mean_hw sum_c w_lc (a_lchw - b_lchw)^2`` over unit-normalised features, which expands
to ``|a|_w^2 + |b|_w^2 - 2 (w a) . b``: features are computed once per image and the cross
terms are one matrix product (float64), equal to ``lpips.LPIPS(a, b)`` up to rounding (tested).
The search costs one AlexNet forward per image, and ``--component all`` searches for every
prior of a dataset in one pass over the pool, so the pool is rendered once.
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
    component: str = "albedo"  # albedo | shading | specular | joint | all (every prior, one pass over the pool)
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


@torch.no_grad()
def search(queries: dict[str, tuple[Tensor, list[str]]], pool: Iterable[dict[str, Tensor]],
           metric: PairwiseLPIPS) -> dict[str, dict[str, Tensor]]:
    """For each named query set ``(images (B, 3k, H, W), its k components)``, the closest pool
    image: ``distance`` (B,), ``index`` (B,) into the pool as streamed, ``image`` (B, 3k, H, W).
    ``pool`` yields batches ``{component: (m, 3, H, W)}``; each component's features are
    computed once per batch and shared by every query set. With k components (a joint prior)
    the distance is the mean of the per-component LPIPS."""
    q_feats = {name: [metric.features(part) for part in images.split(3, dim=1)]
               for name, (images, _) in queries.items()}
    out = {name: {"distance": torch.full((images.shape[0],), math.inf, dtype=torch.float64),
                  "index": torch.full((images.shape[0],), -1, dtype=torch.int64),
                  "image": torch.zeros_like(images, device="cpu")} for name, (images, _) in queries.items()}
    seen = 0
    for chunk in pool:
        needed = {c for _, comps in queries.values() for c in comps}
        p_feats = {c: metric.features(chunk[c]) for c in needed}
        for name, (_, comps) in queries.items():
            d = sum(metric.between(qf, p_feats[c]) for qf, c in zip(q_feats[name], comps)) / len(comps)
            value, where = d.cpu().min(dim=1)
            best = out[name]
            better = value < best["distance"]
            if better.any():
                best["distance"][better] = value[better]
                best["index"][better] = where[better] + seen
                best["image"][better] = torch.cat([chunk[c].cpu()[where[better]] for c in comps], 1).float()
        seen += next(iter(chunk.values())).shape[0]
    if seen == 0:
        raise JoinbenchError("The pool of the nearest-neighbour search is empty.")
    return out


def _stream_images(dataset, n: int, seed: int, resolution: int, batch: int,
                   device: torch.device) -> Iterator[dict[str, Tensor]]:
    """``n`` images of the procedural training stream seeded ``seed``: batches of every
    component in encoded space."""
    from ..training.data import TrainStream

    stream = TrainStream(dataset, batch, device, seed, resolution)
    done = 0
    while done < n:
        b = next(stream)
        m = min(batch, n - done)
        yield {c: dataset.forward_model.encode(c, b[c][:m]) for c in COMPONENTS if c in b}
        done += m


def nearest_check(cfg: NearestConfig, progress: bool = True) -> list[dict[str, Any]]:
    """Run the check for ``cfg.component`` (``all``: every prior of the dataset, sharing one
    pass over the pool); one result per prior: samples, their nearest pool images and
    distances, the held-out reference distances and the facts of the run (:func:`write_nearest`)."""
    from tqdm import tqdm

    from ..env import device_name, git_commit, resolve_device, versions
    from .bank import load_prior, sidecar_path
    from ..training.data import create_training_dataset

    cfg.check()
    device = resolve_device(cfg.device)
    names = [cfg.component]
    if cfg.component == "all":
        names = [*COMPONENTS, *(["joint"] if sidecar_path(cfg.dataset, "joint", cfg.path).is_file() else [])]
    priors = [load_prior(cfg.dataset, name, device, cfg.path) for name in names]
    first = priors[0]
    if len({(p.resolution, p.sidecar.get("forward_model")) for p in priors}) != 1:
        raise JoinbenchError(f"The {cfg.dataset} priors differ in resolution or forward model; check them one at a time.")
    pool_seed = int((first.sidecar.get("train") or {}).get("seed", 0)) if cfg.pool_seed is None else int(cfg.pool_seed)
    reference = cfg.n if cfg.reference is None else cfg.reference
    ref_seed = REFERENCE_SEED + cfg.seed
    ds = create_training_dataset(cfg.dataset, first.resolution, first.sidecar.get("forward_model"))
    held_out = list(_stream_images(ds, reference, ref_seed, first.resolution, cfg.batch, device)) if reference else []
    queries: dict[str, tuple[Tensor, list[str]]] = {}
    samples = {}
    for p in priors:
        samples[p.component] = p.sample(cfg.n, seed=cfg.seed, noise_mode="const").cpu()
        queries[p.component] = (samples[p.component], p.channels)
        if held_out:
            ref = torch.cat([torch.cat([b[c] for c in p.channels], 1).cpu() for b in held_out])
            queries[f"reference:{p.component}"] = (ref, p.channels)
    metric = PairwiseLPIPS("alex", device)
    pool = tqdm(_stream_images(ds, cfg.pool, pool_seed, first.resolution, cfg.batch, device),
                total=math.ceil(cfg.pool / cfg.batch), unit="batch", desc=f"nearest: {cfg.pool} training images",
                disable=not progress)
    found = search(queries, pool, metric)  # one pass over the pool for every prior and the reference
    facts = {"config": asdict(cfg), "pool_seed": pool_seed,
             "code": {"commit": git_commit(), "device": device_name(device), "versions": versions()},
             "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    empty = torch.empty(0, dtype=torch.float64)
    return [{**facts, "prior": p, "samples": samples[p.component], **found[p.component],
             "reference": {"n": reference, "stream_seed": ref_seed,
                           "distance": found[f"reference:{p.component}"]["distance"] if held_out else empty}}
            for p in priors]


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
    """The figure at ``out`` (PNG or JPEG by its suffix) and its numbers beside it (same name, ``.json``)."""
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
