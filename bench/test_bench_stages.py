"""Each CF-CAM stage of the torch backend on captured ``[8, 2048, 7, 7]`` tensors.

Run with ``pytest bench/ --benchmark-only``. The distances, the DBSCAN labelling and the eps
selection are timed per available implementation, the certified float32 stage of the CPU
(``cluster.certified``) included; unavailable ones skip with the reason.
"""
import pytest
import torch

from cfcam_fast import CFCAMConfig, cluster
from cfcam_fast.core import native as _native
from cfcam_fast.core.backends.torch_backend import channel_weights, combine, importance_split
from cfcam_fast.core.cluster import certified
from cfcam_fast.core.selection import eps_from_sq_distances, pair_ranks_torch
from cfcam_fast.core.workspace import pair_buffer

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


def _approx(stages):
    """The certified CPU stage's float32 distances (skips where that stage cannot run)."""
    if not certified.usable(DEVICE):
        pytest.skip("the certified stage runs on the CPU with the native ops built")
    n = stages.points.shape[1]
    return certified.approx_sq_distances(stages.points, out=pair_buffer((stages.points.shape[0], n, n),
                                                                        torch.float32, DEVICE))


@pytest.mark.parametrize("precision", ["float64", "float32-certified"])
def test_pairwise_distances(benchmark, stages, precision):
    if precision == "float64":
        _timed(benchmark, cluster.pairwise_sq_distances, stages.points)
    else:
        out = _approx(stages)
        _timed(benchmark, certified.approx_sq_distances, stages.points, out)


@pytest.mark.parametrize("select", ["torch", "native", "certified"])
def test_eps_selection(benchmark, stages, select):
    if select == "certified":
        approx = _approx(stages)
        _timed(benchmark, eps_from_sq_distances, approx, stages.counts, CONFIG.eps_percentile, CONFIG.eps_floor,
               certified.pair_ranks(stages.points, approx))
        return
    if select == "native":
        reason = cluster.unavailable_reason("native", DEVICE)
        if reason:
            pytest.skip(reason)
    fn = _native.pair_ranks if select == "native" else pair_ranks_torch
    _timed(benchmark, eps_from_sq_distances, stages.dist, stages.counts, CONFIG.eps_percentile,
           CONFIG.eps_floor, fn)


@pytest.mark.parametrize("backend", cluster.BACKENDS + ("certified",))
def test_dbscan_labelling(benchmark, stages, backend):
    if backend == "certified":
        approx = _approx(stages)
        _timed(benchmark, certified.labels, stages.points, approx, stages.counts, stages.eps, stages.min_samples)
        return
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
