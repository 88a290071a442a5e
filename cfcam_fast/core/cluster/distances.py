"""The squared distances eps and the DBSCAN labels are decided on (docs/exactness.md).

``PairDistances`` computes them once per chunk of images as the call's ``Plan`` says
(certified float32 products on the CPU, or one augmented float64 product) and hands them
to the eps selector and the DBSCAN backend; ``sq_threshold`` turns eps into the exact
squared threshold.
"""
from __future__ import annotations

import functools
import importlib
import math

import torch

from .. import native
from ..formulas import sqrt_rn
from ..plan import Plan
from ..selection import eps_from_sq_distances, pair_ranks_torch
from ..workspace import pair_buffer
from . import certified
from .availability import BACKENDS


def labels_from_distances(dist: torch.Tensor, counts: torch.Tensor, eps: torch.Tensor,
                          min_samples: torch.Tensor, backend: str) -> torch.Tensor:
    """Labels ``[B, n]`` from distances ``[B, n, n]`` (upper triangle read; squared
    distances with a squared threshold work alike) by DBSCAN backend ``backend`` (a name
    ``resolve`` returned): image ``b``'s points are its first ``counts[b]``; the rest get -1."""
    if backend not in BACKENDS or backend == "fused":
        raise ValueError(f"labels_from_distances needs one of {BACKENDS[:-1]} (the fused stage labels points, "
                         f"not distances), got {backend!r}")
    if backend == "native":
        return native.dbscan_labels(dist.contiguous(), counts.contiguous(), eps.to(dist.dtype).contiguous(),
                                     min_samples.contiguous())
    module = importlib.import_module(f"{__package__}.{backend}_dbscan")
    return module.dbscan_labels(dist, counts, eps, min_samples)


def exact_sq_distances(points: torch.Tensor) -> torch.Tensor:
    """``[B, n, n]`` float64: ``sum_k (x_ik - x_jk)^2`` accumulated in coordinate order
    from 0, one rounding per sub, mul and add: bitwise SciPy's ``pdist`` and the compiled
    ops' ``exact_sq`` (symmetric: ``fl(a - b) = -fl(b - a)``)."""
    X = points.to(torch.float64).transpose(1, 2)  # [B, d, n]
    total = torch.zeros(points.shape[0], points.shape[1], points.shape[1], dtype=torch.float64,
                        device=points.device)
    for k in range(X.shape[1]):
        c = X[:, k]
        t = c[:, :, None] - c[:, None, :]
        total = total + t * t
    return total


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
            self._select = native.pair_ranks if plan.eps_selector == "native" else pair_ranks_torch
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
    ``sqrt(d2) <= eps`` exactly (a correctly rounded sqrt, ``formulas.sqrt_rn``, is
    monotone)."""
    eps = eps.to(torch.float64)
    t = eps * eps
    inf = torch.full_like(t, math.inf)
    for _ in range(4):
        t = torch.where(sqrt_rn(t) > eps, torch.nextafter(t, -inf), t)
    for _ in range(4):
        up = torch.nextafter(t, inf)
        t = torch.where(sqrt_rn(up) <= eps, up, t)
    return t
