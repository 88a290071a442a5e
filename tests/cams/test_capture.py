"""``cams.capture``, the model side of every CAM call: what the model returns
(``output_selector``), what it is given (integer images, ``torch.inference_mode()``), the
target layers (TorchScript, a layer that runs twice and ``layer_call``, 1x1 and non-4D
outputs, ``reshape_transform``, an in-place op after the layer), non-finite values and values
beyond float32, and the captured tensors themselves (``capture``, ``capture_classes``).

Every failed call must leave no hook and the model's training flags, requires_grad flags,
parameters, BatchNorm statistics and ``.grad`` as they were. Maps are compared with the
reference backend's on tensors captured here by hand; the numeric cases compare the
``torch`` backend with the reference on the same tensors: labels identical, maps within 1e-5
(measured: at most 9e-7)."""
import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    assert_state_unchanged,
    cfcam_model,
    explain,
    hooks_left,
    images,
    manual_capture,
    model_state,
    tiny_cnn,
)
from torch import nn

import cfcam_fast as cf
from cfcam_fast.cams.capture import capture, capture_classes

CAMS = [cf.CFCAM, cf.GradCAM, cf.GradCAMPlusPlus]
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript is what is tested


def make_cam(cls, model, layers, **kwargs):
    extra = {"backend": "reference"} if cls is cf.CFCAM else {}
    return cls(model, layers, **extra, **kwargs)


def assert_fails_cleanly(model, call, error, match):
    """``call()`` raises ``error`` matching ``match``; no hook is left and the model's
    flags, parameters, buffers and ``.grad`` are unchanged."""
    model.train()
    before = model_state(model)
    with pytest.raises(error, match=match):
        call()
    assert hooks_left(model) == {}
    assert_state_unchanged(model, before)


# ----------------------------------------------------------------- model outputs that are not a tensor
class ModelOutput(OrderedDict):
    """Like Hugging Face's ``ModelOutput``: a dict whose keys are also attributes."""

    def __getattr__(self, name):
        return self[name]


class Wrapped(nn.Module):
    """``tiny_cnn`` whose output is a tuple, a list, a dict or a ``ModelOutput``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net, self.kind = tiny_cnn(), kind

    def forward(self, x):
        pooled = self.net.pool(self.net.features(self.net.stem(x)))
        logits = self.net.fc(self.net.flatten(pooled))
        return {"tuple": lambda: (logits, pooled), "list": lambda: [logits, pooled],
                "dict": lambda: {"logits": logits, "pooled": pooled},
                "ModelOutput": lambda: ModelOutput(logits=logits, pooled=pooled)}[self.kind]()


@pytest.mark.parametrize("cls", CAMS)
@pytest.mark.parametrize("kind,described", [
    ("tuple", r"tuple of \(Tensor, Tensor\)"),
    ("list", r"list of \(Tensor, Tensor\)"),
    ("dict", r"dict of \{'logits': Tensor, 'pooled': Tensor\}"),
    ("ModelOutput", r"ModelOutput of \{'logits': Tensor, 'pooled': Tensor\}"),
])
def test_non_tensor_output_names_its_types(cls, kind, described):
    model = Wrapped(kind)
    cam = make_cam(cls, model, [model.net.features])
    assert_fails_cleanly(model, lambda: cam(images()), ValueError,
                         rf"the model returned {described}, not a tensor of logits; pass output_selector=")


@pytest.mark.parametrize("cls", CAMS)
@pytest.mark.parametrize("kind,selector", [
    ("tuple", lambda out: out[0]),
    ("list", lambda out: out[0]),
    ("dict", lambda out: out["logits"]),
    ("ModelOutput", lambda out: out.logits),
])
def test_output_selector_picks_the_logits(cls, kind, selector):
    model, x = Wrapped(kind), images()
    res = make_cam(cls, model, [model.net.features], output_selector=selector).explain(x, [1, 4, 2])
    plain = tiny_cnn()
    expected = make_cam(cls, plain, [plain.features]).explain(x, [1, 4, 2])
    for field in ("maps", "labels", "channel_weights", "logits", "class_idx"):
        assert torch.equal(getattr(res, field), getattr(expected, field)), field
    assert hooks_left(model) == {}


def test_output_selector_must_return_a_tensor_and_be_callable():
    model = Wrapped("dict")
    cam = cf.CFCAM(model, [model.net.features], output_selector=lambda out: list(out.values()))
    assert_fails_cleanly(model, lambda: cam(images()), ValueError,
                         r"output_selector returned list of \(Tensor, Tensor\), not a tensor")
    with pytest.raises(ValueError, match="output_selector must be a callable"):
        cf.GradCAM(model, [model.net.features], output_selector="logits")


# -------------------------------------------------------------- inputs: integer images, inference mode
@pytest.mark.parametrize("cls", CAMS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_integer_images_are_refused(cls, dtype):
    model = tiny_cnn()
    x = (images() * 40 + 128).clamp(0, 255).to(dtype)
    cam = make_cam(cls, model, [model.features])
    assert_fails_cleanly(model, lambda: cam(x), ValueError,
                         rf"input is a {dtype} tensor; .* convert and normalise it first")


@pytest.mark.parametrize("cls", CAMS)
def test_inference_mode_is_named(cls):
    model = tiny_cnn()
    cam = make_cam(cls, model, [model.features])

    def call():
        with torch.inference_mode():
            cam(images())

    assert_fails_cleanly(model, call, ValueError,
                         r"need autograd .* call outside torch\.inference_mode\(\)")


def test_an_inference_tensor_input_works_outside_inference_mode():
    model = tiny_cnn()
    with torch.inference_mode():
        x = images()
    with cf.CFCAM(model, [model.features], backend="reference") as cam:
        assert torch.equal(cam(x), cam(images()))


# -------------------------------------------------------------------------- target layers: TorchScript
def traced():
    return torch.jit.trace(tiny_cnn().eval(), images())


@pytest.mark.parametrize("cls", CAMS)
@pytest.mark.parametrize("build,kind", [
    (traced, r"traced \(torch\.jit\.TracedModule\)"),
    (lambda: torch.jit.script(tiny_cnn()), r"scripted \(torch\.jit\.ScriptModule\)"),
])
def test_torchscript_models_are_refused_at_construction(cls, build, kind):
    model = build()
    with pytest.raises(ValueError, match=rf"the model is {kind}: forward hooks cannot run inside a TorchScript"):
        make_cam(cls, model, [model.features])


def test_a_scripted_target_layer_is_refused():
    model = tiny_cnn()
    model.features = torch.jit.script(model.features)
    with pytest.raises(ValueError, match=r"the target layer is scripted"):
        cf.CFCAM(model, [model.features])


def test_a_layer_inside_a_scripted_submodule_names_the_cause():
    model = tiny_cnn()
    inner = model.features[1]
    model.features = torch.jit.script(model.features)
    cam = cf.CFCAM(model, [inner])
    assert_fails_cleanly(model, lambda: cam(images()), ValueError,
                         r"did not run in the forward pass \(hooks cannot run inside the TorchScript "
                         r"submodule 'features'\)")


def test_capture_of_a_traced_model_names_the_cause():
    model = traced()
    with pytest.raises(ValueError, match="traced"):
        capture(model, images(), [model.features])


# ------------ target layers: one that runs twice per forward, refused unless layer_call picks the call
class Twice(nn.Module):
    """``tiny_cnn`` with one conv ``shared`` applied twice after ``features``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_cnn()
        self.shared = nn.Conv2d(12, 12, 3, padding=1)
        with torch.no_grad():
            self.shared.weight.copy_(torch.randn(12, 12, 3, 3, generator=torch.Generator().manual_seed(5)) * 0.2)

    def forward(self, x):
        h = self.shared(F.relu(self.shared(self.net.features(self.net.stem(x)))))
        return self.net.fc(self.net.flatten(self.net.pool(h)))


