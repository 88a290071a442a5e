"""Wall-clock timing of calls on a device: the device is synchronised before and after, so
the time covers the work the call enqueued, not just its launch."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    """Wait for the work enqueued on ``device`` (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``call()`` and its wall time in milliseconds, ``device`` synchronised first and after."""
    synchronize(device)
    start = time.perf_counter()
    result = call()
    synchronize(device)
    return result, (time.perf_counter() - start) * 1000.0
