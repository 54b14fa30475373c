"""Latent regularisers of stage 1 and the chunked nearest-neighbour search they use.

Each regulariser maps latents ``w`` -- (B, w_dim) in W or (B, num_ws, w_dim) in W+ -- to an
*unweighted* penalty per image, (B,); the inversion loop multiplies it by the configured
weight. Nearest neighbours are constants (found under ``no_grad``, re-found every step);
gradients flow only through ``w``.

``none``
    zero.
``in-domain``
    ``mean((w - w_mean)^2)`` over all latent entries of the image (the authors' code:
    ``(w - w_avg).square().mean()``), ``w_mean`` the mean latent the inversion starts from.
``knn``
    the paper's Figure 4: the mean squared distance to the ``k`` (= 5) nearest latents of a
    bank of N mapped samples, ``mean_j mean_d (w_d - n_jd)^2``. In W+ every layer's latent
    queries its own neighbours and the image's penalty is the mean over layers.
``knn-hinge``
    the authors' code: ``max(0, ||(w - mu) / (r/2 * D)||^2 - 1)``, ``mu`` the mean of the 50
    nearest bank latents, ``D = 1`` in W and ``num_ws`` in W+ (norm over the whole
    (num_ws, w_dim) tensor, each layer's latent with its own ``mu``; with ``D = num_ws`` the
    W+ hinge admits a per-layer distance up to ``sqrt(num_ws) r/2``, as in the authors' code).
    The authors hard-code ``r`` per prior (materials 14.57 / 15.30 / 14.60) without saying how
    it was found. Here it is **derived from the bank** (:func:`derive_hinge_radius`): for the
    first ``samples`` bank latents (i.i.d. draws), the distance of each to the mean of its own
    50 nearest *other* bank latents; ``r/2`` is the ``percentile`` (default 95th) of those
    distances, so the hinge is zero for that fraction of the prior's own samples and grows
    for latents less typical than that.

:func:`knn_search` scans the bank in chunks keeping a running top-k, so N = 100,000 latents
and any number of queries fit in a few tens of MB on a CPU; it runs in torch on the
inversion's device.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import JoinbenchError

REGULARISERS = ("none", "in-domain", "knn", "knn-hinge")


@torch.no_grad()
def knn_search(queries: Tensor, bank: Tensor, k: int, chunk: int = 16384, query_chunk: int = 512,
               exclude: Tensor | None = None, bank_sqnorm: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest bank rows of each query (squared L2), scanning the bank in chunks.

    queries (Q, D), bank (N, D) -> (squared distances (Q, k) ascending, indices (Q, k)).
    ``exclude`` (Q,) optionally names one bank index per query to skip (the query itself).
    Memory: ``query_chunk x chunk`` distances at a time."""
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"knn_search needs (Q, D) queries and an (N, D) bank, got {tuple(queries.shape)} and {tuple(bank.shape)}")
    n = bank.shape[0] - (1 if exclude is not None else 0)
    if not 1 <= k <= n:
        raise JoinbenchError(f"k-nearest-neighbour search for k={k} needs at least k bank latents (the bank has {n}); "
                             "raise bank_size or lower k.")
    queries = queries.to(bank.dtype)
    if bank_sqnorm is None:
        bank_sqnorm = bank.square().sum(1)
    out_d, out_i = [], []
    for q0 in range(0, queries.shape[0], query_chunk):
        q = queries[q0:q0 + query_chunk]
        q_sq = q.square().sum(1, keepdim=True)
        best_d = q.new_full((q.shape[0], k), float("inf"))
        best_i = torch.full((q.shape[0], k), -1, dtype=torch.long, device=q.device)
        for b0 in range(0, bank.shape[0], chunk):
            b = bank[b0:b0 + chunk]
            d = (q_sq + bank_sqnorm[b0:b0 + chunk][None] - 2.0 * (q @ b.t())).clamp_min_(0.0)
            if exclude is not None:
                ex = exclude[q0:q0 + query_chunk].to(q.device) - b0
                hit = (ex >= 0) & (ex < b.shape[0])
                if bool(hit.any()):
                    rows = torch.nonzero(hit).squeeze(1)
                    d[rows, ex[rows]] = float("inf")
            kk = min(k, b.shape[0])
            cd, ci = d.topk(kk, dim=1, largest=False)
            merged_d = torch.cat([best_d, cd], dim=1)
            merged_i = torch.cat([best_i, ci + b0], dim=1)
            best_d, pos = merged_d.topk(k, dim=1, largest=False)
            best_i = merged_i.gather(1, pos)
        out_d.append(best_d)
        out_i.append(best_i)
    return torch.cat(out_d), torch.cat(out_i)


def _queries(w: Tensor) -> tuple[Tensor, int]:
    """(B, w_dim) or (B, L, w_dim) -> (B * L, w_dim) and L."""
    if w.ndim == 2:
        return w, 1
    if w.ndim == 3:
        return w.reshape(-1, w.shape[-1]), w.shape[1]
    raise ValueError(f"latents must be (B, w_dim) or (B, num_ws, w_dim), got {tuple(w.shape)}")


