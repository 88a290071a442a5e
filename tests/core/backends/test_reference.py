"""The reference backend against docs/algorithm.md: hand-built cases, scikit-learn, SciPy, edge cases.

The reference is the oracle of every fast path, so these tests check it against things
computed independently: values worked out by hand, scikit-learn's DBSCAN, NumPy's
percentile on the explicit ordered-pair list and a loop-by-loop reading of the "official"
filter (the filters themselves are compared with SciPy and that reading in
tests/core/test_filters.py). Labels and channel weights are checked, not only maps
(docs/algorithm.md, "What the authors' defaults imply": the authors' map barely depends on the weights).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import official_filter_by_reading
from scipy import ndimage
from scipy.spatial.distance import pdist, squareform
from sklearn.cluster import DBSCAN

import cfcam_fast as cf
from cfcam_fast.core.backends import reference

# Float32 inputs, float64 arithmetic inside the reference, results stored as float32: the
# results agree with float64 hand computations to float32 rounding (~6e-8 relative), so
# 1e-6 relative leaves headroom and would still catch any formula error.
RTOL = 1e-6
ATOL = 1e-7


def explain(A, G, output_size=None, **config):
    """The reference on one image given as ``[C, H, W]`` arrays."""
    A = torch.as_tensor(np.asarray(A, dtype=np.float32))[None]
    G = torch.as_tensor(np.asarray(G, dtype=np.float32))[None]
    return cf.cfcam_explain(A, G, output_size, cf.CFCAMConfig(**config), backend="reference",
                            return_filtered=True)


# ---------------------------------------------------------------------------------------
# A hand-built image: 12 channels of 4x4 maps (16 pixels, pixel p at row p // 4, col p % 4).
#   important: I0, I1, I2 with norms 5, 6, 7 (spikes at pixels 5, 6, 7);
#   cluster "A": a = e0 and a + 0.1 e1, a + 0.1 e2, a + 0.1 e3 (norms 1 .. 1.005);
#   cluster "B": b = e8 and b + 0.1 e9, b + 0.1 e10;
#   noise: e12 and e14.
# Norms sorted: nine at ~1, then 5, 6, 7. tau = percentile_75 = sorted[8] + 0.25 * (5 -
# sorted[8]) ~ 2, so exactly I0, I1, I2 are important and |R| = 9.
# Distances in R: inside a cluster 0.1 (centre to perturbed: 3 in A + 2 in B = 5 pairs) or
# sqrt(0.02) (perturbed to perturbed: 3 in A + 1 in B = 4 pairs); every other pair is at
# least sqrt(2). 36 pairs, 72 ordered: NumPy's position 71 * 0.25 = 17.75 reads ordered
# elements 17 and 18, i.e. unordered sorted[8] = sqrt(0.02) and sorted[9] = sqrt(2), so
# eps = sqrt(0.02) + 0.75 * (sqrt(2) - sqrt(0.02)) ~ 1.096: every intra-cluster pair is a
# neighbour pair and no other pair is.
# min_samples = max(2, int(0.05 * 9)) = 2: every clustered channel is core, the two lone
# channels are noise. Cluster numbers follow the smallest core index: B (channel 1) is 0,
# A (channel 2) is 1.
# ---------------------------------------------------------------------------------------
PIXELS = 16


def e(p, scale=1.0):
    v = np.zeros(PIXELS)
    v[p] = scale
    return v


LAYOUT = [  # (role, activation vector, constant gradient value)
    ("I0", e(5, 5.0), 1.0),
    ("B", e(8), 0.3),
    ("A", e(0), 1.0),
    ("N", e(12), 9.0),
    ("A", e(0) + e(1, 0.1), 2.0),
    ("B", e(8) + e(9, 0.1), 0.6),
    ("I1", e(6, 6.0), -0.5),
    ("A", e(0) + e(2, 0.1), 3.0),
    ("N", e(14), -9.0),
    ("B", e(8) + e(10, 0.1), 0.9),
    ("A", e(0) + e(3, 0.1), 4.0),
    ("I2", e(7, 7.0), 2.0),
]
HAND_LABELS = [-2, 0, 1, -1, 1, 0, -2, 1, -1, 0, 1, -2]
HAND_A = np.stack([v.reshape(4, 4) for _, v, _ in LAYOUT]).astype(np.float32)
HAND_G = np.stack([np.full((4, 4), g) for _, _, g in LAYOUT]).astype(np.float32)
HAND_EPS = math.sqrt(0.02) + 0.75 * (math.sqrt(2) - math.sqrt(0.02))


def gaussian_mean_factor(n, sigma, truncate=4.0):
    """mean of the Gaussian-filtered n x n map of ones, from the taps, independently of
    SciPy: sum over inputs p of the taps that land inside, squared (separable), over n^2."""
    r = int(truncate * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    taps /= taps.sum()
    per_axis = sum(taps[i - p + r] for p in range(n) for i in range(n) if abs(i - p) <= r)
    return per_axis ** 2 / n ** 2


def hand_channel_weights(factor):
    """w_c: the gradient constant for important channels; for a cluster, the members' mean
    constant times the filter's mean factor on a constant map; 0 for noise."""
    w = np.zeros(12)
    for role in ("A", "B"):
        members = [i for i, (r, _, _) in enumerate(LAYOUT) if r == role]
        w[members] = np.mean([LAYOUT[i][2] for i in members]) * factor
    for i, (role, _, g) in enumerate(LAYOUT):
        if role.startswith("I"):
            w[i] = g
    return w


