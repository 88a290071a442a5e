"""Property-based tests (hypothesis): ``cf.cluster.dbscan`` against scikit-learn and the
whole CF-CAM core against the reference, on generated inputs.

Every test is derandomized (the same examples on every run) and sized for a 2-core CI.
The seeding fixture of conftest is function-scoped; it only seeds the global generators,
which these tests do not read (hypothesis draws, and tensors come from drawn seeds), so
the health check about function-scoped fixtures is suppressed.
"""
import numpy as np
import pytest
import torch
from helpers import structured
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sklearn.cluster import DBSCAN

import cfcam_fast as cf
import cfcam_fast.cluster as cluster
from cfcam_fast.core import backends

DBSCAN_BACKENDS = [b for b in ("sklearn", "torch", "native") if cluster.unavailable_reason(b) is None]
CORE_BACKENDS = [b for b in ("torch", "triton") if backends.unavailable_reason(b) is None]
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Dyadic coordinates: k / 4 with |k| <= 64, and chains of at most 12 steps of k / 64. All
# are multiples of 2^-6 below 2^5, so every square, product and sum of a few of them is
# exact in float64: every distance formula (sums of squared differences, the augmented
# product) gives the exact squared distance, and its correctly rounded square root.
DYADIC = st.integers(-64, 64).map(lambda k: k / 4)
FLOATS = st.floats(-100, 100, allow_nan=False, allow_infinity=False)


@st.composite
def point_set(draw, n: int, d: int, exact: bool) -> np.ndarray:
    """``n`` points in ``d`` dimensions: scattered, a few rows duplicated, or a chain."""
    coord = DYADIC if exact else FLOATS
    row = st.lists(coord, min_size=d, max_size=d)
    kind = draw(st.sampled_from(["scatter", "duplicates", "chain"]))
    event(f"points: {kind}")
    if kind == "duplicates":  # zero distances, and every distance repeated
        distinct = draw(st.lists(row, min_size=1, max_size=3))
        return np.array([distinct[draw(st.integers(0, len(distinct) - 1))] for _ in range(n)])
    if kind == "chain":  # evenly spaced on a line: with exact coordinates every gap ties
        start, step = np.array(draw(row)), np.array(draw(row))
        return start + np.arange(n)[:, None] * (step / 16 if exact else step)
    return np.array(draw(st.lists(row, min_size=n, max_size=n)))


@st.composite
def dbscan_batches(draw):
    """A ragged batch ``[B, N, d]`` float64 with its ``valid`` mask (invalid slots hold
    points to be ignored), per-problem ``eps`` and ``min_samples``, and whether the
    coordinates are exact."""
    B, N, d = draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 4))
    exact = draw(st.booleans())
    points = np.stack([draw(point_set(N, d, exact)) for _ in range(B)])
    valid = np.array(draw(st.lists(st.lists(st.booleans(), min_size=N, max_size=N), min_size=B, max_size=B)))
    eps = []
    for b in range(B):
        pairs = [(i, j) for i in np.flatnonzero(valid[b]) for j in np.flatnonzero(valid[b]) if i < j]
        at_pair = [float(np.sqrt(((points[b, i] - points[b, j]) ** 2).sum())) for i, j in pairs]
        # eps exactly at a pair distance (exact coordinates only: the distance is exact there).
        if exact and any(at_pair) and draw(st.booleans()):
            eps.append(draw(st.sampled_from([e for e in at_pair if e > 0])))
            event("eps at a pair distance")
        else:  # eps = 0 is documented as valid: only coincident points are neighbours
            eps.append(draw(st.just(0.0) | st.floats(1e-3, 50)))
    min_samples = draw(st.lists(st.integers(1, 6), min_size=B, max_size=B))
    return torch.from_numpy(points), torch.from_numpy(valid), eps, min_samples, exact


def sklearn_labels(points: torch.Tensor, eps: float, min_samples: int) -> np.ndarray:
    """scikit-learn on the float64 distances of the augmented product (as in tests/core/cluster/test_cluster.py).
    scikit-learn refuses eps = 0; the smallest positive float64 decides alike, since a
    positive distance is the square root of at least that, hence larger."""
    sq = cluster.pairwise_sq_distances(points[None])[0].clamp(min=0).triu(1)
    dist = (sq + sq.T).sqrt().numpy()
    eps = max(eps, np.nextafter(0.0, 1.0))
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(dist).labels_


def near_eps(points: torch.Tensor, eps: float) -> bool:
    """Whether a pair's squared distance lies within the augmented float64 product's error
    of ``eps^2``. That error is bounded relative to the squared norms, not to the distance
    (about (d + 2) 2^-53 (|x_i|^2 + |x_j|^2); 8 times that here): points far from the origin
    compared with their spacing make it much larger than 1e-16 of the distance."""
    x = points.numpy()
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    norms = (x * x).sum(-1)
    bound = 8 * (x.shape[1] + 2) * 2.0**-53 * (norms[:, None] + norms[None] + eps * eps)
    return bool((np.abs(d2 - eps * eps) <= bound)[np.triu_indices(len(x), 1)].any())


