"""cfcam_fast.metrics.randomization_sanity: the model-parameter randomization test."""
import numpy as np
import pytest
import torch
from helpers import assert_state_unchanged, hooks_left, images, model_state, tiny_cnn
from scipy.stats import spearmanr

import cfcam_fast as cf
import cfcam_fast.metrics as metrics
from cfcam_fast.evaluation.sanity import spearman

STEPS = ["fc", "features.1", "features.0", "stem.1", "stem.0"]  # TinyCNN's layers, output first


def test_spearman_is_scipys_with_ties():
    gen = torch.Generator().manual_seed(0)
    a = (torch.rand(4, 6, 7, generator=gen) * 5).floor()  # many ties
    b = torch.rand(4, 6, 7, generator=gen)
    ours = spearman(a, b)
    for i in range(4):
        # float64 ranks and correlation, returned in float32: 1e-6 covers float32 rounding.
        assert ours[i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten())[0], abs=1e-6)
    assert spearman(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3)).tolist() == [1.0]
    assert spearman(torch.zeros(1, 3, 3), b[:1, :3, :3]).tolist() == [0.0]


def test_grad_cam_similarity_falls_and_the_model_is_untouched():
    model = tiny_cnn()
    model.train()
    handle = model.fc.register_forward_hook(lambda *args: None)  # a hook of the user's own
    before = model_state(model)
    x = images(4, 32)
    cam = cf.GradCAM(model, [model.features])
    result = metrics.randomization_sanity(cam, x)
    assert result.steps == STEPS
    assert result.spearman.shape == result.ssim.shape == (5, 4)
    assert_state_unchanged(model, before)
    assert hooks_left(model) == {"fc": ["_forward_hooks"]}
    handle.remove()
    assert cam.model is model and cam.target_layers[0] is model.features
    # Randomising the head changes Grad-CAM's maps (its weights are the head's gradients),
    # and the fully randomised model's maps are unrelated to the original ones.
    spear, sim = result.spearman.mean(1), result.ssim.mean(1)
    assert float(spear[0]) < 0.5 and float(sim[0]) < 0.5
    assert float(spear[-1].abs()) < 0.5 and float(sim[-1].abs()) < 0.5


@pytest.mark.parametrize("make", [lambda m: cf.CFCAM(m, [m.features]), lambda m: cf.GradCAM(m, [m.features]),
                                  lambda m: cf.CFCAM(m, [m.features], config=cf.CFCAMConfig(weighting="linear"))])
@pytest.mark.parametrize("order", ["cascading", "independent"])
def test_both_orders_for_every_cam(make, order):
    model = tiny_cnn()
    before = model_state(model)
    x = images(3, 32)
    result = metrics.randomization_sanity(make(model), x, order=order, seed=1)
    assert result.steps == STEPS
    assert bool(torch.isfinite(result.spearman).all() and torch.isfinite(result.ssim).all())
    assert bool((result.spearman.abs() <= 1).all())
    assert_state_unchanged(model, before)
    assert not hooks_left(model)
    again = metrics.randomization_sanity(make(model), x, order=order, seed=1)
    torch.testing.assert_close(again.spearman, result.spearman, rtol=0, atol=0)  # seeded: repeatable


def test_cascading_and_independent_agree_on_the_first_step():
    model = tiny_cnn()
    x = images(3, 32)
    cam = cf.GradCAM(model, [model.features])
    cascading = metrics.randomization_sanity(cam, x, order="cascading")
    independent = metrics.randomization_sanity(cam, x, order="independent")
    # Both randomise only the head at step 0, with the same seed.
    torch.testing.assert_close(cascading.ssim[0], independent.ssim[0], rtol=0, atol=0)
    assert not torch.equal(cascading.ssim[1:], independent.ssim[1:])


def test_the_callers_random_state_is_kept():
    model = tiny_cnn()
    state = torch.random.get_rng_state()
    metrics.randomization_sanity(cf.GradCAM(model, [model.features]), images(2, 32))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_targets_are_fixed_to_the_original_classes():
    model = tiny_cnn()
    x = images(2, 32)
    cam = cf.GradCAM(model, [model.features])
    explicit = metrics.randomization_sanity(cam, x, [3, 3])
    default = metrics.randomization_sanity(cam, x)
    classes = cam.explain(x).class_idx
    fixed = metrics.randomization_sanity(cam, x, classes)
    torch.testing.assert_close(default.ssim, fixed.ssim, rtol=0, atol=0)
    if not bool((classes == 3).all()):
        assert not np.allclose(explicit.ssim.numpy(), default.ssim.numpy())


def test_original_maps_given_save_an_explanation_and_change_nothing(monkeypatch):
    model = tiny_cnn()
    x = images(2, 32)
    cam = cf.GradCAM(model, [model.features])
    computed = metrics.randomization_sanity(cam, x, seed=2)
    original = cam.explain(x)
    calls = []
    explain = cf.GradCAM.explain
    monkeypatch.setattr(cf.GradCAM, "explain", lambda self, *a, **k: calls.append(1) or explain(self, *a, **k))
    given = metrics.randomization_sanity(cam, x, original.class_idx, seed=2, original_maps=original.maps)
    assert len(calls) == len(STEPS)  # one explanation per step, none for the original
    assert torch.equal(given.spearman, computed.spearman) and torch.equal(given.ssim, computed.ssim)
    with pytest.raises(ValueError, match="needs the targets"):
        metrics.randomization_sanity(cam, x, original_maps=original.maps)
    with pytest.raises(ValueError, match=r"original_maps must be a \[B, H, W\] tensor with B = 2"):
        metrics.randomization_sanity(cam, x, original.class_idx, original_maps=original.maps[:1])


def test_bad_arguments():
    model = tiny_cnn()
    cam = cf.GradCAM(model, [model.features])
    with pytest.raises(ValueError, match="order must be one of"):
        metrics.randomization_sanity(cam, images(2, 32), order="random")
    with pytest.raises(ValueError, match="cam must be a cfcam_fast CAM"):
        metrics.randomization_sanity(model, images(2, 32))
    with pytest.raises(ValueError, match="seed must be an int"):
        metrics.randomization_sanity(cam, images(2, 32), seed="0")
    with pytest.raises(ValueError, match="images must be"):
        metrics.randomization_sanity(cam, images(2, 32)[0])
    stranger = cf.GradCAM(model, [tiny_cnn().features])  # a layer of another model
    with pytest.raises(ValueError, match="not modules of cam.model"):
        metrics.randomization_sanity(stranger, images(2, 32))


@pytest.mark.parametrize("order", ["cascading", "independent"])
def test_at_reports_the_chosen_steps_as_every_step_would(order):
    model = tiny_cnn()
    x = images(2, 32)
    cam = cf.GradCAM(model, [model.features])
    full = metrics.randomization_sanity(cam, x, order=order, seed=3)
    some = metrics.randomization_sanity(cam, x, order=order, seed=3, at=[-1, 0, 2, 2])
    assert full.at == list(range(5)) and some.at == [0, 2, 4] and some.steps == STEPS
    # The same layers re-initialised from the same seeds, explained on the same images:
    # skipping the other steps' explanations changes nothing, bit for bit.
    assert torch.equal(some.spearman, full.spearman[[0, 2, 4]])
    assert torch.equal(some.ssim, full.ssim[[0, 2, 4]])


def test_at_bad_values():
    model = tiny_cnn()
    cam = cf.GradCAM(model, [model.features])
    for bad in ([], [5], [-6], [1.0], 2):
        with pytest.raises(ValueError, match="at"):
            metrics.randomization_sanity(cam, images(1, 32), at=bad)
