"""The compiled ops of csrc/ (cfcam_fast._native) against NumPy and scikit-learn.

Every comparison is exact (no tolerance): selection returns one of the input values, and the
DBSCAN labels are integers computed from the same distance matrix scikit-learn is given
(``metric="precomputed"``), with eps passed at the matrix's own precision.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import POINT_KINDS, point_cloud
from sklearn.cluster import DBSCAN

from cfcam_fast.core import native

ROOT = Path(__file__).resolve().parents[2]
DTYPES = (torch.float32, torch.float64)


def _distances(x: np.ndarray) -> np.ndarray:
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))


cpu_only = pytest.mark.skipif(not native.available("cpu"),
                              reason=f"native CPU module: {native.status()['native-cpu']}")


def gpu(test):
    """Marks a test that compares the CUDA ops with the CPU ops (skipped without CUDA)."""
    marks = [pytest.mark.gpu,
             pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
             pytest.mark.skipif(not native.available("cuda"),
                                reason=f"native CUDA module: {native.status()['native-cuda']}")]
    for mark in marks:
        test = mark(test)
    return test


# ----------------------------------------------------------------------------- problem makers
def _ragged_batch(kinds: list[str], counts: list[int], dtype: torch.dtype, rng: np.random.Generator,
                  pad: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, n, n]`` distances whose unread parts (lower triangle, slots >= count) are NaN,
    so that any read outside the upper triangle of the valid prefix shows in the result."""
    n = max(counts) + pad
    dist = np.full((len(counts), n, n), np.nan)
    for b, (kind, c) in enumerate(zip(kinds, counts)):
        d = _distances(point_cloud(kind, c, rng))
        upper = np.triu(np.ones((c, c), dtype=bool), 1)
        dist[b, :c, :c] = np.where(upper, d, np.nan)
    return torch.tensor(dist, dtype=dtype), torch.tensor(counts, dtype=torch.int64)


def _triangle(dist: torch.Tensor, b: int, c: int) -> np.ndarray:
    return dist[b].numpy()[np.triu_indices(c, 1)]


def _symmetric(dist: torch.Tensor, b: int, c: int) -> np.ndarray:
    d = np.nan_to_num(dist[b, :c, :c].numpy(), nan=0.0)
    return d + d.T


def _sklearn_labels(dist: torch.Tensor, counts: torch.Tensor, eps: torch.Tensor,
                    min_samples: torch.Tensor) -> np.ndarray:
    out = np.full(dist.shape[:2], -1, dtype=np.int64)
    for b, c in enumerate(counts.tolist()):
        if c > 0:
            model = DBSCAN(eps=float(eps[b]), min_samples=int(min_samples[b]), metric="precomputed")
            out[b, :c] = model.fit(_symmetric(dist, b, c)).labels_
    return out


KINDS = POINT_KINDS