class LatentRegulariser:
    """Base: ``penalty(w) -> (B,)`` unweighted; ``weight`` is applied by the caller."""

    name = "none"

    def __init__(self, weight: float = 0.0):
        self.weight = float(weight)

    def penalty(self, w: Tensor) -> Tensor:
        return w.new_zeros(w.shape[0])

    def __call__(self, w: Tensor) -> Tensor:
        return self.penalty(w)

    def describe(self) -> dict:
        return {"name": self.name, "weight": self.weight}


class NoRegulariser(LatentRegulariser):
    name = "none"


class InDomainRegulariser(LatentRegulariser):
    """``mean((w - w_mean)^2)`` per image."""

    name = "in-domain"

    def __init__(self, mean: Tensor, weight: float):
        super().__init__(weight)
        self.mean = mean.reshape(-1)

    def penalty(self, w: Tensor) -> Tensor:
        return (w - self.mean.to(w.dtype)).square().flatten(1).mean(1)


class _BankRegulariser(LatentRegulariser):
    def __init__(self, bank: Tensor, k: int, weight: float, chunk: int = 16384):
        super().__init__(weight)
        self.bank = bank
        self.bank_sqnorm = bank.square().sum(1)
        self.k = int(k)
        self.chunk = int(chunk)

    def neighbours(self, w: Tensor) -> Tensor:
        """Indices (B * L, k) of each query's nearest bank latents (constant)."""
        q, _ = _queries(w.detach())
        return knn_search(q, self.bank, self.k, self.chunk, bank_sqnorm=self.bank_sqnorm)[1]


class KnnRegulariser(_BankRegulariser):
    """Mean squared distance to the k nearest bank latents (paper, Figure 4)."""

    name = "knn"

    def penalty(self, w: Tensor) -> Tensor:
        q, layers = _queries(w)
        nbrs = self.bank[self.neighbours(w)].to(w.dtype)  # (Q, k, D), no grad
        per_query = (q[:, None, :] - nbrs).square().mean(dim=(1, 2))
        return per_query.reshape(w.shape[0], layers).mean(1)


def hinge_value(w: Tensor, mu: Tensor, radius: float) -> Tensor:
    """``max(0, ||(w - mu) / (radius/2 * D)||^2 - 1)`` per image; D = 1 for (B, w_dim), num_ws for (B, num_ws, w_dim)."""
    depth = 1 if w.ndim == 2 else w.shape[1]
    scaled = (w - mu) / (0.5 * float(radius) * depth)
    return (scaled.flatten(1).square().sum(1) - 1.0).clamp_min(0.0)


class KnnHingeRegulariser(_BankRegulariser):
    """The authors' hinge on the distance to the mean of the k (= 50) nearest bank latents."""

    name = "knn-hinge"

    def __init__(self, bank: Tensor, k: int, weight: float, radius: float, chunk: int = 16384):
        super().__init__(bank, k, weight, chunk)
        self.radius = float(radius)

    def knn_mean(self, w: Tensor) -> Tensor:
        mu = self.bank[self.neighbours(w)].mean(1).to(w.dtype)
        return mu.reshape(w.shape)

    def penalty(self, w: Tensor) -> Tensor:
        return hinge_value(w, self.knn_mean(w), self.radius)

    def describe(self) -> dict:
        return {**super().describe(), "radius": self.radius, "k": self.k}


@torch.no_grad()
def knn_mean_distances(bank: Tensor, k: int = 50, samples: int = 2000, chunk: int = 16384) -> Tensor:
    """For the first ``samples`` bank latents: distance to the mean of their own k nearest *other* bank latents."""
    m = min(int(samples), bank.shape[0])
    q = bank[:m]
    _, idx = knn_search(q, bank, k, chunk, exclude=torch.arange(m, device=bank.device))
    dists = []
    for i in range(0, m, 256):  # gather in slices: (256, k, D) at a time
        dists.append((q[i:i + 256] - bank[idx[i:i + 256]].mean(1)).norm(dim=1))
    return torch.cat(dists)


def derive_hinge_radius(bank: Tensor, k: int = 50, percentile: float = 95.0, samples: int = 2000,
                        chunk: int = 16384) -> float:
    """The hinge's ``r`` from the bank itself: ``r/2`` = the ``percentile`` of :func:`knn_mean_distances`."""
    if not 0.0 < percentile <= 100.0:
        raise JoinbenchError(f"hinge_percentile must be in (0, 100], got {percentile}.")
    d = knn_mean_distances(bank, k, samples, chunk).double()
    return 2.0 * float(torch.quantile(d, percentile / 100.0))


__all__ = [
    "InDomainRegulariser", "KnnHingeRegulariser", "KnnRegulariser", "LatentRegulariser", "NoRegulariser",
    "REGULARISERS", "derive_hinge_radius", "hinge_value", "knn_mean_distances", "knn_search",
]
