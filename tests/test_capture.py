"""The model side of a CAM call: targets, errors, hooks and model state (docs/api.md).

Every call (successful or raising) must leave no hook on any module and the model's
training flags, requires_grad flags, parameters, BatchNorm statistics and ``.grad`` as
they were. The backend is the reference throughout (the fast ones are compared with it
elsewhere).
"""
import numpy as np
import pytest
import torch
from helpers import assert_state_unchanged, hooks_left, images, model_state, tiny_cnn
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import cfcam_fast as cf
from cfcam_fast.cams.capture import capture


def explain(model, x, targets=None, layers=None, **kwargs):
    layers = [model.features] if layers is None else layers
    with cf.CFCAM(model, layers, backend="reference", **kwargs) as cam:
        return cam.explain(x, targets)


def manual_capture(model, layer, x, classes):
    """Activations and gradients of ``logits[b, classes[b]]`` (raw logits, seed 1), written
    here independently of cfcam_fast: a forward hook and ``torch.autograd.grad``."""
    kept = []
    handle = layer.register_forward_hook(lambda m, i, o: kept.append(o))
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
        score = logits[torch.arange(x.shape[0]), torch.as_tensor(classes)].sum()
        (grad,) = torch.autograd.grad(score, kept[0])
    finally:
        handle.remove()
        model.train(was_training)
    return kept[0].detach(), grad.detach(), logits.detach()


# --------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# bad layers and non-finite values
# --------------------------------------------------------------------------------------
class InjectNaN(nn.Module):
    """Identity, except that image ``index`` gets a NaN (forward) or its gradient does
    (backward)."""

    def __init__(self, index: int, where: str) -> None:
        super().__init__()
        self.index, self.where = index, where

    def forward(self, x):
        if self.where == "forward":
            x = x.clone()
            x[self.index, 0, 0, 0] = float("nan")
            return x
        return _NaNGrad.apply(x, self.index)


class _NaNGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index):
        ctx.index = index
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        grad[ctx.index] = float("nan")
        return grad, None


@pytest.mark.parametrize("where,name", [("forward", "activations"), ("backward", "gradients")])
def test_non_finite_values_name_the_batch_index(where, name):
    model, x = tiny_cnn(), images()
    # activations: NaN injected before the target layer's ReLU output is kept;
    # gradients: a NaN gradient flows back into the target layer from the layer after it.
    if where == "forward":
        model.features.append(InjectNaN(1, "forward"))
    else:
        model.pool = nn.Sequential(InjectNaN(1, "backward"), model.pool)
    model.train()
    before = model_state(model)
    with pytest.raises(ValueError, match=rf"{name} contain non-finite .* batch index 1$"):
        explain(model, x, [0, 0, 0])
    assert hooks_left(model) == {}
    assert_state_unchanged(model, before)


@pytest.mark.parametrize("layer_name,shape", [("flatten", r"\(3, 12\)"), ("fc", r"\(3, 5\)")])
def test_non_4d_layer_names_layer_and_shape(layer_name, shape):
    model, x = tiny_cnn(), images()
    model.train()
    before = model_state(model)
    with pytest.raises(ValueError, match=rf"'{layer_name}' gave shape {shape}"):
        explain(model, x, layers=[getattr(model, layer_name)])
    assert hooks_left(model) == {}
    assert_state_unchanged(model, before)


def test_layer_outside_the_forward_is_an_error():
    model, x = tiny_cnn(), images()
    stray = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="did not run"):
        explain(model, x, layers=[stray])
    assert hooks_left(model) == {} and hooks_left(stray) == {}


def test_layer_returning_a_tuple_is_an_error():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.pair(x)[0].mean((2, 3)))

    model = Model()
    with pytest.raises(ValueError, match="'pair' returned tuple"):
        explain(model, images(), layers=[model.pair])
    assert hooks_left(model) == {}


