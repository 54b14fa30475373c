"""Latent regularisers of stage 1 and the chunked nearest-neighbour search they use.

Each regulariser maps latents ``w`` -- (B, w_dim) in W or (B, num_ws, w_dim) in W+ -- to an
*unweighted* penalty per image, (B,); the inversion loop multiplies it by the configured
weight. Stage 1 runs one regulariser for the fused bank's members at once (``grouped``: w
(B, G, ...), one stacked bank per member, the penalty summed over members). Nearest neighbours are constants (found under ``no_grad``, re-found every step);
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
inversion's device, for all members in one batched matmul per chunk, without host syncs.
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

    queries (Q, D), bank (N, D) -> (squared distances (Q, k) ascending, indices (Q, k)); or a
    group: queries (G, Q, D), bank (G, N, D) -> (G, Q, k), each member searching its own bank
    (one batched matmul per chunk for all members). ``exclude`` ((Q,) or (G, Q)) optionally
    names one bank index per query to skip (the query itself). Memory: ``query_chunk x chunk``
    distances per member at a time. No host synchronisation."""
    if queries.ndim == 2 and bank.ndim == 2:
        d, i = knn_search(queries[None], bank[None], k, chunk, query_chunk, None if exclude is None else exclude[None],
                          None if bank_sqnorm is None else bank_sqnorm[None])
        return d[0], i[0]
    if queries.ndim != 3 or bank.ndim != 3 or queries.shape[0] != bank.shape[0] or queries.shape[2] != bank.shape[2]:
        raise ValueError(f"knn_search needs (Q, D) queries and an (N, D) bank, or (G, Q, D) and (G, N, D), got "
                         f"{tuple(queries.shape)} and {tuple(bank.shape)}")
    n = bank.shape[1] - (1 if exclude is not None else 0)
    if not 1 <= k <= n:
        raise JoinbenchError(f"k-nearest-neighbour search for k={k} needs at least k bank latents (the bank has {n}); "
                             "raise bank_size or lower k.")
    queries = queries.to(bank.dtype)
    if bank_sqnorm is None:
        bank_sqnorm = bank.square().sum(-1)
    out_d, out_i = [], []
    for q0 in range(0, queries.shape[1], query_chunk):
        q = queries[:, q0:q0 + query_chunk]
        q_sq = q.square().sum(-1, keepdim=True)
        best_d = q.new_full((*q.shape[:2], k), float("inf"))
        best_i = torch.full((*q.shape[:2], k), -1, dtype=torch.long, device=q.device)
        for b0 in range(0, bank.shape[1], chunk):
            b = bank[:, b0:b0 + chunk]
            d = (q_sq + bank_sqnorm[:, None, b0:b0 + chunk] - 2.0 * torch.bmm(q, b.transpose(1, 2))).clamp_min_(0.0)
            if exclude is not None:  # a mask, not indexing: nothing is read back to the host
                cols = torch.arange(b0, b0 + b.shape[1], device=q.device)
                d.masked_fill_(cols == exclude[:, q0:q0 + query_chunk, None].to(q.device), float("inf"))
            cd, ci = d.topk(min(k, b.shape[1]), dim=-1, largest=False)
            best_d, pos = torch.cat([best_d, cd], dim=-1).topk(k, dim=-1, largest=False)
            best_i = torch.cat([best_i, ci + b0], dim=-1).gather(-1, pos)
        out_d.append(best_d)
        out_i.append(best_i)
    return torch.cat(out_d, dim=1), torch.cat(out_i, dim=1)


class LatentRegulariser:
    """Base: ``penalty(w) -> (B,)`` unweighted; ``weight`` is applied by the caller.

    A regulariser holds the statistics of one generator, or (``grouped``) of a group of G
    generators stacked along a leading dim (a fused bank's members): then ``w`` is (B, G,
    w_dim) in W or (B, G, num_ws, w_dim) in W+, and the penalty is the sum over members, all
    computed at once. :meth:`member` gives one member's regulariser (views, no copies)."""

    name = "none"

    def __init__(self, weight: float = 0.0, grouped: bool = False):
        self.weight = float(weight)
        self.grouped = grouped

    def penalty(self, w: Tensor) -> Tensor:
        return w.new_zeros(w.shape[0])

    def __call__(self, w: Tensor) -> Tensor:
        return self.penalty(w)

    def member(self, i: int) -> "LatentRegulariser":
        return type(self)(self.weight)

    def describe(self) -> dict:
        return {"name": self.name, "weight": self.weight}

    def _grouped_latents(self, w: Tensor) -> Tensor:
        """``w`` as (B, G, L, w_dim) (L = 1 in W)."""
        if not self.grouped:
            w = w[:, None]
        if w.ndim == 3:
            return w[:, :, None]
        if w.ndim == 4:
            return w
        raise ValueError(f"latents must be (B, w_dim) or (B, num_ws, w_dim) (a group: (B, G, ...)), got {tuple(w.shape)}")


