"""Argument checks every layer shares: numbers, counts and captured tensors.

Each raises a ``ValueError`` that says what is wrong and what to fix.
"""
from __future__ import annotations

import math
import operator
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
    saying what is wrong (and at which batch index).

    The shapes and dtypes are checked at once. The values need the device: inside
    ``deferred_checks()`` on CUDA they are reduced now and read when the block ends (one host
    synchronisation after all its work is enqueued); elsewhere they are read here."""
    check_layout(activations, gradients)
    problems = _ValueProblems(activations, gradients)
    pending = getattr(_deferred, "pending", None)
    if pending is not None and activations.device.type == "cuda":
        pending.append(problems)
    else:
        problems.raise_if_any()


def check_layout(activations: torch.Tensor, gradients: torch.Tensor) -> None:
    """The host-side half of ``check_captured``: types, shapes, dtypes and devices."""
    for name, t in (("activations", activations), ("gradients", gradients)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor (or an array with __dlpack__), got {type(t).__name__}")
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


class _ValueProblems:
    """Per image of a captured pair, on the device: non-finite values, and (float64 inputs)
    a largest magnitude outside float32's normal range, which the cores compute in."""

    def __init__(self, activations: torch.Tensor, gradients: torch.Tensor) -> None:
        f32 = torch.finfo(torch.float32)
        self.masks: list[tuple[str, torch.Tensor, torch.Tensor | None]] = []
        for name, t in (("activations", activations), ("gradients", gradients)):
            high, low = _extrema(t)
            bad = ~(torch.isfinite(high) & torch.isfinite(low))
            # The cores round to float32 first: a float64 image must neither overflow it nor sink
            # below its normal range (the cores scale float32 images, subnormal ones included).
            outside = None
            if t.dtype == torch.float64:
                peak = torch.maximum(high.abs(), low.abs())
                outside = (peak > f32.max) | ((peak > 0) & (peak < f32.tiny))
            self.masks.append((name, bad, outside))

    def any(self) -> torch.Tensor:
        """One bool on the device: is anything wrong?"""
        flags = [bad if outside is None else bad | outside for _, bad, outside in self.masks]
        return torch.cat(flags).any()

    def raise_if_any(self) -> None:
        """``ValueError`` naming the first problem and its batch indices (one host
        synchronisation when all is well)."""
        if not bool(self.any()):
            return
        f32 = torch.finfo(torch.float32)
        for name, bad, outside in self.masks:
            if bool(bad.any()):
                raise ValueError(f"{name} contain non-finite values (NaN or inf) at batch index {_indices(bad)}")
            if outside is not None and bool(outside.any()):
                raise ValueError(f"{name} overflow or underflow float32, which the CAM cores compute in, at batch "
                                 f"index {_indices(outside)}: each image's largest magnitude must be 0 or within "
                                 f"[{f32.tiny:.4g}, {f32.max:.4g}]; rescale them")


_deferred = threading.local()


@contextmanager
def deferred_checks() -> Iterator[None]:
    """Within the block, ``check_captured`` on CUDA tensors reduces the values but reads them
    only when the block ends, after all its work is enqueued: one host synchronisation for
    every check of the block, which then raises the first problem found (in the order the
    checks were made). Blocks nest; only the outermost reads."""
    if getattr(_deferred, "pending", None) is not None:
        yield
        return
    pending: list[_ValueProblems] = []
    _deferred.pending = pending
    try:
        yield
    finally:
        _deferred.pending = None
    if pending:
        if bool(torch.stack([p.any() for p in pending]).any()):
            for problems in pending:
                problems.raise_if_any()


def _extrema(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of ``t`` ``[B, ...]``, its largest and smallest value: max and min
    propagate NaN and keep inf, so an image is finite iff both are (one fast reduction
    each, where ``isfinite`` would build a mask as large as the tensor)."""
    flat = t.flatten(1)
    return flat.amax(1), flat.amin(1)  # two passes: faster on the CPU than one torch.aminmax


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
