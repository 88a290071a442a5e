"""``core.exportable.decisions``: the exact distances are SciPy's bit for bit, eps is the
reference's, the neighbour test is ``D <= sq_threshold(eps)``, and the certified stage
decides exactly what the exact one decides wherever its certificate holds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import POINT_KINDS, point_cloud, structured
from scipy.spatial.distance import pdist, squareform

from cfcam_fast.core.cluster.distances import pairwise_sq_distances, sq_threshold
from cfcam_fast.core.exportable.decisions import (
    certified_decisions,
    exact_decisions,
    exact_sq_distances,
    gemm_slack,
    pairs_of,
)
from cfcam_fast.core.formulas import doubled_percentile_ranks
from cfcam_fast.core.selection import eps_from_sq_distances, pair_ranks_torch


def test_exact_distances_are_pdist_bitwise():
    gen = torch.Generator().manual_seed(0)
    points = (torch.randn(2, 50, 49, generator=gen) * torch.logspace(-20, 20, 49)).float()
    D = exact_sq_distances(points)
    for b in range(2):
        assert np.array_equal(D[b].numpy(), squareform(pdist(points[b].double().numpy(), "sqeuclidean")))


@pytest.mark.parametrize("d", [1, 9, 49, 196])
def test_gemm_bound_holds(d):
    """``|D~ - D| <= gemm_slack(d) (|x|^2 + |y|^2)`` on points whose norms spread over
    twelve orders of magnitude, with near-duplicates (cancellation)."""
    gen = torch.Generator().manual_seed(d)
    base = torch.randn(1, 40, d, generator=gen) * torch.logspace(-6, 6, 40)[None, :, None]
    points = torch.cat([base, base * (1 + 1e-6 * torch.randn(1, 40, d, generator=gen))], 1).float()
    approx, exact = pairwise_sq_distances(points), exact_sq_distances(points)
    sq = points.double().pow(2).sum(2)
    bound = gemm_slack(d) * (sq[:, :, None] + sq[:, None, :])
    assert bool(((approx - exact).abs() <= bound).all())


def test_pairs_ranks_equal_doubled_percentile_ranks():
    for n in (2, 3, 36, 384, 515, 960):
        for q in (0.0, 25.0, 33.3, 100.0):
            pairs = pairs_of(n, q)
            ranks, _ = doubled_percentile_ranks(torch.tensor([n * (n - 1) // 2]), q)
            assert [pairs.r0, pairs.r1] == ranks[0].tolist()
            assert pairs.iu.numel() == n * (n - 1) // 2 and bool((pairs.iu < pairs.ju).all())


def _points(kind: str, seed: int, B: int = 3, n: int = 36, d: int = 9) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    out = np.zeros((B, n, d))
    for b in range(B):
        cloud = point_cloud(kind, n, rng)
        out[b, :, : min(d, cloud.shape[1])] = cloud[:, :d]
    return torch.from_numpy(out).float()


CASES = [(kind, seed) for kind in POINT_KINDS for seed in range(3)] + [("dead", 0), ("structured", 0)]


def _case(kind: str, seed: int) -> torch.Tensor:
    if kind == "structured":
        return structured(3, 36, 3, 3, seed=seed).flatten(2)
    if kind == "dead":
        points = _points("relu", seed)
        points[:, :20] = 0.0
        return points
    return _points(kind, seed)


@pytest.mark.parametrize("kind,seed", CASES)
@pytest.mark.parametrize("q", [25.0, 33.3])
def test_exact_decisions_are_the_references(kind, seed, q):
    """eps equals ``eps_from_sq_distances`` on ``pdist``'s values (the reference's), with
    every image full or short of points; neighbours are ``D <= sq_threshold(eps)``."""
    points = _case(kind, seed)
    B, n, _ = points.shape
    pairs = pairs_of(n, q)
    floor = torch.full((B,), 1e-5, dtype=torch.float64)
    for counts in (torch.full((B,), n), torch.tensor([n, n - 5, 1])):
        eps, adj = exact_decisions(points, counts, q, floor, pairs)
        D = torch.from_numpy(np.stack([squareform(pdist(p.double().numpy(), "sqeuclidean")) for p in points]))
        expected = eps_from_sq_distances(D, counts, q, floor, pair_ranks_torch)
        assert torch.equal(eps.isnan(), expected.isnan()) and torch.equal(eps.nan_to_num(), expected.nan_to_num())
        threshold = sq_threshold(expected.nan_to_num(-1.0))[:, None, None]
        assert torch.equal(adj, (D <= threshold) & ~expected.isnan()[:, None, None])


@pytest.mark.parametrize("kind,seed", CASES)
def test_certified_decisions_equal_the_exact_ones_where_certified(kind, seed):
    points = _case(kind, seed)
    B, n, _ = points.shape
    pairs = pairs_of(n, 25.0)
    counts = torch.full((B,), n)
    floor = torch.full((B,), 1e-5, dtype=torch.float64)
    eps, adj = exact_decisions(points, counts, 25.0, floor, pairs)
    eps_c, adj_c, ok = certified_decisions(points, counts, 25.0, floor, pairs)
    valid = ~torch.eye(n, dtype=torch.bool)[None]
    if bool(ok):
        assert torch.equal(eps_c, eps) and torch.equal(adj_c & valid, adj & valid)
    if kind in ("relu", "blobs", "dead"):
        assert bool(ok), "no ties at eps here: the certificate should hold"
    short = certified_decisions(points, torch.tensor([n, n - 1, n]), 25.0, floor, pairs)[2]
    assert not bool(short), "an image short of points needs the exact ranks"
