"""Step 5's filters (``core.filters``, and the reference backend's own) against SciPy's
Gaussian filter and a loop-by-loop reading of the "official" filter, with their mean maps."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import official_filter_by_reading
from scipy import ndimage

import cfcam_fast as cf
from cfcam_fast.core import filters
from cfcam_fast.core.backends import reference


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 7), (7, 7), (14, 9)])
@pytest.mark.parametrize("sigma,truncate", [(1.0, 4.0), (0.6, 4.0), (2.5, 2.0), (1.3, 1.0)])
def test_gaussian_filter_matches_scipy(shape, sigma, truncate):
    g = np.random.default_rng(0).normal(size=shape)
    config = cf.CFCAMConfig(sigma=sigma, truncate=truncate)
    expected = ndimage.gaussian_filter(g, sigma, mode="constant", cval=0.0, truncate=truncate)
    np.testing.assert_allclose(reference.apply_filter(g, config), expected, rtol=1e-12, atol=1e-15)
    # The plain-PyTorch filter and its mean map (float64 in, so float64 rounding only).
    got = filters.gaussian_filter2d_torch(torch.from_numpy(g), sigma, truncate).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)
    m = filters.gaussian_mean_map(*shape, sigma, truncate, dtype=torch.float64).numpy()
    assert (g * m).sum() == pytest.approx(expected.mean(), rel=1e-10, abs=1e-13)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 4), (4, 6), (5, 2), (7, 7)])
def test_official_filter_matches_spec_reading(shape):
    # Gradient-like values spread around 0.1 so that the range term Rg varies.
    g = np.random.default_rng(1).normal(scale=0.1, size=shape)
    expected = official_filter_by_reading(g)
    np.testing.assert_allclose(reference.official_filter(g), expected, rtol=1e-12, atol=1e-15)
    # PyTorch's own conv2d(padding="same") with the same kernel: the padding convention.
    K = torch.from_numpy(reference.official_kernel(g))
    conv = F.conv2d(torch.from_numpy(g)[None, None], K[None, None], padding="same")[0, 0]
    np.testing.assert_allclose(conv.numpy(), expected, rtol=1e-10, atol=1e-13)
    # The plain-PyTorch filter and its mean map.
    got = filters.official_filter_torch(torch.from_numpy(g)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)
    m = filters.official_mean_map(filters.official_kernel(torch.from_numpy(g))).numpy()
    assert (g * m).sum() == pytest.approx(expected.mean(), rel=1e-10, abs=1e-13)
