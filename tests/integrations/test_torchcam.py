"""The torchcam drop-in (``cfcam_fast.integrations.torchcam.CFCAM``) inside torchcam's call
pattern and its own test suite's patterns (image CAMs on MobileNetV2, in-place models,
constructor, hooks and prechecks, metrics, ``explain``, ViT ``reshape_transform``), compared
with torchcam's GradCAM on the same model and layer, and with ``cfcam_fast.CFCAM`` and
torchcam's metrics. 3D (video) CAMs are left out: the CF-CAM core takes ``[B, C, H, W]``.

``AS_GRAD_CAM`` (helpers) is the configuration under which CF-CAM computes Grad-CAM's map
(importance_percentile 0, linear weighting); the host scales the map min-max, CF-CAM by its
maximum, the same when CF-CAM's map has a zero, which each such test asserts. The maps then
agree to float32 rounding (1e-6).
"""
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import (
    AS_GRAD_CAM,
    assert_maps,
    assert_state_unchanged,
    hooks_left,
    images,
    model_state,
    photo,
    tiny_cnn,
    tiny_vit,
    torchvision_model,
)
from torch import nn

import cfcam_fast.metrics as metrics
from cfcam_fast.cams.cfcam import CFCAM
from cfcam_fast.core.config import CFCAMConfig

pytest.importorskip("torchcam")
pytest.importorskip("pytorch_grad_cam")  # its ViT reshape_transform

from PIL import Image
from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform
from torchcam import methods as torchcam_methods
from torchcam.explain import explain
from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric
from torchcam.utils import overlay_mask
from torchvision.transforms.functional import to_pil_image

from cfcam_fast.integrations.torchcam import CFCAM as TorchcamCFCAM

CONFIGS = [CFCAMConfig(), CFCAMConfig(filter="official", weighting="standardized")]


@pytest.mark.parametrize("config", CONFIGS)
def test_torchcam_pattern(config):
    model, x = tiny_cnn().eval(), images(batch=2)  # torchcam's pattern: the user runs the model in eval mode
    expected = CFCAM(model, [model.features], config=config, backend="reference")(x, [1, 3])
    # upsample=True: input-sized maps, cfcam_fast.CFCAM's (the default is the layer's size).
    with TorchcamCFCAM(model, "features", config=config, backend="reference", upsample=True) as extractor:
        out = model(x)
        cams = extractor([1, 3], out)
        assert len(cams) == 1 and cams[0].shape == (2, 16, 16)
        # Same captured tensors and the same core; 1e-6 covers float32 rounding.
        assert torch.allclose(cams[0], expected, atol=1e-6)
        assert torch.allclose(extractor(3, model(x[1:]))[0], expected[1:], atol=1e-6)
        with pytest.raises(ValueError, match="normalised"):
            extractor(3, model(x), normalized=False)
        # torchcam's metric explains the scores its logits_fn gives (here probabilities).
        softmax = partial(torch.softmax, dim=-1)
        prob_maps = extractor([1, 3], softmax(model(x)))[0]
        metric = ClassificationMetric(extractor, softmax)
        metric.update(x, [1, 3])
        summary = metric.summary()
    assert len(model._forward_pre_hooks) == 0 and len(model.features._forward_hooks) == 0
    drop = metrics.average_drop(model, x, prob_maps, [1, 3])
    # torchcam divides by (Y + 1e-7) and averages: 1e-5 relative.
    assert drop.mean().item() / 100 == pytest.approx(summary["avg_drop"], rel=1e-5, abs=1e-7)


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
