"""Small exact formulas of SPEC.md shared by every backend."""
from __future__ import annotations

import math

from .config import CFCAMConfig


def min_samples_for(n_rest: int, config: CFCAMConfig) -> int:
    """``max(floor, int(fraction * |R|))``: DBSCAN's min_samples (SPEC.md step 4)."""
    return max(config.min_samples_floor, int(config.min_samples_fraction * n_rest))


def linear_percentile_position(n: int, q: float) -> tuple[int, float]:
    """NumPy's "linear" percentile over ``n`` sorted values: lower index and fraction.

    The value is ``lerp(x[k], x[k + 1], t)`` (with ``x[k + 1]`` read as ``x[k]`` when
    ``k == n - 1``), computed exactly as NumPy computes the virtual index.
    """
    pos = (n - 1) * (q / 100.0)
    k = min(int(math.floor(pos)), n - 1)
    return k, pos - k


def doubled_percentile_ranks(m: int, q: float) -> tuple[int, int, float]:
    """Percentile ``q`` of the ordered-pair list, where each of ``m`` values appears twice.

    Returns the ranks ``(r0, r1)`` of the two needed order statistics among the ``m``
    unordered values and the fraction ``t`` (DESIGN.md: element ``j`` of the doubled
    sorted list is element ``j // 2`` of the sorted unordered list).
    """
    k, t = linear_percentile_position(2 * m, q)
    return k // 2, min(k + 1, 2 * m - 1) // 2, t


def lerp(a, b, t):
    """NumPy's ``_lerp``: the same rounding for scalars and tensors."""
    diff = b - a
    if isinstance(t, float):
        return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t
    low = a + diff * t
    high = b - diff * (1.0 - t)
    return high.where(t >= 0.5, low) if hasattr(high, "where") else (high if t >= 0.5 else low)
