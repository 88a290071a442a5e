"""Similarity of two batches of maps: SSIM and Pearson correlation, per image."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.filters import gaussian_taps

SSIM_SIGMA, SSIM_TRUNCATE = 1.5, 3.5  # Wang et al.'s 11-tap Gaussian window, as scikit-image
SSIM_K1, SSIM_K2 = 0.01, 0.03


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity per image of ``[B, H, W]`` maps (Wang et al. 2004).

    Gaussian window (sigma 1.5, 11 taps), population covariances, ``K1 = 0.01``,
    ``K2 = 0.03``, averaged over the positions whose window lies inside the image: the
    value of ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=data_range)``.
    """
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"ssim needs two [B, H, W] maps of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    taps = gaussian_taps(SSIM_SIGMA, SSIM_TRUNCATE, dtype=torch.float64, device=a.device)
    if min(a.shape[-2:]) < taps.numel():
        raise ValueError(f"ssim needs maps of at least {taps.numel()}x{taps.numel()}, got {tuple(a.shape[-2:])}")
    x = torch.stack([a, b, a * a, b * b, a * b], dim=1).double().flatten(0, 1)[:, None]
    x = F.conv2d(F.conv2d(x, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))
    mu_a, mu_b, aa, bb, ab = x.reshape(a.shape[0], 5, *x.shape[-2:]).unbind(1)
    var_a, var_b, cov = aa - mu_a * mu_a, bb - mu_b * mu_b, ab - mu_a * mu_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1).to(a.dtype)


def pearson(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pearson correlation per image of ``[B, ...]`` maps, and a ``[B, 2]`` flag of constant maps.

    Where a map is constant (zero everywhere, say) the correlation is undefined; it is
    reported as 1.0 when both maps are constant and 0.0 when one is, never NaN.
    """
    x = a.flatten(1).double()
    y = b.flatten(1).double()
    x = x - x.mean(1, keepdim=True)
    y = y - y.mean(1, keepdim=True)
    sx, sy = (x * x).sum(1), (y * y).sum(1)
    constant = torch.stack([sx == 0, sy == 0], dim=1)
    r = (x * y).sum(1) / (sx * sy).sqrt().clamp_min(torch.finfo(torch.float64).tiny)
    r = torch.where(constant.all(1), torch.ones_like(r), torch.where(constant.any(1), torch.zeros_like(r), r))
    return r.clamp(-1.0, 1.0).to(a.dtype), constant