class NoRegulariser(LatentRegulariser):
    name = "none"


class InDomainRegulariser(LatentRegulariser):
    """``mean((w - w_mean)^2)`` per image (and member)."""

    name = "in-domain"

    def __init__(self, mean: Tensor, weight: float, grouped: bool = False):
        super().__init__(weight, grouped)
        self.mean = mean.reshape(-1, mean.shape[-1]) if grouped else mean.reshape(1, -1)  # (G, w_dim)

    def penalty(self, w: Tensor) -> Tensor:
        d = self._grouped_latents(w) - self.mean.to(w.dtype)[:, None, :]
        return d.square().mean(dim=(2, 3)).sum(1)

    def member(self, i: int) -> "InDomainRegulariser":
        return InDomainRegulariser(self.mean[i], self.weight)


class _BankRegulariser(LatentRegulariser):
    def __init__(self, bank: Tensor, k: int, weight: float, chunk: int = 16384, grouped: bool = False):
        super().__init__(weight, grouped)
        self.bank = bank if grouped else bank[None]  # (G, N, w_dim)
        self.bank_sqnorm = self.bank.square().sum(-1)
        self.k = int(k)
        self.chunk = int(chunk)

    def neighbours(self, w: Tensor) -> Tensor:
        """(B, G, L, k, w_dim): each query's nearest bank latents (constants)."""
        q = self._grouped_latents(w.detach())
        b, g, layers, dim = q.shape
        idx = knn_search(q.transpose(0, 1).reshape(g, b * layers, dim), self.bank, self.k, self.chunk,
                         bank_sqnorm=self.bank_sqnorm)[1]  # (G, B * L, k)
        nbrs = self.bank[torch.arange(g, device=idx.device)[:, None, None], idx]  # (G, B * L, k, w_dim)
        return nbrs.reshape(g, b, layers, self.k, dim).transpose(0, 1).to(w.dtype)


class KnnRegulariser(_BankRegulariser):
    """Mean squared distance to the k nearest bank latents (paper, Figure 4)."""

    name = "knn"

    def penalty(self, w: Tensor) -> Tensor:
        q = self._grouped_latents(w)
        per_query = (q[:, :, :, None, :] - self.neighbours(w)).square().mean(dim=(3, 4))  # (B, G, L)
        return per_query.mean(2).sum(1)

    def member(self, i: int) -> "KnnRegulariser":
        return KnnRegulariser(self.bank[i], self.k, self.weight, self.chunk)


def hinge_value(w: Tensor, mu: Tensor, radius: float | Tensor) -> Tensor:
    """``max(0, ||(w - mu) / (radius/2 * D)||^2 - 1)`` per image; D = 1 for (B, w_dim), num_ws for (B, num_ws, w_dim)
    (W is (B, 1, w_dim) here too); ``radius`` a float, or a tensor broadcast against ``w`` (one per image)."""
    depth = 1 if w.ndim == 2 else w.shape[1]
    scaled = (w - mu) / (0.5 * radius * depth)
    return (scaled.flatten(1).square().sum(1) - 1.0).clamp_min(0.0)


class KnnHingeRegulariser(_BankRegulariser):
    """The authors' hinge on the distance to the mean of the k (= 50) nearest bank latents;
    ``radius``: one per member (a float, or a sequence for a group)."""

    name = "knn-hinge"

    def __init__(self, bank: Tensor, k: int, weight: float, radius, chunk: int = 16384, grouped: bool = False):
        super().__init__(bank, k, weight, chunk, grouped)
        self.radii = [float(r) for r in (radius if grouped else [radius])]
        self.radius_t = torch.tensor(self.radii, dtype=self.bank.dtype, device=self.bank.device)

    @property
    def radius(self) -> float:
        """The radius of a single regulariser (``radii`` for a group)."""
        return self.radii[0]

    def penalty(self, w: Tensor) -> Tensor:
        q = self._grouped_latents(w)  # (B, G, L, w_dim), L = 1 in W: D = L
        b, g = q.shape[:2]
        mu = self.neighbours(w).mean(3)
        radius = self.radius_t.to(w.dtype).repeat(b)[:, None, None]  # per (image, member) row
        return hinge_value(q.flatten(0, 1), mu.flatten(0, 1), radius).view(b, g).sum(1)

    def member(self, i: int) -> "KnnHingeRegulariser":
        return KnnHingeRegulariser(self.bank[i], self.k, self.weight, self.radii[i], self.chunk)

    def describe(self) -> dict:
        return {**super().describe(), "radius": self.radii if self.grouped else self.radius, "k": self.k}


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
