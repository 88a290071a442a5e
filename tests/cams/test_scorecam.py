"""Score-CAM (``cams.scorecam``) against grad-cam's ``ScoreCAM`` (weights and maps), on the
small CNN and on a real photo through the pretrained EfficientNet-Lite0, and its
``batch_size`` argument. The peers scale their maps min-max where docs/algorithm.md step 7
divides by the maximum; bilinear resizing is affine-equivariant, so our maps min-max scaled
must equal theirs (as in tests/cams/test_gradcam.py)."""
import numpy as np
import pytest
import torch
from helpers import efficientnet_lite0, images, minmax, tiny_cnn

from cfcam_fast import ScoreCAM
from cfcam_fast.cams.capture import capture_forward
from cfcam_fast.data.images import preprocess
from cfcam_fast.data.layers import resolve_layer
from cfcam_fast.data.photos import bundled_photos

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
ClassifierOutputTarget = pytest.importorskip("pytorch_grad_cam.utils.model_targets").ClassifierOutputTarget


def test_scorecam_equals_grad_cam_package():
    model, x = tiny_cnn(), images(batch=3)
    targets = [0, 3, 4]
    res = ScoreCAM(model, [model.features], batch_size=5).explain(x, targets)  # chunks straddle images
    their_cam = pytorch_grad_cam.ScoreCAM(model=model, target_layers=[model.features])
    their_cam.batch_size = 7
    with their_cam:
        theirs = their_cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in targets])
    A = capture_forward(model, x, [model.features]).activations[0]
    their_w = their_cam.get_cam_weights(x, model.features, [ClassifierOutputTarget(k) for k in targets],
                                        A.numpy(), None)
    # Weights: the same softmax of the same logits, theirs with float32 masks and ours with
    # float64 masks rounded to float32; 1e-5 relative covers that rounding through the model.
    np.testing.assert_allclose(res.weights.numpy(), their_w, rtol=1e-5, atol=1e-9)
    assert torch.allclose(res.weights.double().sum(1), torch.ones(3, dtype=torch.float64))
    # Maps: 1e-5 on [0, 1] maps, float32 rounding through two resize codes (as for Grad-CAM).
    np.testing.assert_allclose(minmax(res.maps.numpy()), theirs, atol=1e-5)


@pytest.mark.parametrize("batch_size", [0, -3, 1.0, None])
def test_scorecam_bad_batch_size(batch_size):
    model = tiny_cnn()
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        ScoreCAM(model, [model.features], batch_size=batch_size)


@pytest.mark.slow
def test_real_photos_through_efficientnet_lite0():
    model, name = efficientnet_lite0()
    layer = resolve_layer(model, name)  # "bn2": 1280 channels
    # 1280 masked forwards of one photo, at 64 px (a 2x2 layer).
    photos = [image for _, image in bundled_photos()[:1]]
    x1 = preprocess(photos, size=64)
    target = [ClassifierOutputTarget(int(model(x1).argmax()))]
    res = ScoreCAM(model, [layer], batch_size=256).explain(x1, target)
    their_cam = pytorch_grad_cam.ScoreCAM(model=model, target_layers=[layer])
    their_cam.batch_size = 256
    with their_cam:
        theirs = their_cam(input_tensor=x1, targets=target)
    np.testing.assert_allclose(minmax(res.maps.numpy()), theirs, atol=1e-5)  # as on the small CNN
