"""Grad-CAM and Grad-CAM++ (``cams.gradcam``) against the grad-cam package and against
hand-worked cases; their results carry no clusters and no plan."""
import numpy as np
import pytest
import torch
from helpers import images, minmax, tiny_cnn

import cfcam_fast as cf
from cfcam_fast.cams.capture import capture
from cfcam_fast.cams.gradcam import GradCAM, GradCAMPlusPlus, gradcam_plusplus_weights, gradcam_weights

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
ClassifierOutputTarget = pytest.importorskip("pytorch_grad_cam.utils.model_targets").ClassifierOutputTarget
PAIRS = [(GradCAM, pytorch_grad_cam.GradCAM), (GradCAMPlusPlus, pytorch_grad_cam.GradCAMPlusPlus)]


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_maps_equal_grad_cam_package(ours, theirs):
    model, x = tiny_cnn(), images(batch=3)
    targets = [0, 3, 4]
    with ours(model, [model.features]) as cam:
        res = cam.explain(x, targets=targets)
    with theirs(model=model, target_layers=[model.features]) as cam:
        expected = cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in targets])
    assert res.maps.shape == (3, 16, 16) and res.maps.dtype == torch.float32
    assert torch.allclose(res.maps.flatten(1).amax(1), torch.ones(3))
    # The grad-cam package min-max normalises (at the layer's size, then after resizing)
    # where docs/algorithm.md step 7 divides by the maximum; bilinear resizing is affine-equivariant,
    # so our maps min-max normalised must equal theirs. Tolerance 1e-5: float32 rounding of
    # two [0, 1] maps through different resize code, plus their 1e-7 denominator guard.
    np.testing.assert_allclose(minmax(res.maps.numpy()), expected, atol=1e-5)


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_weights_equal_grad_cam_package(ours, theirs):
    model, x = tiny_cnn(), images(batch=2)
    captured = capture(model, x, [model.features], [1, 2])
    A, G = captured.activations[0], captured.gradients[0]
    mine = (gradcam_weights if ours is GradCAM else gradcam_plusplus_weights)(A, G)
    theirs_w = theirs(model=model, target_layers=[model.features]).get_cam_weights(
        x, [model.features], None, A.numpy(), G.numpy())
    # Same float32 formula; 1e-6 relative covers a different summation order.
    np.testing.assert_allclose(mine.numpy(), theirs_w, rtol=1e-6, atol=1e-9)


def test_hand_worked_gradcam_and_plusplus():
    A = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]]])  # [1, 2, 2, 2]
    G = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]], [[-1.0, 0.0], [0.0, 0.0]]]])
    assert torch.allclose(gradcam_weights(A, G), torch.tensor([[1.0, -0.25]]))
    # Channel 0: sum(A) = 1, a = 1 / (2 + 1 + 1e-6) at each of 4 positions, ReLU(G) = 1.
    # Channel 1: the only non-zero gradient is negative, so its ReLU is 0.
    expected = torch.tensor([[4.0 / (3.0 + 1e-6), 0.0]])
    assert torch.allclose(gradcam_plusplus_weights(A, G), expected)


def test_result_fields_and_zero_map():
    model, x = tiny_cnn(), images(batch=2)
    res = GradCAM(model, [model.features]).explain(x)
    assert res.labels.shape == (2, 12) and bool((res.labels == -2).all())
    assert torch.equal(res.channel_weights, res.weights)
    assert bool(torch.isnan(res.eps).all())
    assert torch.equal(res.class_idx, res.logits.argmax(1))
    # All weights negative on non-negative activations: the map is zero and stays zero.
    A = torch.rand(1, 3, 4, 4)
    G = -torch.ones(1, 3, 4, 4)
    maps = GradCAM(model, [model.features])._core(A, G, (8, 8)).maps
    assert maps.shape == (1, 8, 8) and bool((maps == 0).all())


def test_gradcam_results_have_no_plan():
    model = tiny_cnn()
    assert cf.GradCAM(model, [model.features]).explain(images()).plan is None
    assert cf.GradCAMPlusPlus(model, [model.features]).explain(images()).plan is None
