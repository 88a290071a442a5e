"""``core.selection``: eps from two order statistics of the unordered pairs, and the order
statistics themselves, against NumPy on the full list of pairs, exactly."""
import numpy as np
import pytest
import torch

import cfcam_fast.cluster as cluster
from cfcam_fast.core.selection import eps_from_sq_distances, pair_ranks_torch


@pytest.mark.parametrize("n", [2, 3, 40, 300])
def test_eps_equals_numpy_percentile_of_ordered_pairs(n):
    """eps from two order statistics of the unordered pairs equals np.percentile over the
    authors' list of all ordered pairs i != j, bit for bit (same distances, same lerp)."""
    counts = torch.tensor([n, max(2, n - 1), max(2, n // 2)])
    pts = torch.randn(3, n, 5).relu()
    pts[0, : n // 3] = 0  # ties: many zero distances
    sq = cluster.pairwise_sq_distances(pts)
    upper = sq.clamp(min=0).triu(1)
    dist = (upper + upper.transpose(1, 2)).sqrt()
    for q in (25.0, 0.0, 50.0, 99.9, 100.0):
        eps = eps_from_sq_distances(sq, counts, q, 1e-5)
        for b, c in enumerate(counts.tolist()):
            D = dist[b, :c, :c].numpy()
            ordered = D[~np.eye(c, dtype=bool)]
            assert eps[b].item() == max(np.percentile(ordered, q), 1e-5)


def test_pair_ranks_sampled_path_is_exact():
    """Rows long enough for the sampled bracket, with heavy ties, against a full sort."""
    n = 400
    pts = torch.randint(0, 4, (2, n, 2)).double()
    dist = cluster.pairwise_sq_distances(pts)
    counts = torch.tensor([n, 371])
    m = counts * (counts - 1) // 2
    ranks = torch.stack([torch.zeros(2, dtype=torch.int64), m // 4, m // 4 + 1, m - 1], 1)
    got = pair_ranks_torch(dist, counts, ranks)
    for b, c in enumerate(counts.tolist()):
        iu = np.triu_indices(c, 1)
        values = np.sort(dist[b, :c, :c].numpy()[iu])
        np.testing.assert_array_equal(got[b].numpy(), values[ranks[b].numpy()])
