"""The certified CPU stage (``cluster.certified`` and its compiled ops) against exact float64.

The oracle is the float64 squared distance summed coordinate by coordinate, in order (what
the ops define as exact; it is scipy's ``pdist`` up to the order of summation), computed
here with separate torch multiply and add steps, so the comparisons are bit for bit: the
ops' order statistics must equal NumPy's on those distances, and their labels
scikit-learn's ``DBSCAN(metric="precomputed")`` on them, with eps itself one of the
distances (ties at eps on purpose). The data cover the ways a float32 shortcut can go
wrong: dead (all-zero) points, exact duplicates and lattices (massive ties), magnitudes
that overflow or underflow float32, mixed scales, and copies of one point (exactly 0 apart,
counted without their approx values).
"""
import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN

import cfcam_fast as cf
from cfcam_fast import cluster
from cfcam_fast.core import native as _native
from cfcam_fast.core.cluster import certified
from cfcam_fast.core.selection import eps_from_sq_distances

pytestmark = pytest.mark.skipif(not certified.usable(torch.device("cpu")),
                                reason="the native CPU ops are not built")

KINDS = ("gauss", "dead", "mostly-dead", "copies", "lattice", "huge", "tiny", "mixed")


def exact_sq(points: torch.Tensor) -> torch.Tensor:
    """``[n, n]`` float64 sums of squared differences, rounded step by step in coordinate order."""
    x = points.to(torch.float64)
    total = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64)
    for k in range(x.shape[1]):
        diff = x[:, None, k] - x[None, :, k]
        total = total + diff * diff
    return total


