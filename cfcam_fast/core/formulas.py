"""Small exact formulas of docs/algorithm.md shared by every backend."""
from __future__ import annotations

import math

import torch

from .config import CFCAMConfig


def min_samples_for(n_rest, config: CFCAMConfig):
    """``max(floor, int(fraction * |R|))``: DBSCAN's min_samples (docs/algorithm.md step 4), for an
    int or, elementwise, an integer tensor of counts (the same float64 product)."""
    if isinstance(n_rest, torch.Tensor):
        product = config.min_samples_fraction * n_rest.to(torch.float64)
        return product.floor().to(torch.int64).clamp(min=config.min_samples_floor)
    return max(config.min_samples_floor, int(config.min_samples_fraction * n_rest))


def linear_percentile_position(n: int, q: float) -> tuple[int, float]:
    """NumPy's "linear" percentile over ``n`` sorted values: lower index and fraction.

    The value is ``lerp(x[k], x[k + 1], t)`` (with ``x[k + 1]`` read as ``x[k]`` when
    ``k == n - 1``), computed exactly as NumPy computes the virtual index.
    """
    pos = (n - 1) * (q / 100.0)
    k = min(int(math.floor(pos)), n - 1)
    return k, pos - k


def doubled_percentile_ranks(m: torch.Tensor, q: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile ``q`` of the ordered-pair list, where each of ``m[b]`` values appears twice.

    Returns the ranks ``[B, 2]`` of the two needed order statistics among the ``m[b]``
    unordered values and the fractions ``t`` ``[B]`` (docs/exactness.md: element ``j`` of the
    doubled sorted list is element ``j // 2`` of the sorted unordered list). The virtual
    index is computed as NumPy computes it, in float64. ``q``: a number, or a float64
    scalar tensor holding it (the same result; a graph traced for export keeps it exact).
    """
    n_ordered = (2 * m.to(torch.int64)).clamp(min=1)
    pos = (n_ordered - 1).to(torch.float64) * (q / 100.0)
    k = pos.floor().to(torch.int64).clamp(max=n_ordered - 1)
    t = pos - k.to(torch.float64)
    return torch.stack([k // 2, torch.minimum(k + 1, n_ordered - 1) // 2], 1), t


def sqrt_rn(x: torch.Tensor) -> torch.Tensor:
    """Square roots of float64 ``x >= 0`` rounded as IEEE 754 rounds them (to nearest), as
    NumPy, SciPy's ``pdist`` and CUDA compute them. ``torch.sqrt`` does so on CUDA, but on
    the CPU some builds round about 0.7% of float64 square roots one ulp off (torch 2.14.1
    with AVX-512), so CPU tensors go through NumPy (no copy). Under ``torch.compile``,
    which cannot trace that, ``torch.sqrt`` is kept."""
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return x.sqrt()
    import numpy as np

    return torch.from_numpy(np.sqrt(x.detach().contiguous().numpy()))


def lerp(a, b, t):
    """NumPy's ``_lerp``: the same rounding for scalars and tensors."""
    diff = b - a
    if isinstance(t, float):
        return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t
    low = a + diff * t
    high = b - diff * (1.0 - t)
    return high.where(t >= 0.5, low) if hasattr(high, "where") else (high if t >= 0.5 else low)
