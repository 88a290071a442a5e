"""The drop-in CFCAM classes run through their host libraries' own test patterns.

grad-cam's suite (run every model and call pattern, release hooks in a loop, one input
channel, ViT ``reshape_transform``) and torchcam's (image CAMs on MobileNetV2, in-place
models, constructor, hooks and prechecks, metrics, ``explain``), written again here for
the drop-ins and compared with each host's own GradCAM on the same model and layer.
3D (video) CAMs are left out: the CF-CAM core takes ``[B, C, H, W]``.

``AS_GRAD_CAM`` is the configuration under which CF-CAM computes Grad-CAM's map: with
``importance_percentile=0`` every channel is important (tau is the smallest norm), so
``w_c = mean(G_c)``, and ``weighting="linear"`` makes ``alpha = w``. The hosts scale the
map min-max, CF-CAM by its maximum: the same when CF-CAM's map has a zero, which each such
test asserts. The maps then agree to float32 rounding (1e-6).
"""
import functools
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import assert_state_unchanged, hooks_left, images, model_state, tiny_cnn
from torch import nn

from cfcam_fast.core.config import CFCAMConfig
from cfcam_fast.data.photos import bundled_photos

pytest.importorskip("pytorch_grad_cam")
pytest.importorskip("torchcam")

from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import preprocess_image, show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform
from torchcam import methods as torchcam_methods
from torchcam.explain import explain
from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric
from torchcam.utils import overlay_mask
from torchvision.transforms.functional import to_pil_image

from cfcam_fast.integrations.grad_cam import CFCAM as GradCamCFCAM
from cfcam_fast.integrations.torchcam import CFCAM as TorchcamCFCAM

AS_GRAD_CAM = CFCAMConfig(importance_percentile=0.0, weighting="linear")


@functools.cache
def torchvision_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def photo(width: int, height: int) -> np.ndarray:
    """A real RGB photo as float32 ``[height, width, 3]`` in ``[0, 1]``."""
    image = bundled_photos()[0][1].resize((width, height), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                hidden_dim=32, mlp_dim=64, num_classes=3).eval()


def assert_maps(maps, shape, dtype) -> None:
    assert maps.shape == shape and maps.dtype == dtype
    assert not np.isnan(np.asarray(maps)).any() and maps.min() >= 0 and maps.max() <= 1


# grad-cam -----------------------------------------------------------------------------


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


# torchcam -----------------------------------------------------------------------------


@pytest.mark.parametrize("target_layer, batch", [("features.18.0", 1), (lambda m: m.features[18][0], 2)],
                         ids=["name", "module"])
def test_torchcam_image_cams(target_layer, batch):
    model = torchvision_model("mobilenet_v2")
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.from_numpy(photo(224, 224)).permute(2, 0, 1)[None].repeat(batch, 1, 1, 1).requires_grad_(True)
    layer = target_layer(model) if callable(target_layer) else target_layer
    shapes = []
    for extractor_class in (TorchcamCFCAM, torchcam_methods.GradCAM):
        with extractor_class(model, layer) as extractor:
            scores = model(x)
            first = extractor(scores[0].argmax().item(), scores, retain_graph=True)[0]
            per_image = extractor(list(range(batch)), scores)[0]
        for cam in (first, per_image):
            assert_maps(cam, (batch, 7, 7), torch.float32)
        shapes.append(first.shape)
    assert shapes[0] == shapes[1] and hooks_left(model) == {}


def test_torchcam_in_place_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1), nn.Linear(8, 10))
    for p in model.parameters():
        p.requires_grad_(False)
    x = images(batch=1, size=32).requires_grad_(True)
    with TorchcamCFCAM(model, "2") as extractor:  # hooked before the in-place ReLU
        scores = model(x)
        assert_maps(extractor(scores[0].argmax().item(), scores)[0], (1, 32, 32), torch.float32)


def test_torchcam_constructor_hooks_and_prechecks():
    model, x = tiny_cnn().eval(), images(batch=2)
    for extractor_class in (TorchcamCFCAM, torchcam_methods.GradCAM):
        with pytest.raises(ValueError):
            extractor_class(model, "nope")
        with pytest.raises(TypeError):
            extractor_class(model, 3)
        with pytest.raises(TypeError):
            extractor_class(model, [3])
        with pytest.raises(ValueError):
            extractor_class(model, nn.ReLU())
    assert hooks_left(model) == {}
    with TorchcamCFCAM(model, "features", (3, 16, 16), enable_hooks=False) as extractor, \
            torchcam_methods.GradCAM(model, "features", (3, 16, 16), enable_hooks=False) as host:
        assert len(extractor.hook_handles) == len(host.hook_handles) == 2
        assert not extractor._hooks_enabled
        model(x)
        assert extractor.hook_a == [None]
        with pytest.raises(AssertionError):  # no forward was hooked
            extractor(0, model(x))
        extractor.enable_hooks()
        scores = model(x)
        assert isinstance(extractor.hook_a[0], torch.Tensor)
        with pytest.raises(ValueError):
            extractor(-1, scores)
        with pytest.raises(ValueError):
            extractor([1], scores)  # one class per image
        with pytest.raises(ValueError):
            extractor(0)  # scores are needed
        assert extractor(0, scores)[0].shape == (2, 8, 8)
        extractor.remove_hooks()
        extractor.reset_hooks()
        assert extractor.hook_handles == [] and extractor.hook_a == [None]
        model(x)
        assert extractor.hook_a == [None]
    assert hooks_left(model) == {}
    with TorchcamCFCAM(model, input_shape=(3, 16, 16)) as extractor, \
            torchcam_methods.GradCAM(model, input_shape=(3, 16, 16)) as host:
        assert extractor.target_names == host.target_names  # the same automatic layer
        assert repr(extractor) == f"CFCAM(target_layer={host.target_names}, upsample=False)"
    with TorchcamCFCAM(model, "features", upsample=True) as extractor:
        assert len(extractor.hook_handles) == 3  # and a forward pre-hook for the input's size
    assert hooks_left(model) == {}


