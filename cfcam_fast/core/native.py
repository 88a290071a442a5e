"""The compiled ops of csrc/ as PyTorch operators: batched exact selection and DBSCAN labels.

The C++/CUDA modules ``_native_cpu`` and ``_native_cuda`` take raw addresses and sizes (and
a CUDA stream), not tensors, so they do not depend on the PyTorch version. This module checks
every tensor's dtype, device, shape and contiguity before handing over an address (a
``ValueError`` saying what to fix), and registers each op with ``torch.library``
(``torch.ops.cfcam_fast.*``) with CPU and CUDA kernels and a fake kernel for
``torch.compile``. A module that is missing or fails to load is recorded, never raised at
import: ``status()`` says why.

Value checks (counts within ``[0, n]``, ranks within range, ``eps >= 0``,
``min_samples >= 1``) raise ``ValueError`` on the CPU. On CUDA they would need a device-host
synchronisation, so they are not made there: out-of-range counts are clamped to ``[0, n]``
and an out-of-range rank gives NaN.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["available", "certified_dbscan_labels", "certified_pair_ranks", "dbscan_labels", "pair_ranks",
           "status"]

_FLOATS = (torch.float32, torch.float64)


def _load(name: str):
    try:
        return importlib.import_module(f"cfcam_fast.{name}"), None
    except Exception as exc:  # a missing or broken build must never break the package
        return None, exc


_cpu, _cpu_error = _load("_native_cpu")
_cuda, _cuda_error = _load("_native_cuda")


def _build_failure(module: str) -> str | None:
    """Why the build left ``module`` out, as recorded by setup.py under ``CFCAM_ALLOW_NO_NATIVE=1``."""
    try:
        record = json.loads((Path(__file__).resolve().parents[1] / "_native_build.json").read_text())
        reason = record["modules"][module]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return f"not built: the build failed ({reason}) and CFCAM_ALLOW_NO_NATIVE=1 let it go on without it"


def _cpu_reason() -> str | None:
    if _cpu is None:
        if isinstance(_cpu_error, ModuleNotFoundError):
            return _build_failure("_native_cpu") or ("not built: reinstall with `pip install --no-build-isolation "
                                                     "-e .` (needs cmake and a C++17 compiler)")
        return f"failed to load: {_cpu_error}"
    return None


def _cuda_reason() -> str | None:
    if _cuda is None:
        if isinstance(_cuda_error, ModuleNotFoundError):
            return _build_failure("_native_cuda") or "not built: set CFCAM_CUDA=1 and rebuild (needs nvcc)"
        return f"failed to load: {_cuda_error}"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def status() -> dict[str, str]:
    """``"native-cpu"`` and ``"native-cuda"`` mapped to ``"available"`` or the reason not."""
    return {"native-cpu": _cpu_reason() or "available", "native-cuda": _cuda_reason() or "available"}


def available(device: torch.device | str) -> bool:
    """Whether the native ops can run on tensors of ``device``."""
    kind = torch.device(device).type
    if kind == "cpu":
        return _cpu_reason() is None
    if kind == "cuda":
        return _cuda_reason() is None
    return False


# ----------------------------------------------------------------------------- argument checks
def _check_tensor(name: str, t, dtypes, dim: int, device: torch.device | None) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        want = " or ".join(str(d) for d in dtypes)
        raise ValueError(f"{name} must have dtype {want}, got {t.dtype}")
    if t.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the first argument is on {device}; "
                         "move every argument to the same device")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous: pass {name}.contiguous()")


def _check_batch(name: str, t: Tensor, batch: int) -> None:
    if t.shape[0] != batch:
        raise ValueError(f"{name} has {t.shape[0]} rows but the batch has {batch} images")


def _check_device(name: str, t: Tensor) -> None:
    if t.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{name} is on {t.device}: the native ops run on CPU or CUDA tensors")


def _check_square(dist: Tensor) -> None:
    _check_tensor("dist", dist, _FLOATS, 3, None)
    _check_device("dist", dist)
    if dist.shape[1] != dist.shape[2]:
        raise ValueError(f"dist must be [B, n, n] (one square matrix per image), got shape {tuple(dist.shape)}")


def _check_pair_ranks(dist: Tensor, counts: Tensor, ranks: Tensor) -> None:
    _check_square(dist)
    _check_tensor("counts", counts, (torch.int64,), 1, dist.device)
    _check_tensor("ranks", ranks, (torch.int64,), 2, dist.device)
    _check_batch("counts", counts, dist.shape[0])
    _check_batch("ranks", ranks, dist.shape[0])


def _check_dbscan(dist: Tensor, counts: Tensor, eps: Tensor, min_samples: Tensor) -> None:
    _check_square(dist)
    _check_tensor("counts", counts, (torch.int64,), 1, dist.device)
    _check_tensor("eps", eps, (dist.dtype,), 1, dist.device)
    _check_tensor("min_samples", min_samples, (torch.int64,), 1, dist.device)
    for name, t in (("counts", counts), ("eps", eps), ("min_samples", min_samples)):
        _check_batch(name, t, dist.shape[0])


def _check_certified(approx: Tensor, points: Tensor, counts: Tensor) -> None:
    _check_tensor("approx", approx, (torch.float32,), 3, None)
    if approx.device.type not in ("cpu", "meta"):
        raise ValueError(f"approx is on {approx.device}: the certified ops run on CPU tensors")
    if approx.shape[1] != approx.shape[2]:
        raise ValueError(f"approx must be [B, n, n] (one square matrix per image), got shape {tuple(approx.shape)}")
    _check_tensor("points", points, (torch.float64,), 3, approx.device)
    if points.shape[:2] != approx.shape[:2]:
        raise ValueError(f"points must be [B, n, d] with [B, n] = {tuple(approx.shape[:2])} as in approx, "
                         f"got shape {tuple(points.shape)}")
    _check_tensor("counts", counts, (torch.int64,), 1, approx.device)
    _check_batch("counts", counts, approx.shape[0])


def _check_certified_ranks(approx: Tensor, points: Tensor, counts: Tensor, ranks: Tensor) -> None:
    _check_certified(approx, points, counts)
    _check_tensor("ranks", ranks, (torch.int64,), 2, approx.device)
    _check_batch("ranks", ranks, approx.shape[0])


def _check_certified_dbscan(approx: Tensor, points: Tensor, counts: Tensor, threshold: Tensor,
                            min_samples: Tensor) -> None:
    _check_certified(approx, points, counts)
    _check_tensor("threshold", threshold, (torch.float64,), 1, approx.device)
    _check_tensor("min_samples", min_samples, (torch.int64,), 1, approx.device)
    _check_batch("threshold", threshold, approx.shape[0])
    _check_batch("min_samples", min_samples, approx.shape[0])


def _module_for(device: torch.device):
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"the native ops run on CPU or CUDA tensors, got {device}")
    reason = _cpu_reason() if device.type == "cpu" else _cuda_reason()
    if reason is not None:
        raise RuntimeError(f"native-{device.type} ops are not available: {reason}")
    return _cpu if device.type == "cpu" else _cuda


def _call(device: torch.device, op: str, *args) -> None:
    """Run ``op`` of the device's module; C++ argument errors arrive as ValueError."""
    module = _module_for(device)
    if device.type == "cpu":
        getattr(module, op)(*args)
        return
    with torch.cuda.device(device):
        getattr(module, op)(*args, device.index, torch.cuda.current_stream(device).cuda_stream)


