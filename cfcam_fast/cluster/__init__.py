"""DBSCAN with scikit-learn's semantics and numbering, batched over ragged problems.

``dbscan`` is the public front; ``PairDistances`` is what the CF-CAM core calls, following
its ``cfcam_fast.plan.Plan``. Backends: "sklearn" (the oracle), "torch" (dense, any
device), "native" (the compiled ops of csrc/; on the CPU from certified float32 distances,
``certified``), "cuml" (RAPIDS cuML core points); "auto" picks native where built, else
torch (``resolve``).
"""
from __future__ import annotations

import functools
import importlib
import math
from typing import TYPE_CHECKING

import torch

from ..selection import eps_from_sq_distances, pair_ranks_torch
from ..workspace import pair_buffer
from . import certified, cuml_dbscan

if TYPE_CHECKING:
    from ..plan import Plan

BACKENDS = ("sklearn", "torch", "native", "cuml")


def unavailable_reason(backend: str, device: torch.device | None = None) -> str | None:
    """Why DBSCAN backend ``backend`` cannot run on ``device`` here, or ``None``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown DBSCAN backend {backend!r}; choose one of {BACKENDS + ('auto',)}")
    if backend == "native":
        from .. import _native

        if _native.available(device if device is not None else torch.device("cpu")):
            return None
        return _native.status()["native-cuda" if device is not None and device.type == "cuda" else "native-cpu"]
    if backend == "cuml":
        return cuml_dbscan.unavailable_reason(device)
    return None


def resolve(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` on ``device``; a named one must be usable."""
    if backend == "auto":
        return "native" if unavailable_reason("native", device) is None else "torch"
    reason = unavailable_reason(backend, device)
    if reason is not None:
        raise RuntimeError(f"DBSCAN backend {backend!r} is not available: {reason}")
    return backend


def labels_from_distances(dist: torch.Tensor, counts: torch.Tensor, eps: torch.Tensor,
                          min_samples: torch.Tensor, backend: str) -> torch.Tensor:
    """Labels ``[B, n]`` from distances ``[B, n, n]`` (upper triangle read; squared
    distances with a squared threshold work alike) by DBSCAN backend ``backend`` (a name
    ``resolve`` returned): image ``b``'s points are its first ``counts[b]``; the rest get -1."""
    if backend not in BACKENDS:
        raise ValueError(f"labels_from_distances needs one of {BACKENDS}, got {backend!r}")
    if backend == "native":
        from .. import _native

        return _native.dbscan_labels(dist.contiguous(), counts.contiguous(), eps.to(dist.dtype).contiguous(),
                                     min_samples.contiguous())
    module = importlib.import_module(f"{__name__}.{backend}_dbscan")
    return module.dbscan_labels(dist, counts, eps, min_samples)