@pytest.mark.parametrize("backend", DBSCAN_BACKENDS)
@settings(max_examples=100, **SETTINGS)
@given(batch=dbscan_batches())
def test_dbscan_matches_sklearn(backend, batch):
    points, valid, eps, min_samples, exact = batch
    # float64 eps: torch.tensor(eps) alone would round it to float32.
    eps_t = torch.tensor(eps, dtype=torch.float64)
    labels = cf.cluster.dbscan(points, eps_t, torch.tensor(min_samples), valid=valid, backend=backend)
    assert labels.dtype == torch.int64 and labels.shape == valid.shape
    for b in range(points.shape[0]):
        assert (labels[b][~valid[b]] == -1).all()
        if not valid[b].any():
            continue
        mine = points[b][valid[b]]
        # "native" decides on sums of squared differences, the oracle on the augmented
        # product of this image alone, "torch" on the product of the padded batch, whose
        # rounding may differ (the GEMM's blocking follows the shapes and the thread count):
        # with inexact coordinates they may differ on a pair that close to eps.
        if backend != "sklearn" and not exact and near_eps(mine, eps[b]):
            event(f"{backend}: a pair within the product's error of eps, not compared")
            continue
        np.testing.assert_array_equal(labels[b][valid[b]].numpy(), sklearn_labels(mine, eps[b], min_samples[b]))


@st.composite
def captured(draw):
    """Activations and gradients ``[B, C, H, W]`` (float32) from a drawn seed: structured
    clusters, ReLU'd noise, small integers (tied distances) or copies of a few channels."""
    B, C = draw(st.integers(1, 2)), draw(st.integers(1, 24))
    H, W = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    kind = draw(st.sampled_from(["structured", "relu", "integers", "copies"]))
    event(f"activations: {kind}")
    if kind == "structured":
        A = structured(B, C, H, W, seed=draw(st.integers(0, 10**6)))
    elif kind == "relu":
        A = torch.randn(B, C, H, W, generator=gen).relu()
    elif kind == "integers":
        A = torch.randint(0, 3, (B, C, H, W), generator=gen).float()
    else:
        A = torch.rand(B, 3, H, W, generator=gen)[:, torch.randint(0, 3, (C,), generator=gen)]
    G = torch.randn(B, C, H, W, generator=gen) * 10.0 ** draw(st.integers(-6, 0))
    return A, G


CONFIGS = st.builds(cf.CFCAMConfig, filter=st.sampled_from(["gaussian", "official"]),
                    weighting=st.sampled_from(["softmax", "standardized", "linear"]),
                    dbscan_backend=st.sampled_from(DBSCAN_BACKENDS), sigma=st.sampled_from([0.5, 1.0, 2.0]),
                    importance_percentile=st.sampled_from([50.0, 75.0, 90.0]),
                    eps_percentile=st.sampled_from([0.0, 25.0, 60.0, 100.0]))


# Found by hypothesis: in one batch, an image with two channels to cluster and one with a
# single remaining channel (norms 1, 3, 2 and 1, 2, 2), with the "sklearn" DBSCAN backend.
LONE_CHANNEL = torch.tensor([[[[1.0, 0.0]], [[0.0, 3.0]], [[0.0, 2.0]]], [[[1.0, 0.0]], [[0.0, 2.0]], [[0.0, 2.0]]]])


@pytest.mark.parametrize("backend", CORE_BACKENDS)
@settings(max_examples=60, **SETTINGS)
@given(tensors=captured(), config=CONFIGS, output_size=st.sampled_from([None, (7, 9), (16, 16)]))
@example(tensors=(LONE_CHANNEL, torch.ones(2, 3, 1, 2)), config=cf.CFCAMConfig(dbscan_backend="sklearn"),
         output_size=None)
def test_core_matches_reference(backend, tensors, config, output_size):
    """Tolerances of tests/core/backends/test_torch_backend.py: labels identical (eps and membership both from
    float64 distances), maps (float32 sums normalised to [0, 1]) within 1e-5."""
    A, G = tensors
    ref = cf.cfcam_explain(A, G, output_size, config, backend="reference")
    got = cf.cfcam_explain(A, G, output_size, config, backend=backend)
    assert torch.equal(got.labels, ref.labels)
    torch.testing.assert_close(got.eps, ref.eps, rtol=1e-12, atol=0, equal_nan=True)
    assert got.maps.shape == ref.maps.shape and got.maps.dtype == torch.float32
    torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-5)
