"""Combination and output of docs/algorithm.md steps 6-7, fused; equals
``cfcam_fast.core.backends.torch_backend.combine``.

Four launches, each parallel over images and blocks:
``alpha_kernel`` (one program per image) turns the channel weights into ``alpha`` (softmax
over the kept channels, the standardised softmax, or the weights themselves) and zeroes
the image's map and peak; ``weighted_sum_kernel`` reads the activations once, a
``[BLOCK_C, BLOCK_HW]`` tile at a time, each program a slice of channels, and adds
``sum_c alpha_c A_c`` into the map atomically; ``upsample_kernel`` then runs twice over
blocks of output pixels, resampling ``ReLU(map)`` bilinearly as PyTorch's
``interpolate(..., align_corners=False)`` does: first for each image's maximum (atomic
max, nothing written), then to write the map divided by it.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import check_size, launcher
from .weights import check_labels

WEIGHTINGS = {"softmax": 0, "standardized": 1, "linear": 2}
TILE = 4096
BLOCK_HW_MAX = 128
CHANNELS_PER_PROGRAM = 256
ALPHA_BLOCK = 1024
UPSAMPLE_BLOCK = 1024
TORCH_EQUIVALENT = "cfcam_fast.core.backends.torch_backend.combine"


@triton.jit
def alpha_kernel(w, labels, alpha, cam, peak, C, HW, WEIGHTING: tl.constexpr, BLOCK_C: tl.constexpr):
    """``alpha[b]`` from ``w[b]`` over the kept channels (label != -1) by ``WEIGHTING`` (0
    softmax, 1 standardized softmax, 2 linear; 0 for noise); zeroes ``cam[b]`` and ``peak[b]``."""
    b = tl.program_id(0).to(tl.int64)
    # Statistics of the kept weights: count, mean, max, then std and the softmax sum.
    n = 0.0
    total = 0.0
    top = -float("inf")
    centre = 0.0
    scale = 1.0
    den = 1.0
    if WEIGHTING != 2:
        for start in range(0, C, BLOCK_C):
            c = start + tl.arange(0, BLOCK_C)
            lab = tl.load(labels + b * C + c, mask=c < C, other=-1)
            wc = tl.load(w + b * C + c, mask=c < C, other=0.0).to(tl.float32)
            kept = lab != -1
            n += tl.sum(kept.to(tl.float32), axis=0)
            total += tl.sum(tl.where(kept, wc, 0.0), axis=0)
            top = tl.maximum(top, tl.max(tl.where(kept, wc, -float("inf")), axis=0))
        top = tl.where(n > 0, top, 0.0)  # no kept channel: every alpha is 0 anyway
        if WEIGHTING == 1:
            mean = total / tl.maximum(n, 1.0)
            ss = 0.0
            for start in range(0, C, BLOCK_C):
                c = start + tl.arange(0, BLOCK_C)
                lab = tl.load(labels + b * C + c, mask=c < C, other=-1)
                wc = tl.load(w + b * C + c, mask=c < C, other=0.0).to(tl.float32)
                d = tl.where(lab != -1, wc - mean, 0.0)
                ss += tl.sum(d * d, axis=0)
            std = tl.sqrt(ss / tl.maximum(n, 1.0))
            # z = (w - mean) / std, or 0 for every channel when std == 0 (uniform alpha).
            centre = tl.where(std > 0, mean, 0.0)
            scale = tl.where(std > 0, std, float("inf"))
        top = tl.where(WEIGHTING == 1, (top - centre) / scale, top)
        den = 0.0
        for start in range(0, C, BLOCK_C):
            c = start + tl.arange(0, BLOCK_C)
            lab = tl.load(labels + b * C + c, mask=c < C, other=-1)
            wc = tl.load(w + b * C + c, mask=c < C, other=0.0).to(tl.float32)
            z = tl.where(WEIGHTING == 1, (wc - centre) / scale, wc)
            den += tl.sum(tl.where(lab != -1, tl.exp(z - top), 0.0), axis=0)
        den = tl.where(den > 0, den, 1.0)  # no kept channel: every alpha is 0 anyway
    for start in range(0, C, BLOCK_C):
        c = start + tl.arange(0, BLOCK_C)
        lab = tl.load(labels + b * C + c, mask=c < C, other=-1)
        wc = tl.load(w + b * C + c, mask=c < C, other=0.0).to(tl.float32)
        if WEIGHTING == 2:
            a = tl.where(lab != -1, wc, 0.0)
        else:
            z = tl.where(WEIGHTING == 1, (wc - centre) / scale, wc)
            a = tl.where(lab != -1, tl.exp(z - top) / den, 0.0)
        tl.store(alpha + b * C + c, a, mask=c < C)
    for start in range(0, HW, BLOCK_C):
        p = start + tl.arange(0, BLOCK_C)
        tl.store(cam + b * HW + p, tl.zeros([BLOCK_C], dtype=tl.float32), mask=p < HW)
    tl.store(peak + b, 0.0)


@triton.jit
def weighted_sum_kernel(A, alpha, cam, C, H, W, a_sb, a_sc, a_sh, a_sw, CHANNELS: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """``cam[b, p] += sum_c alpha[b, c] * A[b, c, p]`` over positions block ``program_id(1)``
    and the ``CHANNELS`` channels of slice ``program_id(2)``."""
    b = tl.program_id(0).to(tl.int64)
    hw = H * W
    p = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    p_ok = p < hw
    offset = ((p // W) * a_sh + (p % W) * a_sw)[None, :]
    acc = tl.zeros([BLOCK_HW], dtype=tl.float32)
    first = tl.program_id(2) * CHANNELS
    for start in range(first, tl.minimum(first + CHANNELS, C), BLOCK_C):
        c = start + tl.arange(0, BLOCK_C)
        c_ok = c < C
        a = tl.load(alpha + b * C + c, mask=c_ok, other=0.0)
        x = tl.load(A + b * a_sb + c.to(tl.int64)[:, None] * a_sc + offset,
                    mask=c_ok[:, None] & p_ok[None, :], other=0.0)
        acc += tl.sum(a[:, None] * x.to(tl.float32), axis=0)
    tl.atomic_add(cam + b * hw + p, acc, mask=p_ok)


@triton.jit
def upsample_kernel(cam, peak, out, H, W, Ho, Wo, scale_h, scale_w, WRITE: tl.constexpr,
                    BLOCK: tl.constexpr):
    """Output pixels block ``program_id(1)`` of image ``b``: ``up(ReLU(cam[b]))``, bilinear
    with half-pixel centres and source coordinates clamped at 0. ``WRITE`` false:
    ``peak[b] = max(peak[b], values)``; true: ``out[b] = values / peak[b]`` (unchanged
    where ``peak[b]`` is not positive)."""
    b = tl.program_id(0).to(tl.int64)
    src = cam + b * H * W
    o = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = o < Ho * Wo
    y = tl.maximum(((o // Wo).to(tl.float32) + 0.5) * scale_h - 0.5, 0.0)
    x = tl.maximum(((o % Wo).to(tl.float32) + 0.5) * scale_w - 0.5, 0.0)
    y0 = y.to(tl.int32)
    x0 = x.to(tl.int32)
    y1 = tl.where(y0 < H - 1, y0 + 1, y0)
    x1 = tl.where(x0 < W - 1, x0 + 1, x0)
    ly = y - y0.to(tl.float32)
    lx = x - x0.to(tl.float32)
    v00 = tl.maximum(tl.load(src + y0 * W + x0, mask=ok, other=0.0), 0.0)
    v01 = tl.maximum(tl.load(src + y0 * W + x1, mask=ok, other=0.0), 0.0)
    v10 = tl.maximum(tl.load(src + y1 * W + x0, mask=ok, other=0.0), 0.0)
    v11 = tl.maximum(tl.load(src + y1 * W + x1, mask=ok, other=0.0), 0.0)
    value = (1.0 - ly) * ((1.0 - lx) * v00 + lx * v01) + ly * ((1.0 - lx) * v10 + lx * v11)
    if WRITE:
        top = tl.load(peak + b)
        tl.store(out + b * Ho * Wo + o, value / tl.where(top > 0, top, 1.0), mask=ok)
    else:
        tl.atomic_max(peak + b, tl.max(tl.where(ok, value, 0.0), axis=0))


def combine(activations: torch.Tensor, channel_weights: torch.Tensor, labels: torch.Tensor,
            weighting: str, output_size) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps ``[B, Ho, Wo]`` float32 in ``[0, 1]`` and ``alpha`` ``[B, C]`` float32 (0 for
    noise) of docs/algorithm.md steps 6-7, ``output_size = (Ho, Wo)``."""
    check_labels(activations, labels, "combine")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"combine: weighting must be one of {tuple(WEIGHTINGS)}, got {weighting!r}")
    if not isinstance(channel_weights, torch.Tensor) or channel_weights.shape != labels.shape \
            or not channel_weights.is_floating_point() or channel_weights.device != labels.device:
        raise ValueError(f"combine: channel_weights must be a floating-point tensor of shape "
                         f"{tuple(labels.shape)} on {labels.device}")
    size = tuple(int(s) for s in output_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"combine: output_size must be (H, W) with positive sizes, got {output_size!r}")
    alphas = launcher(alpha_kernel, activations.device, "combine", TORCH_EQUIVALENT)
    summed = launcher(weighted_sum_kernel, activations.device, "combine", TORCH_EQUIVALENT)
    resample = launcher(upsample_kernel, activations.device, "combine", TORCH_EQUIVALENT)
    B, C, H, W = activations.shape
    Ho, Wo = size
    maps = torch.empty((B, Ho, Wo), dtype=torch.float32, device=activations.device)
    check_size("combine", maps)
    alpha = torch.empty((B, C), dtype=torch.float32, device=activations.device)
    cam = torch.empty((B, H * W), dtype=torch.float32, device=activations.device)
    peak = torch.empty((B,), dtype=torch.float32, device=activations.device)
    alphas[(B,)](channel_weights.contiguous(), labels.contiguous(), alpha, cam, peak, C, H * W,
                 WEIGHTING=WEIGHTINGS[weighting], BLOCK_C=min(triton.next_power_of_2(max(C, H * W)), ALPHA_BLOCK))
    block_hw = min(triton.next_power_of_2(H * W), BLOCK_HW_MAX)
    block_c = min(triton.next_power_of_2(C), max(1, TILE // block_hw), CHANNELS_PER_PROGRAM)
    summed[(B, triton.cdiv(H * W, block_hw), triton.cdiv(C, CHANNELS_PER_PROGRAM))](
        activations, alpha, cam, C, H, W, *activations.stride(), CHANNELS=CHANNELS_PER_PROGRAM,
        BLOCK_C=block_c, BLOCK_HW=block_hw)
    grid = (B, triton.cdiv(Ho * Wo, UPSAMPLE_BLOCK))
    for write in (False, True):
        resample[grid](cam, peak, maps, H, W, Ho, Wo, H / Ho, W / Wo, WRITE=write, BLOCK=UPSAMPLE_BLOCK)
    return maps, alpha
