"""The comparator CAMs against CF-CAM and Grad-CAM: ResNet-18 ``layer4``, batch 8, 224 px.

Run with ``pytest bench/test_bench_comparators.py --benchmark-only``. Every row explains
the same random batch ``[8, 3, 224, 224]`` (random-init weights: only shapes matter for
timing). Smooth Grad-CAM++ runs its default 4 noisy copies (32 images forward and
backward, in chunks of 32). ScoreCAM needs ``1 + C`` forwards per image (513 here): its
row takes batch 8 on CUDA but one image on a CPU, where 4096 masked forwards would take
minutes a round.
"""
import pytest
import torch

import cfcam_fast as cf
from cfcam_fast import EigenCAM, NormGrad, ScoreCAM
from cfcam_fast.cams.gradcam import GradCAM
from cfcam_fast.cams.smooth_gradcam import SmoothGradCAMPlusPlus
from cfcam_fast.data.layers import resolve_layer
from cfcam_fast.data.models import load_model

from .conftest import DEVICE, sync

BATCH = 8
ROUNDS = 3


@pytest.fixture(scope="module")
def resnet18():
    model, layer_name = load_model("resnet18", device=DEVICE)
    return model, resolve_layer(model, layer_name)


@pytest.fixture(scope="module")
def batch():
    return torch.randn(BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(DEVICE)


def _timed(benchmark, fn, rounds: int = ROUNDS, warmup_rounds: int = 1):
    def call():
        out = fn()
        sync()
        return out
    benchmark.pedantic(call, rounds=rounds, warmup_rounds=warmup_rounds)


METHODS = {
    "cfcam": lambda model, layer: cf.CFCAM(model, [layer], backend="torch"),
    "gradcam": lambda model, layer: GradCAM(model, [layer]),
    "eigencam": lambda model, layer: EigenCAM(model, [layer]),
    "normgrad": lambda model, layer: NormGrad(model, [layer]),
    "smooth_gradcam_plusplus": lambda model, layer: SmoothGradCAMPlusPlus(
        model, [layer], generator=torch.Generator(DEVICE).manual_seed(0)),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_method(benchmark, resnet18, batch, method):
    cam = METHODS[method](*resnet18)
    _timed(benchmark, lambda: cam(batch))


def test_scorecam(benchmark, resnet18, batch):
    model, layer = resnet18
    images = batch if DEVICE.type == "cuda" else batch[:1]
    benchmark.extra_info["images"] = images.shape[0]
    cam = ScoreCAM(model, [layer], batch_size=64)
    if DEVICE.type == "cuda":
        _timed(benchmark, lambda: cam(images))
    else:
        _timed(benchmark, lambda: cam(images), rounds=1, warmup_rounds=0)
