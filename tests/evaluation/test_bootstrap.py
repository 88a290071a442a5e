"""``evaluation.bootstrap``: the percentile interval of resampled means, reproducible from
its seed."""
import math

import numpy as np
import pytest

from cfcam_fast.evaluation.bootstrap import bootstrap_mean


def test_bootstrap_is_the_percentile_interval_of_resampled_means():
    values = [0.5, 1.0, 4.0, 2.0, math.nan, 3.5]
    interval = bootstrap_mean(values, resamples=1000, seed=7)
    finite = np.array([0.5, 1.0, 4.0, 2.0, 3.5])
    rng = np.random.default_rng(7)
    means = finite[rng.integers(0, 5, size=(1000, 5))].mean(1)
    # The same draws from the same seed: equal to the last bit.
    assert (interval.low, interval.high) == tuple(np.quantile(means, [0.025, 0.975]))
    assert interval.mean == finite.mean() and interval.n == 5
    assert interval.low <= interval.mean <= interval.high
    assert bootstrap_mean(values, seed=7) == interval  # fixed seed: reproducible
    assert bootstrap_mean([2.0] * 4) == (2.0, 2.0, 2.0, 4)
    assert math.isnan(bootstrap_mean([math.nan]).mean) and bootstrap_mean([]).n == 0
    with pytest.raises(ValueError):
        bootstrap_mean(values, level=1.0)
