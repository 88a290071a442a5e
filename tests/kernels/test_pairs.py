"""The fused pairwise stage (``cfcam_fast.kernels.pairs``) against the package's paths and the oracles.

Without a GPU every kernel runs on CPU tensors in Triton's interpreter (``conftest.py``
sets ``TRITON_INTERPRET=1`` before Triton is imported); with one, compiled, on CUDA. Each
kernel is checked against the plain-PyTorch function beside it, step by step; the whole
stage against ``eps_and_labels_torch`` (exact distances in PyTorch), against
``cluster.PairDistances`` with the certified float32 plan (the CPU path it must equal bit
for bit) and the float64 plan, and against SciPy + NumPy + scikit-learn (``pdist``,
``np.percentile`` of the doubled list, ``DBSCAN(metric="precomputed")``). eps is compared
bit for bit, labels exactly. Knobs are small here (blocks of 32, 64 histogram bins, 64
collect slots) so that several tiles, several passes and the fallbacks all run on small
inputs; invalid slots hold NaN, so a mask that leaks shows. Every kernel is also compiled
for sm_90 in a subprocess (``pairs_compile.py``).
"""
from __future__ import annotations

import inspect
import json
import math
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist, squareform
from sklearn.cluster import DBSCAN

from cfcam_fast import cluster
from cfcam_fast.core import formulas
from cfcam_fast.core.cluster import certified
from cfcam_fast.core.cluster.distances import exact_sq_distances
from cfcam_fast.kernels import pair_bounds, pair_labels, pair_select, pairs
from cfcam_fast.kernels._launch import interpreted
from cfcam_fast.plan import Plan

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.skipif(DEVICE.type == "cpu" and not interpreted(),
                                reason="no CUDA device and Triton was not imported under TRITON_INTERPRET=1")
SMALL = dict(block=32, hist_bins=64, collect_capacity=64, sample_size=256)
COMPILER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pairs_compile.py")

KINDS = ("gauss", "chain", "duplicates", "copies", "lattice", "dead", "mostly-dead", "noise", "mixed", "tiny",
         "huge", "overflow")


