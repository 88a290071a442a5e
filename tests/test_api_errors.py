"""Real inputs, real models, real errors: what a new user meets first.

Model outputs that are not a tensor, integer images, ``torch.inference_mode()``, 1x1
target layers, TorchScript models, layers that run twice per forward, wrong-length DBSCAN
parameters, and values that overflow or underflow float32. Every failed call must leave
no hook and the model's state as it was. The numeric cases compare the ``torch`` backend
with the reference on the same tensors: labels identical, maps within 1e-5 (measured:
at most 9e-7), eps and weights to float32 rounding.
"""
import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_state_unchanged, hooks_left, images, model_state, structured, tiny_cnn
from torch import nn

import cfcam_fast as cf
from cfcam_fast.cams.capture import capture
from cfcam_fast.core.backends import torch_backend
from cfcam_fast.plan import resolve_plan

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


# --------------------------------------------------------------------------------------
# model outputs that are not a tensor
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# inputs: integer images, inference mode
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# 1x1 target layers
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# TorchScript
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# a layer that runs twice per forward: refused unless layer_call picks the call
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# cf.cluster.dbscan parameters
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("eps,min_samples,message", [
    (torch.tensor([0.5, 0.5]), 2, r"eps must be one value or a tensor of 3 \(one per problem\), got 2 values"),
    (torch.tensor([0.5] * 4), 2, r"eps must be one value or a tensor of 3 \(one per problem\), got 4 values"),
    (0.5, torch.tensor([2, 2]), r"min_samples must be one value or a tensor of 3 \(one per problem\), got 2 values"),
    (0.5, torch.tensor([], dtype=torch.int64), r"min_samples must be one value .*, got 0 values"),
])
def test_dbscan_wrong_length_parameters(eps, min_samples, message):
    with pytest.raises(ValueError, match=message):
        cf.cluster.dbscan(torch.randn(3, 10, 2), eps, min_samples)


def test_dbscan_per_problem_parameters_still_work():
    points = torch.randn(3, 10, 2)
    got = cf.cluster.dbscan(points, torch.tensor([0.3, 0.5, 0.8]), torch.tensor([2, 3, 2]))
    for b, (e, m) in enumerate([(0.3, 2), (0.5, 3), (0.8, 2)]):
        assert torch.equal(got[b], cf.cluster.dbscan(points[b], e, m))


# --------------------------------------------------------------------------------------
# values that overflow or underflow float32
# --------------------------------------------------------------------------------------
def captured_pair(seed: int = 3):
    A = structured(3, 40, 6, 6, seed=seed)
    G = torch.randn(3, 40, 6, 6, generator=torch.Generator().manual_seed(seed + 1)) * 1e-2
    return A, G


SCALINGS = {
    "activations x1e-41 (subnormal)": lambda A, G: (A * 1e-41, G),
    "activations x2^-140 (subnormal)": lambda A, G: (A * 2.0 ** -140, G),
    "gradients x1e-41 (subnormal)": lambda A, G: (A, G * 1e-41),
    "both subnormal": lambda A, G: (A * 1e-40, G * 1e-40),
    "activations x1e37 (near float32's max)": lambda A, G: (A * 1e37, G),
    "gradients x1e38 (near float32's max)": lambda A, G: (A, G * 1e38),
    "float64 x1e30 / x1e-30": lambda A, G: (A.double() * 1e30, G.double() * 1e-30),
    "one image subnormal": lambda A, G: (A * torch.tensor([1.0, 1e-42, 1.0])[:, None, None, None], G),
}


@pytest.mark.parametrize("scaling", list(SCALINGS))
@pytest.mark.parametrize("weighting", ["softmax", "standardized", "linear"])
@pytest.mark.parametrize("filter_name", ["gaussian", "official"])
def test_extreme_scales_match_the_reference(scaling, weighting, filter_name):
    A, G = SCALINGS[scaling](*captured_pair())
    config = cf.CFCAMConfig(weighting=weighting, filter=filter_name)
    ref = cf.cfcam_explain(A, G, (12, 12), config, backend="reference")
    got = cf.cfcam_explain(A, G, (12, 12), config, backend="torch")
    assert torch.equal(got.labels, ref.labels)
    torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.eps, ref.eps, rtol=1e-12, atol=0, equal_nan=True)
    # Weights relative to each image's largest (float32 rounding; subnormal ones are
    # rounded to float32's subnormal grid by both).
    for field in ("channel_weights", "weights"):
        g, r = getattr(got, field).double(), getattr(ref, field).double()
        peak = r.abs().amax(1, keepdim=True).clamp_min(1e-300)
        assert float(((g - r).abs() / peak).max()) < 1e-5, field


def test_subnormal_activations_on_the_static_path():
    """The real-time path (shapes fixed, no host synchronisation) scales alike."""
    A, G = captured_pair()
    A = A * 1e-41
    config = cf.CFCAMConfig(weighting="linear")
    n = torch_backend.max_remaining(A.shape[1], config.importance_percentile)
    plan = resolve_plan("torch", config, A.device)
    fixed = torch_backend.FixedShapes(n, torch.empty(3, n, n, dtype=plan.distance_dtype))
    got = torch_backend.explain(A, G, (12, 12), config, plan, fixed=fixed)
    ref = cf.cfcam_explain(A, G, (12, 12), config, backend="reference")
    assert torch.equal(got.labels, ref.labels)
    torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("name", ["activations", "gradients"])
@pytest.mark.parametrize("factor", [1e42, 1e-50, 1e-40])
def test_float64_outside_float32_names_the_batch_index(backend, name, factor):
    A, G = (t.double() for t in captured_pair())
    scale = torch.tensor([1.0, factor, 1.0], dtype=torch.float64)[:, None, None, None]
    A, G = (A * scale, G) if name == "activations" else (A, G * scale)
    with pytest.raises(ValueError, match=rf"{name} overflow or underflow float32, .* at batch index 1: "):
        cf.cfcam_explain(A, G, (12, 12), backend=backend)


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


def manual_capture(model, layer, x, classes):
    kept = []
    handle = layer.register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        logits = model.eval()(x)
        (grad,) = torch.autograd.grad(logits[torch.arange(x.shape[0]), torch.tensor(classes)].sum(), kept[0])
    finally:
        handle.remove()
    return kept[0].detach(), grad.detach(), logits.detach()
