"""Class sensitivity: the batched two-class capture, Pearson on known maps, and the
weighting rules on a hand-built case."""
import pytest
import torch
from helpers import assert_state_unchanged, hooks_left, images, model_state, tiny_cnn

import cfcam_fast.metrics as metrics
from cfcam_fast.cams.capture import capture, capture_classes
from cfcam_fast.cams.cfcam import CFCAM
from cfcam_fast.cams.gradcam import GradCAM, GradCAMPlusPlus
from cfcam_fast.core.config import CFCAMConfig
from cfcam_fast.core.explain import cfcam


def test_batched_two_class_backward_equals_two_backwards():
    model, x = tiny_cnn(), images(batch=3)
    before = model_state(model)
    got = capture_classes(model, x, [model.features, model.stem],
                          lambda logits: torch.stack([logits.argmax(1), logits.argmin(1)], 1))
    assert_state_unchanged(model, before)
    assert hooks_left(model) == {}
    assert got.class_idx.shape == (3, 2)
    for k in range(2):
        single = capture(model, x, [model.features, model.stem], got.class_idx[:, k])
        for layer in range(2):
            assert torch.equal(got.activations[layer], single.activations[layer])
            # The same backward, vectorised over the seeds: equal up to float32 summation order.
            assert torch.allclose(got.gradients[layer][k], single.gradients[layer], rtol=1e-6, atol=1e-7)
    fixed = capture_classes(model, x, [model.features], torch.tensor([[0, 1], [2, 3], [4, 0]]))
    assert fixed.gradients[0].shape == (2, 3, 12, 8, 8)
    with pytest.raises(ValueError, match="classes must"):
        capture_classes(model, x, [model.features], torch.tensor([[0, 9]] * 3))
    with pytest.raises(ValueError, match="classes must"):
        capture_classes(model, x, [model.features], torch.tensor([0, 1, 2]))
    assert hooks_left(model) == {}


def test_pearson_on_known_maps():
    a = torch.rand(4, 6, 5, generator=torch.Generator().manual_seed(1))
    r, constant = metrics.pearson(a, 2 * a + 1)
    assert torch.allclose(r, torch.ones(4)) and not bool(constant.any())
    assert torch.allclose(metrics.pearson(a, 1 - a)[0], -torch.ones(4))
    # Two centred patterns with a known correlation of 0.5: b = 0.5 u + sqrt(0.75) v, u _|_ v.
    u = torch.tensor([1.0, -1.0, 1.0, -1.0])
    v = torch.tensor([1.0, 1.0, -1.0, -1.0])
    r, _ = metrics.pearson(u[None], (0.5 * u + 0.75 ** 0.5 * v)[None])
    assert r.item() == pytest.approx(0.5, abs=1e-6)
    # A map that is zero everywhere: reported by the flag, never NaN.
    zero = torch.zeros(1, 6, 5)
    r, constant = metrics.pearson(zero, zero)
    assert r.tolist() == [1.0] and constant.tolist() == [[True, True]]
    r, constant = metrics.pearson(a[:1], zero)
    assert r.tolist() == [0.0] and constant.tolist() == [[False, True]]


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
