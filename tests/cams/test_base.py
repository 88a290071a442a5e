"""``BaseCAM`` (``cams.base``), the contract of every CAM: ``[B, H, W]`` float32 maps in
``[0, 1]`` on the input's device, ``cam(x)`` equal to ``cam.explain(x).maps``, no hook left
by the ``with`` block, several target layers averaged then normalised again, the result of
a method without clusters, ``needs_gradients`` (forward-only methods run under
``torch.inference_mode()``) and the ``batch_size`` run option. Checked on CF-CAM (reference
backend) and on the comparison methods."""
import pytest
import torch
from helpers import COMPARATORS, cfcam_model, explain, hooks_left, images, tiny_cnn

from cfcam_fast import EigenCAM, ScoreCAM, SmoothGradCAMPlusPlus


@pytest.mark.parametrize("size", [(16, 16), (16, 20), (9, 13)])
def test_maps_shape_range_dtype_device(size):
    model, x = tiny_cnn(), torch.randn(2, 3, *size)
    with cfcam_model(model, [model.features]) as cam:
        maps = cam(x)
    assert maps.shape == (2, *size)
    assert maps.dtype == torch.float32 and maps.device == x.device
    assert torch.isfinite(maps).all() and maps.min() >= 0
    assert torch.equal(maps.amax((1, 2)), torch.ones(2))  # each image's map peaks at 1


def test_float64_model_gives_float32_maps():
    model, x = tiny_cnn().double(), images().double()
    with cfcam_model(model, [model.features]) as cam:
        assert cam(x).dtype == torch.float32


def test_call_and_explain_agree_and_the_with_block_leaves_no_hook():
    model, x = tiny_cnn(), images()
    with cfcam_model(model, model.features) as cam:  # a single module is accepted too
        maps = cam(x, [0, 1, 2])
        assert hooks_left(model) == {}
        res = cam.explain(x, [0, 1, 2])
    assert torch.equal(maps, res.maps)
    assert hooks_left(model) == {}


def test_several_layers_are_averaged_then_renormalised():
    model, x = tiny_cnn(), images()
    layers = [model.stem, model.features]
    singles = []
    for layer in layers:
        with cfcam_model(model, [layer]) as cam:
            singles.append(cam(x, [0, 1, 2]))
    with cfcam_model(model, layers) as cam:
        maps = cam(x, [0, 1, 2])
    mean = (singles[0] + singles[1]) / 2
    expected = mean / mean.amax((1, 2), keepdim=True)
    # float32 division order: a few ulps of a value in [0, 1].
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-6)
    assert torch.equal(maps.amax((1, 2)), torch.ones(3))


@pytest.mark.gpu
def test_maps_on_the_input_device_cuda():
    model, x = tiny_cnn().cuda(), images().cuda()
    res = explain(model, x)
    assert res.maps.device == x.device and res.class_idx.device == x.device


@pytest.mark.parametrize("method", COMPARATORS)
def test_two_layers_average_their_maps(method):
    model, x = tiny_cnn(), images(batch=2)
    layers = [model.stem, model.features]
    torch.manual_seed(9)
    both = method(model, layers)(x)
    single = []
    for layer in layers:
        torch.manual_seed(9)
        single.append(method(model, [layer])(x))
    mean = (single[0] + single[1]) / 2
    expected = mean / mean.flatten(1).amax(1)[:, None, None]
    # BaseCAM's rule on the same per-layer maps, which each come from their own batched passes
    # here and from one shared pass there: float32 rounding, 1e-6 on [0, 1] maps.
    assert torch.allclose(both, expected, atol=1e-6)


@pytest.mark.parametrize("method", COMPARATORS)
def test_result_fields(method):
    model, x = tiny_cnn(), images(batch=2)
    res = method(model, [model.features]).explain(x)
    assert res.maps.shape == (2, 16, 16) and res.maps.dtype == torch.float32
    assert float(res.maps.min()) >= 0 and torch.allclose(res.maps.flatten(1).amax(1), torch.ones(2))
    assert res.labels.shape == (2, 12) and bool((res.labels == -2).all())
    assert res.weights.shape == (2, 12) and torch.equal(res.channel_weights.isnan(), res.weights.isnan())
    assert bool(torch.isnan(res.eps).all())
    assert torch.equal(res.class_idx, res.logits.argmax(1))


@pytest.mark.parametrize("method", [ScoreCAM, SmoothGradCAMPlusPlus])
def test_chunking_does_not_change_maps(method):
    model, x = tiny_cnn(), images(batch=3)
    kwargs = {"num_samples": 2, "generator": None} if method is SmoothGradCAMPlusPlus else {}
    torch.manual_seed(3)
    one = method(model, [model.features], batch_size=1, **kwargs)(x)
    torch.manual_seed(3)
    all_at_once = method(model, [model.features], batch_size=1000, **kwargs)(x)
    # Per-image forwards do not depend on the batch, up to the CPU kernels' float32
    # rounding for different batch sizes: 1e-6 on [0, 1] maps.
    assert torch.allclose(one, all_at_once, atol=1e-6)


def test_gradient_free_methods_run_without_autograd():
    model, x = tiny_cnn(), images(batch=2)
    calls = []
    model.fc.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    with torch.inference_mode():  # no backward is possible here, and none is needed
        eigen = EigenCAM(model, [model.features])(x)
        score = ScoreCAM(model, [model.features], batch_size=10)(x)
    assert eigen.shape == score.shape == (2, 16, 16)
    # EigenCAM: one forward of 2; ScoreCAM: one of 2, then 2 x 12 masked images in 10s.
    assert calls == [2, 2, 10, 10, 4]