def manual_call_capture(model, x, classes, call):
    """Activations and gradients of call ``call`` of ``model.shared``, by hand."""
    kept = []
    handle = model.shared.register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        logits = model.eval()(x)
        score = logits[torch.arange(x.shape[0]), torch.tensor(classes)].sum()
        (grad,) = torch.autograd.grad(score, kept[call])
    finally:
        handle.remove()
    return kept[call].detach(), grad.detach()


@pytest.mark.parametrize("cls", CAMS)
def test_a_layer_called_twice_is_refused(cls):
    model = Twice()
    cam = make_cam(cls, model, [model.shared])
    assert_fails_cleanly(model, lambda: cam(images()), ValueError,
                         r"target layer 'shared' ran 2 times in one forward pass; choose the call to "
                         r"explain with layer_call=")


@pytest.mark.parametrize("call", [0, 1, -1, -2])
def test_layer_call_picks_the_call(call):
    model, x, classes = Twice(), images(), [0, 3, 1]
    res = cf.CFCAM(model, [model.shared], backend="reference", layer_call=call).explain(x, classes)
    A, G = manual_call_capture(model, x, classes, call)
    expected = cf.cfcam_explain(A, G, x.shape[-2:], backend="reference")
    for field in ("labels", "channel_weights", "maps"):
        assert torch.equal(getattr(res, field), getattr(expected, field)), field
    assert hooks_left(model) == {}


def test_layer_call_out_of_range_or_not_an_int():
    model = Twice()
    cam = cf.GradCAM(model, [model.shared], layer_call=2)
    assert_fails_cleanly(model, lambda: cam(images()), ValueError,
                         r"layer_call=2, but target layer 'shared' ran 2 time\(s\)")
    for bad in (1.0, True, "last"):
        with pytest.raises(ValueError, match="layer_call must be an int or None"):
            cf.CFCAM(model, [model.shared], layer_call=bad)


def test_layer_call_on_a_layer_that_runs_once():
    model, x = tiny_cnn(), images()
    plain = cf.CFCAM(model, [model.features], backend="reference")(x)
    for call in (0, -1):
        assert torch.equal(cf.CFCAM(model, [model.features], backend="reference", layer_call=call)(x), plain)