def hand_map(alpha):
    cam = np.maximum(np.tensordot(alpha, HAND_A.astype(np.float64), axes=1), 0.0)
    return cam / cam.max() if cam.max() > 0 else cam


def test_hand_built_clusters_eps_and_labels():
    res = explain(HAND_A, HAND_G)
    assert res.labels[0].tolist() == HAND_LABELS
    assert res.eps[0].item() == pytest.approx(HAND_EPS, rel=RTOL)


@pytest.mark.parametrize("sigma", [1.0, 0.5, 2.0])
def test_hand_built_gaussian_weights_alpha_and_map(sigma):
    res = explain(HAND_A, HAND_G, sigma=sigma)
    w = hand_channel_weights(gaussian_mean_factor(4, sigma))
    np.testing.assert_allclose(res.channel_weights[0].numpy(), w, rtol=RTOL, atol=ATOL)
    kept = np.array(HAND_LABELS) != -1
    alpha = np.zeros(12)
    alpha[kept] = np.exp(w[kept]) / np.exp(w[kept]).sum()
    np.testing.assert_allclose(res.weights[0].numpy(), alpha, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.maps[0].numpy(), hand_map(alpha), rtol=RTOL, atol=ATOL)
    # The filtered cluster means: f_k = Filter(constant map of the members' mean gradient).
    for k, members in ((0, [0.3, 0.6, 0.9]), (1, [1.0, 2.0, 3.0, 4.0])):
        expected = ndimage.gaussian_filter(np.full((4, 4), np.mean(members)), sigma, mode="constant")
        np.testing.assert_allclose(res.filtered[0][k].numpy(), expected, rtol=RTOL, atol=ATOL)


def test_hand_built_tiny_sigma_is_identity_filter():
    # sigma = 0.01: radius int(0.04 + 0.5) = 0, a single tap of 1: the cluster weight is the
    # members' mean gradient itself, A: 2.5, B: 0.6.
    res = explain(HAND_A, HAND_G, sigma=0.01)
    w = res.channel_weights[0].numpy()
    assert w[[2, 4, 7, 10]] == pytest.approx([2.5] * 4, rel=RTOL)
    assert w[[1, 5, 9]] == pytest.approx([0.6] * 3, rel=RTOL)


def test_hand_built_official_weights():
    # A constant g has g - mean(g) = 0, so Rg = 1 and K = S / (sum(S) + 1e-6); the filtered
    # mean is g times the mean, over outputs, of the K taps that land inside the map.
    u = np.arange(4)[:, None] - 2.0
    v = np.arange(4)[None, :] - 2.0
    S = np.exp(-(u ** 2 + v ** 2) / 50.0)
    K = S / (S.sum() + 1e-6)
    inside = sum(K[a, b] for y in range(4) for x in range(4) for a in range(4) for b in range(4)
                 if 0 <= y + a - 1 < 4 and 0 <= x + b - 1 < 4)
    res = explain(HAND_A, HAND_G, filter="official")
    np.testing.assert_allclose(res.channel_weights[0].numpy(), hand_channel_weights(inside / 16),
                               rtol=RTOL, atol=ATOL)


