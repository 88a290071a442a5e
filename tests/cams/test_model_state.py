"""What every CAM call does to a model and undoes (``cams.model_state``: eval mode during
the call, hooks, locks): after a successful call in train mode with a user's own ``.grad``
and ``requires_grad`` flags, after an error inside the model or inside a target, for CF-CAM
and for each comparison method; no parameter's ``.grad`` is created and an input's
``requires_grad`` is left alone."""
import pytest
import torch
from helpers import COMPARATORS, assert_state_unchanged, explain, hooks_left, images, model_state, tiny_cnn

from cfcam_fast import ScoreCAM, SmoothGradCAMPlusPlus


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


def test_no_parameter_grad_is_created():
    model, x = tiny_cnn(), images()
    explain(model, x)
    assert all(p.grad is None for p in model.parameters())


def test_input_requiring_grad_is_left_alone():
    model, x = tiny_cnn(), images().requires_grad_(True)
    explain(model, x)
    assert x.grad is None


def test_model_error_mid_forward_leaves_model_as_it_was():
    # An input the model cannot take: PyTorch's own error passes through, and the hooks
    # and the train-mode flags are still restored.
    model = tiny_cnn().train()
    before = model_state(model)
    with pytest.raises(RuntimeError):
        explain(model, torch.randn(2, 4, 16, 16))
    assert hooks_left(model) == {}
    assert_state_unchanged(model, before)


@pytest.mark.parametrize("method", COMPARATORS)
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