def pairwise_sq_distances(points: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances ``[B, n, n]`` in float64, as one matrix product.

    ``|x_i - x_j|^2 = [x_i, |x_i|^2, 1] . [-2 x_j, 1, |x_j|^2]``. Consumers read the upper
    triangle (``i < j``) only, so a last-bit asymmetry can never make two readings of one
    pair disagree; tiny negative values from rounding are left for the consumers (order
    statistics and thresholds commute with clamping at 0). ``out`` is an optional float64
    ``[B, n, n]`` buffer to write into.
    """
    x = points.to(torch.float64)
    sq = (x * x).sum(-1, keepdim=True)
    one = torch.ones_like(sq)
    left = torch.cat([x, sq, one], -1)
    right = torch.cat([-2.0 * x, one, sq], -1)
    return torch.bmm(left, right.transpose(1, 2), out=out)


class PairDistances:
    """The squared distances of ``points`` ``[B, n, d]`` that both eps and the labels are
    decided on, computed, selected from and labelled as ``plan`` says (its ``distances``,
    ``eps_selector`` and ``dbscan``): "float32-certified" (CPU, ``certified``: exact
    float64 decisions from float32 products) or "float64" (one augmented float64 product).
    On the CPU they live in this thread's workspace, so use them before the next instance.
    ``buffer``: an optional ``[B, n, n]`` tensor of dtype ``plan.distance_dtype`` to hold
    them instead. Nothing here reads a global setting: the plan was resolved before."""

    def __init__(self, points: torch.Tensor, plan: Plan, buffer: torch.Tensor | None = None) -> None:
        from .. import _native

        B, n = points.shape[:2]
        if buffer is not None and buffer.dtype != plan.distance_dtype:
            raise ValueError(f"buffer must have dtype {plan.distance_dtype} for distances:{plan.distances}, "
                             f"got {buffer.dtype}")
        out = buffer if buffer is not None else pair_buffer((B, n, n), plan.distance_dtype, points.device)
        if plan.distances == "float32-certified":
            self.matrix = certified.approx_sq_distances(points, out=out)
            exact_points = points.to(torch.float64).contiguous()
            self._select = certified.pair_ranks(exact_points, self.matrix)
            self._labels = functools.partial(certified.labels, exact_points, self.matrix)
        elif plan.distances == "float64":
            self.matrix = pairwise_sq_distances(points, out=out)
            self._select = _native.pair_ranks if plan.eps_selector == "native" else pair_ranks_torch
            self._labels = functools.partial(labels_from_distances, self.matrix, backend=plan.dbscan)
        else:
            raise ValueError(f"PairDistances computes distances:float64 or distances:float32-certified, "
                             f"not distances:{plan.distances} (plan {plan})")

    def eps(self, counts: torch.Tensor, q: float, floor: float | torch.Tensor) -> torch.Tensor:
        """docs/algorithm.md step 3 per image (``selection.eps_from_sq_distances``), float64 ``[B]``;
        ``floor`` a number or one per image."""
        return eps_from_sq_distances(self.matrix, counts, q, floor, self._select)

    def labels(self, counts: torch.Tensor, threshold: torch.Tensor, min_samples: torch.Tensor) -> torch.Tensor:
        """DBSCAN labels ``[B, n]`` of each image's first ``counts[b]`` points, neighbours iff
        the squared distance is at most ``threshold[b]`` (``sq_threshold(eps)``)."""
        return self._labels(counts, threshold, min_samples)


def sq_threshold(eps: torch.Tensor) -> torch.Tensor:
    """The largest float64 ``T`` with ``sqrt(T) <= eps``, so that ``d2 <= T`` decides
    ``sqrt(d2) <= eps`` exactly (sqrt is correctly rounded, hence monotone)."""
    eps = eps.to(torch.float64)
    t = eps * eps
    inf = torch.full_like(t, math.inf)
    for _ in range(4):
        t = torch.where(t.sqrt() > eps, torch.nextafter(t, -inf), t)
    for _ in range(4):
        up = torch.nextafter(t, inf)
        t = torch.where(up.sqrt() <= eps, up, t)
    return t


def dbscan(points: torch.Tensor, eps: float | torch.Tensor, min_samples: int | torch.Tensor,
           valid: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """DBSCAN labels (int64) of ``points`` ``[B, n, d]`` or ``[n, d]``.

    ``eps`` and ``min_samples`` are scalars or ``[B]``; ``valid`` a bool ``[B, n]`` marks
    the points of ragged problems (invalid slots get -1). Distances are Euclidean in
    float64: with ``"native"`` on the CPU, sums of squared differences (found through a
    certified float32 product, ``cluster.certified``); elsewhere one augmented float64
    matrix product. The product's rounding error scales with the points' squared norms,
    not with their distance: about ``1e-16 (|x_i|^2 + |x_j|^2)`` on the squared distance
    (for the points 1000.0 and 1000.1, 5e-10 relative to it). Backends can differ only on a
    pair that close to ``eps``; CF-CAM's activations, rounded to float32 first, gave no such
    pair in the tests.
    """
    from ..plan import clustering_plan  # plan.py builds on this module

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
    labels = PairDistances(packed, clustering_plan(backend, device)).labels(counts, sq_threshold(eps_t),
                                                                            ms_t.to(torch.int64))
    out = torch.full((B, n), -1, dtype=torch.int64, device=device).scatter_(1, order, labels.to(torch.int64))
    return out[0] if single else out
