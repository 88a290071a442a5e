"""The grad-cam drop-in (``cfcam_fast.integrations.grad_cam.CFCAM``) inside grad-cam's call
pattern and its own test suite's patterns (every model and call, hooks released in a loop,
one input channel, ViT ``reshape_transform``), compared with grad-cam's GradCAM on the same
model and layer, and with ``cfcam_fast.CFCAM`` and grad-cam's metrics.

``AS_GRAD_CAM`` (helpers) is the configuration under which CF-CAM computes Grad-CAM's map
(importance_percentile 0, linear weighting); the host scales the map min-max, CF-CAM by its
maximum, the same when CF-CAM's map has a zero, which each such test asserts. The maps then
agree to float32 rounding (1e-6).
"""
from functools import partial

import numpy as np
import pytest
import torch
import torchvision
from helpers import AS_GRAD_CAM, assert_maps, hooks_left, images, photo, tiny_cnn, tiny_vit, torchvision_model
from torch import nn

import cfcam_fast.metrics as metrics
from cfcam_fast.cams.cfcam import CFCAM
from cfcam_fast.core.config import CFCAMConfig

pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.utils.image import preprocess_image, show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

from cfcam_fast.integrations.grad_cam import CFCAM as GradCamCFCAM

CONFIGS = [CFCAMConfig(), CFCAMConfig(filter="official", weighting="standardized")]


@pytest.mark.parametrize("config", CONFIGS)
def test_grad_cam_package_pattern(config):
    model, x = tiny_cnn(), images(batch=2)
    with CFCAM(model, [model.features], config=config, backend="reference") as cam:
        expected = cam(x, [2, 4])
    with GradCamCFCAM(model=model, target_layers=[model.features], config=config, backend="reference") as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(2), ClassifierOutputTarget(4)])
        assert cam(input_tensor=x, targets=None).shape == (2, 16, 16)
    assert isinstance(maps, np.ndarray) and maps.shape == (2, 16, 16) and maps.dtype == np.float32
    # The same core on the same captured tensors (grad-cam backpropagates with .backward()
    # instead of autograd.grad: identical float32 operations), so equal to float32 rounding.
    np.testing.assert_allclose(maps, expected.numpy(), atol=1e-6)
    rgb = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    overlay = show_cam_on_image(rgb, maps[0], use_rgb=True)
    assert overlay.shape == (16, 16, 3) and overlay.dtype == np.uint8
    # Its metrics take our maps as they take its own.
    change = CamMultImageConfidenceChange()(x, maps, [ClassifierOutputSoftmaxTarget(k) for k in (2, 4)], model)
    drop = metrics.average_drop(model, x, torch.from_numpy(maps), [2, 4])
    clean = torch.softmax(model(x), 1)[torch.arange(2), torch.tensor([2, 4])].detach()
    # Their change is O - Y; ours 100 max(0, Y - O) / Y. 1e-6: float32 probabilities.
    np.testing.assert_allclose(drop.numpy() * clean.numpy() / 100, np.maximum(-change, 0), atol=1e-6)


@pytest.mark.parametrize("name, layers", [("resnet18", lambda m: [m.layer4[-1], m.layer4[-2]]),
                                          ("vgg11", lambda m: [m.features[-1]])], ids=["resnet18", "vgg11"])
@pytest.mark.parametrize("batch, width, height", [(2, 32, 32), (1, 32, 40)])
@pytest.mark.parametrize("category", [None, 100])
@pytest.mark.parametrize("eigen_smooth", [True, False])
def test_grad_cam_runs_every_model_and_call(name, layers, batch, width, height, category, eigen_smooth):
    model = torchvision_model(name)
    rgb = photo(width, height)
    x = preprocess_image(rgb).repeat(batch, 1, 1, 1)
    targets = None if category is None else [ClassifierOutputTarget(category) for _ in range(batch)]
    with GradCamCFCAM(model=model, target_layers=layers(model)) as cam:
        maps = cam(input_tensor=x, targets=targets, aug_smooth=False, eigen_smooth=eigen_smooth)
    with GradCAM(model=model, target_layers=layers(model)) as cam:
        host = cam(input_tensor=x, targets=targets, aug_smooth=False, eigen_smooth=eigen_smooth)
    assert_maps(host, (batch, height, width), np.float32)
    assert_maps(maps, host.shape, host.dtype)
    overlay = show_cam_on_image(rgb, maps[0], use_rgb=True)
    assert overlay.shape == (height, width, 3) and overlay.dtype == np.uint8
    assert hooks_left(model) == {}


