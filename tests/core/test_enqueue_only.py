"""Calls that wait for nothing on the host until their result exists (CUDA), and the replayed
graphs of the core: static shapes equal the dynamic ones (CPU), the value checks are read
once at the end and still name the image, a repeated shape replays a graph with the same
result, and the Triton weights take a static bound on the cluster numbers.

The CUDA tests carry the ``gpu`` marker and skip without a device.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchvision
from helpers import POINT_KINDS, point_cloud

import cfcam_fast as cf
from cfcam_fast.core import graphs
from cfcam_fast.core.backends import torch_backend
from cfcam_fast.core.checks import check_captured, deferred_checks
from cfcam_fast.plan import resolve_plan


def _layer_like(kind: str, seed: int, C: int = 40, hw: int = 16) -> torch.Tensor:
    """Activations ``[1, C, 4, 4]`` whose below-split channels follow one of the DBSCAN point kinds."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.rand(1, C, hw, generator=gen) * 0.1
    points = torch.as_tensor(point_cloud(kind, C - C // 4, np.random.default_rng(seed)))
    n, d = points.shape[0], min(points.shape[1], hw)
    A[0, :n, :d] = points[:, :d].float()
    A[0, C - C // 4:] += 10.0  # the important quarter
    return A.reshape(1, C, 4, 4)


@pytest.mark.parametrize("kind", POINT_KINDS)
def test_static_shapes_in_chunks_equal_the_dynamic_shapes(kind):
    """The CUDA path's static bound (``max_remaining`` points per image) and host-side chunks
    give the labels and eps of the dynamic path, bit for bit (run here on the CPU)."""
    A = torch.cat([_layer_like(kind, seed) for seed in range(3)])
    config = cf.CFCAMConfig(memory_budget_bytes=1)  # one image per chunk
    plan = resolve_plan("torch", config, A.device)
    dynamic = torch_backend.cluster_channels(A, config, plan)
    static = torch_backend.cluster_channels(A, config, plan, static=True)
    assert torch.equal(static[0], dynamic[0])
    assert torch.equal(static[1].nan_to_num(-1.0), dynamic[1].nan_to_num(-1.0))


def test_checks_on_the_cpu_raise_at_once_even_when_deferred():
    A = torch.randn(2, 3, 4, 4)
    A[1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="batch index 1"), deferred_checks():
        check_captured(A, A)
        raise AssertionError("not reached: the CPU check reads the values at once")


@pytest.mark.parametrize("filter_name", ["gaussian", "official"])
def test_triton_weights_with_a_static_slot_bound_equal_the_synchronising_ones(filter_name):
    from cfcam_fast import kernels

    gen = torch.Generator().manual_seed(3)
    G = torch.randn(2, 12, 4, 4, generator=gen) * 1e-3
    labels = torch.tensor([[-2, -2, -2, 0, 0, 1, 1, 1, -1, 0, 2, 2], [-2, -2, -2, -1, 0, 0, 0, -1, -1, 0, 1, 1]])
    config = cf.CFCAMConfig(filter=filter_name)
    bound = kernels.channel_weights(G, labels, config, slots=12)
    torch.testing.assert_close(bound, kernels.channel_weights(G, labels, config), rtol=0, atol=0)
    with pytest.raises(ValueError, match="slots"):
        kernels.channel_weights(G, labels, config, slots=0)


def _resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval().cuda()


def _sync_warnings(call) -> int:
    """How many synchronising operations ``call()`` made (``torch.cuda.set_sync_debug_mode``)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["cfcam", "gradcam"])
def test_a_cuda_call_waits_for_the_host_once_at_the_end(method):
    model = _resnet18()
    x = torch.randn(4, 3, 224, 224, device="cuda")
    cam = cf.CFCAM(model, [model.layer4]) if method == "cfcam" else cf.GradCAM(model, [model.layer4])
    cam(x)  # one-time costs (Triton compilation, cuDNN choices) out of the count
    assert _sync_warnings(lambda: cam(x)) <= 1


@pytest.mark.gpu
def test_a_non_finite_image_on_cuda_is_still_named():
    model = _resnet18()
    x = torch.randn(3, 3, 224, 224, device="cuda")
    x[2] = float("nan")
    with pytest.raises(ValueError, match="batch index 2"):
        cf.CFCAM(model, [model.layer4])(x)


@pytest.mark.gpu
def test_a_repeated_shape_replays_a_graph_with_the_eager_result():
    graphs.clear()
    model = _resnet18()
    cam = cf.CFCAM(model, [model.layer4])
    x = torch.randn(2, 3, 224, 224, device="cuda")
    first = cam.explain(x)  # eager
    second = cam.explain(x)  # captures, then replays
    assert graphs.cached_keys() == 1
    fresh = torch.randn(2, 3, 224, 224, device="cuda")
    replayed = cam.explain(fresh)
    graphs.set_enabled(False)
    try:
        eager = cam.explain(fresh)
    finally:
        graphs.set_enabled(True)
    for got, ref in ((second, first), (replayed, eager)):
        assert torch.equal(got.labels, ref.labels)
        torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-6)
    assert _sync_warnings(lambda: cam(fresh)) <= 1
    graphs.clear()
    assert graphs.cached_keys() == 0