# ----------------------------------------------------------------------------- selection
@cpu_only
@pytest.mark.parametrize("dtype", DTYPES)
def test_pair_ranks_matches_sorted_triangle(dtype):
    rng = np.random.default_rng(1)
    for _ in range(6):
        counts = rng.integers(2, 40, size=5).tolist()
        dist, counts_t = _ragged_batch([KINDS[i % 5] for i in range(5)], counts, dtype, rng)
        pairs = [c * (c - 1) // 2 for c in counts]
        ranks = np.stack([np.r_[0, m - 1, rng.integers(0, m, 4)] for m in pairs])
        ranks[:, 2] = ranks[:, 3]  # a repeated rank
        out = native.pair_ranks(dist, counts_t, torch.tensor(ranks))
        assert out.dtype == dtype and out.shape == ranks.shape
        for b, c in enumerate(counts):
            np.testing.assert_array_equal(out[b].numpy(), np.sort(_triangle(dist, b, c))[ranks[b]])


@cpu_only
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["relu", "grid", "duplicates"])
def test_pair_ranks_large_problem_percentile_ranks(dtype, kind):
    """Problems large enough for the sampled bracket (over 65536 pairs), at the two ranks
    the 25th percentile needs, at the extremes, and with massive ties (grid, duplicates)."""
    rng = np.random.default_rng(2)
    counts = [420, 380]
    dist, counts_t = _ragged_batch([kind, kind], counts, dtype, rng)
    ranks = []
    for c in counts:
        m = c * (c - 1) // 2
        k = int(np.floor(0.25 * (2 * m - 1)))
        ranks.append([k // 2, (k + 1) // 2, 0, m - 1, m // 2, m // 2 + 1])
    out = native.pair_ranks(dist, counts_t, torch.tensor(ranks))
    for b, c in enumerate(counts):
        tri = _triangle(dist, b, c)
        np.testing.assert_array_equal(out[b].numpy(), np.partition(tri, ranks[b])[ranks[b]])


# ----------------------------------------------------------------------------- DBSCAN
@cpu_only
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_dbscan_labels_match_sklearn(dtype, kind):
    """eps is an order statistic of the pair distances (so pairs sit exactly at eps), as in
    docs/algorithm.md step 3, and min_samples spans all-core to all-noise."""
    rng = np.random.default_rng(4)
    for trial in range(4):
        counts = rng.integers(1, 60, size=6).tolist()
        counts[0] = 2
        dist, counts_t = _ragged_batch([kind] * 6, counts, dtype, rng)
        eps = np.zeros(6)
        for b, c in enumerate(counts):
            tri = np.sort(_triangle(dist, b, c))
            eps[b] = max(tri[rng.integers(0, tri.size)], 1e-5) if tri.size else 1.0
        eps_t = torch.tensor(eps, dtype=dtype)
        min_samples = torch.tensor([1, 2, 3, 5, 10, 80][trial:] + [2] * trial)
        labels = native.dbscan_labels(dist, counts_t, eps_t, min_samples)
        assert labels.dtype == torch.int64 and labels.shape == dist.shape[:2]
        np.testing.assert_array_equal(labels.numpy(), _sklearn_labels(dist, counts_t, eps_t, min_samples))


@cpu_only
@pytest.mark.parametrize("dtype", DTYPES)
def test_dbscan_labels_special_problems(dtype):
    rng = np.random.default_rng(5)
    kinds = ["relu", "relu", "blobs", "duplicates", "chain", "blobs"]
    counts = [0, 1, 30, 30, 30, 50]
    dist, counts_t = _ragged_batch(kinds, counts, dtype, rng)
    eps = torch.tensor([1.0, 1.0, 1e-9, 1e-5, 1.0, 1e3], dtype=dtype)  # noise, dups, chain, one
    min_samples = torch.tensor([1, 2, 2, 2, 3, 5])
    labels = native.dbscan_labels(dist, counts_t, eps, min_samples)
    expected = _sklearn_labels(dist, counts_t, eps, min_samples)
    np.testing.assert_array_equal(labels.numpy(), expected)
    assert (labels[0] == -1).all() and (labels[1] == -1).all()  # count 0 and count 1
    assert (labels[2, :30] == -1).all()  # all noise
    assert (labels[4, :30] == 0).all() and (labels[5, :50] == 0).all()  # a chain, one cluster


@cpu_only
def test_dbscan_border_point_takes_smallest_cluster():
    """A border point (x=5, index 0) within eps of a core point of each of two clusters
    takes the smaller cluster number, whichever cluster is listed first."""
    left, right = [2.5, 3.0, 3.5, 4.0], [6.0, 6.5, 7.0, 7.5]
    for order in ([left, right], [right, left]):
        x = np.array([5.0] + order[0] + order[1])[:, None]
        d = torch.tensor(_distances(x))[None].contiguous()
        labels = native.dbscan_labels(d, torch.tensor([9]), torch.tensor([1.0], dtype=torch.float64),
                                      torch.tensor([4]))
        expected = DBSCAN(eps=1.0, min_samples=4, metric="precomputed").fit(d[0].numpy()).labels_
        np.testing.assert_array_equal(labels[0].numpy(), expected)
        np.testing.assert_array_equal(labels[0].numpy(), [0, 0, 0, 0, 0, 1, 1, 1, 1])


# ----------------------------------------------------------------------------- bad input
def _good_args():
    dist = torch.rand(2, 5, 5, dtype=torch.float64)
    return dist, torch.tensor([5, 3]), torch.tensor([[0, 1], [0, 2]])


@cpu_only
@pytest.mark.parametrize("case, message", [
    ("dist_dtype", "dtype"), ("dist_int", "dtype"), ("counts_dtype", "dtype"), ("dist_2d", "dimensions"),
    ("not_square", "square"), ("counts_len", "rows"), ("ranks_rows", "rows"), ("ranks_1d", "dimensions"),
    ("non_contiguous", "contiguous"), ("device", "same device"), ("not_tensor", "torch.Tensor"),
    ("count_too_big", "outside"), ("rank_too_big", "outside"), ("rank_negative", "outside"),
])
def test_pair_ranks_bad_input_is_value_error(case, message):
    dist, counts, ranks = _good_args()
    if case == "dist_dtype":
        dist = dist.half()
    elif case == "dist_int":
        dist = dist.int()
    elif case == "counts_dtype":
        counts = counts.int()
    elif case == "dist_2d":
        dist = dist[0]
    elif case == "not_square":
        dist = dist[:, :4].contiguous()
    elif case == "counts_len":
        counts = counts[:1]
    elif case == "ranks_rows":
        ranks = ranks[:1]
    elif case == "ranks_1d":
        ranks = ranks[0]
    elif case == "non_contiguous":
        dist = dist.transpose(1, 2)
    elif case == "device":
        counts = counts.to("meta")
    elif case == "not_tensor":
        counts = [5, 3]
    elif case == "count_too_big":
        counts = torch.tensor([6, 3])
    elif case == "rank_too_big":
        ranks = torch.tensor([[0, 10], [0, 2]])
    elif case == "rank_negative":
        ranks = torch.tensor([[0, -1], [0, 2]])
    with pytest.raises(ValueError, match=message):
        native.pair_ranks(dist, counts, ranks)


@cpu_only
@pytest.mark.parametrize("case, message", [
    ("eps_dtype", "dtype"), ("eps_shape", "rows"), ("min_samples_dtype", "dtype"),
    ("min_samples_zero", "at least 1"), ("eps_negative", "non-negative"), ("eps_nan", "non-negative"),
    ("non_contiguous", "contiguous"), ("count_negative", "outside"),
])
def test_dbscan_labels_bad_input_is_value_error(case, message):
    dist, counts, _ = _good_args()
    eps, min_samples = torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([2, 2])
    if case == "eps_dtype":
        eps = eps.float()
    elif case == "eps_shape":
        eps = eps[:1]
    elif case == "min_samples_dtype":
        min_samples = min_samples.double()
    elif case == "min_samples_zero":
        min_samples = torch.tensor([2, 0])
    elif case == "eps_negative":
        eps = torch.tensor([0.5, -1.0], dtype=torch.float64)
    elif case == "eps_nan":
        eps = torch.tensor([float("nan"), 0.5], dtype=torch.float64)
    elif case == "non_contiguous":
        dist = dist.transpose(1, 2)
    elif case == "count_negative":
        counts = torch.tensor([-1, 3])
    with pytest.raises(ValueError, match=message):
        native.dbscan_labels(dist, counts, eps, min_samples)


# ----------------------------------------------------------------------------- registration
def test_status_reports_each_module():
    status = native.status()
    assert set(status) == {"native-cpu", "native-cuda"}
    assert all(isinstance(v, str) and v for v in status.values())
    assert native.available("cpu") == (status["native-cpu"] == "available")
    assert native.available(torch.device("cuda")) == (status["native-cuda"] == "available")
    assert not native.available("meta")


@cpu_only
def test_ops_are_registered_for_torch_compile():
    dist, counts, ranks = _good_args()
    eps, min_samples = torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([2, 2])
    torch.library.opcheck(torch.ops.cfcam_fast.pair_ranks.default, (dist, counts, ranks))
    torch.library.opcheck(torch.ops.cfcam_fast.dbscan_labels.default, (dist, counts, eps, min_samples))

    def eps_then_labels(d, c, r, m):
        e = native.pair_ranks(d, c, r)[:, 1].contiguous()
        return native.dbscan_labels(d, c, e, m)

    compiled = torch.compile(eps_then_labels, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(dist, counts, ranks, min_samples),
                               eps_then_labels(dist, counts, ranks, min_samples))


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_cuda_sources_compile_for_sm90(tmp_path):
    """The CUDA sources compile for the H100 (sm_90) even where no GPU can run them."""
    sources = sorted((ROOT / "csrc").glob("*.cu"))
    assert sources, "csrc/ holds no .cu files"
    jobs = [subprocess.Popen(["nvcc", "-c", "-std=c++17", "-O3", "-arch=sm_90", str(src),
                              "-o", str(tmp_path / (src.stem + ".o"))],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for src in sources]
    for src, job in zip(sources, jobs):
        output, _ = job.communicate(timeout=600)
        assert job.returncode == 0, f"nvcc failed on {src.name}:\n{output}"
        assert (tmp_path / (src.stem + ".o")).stat().st_size > 0


def _cuda_problem(dtype, seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 300, size=8).tolist() + [1, 0, 2, 400]
    kinds = [KINDS[i % 5] for i in range(len(counts))]
    dist, counts_t = _ragged_batch(kinds, counts, dtype, rng)
    return dist, counts_t, counts, rng


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_cuda_pair_ranks_match_cpu(dtype, seed):
    dist, counts_t, counts, rng = _cuda_problem(dtype, seed)
    pairs = [max(c * (c - 1) // 2, 1) for c in counts]
    ranks = torch.tensor(np.stack([np.r_[0, m - 1, rng.integers(0, m, 3)] for m in pairs]))
    keep = counts_t >= 2
    dist, counts_t, ranks = dist[keep].contiguous(), counts_t[keep], ranks[keep].contiguous()
    expected = native.pair_ranks(dist, counts_t, ranks)
    got = native.pair_ranks(dist.cuda(), counts_t.cuda(), ranks.cuda())
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0)  # a selection is exact


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_cuda_dbscan_labels_match_cpu(dtype, seed):
    dist, counts_t, counts, rng = _cuda_problem(dtype, seed)
    eps = torch.tensor([max(float(np.quantile(_triangle(dist, b, c), rng.uniform(0.05, 0.5))), 1e-5)
                        if c >= 2 else 1.0 for b, c in enumerate(counts)], dtype=dtype)
    min_samples = torch.tensor(rng.integers(1, 20, size=len(counts)))
    expected = native.dbscan_labels(dist, counts_t, eps, min_samples)
    got = native.dbscan_labels(dist.cuda(), counts_t.cuda(), eps.cuda(), min_samples.cuda())
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0)
