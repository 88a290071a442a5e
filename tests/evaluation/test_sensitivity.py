"""``evaluation.sensitivity`` (public as ``cf.metrics.robustness`` and ``class_sensitivity``):
robustness to gradient noise by hand, class sensitivity against two separate explanations,
and the weighting rules' class sensitivity on a hand-built case."""
import pytest
import torch
from helpers import images, tiny_cnn

import cfcam_fast.metrics as metrics
from cfcam_fast.cams.capture import capture
from cfcam_fast.cams.cfcam import CFCAM
from cfcam_fast.cams.eigencam import EigenCAM
from cfcam_fast.cams.gradcam import GradCAM, GradCAMPlusPlus
from cfcam_fast.cams.scorecam import ScoreCAM
from cfcam_fast.cams.smooth_gradcam import SmoothGradCAMPlusPlus
from cfcam_fast.core.config import CFCAMConfig
from cfcam_fast.core.explain import cfcam


@pytest.mark.parametrize("method", ["gradcam", "cfcam"])
def test_robustness(method):
    model, x = tiny_cnn(), images(batch=2)
    cam = GradCAM(model, [model.features]) if method == "gradcam" else \
        CFCAM(model, [model.features], backend="reference")
    result = metrics.robustness(cam, x, scales=[0.0, 0.5], draws=2, seed=7)
    assert len(result) == 2 and all(r.shape == (2,) for r in result)
    # No noise: the same map, SSIM 1 (float32 maps through a float64 SSIM).
    assert torch.allclose(result[0], torch.ones(2), atol=1e-6)
    assert torch.equal(metrics.robustness(cam, x, scales=[0.0, 0.5], draws=2, seed=7)[1], result[1])
    # By hand: noise of 0.5 * std(G_b) on the raw gradients, before the whole core.
    got = capture(model, x, [model.features])
    A, G = got.activations[0], got.gradients[0]
    gen = torch.Generator().manual_seed(7)
    torch.randn((2, *G.shape), generator=gen)  # the draws of scale 0.0
    noise = torch.randn((2, *G.shape), generator=gen)
    noisy = (G[None] + 0.5 * G.flatten(1).std(1).reshape(1, -1, 1, 1, 1) * noise).flatten(0, 1)
    if method == "gradcam":
        maps = cam._core(A.repeat(2, 1, 1, 1), noisy, (16, 16)).maps
        clean = cam._core(A, G, (16, 16)).maps
    else:
        maps = cfcam(A.repeat(2, 1, 1, 1), noisy, (16, 16), backend="reference")
        clean = cfcam(A, G, (16, 16), backend="reference")
    expected = metrics.ssim(clean.repeat(2, 1, 1), maps).reshape(2, 2).mean(0)
    assert torch.allclose(result[1], expected, atol=1e-6)
    with pytest.raises(ValueError, match="scales"):
        metrics.robustness(cam, x, scales=[-1.0])


@pytest.mark.parametrize("method", [GradCAM, GradCAMPlusPlus])
def test_class_sensitivity_equals_two_explains(method):
    model, x = tiny_cnn(), images(batch=3)
    cam = method(model, [model.features])
    result = metrics.class_sensitivity(cam, x, pair="top-bottom")
    logits = model.eval()(x)
    assert torch.equal(result.classes[:, 0], logits.argmax(1))
    assert torch.equal(result.classes[:, 1], logits.argmin(1))
    first, second = cam(x, result.classes[:, 0]), cam(x, result.classes[:, 1])
    # 1e-5: the batched backward and float32 maps against two separate calls.
    assert torch.allclose(result.maps[:, 0], first, atol=1e-5)
    assert torch.allclose(result.maps[:, 1], second, atol=1e-5)
    assert torch.allclose(result.correlation, metrics.pearson(first, second)[0], atol=1e-5)
    chunked = metrics.class_sensitivity(cam, x, pair="top-bottom", batch_size=2)
    assert torch.allclose(chunked.correlation, result.correlation, atol=1e-5)
    second = metrics.class_sensitivity(cam, x, pair="top-second")
    assert torch.equal(second.classes, logits.topk(2, 1).indices)
    with pytest.raises(ValueError, match="pair"):
        metrics.class_sensitivity(cam, x, pair="top-top")


def test_cfcam_class_sensitivity_runs():
    model, x = tiny_cnn(), images(batch=2)
    cam = CFCAM(model, [model.features], config=CFCAMConfig(weighting="standardized"), backend="reference")
    result = metrics.class_sensitivity(cam, x)
    assert result.correlation.shape == (2,) and bool(torch.isfinite(result.correlation).all())
    assert torch.allclose(result.maps[:, 0], cam(x, result.classes[:, 0]), atol=1e-5)


def test_authors_rule_is_class_blind_where_the_others_are_not():
    """Activations shared by two classes; gradients constant per channel, of realistic
    size (1e-6), with opposite channel patterns for the two classes. The softmax of such
    small weights is uniform to ~1e-6, so the authors' rule gives one map for both classes;
    the standardized and linear rules follow the sign pattern and give different maps."""
    gen = torch.Generator().manual_seed(3)
    A = torch.rand(1, 16, 5, 5, generator=gen)
    pattern = torch.linspace(-1.0, 1.0, 16).reshape(1, 16, 1, 1)
    G = {k: 1e-6 * sign * pattern.expand(1, 16, 5, 5).contiguous() for k, sign in (("a", 1.0), ("b", -1.0))}
    maps = {}
    for weighting in ("softmax", "standardized", "linear"):
        config = CFCAMConfig(weighting=weighting)
        maps[weighting] = [cfcam(A, G[k], (10, 10), config, backend="reference") for k in "ab"]
    # Softmax of weights within 2e-6 of each other: alpha uniform to 2e-6, maps within 1e-5.
    assert torch.allclose(maps["softmax"][0], maps["softmax"][1], atol=1e-5)
    for weighting in ("standardized", "linear"):
        first, second = maps[weighting]
        assert (first - second).abs().max().item() > 0.1
        r, _ = metrics.pearson(first, second)
        assert r.item() < 0.9


@pytest.mark.parametrize("make", [lambda m: ScoreCAM(m, [m.features]),
                                  lambda m: SmoothGradCAMPlusPlus(m, [m.features], num_samples=2)],
                         ids=["Score-CAM", "Smooth Grad-CAM++"])
def test_methods_whose_maps_need_more_than_one_capture_are_refused(make):
    """robustness and class_sensitivity feed the CAM captured gradients: a method that runs
    the model again for its maps cannot take them, and says so."""
    model, x = tiny_cnn(), images(batch=1)
    cam = make(model)
    for metric in (lambda: metrics.robustness(cam, x, scales=[0.5], draws=1),
                   lambda: metrics.class_sensitivity(cam, x)):
        with pytest.raises(ValueError, match="runs the model again for its maps"):
            metric()


def test_eigencam_is_class_blind_and_robustness_refuses_it():
    model, x = tiny_cnn(), images(batch=2)
    cam = EigenCAM(model, [model.features])
    result = metrics.class_sensitivity(cam, x)
    # EigenCAM reads no gradient: the two classes get one map, correlation 1.
    torch.testing.assert_close(result.maps[:, 0], result.maps[:, 1], rtol=0, atol=0)
    assert torch.allclose(result.correlation, torch.ones(2), atol=1e-6)
    with pytest.raises(ValueError, match="uses none"):
        metrics.robustness(cam, x, scales=[0.5], draws=1)
