"""``cf.cluster.dbscan`` (``core.cluster``) on every backend against scikit-learn, exactly;
its arguments, and the border rule of the labels from given core points.

Every backend labels from the same float64 distances, and the oracle here is
scikit-learn's ``DBSCAN(metric="precomputed")`` on those very distances, so labels must be
identical (docs/exactness.md: pairs at exactly eps are decided from the distances that made eps).
"""
import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN

import cfcam_fast as cf
import cfcam_fast.cluster as cluster

BACKENDS = [b for b in ("torch", "sklearn", "native") if cluster.unavailable_reason(b) is None]


def problems(seed: int):
    """Fresh random ragged problems: blobs, chains, duplicates, sparse noise."""
    gen = torch.Generator().manual_seed(seed)
    for trial in range(40):
        B = int(torch.randint(1, 4, (1,), generator=gen))
        n = int(torch.randint(1, 40, (1,), generator=gen))
        d = int(torch.randint(1, 5, (1,), generator=gen))
        kind = trial % 4
        if kind == 0:  # blobs
            pts = torch.randn(B, n, d, generator=gen) * 0.2 + torch.randint(0, 3, (B, n, 1), generator=gen) * 2.0
        elif kind == 1:  # many exact duplicates (zero distances, ties at eps)
            pts = torch.randint(0, 3, (B, n, d), generator=gen).float()
        elif kind == 2:  # chains: components reached only through long paths
            pts = torch.cumsum(torch.rand(B, n, d, generator=gen), 1)
        else:  # spread out: mostly noise
            pts = torch.randn(B, n, d, generator=gen) * 3
        valid = torch.rand(B, n, generator=gen) > 0.2
        eps = [0.3, 0.5, 1.0, 1.5][trial % 4]
        min_samples = 1 + trial % 5
        yield pts, valid, eps, min_samples


def sklearn_labels(points: torch.Tensor, eps: float, min_samples: int) -> np.ndarray:
    sq = cluster.pairwise_sq_distances(points[None])[0].clamp(min=0).triu(1)
    dist = (sq + sq.T).sqrt().numpy()
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(dist).labels_


@pytest.mark.parametrize("backend", BACKENDS)
def test_dbscan_matches_sklearn_on_ragged_random_problems(backend):
    for pts, valid, eps, ms in problems(seed=7):
        labels = cf.cluster.dbscan(pts, eps, ms, valid=valid, backend=backend)
        assert labels.dtype == torch.int64 and labels.shape == valid.shape
        for b in range(pts.shape[0]):
            assert (labels[b][~valid[b]] == -1).all()
            if valid[b].any():
                expected = sklearn_labels(pts[b][valid[b]], eps, ms)
                np.testing.assert_array_equal(labels[b][valid[b]].numpy(), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dbscan_edge_cases(backend):
    one = torch.zeros(1, 3)
    assert cf.cluster.dbscan(one, 0.5, 2, backend=backend).tolist() == [-1]
    assert cf.cluster.dbscan(one, 0.5, 1, backend=backend).tolist() == [0]
    same = torch.zeros(6, 2)
    assert cf.cluster.dbscan(same, 1e-5, 6, backend=backend).tolist() == [0] * 6
    assert cf.cluster.dbscan(same, 1e-5, 7, backend=backend).tolist() == [-1] * 6
    # A border point between two clusters takes the smaller cluster number.
    line = torch.tensor([[0.0], [0.1], [0.2], [1.0], [1.8], [1.9], [2.0]])
    labels = cf.cluster.dbscan(line, 0.85, 4, backend=backend)
    assert labels.tolist() == DBSCAN(eps=0.85, min_samples=4).fit(line.numpy()).labels_.tolist()
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    empty = cf.cluster.dbscan(torch.zeros(2, 4, 3), 1.0, 2, valid=torch.zeros(2, 4, dtype=torch.bool),
                              backend=backend)
    assert (empty == -1).all()


def test_dbscan_per_problem_eps_and_min_samples():
    pts = torch.tensor([[[0.0], [0.5], [1.0]], [[0.0], [0.5], [1.0]]])
    labels = cf.cluster.dbscan(pts, torch.tensor([0.6, 0.4]), torch.tensor([2, 2]), backend="torch")
    assert labels.tolist() == [[0, 0, 0], [-1, -1, -1]]


@pytest.mark.parametrize("bad", [
    dict(points=torch.zeros(2, 3, 4, 5)),
    dict(points=torch.zeros(3, 2, dtype=torch.int64)),
    dict(points=torch.tensor([[float("nan"), 0.0]])),
    dict(eps=-1.0),
    dict(min_samples=0),
    dict(valid=torch.ones(5, dtype=torch.bool)),
])
def test_dbscan_bad_input_is_a_value_error(bad):
    args = dict(points=torch.zeros(3, 2), eps=1.0, min_samples=2, valid=None)
    args.update(bad)
    with pytest.raises(ValueError):
        cf.cluster.dbscan(**args)


def test_unknown_or_missing_backend_is_an_error():
    with pytest.raises(ValueError, match="unknown DBSCAN backend"):
        cf.cluster.dbscan(torch.zeros(3, 2), 1.0, 2, backend="hdbscan")
    if cluster.unavailable_reason("cuml") is not None:
        with pytest.raises(RuntimeError, match="cuml"):
            cf.cluster.dbscan(torch.zeros(3, 2), 1.0, 2, backend="cuml")


def test_status_lists_every_backend():
    status = {key: reason for key, reason in cf.backend_status().items() if key.startswith("dbscan:")}
    assert set(status) == {f"dbscan:{name}" for name in cluster.BACKENDS}
    assert status["dbscan:sklearn"] == status["dbscan:torch"] == "available"


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "native"])
def test_dbscan_on_cuda_matches_cpu(backend):
    if cluster.unavailable_reason(backend, torch.device("cuda")) is not None:
        pytest.skip(cluster.unavailable_reason(backend, torch.device("cuda")))
    for pts, valid, eps, ms in problems(seed=11):
        cpu = cf.cluster.dbscan(pts, eps, ms, valid=valid, backend="sklearn")
        gpu = cf.cluster.dbscan(pts.cuda(), eps, ms, valid=valid.cuda(), backend=backend)
        assert torch.equal(gpu.cpu(), cpu)


