"""EigenCAM, ScoreCAM, Smooth Grad-CAM++ and NormGrad against their peers and definitions.

Peers: grad-cam's ``EigenCAM`` and ``ScoreCAM``, torchcam's ``SmoothGradCAMpp`` (same
noise draws: torch's global generator seeded identically before each), and a NumPy
computation of NormGrad's definition. The peers scale their maps min-max where
docs/algorithm.md step 7 divides by the maximum; bilinear resizing is affine-equivariant,
so our maps min-max scaled must equal theirs (as in tests/test_baselines.py).
"""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_state_unchanged, efficientnet_lite0, hooks_left, images, minmax, model_state, tiny_cnn

from cfcam_fast import EigenCAM, NormGrad, ScoreCAM
from cfcam_fast.cams.capture import capture, capture_forward
from cfcam_fast.cams.eigencam import eigen_projection
from cfcam_fast.cams.smooth_gradcam import SmoothGradCAMPlusPlus
from cfcam_fast.data.images import preprocess
from cfcam_fast.data.layers import resolve_layer
from cfcam_fast.data.photos import bundled_photos

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
torchcam_methods = pytest.importorskip("torchcam.methods")
scale_cam_image = pytest.importorskip("pytorch_grad_cam.utils.image").scale_cam_image
ClassifierOutputTarget = pytest.importorskip("pytorch_grad_cam.utils.model_targets").ClassifierOutputTarget
_svd = pytest.importorskip("pytorch_grad_cam.utils.svd_on_activations")
get_2d_projection = _svd.get_2d_projection
get_2d_projection_with_sign_correction = _svd.get_2d_projection_with_sign_correction

METHODS = [EigenCAM, ScoreCAM, NormGrad, SmoothGradCAMPlusPlus]


def _gradcam_pipeline(cams: np.ndarray, size: tuple) -> np.ndarray:
    """grad-cam's output rule for one layer: ReLU, min-max, cv2 resize, min-max again."""
    return scale_cam_image(scale_cam_image(np.maximum(cams, 0), size))


def _sign_agrees(projection: np.ndarray) -> bool:
    """Whether a projection already has the orientation ``eigen_projection`` chooses."""
    return projection.max() + projection.min() >= 0


def _check_eigencam(model, layer, x):
    ours = EigenCAM(model, [layer]).explain(x).maps.numpy()
    A = capture_forward(model, x, [layer]).activations[0]
    X = A.double().flatten(2).transpose(1, 2)
    s = torch.linalg.svdvals(X - X.mean(1, keepdim=True))
    # grad-cam's SVD runs in float32, ours in float64: the first singular vector moves by
    # about eps32 * s1 / (s1 - s2) ~ 6e-8 * 50 = 3e-6 when the gap ratio is below 50 (asserted
    # here), so 1e-5 on [0, 1] maps covers it with the resize's float32 rounding.
    assert bool((s[:, 0] / (s[:, 0] - s[:, 1]) < 50).all())
    atol = 1e-5
    A = A.numpy()
    size = (x.shape[-1], x.shape[-2])
    corrected = _gradcam_pipeline(get_2d_projection_with_sign_correction(A), size)
    np.testing.assert_allclose(minmax(ours), corrected, atol=atol)
    # grad-cam's EigenCAM keeps the sign its SVD returns: the maps agree on the images where
    # that sign is the one eigen_projection chooses (the same LAPACK call gives the same sign).
    with pytorch_grad_cam.EigenCAM(model=model, target_layers=[layer]) as cam:
        theirs = cam(input_tensor=x, targets=None)
    agrees = [_sign_agrees(p) for p in get_2d_projection(A)]
    assert any(agrees), "no image to compare with grad-cam's EigenCAM class: choose another seed"
    np.testing.assert_allclose(minmax(ours)[agrees], theirs[agrees], atol=atol)


def test_eigencam_equals_grad_cam_package():
    model, x = tiny_cnn(), images(batch=4)
    _check_eigencam(model, model.features, x)


def test_eigen_projection_sign_convention_hand_worked():
    # One channel: the centred values are the projection, up to the component's sign.
    # [3, 0, 0] centres to [2, -1, -1] (max + min = 1 >= 0, kept); [0, 3, 3] centres to
    # [-2, 1, 1] (max + min = -1 < 0, flipped to [2, -1, -1]): both maps peak at position 0.
    A = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 3.0]], dtype=torch.float64).reshape(2, 1, 1, 3)
    proj, v = eigen_projection(A)
    expected = torch.tensor([[2.0, -1.0, -1.0], [2.0, -1.0, -1.0]], dtype=torch.float64).reshape(2, 1, 3)
    assert torch.allclose(proj, expected, atol=1e-12)
    assert torch.equal(v, torch.tensor([[1.0], [-1.0]], dtype=torch.float64))
    # The orientation does not depend on the SVD's sign: negated activations give the same map.
    B = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    assert torch.allclose(eigen_projection(B)[0], eigen_projection(-B)[0], atol=1e-12)
    p = eigen_projection(B)[0].flatten(1)
    assert bool((p.amax(1) + p.amin(1) >= 0).all())


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