# --------------------------------------------------------------------------------------
# model state after a successful call
# --------------------------------------------------------------------------------------
def test_successful_call_in_train_mode_leaves_model_as_it_was():
    model, x = tiny_cnn(), images()
    model.train()
    model.stem[0].weight.requires_grad_(False)  # a mix of flags, kept as they are
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.25)  # an existing .grad
    before = model_state(model)
    res = explain(model, x)
    assert hooks_left(model) == {}
    assert_state_unchanged(model, before)
    # Eval mode during the call: the maps equal those of the model put in eval mode first.
    assert torch.equal(res.maps, explain(tiny_cnn().eval(), x).maps)


def test_frozen_model_still_works():
    model, x = tiny_cnn(), images()
    model.requires_grad_(False)
    before = model_state(model)
    res = explain(model, x, [2, 2, 2])
    assert torch.isfinite(res.maps).all() and res.maps.amax((1, 2)).eq(1).all()
    assert res.channel_weights.abs().sum() > 0, "gradients must flow with frozen parameters"
    assert_state_unchanged(model, before)
    assert hooks_left(model) == {}
    # The frozen model gives the same result as the trainable one.
    assert torch.equal(res.channel_weights, explain(tiny_cnn(), x, [2, 2, 2]).channel_weights)


def test_no_parameter_grad_is_created():
    model, x = tiny_cnn(), images()
    explain(model, x)
    assert all(p.grad is None for p in model.parameters())


def test_input_requiring_grad_is_left_alone():
    model, x = tiny_cnn(), images().requires_grad_(True)
    explain(model, x)
    assert x.grad is None


def test_capture_returns_layer_tensors():
    model, x = tiny_cnn(), images()
    got = capture(model, x, [model.features], [0, 1, 2])
    A, G, logits = manual_capture(model, model.features, x, [0, 1, 2])
    assert torch.equal(got.activations[0], A) and torch.equal(got.gradients[0], G)
    assert torch.equal(got.logits, logits)
    assert got.class_idx.tolist() == [0, 1, 2]
    assert not got.activations[0].requires_grad and not got.gradients[0].requires_grad


@pytest.mark.parametrize("frozen", [False, True])
def test_in_place_op_after_the_target_layer(frozen):
    # features = conv, BN, ReLU(inplace=True); target: the BN. The in-place ReLU must not
    # overwrite the kept BN output (its negative values stay), nor fail on a frozen model.
    model, x = tiny_cnn(), images()
    model.features[2] = nn.ReLU(inplace=True)
    model.requires_grad_(not frozen)
    res = explain(model, x, [0, 0, 0], layers=[model.features[1]])
    plain = tiny_cnn()
    A, G, _ = manual_capture(plain, plain.features[1], x, [0, 0, 0])
    assert (A < 0).any()
    expected = cf.cfcam_explain(A, G, x.shape[-2:], backend="reference")
    for field in ("labels", "channel_weights", "maps"):
        assert torch.equal(getattr(res, field), getattr(expected, field)), field


class _RaiseInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise AssertionError("the backward went below the target layer")


class NoBackward(nn.Module):
    """Identity whose backward raises."""

    def forward(self, x):
        return _RaiseInBackward.apply(x)


def test_backward_stops_at_the_target_layer():
    model, x = tiny_cnn(), images()
    model.stem.append(NoBackward())
    res = explain(model, x)  # would raise if the backward ran into the stem
    assert torch.isfinite(res.maps).all()


@pytest.mark.gpu
def test_maps_on_the_input_device_cuda():
    model, x = tiny_cnn().cuda(), images().cuda()
    res = explain(model, x)
    assert res.maps.device == x.device and res.class_idx.device == x.device


def test_model_error_mid_forward_leaves_model_as_it_was():
    # An input the model cannot take: PyTorch's own error passes through, and the hooks
    # and the train-mode flags are still restored.
    model = tiny_cnn().train()
    before = model_state(model)
    with pytest.raises(RuntimeError):
        explain(model, torch.randn(2, 4, 16, 16))
    assert hooks_left(model) == {}
    assert_state_unchanged(model, before)
