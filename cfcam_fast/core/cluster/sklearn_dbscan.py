"""DBSCAN labelling with scikit-learn, one problem at a time on the CPU (the oracle)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import DBSCAN


def symmetric_from_upper(dist: np.ndarray) -> np.ndarray:
    """The symmetric, non-negative matrix whose upper triangle is ``dist``'s (zero diagonal)."""
    upper = np.triu(np.maximum(dist, 0.0), 1)
    return upper + upper.T


def dbscan_labels(dist: torch.Tensor, counts: torch.Tensor, eps: torch.Tensor,
                  min_samples: torch.Tensor) -> torch.Tensor:
    """scikit-learn's ``DBSCAN(metric="precomputed")`` on each image's valid prefix."""
    D = dist.detach().cpu().numpy()
    out = np.full(D.shape[:2], -1, dtype=np.int64)
    for b, (c, e, m) in enumerate(zip(counts.tolist(), eps.tolist(), min_samples.tolist())):
        if c > 0:
            prefix = symmetric_from_upper(D[b, :c, :c])
            if e <= 0:  # scikit-learn wants eps > 0: give it the neighbour relation d <= e itself
                prefix, e = (prefix > e).astype(np.float64), 0.5
            out[b, :c] = DBSCAN(eps=e, min_samples=m, metric="precomputed").fit(prefix).labels_
    return torch.from_numpy(out).to(dist.device)
