"""DBSCAN labelling with scikit-learn, one problem at a time on the CPU (the oracle)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import DBSCAN


def dbscan_labels(dist: torch.Tensor, counts: torch.Tensor, eps: torch.Tensor,
                  min_samples: torch.Tensor) -> torch.Tensor:
    """scikit-learn's ``DBSCAN(metric="precomputed")`` on each image's valid prefix."""
    D = dist.detach().cpu().numpy()
    out = np.full(D.shape[:2], -1, dtype=np.int64)
    for b, (c, e, m) in enumerate(zip(counts.tolist(), eps.tolist(), min_samples.tolist())):
        if c > 0:
            out[b, :c] = DBSCAN(eps=e, min_samples=m, metric="precomputed").fit(D[b, :c, :c]).labels_
    return torch.from_numpy(out).to(dist.device)
