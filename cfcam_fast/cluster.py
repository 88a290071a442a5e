"""``cf.cluster``: DBSCAN with scikit-learn's labels, batched (``dbscan``, ``BACKENDS``); it
lives in ``cfcam_fast.core.cluster``."""
from .core.cluster import BACKENDS, PairDistances, dbscan, resolve, sq_threshold, unavailable_reason
from .core.cluster.distances import labels_from_distances, pairwise_sq_distances
from .core.selection import eps_from_sq_distances, pair_ranks_torch
from .core.workspace import pair_buffer

__all__ = ["BACKENDS", "PairDistances", "dbscan", "eps_from_sq_distances", "labels_from_distances", "pair_buffer",
           "pair_ranks_torch", "pairwise_sq_distances", "resolve", "sq_threshold", "unavailable_reason"]
