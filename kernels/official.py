"""The authors' data-dependent filter (docs/algorithm.md, ``filter="official"``); equals
``cfcam_fast.core.filters.official_filter_torch`` (kernel: ``official_kernel``).

Two kernels: ``official_taps_kernel`` builds each map's normalised ``H x W`` kernel ``K``
(one program per map: the map's mean, then ``sum(S * Rg)``, then ``K``), and
``official_correlate_kernel`` correlates each map with its own ``K``, zero padded as
``conv2d(padding="same")`` pads; each program computes ``BLOCK`` outputs of the flattened
``[N, H, W]`` result, ``H * W`` taps each.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from cfcam_fast.core.filters import OFFICIAL_NORM_EPS, OFFICIAL_SIGMA_RANGE, OFFICIAL_SIGMA_SPATIAL

from ._launch import accumulator, accumulator_dtype, check_maps, launcher, map_batch

BLOCK = 256
TAPS_BLOCK_MAX = 1024


@triton.jit
def _official_taps(base, p, H, W, g_sh, g_sw, mean, spatial_div, range_div, ACC: tl.constexpr):
    """Unnormalised taps ``S * Rg`` at flat positions ``p`` of the map at ``base``."""
    u = (p // W).to(ACC) - H / 2
    v = (p % W).to(ACC) - W / 2
    d = tl.load(base + (p // W) * g_sh + (p % W) * g_sw, mask=p < H * W, other=0.0).to(ACC) - mean
    return tl.exp(-(u * u + v * v) / spatial_div) * tl.exp(-(d * d) / range_div)


@triton.jit
def official_taps_kernel(g, K, H, W, g_sn, g_sh, g_sw, SPATIAL_DIV: tl.constexpr, RANGE_DIV: tl.constexpr,
                         NORM_EPS: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """``K[n] = S * Rg / (sum(S * Rg) + NORM_EPS)`` for map ``n = program_id(0)`` of ``g``;
    ``K`` is contiguous ``[N, H, W]``.

    The three constants are compile-time and materialised in ``ACC``: a Python float passed
    as a run-time argument reaches a compiled kernel as fp32, which would round
    ``2 * 0.1 ** 2`` and put fp32-sized errors into the fp64 path (the interpreter keeps it
    fp64, so only a GPU run shows this)."""
    spatial_div = tl.full([], SPATIAL_DIV, ACC)
    range_div = tl.full([], RANGE_DIV, ACC)
    norm_eps = tl.full([], NORM_EPS, ACC)
    n = tl.program_id(0).to(tl.int64)
    base = g + n * g_sn
    hw = H * W
    total = tl.zeros([BLOCK], dtype=ACC)
    for start in range(0, hw, BLOCK):
        p = start + tl.arange(0, BLOCK)
        x = tl.load(base + (p // W) * g_sh + (p % W) * g_sw, mask=p < hw, other=0.0)
        total += x.to(ACC)
    mean = tl.sum(total, axis=0) / hw
    mass = tl.zeros([BLOCK], dtype=ACC)
    for start in range(0, hw, BLOCK):
        p = start + tl.arange(0, BLOCK)
        k = _official_taps(base, p, H, W, g_sh, g_sw, mean, spatial_div, range_div, ACC)
        mass += tl.where(p < hw, k, 0.0)
    norm = tl.sum(mass, axis=0) + norm_eps
    for start in range(0, hw, BLOCK):
        p = start + tl.arange(0, BLOCK)
        k = _official_taps(base, p, H, W, g_sh, g_sw, mean, spatial_div, range_div, ACC)
        tl.store(K + n * hw + p, k / norm, mask=p < hw)


@triton.jit
def official_correlate_kernel(g, K, out, total, H, W, g_sn, g_sh, g_sw, o_sn, o_sh, o_sw, top, left,
                              ACC: tl.constexpr, BLOCK: tl.constexpr):
    """``out[n, i, j] = sum_{u, v} K[n, u, v] * g[n, i + u - top, j + v - left]`` (zero outside)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < total
    hw = H * W
    n = (offs // hw).to(tl.int64)
    i = (offs % hw) // W
    j = offs % W
    base = g + n * g_sn
    taps = K + n * hw
    acc = tl.zeros([BLOCK], dtype=ACC)
    for u in range(H):
        r = i + u - top
        row_ok = inside & (r >= 0) & (r < H)
        for v in range(W):
            c = j + v - left
            ok = row_ok & (c >= 0) & (c < W)
            x = tl.load(base + r.to(tl.int64) * g_sh + c.to(tl.int64) * g_sw, mask=ok, other=0.0)
            acc += tl.load(taps + u * W + v, mask=inside, other=0.0) * x.to(ACC)
    dst = out + n * o_sn + i.to(tl.int64) * o_sh + j.to(tl.int64) * o_sw
    tl.store(dst, acc.to(out.dtype.element_ty), mask=inside)


def official_filter2d(g: torch.Tensor) -> torch.Tensor:
    """The official filter of every ``[H, W]`` map of ``g`` (``[..., H, W]``, any strides).

    Works in fp32 for fp16, bf16 and fp32 input, in fp64 for fp64; returns ``g``'s dtype.
    Cost ``H * W`` multiply-adds per output: meant for CAM-layer sizes (7x7 to 56x56).
    """
    check_maps("official_filter2d", g)
    taps_kernel = launcher(official_taps_kernel, g.device, "official_filter2d",
                           "cfcam_fast.core.filters.official_filter_torch")
    correlate = launcher(official_correlate_kernel, g.device, "official_filter2d",
                         "cfcam_fast.core.filters.official_filter_torch")
    if g.numel() == 0:
        return g.new_empty(g.shape)
    out, src, dst = map_batch(g)
    H, W = g.shape[-2:]
    acc = accumulator(g.dtype)
    K = torch.empty(src.shape, dtype=accumulator_dtype(g.dtype), device=g.device)
    taps_block = min(triton.next_power_of_2(H * W), TAPS_BLOCK_MAX)
    taps_kernel[(src.shape[0],)](src, K, H, W, *src.stride(), SPATIAL_DIV=2 * OFFICIAL_SIGMA_SPATIAL ** 2,
                                 RANGE_DIV=2 * OFFICIAL_SIGMA_RANGE ** 2, NORM_EPS=OFFICIAL_NORM_EPS, ACC=acc,
                                 BLOCK=taps_block)
    correlate[(triton.cdiv(src.numel(), BLOCK),)](src, K, dst, src.numel(), H, W, *src.stride(),
                                                  *dst.stride(), (H - 1) // 2, (W - 1) // 2,
                                                  ACC=acc, BLOCK=BLOCK)
    return out
