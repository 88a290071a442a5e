"""DBSCAN core points from RAPIDS cuML, then this package's components and border rule.

cuML does not promise scikit-learn's choice for a border point between two clusters, so
only its core points are used; labels then equal every other backend's.
"""
from __future__ import annotations

import importlib.util

import torch

from .torch_dbscan import labels_from_core


def unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why the cuML backend cannot run here, or ``None``."""
    if importlib.util.find_spec("cuml") is None:
        return "RAPIDS cuML is not installed: pip install cuml-cu12 (CUDA 12) or cuml-cu13 (CUDA 13)"
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return "cuML runs on CUDA tensors only"
    return None


def dbscan_labels(dist: torch.Tensor, counts: torch.Tensor, eps: torch.Tensor,
                  min_samples: torch.Tensor) -> torch.Tensor:
    """Labels from cuML's core points (one cuML call per image, on device arrays)."""
    from cuml.cluster import DBSCAN

    B, n, _ = dist.shape
    core = torch.zeros(B, n, dtype=torch.bool, device=dist.device)
    for b, (c, e, m) in enumerate(zip(counts.tolist(), eps.tolist(), min_samples.tolist())):
        if c > 0:
            model = DBSCAN(eps=e, min_samples=m, metric="precomputed", calc_core_sample_indices=True)
            upper = dist[b, :c, :c].clamp(min=0).triu(1)
            model.fit((upper + upper.T).contiguous())
            core[b, torch.as_tensor(model.core_sample_indices_, device=dist.device).long()] = True
    return labels_from_core(dist, counts, eps, core)