def make_points(kind: str, B: int, n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """float32 ``[B, n, d]`` of one kind (see the module docstring of ``tests/test_certified.py``
    for most of them)."""
    x = torch.randn(B, n, d, generator=gen, dtype=torch.float64)
    if kind == "gauss":  # a few clusters
        centers = torch.randn(B, 4, d, generator=gen, dtype=torch.float64) * 4
        x = centers.gather(1, torch.randint(0, 4, (B, n, 1), generator=gen).expand(-1, -1, d)) + x
    elif kind == "chain":  # two blobs joined only through a chain of points 0.15 apart, shuffled
        third = n // 3
        links = n - 2 * third
        out = x * (0.3 / d ** 0.5)  # blobs of radius about 0.3 in any dimension
        out[:, third:2 * third, 0] += 0.15 * (links + 1)
        out[:, 2 * third:] = 0.0
        out[:, 2 * third:, 0] = 0.15 * torch.arange(1, links + 1, dtype=torch.float64)
        x = out[:, torch.randperm(n, generator=gen)]
    elif kind == "duplicates":  # one nonzero point, n times: every distance 0, eps at the floor
        x = x[:, :1].abs().expand(B, n, d) + 1.0
    elif kind == "copies":  # half the points copies of three, some with -0.0 for 0.0
        x = x.relu()
        copies = torch.randn(B, 3, d, generator=gen, dtype=torch.float64).relu()
        pick = torch.randint(0, 3, (B, n // 2), generator=gen)
        x[:, : n // 2] = copies.gather(1, pick[:, :, None].expand(-1, -1, d))
        x[:, : n // 4] = torch.where(x[:, : n // 4] == 0, -0.0, x[:, : n // 4])
    elif kind == "lattice":  # few distinct distances: huge tie groups, pairs exactly at eps
        x = torch.randint(0, 3, (B, n, d), generator=gen).double()
    elif kind == "dead":  # ReLU activations, a third of the points all zero
        x = x.relu() * (torch.rand(B, n, 1, generator=gen) > 1 / 3)
    elif kind == "mostly-dead":  # 85% all zero: eps inside the zeros, at the floor
        x = x.relu() * (torch.rand(B, n, 1, generator=gen) > 0.85)
    elif kind == "noise":  # uniform in a cube (the tests give it a min_samples nothing reaches)
        x = torch.rand(B, n, d, generator=gen, dtype=torch.float64)
    elif kind == "mixed":  # norms over twelve orders of magnitude
        x = x * torch.logspace(-6, 6, n, dtype=torch.float64)[torch.randperm(n, generator=gen)][None, :, None]
    elif kind == "tiny":  # float32 squares underflow to subnormals or zero
        x = x * 2.0 ** -70
    elif kind == "huge":  # float32 squares near the top of the range
        x = x * 2.0 ** 60
    elif kind == "overflow":  # float32 squares overflow: every approximate value is inf or NaN
        x = x * 2.0 ** 66
    return x.float()


def ragged(points: torch.Tensor, gen: torch.Generator, full_first: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts per image (the first image full) and NaN in every slot past its count."""
    B, n, _ = points.shape
    counts = torch.randint(0, n + 1, (B,), generator=gen)
    if full_first:
        counts[0] = n
    points = points.clone()
    points[torch.arange(n)[None, :] >= counts[:, None]] = math.nan
    return points, counts


def run_fused(points, counts, q, floor, min_samples, **knobs):
    stage = pairs.FusedPairs(points.to(DEVICE), counts.to(DEVICE), q, floor.to(DEVICE), min_samples.to(DEVICE),
                             **(SMALL | knobs))
    eps, labels = stage.run()
    modes = stage.state[:, :, 5].cpu()
    safe = counts >= 2
    assert (modes[safe] == pair_select.DONE).all(), f"selection did not finish: modes {modes.tolist()}"
    return eps.cpu(), labels.cpu(), stage


def package_path(points, counts, q, floor, min_samples, distances: str):
    """From ``cluster.PairDistances`` as ``cluster_channels`` calls it: its two order
    statistics ``[B, 2]``, eps from them with a correctly rounded sqrt (``finalize_torch``:
    the package's own eps uses PyTorch's CPU sqrt, which is not, so it can sit one ulp off
    NumPy's), and its labels (with the package's own eps and threshold)."""
    plan = (Plan("torch", "native", "float32-certified", "native", "cpu") if distances == "certified"
            else Plan("torch", "torch", "float64", "torch", "cpu"))
    pd = cluster.PairDistances(points, plan)
    ranks, t = formulas.doubled_percentile_ranks(counts * (counts - 1) // 2, q)
    safe = counts >= 2
    values = pd._select(pd.matrix, torch.where(safe, counts, 2), ranks * safe[:, None]).clone()
    eps_rn, _ = pair_select.finalize_torch(values, t, counts, floor)
    eps = pd.eps(counts, q, floor)
    labels = pd.labels(counts, cluster.sq_threshold(eps.nan_to_num(0.0)), min_samples).clone()
    values[~safe] = 0.0
    return values, eps_rn, labels


def scipy_oracle(points, counts, q, floor, min_samples):
    """SciPy's ``pdist``, NumPy's percentile of the doubled list, scikit-learn's DBSCAN."""
    B, n, _ = points.shape
    eps = np.full(B, np.nan)
    labels = np.full((B, n), -1, dtype=np.int64)
    for b in range(B):
        c = int(counts[b])
        x = points[b, :c].double().numpy()
        dist = pdist(x)
        if c >= 2:
            eps[b] = max(np.percentile(np.concatenate([dist, dist]), q), float(floor[b]))
        if c > 0:
            radius = eps[b] if c >= 2 else 0.0
            square = squareform(dist) if c >= 2 else np.zeros((c, c))
            if radius <= 0:  # scikit-learn wants eps > 0: give it the relation d <= 0 itself
                square, radius = (square > 0).astype(np.float64), 0.5
            labels[b, :c] = DBSCAN(eps=radius, min_samples=int(min_samples[b]), metric="precomputed").fit(
                square).labels_
    return torch.from_numpy(eps), torch.from_numpy(labels)


def assert_same_eps(got, expected, what):
    assert torch.equal(got.isnan(), expected.isnan()), f"{what}: NaN pattern {got} vs {expected}"
    ok = ~got.isnan()
    assert torch.equal(got[ok].view(torch.int64), expected[ok].view(torch.int64)), \
        f"{what}: eps differs: {got.tolist()} vs {expected.tolist()}"


def assert_same_values(stage, values, counts, what):
    """The two order statistics, bit for bit (images with at least two points)."""
    safe = counts >= 2
    got = stage.values.cpu()
    assert torch.equal(got[safe].view(torch.int64), values[safe].view(torch.int64)), f"{what}: {got} vs {values}"


def min_samples_for(kind, counts, gen):
    if kind == "noise":
        return counts + 1  # nothing is core: all noise
    if kind == "chain":
        return torch.full_like(counts, 3)
    return torch.randint(1, 6, counts.shape, generator=gen).clamp(max=counts.clamp(min=1))


needs_native = pytest.mark.skipif(not certified.usable(torch.device("cpu")),
                                  reason="the compiled CPU ops (certified float32 path) are not built")


# --- the whole stage ------------------------------------------------------------------------


QUICK_KINDS = ("gauss", "dead", "overflow")  # the rest run under ``-m slow``


@needs_native
@pytest.mark.parametrize("kind,n,d", [
    pytest.param(kind, n, d, id=f"n{n}-d{d}-{kind}",
                 marks=() if kind in QUICK_KINDS and n == 70 else pytest.mark.slow)
    for n, d in [(70, 7), (41, 49)] for kind in KINDS])
def test_equals_certified_path_torch_reference_and_scipy(kind, n, d):
    gen = torch.Generator().manual_seed(1000 * KINDS.index(kind) + n)
    points, counts = ragged(make_points(kind, 3, n, d, gen), gen)
    q = 25.0
    floor = torch.full((3,), 1e-5, dtype=torch.float64)
    ms = min_samples_for(kind, counts, gen)
    eps, labels, stage = run_fused(points, counts, q, floor, ms)
    values, e_pkg, l_pkg = package_path(points, counts, q, floor, ms, "certified")
    assert_same_values(stage, values, counts, f"{kind}: PairDistances certified")
    oracles = {"torch reference": pairs.eps_and_labels_torch(points, counts, q, floor, ms),
               "PairDistances certified": (e_pkg, l_pkg),
               "scipy/sklearn": scipy_oracle(points, counts, q, floor, ms)}
    for what, (e, lab) in oracles.items():
        assert_same_eps(eps, e, f"{kind}: {what}")
        if kind == "overflow" and what == "PairDistances certified":
            # The CPU certified op reads an approx value of inf (float32 squares overflow) with
            # a finite slack as "certainly above the threshold" and skips the float64 check:
            # its labels are not scikit-learn's here (CF-CAM never sees such points: it rescales
            # each image to a peak of 2^-21). This stage recomputes such pairs.
            continue
        assert torch.equal(labels, lab), f"{kind}: labels differ from {what}:\n{labels}\n{lab}"
    if kind == "noise":
        assert (labels == -1).all()
    if kind == "chain":  # both blobs and the chain form one cluster
        assert int(labels[0].max()) == 0 and int((labels[0] == 0).sum()) == n
    if kind in ("duplicates", "mostly-dead"):
        assert float(eps[0]) == 1e-5


@pytest.mark.parametrize("kind", ["lattice"] + [pytest.param(k, marks=pytest.mark.slow)
                                                for k in ("duplicates", "dead", "mostly-dead", "copies")])
def test_equals_float64_plan_where_its_product_is_exact(kind):
    """The float64 plan (one augmented float64 product) can differ from the exact sum of
    squares in the last bits; on small integers and zeros it is exact, so there the two
    paths must agree bit for bit."""
    gen = torch.Generator().manual_seed(7 + len(kind))
    x = make_points(kind, 3, 50, 5, gen)
    x = torch.round(x * 4)  # small integers: every product and sum exact in float64
    points, counts = ragged(x, gen)
    floor = torch.full((3,), 1e-5, dtype=torch.float64)
    ms = min_samples_for(kind, counts, gen)
    eps, labels, stage = run_fused(points, counts, 25.0, floor, ms)
    values, e64, l64 = package_path(points, counts, 25.0, floor, ms, "float64")
    assert_same_values(stage, values, counts, kind)
    assert_same_eps(eps, e64, kind)
    assert torch.equal(labels, l64)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 31, 32, 33, 64, 65])
def test_sizes_around_the_block_and_tiny_counts(n):
    """n below 2, at and around multiples of the block; counts 0, 1, 2 in one batch."""
    gen = torch.Generator().manual_seed(n)
    x = make_points("gauss", 4, n, 3, gen)
    counts = torch.tensor([n, min(n, 0), min(n, 1), min(n, 2)])
    x[torch.arange(n)[None, :] >= counts[:, None]] = math.nan
    floor = torch.full((4,), 1e-5, dtype=torch.float64)
    ms = torch.tensor([2, 1, 1, 2])
    eps, labels, _ = run_fused(x, counts, 25.0, floor, ms)
    e, lab = pairs.eps_and_labels_torch(x, counts, 25.0, floor, ms)
    assert_same_eps(eps, e, f"n={n}")
    assert torch.equal(labels, lab)
    assert eps[(counts < 2)].isnan().all()
    if n >= 1:  # one point with min_samples 1 is its own cluster, as in PairDistances
        assert int(labels[2, 0]) == 0


@needs_native
@pytest.mark.parametrize("q", [0.0, 25.0, 100.0]
                         + [pytest.param(q, marks=pytest.mark.slow) for q in (10.0, 50.0, 99.0)])
def test_percentiles_and_per_image_floors(q):
    gen = torch.Generator().manual_seed(int(q))
    points, counts = ragged(make_points("dead", 3, 45, 4, gen), gen)
    floor = torch.tensor([1e-5, 0.5, 1e-300], dtype=torch.float64)
    ms = torch.tensor([2, 3, 4])
    eps, labels, stage = run_fused(points, counts, q, floor, ms)
    values, e, lab = package_path(points, counts, q, floor, ms, "certified")
    assert_same_values(stage, values, counts, f"q={q}")
    assert_same_eps(eps, e, f"q={q}")
    assert torch.equal(labels, lab)


@needs_native
@pytest.mark.slow
@pytest.mark.parametrize("knobs", [
    dict(collect_capacity=16),                 # ties larger than the buffer: HIST down to one key
    dict(hist_bins=16, collect_capacity=16),   # 12 bins: many passes
    dict(first_grid="full", hist_bins=16),     # no sample: the worst case max_scan_passes is sized for
    dict(first_grid="full", collect_capacity=1024),
    dict(sample_size=16),                      # a poor sample: the bracket misses, later passes fix it
    dict(block=64, programs_per_image=1),      # one program per image, a 64-block
    dict(programs_per_image=5),
], ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("kind", ["lattice", "mostly-dead", "gauss"])
def test_fallback_paths_stay_exact(knobs, kind):
    """No buffer can overflow: when a bin holds more exact keys than ``collect_capacity``
    the selection keeps narrowing with histogram passes (to a single key if need be), and
    the fixed number of launches always suffices."""
    gen = torch.Generator().manual_seed(3 + len(kind))
    points, counts = ragged(make_points(kind, 2, 60, 3, gen), gen)
    floor = torch.full((2,), 1e-5, dtype=torch.float64)
    ms = torch.tensor([3, 2])
    eps, labels, stage = run_fused(points, counts, 25.0, floor, ms, **knobs)
    values, e, lab = package_path(points, counts, 25.0, floor, ms, "certified")
    assert_same_values(stage, values, counts, f"{kind} {knobs}")
    assert_same_eps(eps, e, f"{kind} {knobs}")
    assert torch.equal(labels, lab)


@needs_native
@pytest.mark.slow
def test_production_knobs_on_a_resnet_like_batch():
    """The default knobs (64-blocks, 1024 bins, 2048 slots, a 2048-pair sample: the
    constexprs a GPU runs) on ReLU features with dead channels, rescaled as the torch backend
    rescales them: the selection is done after two scans (HIST on the sample's grid, then
    COLLECT); the later scans return at once."""
    from bench.fused_pairs import make_batch

    x, counts, floor, ms = make_batch(2, 130, 49, seed=1)
    stage = pairs.FusedPairs(x.to(DEVICE), counts.to(DEVICE), 25.0, floor.to(DEVICE), ms.to(DEVICE))
    stage.prep()
    stage.sample()
    modes = []
    for _ in range(stage.passes):
        stage.scan()
        stage.update()
        modes.append(stage.state[:, :, 5].flatten().tolist())
    assert modes[0] == [pair_select.COLLECT] * 4 and modes[1] == [pair_select.DONE] * 4, modes
    stage.finalize()
    stage.bits()
    stage.label()
    values, e, lab = package_path(x, counts, 25.0, floor, ms, "certified")
    assert_same_values(stage, values, counts, "resnet-like")
    assert_same_eps(stage.eps.cpu(), e, "resnet-like")
    assert torch.equal(stage.labels.cpu(), lab)


def test_max_scan_passes():
    # Each HIST pass shrinks [L, H) to one bin of at most 2^sh keys, NB 2^sh >= width.
    assert pair_select.max_scan_passes(1024) == 8
    assert pair_select.max_scan_passes(16) > pair_select.max_scan_passes(64) > pair_select.max_scan_passes(4096)
    for bins in (16, 64, 1024, 4096):
        nb, w = bins - 4, pair_select.KEY_INF
        for _ in range(pair_select.max_scan_passes(bins) - 1):
            sh = 0
            while (w - 2) >> sh >= nb:
                sh += 1
            w = 1 << sh
        assert w == 1


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("PAIRS_EXAMPLES", "10")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 31 - 1), n=st.integers(0, 40), d=st.integers(1, 6),
       kind=st.sampled_from(["gauss", "lattice", "dead", "copies", "mixed"]),
       q=st.sampled_from([5.0, 25.0, 50.0, 90.0]), scale=st.integers(-40, 40))
def test_randomized_against_torch_reference(seed, n, d, kind, q, scale):
    gen = torch.Generator().manual_seed(seed)
    x = make_points(kind, 2, n, d, gen) * 2.0 ** scale  # an exact power-of-two rescaling
    points, counts = ragged(x, gen, full_first=False)
    floor = torch.full((2,), 1e-5 * 2.0 ** scale, dtype=torch.float64)
    ms = torch.randint(1, 5, (2,), generator=gen)
    eps, labels, _ = run_fused(points, counts, q, floor, ms)
    e, lab = pairs.eps_and_labels_torch(points, counts, q, floor, ms)
    assert_same_eps(eps, e, f"seed {seed}")
    assert torch.equal(labels, lab), f"seed {seed}"


# --- kernel by kernel against the PyTorch function beside it --------------------------------


@pytest.mark.parametrize("d", [1, 7, 49, 70])
def test_prep_matches_torch(d):
    gen = torch.Generator().manual_seed(d)
    x = make_points("mixed", 2, 37, d, gen)
    stage = pairs.FusedPairs(x.to(DEVICE), torch.tensor([37, 20]).to(DEVICE), 25.0, 0.0, torch.tensor([2, 2]))
    stage.prep()
    n64, slack = pair_bounds.prep_torch(x)
    assert torch.equal(stage.n64.cpu(), n64) and torch.equal(stage.slack.cpu(), slack)


def test_point_groups_are_exact_duplicates():
    gen = torch.Generator().manual_seed(5)
    points, counts = ragged(make_points("copies", 3, 40, 4, gen), gen)
    points[0, 30:] = 0.0  # all-zero points, with -0.0 among them
    points[0, 35:, 1] = -0.0
    gid = pair_bounds.point_groups(points, counts).long()
    for b in range(3):
        c = int(counts[b])
        x = points[b, :c].double()
        equal = (x[:, None, :] == x[None, :, :]).all(-1)
        same = gid[b, :c, None] == gid[b, None, :c]
        assert torch.equal(same, equal)  # sound, and complete without hash collisions
        assert (gid[b, :c] <= torch.arange(c)).all() and (gid[b, c:] < 0).all()


@pytest.mark.parametrize("use_sample", [True, False])
def test_sample_matches_torch(use_sample):
    gen = torch.Generator().manual_seed(11)
    points, counts = ragged(make_points("dead", 4, 50, 6, gen), gen)
    counts[1], counts[2] = 1, 2
    stage = pairs.FusedPairs(points.to(DEVICE), counts.to(DEVICE), 30.0, 0.0, torch.full((4,), 2), **SMALL,
                             first_grid="sample" if use_sample else "full")
    stage.sample()
    state, share, t = pair_select.sample_torch(points, counts, 30.0, SMALL["sample_size"], SMALL["hist_bins"] - 4,
                                         use_sample)
    assert torch.equal(stage.state.cpu(), state)
    assert torch.equal(stage.share.cpu(), share)
    assert torch.equal(stage.tfrac.cpu(), t)


@pytest.mark.parametrize("kind,knobs", [
    ("gauss", {}), ("lattice", {}), ("mostly-dead", {}), ("lattice", dict(collect_capacity=16)),
    ("gauss", dict(first_grid="full", hist_bins=16)),
])
def test_selection_steps_match_torch(kind, knobs):
    """After every scan the histograms equal the bin counts of the exact keys, and the
    collected keys the exact keys inside the interval; every update equals ``update_torch``."""
    gen = torch.Generator().manual_seed(17)
    points, counts = ragged(make_points(kind, 3, 50, 3, gen), gen)
    q = 25.0
    stage = pairs.FusedPairs(points.to(DEVICE), counts.to(DEVICE), q, 0.0, torch.full((3,), 2), **(SMALL | knobs))
    stage.prep()
    stage.sample()
    exact = exact_sq_distances(points)
    seen = set()
    for _ in range(stage.passes):
        state, share, values = stage.state.cpu().clone(), stage.share.cpu().clone(), stage.values.cpu().clone()
        seen |= set(state[:, :, 5].flatten().tolist())
        stage.scan()
        hist, collected = pair_select.scan_torch(exact, counts, state, share, stage.hist_bins, stage.capacity)
        assert torch.equal(stage.hist.cpu(), hist)
        for b in range(3):
            for r in range(2):
                if state[b, r, 5] == pair_select.COLLECT and not (r == 1 and share[b]):
                    got = stage.cand[b, r, : int(stage.ccount[b, r])].cpu().tolist()
                    assert sorted(got) == collected[b][r]
        stage.update()
        state2, share2, values2 = pair_select.update_torch(state, share, hist, collected, values, stage.hist_bins,
                                                     stage.capacity)
        assert torch.equal(stage.state.cpu(), state2) and torch.equal(stage.share.cpu(), share2)
        assert torch.equal(stage.values.cpu().view(torch.int64), values2.view(torch.int64))
        assert (stage.hist == 0).all() and (stage.ccount == 0).all()
    assert pair_select.FAIL not in seen and set(stage.state[:, :, 5].flatten().tolist()) == {pair_select.DONE}
    # The values are the exact order statistics.
    m = counts * (counts - 1) // 2
    ranks, _ = formulas.doubled_percentile_ranks(m, q)
    for b in range(3):
        c = int(counts[b])
        if c >= 2:
            upper = exact[b, :c, :c][torch.ones(c, c, dtype=torch.bool).triu(1)].sort().values
            assert torch.equal(stage.values[b].cpu(), upper[ranks[b]])
    if kind == "lattice" and knobs:
        assert pair_select.HIST in seen  # the small buffer forced histogram passes


def test_finalize_matches_torch():
    gen = torch.Generator().manual_seed(2)
    B = 64
    values = (torch.rand(B, 2, generator=gen, dtype=torch.float64) * 10.0 ** torch.randint(-300, 300, (B, 1),
              generator=gen)).sort(1).values
    values[:4] = torch.tensor([[0.0, 0.0], [0.0, 1e-320], [2.0, 2.0], [1e300, 1.7e308]])
    values[4, 1] = math.nan  # a failed selection stays NaN
    t = torch.rand(B, generator=gen, dtype=torch.float64)
    t[:8] = torch.tensor([0.0, 0.5, 0.25, 0.75, 0.5, 1 - 2 ** -53, 2 ** -60, 0.5])
    counts = torch.randint(0, 5, (B,), generator=gen)
    floor = torch.rand(B, generator=gen, dtype=torch.float64) * 10.0 ** torch.randint(-300, 2, (B,), generator=gen)
    stage = pairs.FusedPairs(torch.zeros(B, 2, 1).to(DEVICE), counts.to(DEVICE), 25.0, floor.to(DEVICE),
                             torch.full((B,), 2))
    stage.values.copy_(values)
    stage.tfrac.copy_(t)
    stage.finalize()
    eps, thr = pair_select.finalize_torch(values, t, counts, floor)
    assert_same_eps(stage.eps.cpu(), eps, "finalize")
    assert torch.equal(stage.thr.cpu().view(torch.int64), thr.view(torch.int64))


@pytest.mark.parametrize("kind", ["gauss", "lattice", "copies", "mixed", "overflow", "tiny"])
def test_bits_match_torch(kind):
    """Thresholds set to exact pair distances, so pairs lie exactly at them."""
    gen = torch.Generator().manual_seed(23)
    points, counts = ragged(make_points(kind, 3, 70, 5, gen), gen)
    exact = exact_sq_distances(points)
    thr = torch.stack([exact[b, 0, min(5, max(int(counts[b]) - 1, 0))].nan_to_num(0.0) for b in range(3)])
    stage = pairs.FusedPairs(points.to(DEVICE), counts.to(DEVICE), 25.0, 0.0, torch.full((3,), 2), **SMALL)
    stage.prep()
    stage.thr.copy_(thr)
    stage.bits()
    assert torch.equal(stage.bits_.cpu(), pair_labels.bits_torch(exact, counts, thr))


def graph(kind: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """A symmetric ``[n, n]`` bool relation without the diagonal."""
    if kind == "path":  # a long chain in a random order: many propagation rounds
        order = torch.randperm(n, generator=gen)
        adj = torch.zeros(n, n, dtype=torch.bool)
        adj[order[:-1], order[1:]] = True
    elif kind == "reversed-path":  # the smallest index at the far end of the chain
        adj = torch.zeros(n, n, dtype=torch.bool)
        idx = torch.arange(n - 1)
        adj[idx, idx + 1] = True
    elif kind == "sparse":
        adj = torch.rand(n, n, generator=gen) < 0.04
    elif kind == "cliques":
        group = torch.randint(0, 5, (n,), generator=gen)
        adj = group[:, None] == group[None, :]
    elif kind == "complete":
        adj = torch.ones(n, n, dtype=torch.bool)
    else:
        adj = torch.zeros(n, n, dtype=torch.bool)
    adj = adj | adj.t()
    return adj & ~torch.eye(n, dtype=torch.bool)


@pytest.mark.parametrize("kind", ["path", "reversed-path", "sparse", "cliques", "complete", "empty"])
def test_label_kernel_matches_torch_and_sklearn(kind):
    gen = torch.Generator().manual_seed(31)
    B, n = 4, 100
    counts = torch.tensor([n, 77, 1, 0])
    adj = torch.stack([graph(kind, n, gen) for _ in range(B)])
    valid = torch.arange(n)[None, :] < counts[:, None]
    adj &= valid[:, :, None] & valid[:, None, :]
    bits = pair_labels.pack_bits_torch(adj)
    ms = torch.tensor([2, 3, 1, 2]) if kind != "sparse" else torch.tensor([1, 2, 3, 4])
    stage = pairs.FusedPairs(torch.zeros(B, n, 1).to(DEVICE), counts.to(DEVICE), 25.0, 0.0, ms.to(DEVICE))
    stage.bits_.copy_(bits)
    stage.label()
    got = stage.labels.cpu()
    assert torch.equal(got, pair_labels.labels_from_bits_torch(bits, counts, ms))
    for b in range(B):
        c = int(counts[b])
        if c:
            dist = (~adj[b, :c, :c]).double().numpy()
            np.fill_diagonal(dist, 0.0)
            expected = DBSCAN(eps=0.5, min_samples=int(ms[b]), metric="precomputed").fit(dist).labels_
            np.testing.assert_array_equal(got[b, :c].numpy(), expected)
        assert (got[b, c:] == -1).all()


@pytest.mark.parametrize("kind", ["gauss", "mixed", "tiny", "huge", "overflow", "copies", "dead"])
@pytest.mark.parametrize("d", [3, 49, 70])
def test_enclosure_holds_the_exact_distance(kind, d):
    """The certificate: every valid pair's exact D lies in [lo, hi], an interval at most
    2 E_ij wide (plus the float64 roundings of a +- E), and pairs known exactly have lo = hi = D."""
    gen = torch.Generator().manual_seed(d + len(kind))
    points, counts = ragged(make_points(kind, 2, 48, d, gen), gen)
    lo, hi = (v.cpu() for v in pairs.enclosures(points.to(DEVICE), counts.to(DEVICE)))
    exact = exact_sq_distances(points)
    bound = pair_bounds.enclosure_bound_torch(points)
    valid = torch.arange(48)[None, :] < counts[:, None]
    pair = valid[:, :, None] & valid[:, None, :]
    assert ((lo <= exact) & (exact <= hi))[pair].all()
    finite = pair & torch.isfinite(hi)
    assert ((hi - lo) <= 2 * bound + 2.0 ** -50 * hi)[finite].all()  # + the roundings of a +- E
    zero = (points.double().nan_to_num(1.0) == 0).all(-1)
    gid = pair_bounds.point_groups(points, counts)
    known = pair & (zero[:, :, None] | zero[:, None, :] | (gid[:, :, None] == gid[:, None, :]))
    assert torch.equal(lo[known], exact[known]) and torch.equal(hi[known], exact[known])
    if kind == "overflow":
        assert not torch.isfinite(hi[pair & ~known]).any()


# --- no host synchronisation, fixed launches -----------------------------------------------


def test_launches_are_fixed_and_the_stage_never_reads_the_device():
    """The launch sequence does not depend on the data, and the code of the stage holds
    none of the calls that wait for the device (``.item()``, ``.tolist()``, ``int()`` or
    ``bool()`` of a tensor, ``nonzero``, a copy to the CPU) or copy from pageable host memory
    (``torch.tensor``, ``torch.as_tensor``: a CUDA graph capture refuses them)."""
    gen = torch.Generator().manual_seed(1)
    launches = set()
    for kind in ("gauss", "mostly-dead", "lattice"):
        points, counts = ragged(make_points(kind, 2, 40, 3, gen), gen)
        _, _, stage = run_fused(points, counts, 25.0, torch.full((2,), 1e-5, dtype=torch.float64),
                                torch.tensor([2, 3]))
        launches.add(stage.launches)
    assert launches == {5 + 2 * pair_select.max_scan_passes(SMALL["hist_bins"])}
    code = "".join(inspect.getsource(f) for f in (pairs.FusedPairs, pairs.fused_eps_and_labels,
                                                   pair_bounds.point_groups, pairs.upper_tiles))
    for pattern in (r"\.item\(", r"\.tolist\(", r"\bint\(", r"\bbool\(", r"nonzero", r"\.cpu\(", r"\.numpy\(",
                    r"synchronize", r"\bfloat\(", r"torch\.tensor\(", r"as_tensor\("):
        assert not re.search(pattern, code), f"{pattern} in the stage's code"


@pytest.mark.gpu
def test_no_host_synchronisation_on_cuda():
    """On a GPU: the stage runs under ``set_sync_debug_mode("error")`` and equals the
    certified CPU path for a ResNet-50-like batch."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1536, 49, generator=gen).relu() * 2.0 ** -22
    counts = torch.randint(1400, 1537, (8,), generator=gen)
    x[torch.arange(1536)[None, :] >= counts[:, None]] = math.nan
    floor = torch.full((8,), 1e-5 * 2.0 ** -21, dtype=torch.float64)
    ms = (counts * 0.05).long().clamp(min=2)
    xc, cc, fc, mc = (v.cuda() for v in (x, counts, floor, ms))
    pairs.fused_eps_and_labels(xc, cc, 25.0, fc, mc)  # compile first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        eps, labels = pairs.fused_eps_and_labels(xc, cc, 25.0, fc, mc)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    _, e, lab = package_path(x, counts, 25.0, floor, ms, "certified")
    assert_same_eps(eps.cpu(), e, "cuda")
    assert torch.equal(labels.cpu(), lab)


# --- compiled for the H100 ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled_for_h100() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, COMPILER], env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        if "ModuleNotFoundError" in done.stderr or "ptxas" in done.stderr.lower():
            pytest.skip(f"cannot compile for CUDA here: {done.stderr.strip().splitlines()[-1]}")
        raise AssertionError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


KERNELS = ("prep", "sample", "scan", "update", "finalize", "bits", "label")


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_compiles_for_h100(kernel, compiled_for_h100):
    assert compiled_for_h100[kernel] == "ok", compiled_for_h100[kernel]
    facts = compiled_for_h100[kernel + ":facts"]
    # Exact float64 sums of squares: a * b + c never contracted into one rounding.
    assert facts["fma.f64"] == 0, facts
    # The certificate assumes IEEE float32 products: no tensor-core (TF32) dot.
    assert facts["mma/wgmma"] == 0 and facts["tf32"] == 0, facts
    if kernel == "finalize":  # eps bit for bit: correctly rounded float64 square roots
        assert facts["sqrt.rn.f64"] > 0 and facts["sqrt.approx"] == 0, facts
    if kernel == "label":  # labels re-read after other threads wrote them
        assert facts["ld.volatile"] > 0, facts
    # float64 constants stay float64 literals (a float kernel argument would arrive as float32)
    wanted = {"prep": [pair_bounds.slack_coefficient(49), pair_bounds.slack_floor(49)],
              "sample": [0.25]}.get(kernel, [])
    for value in wanted:
        assert "0d" + struct.pack(">d", value).hex().upper() in facts["f64 literals"], (kernel, value)