def test_normgrad_equals_numpy_definition():
    model, x = tiny_cnn(), images(batch=3)
    res = NormGrad(model, [model.features]).explain(x, [1, 2, 0])
    captured = capture(model, x, [model.features], [1, 2, 0])
    A, G = captured.activations[0].numpy().astype(np.float64), captured.gradients[0].numpy().astype(np.float64)
    cam = np.sqrt((A ** 2).sum(1)) * np.sqrt((G ** 2).sum(1))  # ||A_u||_2 ||G_u||_2 per position u
    up = np.stack([cv2.resize(m, (16, 16), interpolation=cv2.INTER_LINEAR) for m in cam])
    expected = up / up.reshape(3, -1).max(1)[:, None, None]
    # Same float64 formula, maps rounded to float32 at the end: 1e-6 on [0, 1] maps.
    np.testing.assert_allclose(res.maps.numpy(), expected, atol=1e-6)
    assert bool(torch.isnan(res.weights).all()) and bool(torch.isnan(res.channel_weights).all())


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


@pytest.mark.parametrize("method", METHODS)
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


@pytest.mark.parametrize("method", METHODS)
def test_result_fields(method):
    model, x = tiny_cnn(), images(batch=2)
    res = method(model, [model.features]).explain(x)
    assert res.maps.shape == (2, 16, 16) and res.maps.dtype == torch.float32
    assert float(res.maps.min()) >= 0 and torch.allclose(res.maps.flatten(1).amax(1), torch.ones(2))
    assert res.labels.shape == (2, 12) and bool((res.labels == -2).all())
    assert res.weights.shape == (2, 12) and torch.equal(res.channel_weights.isnan(), res.weights.isnan())
    assert bool(torch.isnan(res.eps).all())
    assert torch.equal(res.class_idx, res.logits.argmax(1))


@pytest.mark.parametrize("method", METHODS)
def test_callable_targets_equal_int_targets(method):
    model, x = tiny_cnn(), images(batch=2)
    torch.manual_seed(5)
    by_int = method(model, [model.features]).explain(x, [4, 1])
    torch.manual_seed(5)
    by_callable = method(model, [model.features]).explain(x, [ClassifierOutputTarget(4), ClassifierOutputTarget(1)])
    # The same logits are read either way, so the maps are identical.
    assert torch.equal(by_int.maps, by_callable.maps)
    assert torch.equal(by_int.class_idx, by_callable.class_idx)


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


def test_smooth_generator_gives_reproducible_draws():
    model, x = tiny_cnn(), images(batch=2)

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return SmoothGradCAMPlusPlus(model, [model.features], num_samples=2, generator=gen)(x)

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


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


@pytest.mark.parametrize("method", METHODS)
def test_model_state_unchanged_after_call_and_after_raise(method):
    model, x = tiny_cnn(), images(batch=2)
    model.train()
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    before = model_state(model)
    method(model, [model.features]).explain(x, [0, 1])
    assert_state_unchanged(model, before)
    assert hooks_left(model) == {}

    # A target that raises once the clean forward has scored it (so, for ScoreCAM and Smooth
    # Grad-CAM++, inside the masked or noisy passes), or at once for the others.
    succeed = 2 if method in (ScoreCAM, SmoothGradCAMPlusPlus) else 0
    calls = []

    def fails_later(output):
        calls.append(1)
        if len(calls) > succeed:
            raise RuntimeError("target failed")
        return output[0]

    with pytest.raises(RuntimeError, match="target failed"):
        method(model, [model.features]).explain(x, [fails_later, fails_later])
    assert_state_unchanged(model, before)
    assert hooks_left(model) == {}
    with pytest.raises(ValueError, match="outside"):
        method(model, [model.features]).explain(x, [0, 99])
    assert_state_unchanged(model, before)
    assert hooks_left(model) == {}


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


@pytest.mark.parametrize("batch_size", [0, -3, 1.0, None])
def test_scorecam_bad_batch_size(batch_size):
    model = tiny_cnn()
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        ScoreCAM(model, [model.features], batch_size=batch_size)


def test_smooth_refuses_inference_mode_with_a_clear_message():
    model, x = tiny_cnn(), images(batch=1)
    with torch.inference_mode(), pytest.raises(ValueError, match="inference_mode"):
        SmoothGradCAMPlusPlus(model, [model.features])(x)


@pytest.mark.slow
def test_real_photos_through_efficientnet_lite0():
    model, name = efficientnet_lite0()
    layer = resolve_layer(model, name)  # "bn2": 1280 channels
    photos = [image for _, image in bundled_photos()[:2]]
    x = preprocess(photos, size=128)  # a 4x4 layer: few positions, quick masked forwards
    _check_eigencam(model, layer, x)  # 1280 channels on 16 positions
    # Smooth Grad-CAM++: 2 photos x 2 noisy copies; 1e-5 as on the small CNN.
    classes = model(x).argmax(1).tolist()
    _check_smooth(model, layer, x, classes, num_samples=2, std=0.3, batch_size=3, atol=1e-5)
    # ScoreCAM: 1280 masked forwards of one photo, at 64 px (a 2x2 layer).
    x1 = preprocess(photos[:1], size=64)
    target = [ClassifierOutputTarget(int(model(x1).argmax()))]
    res = ScoreCAM(model, [layer], batch_size=256).explain(x1, target)
    their_cam = pytorch_grad_cam.ScoreCAM(model=model, target_layers=[layer])
    their_cam.batch_size = 256
    with their_cam:
        theirs = their_cam(input_tensor=x1, targets=target)
    np.testing.assert_allclose(minmax(res.maps.numpy()), theirs, atol=1e-5)  # as on the small CNN
