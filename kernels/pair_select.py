"""Selection of eps's two order statistics without the distance matrix: the sample, scan,
update and finalize kernels of the fused pairwise stage (``pairs``), each beside its
PyTorch twin.

A key is the bit pattern of a float64 ``D >= 0`` (monotone in ``D``). Per image and rank the
state is a key interval ``[L, H)`` known to hold the wanted order statistic, with the exact
count of pairs below ``L``; each scan narrows it by a histogram of exact keys or collects
the keys inside it (see ``pairs`` for the passes and why each decision is exact).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..core.cluster.distances import sq_threshold
from ..core.formulas import doubled_percentile_ranks
from ..core.selection import eps_from_values
from .pair_bounds import _enclosure, _exact_tile

KEY_INF = 0x7FF0000000000000  # the bits of +inf: every finite D >= 0 has a smaller key
KEY_MAX = 2 ** 63 - 1
HIST, COLLECT, DONE, FAIL = 0, 1, 2, 3
STATE = 8  # int64 slots per (image, rank): L, H, G0, sh, below, mode, rank, expected
# The same numbers as constexprs, for the kernels (Triton reads only constexpr globals).
_HIST = tl.constexpr(HIST)
_COLLECT = tl.constexpr(COLLECT)
_DONE = tl.constexpr(DONE)
_FAIL = tl.constexpr(FAIL)
_KEY_INF = tl.constexpr(KEY_INF)
_KEY_MAX = tl.constexpr(KEY_MAX)


def max_scan_passes(hist_bins: int) -> int:
    """Scan passes that always suffice: the first (sample grid) may gain nothing; each
    HIST pass then shrinks an interval of ``w`` keys to at most ``2^sh`` with
    ``NB 2^sh >= w`` (``NB = hist_bins - 4``), until one key is left."""
    nb = hist_bins - 4
    w, passes = KEY_INF, 1
    while w > 1:
        span = w - 1  # the grid starts at L + 1; bin 0 is the single key L
        sh = 0
        while (span - 1) >> sh >= nb:
            sh += 1
        w = max(1 << sh, 1)
        passes += 1
    return passes


@triton.jit
def _bin(k, L, H, G0, sh, NB: tl.constexpr, HB: tl.constexpr):
    """Bin of keys ``k`` in a HIST state: -1 below ``L``, 0 for ``L``, 1 for ``(L, G0)``,
    ``2 + t`` for grid bin ``t < NB``, ``NB + 2`` for the rest below ``H``, ``HB - 1`` from ``H``."""
    t = (k - G0) >> sh
    out = tl.where(t < NB, t + 2, NB + 2)
    out = tl.where(k < G0, 1, out)
    out = tl.where(k == L, 0, out)
    out = tl.where(k >= H, HB - 1, out)
    return tl.where(k < L, -1, out)


@triton.jit
def _offset(t, span, sh):
    """``min(t 2^sh, span)`` without int64 overflow."""
    return tl.where(t <= (span >> sh), t << sh, span)


@triton.jit
def _grid_shift(span, NB: tl.constexpr):
    """The least ``sh`` with ``NB 2^sh >= span``."""
    sh = span * 0
    while ((span - 1) >> sh) >= NB:
        sh += 1
    return sh


@triton.jit
def _hash31(x):
    x = (x ^ (x >> 15)) * 0x2C1B3C6D
    x = x & 0x7FFFFFFF
    x = (x ^ (x >> 12)) * 0x297A2D39
    x = x & 0x7FFFFFFF
    return x ^ (x >> 15)


@triton.jit
def sample_kernel(X, counts, state, share, tfrac, n, D: tl.constexpr, QF: tl.constexpr, S: tl.constexpr,
                  NB: tl.constexpr,
                  USE_SAMPLE: tl.constexpr):
    """Per image: the two ranks and fraction of the doubled-list percentile (as
    ``core.formulas.doubled_percentile_ranks``, ``QF = q / 100`` as a float64 literal), and the first
    HIST grid from the exact values of ``S`` hashed pairs (both ranks share it), or with
    ``USE_SAMPLE`` false a grid over all keys."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.load(counts + b)
    m = c * (c - 1) // 2
    n_ordered = tl.maximum(2 * m, 1)
    pos = (n_ordered - 1).to(tl.float64) * tl.full([], QF, tl.float64)
    k = tl.minimum(tl.floor(pos).to(tl.int64), n_ordered - 1)
    t = pos - k.to(tl.float64)
    safe = c >= 2
    r0 = tl.where(safe, k // 2, 0)
    r1 = tl.where(safe, tl.minimum(k + 1, n_ordered - 1) // 2, 0)
    tl.store(tfrac + b, t)
    # The sample: S ordered pairs i != j, uniform, from a hash of (b, p).
    p = tl.arange(0, S).to(tl.int64)
    h1 = _hash31((p * 0x9E3779B1 + b * 0x7FEB352D + 0x165667B1) & 0x7FFFFFFF)
    h2 = _hash31(h1 ^ 0x5BD1E995)
    cc = tl.maximum(c, 2)
    i = h1 % cc
    j = (i + 1 + h2 % (cc - 1)) % cc
    ok = safe & (p < S)
    Xb = X + b * n * D
    s = tl.zeros([S], dtype=tl.float64)
    for kk in range(D):
        xa = tl.load(Xb + i * D + kk, mask=ok, other=0.0).to(tl.float64)
        xb = tl.load(Xb + j * D + kk, mask=ok, other=0.0).to(tl.float64)
        diff = xa - xb
        s = s + diff * diff
    keys = tl.sort(s.to(tl.int64, bitcast=True))
    # SampleBracket: four standard deviations of the sample rank, plus 4, either side.
    mf = tl.maximum(m, 1).to(tl.float64)
    p_lo = r0.to(tl.float64) / mf
    p_hi = (r1 + 1).to(tl.float64) / mf
    lo_pos = tl.floor(p_lo * S - (4.0 * tl.sqrt(S * p_lo * (1.0 - p_lo)) + 4.0)).to(tl.int64)
    hi_pos = tl.ceil(p_hi * S + (4.0 * tl.sqrt(S * p_hi * tl.maximum(1.0 - p_hi, 0.0)) + 4.0)).to(tl.int64)
    key_lo = tl.sum(tl.where(p == lo_pos, keys, 0))
    key_hi = tl.where(hi_pos < S, tl.sum(tl.where(p == hi_pos, keys, 0)), _KEY_INF - 1)
    L = key_lo * 0
    H = L + _KEY_INF
    G0 = tl.maximum(key_lo, L + 1)
    span = tl.maximum(key_hi + 1 - G0, 1)
    if not USE_SAMPLE:  # a grid over every key (tests: the worst case of max_scan_passes)
        G0 = L + 1
        span = H - G0
    sh = _grid_shift(span, NB)
    mode = tl.where(safe, _HIST, _DONE).to(tl.int64)
    for r in tl.static_range(2):
        st = state + (b * 2 + r) * 8
        tl.store(st + 0, L)
        tl.store(st + 1, H)
        tl.store(st + 2, G0)
        tl.store(st + 3, sh)
        tl.store(st + 4, L)  # below
        tl.store(st + 5, mode)
        tl.store(st + 6, tl.where(r == 0, r0, r1))
        tl.store(st + 7, L)
    tl.store(share + b, tl.where(safe, 1, 0).to(tl.int32))


def _hash31_torch(x: torch.Tensor) -> torch.Tensor:
    x = ((x ^ (x >> 15)) * 0x2C1B3C6D) & 0x7FFFFFFF
    x = ((x ^ (x >> 12)) * 0x297A2D39) & 0x7FFFFFFF
    return x ^ (x >> 15)


def sample_torch(points: torch.Tensor, counts: torch.Tensor, q: float, sample_size: int, nb: int,
                 use_sample: bool = True):
    """``sample_kernel`` in PyTorch: ``(state [B, 2, 8] int64, share [B] int32, t [B] float64)``."""
    B, n, d = points.shape
    dev = points.device
    m = counts * (counts - 1) // 2
    ranks, t = doubled_percentile_ranks(m, q)
    safe = counts >= 2
    ranks = ranks * safe[:, None]
    p = torch.arange(sample_size, dtype=torch.int64, device=dev)
    b = torch.arange(B, dtype=torch.int64, device=dev)
    h1 = _hash31_torch((p[None, :] * 0x9E3779B1 + b[:, None] * 0x7FEB352D + 0x165667B1) & 0x7FFFFFFF)
    h2 = _hash31_torch(h1 ^ 0x5BD1E995)
    cc = counts.clamp(min=2)[:, None]
    i = h1 % cc
    j = (i + 1 + h2 % (cc - 1)) % cc
    x = points.to(torch.float64)
    xi = x.gather(1, i[:, :, None].expand(-1, -1, d))
    xj = x.gather(1, j[:, :, None].expand(-1, -1, d))
    s = torch.zeros(B, sample_size, dtype=torch.float64, device=dev)
    for k in range(d):
        diff = xi[:, :, k] - xj[:, :, k]
        s = s + diff * diff
    keys = torch.where(safe[:, None], s, 0.0).view(torch.int64).sort(1).values
    mf = m.clamp(min=1).to(torch.float64)
    S = float(sample_size)
    p_lo = ranks[:, 0].to(torch.float64) / mf
    p_hi = (ranks[:, 1] + 1).to(torch.float64) / mf
    lo_pos = torch.floor(p_lo * S - (4.0 * torch.sqrt(S * p_lo * (1.0 - p_lo)) + 4.0)).long()
    hi_pos = torch.ceil(p_hi * S + (4.0 * torch.sqrt(S * p_hi * (1.0 - p_hi).clamp(min=0.0)) + 4.0)).long()
    key_lo = torch.where(lo_pos >= 0, keys.gather(1, lo_pos.clamp(0, sample_size - 1)[:, None])[:, 0], 0)
    key_hi = torch.where(hi_pos < sample_size, keys.gather(1, hi_pos.clamp(0, sample_size - 1)[:, None])[:, 0],
                         KEY_INF - 1)
    G0 = key_lo.clamp(min=1)
    span = (key_hi + 1 - G0).clamp(min=1)
    if not use_sample:
        G0 = torch.ones_like(G0)
        span = torch.full_like(span, KEY_INF - 1)
    sh = torch.zeros_like(span)
    while bool((((span - 1) >> sh) >= nb).any()):  # a test reference: host loops are fine here
        sh = sh + (((span - 1) >> sh) >= nb).long()
    state = torch.zeros(B, 2, STATE, dtype=torch.int64, device=dev)
    state[:, :, 1] = KEY_INF
    state[:, :, 2] = G0[:, None]
    state[:, :, 3] = sh[:, None]
    state[:, :, 5] = torch.where(safe, HIST, DONE)[:, None]
    state[:, :, 6] = ranks
    return state, safe.to(torch.int32), t


@triton.jit
def _bracket(st):
    """One selection's bracket ``[L, H)``, grid origin ``G0`` and bin shift ``sh`` (slots 0-3 of its state row)."""
    return tl.load(st + 0), tl.load(st + 1), tl.load(st + 2), tl.load(st + 3)


@triton.jit
def _collect(kx, inside, cand, ccount, BB: tl.constexpr, K: tl.constexpr):
    """Append the exact keys ``kx`` where ``inside`` to ``cand`` (``K`` slots), counting
    in ``ccount``."""
    flat = tl.reshape(inside.to(tl.int32), [BB])
    total = tl.sum(flat)
    if total > 0:
        base = tl.atomic_add(ccount, total)
        pos = base + tl.cumsum(flat, 0) - 1
        tl.store(cand + pos, tl.reshape(kx, [BB]), mask=(flat > 0) & (pos < K))


@triton.jit
def scan_kernel(X, n64, slack, gid, counts, tiles, state, share, hist, cand, ccount, n, T, P, D: tl.constexpr,
                BI: tl.constexpr, BD: tl.constexpr, HB: tl.constexpr, K: tl.constexpr):
    """One selection pass over the upper-triangle tiles ``tiles[p::P]`` of image
    ``program_id(1)``: HIST ranks add exact-key bin counts to ``hist[b, r]``, COLLECT ranks
    append the exact keys inside their interval to ``cand[b, r]``. Rank 1 is skipped
    while it shares rank 0's state (``share[b]``)."""
    NB: tl.constexpr = HB - 4
    BB: tl.constexpr = BI * BI
    p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    c = tl.load(counts + b)
    st0 = state + b * 2 * 8
    st1 = st0 + 8
    mode0 = tl.load(st0 + 5)
    mode1 = tl.load(st1 + 5)
    shared = tl.load(share + b)
    act0 = mode0 <= _COLLECT
    act1 = (mode1 <= _COLLECT) & (shared == 0)
    if act0 | act1:
        L0, H0, G00, sh0 = _bracket(st0)
        L1, H1, G01, sh1 = _bracket(st1)
        Xb = X + b * n * D
        n64b = n64 + b * n
        slackb = slack + b * n
        gidb = gid + b * n
        acc0 = tl.zeros([HB], dtype=tl.int32)
        acc1 = tl.zeros([HB], dtype=tl.int32)
        for t in range(p, T, P):
            TI = tl.load(tiles + 2 * t)
            TJ = tl.load(tiles + 2 * t + 1)
            if TJ * BI < c:  # TI <= TJ: the tile holds a pair i < j < c
                i = TI * BI + tl.arange(0, BI)
                j = TJ * BI + tl.arange(0, BI)
                mi = i < c
                mj = j < c
                valid = mi[:, None] & mj[None, :] & (i[:, None] < j[None, :])
                lo, hi = _enclosure(Xb, n64b, slackb, gidb, i, j, mi, mj, D, BI, BD)
                kl = lo.to(tl.int64, bitcast=True)
                kh = hi.to(tl.int64, bitcast=True)
                bl0 = _bin(kl, L0, H0, G00, sh0, NB, HB)
                bh0 = _bin(kh, L0, H0, G00, sh0, NB, HB)
                bl1 = _bin(kl, L1, H1, G01, sh1, NB, HB)
                bh1 = _bin(kh, L1, H1, G01, sh1, NB, HB)
                # Recompute where the bin is uncertain, and (COLLECT) wherever the key may lie inside.
                need0 = act0 & ((bl0 != bh0) | ((mode0 == _COLLECT) & (bl0 >= 0) & (bl0 < HB - 1)))
                need1 = act1 & ((bl1 != bh1) | ((mode1 == _COLLECT) & (bl1 >= 0) & (bl1 < HB - 1)))
                need = valid & (need0 | need1)
                ex = _exact_tile(Xb, i, TJ * BI, need, D, BI)
                kx = tl.where(need, ex.to(tl.int64, bitcast=True), kl)
                if act0:
                    b0 = _bin(kx, L0, H0, G00, sh0, NB, HB)
                    inside0 = valid & (b0 >= 0) & (b0 < HB - 1)
                    if mode0 == _HIST:
                        acc0 += tl.histogram(tl.reshape(tl.where(inside0, b0, HB - 1).to(tl.int32), [BB]), HB)
                    else:
                        _collect(kx, inside0, cand + (b * 2) * K, ccount + b * 2, BB, K)
                if act1:
                    b1 = _bin(kx, L1, H1, G01, sh1, NB, HB)
                    inside1 = valid & (b1 >= 0) & (b1 < HB - 1)
                    if mode1 == _HIST:
                        acc1 += tl.histogram(tl.reshape(tl.where(inside1, b1, HB - 1).to(tl.int32), [BB]), HB)
                    else:
                        _collect(kx, inside1, cand + (b * 2 + 1) * K, ccount + b * 2 + 1, BB, K)
        offs = tl.arange(0, HB)
        keep = offs < HB - 1
        if mode0 == _HIST:
            tl.atomic_add(hist + (b * 2) * HB + offs, acc0, mask=keep & (acc0 != 0))
        if act1 & (mode1 == _HIST):
            tl.atomic_add(hist + (b * 2 + 1) * HB + offs, acc1, mask=keep & (acc1 != 0))


def _bin_torch(k, L, H, G0, sh, nb, hb):
    t = (k - G0) >> sh
    out = torch.where(t < nb, t + 2, nb + 2)
    out = torch.where(k < G0, 1, out)
    out = torch.where(k == L, 0, out)
    out = torch.where(k >= H, hb - 1, out)
    return torch.where(k < L, -1, out)


def _upper_keys(exact: torch.Tensor, counts: torch.Tensor):
    B, n, _ = exact.shape
    idx = torch.arange(n, device=exact.device)
    valid = (idx[None, :, None] < idx[None, None, :]) & (idx[None, None, :] < counts[:, None, None])
    return exact.view(torch.int64).reshape(B, -1), valid.reshape(B, -1)


def scan_torch(exact: torch.Tensor, counts: torch.Tensor, state: torch.Tensor, share: torch.Tensor,
               hist_bins: int, capacity: int):
    """``scan_kernel`` in PyTorch from the exact distances ``[B, n, n]``: ``(hist [B, 2, HB]
    int32, collected keys per (b, r) sorted as a list of lists)``; COLLECT buffers are
    returned sorted since the kernel's append order is unspecified."""
    keys, valid = _upper_keys(exact, counts)
    B = keys.shape[0]
    nb = hist_bins - 4
    hist = torch.zeros(B, 2, hist_bins, dtype=torch.int32)
    collected = [[[] for _ in range(2)] for _ in range(B)]
    for b in range(B):
        for r in range(2):
            L, H, G0, sh, below, mode = (int(v) for v in state[b, r, :6])
            if mode > COLLECT or (r == 1 and int(share[b])):
                continue
            bins = _bin_torch(keys[b], L, H, G0, sh, nb, hist_bins)
            inside = valid[b] & (bins >= 0) & (bins < hist_bins - 1)
            if mode == HIST:
                hist[b, r] = torch.bincount(bins[inside], minlength=hist_bins).to(torch.int32)
            else:
                collected[b][r] = sorted(keys[b][inside].tolist())
    return hist, collected


@triton.jit
def _hist_step(hrow, L, H, G0, sh, below, rank, NB: tl.constexpr, HB: tl.constexpr, K: tl.constexpr):
    offs = tl.arange(0, HB)
    h = tl.load(hrow + offs).to(tl.int64)
    cum = tl.cumsum(h, 0)
    target = rank - below
    tstar = tl.sum((cum <= target).to(tl.int64))
    before = tl.sum(tl.where(offs < tstar, h, 0))
    cnt = tl.sum(tl.where(offs == tstar, h, 0))
    span = H - G0
    grid_lo = G0 + _offset(tstar - 2, span, sh)
    grid_hi = G0 + _offset(tstar - 1, span, sh)
    new_lo = tl.where(tstar == 0, L, tl.where(tstar == 1, L + 1, grid_lo))
    new_hi = tl.where(tstar == 0, L + 1, tl.where(tstar == 1, G0, tl.where(tstar <= NB + 1, grid_hi, H)))
    new_hi = tl.minimum(new_hi, H)
    ok = (target >= 0) & (tstar < HB - 1) & (cnt > 0) & (new_lo < new_hi)
    single = (new_hi - new_lo) == 1
    mode = tl.where(ok, tl.where(single, _DONE, tl.where(cnt <= K, _COLLECT, _HIST)), _FAIL).to(tl.int64)
    new_g0 = new_lo + 1
    new_sh = _grid_shift(tl.maximum(new_hi - new_g0, 1), NB)
    return mode, new_lo, new_hi, new_g0, new_sh, below + before, new_lo, cnt


@triton.jit
def _collect_step(crow, cnt_ptr, expected, below, rank, K: tl.constexpr):
    offs = tl.arange(0, K)
    cnt = tl.load(cnt_ptr).to(tl.int64)
    keys = tl.load(crow + offs, mask=offs < cnt, other=_KEY_MAX)
    keys = tl.sort(keys)
    idx = rank - below
    value = tl.sum(tl.where(offs == idx, keys, 0))
    ok = (cnt == expected) & (idx >= 0) & (idx < cnt)
    return tl.where(ok, _DONE, _FAIL).to(tl.int64), value


@triton.jit
def update_kernel(state, share, hist, cand, ccount, values, HB: tl.constexpr, K: tl.constexpr):
    """After a scan, per image: advance each rank's state from its histogram (HIST) or read
    its rank from the sorted collected keys (COLLECT); a DONE rank's value goes to
    ``values[b, r]`` (float64), a FAIL (never expected) writes NaN. Then clears the
    histograms and counters and records whether rank 1 can share rank 0's next pass."""
    NB: tl.constexpr = HB - 4
    b = tl.program_id(0).to(tl.int64)
    shared = tl.load(share + b) != 0
    nm0 = tl.load(state + b * 16 + 5)
    nm1 = nm0
    L0 = nm0
    H0 = nm0
    G0_0 = nm0
    sh0 = nm0
    L1 = nm0
    H1 = nm0
    G0_1 = nm0
    sh1 = nm0
    for r in tl.static_range(2):
        st = state + (b * 2 + r) * 8
        src = tl.where(shared, 0, r)
        L, H, G0, sh = _bracket(st)
        below = tl.load(st + 4)
        mode = tl.load(st + 5)
        rank = tl.load(st + 6)
        expected = tl.load(st + 7)
        value = L * 0
        new_mode = mode
        if mode == _HIST:
            new_mode, L, H, G0, sh, below, value, expected = _hist_step(
                hist + (b * 2 + src) * HB, L, H, G0, sh, below, rank, NB, HB, K)
        elif mode == _COLLECT:
            new_mode, value = _collect_step(cand + (b * 2 + src) * K, ccount + b * 2 + src, expected, below,
                                            rank, K)
        if mode <= _COLLECT:
            tl.store(st + 0, L)
            tl.store(st + 1, H)
            tl.store(st + 2, G0)
            tl.store(st + 3, sh)
            tl.store(st + 4, below)
            tl.store(st + 5, new_mode)
            tl.store(st + 7, expected)
            if new_mode == _DONE:
                tl.store(values + b * 2 + r, value.to(tl.float64, bitcast=True))
            if new_mode == _FAIL:
                tl.store(values + b * 2 + r, float("nan"))
        if r == 0:
            nm0 = new_mode
            L0 = L
            H0 = H
            G0_0 = G0
            sh0 = sh
        else:
            nm1 = new_mode
            L1 = L
            H1 = H
            G0_1 = G0
            sh1 = sh
    same = (nm0 == nm1) & (nm0 <= _COLLECT) & (L0 == L1) & (H0 == H1) & (G0_0 == G0_1) & (sh0 == sh1)
    tl.store(share + b, same.to(tl.int32))
    offs = tl.arange(0, HB)
    zero = tl.zeros([HB], dtype=tl.int32)
    tl.store(hist + (b * 2) * HB + offs, zero)
    tl.store(hist + (b * 2 + 1) * HB + offs, zero)
    tl.store(ccount + b * 2, 0)
    tl.store(ccount + b * 2 + 1, 0)


def update_torch(state: torch.Tensor, share: torch.Tensor, hist: torch.Tensor, collected, values: torch.Tensor,
                 hist_bins: int, capacity: int):
    """``update_kernel`` in PyTorch (host loops, for tests): new ``(state, share, values)``."""
    state, share, values = state.clone(), share.clone(), values.clone()
    nb = hist_bins - 4
    for b in range(state.shape[0]):
        shared = bool(share[b])
        for r in range(2):
            src = 0 if shared else r
            L, H, G0, sh, below, mode, rank, expected = (int(v) for v in state[b, r])
            if mode == HIST:
                h = hist[b, src].long()
                cum = h.cumsum(0)
                target = rank - below
                tstar = int((cum <= target).sum())
                before = int(h[:tstar].sum())
                cnt = int(h[tstar]) if tstar < hist_bins else 0
                span = H - G0

                def off(t, sh=sh, span=span):
                    return min(t << sh, span) if t >= 0 else t << sh
                new_lo = L if tstar == 0 else L + 1 if tstar == 1 else G0 + off(tstar - 2)
                new_hi = L + 1 if tstar == 0 else G0 if tstar == 1 else G0 + off(tstar - 1) if tstar <= nb + 1 else H
                new_hi = min(new_hi, H)
                ok = target >= 0 and tstar < hist_bins - 1 and cnt > 0 and new_lo < new_hi
                new_mode = (DONE if new_hi - new_lo == 1 else COLLECT if cnt <= capacity else HIST) if ok else FAIL
                span2 = max(new_hi - new_lo - 1, 1)
                sh2 = 0
                while (span2 - 1) >> sh2 >= nb:
                    sh2 += 1
                state[b, r] = torch.tensor([new_lo, new_hi, new_lo + 1, sh2, below + before, new_mode, rank, cnt])
                if new_mode == DONE:
                    values[b, r] = torch.tensor([new_lo]).view(torch.float64)[0]
            elif mode == COLLECT:
                keys = collected[b][src]
                idx = rank - below
                ok = len(keys) == expected and 0 <= idx < len(keys)
                state[b, r, 5] = DONE if ok else FAIL
                values[b, r] = torch.tensor([keys[idx] if ok else 0]).view(torch.float64)[0] if ok else math.nan
        s0, s1 = state[b, 0], state[b, 1]
        share[b] = int(bool(s0[5] == s1[5]) and int(s0[5]) <= COLLECT and torch.equal(s0[:4], s1[:4]))
    return state, share, values


@triton.jit
def finalize_kernel(values, tfrac, counts, floor, eps, thr, B, BLOCK: tl.constexpr):
    """eps as ``core.selection.eps_from_sq_distances`` (sqrt, NumPy's lerp, floor, NaN below two
    points) and ``thr = core.cluster.sq_threshold(nan_to_num(eps, 0))``, step for step."""
    b = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = b < B
    v0 = tl.load(values + 2 * b, mask=m, other=0.0)
    v1 = tl.load(values + 2 * b + 1, mask=m, other=0.0)
    t = tl.load(tfrac + b, mask=m, other=0.0)
    c = tl.load(counts + b, mask=m, other=0)
    fl = tl.load(floor + b, mask=m, other=0.0)
    a = tl.sqrt(tl.where(v0 > 0.0, v0, 0.0))
    z = tl.sqrt(tl.where(v1 > 0.0, v1, 0.0))
    a = tl.where(v0 != v0, v0, a)  # NaN (a failed selection) stays NaN
    z = tl.where(v1 != v1, v1, z)
    diff = z - a
    low = a + diff * t
    high = z - diff * (1.0 - t)
    e = tl.where(t >= 0.5, high, low)
    e = tl.where((e != e) | (e >= fl), e, fl)
    e = tl.where(c >= 2, e, float("nan"))
    tl.store(eps + b, e, mask=m)
    # sq_threshold: the largest float64 T with sqrt(T) <= eps.
    x = tl.where(e == e, e, 0.0)
    sq = x * x
    for _ in tl.static_range(4):
        down = (sq.to(tl.int64, bitcast=True) - 1).to(tl.float64, bitcast=True)
        sq = tl.where(tl.sqrt(sq) > x, down, sq)
    for _ in tl.static_range(4):
        up = (sq.to(tl.int64, bitcast=True) + 1).to(tl.float64, bitcast=True)
        sq = tl.where(tl.sqrt(up) <= x, up, sq)
    tl.store(thr + b, sq, mask=m)


def finalize_torch(values: torch.Tensor, t: torch.Tensor, counts: torch.Tensor, floor: torch.Tensor):
    """``finalize_kernel`` in PyTorch: ``core.selection.eps_from_values`` and
    ``core.cluster.sq_threshold``."""
    eps = eps_from_values(values, t, counts, floor)
    return eps, sq_threshold(eps.nan_to_num(0.0))
