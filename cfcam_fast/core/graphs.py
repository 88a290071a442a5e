"""Replayed CUDA graphs of the CF-CAM core, for calls that repeat a shape.

The torch and triton cores with fixed shapes (``backends.torch_backend.FixedShapes``) wait
for nothing on the host, so their whole post-processing can be captured as one CUDA graph
(``torch.cuda.graphs``) and replayed: a replay launches it all at once, where an eager call
launches a hundred-odd kernels one by one. ``run`` keeps one graph per key (input shape and
dtypes, device, output size, config and plan): the second call with a key captures it,
later calls replay it; an eager call runs until then, and whenever a capture fails (it then
warns once for that key).

What is cached: per key, the captured graph with its memory pool (the pairwise buffer and
every intermediate of one call), static copies of the inputs and the outputs, for at most
``CAPACITY`` keys: once they are taken, calls with other keys run eagerly (a loop over more
keys than that never captures one graph after another). ``clear()`` frees them all and
starts over; ``set_enabled(False)`` (or ``CFCAM_GRAPHS=0`` in the environment) turns graphs
off.
"""
from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

from .backends import torch_backend
from .config import CFCAMConfig, CFCAMResult
from .plan import Plan

CAPACITY = 8  # keys with a graph at once
WARMUP_RUNS = 2  # eager runs on a side stream before the capture (kernel compilation, cuDNN choices)

_enabled = os.environ.get("CFCAM_GRAPHS", "1") not in ("0", "")


@dataclass
class _Entry:
    """One key's graph: static inputs and outputs, and a lock (one replay at a time)."""

    activations: torch.Tensor
    gradients: torch.Tensor
    graph: torch.cuda.CUDAGraph | None = None
    out: CFCAMResult | None = None
    failed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


_entries: dict[Hashable, _Entry] = {}
_seen: set[Hashable] = set()
_guard = threading.Lock()


def graph_capture_blocker() -> str | None:
    """Why this process cannot capture a CUDA graph, or ``None``: with PyTorch's caching
    allocator off (``PYTORCH_NO_CUDA_MEMORY_CACHING``, as memory checkers are often run),
    every allocation is a ``cudaMalloc``, which a capturing stream refuses."""
    if os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING", "0") not in ("", "0"):
        return "PYTORCH_NO_CUDA_MEMORY_CACHING is set, so allocations during capture would call cudaMalloc"
    return None


def set_enabled(enabled: bool) -> None:
    """Turn the replayed graphs on or off for this process (off also frees them)."""
    global _enabled
    _enabled = bool(enabled)
    if not _enabled:
        clear()


def enabled() -> bool:
    """Whether calls on CUDA may replay captured graphs."""
    return _enabled


def clear() -> None:
    """Free every cached graph, its memory pool and its static tensors."""
    with _guard:
        _entries.clear()
        _seen.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cached_keys() -> int:
    """How many keys hold a captured graph now."""
    with _guard:
        return sum(entry.graph is not None for entry in _entries.values())


def _fits(activations: torch.Tensor, config: CFCAMConfig, plan: Plan) -> bool:
    """Whether one chunk of the whole batch fits the memory budget (a graph has one chunk;
    the fused stage holds no matrix, so it always fits)."""
    B, C = activations.shape[:2]
    n = torch_backend.max_remaining(C, config.importance_percentile)
    return not plan.holds_distances or \
        torch_backend.PAIR_BYTES * B * n * n <= torch_backend.memory_budget(config, activations.device)


def run(activations: torch.Tensor, gradients: torch.Tensor, output_size: tuple[int, int], config: CFCAMConfig,
        plan: Plan) -> CFCAMResult | None:
    """The core's result by a replayed graph, or ``None`` where this call runs eagerly: off
    CUDA, with graphs off, for the reference core, the first call of a key, a batch whose
    one chunk exceeds the memory budget, or a key whose capture failed."""
    if not _enabled or activations.device.type != "cuda" or plan.core not in ("torch", "triton") \
            or graph_capture_blocker() is not None:
        return None
    key = (tuple(activations.shape), activations.dtype, gradients.dtype, activations.device, tuple(output_size),
           config, plan)
    with _guard:
        entry = _entries.get(key)
        if entry is None:
            if key not in _seen:
                _seen.add(key)
                return None
            if len(_entries) >= CAPACITY or not _fits(activations, config, plan):
                return None
            entry = _entries[key] = _Entry(torch.empty_like(activations), torch.empty_like(gradients))
    with entry.lock:
        if entry.failed:
            return None
        entry.activations.copy_(activations)
        entry.gradients.copy_(gradients)
        if entry.graph is None and not _capture(entry, output_size, config, plan):
            return None
        assert entry.graph is not None and entry.out is not None
        entry.graph.replay()
        return _fresh(entry.out)


def _core(entry: _Entry, fixed: torch_backend.FixedShapes, output_size: tuple[int, int], config: CFCAMConfig,
          plan: Plan) -> CFCAMResult:
    with torch.no_grad():
        return torch_backend.explain(entry.activations, entry.gradients, output_size, config, plan, fixed=fixed)


def _capture(entry: _Entry, output_size: tuple[int, int], config: CFCAMConfig, plan: Plan) -> bool:
    """Capture ``entry``'s graph (its static inputs hold this call's tensors); on failure
    warn, mark the key and return False."""
    device = entry.activations.device
    B, C = entry.activations.shape[:2]
    n = torch_backend.max_remaining(C, config.importance_percentile)
    fixed = torch_backend.FixedShapes(n=n, buffer=torch_backend.pair_matrix(B, n, plan))
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    try:
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                _core(entry, fixed, output_size, config, plan)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            entry.out = _core(entry, fixed, output_size, config, plan)
        entry.graph = graph
        return True
    except RuntimeError as exc:  # a capture that fails leaves the eager path, said once per key
        torch.cuda.synchronize(device)
        entry.failed = True
        warnings.warn(f"cfcam_fast: a CUDA graph of the CF-CAM core could not be captured for inputs "
                      f"{list(entry.activations.shape)}; such calls run eagerly: {exc}", RuntimeWarning, stacklevel=4)
        return False


def _fresh(out: CFCAMResult) -> CFCAMResult:
    """The replay's outputs as new tensors (the static ones are overwritten by the next replay)."""
    return CFCAMResult(maps=out.maps.clone(), labels=out.labels.clone(), channel_weights=out.channel_weights.clone(),
                       weights=out.weights.clone(), eps=out.eps.clone(), plan=out.plan)