# The eigen maps' zeros at the 8x8 layer are isolated pixels that bilinear upsampling
# fills in, so those compare on the 16x16 layer (at the input's size).
@pytest.mark.parametrize("layer, aug_smooth, eigen_smooth", [("features", False, False), ("features", True, False),
                                                             ("stem", False, True), ("stem", True, True)])
def test_grad_cam_equals_its_gradcam_as_grad_cam(layer, aug_smooth, eigen_smooth):
    model, x = tiny_cnn(), images(batch=2)
    layers = [getattr(model, layer)]
    targets = [ClassifierOutputTarget(2), ClassifierOutputTarget(4)]
    with GradCamCFCAM(model, layers, config=AS_GRAD_CAM, backend="reference") as cam:
        maps = cam(input_tensor=x, targets=targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
        # aug_smooth averages six augmented maps: each must have a zero.
        for i in [t.augment_image(x) for t in cam.tta_transforms] if aug_smooth else [x]:
            assert (cam(input_tensor=i, targets=targets, eigen_smooth=eigen_smooth).reshape(2, -1).min(1) == 0).all()
    with GradCAM(model, layers) as cam:
        host = cam(input_tensor=x, targets=targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
    assert_maps(maps, host.shape, host.dtype)
    np.testing.assert_allclose(maps, host, atol=1e-6)


def test_grad_cam_averages_layers():
    model, x = tiny_cnn(), images(batch=2)
    targets = [ClassifierOutputTarget(2), ClassifierOutputTarget(4)]
    per_layer = []
    for layers in ([model.stem], [model.features], [model.stem, model.features]):
        with GradCamCFCAM(model, layers, backend="reference") as cam:
            per_layer.append(cam(input_tensor=x, targets=targets))
    mean = (per_layer[0] + per_layer[1]) / 2
    np.testing.assert_allclose(per_layer[2], mean / mean.max(axis=(1, 2), keepdims=True), atol=1e-6)


def test_grad_cam_releases_hooks_in_a_loop():
    model, x = tiny_cnn(), images(batch=1)
    for cam_class in (GradCamCFCAM, GradCAM):
        for _ in range(10):
            with cam_class(model=model, target_layers=[model.features]) as cam:
                cam(input_tensor=x, targets=[ClassifierOutputTarget(1)])
            assert hooks_left(model) == {}
            assert cam.activations_and_grads.activations == [] and cam.activations_and_grads.gradients == []


def test_grad_cam_one_input_channel():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    gray = photo(64, 64)[:, :, 0]
    x = torch.from_numpy(gray)[None, None].repeat(4, 1, 1, 1)
    with GradCamCFCAM(model=model, target_layers=[model.layer4]) as cam:
        assert_maps(cam(input_tensor=x, targets=None), (4, 64, 64), np.float32)


def test_grad_cam_vit_reshape_transform():
    model, x = tiny_vit(), images(batch=2, size=32)
    layers = [model.encoder.layers[-1].ln_1]
    reshape = partial(vit_reshape_transform, height=4, width=4)
    with GradCamCFCAM(model, layers, reshape_transform=reshape, config=AS_GRAD_CAM, backend="reference") as cam:
        maps = cam(input_tensor=x, targets=None)
        assert (maps.reshape(2, -1).min(1) == 0).all()
        assert_maps(cam(input_tensor=x, targets=None, eigen_smooth=True), (2, 32, 32), np.float32)
    with GradCAM(model, layers, reshape_transform=reshape) as cam:
        host = cam(input_tensor=x, targets=None)
    np.testing.assert_allclose(maps, host, atol=1e-6)
