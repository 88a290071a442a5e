"""Smooth Grad-CAM++ (``cams.smooth_gradcam``) against torchcam's ``SmoothGradCAMpp`` (same
noise draws: torch's global generator seeded identically before each), on the small CNN and
on real photos through the pretrained EfficientNet-Lite0; its weight formula without noise,
its generator, its arguments and ``torch.inference_mode()``. torchcam scales its maps
min-max where docs/algorithm.md step 7 divides by the maximum, so both are compared after
min-max scaling."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import efficientnet_lite0, images, minmax, tiny_cnn

from cfcam_fast.cams.capture import capture
from cfcam_fast.cams.smooth_gradcam import SmoothGradCAMPlusPlus
from cfcam_fast.data.images import preprocess
from cfcam_fast.data.layers import resolve_layer
from cfcam_fast.data.photos import bundled_photos

torchcam_methods = pytest.importorskip("torchcam.methods")


def _torchcam_smooth(model, layer, x, class_idx, num_samples, std):
    model.eval()
    torch.manual_seed(123)
    with torchcam_methods.SmoothGradCAMpp(model, layer, num_samples=num_samples, std=std,
                                          input_shape=tuple(x.shape[1:])) as extractor:
        scores = model(x)
        return extractor(class_idx=class_idx, scores=scores)[0]


def _check_smooth(model, layer, x, class_idx, num_samples, std, batch_size, atol):
    theirs = _torchcam_smooth(model, layer, x, class_idx, num_samples, std)
    torch.manual_seed(123)  # the same draws from the global generator
    ours = SmoothGradCAMPlusPlus(model, [layer], num_samples=num_samples, std=std,
                                 batch_size=batch_size).explain(x, class_idx).maps
    # torchcam's maps are at the layer's size: resize them as ours are (bilinear, half-pixel).
    theirs = F.interpolate(theirs[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(minmax(ours.numpy()), minmax(theirs.numpy()), atol=atol)


def test_smooth_gradcampp_equals_torchcam():
    model, x = tiny_cnn(), images(batch=3)
    # torchcam computes in float32 and ours in float64, on the same float32 gradients (the
    # batches differ in size, which may change the CPU kernels' rounding): 1e-5 on [0, 1] maps.
    _check_smooth(model, model.features, x, [0, 3, 4], num_samples=3, std=0.3, batch_size=4, atol=1e-5)


def test_smooth_without_noise_is_torchcams_weight_formula_on_the_clean_gradient():
    model, x = tiny_cnn(), images(batch=2)
    res = SmoothGradCAMPlusPlus(model, [model.features], num_samples=2, std=0.0).explain(x, [3, 1])
    captured = capture(model, x, [model.features], [3, 1])
    A, G = captured.activations[0].double(), captured.gradients[0].double()
    # With std 0 every copy is the clean image: D2 = G^2, D3 = G^3, G_last = G, A_last = A.
    alpha = G ** 2 / (2 * G ** 2 + (G ** 3 * A).sum((2, 3), keepdim=True) + 1e-8)
    expected = (alpha * G.clamp_min(0)).sum((2, 3))
    # The same float64 formula on gradients from a batch of 4 and of 2 (the CPU kernels may
    # round differently per batch size), weights rounded to float32: 1e-5 relative.
    assert torch.allclose(res.weights.double(), expected, rtol=1e-5, atol=1e-12)


def test_smooth_generator_gives_reproducible_draws():
    model, x = tiny_cnn(), images(batch=2)

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return SmoothGradCAMPlusPlus(model, [model.features], num_samples=2, generator=gen)(x)

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


@pytest.mark.parametrize("kwargs, match", [
    ({"num_samples": 0}, "num_samples must be an int >= 1"),
    ({"num_samples": 2.5}, "num_samples must be an int >= 1"),
    ({"num_samples": True}, "num_samples must be an int >= 1"),
    ({"std": -0.1}, "std must be a finite number >= 0"),
    ({"std": float("nan")}, "std must be a finite number >= 0"),
    ({"std": "0.3"}, "std must be a finite number >= 0"),
    ({"batch_size": 0}, "batch_size must be an int >= 1"),
    ({"generator": 3}, "generator must be a torch.Generator"),
])
def test_smooth_bad_arguments(kwargs, match):
    model = tiny_cnn()
    with pytest.raises(ValueError, match=match):
        SmoothGradCAMPlusPlus(model, [model.features], **kwargs)


def test_smooth_refuses_inference_mode_with_a_clear_message():
    model, x = tiny_cnn(), images(batch=1)
    with torch.inference_mode(), pytest.raises(ValueError, match="inference_mode"):
        SmoothGradCAMPlusPlus(model, [model.features])(x)


def test_real_photos_through_efficientnet_lite0():
    model, name = efficientnet_lite0()
    layer = resolve_layer(model, name)  # "bn2": 1280 channels
    photos = [image for _, image in bundled_photos()[:2]]
    x = preprocess(photos, size=128)  # a 4x4 layer: few positions, quick noisy passes
    # 2 photos x 2 noisy copies; 1e-5 as on the small CNN.
    classes = model(x).argmax(1).tolist()
    _check_smooth(model, layer, x, classes, num_samples=2, std=0.3, batch_size=3, atol=1e-5)
