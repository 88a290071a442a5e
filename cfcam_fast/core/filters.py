"""The two filters of docs/algorithm.md step 5 in plain, batched PyTorch.

These are the functions the Triton kernels in ``cfcam_fast.kernels`` must equal, and what
the ``torch`` backend runs. Both filters are linear in the map for a fixed kernel, so
``mean(Filter(g)) == (g * m).sum()`` for a position-weight map ``m``: ``*_mean_map`` give
``m`` so that cluster weights need no filtered maps in memory.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

OFFICIAL_SIGMA_SPATIAL = 5.0
OFFICIAL_SIGMA_RANGE = 0.1
OFFICIAL_NORM_EPS = 1e-6


def gaussian_radius(sigma: float, truncate: float = 4.0) -> int:
    """Tap radius, rounded as ``scipy.ndimage.gaussian_filter`` rounds it."""
    return int(truncate * float(sigma) + 0.5)


def gaussian_taps(sigma: float, truncate: float = 4.0, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps of length ``2 * radius + 1`` (computed in float64)."""
    r = gaussian_radius(sigma, truncate)
    x = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
    taps = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return (taps / taps.sum()).to(dtype)


def gaussian_filter2d_torch(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter(x, sigma, mode="constant", truncate=truncate)`` over
    the last two axes of ``[..., H, W]``; accumulates in float32 at least."""
    if x.dim() < 2:
        raise ValueError(f"gaussian_filter2d needs a [..., H, W] tensor, got shape {tuple(x.shape)}")
    compute = torch.promote_types(x.dtype, torch.float32)
    H, W = x.shape[-2:]
    flat = x.reshape(-1, 1, H, W).to(compute)
    taps = gaussian_taps(sigma, truncate, dtype=compute, device=x.device)
    r = taps.numel() // 2
    flat = F.conv2d(flat, taps.view(1, 1, 1, -1), padding=(0, r))
    flat = F.conv2d(flat, taps.view(1, 1, -1, 1), padding=(r, 0))
    return flat.reshape(x.shape).to(x.dtype)


def _gaussian_mass(n: int, taps: torch.Tensor) -> torch.Tensor:
    """``a[p] = sum over outputs i in [0, n) of taps[i - p + r]``: one axis of the mean map."""
    r = taps.numel() // 2
    cum = torch.cat([taps.new_zeros(1), taps.cumsum(0)])
    p = torch.arange(n, device=taps.device)
    lo = (r - p).clamp(min=0, max=2 * r + 1)
    hi = (n - p + r).clamp(min=0, max=2 * r + 1)
    return cum[hi] - cum[lo]


def gaussian_mean_map(H: int, W: int, sigma: float, truncate: float = 4.0, *, dtype=torch.float32,
                      device=None) -> torch.Tensor:
    """``m`` with ``mean(gaussian_filter2d(g)) == (g * m).sum()`` for every ``[H, W]`` map."""
    taps = gaussian_taps(sigma, truncate, device=device)
    m = torch.outer(_gaussian_mass(H, taps), _gaussian_mass(W, taps)) / (H * W)
    return m.to(dtype)


def official_kernel(g: torch.Tensor) -> torch.Tensor:
    """The authors' data-dependent kernel ``K`` for each ``[H, W]`` map of ``[..., H, W]``."""
    H, W = g.shape[-2:]
    compute = torch.promote_types(g.dtype, torch.float32)
    g = g.to(compute)
    u = torch.arange(H, dtype=compute, device=g.device)[:, None] - H / 2
    v = torch.arange(W, dtype=compute, device=g.device)[None, :] - W / 2
    spatial = torch.exp(-(u * u + v * v) / (2 * OFFICIAL_SIGMA_SPATIAL ** 2))
    diff = g - g.mean(dim=(-2, -1), keepdim=True)
    k = spatial * torch.exp(-(diff * diff) / (2 * OFFICIAL_SIGMA_RANGE ** 2))
    return k / (k.sum(dim=(-2, -1), keepdim=True) + OFFICIAL_NORM_EPS)


def official_filter_torch(g: torch.Tensor) -> torch.Tensor:
    """The authors' filter: "same" zero-padded cross-correlation of each map with its own
    ``official_kernel``, padded as ``conv2d(padding="same")`` pads."""
    H, W = g.shape[-2:]
    K = official_kernel(g)
    n = K[..., 0, 0].numel()
    maps = g.reshape(1, n, H, W).to(K.dtype)
    out = F.conv2d(F.pad(maps, _same_padding(H, W)), K.reshape(n, 1, H, W), groups=n)
    return out.reshape(g.shape).to(g.dtype)


def _same_padding(kh: int, kw: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) of PyTorch's ``padding="same"`` for a ``kh x kw`` kernel."""
    return ((kw - 1) // 2, kw - 1 - (kw - 1) // 2, (kh - 1) // 2, kh - 1 - (kh - 1) // 2)


def official_mean_map(K: torch.Tensor) -> torch.Tensor:
    """``m`` with ``mean(official correlation of g with K) == (g * m).sum()``.

    ``m[p, q]`` is the sum of ``K`` over the taps that carry input ``(p, q)`` to some
    output inside the map, a window sum read off the integral image of ``K``.
    """
    H, W = K.shape[-2:]
    top, left = (H - 1) // 2, (W - 1) // 2
    integral = F.pad(K.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    rows = torch.arange(H, device=K.device)
    cols = torch.arange(W, device=K.device)
    r_lo = (rows + top - H + 1).clamp(min=0)
    r_hi = (rows + top + 1).clamp(max=H)
    c_lo = (cols + left - W + 1).clamp(min=0)
    c_hi = (cols + left + 1).clamp(max=W)

    def at(r, c):
        return integral[..., r[:, None], c[None, :]]

    window = at(r_hi, c_hi) - at(r_lo, c_hi) - at(r_hi, c_lo) + at(r_lo, c_lo)
    return window / (H * W)


def filter_maps(g: torch.Tensor, filter: str, sigma: float, truncate: float) -> torch.Tensor:
    """``Filter(g)`` of docs/algorithm.md step 5 for every map of ``[..., H, W]``."""
    if filter == "gaussian":
        return gaussian_filter2d_torch(g, sigma, truncate)
    return official_filter_torch(g)

