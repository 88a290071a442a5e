"""The reference backend: docs/algorithm.md in NumPy, SciPy and scikit-learn, image by image.

This is the oracle of every fast path. It is written to be read against docs/algorithm.md line by
line, never for speed, and it imports no other backend.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial.distance import pdist, squareform
from sklearn.cluster import DBSCAN

from ..config import CFCAMConfig, CFCAMResult
from ..formulas import min_samples_for
from ..plan import Plan


def explain(activations: torch.Tensor, gradients: torch.Tensor, output_size, config: CFCAMConfig, plan: Plan,
            return_filtered: bool = False) -> CFCAMResult:
    """CF-CAM for a batch, computed one image at a time on the CPU; ``plan`` (core
    "reference": SciPy's pdist, NumPy's percentile, scikit-learn's DBSCAN) is recorded on
    the result."""
    A = activations.detach().to("cpu", torch.float32).numpy()
    G = gradients.detach().to("cpu", torch.float32).numpy()
    per_image = [explain_image(A[b], G[b], output_size, config) for b in range(A.shape[0])]
    device = activations.device

    def stack(key, dtype):
        return torch.as_tensor(np.stack([r[key] for r in per_image]), dtype=dtype, device=device)

    return CFCAMResult(
        maps=stack("map", torch.float32),
        labels=stack("labels", torch.int64),
        channel_weights=stack("channel_weights", torch.float32),
        weights=stack("weights", torch.float32),
        eps=stack("eps", torch.float64),
        filtered=[torch.as_tensor(r["filtered"], dtype=torch.float32, device=device) for r in per_image]
        if return_filtered else None,
        plan=plan,
    )


def explain_image(A: np.ndarray, G: np.ndarray, output_size, config: CFCAMConfig) -> dict:
    """docs/algorithm.md steps 1-7 for one image; ``A`` and ``G`` are float32 ``[C, H, W]``."""
    C, H, W = A.shape
    # Step 1: flatten.
    F = A.reshape(C, H * W)
    # Step 2: importance split on the channel norms.
    norms = np.linalg.norm(F.astype(np.float64), axis=1)
    tau = np.percentile(norms, config.importance_percentile)
    important = norms >= tau
    rest = np.flatnonzero(~important)
    # Steps 3-4: eps and DBSCAN on the remaining channels.
    labels = np.full(C, -2, dtype=np.int64)
    labels[rest] = -1
    eps = float("nan")
    if rest.size >= 2:
        dist = pdist(F[rest].astype(np.float64))
        eps = max(float(np.percentile(np.concatenate([dist, dist]), config.eps_percentile)),
                  config.eps_floor)
        min_samples = min_samples_for(rest.size, config)
        labels[rest] = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(
            squareform(dist)).labels_
    # Step 5: channel weights.
    Gd = G.astype(np.float64)
    weights = np.zeros(C, dtype=np.float64)
    weights[important] = Gd[important].mean(axis=(1, 2))
    n_clusters = int(labels.max()) + 1 if labels.max() >= 0 else 0
    filtered = np.zeros((n_clusters, H, W), dtype=np.float64)
    for k in range(n_clusters):
        members = labels == k
        filtered[k] = apply_filter(Gd[members].mean(axis=0), config)
        weights[members] = filtered[k].mean()
    # Step 6: combination over the kept channels.
    kept = labels != -1
    alpha = np.zeros(C, dtype=np.float64)
    alpha[kept] = combination_weights(weights[kept], config.weighting)
    cam = np.maximum(np.tensordot(alpha[kept], A[kept].astype(np.float64), axes=1), 0.0)
    # Step 7: upsample and normalise.
    cam = bilinear_resize(cam, output_size)
    peak = cam.max()
    if peak > 0:
        cam = cam / peak
    return {"map": cam, "labels": labels, "channel_weights": weights, "weights": alpha,
            "eps": eps, "filtered": filtered}


def combination_weights(w: np.ndarray, weighting: str) -> np.ndarray:
    """``alpha`` of docs/algorithm.md step 6 from the kept channels' weights."""
    if weighting == "linear":
        return w.copy()
    if weighting == "standardized":
        std = w.std()
        if std == 0:
            return np.full_like(w, 1.0 / w.size)
        w = (w - w.mean()) / std
    e = np.exp(w - w.max())
    return e / e.sum()


def apply_filter(g: np.ndarray, config: CFCAMConfig) -> np.ndarray:
    """``Filter(g)`` of docs/algorithm.md step 5 for one ``[H, W]`` map."""
    if config.filter == "gaussian":
        return ndimage.gaussian_filter(g, config.sigma, mode="constant", cval=0.0, truncate=config.truncate)
    return official_filter(g)


def official_kernel(g: np.ndarray) -> np.ndarray:
    """The authors' data-dependent ``H x W`` kernel ``K`` (docs/algorithm.md, filter="official")."""
    H, W = g.shape
    u = np.arange(H, dtype=np.float64)[:, None] - H / 2
    v = np.arange(W, dtype=np.float64)[None, :] - W / 2
    spatial = np.exp(-(u ** 2 + v ** 2) / (2 * 5.0 ** 2))
    value = np.exp(-((g - g.mean()) ** 2) / (2 * 0.1 ** 2))
    k = spatial * value
    return k / (k.sum() + 1e-6)


def official_filter(g: np.ndarray) -> np.ndarray:
    """Zero-padded "same" cross-correlation of ``g`` with its official kernel."""
    H, W = g.shape
    K = official_kernel(g)
    top, left = (H - 1) // 2, (W - 1) // 2
    padded = np.zeros((3 * H, 3 * W), dtype=np.float64)
    padded[H:2 * H, W:2 * W] = g
    out = np.zeros((H, W), dtype=np.float64)
    for u in range(H):
        for v in range(W):
            r, c = H + u - top, W + v - left
            out += K[u, v] * padded[r:r + H, c:c + W]
    return out


def bilinear_resize(x: np.ndarray, size) -> np.ndarray:
    """PyTorch's ``interpolate(mode="bilinear", align_corners=False)`` of one ``[h, w]`` map."""
    rows = _linear_taps(x.shape[0], size[0])
    cols = _linear_taps(x.shape[1], size[1])
    return rows @ x @ cols.T


def _linear_taps(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` interpolation matrix of half-pixel-centred linear resampling."""
    taps = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    for o in range(n_out):
        src = max((o + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        taps[o, i0] += 1.0 - frac
        taps[o, i1] += frac
    return taps
