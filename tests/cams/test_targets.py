"""``cams.targets``, the one parser of every CAM's ``targets``: ``None`` (each image's
arg-max class), a list, a tensor, NumPy ints, 0-d tensors, grad-cam's ``ClassifierOutputTarget``
and callables give the same maps for the same classes; bad targets are a ValueError that
leaves the model untouched. Maps are compared with the reference backend's on tensors
captured here by hand."""
import numpy as np
import pytest
import torch
from helpers import (
    COMPARATORS,
    assert_state_unchanged,
    explain,
    hooks_left,
    images,
    manual_capture,
    model_state,
    tiny_cnn,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import cfcam_fast as cf


def test_targets_none_explains_the_argmax_class():
    model, x = tiny_cnn(), images()
    res = explain(model, x)
    A, G, logits = manual_capture(model, model.features, x, logits_argmax(model, x))
    assert torch.equal(res.class_idx, logits.argmax(1))
    assert torch.equal(res.logits, logits)
    expected = cf.cfcam_explain(A, G, x.shape[-2:], backend="reference")
    assert torch.equal(res.channel_weights, expected.channel_weights)
    assert torch.equal(res.maps, expected.maps)


def logits_argmax(model, x):
    with torch.no_grad():
        return model.eval()(x).argmax(1).tolist()


@pytest.mark.parametrize("form", ["list", "tensor", "numpy_ints", "0-d tensors", "ClassifierOutputTarget", "lambda"])
def test_targets_forms_agree(form):
    model, x = tiny_cnn(), images()
    classes = [1, 4, 1]
    targets = {
        "list": classes,
        "tensor": torch.tensor(classes),
        "numpy_ints": [np.int64(c) for c in classes],
        "0-d tensors": list(torch.tensor(classes)),
        "ClassifierOutputTarget": [ClassifierOutputTarget(c) for c in classes],
        "lambda": [lambda out, c=c: out[c] for c in classes],
    }[form]
    res = explain(model, x, targets)
    assert res.class_idx.tolist() == (classes if form != "lambda" else [-1, -1, -1])
    A, G, _ = manual_capture(model, model.features, x, classes)
    expected = cf.cfcam_explain(A, G, x.shape[-2:], backend="reference")
    # Same classes, same raw-logit gradients: identical intermediates and maps.
    for field in ("labels", "channel_weights", "weights", "maps"):
        assert torch.equal(getattr(res, field), getattr(expected, field)), field


def test_targets_change_channel_weights():
    # The gradient is class-specific, so the weights w_c of two classes differ.
    model, x = tiny_cnn(), images()
    w0 = explain(model, x, [0, 0, 0]).channel_weights
    w3 = explain(model, x, [3, 3, 3]).channel_weights
    assert not torch.allclose(w0, w3)


@pytest.mark.parametrize("targets,message", [
    ([1, 2], "2 targets for a batch of 3"),
    ([1, 2, 3, 4], "4 targets for a batch of 3"),
    ([], "0 targets for a batch of 3"),
    (torch.tensor([1, 2]), r"shape \[3\]"),
    (torch.tensor([1.0, 2.0, 3.0]), "integer tensor"),
    ([0, 1, 5], "outside"),
    ([0, 1, -1], "outside"),
    ([0, "cat", 1], "int or a callable"),
    ([True, 0, 1], "int or a callable"),
    ([torch.tensor(1.5), 0, 1], "integer class index"),
    ([lambda out: out, 0, 0], "scalar"),
    ("012", "targets must be"),
])
def test_bad_targets_raise_and_leave_model_untouched(targets, message):
    model, x = tiny_cnn(), images()
    model.train()
    before = model_state(model)
    with pytest.raises(ValueError, match=message):
        explain(model, x, targets)
    assert hooks_left(model) == {}
    assert_state_unchanged(model, before)


@pytest.mark.parametrize("method", COMPARATORS)
def test_callable_targets_equal_int_targets(method):
    model, x = tiny_cnn(), images(batch=2)
    torch.manual_seed(5)
    by_int = method(model, [model.features]).explain(x, [4, 1])
    torch.manual_seed(5)
    by_callable = method(model, [model.features]).explain(x, [ClassifierOutputTarget(4), ClassifierOutputTarget(1)])
    # The same logits are read either way, so the maps are identical.
    assert torch.equal(by_int.maps, by_callable.maps)
    assert torch.equal(by_int.class_idx, by_callable.class_idx)
