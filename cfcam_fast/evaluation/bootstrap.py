"""Percentile bootstrap confidence intervals of a mean, reproducible from a seed."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

CHUNK_ELEMENTS = 1 << 22  # indices drawn at once (32 MiB of int64)

class Interval(NamedTuple):
    """The ``mean`` of ``n`` finite values and its bootstrap interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    n: int


def bootstrap_mean(values: Sequence[float], *, resamples: int = 1000, level: float = 0.95,
                   seed: int = 0) -> Interval:
    """The mean of the finite ``values`` and its ``level`` percentile bootstrap interval:
    ``resamples`` draws of ``n`` values with replacement (NumPy ``default_rng(seed)``), the
    interval between the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of their means
    (linear interpolation). NaN and infinite values are left out; none left gives NaNs, n 0."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    data = np.asarray(list(values), dtype=np.float64)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK_ELEMENTS // data.size)  # resamples drawn per step: bounded memory
    means = np.concatenate([data[rng.integers(0, data.size, size=(min(rows, resamples - start), data.size))]
                            .mean(axis=1) for start in range(0, resamples, rows)])
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return Interval(float(data.mean()), float(low), float(high), int(data.size))
