"""Per-thread scratch memory for the pairwise stage on the CPU.

Faulting in fresh pages for every call costs more than the matrix product that fills them
(docs/backends.md, "The memory budget"), so the ``[B, n, n]`` distance matrices live in one
buffer per thread and dtype, grown on demand. Only code that finishes with the buffer before
returning may use it.
"""
from __future__ import annotations

import threading

import torch

_local = threading.local()


def pair_buffer(shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """A ``shape`` view of this thread's buffer for ``dtype`` on the CPU; ``None`` on other
    devices (CUDA's caching allocator already reuses memory)."""
    if device.type != "cpu":
        return None
    numel = shape[0] * shape[1] * shape[2]
    buffers = _local.__dict__.setdefault("buffers", {})
    buf = buffers.get(dtype)
    if buf is None or buf.numel() < numel:
        buf = buffers[dtype] = torch.empty(numel, dtype=dtype)
    return buf[:numel].view(shape)
