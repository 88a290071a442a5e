"""Decisions that need IEEE rounding where PyTorch's CPU build does not give it, and points too
large for float32 products: eps bit for bit against NumPy's percentile of SciPy's pdist,
``sq_threshold`` against a correctly rounded square root, and native DBSCAN on points whose
float32 squares overflow."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist
from sklearn.cluster import DBSCAN

import cfcam_fast as cf
from cfcam_fast.core.cluster import sq_threshold
from cfcam_fast.core.formulas import sqrt_rn


def test_sqrt_rn_is_correctly_rounded_where_torch_sqrt_is_not_always():
    x = torch.rand(50_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 100
    expected = np.array([math.sqrt(v) for v in x.tolist()])
    np.testing.assert_array_equal(sqrt_rn(x).numpy(), expected)


def test_sq_threshold_is_the_largest_square_whose_root_is_within_eps():
    eps = torch.rand(2_000, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 10
    for e, t in zip(eps.tolist(), sq_threshold(eps).tolist()):
        assert math.sqrt(t) <= e < math.sqrt(math.nextafter(t, math.inf)), (e, t)


def test_eps_equals_numpy_percentile_of_pdist_bit_for_bit():
    """200 random images through the fast CPU path (certified distances, compiled selection):
    the same eps as the reference, to the last bit (this failed for about 1% of images while
    the square root came from torch.sqrt)."""
    gen = torch.Generator().manual_seed(2)
    A = torch.rand(200, 32, 3, 3, generator=gen) ** 3
    G = torch.randn(200, 32, 3, 3, generator=gen) * 1e-3
    fast = cf.cfcam_explain(A, G, backend="torch").eps.numpy()
    reference = []
    for image in A.double().flatten(2).numpy():
        norms = np.linalg.norm(image, axis=1)
        rest = image[norms < np.percentile(norms, 75)]
        d = pdist(rest)
        reference.append(max(np.percentile(np.concatenate([d, d]), 25), 1e-5))
    np.testing.assert_array_equal(fast, np.array(reference))


@pytest.mark.parametrize("exponent", [60, 66, 70])
def test_native_dbscan_on_points_whose_float32_squares_overflow(exponent):
    rng = np.random.default_rng(exponent)
    scale = 2.0 ** exponent
    points = np.concatenate([rng.normal(size=(12, 3)) * 0.1, rng.normal(size=(12, 3)) * 0.1 + 5,
                             rng.normal(size=(6, 3)) * 3]) * scale
    eps = 0.5 * scale
    got = cf.cluster.dbscan(torch.from_numpy(points), eps, 3, backend="native").numpy()
    np.testing.assert_array_equal(got, DBSCAN(eps=eps, min_samples=3).fit(points).labels_)
