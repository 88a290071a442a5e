"""``evaluation.faithfulness`` (public as ``cf.metrics``): average drop, increase in
confidence and the deletion and insertion curves, by hand, chunked, with bad input, and
against the grad-cam and torchcam metrics."""
import math
from contextlib import contextmanager
from functools import partial

import numpy as np
import pytest
import torch
from helpers import images, tiny_cnn
from torch import nn

import cfcam_fast.metrics as metrics


class SumModel(nn.Module):
    """Two logits: the sum of the pixels and 0, so class 0's confidence is sigmoid(sum)."""

    def forward(self, x):
        s = x.flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


ONES = torch.ones(1, 1, 2, 2)
PIXELS = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
MAP = torch.tensor([[[0.1, 0.2], [0.9, 0.5]]])  # pixel order, highest first: 3, 4, 2, 1


def test_average_drop_and_increase_by_hand():
    m = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    drop = metrics.average_drop(SumModel(), ONES, m, [0])
    assert drop.shape == (1,)
    assert drop.item() == pytest.approx(100 * (sigmoid(4) - sigmoid(1)) / sigmoid(4), rel=1e-5)
    assert metrics.increase_in_confidence(SumModel(), ONES, m, [0]).tolist() == [0.0]
    change = metrics.confidence_change(SumModel(), ONES, m, [0])
    assert change.clean.item() == pytest.approx(sigmoid(4)) and change.masked.item() == pytest.approx(sigmoid(1))
    assert torch.equal(change.average_drop, drop)
    # Class 1's confidence rises when the sum falls: a full increase, no drop.
    assert metrics.increase_in_confidence(SumModel(), ONES, m, [1]).tolist() == [1.0]
    assert metrics.average_drop(SumModel(), ONES, m, [1]).tolist() == [0.0]
    # The authors' variant keeps the pixels above 0.5 at full strength: sum 1 + 3 = 4 of PIXELS.
    m = torch.tensor([[[0.6, 0.4], [0.0, 0.5]]])
    drop = metrics.average_drop(SumModel(), PIXELS, m, [0], variant="threshold")
    assert drop.item() == pytest.approx(100 * (sigmoid(10) - sigmoid(1)) / sigmoid(10), rel=1e-5)
    # targets=None explains the arg-max class (class 0 here).
    assert metrics.average_drop(SumModel(), PIXELS, m, variant="threshold").item() == pytest.approx(drop.item())


def test_deletion_insertion_by_hand():
    areas = metrics.deletion_insertion(SumModel(), PIXELS, MAP, [0], steps=4)
    # Deletion removes pixels 3, 4, 2, 1: sums 10, 7, 3, 1, 0; insertion adds them: 0, 3, 7, 9, 10.
    def trap(ys, dx=0.25):
        return sum((a + b) / 2 * dx for a, b in zip(ys, ys[1:]))

    assert areas.deletion.item() == pytest.approx(trap([sigmoid(v) for v in (10, 7, 3, 1, 0)]), rel=1e-5)
    assert areas.insertion.item() == pytest.approx(trap([sigmoid(v) for v in (0, 3, 7, 9, 10)]), rel=1e-5)
    curves = metrics.deletion_insertion_curves(SumModel(), PIXELS, MAP, [0], steps=4)
    assert curves.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert torch.allclose(curves.deletion, torch.tensor([[sigmoid(v) for v in (10, 7, 3, 1, 0)]]))
    # Two steps: the top floor(4 / 2) = 2 pixels, then all 4.
    deletion, insertion = metrics.deletion_insertion(SumModel(), PIXELS, MAP, [0], steps=2)
    assert deletion.item() == pytest.approx(trap([sigmoid(v) for v in (10, 3, 0)], 0.5), rel=1e-5)
    assert insertion.item() == pytest.approx(trap([sigmoid(v) for v in (0, 7, 10)], 0.5), rel=1e-5)
    # The blurred baseline of a constant image is the image: both curves are flat.
    areas = metrics.deletion_insertion(SumModel(), ONES, MAP, [0], steps=4, baseline="blur")
    assert areas.deletion.item() == pytest.approx(sigmoid(4), rel=1e-5)
    assert areas.insertion.item() == pytest.approx(sigmoid(4), rel=1e-5)


