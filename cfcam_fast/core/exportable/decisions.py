"""eps and the neighbour relation (docs/algorithm.md steps 3 and 4), decided exactly as the
CPU reference decides them, with fixed shapes.

The reference decides on SciPy's ``pdist``: the float64 sum of squared differences in
coordinate order, ``s = 0; s += (x_k - y_k)^2`` (``exact_sq`` in csrc/certified_cpu.cpp,
built with ``-ffp-contract=off``). ``exact_sq_distances`` writes that sum as ``d`` unrolled
float64 ``sub, mul, add`` steps; ONNX Runtime runs them as separate IEEE operations and
AOTInductor compiles them without contraction (``cams.export.aoti`` pins the flag), so no
fused multiply-add changes a bit: the values are ``pdist``'s, bit for bit.

- ``exact_decisions`` decides everything on those values (``3 d`` passes over
  ``[B, n, n]`` float64).
- ``certified_decisions`` decides on one augmented float64 matrix product
  (``core.cluster.distances.pairwise_sq_distances``) with a proven error bound and
  recomputes exactly only the two pairs that give eps; where the bound cannot settle a
  decision its certificate fails and the caller runs ``exact_decisions``.

Either way eps is ``core.selection.eps_from_sq_distances`` of the exact order statistics,
and a pair is a neighbour iff ``sqrt(D) <= eps`` on its exact ``D``. With a correctly rounded
square root (``formulas.sqrt_rn``; ONNX Runtime's and AOTInductor's float64 ``sqrt``) that
test is ``D <= sq_threshold(eps)`` (``core.cluster.distances``), the reference's, without
``nextafter``, which ONNX lacks.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..cluster.distances import exact_sq_distances, pairwise_sq_distances
from ..formulas import doubled_percentile_ranks, sqrt_rn
from ..selection import eps_from_sq_distances
from .tracing import cond

# (1 - MARGIN) and (1 + MARGIN) on eps^2 absorb the rounding of eps^2, of D~ +- E and of the
# square root when the certified stage decides a neighbour from its bound alone.
MARGIN = 2.0 ** -48
# The overlap test of two pairs' intervals is made with E (1 + OVERLAP_SLACK), so that its
# own rounding can only fail a certificate, never pass a wrong one.
OVERLAP_SLACK = 2.0 ** -40


class Pairs(NamedTuple):
    """The unordered pairs ``i < j`` of ``n`` slots, a static list: ``iu``, ``ju`` and the
    flat index ``i n + j`` into an ``[n, n]`` matrix; ``r0 <= r1`` the two ranks eps reads
    when all ``n`` slots are used (``doubled_percentile_ranks``, taken once, in Python)."""

    n: int
    iu: torch.Tensor
    ju: torch.Tensor
    flat: torch.Tensor
    r0: int
    r1: int


def pairs_of(n: int, q: float, device: torch.device | None = None) -> Pairs:
    """``Pairs`` of ``n >= 2`` slots for the eps percentile ``q``."""
    iu, ju = torch.triu_indices(n, n, 1, device=device)
    ranks, _ = doubled_percentile_ranks(torch.tensor([n * (n - 1) // 2]), q)
    r0, r1 = (int(r) for r in ranks[0].tolist())
    return Pairs(n, iu, ju, iu * n + ju, r0, r1)


def _exact_pair(X: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """``[B]`` float64: ``exact_sq_distances`` of the pair ``(i[b], j[b])`` of each image of
    ``X`` ``[B, n, d]`` (float64), in the same order of operations."""
    B, _, d = X.shape
    xi = X.gather(1, i[:, None, None].expand(B, 1, d))[:, 0]
    xj = X.gather(1, j[:, None, None].expand(B, 1, d))[:, 0]
    total = torch.zeros(B, dtype=torch.float64, device=X.device)
    for k in range(d):
        t = xi[:, k] - xj[:, k]
        total = total + t * t
    return total


def pair_values(dist: torch.Tensor, pairs: Pairs, counts: torch.Tensor) -> torch.Tensor:
    """``[B, n (n - 1) / 2]``: ``dist[b, i, j]`` of every pair ``i < j``, +inf where ``j``
    is not one of image ``b``'s first ``counts[b]`` points."""
    vals = dist.flatten(1).index_select(1, pairs.flat)
    return torch.where(pairs.ju[None, :] < counts[:, None], vals, math.inf)


