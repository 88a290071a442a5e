"""``evaluation.similarity`` (public as ``cf.metrics.pearson`` and ``ssim``): Pearson's
correlation on known maps, and SSIM against scikit-image."""
import pytest
import torch

import cfcam_fast.metrics as metrics


def test_pearson_on_known_maps():
    a = torch.rand(4, 6, 5, generator=torch.Generator().manual_seed(1))
    r, constant = metrics.pearson(a, 2 * a + 1)
    assert torch.allclose(r, torch.ones(4)) and not bool(constant.any())
    assert torch.allclose(metrics.pearson(a, 1 - a)[0], -torch.ones(4))
    # Two centred patterns with a known correlation of 0.5: b = 0.5 u + sqrt(0.75) v, u _|_ v.
    u = torch.tensor([1.0, -1.0, 1.0, -1.0])
    v = torch.tensor([1.0, 1.0, -1.0, -1.0])
    r, _ = metrics.pearson(u[None], (0.5 * u + 0.75 ** 0.5 * v)[None])
    assert r.item() == pytest.approx(0.5, abs=1e-6)
    # A map that is zero everywhere: reported by the flag, never NaN.
    zero = torch.zeros(1, 6, 5)
    r, constant = metrics.pearson(zero, zero)
    assert r.tolist() == [1.0] and constant.tolist() == [[True, True]]
    r, constant = metrics.pearson(a[:1], zero)
    assert r.tolist() == [0.0] and constant.tolist() == [[False, True]]


def test_ssim_equals_scikit_image():
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    gen = torch.Generator().manual_seed(5)
    a = torch.rand(3, 20, 24, generator=gen)
    b = (a + 0.3 * torch.rand(3, 20, 24, generator=gen)).clamp(0, 1)
    ours = metrics.ssim(a, b)
    for i in range(3):
        expected = structural_similarity(a[i].double().numpy(), b[i].double().numpy(), gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False, data_range=1.0)
        # float64 inside both; float32 output.
        assert ours[i].item() == pytest.approx(expected, abs=1e-6)
    assert torch.allclose(metrics.ssim(a, a), torch.ones(3))
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(a[:, :8, :8], b[:, :8, :8])
