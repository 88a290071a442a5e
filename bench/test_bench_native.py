"""The native ops (csrc/) against scikit-learn's DBSCAN on ResNet-50-like problems.

A problem is 1536 points of 49 dimensions (the channels left for clustering at ResNet-50's
last block, 7 x 7 maps), non-negative like ReLU activations, with eps = the 25th percentile
of the pair distances (docs/algorithm.md step 3) and min_samples = 76 (docs/algorithm.md step 4).

- ``sklearn``: ``DBSCAN(eps, min_samples).fit(points)``, eps already given.
- ``dbscan native``: ``cf.cluster.dbscan(points, eps, min_samples, backend="native")``, the
  same points and eps, distances included (on the CPU: the certified float32 stage).
- ``native cluster``: the whole clustering of CF-CAM, eps included, from the points: on the
  CPU the certified stage (float32 products, ``certified_pair_ranks``,
  ``certified_dbscan_labels``).
- ``select+label``: ``pair_ranks`` + ``dbscan_labels`` on given float64 distances (the
  "eps selection plus labelling" target), at batch 1 and 8 on the CPU, 64 on CUDA;
  and the certified pair on given float32 distances, on the CPU.

Run with ``pytest bench/test_bench_native.py --benchmark-only``; times are per call, so
divide batched rows by the batch size.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN

import cfcam_fast as cf
from cfcam_fast import cluster
from cfcam_fast.core import native
from cfcam_fast.core.cluster import certified
from cfcam_fast.plan import clustering_plan

POINTS, DIMS, MIN_SAMPLES, PERCENTILE = 1536, 49, 76, 25.0


def _problems(batch: int, seed: int = 0) -> torch.Tensor:
    """``[batch, 1536, 49]`` float64, ReLU of Gaussian noise."""
    rng = np.random.default_rng(seed)
    return torch.tensor(np.maximum(rng.normal(size=(batch, POINTS, DIMS)), 0.0))


def _eps_ranks(counts: torch.Tensor) -> torch.Tensor:
    """The two ranks among the unordered pairs that NumPy's linear percentile of the doubled
    (ordered-pair) list interpolates between (docs/exactness.md)."""
    pairs = counts * (counts - 1) // 2
    k = torch.floor(torch.tensor(PERCENTILE / 100.0, dtype=torch.float64) * (2 * pairs - 1).double()).long()
    return torch.stack([k // 2, (k + 1) // 2], dim=1).contiguous()


def _eps(dist: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    pairs = counts * (counts - 1) // 2
    k_float = (PERCENTILE / 100.0) * (2 * pairs - 1).to(dist.dtype)
    frac = k_float - torch.floor(k_float)
    low_high = native.pair_ranks(dist, counts, _eps_ranks(counts))
    return (low_high[:, 0] + frac * (low_high[:, 1] - low_high[:, 0])).clamp(min=1e-5).contiguous()


def _cluster(points: torch.Tensor) -> torch.Tensor:
    """Distances, eps and labels of a batch of problems, all on ``points``' device."""
    dist = torch.cdist(points, points).contiguous()
    counts = torch.full((points.shape[0],), points.shape[1], dtype=torch.int64, device=points.device)
    min_samples = torch.full_like(counts, MIN_SAMPLES)
    return native.dbscan_labels(dist, counts, _eps(dist, counts), min_samples)


def _certified(points: torch.Tensor) -> tuple[cluster.PairDistances, torch.Tensor]:
    """The native backend's certified CPU distances of ``points`` and the counts."""
    if not certified.usable(points.device):
        pytest.skip("the certified stage runs on the CPU with the native ops built")
    pairs = cluster.PairDistances(points, clustering_plan("native", points.device))
    return pairs, torch.full((points.shape[0],), points.shape[1], dtype=torch.int64)


def _select_and_label(pairs: cluster.PairDistances, counts: torch.Tensor) -> torch.Tensor:
    eps = pairs.eps(counts, PERCENTILE, 1e-5)
    return pairs.labels(counts, cluster.sq_threshold(eps), torch.full_like(counts, MIN_SAMPLES))


def _certified_cluster(points: torch.Tensor) -> torch.Tensor:
    """The CPU clustering of the native backend: float32 products, exact eps and labels."""
    return _select_and_label(*_certified(points))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _skip_unless(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not native.available(device):
        pytest.skip(f"native ops on {device.type}: {native.status()['native-' + device.type]}")


def test_sklearn_dbscan_given_eps(benchmark):
    points = _problems(1)
    dist = torch.cdist(points, points)
    eps = float(_eps(dist, torch.tensor([POINTS]))[0]) if native.available("cpu") else \
        float(np.percentile(torch.pdist(points[0]).numpy(), PERCENTILE))
    x = points[0].numpy()
    benchmark(lambda: DBSCAN(eps=eps, min_samples=MIN_SAMPLES).fit(x).labels_)


def test_dbscan_native_given_eps(benchmark):
    _skip_unless(torch.device("cpu"))
    points = _problems(1)
    pairs, counts = _certified(points)
    eps = float(pairs.eps(counts, PERCENTILE, 1e-5)[0])
    benchmark(lambda: cf.cluster.dbscan(points[0], eps, MIN_SAMPLES, backend="native"))


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("stage", ["float64", "certified"])
def test_native_cluster_with_distances(benchmark, batch, stage):
    _skip_unless(torch.device("cpu"))
    points = _problems(batch)
    benchmark(_certified_cluster if stage == "certified" else _cluster, points)


@pytest.mark.parametrize("device, batch", [("cpu", 1), ("cpu", 8), ("cuda", 64)])
def test_native_select_and_label(benchmark, device, batch):
    device = torch.device(device)
    _skip_unless(device)
    points = _problems(batch).to(device)
    dist = torch.cdist(points, points).contiguous()
    counts = torch.full((batch,), POINTS, dtype=torch.int64, device=device)
    min_samples = torch.full_like(counts, MIN_SAMPLES)

    def select_and_label():
        labels = native.dbscan_labels(dist, counts, _eps(dist, counts), min_samples)
        _sync(device)
        return labels

    benchmark(select_and_label)


@pytest.mark.parametrize("batch", [1, 8])
def test_certified_select_and_label(benchmark, batch):
    _skip_unless(torch.device("cpu"))
    pairs, counts = _certified(_problems(batch))
    benchmark(_select_and_label, pairs, counts)


def test_native_labels_agree_with_sklearn():
    """Not a timing: on these problems the native labels equal scikit-learn's on the same
    (precomputed) distances, so the timings above compare equal work."""
    _skip_unless(torch.device("cpu"))
    points = _problems(1, seed=1)
    dist = torch.cdist(points, points).contiguous()
    eps = _eps(dist, torch.tensor([POINTS]))
    labels = _cluster(points)[0].numpy()
    upper = np.triu(dist[0].numpy(), 1)  # the native op reads the upper triangle only
    expected = DBSCAN(eps=float(eps[0]), min_samples=MIN_SAMPLES, metric="precomputed").fit(upper + upper.T)
    np.testing.assert_array_equal(labels, expected.labels_)
    np.testing.assert_array_equal(_certified_cluster(points)[0].numpy(), expected.labels_)