def test_chunked_equals_unchunked():
    model, x = tiny_cnn(), images(batch=3)
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    for variant in ("multiply", "threshold"):
        whole = metrics.confidence_change(model, x, maps, variant=variant, batch_size=64)
        parts = metrics.confidence_change(model, x, maps, variant=variant, batch_size=1)
        # Chunks change only the batch composition of the same per-image computation: the
        # confidences agree to float32 reassociation inside the batched convolutions (1e-5
        # relative). Average drop is 100 (clean - masked) / clean: that cancellation scales an
        # error e of a confidence up to 100 e / clean, so it is compared at that tolerance.
        assert torch.allclose(parts.clean, whole.clean, rtol=1e-5, atol=1e-7)
        assert torch.allclose(parts.masked, whole.masked, rtol=1e-5, atol=1e-7)
        allowed = 100 * (1e-5 * whole.clean + 1e-7) / whole.clean
        assert bool(((parts.average_drop - whole.average_drop).abs() <= 2 * allowed).all())
        assert torch.equal(parts.increase, whole.increase)
    for baseline in ("zero", "blur"):
        whole = metrics.deletion_insertion(model, x, maps, steps=8, baseline=baseline, batch_size=1000)
        parts = metrics.deletion_insertion(model, x, maps, steps=8, baseline=baseline, batch_size=5)
        for a, b in zip(whole, parts):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_input_is_a_value_error():
    x, m = PIXELS, MAP
    with pytest.raises(ValueError, match="variant"):
        metrics.average_drop(SumModel(), x, m, variant="mean")
    with pytest.raises(ValueError, match="maps must be"):
        metrics.average_drop(SumModel(), x, m[:, :1])
    with pytest.raises(ValueError, match="batch_size"):
        metrics.increase_in_confidence(SumModel(), x, m, batch_size=0)
    with pytest.raises(ValueError, match="targets for a batch"):
        metrics.average_drop(SumModel(), x, m, [0, 1])
    with pytest.raises(ValueError, match="lie in"):
        metrics.average_drop(SumModel(), x, m, [5])
    with pytest.raises(ValueError, match="baseline"):
        metrics.deletion_insertion(SumModel(), x, m, baseline="noise")
    with pytest.raises(ValueError, match="steps"):
        metrics.deletion_insertion(SumModel(), x, m, steps=0)


def test_average_drop_and_increase_equal_grad_cam_package():
    pgc_metrics = pytest.importorskip("pytorch_grad_cam.metrics.cam_mult_image")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, x = tiny_cnn(), images(batch=4)
    maps = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(3))
    classes = [0, 1, 2, 4]
    targets = [ClassifierOutputSoftmaxTarget(k) for k in classes]
    clean = torch.softmax(model.eval()(x), 1)[torch.arange(4), classes].detach().numpy()
    theirs = pgc_metrics.DropInConfidence()(x, maps.numpy(), targets, model)
    ours = metrics.average_drop(model, x, maps, classes).numpy()
    # They report the drop in probability, not relative and not in percent; 1e-6 absolute
    # is float32 rounding of probabilities in [0, 1].
    np.testing.assert_allclose(ours / 100 * clean, theirs, atol=1e-6)
    theirs = pgc_metrics.IncreaseInConfidence()(x, maps.numpy(), targets, model)
    np.testing.assert_array_equal(metrics.increase_in_confidence(model, x, maps, classes).numpy(), theirs)


class FixedMaps:
    """A torchcam-style extractor that returns given maps, to feed torchcam's metrics."""

    def __init__(self, model, maps):
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    @contextmanager
    def _hooks_off(self):
        yield


def test_metrics_equal_torchcam():
    tc_metrics = pytest.importorskip("torchcam.metrics")
    model, x = tiny_cnn(), images(batch=3)
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(4))
    classes = [1, 0, 3]
    softmax = partial(torch.softmax, dim=-1)
    metric = tc_metrics.ClassificationMetric(FixedMaps(model, maps), softmax)
    metric.update(x, classes)
    summary = metric.summary()
    # torchcam averages over the batch and divides by (Y + 1e-7): 1e-5 relative covers it.
    drop = metrics.average_drop(model, x, maps, classes)
    assert drop.mean().item() / 100 == pytest.approx(summary["avg_drop"], rel=1e-5)
    increase = metrics.increase_in_confidence(model, x, maps, classes)
    assert increase.mean().item() == pytest.approx(summary["conf_increase"])
    # 256 pixels in 16 steps: torchcam's ceil(256 / 16) = 16 pixels per step is ours too.
    for baseline, theirs_base in (("zero", None), ("blur", metrics.blur)):
        metric = tc_metrics.DeletionInsertionMetric(FixedMaps(model, maps), softmax, steps=16,
                                                    baseline=theirs_base, batch_size=7)
        metric.update(x, classes)
        summary = metric.summary()
        areas = metrics.deletion_insertion(model, x, maps, classes, steps=16, baseline=baseline, batch_size=7)
        # Same curves from the same perturbed images; 1e-5 covers float32 batching.
        assert areas.deletion.mean().item() == pytest.approx(summary["deletion_auc"], rel=1e-5)
        assert areas.insertion.mean().item() == pytest.approx(summary["insertion_auc"], rel=1e-5)