def test_hand_built_linear_weighting_relu_and_upsampling():
    # weighting="linear": alpha = w; I1's w = -0.5 makes pixel 6 negative (-3), cut by ReLU.
    res = explain(HAND_A, HAND_G, output_size=(8, 12), weighting="linear")
    w = hand_channel_weights(gaussian_mean_factor(4, 1.0))
    w[np.array(HAND_LABELS) == -1] = 0.0
    np.testing.assert_allclose(res.weights[0].numpy(), w, rtol=RTOL, atol=ATOL)
    cam = np.maximum(np.tensordot(w, HAND_A.astype(np.float64), axes=1), 0.0)
    assert cam[1, 2] == 0.0  # pixel 6
    up = F.interpolate(torch.from_numpy(cam)[None, None], size=(8, 12), mode="bilinear",
                       align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(res.maps[0].numpy(), up / up.max(), rtol=RTOL, atol=ATOL)


def test_hand_built_standardized_weighting():
    res = explain(HAND_A, HAND_G, weighting="standardized")
    w = hand_channel_weights(gaussian_mean_factor(4, 1.0))
    kept = np.array(HAND_LABELS) != -1
    z = (w[kept] - w[kept].mean()) / w[kept].std()
    alpha = np.zeros(12)
    alpha[kept] = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(res.weights[0].numpy(), alpha, rtol=RTOL, atol=ATOL)


def test_eps_tie_counts_as_neighbour():
    # eps_percentile=0 makes eps the smallest distance itself, so one pair sits exactly at
    # eps; "<= eps" (scikit-learn) makes that pair a cluster. Channels 0..3 on a line at
    # 0, 1, 3, 6 (distinct gaps 1, 2, 3); channels 4 and 5 are important (norms 20, 30).
    A = np.zeros((6, 2, 2), np.float32)
    A[:4, 0, 0] = [0.0, 1.0, 3.0, 6.0]
    A[4, 1, 1], A[5, 1, 1] = 20.0, 30.0
    res = explain(A, np.zeros_like(A), eps_percentile=0.0)
    assert res.eps[0].item() == 1.0
    assert res.labels[0].tolist() == [0, 0, -1, -1, -2, -2]


def test_border_channel_takes_the_smallest_cluster_number():
    # Nine channels in R whose only non-zero pixel holds a position on a line:
    # Y = {2, 2, 2, 1} (channels 0-3), B = 0 (channel 5), X = {-1, -2, -2, -2} (channels 6-9);
    # three important channels (pixel 1 = 10, 11, 12). Distances: 6 zeros, 8 ones, the rest
    # >= 2, so eps = percentile_25 of the 72 ordered pairs (elements 17 and 18, both 1) = 1.
    # With min_samples = 4, B sees only {-1, 0, 1}: not core, but next to a core channel of
    # each cluster. Y holds the smallest core index (0) so it is cluster 0, X is 1, and B
    # takes the smaller number, 0.
    positions = {0: 2.0, 1: 2.0, 2: 2.0, 3: 1.0, 5: 0.0, 6: -1.0, 7: -2.0, 8: -2.0, 9: -2.0}
    A = np.zeros((12, 2, 2), np.float32)
    for c, x in positions.items():
        A[c, 0, 0] = x
    A[4, 0, 1], A[10, 0, 1], A[11, 0, 1] = 10.0, 11.0, 12.0
    res = explain(A, np.zeros_like(A), min_samples_floor=4)
    assert res.eps[0].item() == 1.0
    assert res.labels[0].tolist() == [0, 0, 0, 0, -2, 0, 1, 1, 1, 1, -2, -2]


# ---------------------------------------------------------------------------------------
# DBSCAN and eps against scikit-learn and NumPy on random clustered channels.
# ---------------------------------------------------------------------------------------
def clustered_channels(seed, C=40, H=5, W=5):
    """C channels: a quarter with large norms, the rest near a few random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, H * W))
    F_ = centres[rng.integers(0, 4, C)] + rng.normal(scale=rng.uniform(0.05, 0.6), size=(C, H * W))
    F_[: C // 4] *= 6.0
    rng.shuffle(F_)
    G = rng.normal(scale=1e-3, size=(C, H, W))
    return F_.reshape(C, H, W).astype(np.float32), G.astype(np.float32)


@pytest.mark.parametrize("fraction", [0.05, 0.2])
@pytest.mark.parametrize("seed", range(6))
def test_labels_match_sklearn(seed, fraction):
    # fraction 0.2 gives min_samples = 6 for |R| = 30: border and noise channels appear.
    A, G = clustered_channels(seed)
    res = explain(A, G, min_samples_fraction=fraction)
    F_ = A.reshape(A.shape[0], -1)
    norms = np.linalg.norm(F_, axis=1)
    rest = np.flatnonzero(norms < np.percentile(norms, 75))
    labels = res.labels[0].numpy()
    assert (labels == -2).sum() == A.shape[0] - rest.size
    # eps: the percentile of the explicit ordered-pair list (all i != j), as the authors take it.
    ordered = [np.linalg.norm(F_[i].astype(np.float64) - F_[j]) for i in rest for j in rest if i != j]
    eps = max(np.percentile(ordered, 25), 1e-5)
    assert res.eps[0].item() == pytest.approx(eps, rel=RTOL)
    min_samples = max(2, int(fraction * rest.size))
    dist = pdist(F_[rest].astype(np.float64))
    pre = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(squareform(dist)).labels_
    np.testing.assert_array_equal(labels[rest], pre)
    assert labels[rest].max() >= 0, "the case should form at least one cluster"
    # Euclidean DBSCAN on the points agrees wherever no distance sits at eps (a tie there
    # can go either way by rounding; docs/exactness.md: ties are decided on the precomputed distances).
    if np.abs(dist - eps).min() > 1e-6 * eps:
        euc = DBSCAN(eps=eps, min_samples=min_samples).fit(F_[rest].astype(np.float64)).labels_
        np.testing.assert_array_equal(labels[rest], euc)


# ---------------------------------------------------------------------------------------
# Filters (the reference's own use of them) and resizing.
# ---------------------------------------------------------------------------------------


def test_official_channel_weights_use_the_filter_of_the_cluster_mean():
    A, G = clustered_channels(3)
    res = explain(A, G, filter="official")
    labels = res.labels[0].numpy()
    G64 = G.astype(np.float64)
    for k in range(labels.max() + 1):
        members = labels == k
        w = official_filter_by_reading(G64[members].mean(axis=0)).mean()
        np.testing.assert_allclose(res.channel_weights[0].numpy()[members], w, rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("size", [(4, 4), (9, 13), (3, 2), (1, 1), (16, 5)])
def test_bilinear_resize_matches_torch(size):
    x = np.random.default_rng(2).random((4, 6))
    expected = F.interpolate(torch.from_numpy(x)[None, None], size=size, mode="bilinear",
                             align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(reference.bilinear_resize(x, size), expected, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------
# Edge cases of docs/algorithm.md.
# ---------------------------------------------------------------------------------------
def test_one_and_two_channels_skip_dbscan():
    # C=1: tau is its own norm, so it is important and R is empty.
    res = explain(np.ones((1, 3, 3)), np.ones((1, 3, 3)))
    assert res.labels[0].tolist() == [-2]
    assert math.isnan(res.eps[0].item())
    # C=2 with norms 1 < 2: tau = 1.75, channel 1 important, R = {0}: a lone channel, noise.
    A = np.stack([np.full((3, 3), 1 / 3), np.full((3, 3), 2 / 3)])
    res = explain(A, np.ones_like(A))
    assert res.labels[0].tolist() == [-1, -2]
    assert res.channel_weights[0].tolist() == [0.0, 1.0]
    assert res.weights[0].tolist() == [0.0, 1.0]
    np.testing.assert_allclose(res.maps[0].numpy(), np.ones((3, 3)), rtol=RTOL)


def test_equal_norms_are_all_important():
    A = np.stack([e(p).reshape(4, 4) for p in range(6)])
    res = explain(A, np.ones_like(A))
    assert res.labels[0].tolist() == [-2] * 6


@pytest.mark.parametrize("floor,expected", [(2, 0), (9, 0), (10, -1)])
def test_identical_channels_use_eps_floor(floor, expected):
    # 9 identical channels in R (all distances 0) and 3 important ones: eps is the floor
    # 1e-5 and the 9 form one cluster when min_samples <= 9.
    A = np.stack([np.full((3, 3), 0.5)] * 9 + [np.full((3, 3), s) for s in (5.0, 6.0, 7.0)])
    res = explain(A, np.ones_like(A), min_samples_floor=floor)
    assert res.eps[0].item() == pytest.approx(1e-5, rel=RTOL)
    assert res.labels[0].tolist() == [expected] * 9 + [-2] * 3


def test_standardized_with_equal_weights_is_uniform():
    # Zero gradients: every w_c is 0, std 0, so alpha is uniform over the kept channels.
    res = explain(HAND_A, np.zeros_like(HAND_G), weighting="standardized")
    kept = np.array(HAND_LABELS) != -1
    np.testing.assert_allclose(res.weights[0].numpy(), np.where(kept, 1 / kept.sum(), 0.0), rtol=RTOL)


@pytest.mark.parametrize("A", [np.zeros((5, 3, 3)), -np.ones((5, 3, 3)) * np.arange(1, 6)[:, None, None]])
def test_zero_map_stays_zero(A):
    res = explain(A, np.ones_like(A), output_size=(6, 6))
    assert torch.equal(res.maps, torch.zeros(1, 6, 6))


def test_batch_images_are_independent():
    # The reference goes image by image: a batch equals each image alone, exactly.
    pairs = [clustered_channels(s) for s in range(3)]
    A = torch.from_numpy(np.stack([a for a, _ in pairs]))
    G = torch.from_numpy(np.stack([g for _, g in pairs]))
    batch = cf.cfcam_explain(A, G, (10, 10), backend="reference")
    for b in range(3):
        alone = cf.cfcam_explain(A[b:b + 1], G[b:b + 1], (10, 10), backend="reference")
        for field in ("maps", "labels", "channel_weights", "weights", "eps"):
            assert torch.equal(getattr(batch, field)[b], getattr(alone, field)[0]), field