# ----------------------------------------------------------------------------- registered ops
@torch.library.custom_op("cfcam_fast::pair_ranks", mutates_args=(), device_types=("cpu", "cuda"))
def _pair_ranks_op(dist: Tensor, counts: Tensor, ranks: Tensor) -> Tensor:
    _check_pair_ranks(dist, counts, ranks)
    out = dist.new_empty(ranks.shape)
    B, K = ranks.shape
    if B * K > 0:
        _call(dist.device, "pair_ranks", dist.data_ptr(), counts.data_ptr(), ranks.data_ptr(), out.data_ptr(), B,
              dist.shape[1], K, dist.dtype == torch.float64)
    return out


@_pair_ranks_op.register_fake
def _(dist: Tensor, counts: Tensor, ranks: Tensor) -> Tensor:
    _check_pair_ranks(dist, counts, ranks)
    return dist.new_empty(ranks.shape)


@torch.library.custom_op("cfcam_fast::dbscan_labels", mutates_args=(), device_types=("cpu", "cuda"))
def _dbscan_labels_op(dist: Tensor, counts: Tensor, eps: Tensor, min_samples: Tensor) -> Tensor:
    _check_dbscan(dist, counts, eps, min_samples)
    B, n = dist.shape[0], dist.shape[1]
    labels = torch.empty((B, n), dtype=torch.int64, device=dist.device)
    if B * n == 0:
        return labels
    if dist.device.type == "cpu":
        _call(dist.device, "dbscan_labels", dist.data_ptr(), counts.data_ptr(), eps.data_ptr(),
              min_samples.data_ptr(), labels.data_ptr(), B, n, dist.dtype == torch.float64)
    else:
        work = torch.empty((B, 2, n), dtype=torch.int32, device=dist.device)
        _call(dist.device, "dbscan_labels", dist.data_ptr(), counts.data_ptr(), eps.data_ptr(),
              min_samples.data_ptr(), labels.data_ptr(), work.data_ptr(), B, n,
              dist.dtype == torch.float64)
    return labels


@_dbscan_labels_op.register_fake
def _(dist: Tensor, counts: Tensor, eps: Tensor, min_samples: Tensor) -> Tensor:
    _check_dbscan(dist, counts, eps, min_samples)
    return dist.new_empty(dist.shape[:2], dtype=torch.int64)


