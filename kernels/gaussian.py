"""Separable Gaussian filter over the last two axes; equals
``cfcam_fast.core.filters.gaussian_filter2d_torch`` (and ``scipy.ndimage.gaussian_filter`` with
``mode="constant"`` over those axes).

Two passes of one kernel, along W then along H (the order of the torch function), through
an intermediate in the accumulation type. Each program filters ``BLOCK`` consecutive
elements of the flattened ``[N, H, W]`` output, so tiny maps pack many per program. Taps
farther than the map's extent never meet a value and are skipped, so a sigma larger than
the map costs ``2 * min(radius, H - 1) + 1`` taps, not ``2 * radius + 1``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from cfcam_fast.core.filters import gaussian_radius, gaussian_taps

from ._launch import accumulator, accumulator_dtype, check_maps, launcher, map_batch

BLOCK = 1024


@triton.jit
def gaussian_axis_kernel(src, dst, taps, total, H, W,
                         src_sn, src_sh, src_sw, dst_sn, dst_sh, dst_sw,
                         radius, reach,
                         AXIS: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """``dst = taps (*) src`` along ``AXIS`` (0: H, 1: W) of ``[N, H, W]``, zero padding."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < total
    n = (offs // (H * W)).to(tl.int64)
    rem = offs % (H * W)
    i = rem // W
    j = rem % W
    base = src + n * src_sn
    acc = tl.zeros([BLOCK], dtype=ACC)
    for t in range(-reach, reach + 1):
        tap = tl.load(taps + radius + t)
        if AXIS == 0:
            k = i + t
            ok = inside & (k >= 0) & (k < H)
            ptr = base + k.to(tl.int64) * src_sh + j.to(tl.int64) * src_sw
        else:
            k = j + t
            ok = inside & (k >= 0) & (k < W)
            ptr = base + i.to(tl.int64) * src_sh + k.to(tl.int64) * src_sw
        acc += tap * tl.load(ptr, mask=ok, other=0.0).to(ACC)
    out = dst + n * dst_sn + i.to(tl.int64) * dst_sh + j.to(tl.int64) * dst_sw
    tl.store(out, acc.to(dst.dtype.element_ty), mask=inside)


def gaussian_filter2d(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Gaussian filter of every ``[H, W]`` map of ``x`` (``[..., H, W]``, any strides).

    Zero padding, taps normalised, radius ``int(truncate * sigma + 0.5)`` as in SciPy.
    fp16, bf16 and fp32 accumulate in fp32, fp64 in fp64; the result has ``x``'s dtype and
    shape (contiguous). CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``.
    """
    check_maps("gaussian_filter2d", x)
    for name, value in (("sigma", sigma), ("truncate", truncate)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
            raise ValueError(f"gaussian_filter2d: {name} must be a finite number > 0, got {value!r}")
    kernel = launcher(gaussian_axis_kernel, x.device, "gaussian_filter2d",
                      "cfcam_fast.core.filters.gaussian_filter2d_torch")
    if x.numel() == 0:
        return x.new_empty(x.shape)
    out, src, dst = map_batch(x)
    H, W = x.shape[-2:]
    acc_dtype = accumulator_dtype(x.dtype)
    mid = torch.empty(dst.shape, dtype=acc_dtype, device=x.device)
    taps = gaussian_taps(sigma, truncate, dtype=acc_dtype, device=x.device)
    radius = gaussian_radius(sigma, truncate)
    grid = (triton.cdiv(src.numel(), BLOCK),)
    for axis, a, b, extent in ((1, src, mid, W), (0, mid, dst, H)):
        kernel[grid](a, b, taps, a.numel(), H, W, *a.stride(), *b.stride(), radius,
                     min(radius, extent - 1), AXIS=axis, ACC=accumulator(x.dtype), BLOCK=BLOCK)
    return out