def select_static(vals: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    """``[B, 2]`` indices into ``vals``' rows of the ``r0``-th and ``r1``-th smallest values
    (0-based, ``r1 - r0`` in {0, 1}): the ``r1 + 1`` smallest by ``topk``, then the top two
    of those. Both select existing values, so they are exact."""
    smallest = torch.topk(vals, r1 + 1, dim=1, largest=False, sorted=False)
    if r1 == 0:
        return smallest.indices[:, :1].expand(-1, 2)
    top = torch.topk(smallest.values, 2, dim=1, largest=True, sorted=True).indices
    at = smallest.indices.gather(1, top)  # the r1-th, then the (r1 - 1)-th
    return torch.stack([at[:, 0] if r0 == r1 else at[:, 1], at[:, 0]], 1)


def _neighbours(D: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``sqrt(D) <= eps`` per image (False where eps is NaN)."""
    return sqrt_rn(D.clamp(min=0.0)) <= eps[:, None, None]


def exact_decisions(points: torch.Tensor, counts: torch.Tensor, q: float | torch.Tensor, floor: torch.Tensor,
                    pairs: Pairs, static: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """eps ``[B]`` (float64) and the neighbour mask ``[B, n, n]`` (before the diagonal and
    validity masks) of each image's first ``counts[b]`` points ``[B, n, d]``, from the exact
    distances of every pair, for the eps percentile ``q`` (a float64 tensor inside a traced
    branch: ``tracing.cond``). ``static``: select at the constant ranks ``pairs.r0, r1``
    when every image uses all ``n`` slots (``select_static``), else sort; otherwise always
    sort."""
    D = exact_sq_distances(points)

    def by_sort(vals: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        return vals.sort(1).values.gather(1, ranks)

    def by_topk(vals: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        return vals.gather(1, select_static(vals, pairs.r0, pairs.r1))

    def select(dist: torch.Tensor, used: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        vals = pair_values(dist, pairs, used)
        if not static:
            return by_sort(vals, ranks)
        return cond((used == pairs.n).all(), by_topk, by_sort, (vals, ranks))

    eps = eps_from_sq_distances(D, counts, q, floor, select)
    return eps, _neighbours(D, eps)


def gemm_slack(d: int) -> float:
    """``c`` with ``|D~ - D| <= c (|x|^2 + |y|^2)`` for the augmented product ``D~`` and the
    coordinate-order sum ``D`` of ``d``-dimensional float32 points (``certified_decisions``):
    ``(6 d + 32) 2^-53``, generous over the ``(5 d + 16) 2^-53`` derived there."""
    return (6.0 * d + 32.0) * 2.0 ** -53


def certified_decisions(points: torch.Tensor, counts: torch.Tensor, q: float | torch.Tensor, floor: torch.Tensor,
                        pairs: Pairs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``exact_decisions``' eps and neighbour mask at the cost of one matrix product, with a
    certificate ``ok`` (a bool scalar): where it holds they are the exact ones.

    The bound. ``D~`` is the augmented float64 product. With ``u = 2^-53`` and the float32
    coordinates exact in float64: the real ``S = sum_k (x_k - y_k)^2`` and the
    coordinate-order sum ``D`` obey ``|D - S| <= gamma_{d+3} S <= 2 gamma_{d+3} (|x|^2 +
    |y|^2)``; ``D~`` sums ``d + 2`` exact products (``x_k (-2 y_k)``, ``|x|^2 1``,
    ``1 |y|^2``, the norms carrying ``gamma_{d-1}``) in any order, fused or not:
    ``|D~ - S| <= (2 gamma_{d+2} + gamma_{d-1}) (|x|^2 + |y|^2)``. So ``|D~ - D| <= E =
    c (|x|^2 + |y|^2)`` with ``c = (5 d + 16) u`` to first order; ``gemm_slack`` uses
    ``(6 d + 32) u``, which also absorbs the rounding of ``E`` and of ``|x|^2``. Two zero
    points have ``D~ = D = 0`` and ``E = 0``.

    - **eps.** The approximate order statistics at the static ranks ``r0, r1`` name two
      pairs; each pair ``p``'s exact ``D_p`` is recomputed. If no other valid pair's
      interval ``[D~ - E, D~ + E]`` meets ``p``'s (two exactly known pairs, ``E = 0``, of
      equal value do not count), the rank of ``p`` among the exact values is its rank among
      the approximate ones, so ``D_p`` is the exact order statistic.
    - **Neighbours.** ``D~ + E < eps^2 (1 - MARGIN)`` proves ``sqrt(D) <= eps``, ``D~ - E >
      eps^2 (1 + MARGIN)`` proves the opposite; any other valid pair must be one of the two
      recomputed ones, decided on its ``D_p``.

    ``ok`` holds when every image uses all ``n`` slots (so the static ranks are its ranks)
    and both certificates hold. A comparison that could round the wrong way only fails the
    certificate (a fallback), never passes a wrong decision: interval overlaps use
    ``E (1 + OVERLAP_SLACK)``.
    """
    B, n, d = points.shape
    X = points.to(torch.float64)
    sq = (X * X).sum(2)
    approx = pairwise_sq_distances(points)
    E = gemm_slack(d) * (sq[:, :, None] + sq[:, None, :])
    valid_pair = pairs.ju[None, :] < counts[:, None]
    v = pair_values(approx, pairs, counts)
    e = E.flatten(1).index_select(1, pairs.flat) * (1.0 + OVERLAP_SLACK)
    chosen = select_static(v, pairs.r0, pairs.r1)
    number = torch.arange(v.shape[1], device=v.device)
    ok = (counts == n).all()
    exact = []
    for s in range(2):
        p = chosen[:, s]
        vp, ep = v.gather(1, p[:, None]), e.gather(1, p[:, None])
        meets = (v - vp).abs() <= e + ep
        known_tie = (e == 0) & (ep == 0) & (v == vp)
        others = meets & ~known_tie & valid_pair & (number[None, :] != p[:, None])
        ok = ok & ~others.any()
        i, j = pairs.iu.index_select(0, p), pairs.ju.index_select(0, p)
        exact.append((_exact_pair(X, i, j), i, j))
    values = torch.stack([exact[0][0], exact[1][0]], 1)
    eps = eps_from_sq_distances(approx, counts, q, floor, lambda _dist, _counts, _ranks: values)
    e2 = (eps * eps)[:, None, None]
    surely_in = approx + E < e2 * (1.0 - MARGIN)
    surely_out = approx - E > e2 * (1.0 + MARGIN)
    pos = torch.arange(n, device=X.device)
    adj = surely_in
    unsure = ~surely_in & ~surely_out
    for total, i, j in exact:
        here = ((pos[None, :, None] == i[:, None, None]) & (pos[None, None, :] == j[:, None, None])) | \
               ((pos[None, :, None] == j[:, None, None]) & (pos[None, None, :] == i[:, None, None]))
        decided = _neighbours(total[:, None, None], eps)
        adj = (here & decided) | (~here & adj)  # (ONNX Runtime's Where has no bool kernel)
        unsure = unsure & ~here
    valid = pos[None, :] < counts[:, None]
    unsure = unsure & valid[:, :, None] & valid[:, None, :] & (pos[:, None] != pos[None, :])[None]
    return eps, adj, ok & ~unsure.any()
