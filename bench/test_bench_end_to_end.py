"""End to end through ResNet-50 at batch 1 (224 px): the floor, Grad-CAM and CF-CAM paths.

Run with ``pytest bench/ --benchmark-only``. Few rounds (the reference backend takes a
large fraction of a second per image on a CPU); ``cfcam-fast bench`` is the full runner.
"""
import pytest
import torch

import cfcam_fast as cf
import cfcam_fast.core.backends as core_backends
from cfcam_fast import cluster
from cfcam_fast.benchmark.paths import floor, full_backward
from cfcam_fast.cams.gradcam import GradCAM

from .conftest import DEVICE, sync

ROUNDS = 5


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(DEVICE)


def _timed(benchmark, fn):
    def call():
        out = fn()
        sync()
        return out
    benchmark.pedantic(call, rounds=ROUNDS, warmup_rounds=1)


def test_floor(benchmark, resnet50, image):
    model, layer = resnet50
    _timed(benchmark, lambda: floor(model, layer, image))


def test_full_backward(benchmark, resnet50, image):
    model, _ = resnet50
    _timed(benchmark, lambda: full_backward(model, image))


def test_gradcam(benchmark, resnet50, image):
    model, layer = resnet50
    cam = GradCAM(model, [layer])
    _timed(benchmark, lambda: cam(image))


def test_authors_algorithm(benchmark, resnet50, image):
    model, layer = resnet50
    cam = cf.CFCAM(model, [layer], config=cf.CFCAMConfig(filter="official"), backend="reference")
    _timed(benchmark, lambda: cam(image))


@pytest.mark.parametrize("dbscan", cluster.BACKENDS)
def test_cfcam_torch(benchmark, resnet50, image, dbscan):
    reason = cluster.unavailable_reason(dbscan, DEVICE)
    if reason:
        pytest.skip(reason)
    model, layer = resnet50
    cam = cf.CFCAM(model, [layer], config=cf.CFCAMConfig(dbscan_backend=dbscan), backend="torch")
    _timed(benchmark, lambda: cam(image))


@pytest.mark.skipif(DEVICE.type != "cuda", reason="the Triton kernels are benchmarked on CUDA only")
def test_cfcam_triton(benchmark, resnet50, image):
    reason = core_backends.unavailable_reason("triton", DEVICE)
    if reason:
        pytest.skip(reason)
    model, layer = resnet50
    cam = cf.CFCAM(model, [layer], backend="triton")
    _timed(benchmark, lambda: cam(image))