def test_labels_from_given_core_points_match_sklearn():
    """The cuML path keeps only cuML's core points and applies our border rule: with
    scikit-learn's core points, that rule must give scikit-learn's labels."""
    from cfcam_fast.core.cluster.torch_dbscan import labels_from_core

    for pts, valid, eps, ms in problems(seed=3):
        for b in range(pts.shape[0]):
            p = pts[b][valid[b]]
            if p.shape[0] == 0:
                continue
            fit = DBSCAN(eps=eps, min_samples=ms).fit(p.double().numpy())
            core = torch.zeros(1, p.shape[0], dtype=torch.bool)
            core[0, torch.as_tensor(fit.core_sample_indices_, dtype=torch.int64)] = True
            sq = cluster.pairwise_sq_distances(p[None])
            threshold = cluster.sq_threshold(torch.tensor([eps]))
            got = labels_from_core(sq, torch.tensor([p.shape[0]]), threshold, core)
            np.testing.assert_array_equal(got[0].numpy(), sklearn_labels(p, eps, ms))


# ------------------------------------------------------------------------------ per-problem parameters
@pytest.mark.parametrize("eps,min_samples,message", [
    (torch.tensor([0.5, 0.5]), 2, r"eps must be one value or a tensor of 3 \(one per problem\), got 2 values"),
    (torch.tensor([0.5] * 4), 2, r"eps must be one value or a tensor of 3 \(one per problem\), got 4 values"),
    (0.5, torch.tensor([2, 2]), r"min_samples must be one value or a tensor of 3 \(one per problem\), got 2 values"),
    (0.5, torch.tensor([], dtype=torch.int64), r"min_samples must be one value .*, got 0 values"),
])
def test_dbscan_wrong_length_parameters(eps, min_samples, message):
    with pytest.raises(ValueError, match=message):
        cf.cluster.dbscan(torch.randn(3, 10, 2), eps, min_samples)


def test_dbscan_per_problem_parameters_still_work():
    points = torch.randn(3, 10, 2)
    got = cf.cluster.dbscan(points, torch.tensor([0.3, 0.5, 0.8]), torch.tensor([2, 3, 2]))
    for b, (e, m) in enumerate([(0.3, 2), (0.5, 3), (0.8, 2)]):
        assert torch.equal(got[b], cf.cluster.dbscan(points[b], e, m))