def test_torchcam_layer_sized_maps_and_upsample_option():
    model, x = tiny_cnn().eval(), images(batch=2)
    with TorchcamCFCAM(model, "features", backend="reference") as extractor:
        layer_maps = extractor([1, 3], model(x))[0]
        # torchcam's output targets: one callable per image, on that image's scores.
        by_targets = extractor(scores=model(x), targets=[lambda s: s[1], lambda s: s[3]])[0]
    assert torch.equal(by_targets, layer_maps)  # the same seed gradient: the same maps
    with TorchcamCFCAM(model, "features", backend="reference", upsample=True) as extractor:
        input_maps = extractor([1, 3], model(x))[0]
    with torchcam_methods.GradCAM(model, "features") as host:
        host_maps = host([1, 3], model(x))[0]
    assert_maps(layer_maps, host_maps.shape, host_maps.dtype)
    assert_maps(input_maps, (2, 16, 16), torch.float32)
    # Step 7 is linear up to the division by the maximum: the upsampled layer map,
    # divided by its maximum, is the input-sized map (float32 rounding).
    up = F.interpolate(layer_maps[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(up / up.amax((1, 2), keepdim=True), input_maps, rtol=0, atol=1e-6)


def test_torchcam_equals_its_gradcam_as_grad_cam():
    model, x = tiny_cnn().eval(), images(batch=2)
    image = Image.fromarray((photo(48, 40) * 255).astype(np.uint8))
    softmax = partial(torch.softmax, dim=-1)
    maps, overlays, summaries = [], [], []
    for extractor in (TorchcamCFCAM(model, "features", config=AS_GRAD_CAM, backend="reference"),
                      torchcam_methods.GradCAM(model, "features")):
        with extractor:
            maps.append(extractor([1, 3], model(x))[0])
            # torchcam's README pattern: overlay_mask resizes the layer-sized map onto the image.
            overlay = overlay_mask(image, to_pil_image(maps[-1][0], mode="F"), alpha=0.5)
            overlays.append(np.asarray(overlay, dtype=np.int16))
            metric = ClassificationMetric(extractor, softmax)
            deletion = DeletionInsertionMetric(extractor, softmax)
            metric.update(x, class_idx=[1, 3])
            deletion.update(x, class_idx=[1, 3])
            summaries.append({**metric.summary(), **deletion.summary()})
    assert (maps[0].amin((1, 2)) == 0).all()
    torch.testing.assert_close(maps[0], maps[1], rtol=0, atol=1e-6)
    assert overlays[0].shape == (40, 48, 3) and np.abs(overlays[0] - overlays[1]).max() <= 1  # uint8 rounding
    assert summaries[0].keys() == summaries[1].keys()
    for key, value in summaries[0].items():  # the same maps to 1e-6: the same scores to about that
        assert value == pytest.approx(summaries[1][key], abs=1e-5), key


def test_torchcam_metrics_as_in_its_suite():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None)  # train mode: metrics switch to eval
    x = torch.rand((2, 3, 224, 224), generator=torch.Generator().manual_seed(0))
    with TorchcamCFCAM(model, "features.12") as extractor:
        metric = ClassificationMetric(extractor, partial(torch.softmax, dim=-1))
        metric.update(x, class_idx=0)
        metric.update(x)
        deletion = DeletionInsertionMetric(extractor, partial(torch.softmax, dim=-1), steps=4)
        deletion.update(x)
    assert all(0 <= v <= 1 for v in metric.summary().values())
    assert all(0 <= v <= 1 for v in deletion.summary().values())
    assert model.training and hooks_left(model) == {}


def test_torchcam_explain(tmp_path):
    model, x = tiny_cnn().eval(), images(batch=1)
    before = model_state(model)
    result = explain(model, x, method=TorchcamCFCAM, target_layer="features", expected_class_idx=0,
                     method_kwargs={"backend": "reference"})
    host = explain(model, x, method=torchcam_methods.GradCAM, target_layer="features", expected_class_idx=0)
    assert result.method == "CFCAM" and result.target_layers == ("features",)
    assert result.cams.keys() == host.cams.keys()
    for cls, maps in result.cams.items():
        assert [m.shape for m in maps] == [m.shape for m in host.cams[cls]] == [(8, 8)]
        assert_maps(maps[0], (8, 8), torch.float32)
    bundle = result.save(tmp_path / "bundle", Image.fromarray((photo(19, 13) * 255).astype(np.uint8)))
    assert (bundle / "manifest.json").exists()
    with Image.open(bundle / f"class-{result.predicted_class_idx}-layer-0-overlay.png") as overlay:
        assert overlay.size == (19, 13)
    assert hooks_left(model) == {}
    assert_state_unchanged(model, before)


def test_torchcam_vit_reshape_transform():
    model, x = tiny_vit(), images(batch=2, size=32)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    reshape = partial(vit_reshape_transform, height=4, width=4)
    with TorchcamCFCAM(model, layer, reshape_transform=reshape, config=AS_GRAD_CAM, backend="reference") as ex:
        maps = ex(0, model(x))[0]
    with torchcam_methods.GradCAM(model, layer, reshape_transform=reshape) as host:
        host_maps = host(0, model(x))[0]
    assert (maps.amin((1, 2)) == 0).all()
    assert maps.shape == (2, 4, 4)
    torch.testing.assert_close(maps, host_maps, rtol=0, atol=1e-6)
