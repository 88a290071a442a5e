"""Channel weights of docs/algorithm.md step 5, fused; equals
``cfcam_fast.core.backends.torch_backend.channel_weights``.

``channel_stats_kernel`` reads the gradients once, a ``[BLOCK_C, BLOCK_HW]`` tile at a
time: each channel's spatial mean (the weight of an important channel) and, by atomics
into per-image cluster slots, the cluster sums. With the Gaussian filter the sum is of
``<G_c, m>`` (``m = gaussian_mean_map``, by linearity ``mean(Filter(g_k))`` is the mean of
``<G_c, m>`` over the members), so no map is formed. With the official filter the kernel
depends on ``g_k``, so the cluster-mean maps are summed instead, filtered by the
``official_filter2d`` kernel and averaged. ``cluster_weights_kernel`` then hands every
member its cluster's weight. No Python loop over clusters or images.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from cfcam_fast.core.config import CFCAMConfig
from cfcam_fast.core.filters import gaussian_mean_map

from ._launch import FLOAT_DTYPES, accumulator, check_size, launcher
from .official import official_filter2d

TILE = 4096
BLOCK_HW_MAX = 256
GATHER_BLOCK = 1024
TORCH_EQUIVALENT = "cfcam_fast.core.backends.torch_backend.channel_weights"


@triton.jit
def channel_stats_kernel(G, labels, w, sums, counts, mean_map, C, S, H, W, g_sb, g_sc, g_sh, g_sw,
                         MAPS: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                         BLOCK_HW: tl.constexpr):
    """For channels ``c`` of image ``b``: ``w[b, c] = mean(G[b, c])`` if important (label
    -2), else 0; for members of cluster ``k >= 0``: ``counts[b, k] += 1`` (``[B, C]``) and
    ``sums[b, k] += <G[b, c], mean_map>`` (``MAPS`` false, ``sums`` ``[B, S]``) or
    ``sums[b, k, :] += G[b, c]`` (``MAPS`` true, ``sums`` ``[B, S, H * W]``)."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    lab = tl.load(labels + b * C + c, mask=c_ok, other=-1)
    member = c_ok & (lab >= 0)
    hw = H * W
    rows = G + b * g_sb + c.to(tl.int64)[:, None] * g_sc
    total = tl.zeros([BLOCK_C], dtype=ACC)
    dot = tl.zeros([BLOCK_C], dtype=ACC)
    for start in range(0, hw, BLOCK_HW):
        p = start + tl.arange(0, BLOCK_HW)
        p_ok = p < hw
        ok = c_ok[:, None] & p_ok[None, :]
        x = tl.load(rows + ((p // W) * g_sh + (p % W) * g_sw)[None, :], mask=ok, other=0.0).to(ACC)
        total += tl.sum(x, axis=1)
        if MAPS:
            slot = (b * S + lab.to(tl.int64)) * hw
            tl.atomic_add(sums + slot[:, None] + p[None, :], x, mask=member[:, None] & p_ok[None, :])
        else:
            m = tl.load(mean_map + p, mask=p_ok, other=0.0)
            dot += tl.sum(x * m[None, :], axis=1)
    tl.store(w + b * C + c, tl.where(lab == -2, total / hw, 0.0), mask=c_ok)
    if not MAPS:
        tl.atomic_add(sums + b * S + lab, dot, mask=member)
    tl.atomic_add(counts + b * C + lab, tl.full([BLOCK_C], 1.0, ACC), mask=member)


@triton.jit
def cluster_weights_kernel(w, labels, values, counts, total, C, S, DIVIDE: tl.constexpr,
                           BLOCK: tl.constexpr):
    """``w[b, c] = values[b, k] (/ counts[b, k] if DIVIDE)`` for members of cluster ``k``;
    ``values`` and ``counts`` have ``S`` slots per image."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < total
    lab = tl.load(labels + offs, mask=inside, other=-1)
    member = inside & (lab >= 0)
    slot = (offs // C) * S + lab
    value = tl.load(values + slot, mask=member, other=0.0)
    if DIVIDE:
        value = value / tl.load(counts + slot, mask=member, other=1.0)
    tl.store(w + offs, value, mask=member)


@functools.lru_cache(maxsize=64)
def _mean_map(H: int, W: int, sigma: float, truncate: float, device: torch.device) -> torch.Tensor:
    return gaussian_mean_map(H, W, sigma, truncate, device=device).flatten().contiguous()


def check_labels(values: torch.Tensor, labels: torch.Tensor, op: str) -> None:
    """``values`` ``[B, C, H, W]`` float and ``labels`` int64 ``[B, C]`` on one device."""
    if not isinstance(values, torch.Tensor) or values.dim() != 4 or values.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{op} needs a floating-point [B, C, H, W] tensor, got "
                         f"{getattr(values, 'dtype', type(values).__name__)} {tuple(getattr(values, 'shape', ()))}")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 \
            or tuple(labels.shape) != tuple(values.shape[:2]):
        raise ValueError(f"{op} needs int64 labels of shape {tuple(values.shape[:2])}, got "
                         f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}")
    if values.numel() == 0:
        raise ValueError(f"{op} needs at least one image, channel and pixel, got shape {tuple(values.shape)}")
    if labels.device != values.device:
        raise ValueError(f"{op}: labels ({labels.device}) and values ({values.device}) must share a device")
    check_size(op, values)


def channel_weights(gradients: torch.Tensor, labels: torch.Tensor, config: CFCAMConfig,
                    slots: int | None = None) -> torch.Tensor:
    """``w_c`` ``[B, C]`` float32 of docs/algorithm.md step 5: spatial mean for important channels
    (label -2), 0 for noise (-1), ``mean(Filter(g_k))`` for the members of cluster ``k``.
    ``slots``: a bound on the cluster numbers (``C`` will do) for the official filter, which
    otherwise reads the largest label from the device (one host synchronisation)."""
    check_labels(gradients, labels, "channel_weights")
    if not isinstance(config, CFCAMConfig):
        raise ValueError(f"config must be a CFCAMConfig, got {type(config).__name__}")
    stats = launcher(channel_stats_kernel, gradients.device, "channel_weights", TORCH_EQUIVALENT)
    gather = launcher(cluster_weights_kernel, gradients.device, "channel_weights", TORCH_EQUIVALENT)
    B, C, H, W = gradients.shape
    device = gradients.device
    labels = labels.contiguous()
    w = torch.empty((B, C), dtype=torch.float32, device=device)
    maps = config.filter == "official"
    # Slots for the most clusters any image has (official: one host sync unless a bound is
    # given, so that K maps are filtered, not C); counts and sums share one zero-filled
    # buffer (one launch).
    if slots is not None and (isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= C):
        raise ValueError(f"channel_weights: slots must be an int in [1, {C}], got {slots!r}")
    if not maps:
        n_slots = C
    else:
        n_slots = slots if slots is not None else max(int(labels.max()) + 1, 1)
    slot_size = H * W if maps else 1
    scratch = torch.zeros(B * C + B * n_slots * slot_size, dtype=torch.float32, device=device)
    counts = scratch[: B * C].view(B, C)
    sums = scratch[B * C:].view(B, n_slots, slot_size)
    # The mean map is read only without MAPS; any fp32 pointer stands in otherwise.
    mean_map = counts if maps else _mean_map(H, W, float(config.sigma), float(config.truncate), device)
    block_hw = min(triton.next_power_of_2(H * W), BLOCK_HW_MAX)
    block_c = min(triton.next_power_of_2(C), max(1, TILE // block_hw))
    stats[(B, triton.cdiv(C, block_c))](gradients, labels, w, sums, counts, mean_map, C, n_slots, H, W,
                                       *gradients.stride(), MAPS=maps, ACC=accumulator(torch.float32),
                                       BLOCK_C=block_c, BLOCK_HW=block_hw)
    if maps:
        sizes = counts[:, :n_slots]
        means = (sums / sizes.clamp(min=1)[:, :, None]).view(B, n_slots, H, W)
        values = official_filter2d(means).mean((2, 3))
    else:
        values = sums.view(B, C)
    gather[(triton.cdiv(B * C, GATHER_BLOCK),)](w, labels, values.contiguous(), counts, B * C, C, n_slots,
                                                DIVIDE=not maps, BLOCK=GATHER_BLOCK)
    return w
