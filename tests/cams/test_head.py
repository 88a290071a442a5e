"""The global-average-pooling + linear shortcut (``cfcam_fast.cams.head``): found and proven
where it holds, refused with a reason where it does not, model left untouched, and its
gradients equal to autograd's on inputs other than the one it was proven on."""
from __future__ import annotations

import pytest
import torch
import torchvision
from helpers import assert_state_unchanged, hooks_left, model_state, tiny_cnn
from torch import nn

from cfcam_fast.cams.head import ATOL, RTOL, LinearHead, find_linear_head
from cfcam_fast.data.models import load_model


def build(name: str) -> tuple[nn.Module, nn.Module, int]:
    """A model in eval mode, its target layer and an input size it accepts."""
    if name == "efficientnet_lite0":
        model, layer = load_model(name)
        return model, model.get_submodule(layer), 224
    model = getattr(torchvision.models, name)(weights=None).eval()
    return model, model.get_submodule({"resnet18": "layer4"}.get(name, "features")), 64


def images(size: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=["resnet18", "mobilenet_v2", "efficientnet_lite0"])
def proven(request):
    """A model that ends in global average pooling + linear, its target layer, an input
    size and what ``find_linear_head`` says on a first random input."""
    model, layer, size = build(request.param)
    return model, layer, size, *find_linear_head(model, layer, images(size, seed=1))


def test_the_head_of_gap_models_is_found_and_proven(proven):
    model, _, _, head, why = proven
    assert isinstance(head, LinearHead), why
    assert "proven against autograd" in why and "(1000 classes)" in why
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert head.weight.data_ptr() == linear.weight.data_ptr() and not head.weight.requires_grad
    assert head.bias.data_ptr() == linear.bias.data_ptr()


def test_the_shortcut_matches_autograd_on_a_fresh_input(proven):
    """For several classes per image, on an input the proof never saw, within the module's
    stated tolerance; and the logits are the pooled activations through the head."""
    model, layer, size, head, _ = proven
    kept = []
    handle = layer.register_forward_hook(lambda _m, _i, out: kept.append(out))
    try:
        logits = model(images(size, seed=2))
    finally:
        handle.remove()
    A = kept[0]
    for classes in (logits.argmax(1), logits.argmin(1), torch.tensor([0, 999]), torch.tensor([417, 417])):
        (grad,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), A, retain_graph=True)
        shortcut = head.gradients(A.detach(), classes)
        assert shortcut.shape == A.shape and shortcut.dtype == A.dtype
        assert ((shortcut - grad).abs() <= ATOL + RTOL * grad.abs()).all()
    pooled = A.detach().mean((2, 3)) @ head.weight.T + head.bias
    assert torch.allclose(logits.detach(), pooled, rtol=0, atol=RTOL * logits.abs().max().item())


def test_mobilenet_v3_small_falls_back_with_the_reason():
    model, layer, size = build("mobilenet_v3_small")
    head, why = find_linear_head(model, layer, images(size))
    assert head is None
    assert "'classifier.3'" in why and "576 channels" in why and "not global average pooling" in why


def test_a_declared_head_is_proven():
    model, layer, size = build("resnet18")
    head, why = find_linear_head(model, layer, images(size), head=model.fc)
    assert head is not None and head.weight.data_ptr() == model.fc.weight.data_ptr(), why
    assert "'fc'" in why


@pytest.mark.parametrize("case", ["wrong_shape", "not_in_model", "wrong_layer"])
def test_a_wrong_declared_head_falls_back_with_the_reason(case):
    model, layer, size = build("resnet18")
    declared = {"wrong_shape": nn.Linear(512, 10), "not_in_model": nn.Linear(512, 1000)}.get(case, model.fc)
    if case == "wrong_layer":
        layer = model.layer3
    head, why = find_linear_head(model, layer, images(size), head=declared)
    assert head is None
    expected = {"wrong_shape": "(10, 512)", "not_in_model": "logits differ from mean(A) @ W.T + b",
                "wrong_layer": "'layer3' gives 256 channels"}[case]
    assert expected in why and "not global average pooling" in why


def test_max_pooling_before_the_head_falls_back():
    model = tiny_cnn()
    model.pool = nn.AdaptiveMaxPool2d(1)
    head, why = find_linear_head(model, model.features, images(16))
    assert head is None and "logits differ" in why and "'features'" in why


@pytest.mark.parametrize("modules, layer, expected", [
    ((nn.Flatten, lambda: nn.Linear(48, 5)), "1", "no nn.Linear runs after '1'"),
    ((lambda: nn.Conv2d(3, 4, 3), nn.Flatten, lambda: nn.Linear(4 * 2 * 2, 5)), "1", "not [B, C, H, W]"),
    ((lambda: nn.Conv2d(3, 4, 3), lambda: nn.AdaptiveAvgPool2d(1)), "0", "no nn.Linear runs after '0'"),
])
def test_other_architectures_fall_back_with_the_reason(modules, layer, expected):
    model = nn.Sequential(*(make() for make in modules))
    head, why = find_linear_head(model, model.get_submodule(layer), images(4))
    assert head is None and expected in why


def test_a_head_without_bias_on_a_frozen_model_is_proven():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3, bias=False))
    model.requires_grad_(False)
    head, why = find_linear_head(model, model[0], images(8))
    assert head is not None and head.bias is None and "'3' (3 classes)" in why, why
    assert not any(p.requires_grad for p in model.parameters())


def test_a_model_output_that_is_not_logits_falls_back():
    class DictOutput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_cnn()

        def forward(self, x):
            return {"logits": self.net(x)}

    model = DictOutput()
    head, why = find_linear_head(model, model.net.features, images(16))
    assert head is None and "not a [2, K] tensor" in why


@pytest.mark.parametrize("layer", ["layer4", "layer3"])  # proven and refused
def test_the_model_is_left_as_it_was(layer):
    model, _, size = build("resnet18")
    model.train()
    model.layer2.eval()
    before = model_state(model)
    find_linear_head(model, model.get_submodule(layer), images(size))
    assert_state_unchanged(model, before)
    assert hooks_left(model) == {}
    assert all(not m._forward_hooks for m in model.modules())


def test_gradients_run_under_inference_mode_in_the_activations_dtype():
    model = tiny_cnn()
    head, why = find_linear_head(model, model.features, images(16))
    assert head is not None, why
    A = torch.randn(3, 12, 8, 8)
    classes = torch.tensor([4, 0, 4])
    with torch.inference_mode():
        G = head.gradients(A, classes)
        G16 = head.gradients(A.half(), classes)
    assert G.shape == A.shape and G.dtype == A.dtype and G.device == A.device
    assert G16.dtype == torch.float16 and G16.shape == A.shape
    assert torch.equal(G[1, :, 5, 2], model.fc.weight[0].detach() / 64)
    assert torch.equal(G[0], G[2])