# ------------------------------------------------------------------------ target layers: their outputs
@pytest.mark.parametrize("cls", CAMS)
def test_a_1x1_target_layer_warns(cls):
    model, x = tiny_cnn(), images()
    with pytest.warns(UserWarning, match=r"'pool' has spatial size 1x1: its map is constant"):
        maps = make_cam(cls, model, [model.pool])(x)
    assert bool((maps == maps[:, :1, :1]).all()), "a 1x1 map upsamples to a constant"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_cam(cls, model, [model.features])(x)
    assert not [w for w in caught if "1x1" in str(w.message)]


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


class Tokens(nn.Module):
    """A ViT-like toy: 4x4 patches of a 16x16 image, 8-dim tokens [B, 16, 8] from ``blocks``."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.blocks = nn.Sequential(nn.Linear(8, 8), nn.GELU())
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.blocks(tokens).mean(1))


def tokens_to_maps(t):
    B, N, C = t.shape
    side = int(N ** 0.5)
    return t.transpose(1, 2).reshape(B, C, side, side)


def test_reshape_transform_turns_tokens_into_maps():
    model, x = Tokens(), images()
    with cfcam_model(model, [model.blocks], reshape_transform=tokens_to_maps) as cam:
        res = cam.explain(x, [1, 2, 3])
    # Expected: capture the tokens by hand, reshape, and run the core on them.
    kept = []
    handle = model.blocks.register_forward_hook(lambda m, i, o: kept.append(o))
    logits = model(x)
    handle.remove()
    (grad,) = torch.autograd.grad(logits[[0, 1, 2], [1, 2, 3]].sum(), kept[0])
    expected = cf.cfcam_explain(tokens_to_maps(kept[0].detach()), tokens_to_maps(grad), (16, 16),
                                backend="reference")
    for field in ("labels", "channel_weights", "maps"):
        assert torch.equal(getattr(res, field), getattr(expected, field)), field
    # Without the transform the [B, 16, 8] tokens are not maps: a ValueError naming the layer.
    with cfcam_model(model, [model.blocks]) as cam:
        with pytest.raises(ValueError, match=r"'blocks' gave shape \(3, 16, 8\)"):
            cam(x)


# ------------------------------------ non-finite values, and values that overflow or underflow float32
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


class ScaleImage(nn.Module):
    """Multiplies image ``index`` of the batch by ``factor``."""

    def __init__(self, index: int, factor: float) -> None:
        super().__init__()
        self.index, self.factor = index, factor

    def forward(self, x):
        scale = torch.ones(x.shape[0], dtype=x.dtype)
        scale[self.index] = self.factor
        return x * scale[:, None, None, None]


@pytest.mark.parametrize("cls", CAMS)
def test_float64_model_beyond_float32_fails_cleanly(cls):
    model = tiny_cnn().double()
    model.features.append(ScaleImage(1, 1e39))
    cam = make_cam(cls, model, [model.features])
    assert_fails_cleanly(model, lambda: cam(images().double(), [0, 0, 0]), ValueError,
                         r"activations overflow or underflow float32, .* at batch index 1: ")


@pytest.mark.parametrize("cls", CAMS)
def test_subnormal_layer_output(cls):
    # Image 1's target-layer output is scaled by 2^-140, into float32's subnormal range.
    # CF-CAM through the model equals the torch backend on the same tensors; Grad-CAM,
    # homogeneous in the activations, equals its map of those tensors scaled back by 2^140
    # (exact: subnormal to normal).
    model, x, classes = tiny_cnn(), images(), [0, 1, 2]
    model.features.append(ScaleImage(1, 2.0 ** -140))
    got = make_cam(cls, model, [model.features]).explain(x, classes)
    A, G, _ = manual_capture(model, model.features, x, classes)
    assert 0 < float(A[1].abs().max()) < torch.finfo(torch.float32).tiny
    if cls is cf.CFCAM:
        expected = cf.cfcam_explain(A, G, x.shape[-2:], backend="torch")
        assert torch.equal(got.labels, expected.labels)
        torch.testing.assert_close(got.maps, expected.maps, rtol=0, atol=1e-5)
    elif cls is cf.GradCAM:
        back = torch.tensor([1.0, 2.0 ** 70, 1.0])[:, None, None, None]
        expected = cf.GradCAM(model, [model.features])._core(A * back * back, G, x.shape[-2:])
        torch.testing.assert_close(got.maps, expected.maps, rtol=0, atol=1e-6)
    assert bool(torch.isfinite(got.maps).all()) and bool((got.maps.amax((1, 2)) == 1).all())


# -------------------------------------------------------------------------------- the captured tensors
def test_capture_returns_layer_tensors():
    model, x = tiny_cnn(), images()
    got = capture(model, x, [model.features], [0, 1, 2])
    A, G, logits = manual_capture(model, model.features, x, [0, 1, 2])
    assert torch.equal(got.activations[0], A) and torch.equal(got.gradients[0], G)
    assert torch.equal(got.logits, logits)
    assert got.class_idx.tolist() == [0, 1, 2]
    assert not got.activations[0].requires_grad and not got.gradients[0].requires_grad


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
