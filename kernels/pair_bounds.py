"""The certified enclosure of exact squared distances that the fused pairwise kernels
(``pairs``) decide on, and the exact values they recompute near a decision.

The exact squared distance of two points is ``D_ij = sum_k (x_ik - x_jk)^2`` in float64,
coordinate by coordinate, unfused: what SciPy's ``pdist``, the reference and the CPU
certified stage (csrc/certified_cpu.cpp) decide on.

The certificate (docs/exactness.md, "Which float64 distance")
-------------------------------------------------------------
Each tile program computes ``a_ij = (n_i + n_j) - 2 g_ij`` in float32, with ``g = X_I X_J^T``
from ``tl.dot(..., input_precision="ieee")`` and ``n_i = sum_k x_ik^2`` (``tl.sum``), in any
order, fused or not. With ``S = |x_i|^2 + |x_j|^2``, ``u = 2^-24`` and ``gamma_d = d u /
(1 - d u)``: ``|n_i - |x_i|^2| <= gamma_d |x_i|^2``, ``|g - x_i.x_j| <= gamma_d S / 2``, and the
two last roundings add ``u S (1 + gamma_d)`` and ``2 u S (1 + gamma_d + u)``, so

    |a_ij - D_ij| <= (2 d + 3) u S (1 + O(d u))  +  (8 d + 3) 2^-126      (*)

the last term covering float32 underflow even when the GPU flushes subnormals to zero (each
of the ``4 d + 3`` float32 operations then errs by less than 2^-126 absolutely). The kernels
use ``E_ij = s_i + s_j`` with ``s_i = c |x_i|^2 (1 + 2^-40) + f``, ``c = (4 d + 32) u`` (the
coefficient ``csrc/certified_cpu.cpp's slack_coefficient`` derives for the augmented product:
at least twice (*)'s) and ``f = (d + 4) 2^-122`` (over four times (*)'s absolute term). The
enclosure ``[lo, hi] = [max(a - E, 0), a + E]`` is formed in float64; the float64 roundings of
``E`` and of ``a +- E`` (relative ``2^-53``) are far inside the margin ``(2 d + 29) u S``. A
non-finite ``a`` (float32 overflow) gives ``[0, inf]``. Pairs known exactly need no bound:
equal points (one group, ``point_groups``) are 0 apart, and an all-zero point is
``|x_j|^2`` (its sequential float64 sum, ``n64``) from any ``x_j``. ``test_pairs`` checks
``D in [lo, hi]`` on adversarial data (mixed scales, overflow, subnormals).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

# a * b + c stays two roundings (as the exact sums and PyTorch's CPU ops round): no FMA contraction
EXACT = dict(enable_fp_fusion=False)


def slack_coefficient(d: int) -> float:
    """``c (1 + 2^-40)`` of the module docstring: ``(4 d + 32) 2^-24``, rounded up."""
    return (4.0 * d + 32.0) * 2.0 ** -24 * (1.0 + 2.0 ** -40)


def slack_floor(d: int) -> float:
    """``f`` of the module docstring: ``(d + 4) 2^-122`` (safe under flush-to-zero)."""
    return (d + 4.0) * 2.0 ** -122


@triton.jit
def _exact_tile(Xb, i, j0, need, D: tl.constexpr, BJ: tl.constexpr):
    """Exact ``D_ij`` (float64, sequential, unfused) where ``need`` ``[BI, BJ]`` is set
    (``i`` the tile's row indices, columns ``j0 + 0..BJ-1``); 0 elsewhere. Rows work in
    parallel, one pending column each per round, so a round costs ``d`` steps and the
    rounds are as many as the most pending columns in one row."""
    jj = tl.arange(0, BJ)
    ex = tl.zeros(need.shape, dtype=tl.float64)
    pending = need
    while tl.max(pending.to(tl.int32)) > 0:
        first = tl.min(tl.where(pending, jj[None, :], BJ), axis=1)
        has = first < BJ
        rows = Xb + i * D
        cols = Xb + (j0 + first) * D
        s = tl.zeros(first.shape, dtype=tl.float64)
        for k in range(D):  # D constexpr: unrolled, the loads issued together
            xa = tl.load(rows + k, mask=has, other=0.0).to(tl.float64)
            xb = tl.load(cols + k, mask=has, other=0.0).to(tl.float64)
            t = xa - xb
            s = s + t * t
        hit = pending & (jj[None, :] == first[:, None])
        ex = tl.where(hit, s[:, None], ex)
        pending = pending & (hit == 0)
    return ex


@triton.jit
def _enclosure(Xb, n64b, slackb, gidb, i, j, mi, mj, D: tl.constexpr, BI: tl.constexpr, BD: tl.constexpr):
    """``[lo, hi]`` (float64 ``[BI, BI]``) with ``D_ij`` certainly inside (module docstring)."""
    g = tl.zeros([BI, BI], dtype=tl.float32)
    ni = tl.zeros([BI], dtype=tl.float32)
    nj = tl.zeros([BI], dtype=tl.float32)
    for k0 in tl.static_range(0, D, BD):
        kk = k0 + tl.arange(0, BD)
        mk = kk < D
        xi = tl.load(Xb + i[:, None] * D + kk[None, :], mask=mi[:, None] & mk[None, :], other=0.0)
        xj = tl.load(Xb + j[:, None] * D + kk[None, :], mask=mj[:, None] & mk[None, :], other=0.0)
        g = tl.dot(xi, tl.trans(xj), g, input_precision="ieee")
        ni += tl.sum(xi * xi, axis=1)
        nj += tl.sum(xj * xj, axis=1)
    a = ((ni[:, None] + nj[None, :]) - 2.0 * g).to(tl.float64)
    si = tl.load(slackb + i, mask=mi, other=0.0)
    sj = tl.load(slackb + j, mask=mj, other=0.0)
    e = si[:, None] + sj[None, :]
    finite = (a == a) & (tl.abs(a) < float("inf"))
    low = a - e
    lo = tl.where(finite & (low > 0.0), low, 0.0)
    hi = tl.where(finite, a + e, float("inf"))
    # Pairs known exactly: equal points (0 apart) and an all-zero point (|x|^2 from any x).
    zi = tl.load(n64b + i, mask=mi, other=1.0)
    zj = tl.load(n64b + j, mask=mj, other=1.0)
    gi = tl.load(gidb + i, mask=mi, other=-1)
    gj = tl.load(gidb + j, mask=mj, other=-2)
    known = (gi[:, None] == gj[None, :]) | (zi[:, None] == 0.0) | (zj[None, :] == 0.0)
    value = tl.where(zi[:, None] == 0.0, zj[None, :], tl.where(zj[None, :] == 0.0, zi[:, None], 0.0))
    lo = tl.where(known, value, lo)
    hi = tl.where(known, value, hi)
    return lo, hi


@triton.jit
def prep_kernel(X, n64, slack, n, D: tl.constexpr, COEF: tl.constexpr, FLOOR: tl.constexpr, BLOCK: tl.constexpr):
    """``n64[b, i] = sum_k x_ik^2`` (float64, in order) and ``slack = n64 COEF + FLOOR``
    (float64 constants, materialised as float64 literals: a float kernel argument would
    reach a compiled kernel as float32)."""
    b = tl.program_id(1).to(tl.int64)
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    base = X + b * n * D + i * D
    s = tl.zeros([BLOCK], dtype=tl.float64)
    for k in range(D):
        x = tl.load(base + k, mask=m, other=0.0).to(tl.float64)
        s = s + x * x
    coef = tl.full([], COEF, tl.float64)
    floor = tl.full([], FLOOR, tl.float64)
    tl.store(n64 + b * n + i, s, mask=m)
    tl.store(slack + b * n + i, s * coef + floor, mask=m)


def prep_torch(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``prep_kernel`` in PyTorch: ``(n64, slack)``, both float64 ``[B, n]``."""
    x = points.to(torch.float64)
    s = torch.zeros(x.shape[:2], dtype=torch.float64, device=x.device)
    for k in range(x.shape[2]):
        s = s + x[:, :, k] * x[:, :, k]
    d = x.shape[2]
    return s, s * slack_coefficient(d) + slack_floor(d)


def point_groups(points: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``[B, n]`` int32: for each valid point the smallest index of a run of exactly equal
    points next to it in an order by a hash (so equal group means equal points, and equal
    points share a group unless a hash collision splits them: that only costs
    recomputation); ``-1 - i`` for invalid slots. Fixed shapes, no synchronisation."""
    B, n, d = points.shape
    x = points.to(torch.float64) + 0.0  # -0.0 -> 0.0
    w = torch.cos(torch.arange(1, d + 1, dtype=torch.float64, device=x.device) * 0.7548776662466927) + 1.5
    h = (x * w).sum(-1)
    idx = torch.arange(n, device=x.device)
    valid = idx[None, :] < counts[:, None]
    h = torch.where(valid, h, math.inf)
    order = torch.sort(h, dim=1, stable=True).indices
    xs = x.gather(1, order[:, :, None].expand(B, n, d))
    vs = valid.gather(1, order)
    same = (xs[:, 1:] == xs[:, :-1]).all(-1) & vs[:, 1:] & vs[:, :-1]
    run = torch.cat([torch.zeros(B, 1, dtype=torch.int64, device=x.device), (~same).long().cumsum(1)], 1)
    leader = torch.full((B, n), n, dtype=torch.int64, device=x.device).scatter_reduce(
        1, run, order, reduce="amin", include_self=True)
    gid = torch.empty((B, n), dtype=torch.int64, device=x.device).scatter_(1, order, leader.gather(1, run))
    return torch.where(valid, gid, -1 - idx[None, :]).to(torch.int32)


@triton.jit
def enclosure_kernel(X, n64, slack, gid, counts, lo_out, hi_out, n, D: tl.constexpr, BI: tl.constexpr,
                     BD: tl.constexpr):
    """Test-only: ``lo_out``, ``hi_out`` ``[B, n, n]`` float64, the enclosure ``_enclosure``
    gives every valid pair (all blocks, both triangles); its PyTorch twin is the property
    ``lo <= exact_sq_distances <= hi`` with ``hi - lo <= 2 E`` (``enclosure_bound_torch``)."""
    TI = tl.program_id(0)
    TJ = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    c = tl.load(counts + b)
    i = TI * BI + tl.arange(0, BI)
    j = TJ * BI + tl.arange(0, BI)
    mi = i < c
    mj = j < c
    lo, hi = _enclosure(X + b * n * D, n64 + b * n, slack + b * n, gid + b * n, i, j, mi, mj, D, BI, BD)
    offs = (b * n + i[:, None]) * n + j[None, :]
    tl.store(lo_out + offs, lo, mask=mi[:, None] & mj[None, :])
    tl.store(hi_out + offs, hi, mask=mi[:, None] & mj[None, :])


def enclosure_bound_torch(points: torch.Tensor) -> torch.Tensor:
    """``E_ij = s_i + s_j`` ``[B, n, n]`` (float64) from ``prep_torch``'s slack."""
    _, slack = prep_torch(points)
    return slack[:, :, None] + slack[:, None, :]
