"""Exact decisions at float32 cost: the CPU pairwise stage of the "native" DBSCAN backend.

The squared distances come from one float32 matrix product (half the time of float64 and
half the memory). Each float32 value is within a proven bound of the exact float64 squared
distance ``sum_k (x_ik - x_jk)^2`` (csrc/certified_cpu.cpp states the bound), so the
compiled ops decide every threshold test and order statistic from the float32 value and
recompute in float64 only the pairs whose value lies within its bound of the decision. The
results are those of the float64 distances, exactly.

The bound assumes an IEEE float32 product: under ``torch.set_float32_matmul_precision``
"high" or "medium" (TF32 or bfloat16 products) the stage is not used.
"""
from __future__ import annotations

import torch

from .. import native


def matmul_is_ieee() -> bool:
    """Whether float32 matrix products on the CPU are computed in IEEE float32."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    mkldnn = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    return getattr(mkldnn, "fp32_precision", "none") in ("none", "ieee")


def unavailable_reason(device: torch.device) -> str | None:
    """Why the certified stage cannot run for tensors on ``device`` here, or ``None``."""
    if device.type != "cpu":
        return f"the certified float32 distances are computed on the CPU only (got {device.type})"
    if not native.available(device):
        return f"needs the compiled CPU ops (native-cpu: {native.status()['native-cpu']})"
    if not matmul_is_ieee():
        return ("float32 matrix products are not IEEE float32 here (TF32 or bfloat16): "
                "torch.set_float32_matmul_precision('highest') restores them")
    return None


def usable(device: torch.device) -> bool:
    """Whether the certified stage can run for tensors on ``device``."""
    return unavailable_reason(device) is None


# Rows per matrix product of the upper triangle: small enough to skip most of the lower
# triangle, large enough to keep each product efficient (docs/backends.md, "Distances").
PANEL_ROWS = 128


def approx_sq_distances(points: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, n, n]`` float32 squared distances of ``points`` ``[B, n, d]`` rounded to float32:
    ``[x_i, |x_i|^2, 1] . [-2 x_j, 1, |x_j|^2]`` in float32 matrix products (the form whose
    error the compiled ops bound). Only the upper triangle is meant to be read: rows
    ``r..r+PANEL_ROWS`` are computed from column ``r`` on, the rest is left unset.
    ``out``: an optional float32 ``[B, n, n]`` buffer."""
    x = points.to(torch.float32)
    sq = (x * x).sum(-1, keepdim=True)
    one = torch.ones_like(sq)
    left = torch.cat([x, sq, one], -1)
    right = torch.cat([-2.0 * x, one, sq], -1).transpose(1, 2)
    B, n = x.shape[:2]
    if out is None:
        out = x.new_empty((B, n, n))
    if torch.compiler.is_compiling():  # strided out= views do not trace: one whole product
        return torch.bmm(left, right, out=out)
    for r0 in range(0, n, PANEL_ROWS):
        r1 = min(n, r0 + PANEL_ROWS)
        torch.bmm(left[:, r0:r1], right[:, :, r0:], out=out[:, r0:r1, r0:])
    return out


def pair_ranks(points: torch.Tensor, approx: torch.Tensor):
    """A ``select(approx, counts, ranks)`` for ``selection.eps_from_sq_distances``: exact
    float64 order statistics of the squared distances of ``points``."""
    exact_points = points.to(torch.float64).contiguous()

    def select(dist: torch.Tensor, counts: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        return native.certified_pair_ranks(dist, exact_points, counts.contiguous(), ranks.contiguous())

    return select


def labels(points: torch.Tensor, approx: torch.Tensor, counts: torch.Tensor, threshold: torch.Tensor,
           min_samples: torch.Tensor) -> torch.Tensor:
    """DBSCAN labels ``[B, n]`` with neighbours iff the exact float64 squared distance of
    ``points`` is at most ``threshold`` (float64 ``[B]``)."""
    return native.certified_dbscan_labels(approx, points.to(torch.float64).contiguous(), counts.contiguous(),
                                           threshold.to(torch.float64).contiguous(), min_samples.contiguous())
