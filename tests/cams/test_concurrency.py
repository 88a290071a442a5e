"""Concurrent calls: threads sharing one CAM object, or several CAM objects on one model, and
``RealtimeCFCAM`` called from several threads at once. Every call must return exactly the
maps it returns alone, and the model (a train-mode
model with BatchNorm, the case that corrupts statistics when forwards interleave with
another call's flag restore) must keep its parameters, buffers, flags and hooks.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torchvision
from helpers import assert_state_unchanged, hooks_left, images, model_state, needs_native, tiny_cnn

import cfcam_fast as cf

THREADS, CALLS = 4, 6


def _inputs(n, size, seed=10):
    return [images(batch=2, size=size, seed=seed + i) for i in range(n)]


def _run_threads(fns):
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(lambda fn: fn(), fns))


@pytest.mark.parametrize("method", ["cfcam", "gradcam", "gradcam++"])
def test_threads_share_one_cam_object(method):
    model = tiny_cnn().train()
    before = model_state(model)
    make = {"cfcam": lambda: cf.CFCAM(model, [model.features], backend="torch"),
            "gradcam": lambda: cf.GradCAM(model, [model.features]),
            "gradcam++": lambda: cf.GradCAMPlusPlus(model, [model.features])}[method]
    cam = make()
    xs = _inputs(THREADS * CALLS, size=16)
    alone = [cam(x) for x in xs]
    assert_state_unchanged(model, before)
    together = _run_threads([lambda x=x: cam(x) for x in xs])
    for i, (a, b) in enumerate(zip(alone, together)):
        assert torch.equal(a, b), f"call {i} differs from the same call made alone"
    assert_state_unchanged(model, before)
    assert hooks_left(model) == {}


def test_several_cam_objects_on_one_resnet18():
    """The reported case: a torchvision ResNet-18 in train mode, CF-CAM, Grad-CAM and
    Grad-CAM++ objects on it, all called from threads at once."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).train()
    before = model_state(model)
    cams = [cf.CFCAM(model, [model.layer4], backend="torch"), cf.GradCAM(model, [model.layer4]),
            cf.GradCAMPlusPlus(model, [model.layer3])]
    xs = _inputs(3, size=64)
    jobs = [(cam, x) for cam in cams for x in xs]
    alone = [cam(x) for cam, x in jobs]
    together = _run_threads([lambda c=c, x=x: c(x) for c, x in jobs])
    for (cam, _), a, b in zip(jobs, alone, together):
        assert torch.equal(a, b), f"{type(cam).__name__} differs under threads"
    assert_state_unchanged(model, before)
    assert hooks_left(model) == {}


def test_a_failing_call_does_not_disturb_the_others():
    model = tiny_cnn().train()
    before = model_state(model)
    cam = cf.CFCAM(model, [model.features], backend="torch")
    good = _inputs(6, size=16)
    alone = [cam(x) for x in good]

    def bad():
        with pytest.raises(ValueError, match="outside"):
            cam(good[0], targets=[10_000, 0])

    results = _run_threads([bad if i % 2 else (lambda x=good[i // 2]: cam(x)) for i in range(12)])
    maps = [r for r in results if r is not None]
    for a, b in zip(alone, maps):
        assert torch.equal(a, b)
    assert_state_unchanged(model, before)
    assert hooks_left(model) == {}


@needs_native
def test_realtime_concurrent_calls_equal_calls_made_alone():
    model = tiny_cnn()
    x = torch.randn(2, 3, 16, 16)
    rt = cf.RealtimeCFCAM(model, model.features, x, head=None)
    inputs = [torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    alone = [rt(v) for v in inputs]
    got = [None] * len(inputs)

    def work(i):
        got[i] = rt(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, g in zip(alone, got):
        assert torch.equal(a, g)
