"""Exact order statistics of each image's pairwise distances, and the eps of docs/algorithm.md step 3.

``pair_ranks_torch`` selects without sorting everything: a sorted sample brackets each
wanted rank, one pass counts what lies below the bracket, and only the values inside it
are sorted. The bracket is checked; rows where it missed fall back to a full sort, so the
result is always exact.
"""
from __future__ import annotations

import math

import torch

from .formulas import doubled_percentile_ranks, lerp, sqrt_rn

SAMPLE_SIZE = 1 << 15


def _triangle(dist: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``[B, n*n]``: the valid upper-triangle distances of each image, +inf elsewhere."""
    B, n, _ = dist.shape
    idx = torch.arange(n, device=dist.device)
    keep = (idx[None, :, None] < idx[None, None, :]) & (idx[None, None, :] < counts[:, None, None])
    return dist.masked_fill(~keep, math.inf).reshape(B, n * n)


def pair_ranks_torch(dist: torch.Tensor, counts: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """``ranks[b, k]``-th smallest (0-based) of image ``b``'s unordered pair distances
    ``dist[b, i, j]``, ``i < j < counts[b]``. Returns ``[B, K]`` in ``dist``'s dtype."""
    values = _triangle(dist, counts)
    B, L = values.shape
    if L <= 4 * SAMPLE_SIZE:
        return values.sort(1).values.gather(1, ranks)
    stride = L // SAMPLE_SIZE
    sample = values[:, ::stride].sort(1).values
    S = sample.shape[1]
    width = int(4 * math.sqrt(S)) + 16
    pos = ranks.to(torch.float64) * (S / L)
    lo_i = (pos.amin(1) - width).floor().long()
    hi_i = (pos.amax(1) + width).ceil().long()
    inf = torch.full((B, 1), math.inf, dtype=values.dtype, device=values.device)
    lo = torch.where(lo_i >= 0, sample.gather(1, lo_i.clamp(0, S - 1)[:, None])[:, 0], -inf[:, 0])
    hi = torch.where(hi_i < S, sample.gather(1, hi_i.clamp(0, S - 1)[:, None])[:, 0], inf[:, 0])
    below = (values < lo[:, None]).sum(1)
    inside = (values >= lo[:, None]) & (values <= hi[:, None])
    n_inside = inside.sum(1)
    # The values inside each bracket, sorted by value within each row.
    rows = inside.nonzero()[:, 0]
    kept = values[inside]
    order = torch.argsort(kept, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]
    kept = kept[order]
    start = torch.cumsum(n_inside, 0) - n_inside
    local = ranks - below[:, None]
    ok = (local >= 0).all(1) & (local < n_inside[:, None]).all(1)
    at = (start[:, None] + local.clamp(min=0)).clamp(max=max(kept.numel() - 1, 0))
    out = kept[at] if kept.numel() else torch.full_like(ranks, math.inf, dtype=values.dtype)
    if not bool(ok.all()):
        bad = (~ok).nonzero().flatten()
        out[bad] = values[bad].sort(1).values.gather(1, ranks[bad])
    return out


def eps_from_sq_distances(sq_dist: torch.Tensor, counts: torch.Tensor, q: float | torch.Tensor,
                          floor: float | torch.Tensor, select=pair_ranks_torch) -> torch.Tensor:
    """``max(percentile_q(ordered pair distances), floor)`` per image, in float64, from
    squared distances (order statistics commute with the monotone sqrt); NaN for images
    with fewer than 2 points. ``select`` has ``pair_ranks_torch``'s signature; ``q`` as
    ``doubled_percentile_ranks`` takes it."""
    counts = counts.to(torch.int64)
    ranks, t = doubled_percentile_ranks(counts * (counts - 1) // 2, q)
    safe = counts >= 2
    return eps_from_values(select(sq_dist, torch.where(safe, counts, 2), ranks * safe[:, None]), t, counts, floor)


def eps_from_values(values: torch.Tensor, t: torch.Tensor, counts: torch.Tensor,
                    floor: float | torch.Tensor) -> torch.Tensor:
    """The end of ``eps_from_sq_distances`` once the two order statistics are known:
    ``values`` ``[B, 2]`` (squared distances at the ranks ``doubled_percentile_ranks``
    gives, ``t`` its lerp fraction): correctly rounded square roots, NumPy's lerp, the
    floor; NaN for images with fewer than 2 points."""
    roots = sqrt_rn(values.to(torch.float64).clamp(min=0.0))
    eps = lerp(roots[:, 0], roots[:, 1], t).clamp(min=floor)
    return torch.where(counts >= 2, eps, math.nan)