def make_points(kind: str, B: int, n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(B, n, d, generator=gen)
    if kind == "dead":  # ReLU activations, a third of the points all zero
        x = x.relu() * (torch.rand(B, n, 1, generator=gen) > 1 / 3)
    elif kind == "mostly-dead":  # as EfficientNet-Lite0's bn2: 85% all zero, eps inside the zeros
        x = x.relu() * (torch.rand(B, n, 1, generator=gen) > 0.85)
    elif kind == "copies":  # half the points copies of three nonzero ones, some with -0.0 for 0.0
        x = x.relu()
        copies = torch.randn(B, 3, d, generator=gen).relu()
        pick = torch.randint(0, 3, (B, n // 2), generator=gen)
        x[:, : n // 2] = copies.gather(1, pick[:, :, None].expand(-1, -1, d))
        x[:, : n // 4] = torch.where(x[:, : n // 4] == 0, -0.0, x[:, : n // 4])
    elif kind == "lattice":  # few distinct distances: huge tie groups, pairs at eps
        x = torch.randint(0, 3, (B, n, d), generator=gen).float()
    elif kind == "huge":  # float32 squares overflow: every approx value is inf
        return x.double() * 1e25
    elif kind == "tiny":  # float32 squares underflow to subnormals or zero
        return x.double() * 1e-22
    elif kind == "mixed":  # norms spread over twelve orders of magnitude
        x = x * torch.logspace(-6, 6, n)[torch.randperm(n, generator=gen)][None, :, None]
    return x


def ragged(kind: str, seed: int, B: int, n: int, d: int):
    gen = torch.Generator().manual_seed(seed)
    points = make_points(kind, B, n, d, gen)
    counts = torch.randint(2, n + 1, (B,), generator=gen)
    counts[0] = n
    return points, counts, gen


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,d", [(40, 3), (700, 7), (1536, 49)], ids=["direct", "bracketed", "resnet50"])
def test_pair_ranks_equal_numpy_on_exact_distances(kind, n, d):
    B = 1 if n == 1536 else 3
    points, counts, gen = ragged(kind, seed=n + d + KINDS.index(kind), B=B, n=n, d=d)
    approx = certified.approx_sq_distances(points)
    M = counts * (counts - 1) // 2
    # The eps ranks (25th percentile of the doubled list), both extremes and random ones.
    q = torch.rand(B, 4, generator=gen)
    # The last rank that is 0 and the first that is not: pairs of equal points come first.
    zero_pairs = torch.stack([(exact_sq(points[b, :int(counts[b])]) == 0).triu(1).sum() for b in range(B)])
    ranks = torch.cat([(M[:, None] * 3 // 8).expand(B, 2) + torch.tensor([0, 1]), torch.zeros(B, 1, dtype=torch.int64),
                       M[:, None] - 1, (q * M[:, None]).long(), (zero_pairs[:, None] - 1).clamp(min=0),
                       zero_pairs[:, None]], 1).clamp(max=(M - 1)[:, None])
    got = _native.certified_pair_ranks(approx, points.double().contiguous(), counts, ranks)
    for b in range(B):
        c = int(counts[b])
        d2 = exact_sq(points[b, :c])
        values = np.sort(d2[np.triu_indices(c, 1)].numpy())
        np.testing.assert_array_equal(got[b].numpy(), values[ranks[b].numpy()])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,d", [(40, 3), (700, 7), (1536, 49)], ids=["small", "medium", "resnet50"])
def test_labels_equal_sklearn_on_exact_distances_with_eps_ties(kind, n, d):
    B = 1 if n == 1536 else 3
    points, counts, gen = ragged(kind, seed=2 * n + d + KINDS.index(kind), B=B, n=n, d=d)
    approx = certified.approx_sq_distances(points)
    exact_points = points.double().contiguous()
    # eps is an order statistic, so pairs sit exactly at eps; its floor is positive for
    # scikit-learn, and below every nonzero distance.
    ties = 0
    for q in (10.0, 25.0):
        eps = eps_from_sq_distances(approx, counts, q, 1e-300, certified.pair_ranks(exact_points, approx))
        min_samples = torch.randint(1, 8, (B,), generator=gen)
        got = certified.labels(exact_points, approx, counts, cluster.sq_threshold(eps), min_samples)
        for b in range(B):
            c = int(counts[b])
            dist = exact_sq(points[b, :c]).sqrt().numpy()
            ties += int((dist == float(eps[b])).sum())
            expected = DBSCAN(eps=float(eps[b]), min_samples=int(min_samples[b]),
                              metric="precomputed").fit(dist).labels_
            np.testing.assert_array_equal(got[b, :c].numpy(), expected)
            assert (got[b, c:] == -1).all()
    if kind == "lattice":
        assert ties > 0, "the lattices should put pairs exactly at eps"


@pytest.mark.parametrize("d", [3, 49, 784])
def test_float32_distances_lie_within_the_bound_the_ops_assume(d):
    """The ops' premise, checked directly: |approx - exact| <= (4d + 32) 2^-24 (|x_i|^2 + |x_j|^2)
    on the upper triangle, for points of mixed scales."""
    gen = torch.Generator().manual_seed(d)
    points = make_points("mixed", 1, 300, d, gen) + make_points("gauss", 1, 300, d, gen)
    approx = certified.approx_sq_distances(points)[0].double()
    exact = exact_sq(points[0])
    norms = (points[0].double() ** 2).sum(1)
    bound = (4 * d + 32) * 2.0 ** -24 * (norms[:, None] + norms[None, :])
    upper = torch.ones_like(exact, dtype=torch.bool).triu(1)
    assert ((approx - exact).abs() <= bound)[upper].all()


def test_dbscan_native_uses_the_certified_stage_and_matches_sklearn():
    gen = torch.Generator().manual_seed(5)
    points = torch.randn(2, 500, 6, generator=gen) * 0.3 + torch.randint(0, 4, (2, 500, 1), generator=gen)
    labels = cf.cluster.dbscan(points, 0.6, 5, backend="native")
    for b in range(2):
        dist = exact_sq(points[b]).sqrt().numpy()
        expected = DBSCAN(eps=0.6, min_samples=5, metric="precomputed").fit(dist).labels_
        np.testing.assert_array_equal(labels[b].numpy(), expected)
    assert int(labels.max()) >= 2


def test_reduced_precision_matmul_falls_back_to_float64():
    """Under TF32/bfloat16 products the bound does not hold: the stage stands aside and the
    CF-CAM result is still the reference's."""
    previous = torch.get_float32_matmul_precision()
    A = torch.randn(2, 256, 5, 5).relu()
    G = torch.randn(2, 256, 5, 5)
    try:
        torch.set_float32_matmul_precision("medium")
        assert not certified.matmul_is_ieee()
        got = cf.cfcam_explain(A, G, None, cf.CFCAMConfig(dbscan_backend="native"), backend="torch")
    finally:
        torch.set_float32_matmul_precision(previous)
    assert certified.matmul_is_ieee()
    ref = cf.cfcam_explain(A, G, None, cf.CFCAMConfig(), backend="reference")
    assert torch.equal(got.labels, ref.labels)


def _args():
    points = torch.randn(2, 5, 3, dtype=torch.float64)
    approx = certified.approx_sq_distances(points)
    return dict(approx=approx, points=points, counts=torch.tensor([5, 3]), ranks=torch.tensor([[0], [1]]),
                threshold=torch.tensor([1.0, 1.0], dtype=torch.float64), min_samples=torch.tensor([2, 2]))


@pytest.mark.parametrize("change,match", [
    (dict(approx=torch.zeros(2, 5, 5, dtype=torch.float64)), "approx must have dtype torch.float32"),
    (dict(points=torch.zeros(2, 5, 3)), "points must have dtype torch.float64"),
    (dict(points=torch.zeros(2, 4, 3, dtype=torch.float64)), "points must be"),
    (dict(approx=torch.zeros(2, 5, 4)), "square"),
    (dict(counts=torch.tensor([6, 3])), "counts\\[0\\] = 6"),
    (dict(counts=torch.tensor([5])), "counts has 1 rows"),
    (dict(ranks=torch.tensor([[0], [3]])), "ranks\\[1, 0\\] = 3"),
    (dict(threshold=torch.tensor([-1.0, 1.0], dtype=torch.float64)), "threshold\\[0\\]"),
    (dict(min_samples=torch.tensor([0, 2])), "min_samples\\[0\\]"),
    (dict(approx=torch.zeros(2, 5, 5).transpose(1, 2)), "contiguous"),
])
def test_bad_arguments_are_value_errors(change, match):
    args = _args()
    args.update(change)
    def select():
        return _native.certified_pair_ranks(args["approx"], args["points"], args["counts"], args["ranks"])

    def label():
        return _native.certified_dbscan_labels(args["approx"], args["points"], args["counts"],
                                               args["threshold"], args["min_samples"])

    for call in (select, label):
        key = next(iter(change))
        if key == "ranks" and call is label or key in ("threshold", "min_samples") and call is select:
            continue
        with pytest.raises(ValueError, match=match):
            call()


def test_certified_ops_are_registered_for_torch_compile():
    args = _args()
    approx, points, counts = args["approx"], args["points"], args["counts"]
    torch.library.opcheck(torch.ops.cfcam_fast.certified_pair_ranks.default, (approx, points, counts, args["ranks"]))
    torch.library.opcheck(torch.ops.cfcam_fast.certified_dbscan_labels.default,
                          (approx, points, counts, args["threshold"], args["min_samples"]))

    def eps_then_labels(a, p, c, r, m):
        threshold = _native.certified_pair_ranks(a, p, c, r)[:, 0].contiguous()
        return _native.certified_dbscan_labels(a, p, c, threshold, m)

    compiled = torch.compile(eps_then_labels, backend="aot_eager", fullgraph=True)
    call = (approx, points, counts, args["ranks"], args["min_samples"])
    assert torch.equal(compiled(*call), eps_then_labels(*call))
