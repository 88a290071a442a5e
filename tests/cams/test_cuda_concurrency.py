"""Concurrent calls on one CUDA model behave like calls made one at a time: CF-CAM (eager,
then by replayed graphs), Grad-CAM and RealtimeCFCAM from several threads at once, each
result equal to the same call made alone. GPU tests (marker ``gpu``)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torchvision

import cfcam_fast as cf
from cfcam_fast.core import graphs

pytestmark = pytest.mark.gpu
THREADS = 4


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval().cuda()


def _inputs(count: int, batch: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(batch, 3, 224, 224, generator=gen).cuda() for _ in range(count)]


def _same(got: cf.CFCAMResult, ref: cf.CFCAMResult) -> None:
    assert torch.equal(got.labels, ref.labels)
    torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["cfcam", "gradcam"])
def test_threads_on_one_cuda_model_equal_calls_alone(method):
    model = _model()
    cam = cf.CFCAM(model, [model.layer4]) if method == "cfcam" else cf.GradCAM(model, [model.layer4])
    inputs = _inputs(2 * THREADS, 2)
    graphs.clear()
    alone = [cam.explain(x) for x in inputs]  # the second call of the shape captures a graph
    with ThreadPoolExecutor(THREADS) as pool:
        together = list(pool.map(cam.explain, inputs))
    for got, ref in zip(together, alone):
        if method == "cfcam":
            _same(got, ref)
        else:
            torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-6)
    graphs.clear()


def test_realtime_calls_from_threads_take_turns():
    model = _model()
    inputs = _inputs(2 * THREADS, 1)
    rt = cf.RealtimeCFCAM(model, model.layer4, inputs[0])
    alone = [rt.explain(x) for x in inputs]
    with ThreadPoolExecutor(THREADS) as pool:
        together = list(pool.map(rt.explain, inputs))
    for got, ref in zip(together, alone):
        _same(got, ref)
