"""Argument checks every layer shares: numbers, counts and captured tensors.

Each raises a ``ValueError`` that says what is wrong and what to fix.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import torch


def is_real_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and abs(value) != math.inf


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is an int >= 1, else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def check_captured(activations: torch.Tensor, gradients: torch.Tensor) -> None:
    """Shapes, dtypes, finiteness and float32 range of a captured pair; ``ValueError``
    saying what is wrong (and at which batch index)."""
    for name, t in (("activations", activations), ("gradients", gradients)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be [B, C, H, W], got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if activations.shape != gradients.shape:
        raise ValueError(f"activations {tuple(activations.shape)} and gradients "
                         f"{tuple(gradients.shape)} must have the same shape")
    if activations.device != gradients.device:
        raise ValueError(f"activations ({activations.device}) and gradients ({gradients.device}) "
                         "must be on the same device")
    if activations.shape[0] == 0 or activations.shape[1] == 0:
        raise ValueError(f"need at least one image and one channel, got shape {tuple(activations.shape)}")
    f32 = torch.finfo(torch.float32)
    for name, t in (("activations", activations), ("gradients", gradients)):
        high, low = _extrema(t)
        bad = ~(torch.isfinite(high) & torch.isfinite(low))
        # The cores round to float32 first: a float64 image must neither overflow it nor sink
        # below its normal range (the cores scale float32 images, subnormal ones included).
        peak = torch.maximum(high.abs(), low.abs())
        outside = ((peak > f32.max) | ((peak > 0) & (peak < f32.tiny))) if t.dtype == torch.float64 \
            else torch.zeros_like(bad)
        if bool((bad | outside).any()):  # one host synchronisation when all is well
            if bool(bad.any()):
                raise ValueError(f"{name} contain non-finite values (NaN or inf) at batch index {_indices(bad)}")
            raise ValueError(f"{name} overflow or underflow float32, which the CAM cores compute in, at batch "
                             f"index {_indices(outside)}: each image's largest magnitude must be 0 or within "
                             f"[{f32.tiny:.4g}, {f32.max:.4g}]; rescale them")


def _extrema(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of ``t`` ``[B, ...]``, its largest and smallest value: max and min
    propagate NaN and keep inf, so an image is finite iff both are (one fast reduction
    each, where ``isfinite`` would build a mask as large as the tensor)."""
    flat = t.flatten(1)
    return flat.amax(1), flat.amin(1)


def finite_images(*tensors: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: image ``b`` is finite in every one of ``tensors``, with no host
    synchronisation (``check_captured`` raises instead)."""
    oks = []
    for t in tensors:
        high, low = _extrema(t)
        oks.append(torch.isfinite(high) & torch.isfinite(low))
    return torch.stack(oks).all(0)


def _indices(mask: torch.Tensor) -> str:
    """The batch indices where ``mask`` is set, comma-separated."""
    return ", ".join(map(str, mask.nonzero().flatten().tolist()))


def checked_output_size(output_size: Sequence[int] | None, activations: torch.Tensor) -> tuple[int, int]:
    """``output_size`` as ``(H, W)`` (default: the activations' own size); ``ValueError``
    unless both are positive integers."""
    if output_size is None:
        return int(activations.shape[-2]), int(activations.shape[-1])
    message = f"output_size must be (H, W) with positive integer sizes, got {output_size!r}"
    try:
        size = tuple(operator.index(s) for s in output_size)
    except TypeError:
        raise ValueError(message) from None
    if len(size) != 2 or min(size) < 1 or any(isinstance(s, bool) for s in output_size):
        raise ValueError(message)
    return size[0], size[1]
