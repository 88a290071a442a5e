"""Each CF-CAM stage of the torch backend on captured ``[8, 2048, 7, 7]`` tensors.

Run with ``pytest bench/ --benchmark-only``. The DBSCAN labelling and the eps selection are
timed per available implementation; unavailable ones skip with the reason.
"""
import pytest

from cfcam_fast import CFCAMConfig, cluster
from cfcam_fast.backends.torch_backend import _native_select, channel_weights, combine, importance_split
from cfcam_fast.selection import eps_from_sq_distances, pair_ranks_torch

from .conftest import DEVICE, sync

CONFIG = CFCAMConfig()


def _timed(benchmark, fn, *args):
    def call():
        out = fn(*args)
        sync()
        return out
    return benchmark(call)


def test_importance_split(benchmark, stages):
    _timed(benchmark, importance_split, stages.A.flatten(2), CONFIG.importance_percentile)


def test_pairwise_distances(benchmark, stages):
    _timed(benchmark, cluster.pairwise_sq_distances, stages.points)


@pytest.mark.parametrize("select", ["torch", "native"])
def test_eps_selection(benchmark, stages, select):
    if select == "native":
        reason = cluster.unavailable_reason("native", DEVICE)
        if reason:
            pytest.skip(reason)
    fn = _native_select if select == "native" else pair_ranks_torch
    _timed(benchmark, eps_from_sq_distances, stages.dist, stages.counts, CONFIG.eps_percentile,
           CONFIG.eps_floor, fn)


@pytest.mark.parametrize("backend", cluster.BACKENDS)
def test_dbscan_labelling(benchmark, stages, backend):
    reason = cluster.unavailable_reason(backend, DEVICE)
    if reason:
        pytest.skip(reason)
    _timed(benchmark, cluster.labels_from_distances, stages.dist, stages.counts, stages.eps,
           stages.min_samples, backend)


@pytest.mark.parametrize("filter_name", ["gaussian", "official"])
def test_channel_weights(benchmark, stages, filter_name):
    _timed(benchmark, channel_weights, stages.G, stages.labels, CONFIG.replace(filter=filter_name))


@pytest.mark.parametrize("weighting", ["softmax", "standardized", "linear"])
def test_combination(benchmark, stages, weighting):
    _timed(benchmark, combine, stages.A, stages.w, stages.labels, weighting, (224, 224))
