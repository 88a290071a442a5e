"""``core.formulas``: the order statistics and interpolation of docs/algorithm.md's
percentiles, against NumPy."""
import numpy as np
import pytest
import torch

from cfcam_fast.core import formulas


@pytest.mark.parametrize("m", [1, 2, 3, 7, 36, 100, 1001])
@pytest.mark.parametrize("q", [0.0, 10.0, 25.0, 50.0, 75.0, 99.9, 100.0])
def test_doubled_percentile_ranks_match_numpy(m, q):
    values = np.random.default_rng(m).normal(size=m)
    ranks, t = formulas.doubled_percentile_ranks(torch.tensor([m]), q)
    s = np.sort(values)
    got = formulas.lerp(s[int(ranks[0, 0])], s[int(ranks[0, 1])], float(t[0]))
    assert got == np.percentile(np.concatenate([values, values]), q)