@torch.library.custom_op("cfcam_fast::certified_pair_ranks", mutates_args=(), device_types="cpu")
def _certified_pair_ranks_op(approx: Tensor, points: Tensor, counts: Tensor, ranks: Tensor) -> Tensor:
    _check_certified_ranks(approx, points, counts, ranks)
    out = points.new_empty(ranks.shape)
    B, n, d, K = points.shape[0], points.shape[1], points.shape[2], ranks.shape[1]
    if B * K > 0:
        _call(approx.device, "certified_pair_ranks", approx.data_ptr(), points.data_ptr(), counts.data_ptr(),
              ranks.data_ptr(), out.data_ptr(), B, n, d, K)
    return out


@_certified_pair_ranks_op.register_fake
def _(approx: Tensor, points: Tensor, counts: Tensor, ranks: Tensor) -> Tensor:
    _check_certified_ranks(approx, points, counts, ranks)
    return points.new_empty(ranks.shape)


@torch.library.custom_op("cfcam_fast::certified_dbscan_labels", mutates_args=(), device_types="cpu")
def _certified_dbscan_labels_op(approx: Tensor, points: Tensor, counts: Tensor, threshold: Tensor,
                                min_samples: Tensor) -> Tensor:
    _check_certified_dbscan(approx, points, counts, threshold, min_samples)
    B, n, d = points.shape
    labels = torch.empty((B, n), dtype=torch.int64, device=approx.device)
    if B * n > 0:
        _call(approx.device, "certified_dbscan_labels", approx.data_ptr(), points.data_ptr(), counts.data_ptr(),
              threshold.data_ptr(), min_samples.data_ptr(), labels.data_ptr(), B, n, d)
    return labels


@_certified_dbscan_labels_op.register_fake
def _(approx: Tensor, points: Tensor, counts: Tensor, threshold: Tensor, min_samples: Tensor) -> Tensor:
    _check_certified_dbscan(approx, points, counts, threshold, min_samples)
    return approx.new_empty(approx.shape[:2], dtype=torch.int64)


# ----------------------------------------------------------------------------- public functions
def pair_ranks(dist: Tensor, counts: Tensor, ranks: Tensor) -> Tensor:
    """The ``ranks[b, k]``-th smallest (0-based) upper-triangle values of each image.

    ``dist``: ``[B, n, n]`` float32/float64, contiguous; only ``dist[b, i, j]`` with
    ``i < j < counts[b]`` is read (the ``M_b = c(c-1)/2`` unordered pairs of image ``b``'s
    valid points ``0..counts[b]-1``). ``counts``: int64 ``[B]``. ``ranks``: int64 ``[B, K]``,
    each in ``[0, M_b)``. Returns ``[B, K]`` of ``dist``'s dtype. No sort: a selection.
    """
    _check_pair_ranks(dist, counts, ranks)
    return torch.ops.cfcam_fast.pair_ranks(dist, counts, ranks)


def dbscan_labels(dist: Tensor, counts: Tensor, eps: Tensor, min_samples: Tensor) -> Tensor:
    """scikit-learn's DBSCAN labels of each image's points ``0..counts[b]-1``, as int64 ``[B, n]``.

    ``dist``: ``[B, n, n]`` float32/float64, contiguous, symmetric: only the upper triangle
    is read. ``eps``: ``[B]`` of ``dist``'s dtype; ``min_samples``: int64 ``[B]``. Neighbours
    iff ``dist <= eps`` (self included), core iff at least ``min_samples`` neighbours,
    clusters numbered 0, 1, ... by increasing smallest core index, a border point takes the
    smallest cluster number among its core neighbours; noise and ``i >= counts[b]`` get -1.
    """
    _check_dbscan(dist, counts, eps, min_samples)
    return torch.ops.cfcam_fast.dbscan_labels(dist, counts, eps, min_samples)


def certified_pair_ranks(approx: Tensor, points: Tensor, counts: Tensor, ranks: Tensor) -> Tensor:
    """``pair_ranks`` of the exact float64 squared distances, from float32 approximations (CPU).

    ``approx``: ``[B, n, n]`` float32, a float32 evaluation of ``|x_i|^2 + |x_j|^2 - 2 x_i.x_j``
    (``core.cluster.certified.approx_sq_distances``); ``points``: the ``[B, n, d]`` float64 points
    ``x``. Returns float64 ``[B, K]``: the ranked values of ``sum_k (x_ik - x_jk)^2`` computed
    in float64, exactly; only the pairs whose approx value is within its error bound of a
    selection bracket are recomputed.
    """
    _check_certified_ranks(approx, points, counts, ranks)
    return torch.ops.cfcam_fast.certified_pair_ranks(approx, points, counts, ranks)


def certified_dbscan_labels(approx: Tensor, points: Tensor, counts: Tensor, threshold: Tensor,
                            min_samples: Tensor) -> Tensor:
    """``dbscan_labels`` with neighbours iff the exact float64 squared distance is at most
    ``threshold[b]`` (float64), from float32 approximations as in ``certified_pair_ranks``."""
    _check_certified_dbscan(approx, points, counts, threshold, min_samples)
    return torch.ops.cfcam_fast.certified_dbscan_labels(approx, points, counts, threshold, min_samples)
