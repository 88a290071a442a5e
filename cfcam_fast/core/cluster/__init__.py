"""DBSCAN with scikit-learn's semantics and numbering, batched over ragged problems.

``dbscan`` is the public front (``cf.cluster.dbscan``); ``distances.PairDistances`` is
what the CF-CAM core calls, following its ``Plan``. Backends: "sklearn" (the oracle),
"torch" (dense, any device), "native" (the compiled ops of csrc/; on the CPU from
certified float32 distances, ``certified``), "cuml" (RAPIDS cuML core points); "auto"
picks native where built, else torch (``availability.resolve``).
"""
from __future__ import annotations

import importlib
from typing import Any

import torch

from ..arrays import ArrayLike, as_tensor, returner
from .availability import BACKENDS, clustering_plan, resolve, unavailable_reason
from .distances import PairDistances, sq_threshold

__all__ = ["BACKENDS", "PairDistances", "clustering_plan", "dbscan", "resolve", "sq_threshold",
           "unavailable_reason"]


def dbscan(points: ArrayLike, eps: float | ArrayLike, min_samples: int | ArrayLike,
           valid: ArrayLike | None = None, backend: str = "auto") -> Any:
    """DBSCAN labels (int64) of ``points`` ``[B, n, d]`` or ``[n, d]``.

    ``points`` (and ``eps``, ``min_samples``, ``valid``) are tensors, or arrays of another
    library with ``__dlpack__`` (NumPy on the CPU, CuPy or JAX on CUDA), taken without a copy
    where the library allows it; the labels are then of the points' library.

    ``eps`` and ``min_samples`` are scalars or ``[B]``; ``valid`` a bool ``[B, n]`` marks
    the points of ragged problems (invalid slots get -1). Distances are Euclidean in
    float64: with ``"native"`` on the CPU, sums of squared differences (found through a
    certified float32 product, ``certified``); with ``"fused"`` (float32 points; CUDA, or
    Triton's interpreter) the same sums decided inside the Triton kernels without a distance
    matrix; elsewhere one augmented float64 matrix product. The product's rounding error
    scales with the points' squared norms, not with their distance: about
    ``1e-16 (|x_i|^2 + |x_j|^2)`` on the squared distance (for the points 1000.0 and 1000.1,
    5e-10 relative to it). Backends can differ only on a pair that close to ``eps``;
    CF-CAM's activations, rounded to float32 first, gave no such pair in the tests.
    """
    back = returner(points)
    points, eps, min_samples, valid = (as_tensor(v) for v in (points, eps, min_samples, valid))
    return back(_dbscan(points, eps, min_samples, valid, backend))


def _dbscan(points: torch.Tensor, eps: float | torch.Tensor, min_samples: int | torch.Tensor,
            valid: torch.Tensor | None, backend: str) -> torch.Tensor:
    if not isinstance(points, torch.Tensor) or points.dim() not in (2, 3) or not points.is_floating_point():
        raise ValueError(f"points must be a float tensor [B, n, d] or [n, d], got "
                         f"{getattr(points, 'dtype', type(points))} {tuple(getattr(points, 'shape', ()))}")
    single = points.dim() == 2
    pts = points[None] if single else points
    B, n, _ = pts.shape
    device = pts.device
    if not bool(torch.isfinite(pts).all()):
        raise ValueError("points contain non-finite values (NaN or inf)")
    eps_t = torch.as_tensor(eps, dtype=torch.float64, device=device).reshape(-1)
    ms_t = torch.as_tensor(min_samples, device=device).reshape(-1)
    for name, t in (("eps", eps_t), ("min_samples", ms_t)):
        if t.numel() not in (1, B):
            raise ValueError(f"{name} must be one value or a tensor of {B} (one per problem), got {t.numel()} values")
    if bool((eps_t < 0).any()) or not bool(torch.isfinite(eps_t).all()):
        raise ValueError(f"eps must be a finite number >= 0 or a tensor of {B} of them")
    if ms_t.is_floating_point() or bool((ms_t < 1).any()):
        raise ValueError(f"min_samples must be an int >= 1 or an integer tensor of {B} of them")
    eps_t, ms_t = eps_t.expand(B), ms_t.expand(B)
    if valid is None:
        valid = torch.ones(B, n, dtype=torch.bool, device=device)
    valid = valid[None] if single and valid.dim() == 1 else valid
    if valid.shape != (B, n) or valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool tensor of shape {(B, n)}, got {valid.dtype} {tuple(valid.shape)}")
    # Compact each problem's valid points into a prefix, label, and scatter back.
    order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices
    counts = valid.sum(1)
    packed = pts.gather(1, order[:, :, None].expand_as(pts))
    plan = clustering_plan(backend, device)
    if plan.holds_distances:
        labels = PairDistances(packed, plan).labels(counts, sq_threshold(eps_t), ms_t.to(torch.int64))
    elif pts.dtype != torch.float32:
        raise ValueError(f"the fused DBSCAN backend certifies float32 products: give float32 points, got {pts.dtype} "
                         "(or another backend)")
    else:
        pairs = importlib.import_module("cfcam_fast.kernels.pairs")
        labels = pairs.fused_labels(packed.contiguous(), counts, sq_threshold(eps_t), ms_t.to(torch.int64))
    out = torch.full((B, n), -1, dtype=torch.int64, device=device).scatter_(1, order, labels.to(torch.int64))
    return out[0] if single else out
