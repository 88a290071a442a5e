"""The neighbour relation packed into bits and DBSCAN labels read from them: the bits and
label kernels of the fused pairwise stage (``pairs``), each beside its PyTorch twin."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..core.cluster import torch_dbscan
from .pair_bounds import _enclosure, _exact_tile

BIG = 1 << 30  # "no label" in the labelling kernel
_BIG = tl.constexpr(BIG)


@triton.jit
def _pack_rows(nbr, R: tl.constexpr, C: tl.constexpr):
    """``[R, C]`` bool -> ``[R, C // 32]`` int32 words, bit ``t`` of word ``w`` = column ``32 w + t``."""
    bits = tl.reshape(nbr.to(tl.int64), [R, C // 32, 32])
    shift = tl.arange(0, 32).to(tl.int64)
    return tl.sum(bits << shift[None, None, :], axis=2).to(tl.int32)


@triton.jit
def bits_kernel(X, n64, slack, gid, counts, tiles, thr, bits, n, T, P, W, D: tl.constexpr,
                BI: tl.constexpr, BD: tl.constexpr):
    """``bits[b, i, w]`` bit ``t``: ``D_ij <= thr[b]`` for ``j = 32 w + t``, ``i != j``, both
    below ``counts[b]`` (``bits`` zeroed before). Tile (TI, TJ), ``TI <= TJ``, writes its block
    and, off the diagonal, the mirrored one."""
    WB: tl.constexpr = BI // 32
    p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    c = tl.load(counts + b)
    th = tl.load(thr + b)
    Xb = X + b * n * D
    for t in range(p, T, P):
        TI = tl.load(tiles + 2 * t)
        TJ = tl.load(tiles + 2 * t + 1)
        if TJ * BI < c:
            i = TI * BI + tl.arange(0, BI)
            j = TJ * BI + tl.arange(0, BI)
            mi = i < c
            mj = j < c
            valid = mi[:, None] & mj[None, :] & (i[:, None] != j[None, :])
            lo, hi = _enclosure(Xb, n64 + b * n, slack + b * n, gid + b * n, i, j, mi, mj, D, BI, BD)
            need = valid & (lo <= th) & (hi > th)
            ex = _exact_tile(Xb, i, TJ * BI, need, D, BI)
            nbr = valid & ((hi <= th) | (need & (ex <= th)))
            w = tl.arange(0, WB)
            rows = _pack_rows(nbr, BI, BI)
            tl.store(bits + (b * n + i[:, None]) * W + TJ * WB + w[None, :], rows,
                     mask=(i[:, None] < n) & (TJ * WB + w[None, :] < W))
            if TI != TJ:
                cols = _pack_rows(tl.trans(nbr), BI, BI)
                tl.store(bits + (b * n + j[:, None]) * W + TI * WB + w[None, :], cols,
                         mask=(j[:, None] < n) & (TI * WB + w[None, :] < W))


def pack_bits_torch(adj: torch.Tensor) -> torch.Tensor:
    """``[B, n, n]`` bool -> ``[B, n, ceil(n / 32)]`` int32 (bit ``t`` of word ``w`` = column ``32 w + t``)."""
    B, n, _ = adj.shape
    W = (n + 31) // 32
    padded = torch.zeros(B, n, 32 * W, dtype=torch.int64, device=adj.device)
    padded[:, :, :n] = adj.long()
    words = (padded.view(B, n, W, 32) << torch.arange(32, device=adj.device)).sum(-1)
    return words.to(torch.int32)  # wraps bit 31 to the sign, as the kernel does


def bits_torch(exact: torch.Tensor, counts: torch.Tensor, thr: torch.Tensor) -> torch.Tensor:
    """``bits_kernel`` in PyTorch from exact distances."""
    n = exact.shape[1]
    idx = torch.arange(n, device=exact.device)
    valid = idx[None, :] < counts[:, None]
    adj = (exact <= thr[:, None, None]) & valid[:, :, None] & valid[:, None, :] & (idx[:, None] != idx[None, :])
    return pack_bits_torch(adj)


@triton.jit
def _popc(x):
    u = x.to(tl.uint32, bitcast=True)
    u = u - ((u >> 1) & 0x55555555)
    u = (u & 0x33333333) + ((u >> 2) & 0x33333333)
    u = (u + (u >> 4)) & 0x0F0F0F0F
    u = (u * 0x01010101) >> 24
    return u.to(tl.int32)


@triton.jit
def _min_core_label(bitsb, labb, rows, mr, n, W, BR: tl.constexpr):
    """For rows ``rows``: the smallest ``lab[j]`` over neighbours ``j`` (``BIG`` for non-core)."""
    best = tl.full([BR], _BIG, dtype=tl.int32)
    tt = tl.arange(0, 32)
    for w in range(W):
        word = tl.load(bitsb + rows * W + w, mask=mr, other=0)
        cols = w * 32 + tt
        lj = tl.load(labb + cols, mask=cols < n, other=_BIG, volatile=True)
        bit = ((word[:, None] >> tt[None, :]) & 1) != 0
        best = tl.minimum(best, tl.min(tl.where(bit, lj[None, :], _BIG), axis=1))
    return best


@triton.jit
def label_kernel(bits, counts, min_samples, lab, rank, labels, n, W, BR: tl.constexpr):
    """scikit-learn's DBSCAN labels of image ``program_id(0)`` from its neighbour bits;
    ``lab`` and ``rank`` are int32 ``[B, n]`` scratch."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.load(counts + b)
    ms = tl.load(min_samples + b)
    bitsb = bits + b * n * W
    labb = lab + b * n
    rankb = rank + b * n
    # Core points (their neighbours and themselves) start with their own index.
    for r0 in range(0, n, BR):
        rows = r0 + tl.arange(0, BR)
        mr = rows < c
        deg = tl.full([BR], 1, dtype=tl.int32)
        for w in range(W):
            deg += _popc(tl.load(bitsb + rows * W + w, mask=mr, other=0))
        core = mr & (deg >= ms)
        tl.store(labb + rows, tl.where(core, rows, _BIG), mask=rows < n)
    tl.debug_barrier()
    # Min-label propagation with pointer jumping, until a sweep changes nothing.
    changed = c * 0 + 1
    while changed > 0:
        changed = c * 0
        for r0 in range(0, n, BR):
            rows = r0 + tl.arange(0, BR)
            mr = rows < c
            old = tl.load(labb + rows, mask=mr, other=_BIG, volatile=True)
            core = old < _BIG
            seen = _min_core_label(bitsb, labb, rows, mr, n, W, BR)
            new = tl.where(core, tl.minimum(old, seen), _BIG)
            jump = tl.load(labb + new, mask=core, other=_BIG, volatile=True)
            new = tl.minimum(new, jump)
            lower = core & (new < old)
            tl.store(labb + rows, new, mask=lower)
            changed += tl.sum(lower.to(tl.int64))
        tl.debug_barrier()
    # Roots are numbered in index order; border points join their smallest adjacent root.
    carry = tl.zeros([], dtype=tl.int32)
    for r0 in range(0, n, BR):
        rows = r0 + tl.arange(0, BR)
        mr = rows < c
        root = mr & (tl.load(labb + rows, mask=mr, other=_BIG, volatile=True) == rows)
        running = tl.cumsum(root.to(tl.int32), 0) + carry
        tl.store(rankb + rows, running - 1, mask=mr)
        carry += tl.sum(root.to(tl.int32))
    tl.debug_barrier()
    for r0 in range(0, n, BR):
        rows = r0 + tl.arange(0, BR)
        mr = rows < c
        own = tl.load(labb + rows, mask=mr, other=_BIG, volatile=True)
        comp = tl.where(own < _BIG, own, _min_core_label(bitsb, labb, rows, mr, n, W, BR))
        found = mr & (comp < _BIG)
        number = tl.load(rankb + comp, mask=found, other=-1, volatile=True)
        tl.store(labels + b * n + rows, tl.where(found, number, -1).to(tl.int64), mask=rows < n)


def labels_from_bits_torch(bits: torch.Tensor, counts: torch.Tensor, min_samples: torch.Tensor) -> torch.Tensor:
    """``label_kernel`` in PyTorch: unpack the bits and run the package's torch DBSCAN."""
    B, n, W = bits.shape
    words = bits.to(torch.int64) & 0xFFFFFFFF
    adj = ((words[:, :, :, None] >> torch.arange(32, device=bits.device)) & 1).reshape(B, n, 32 * W)[:, :, :n]
    # torch_dbscan reads the upper triangle of a distance matrix against eps: 0 = neighbour.
    dist = (adj == 0).to(torch.float64)
    return torch_dbscan.dbscan_labels(dist, counts, torch.full((B,), 0.5, dtype=torch.float64), min_samples)
