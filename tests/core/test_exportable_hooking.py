"""``core.exportable.hooking``: DBSCAN by star hooking gives scikit-learn's labels, and the
proven ``2 ceil(log2 n)`` rounds suffice, also on the paths that need the most rounds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from export_helpers import sklearn_labels
from helpers import POINT_KINDS, point_cloud

from cfcam_fast.core.cluster import torch_dbscan
from cfcam_fast.core.exportable.hooking import dbscan_labels, rounds_bound


def _mask(dist: torch.Tensor, eps: float, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = dist.shape[0]
    valid = torch.arange(n)[None] < count
    adj = ((dist <= eps) | torch.eye(n, dtype=torch.bool))[None] & valid[:, :, None] & valid[:, None, :]
    return adj, valid


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", POINT_KINDS)
def test_labels_equal_sklearn_with_unused_slots(kind, seed):
    """Several clusters, border points, noise, ties and zero distances; slots past the
    count are -1; both loop forms; numbering included."""
    rng = np.random.default_rng(seed)
    n, count = 90, 80 + seed
    pts = torch.from_numpy(point_cloud(kind, n, rng))
    dist = torch.cdist(pts, pts)
    eps = float(dist[:count, :count].flatten().kthvalue(count * count // 5).values)
    adj, valid = _mask(dist, eps, count)
    min_samples = 3 + seed
    expected = sklearn_labels(dist[:count, :count].numpy(), eps, min_samples)
    for loop in ("while", "unrolled"):
        labels, rounds = dbscan_labels(adj, valid, torch.tensor([min_samples]), loop)
        assert labels[0, :count].tolist() == expected.tolist()
        assert (labels[0, count:] == -1).all()
        assert int(rounds) <= rounds_bound(n)


def test_labels_equal_the_torch_backend_batched():
    gen = torch.Generator().manual_seed(5)
    B, n = 4, 60
    pts = torch.randn(B, n, 3, generator=gen)
    dist = torch.cdist(pts, pts).double()
    counts = torch.tensor([60, 45, 2, 1])
    eps = torch.tensor([0.5, 0.8, 10.0, 1.0], dtype=torch.float64)
    min_samples = torch.tensor([3, 4, 2, 2])
    valid = torch.arange(n)[None] < counts[:, None]
    adj = ((dist <= eps[:, None, None]) | torch.eye(n, dtype=torch.bool)) & valid[:, :, None] & valid[:, None, :]
    labels, _ = dbscan_labels(adj, valid, min_samples)
    assert torch.equal(labels, torch_dbscan.dbscan_labels(dist, counts, eps, min_samples))


@pytest.mark.parametrize("n", [2, 3, 17, 64, 200])
def test_round_bound_on_paths(n):
    """A path has diameter n - 1, the worst case for label propagation. Reversed (labels
    decrease along the path, each step hooks one star) and shuffled: the unrolled form runs
    exactly the proven number of rounds and finds one cluster; the while loop stops within
    them."""
    gen = torch.Generator().manual_seed(n)
    for trial in range(4):
        order = torch.arange(n).flip(0) if trial == 0 else torch.randperm(n, generator=gen)
        adj = torch.eye(n, dtype=torch.bool)
        adj[order[:-1], order[1:]] = True
        adj[order[1:], order[:-1]] = True
        valid = torch.ones(1, n, dtype=torch.bool)
        for loop in ("unrolled", "while"):
            labels, rounds = dbscan_labels(adj[None], valid, torch.tensor([1]), loop)
            assert (labels == 0).all(), (n, trial, loop)
            assert int(rounds) <= rounds_bound(n)


def test_round_bound_on_alternating_combs():
    """Components whose roots alternate along a path (local minima everywhere, the case
    the proof's two-round argument is about), several components in one batch."""
    n = 128
    adj = torch.eye(n, dtype=torch.bool)
    order = torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2).flip(0)])  # 0, 2, 4, ..., 5, 3, 1
    for a, b in zip(order[:-1].tolist(), order[1:].tolist()):
        if (a, b) != (62, 64):  # cut once: two components
            adj[a, b] = adj[b, a] = True
    valid = torch.ones(1, n, dtype=torch.bool)
    dist = (~adj).double()
    expected = sklearn_labels(dist.numpy(), 0.5, 1)
    for loop in ("unrolled", "while"):
        labels, rounds = dbscan_labels(adj[None], valid, torch.tensor([1]), loop)
        assert labels[0].tolist() == expected.tolist() and len(set(expected.tolist())) == 2
        assert int(rounds) <= rounds_bound(n)


def test_rounds_bound_values():
    assert [rounds_bound(n) for n in (1, 2, 3, 384, 960, 1536)] == [2, 2, 4, 18, 20, 22]


def test_bad_loop_is_refused():
    with pytest.raises(ValueError, match="loop must be one of"):
        dbscan_labels(torch.ones(1, 2, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool),
                      torch.tensor([1]), "for")
