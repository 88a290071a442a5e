"""The public API of docs/api.md on a tiny CNN and on the real EfficientNet-Lite0.

Backend "reference" throughout: the fast backends are compared with it elsewhere.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import chelsea_batch, efficientnet_lite0, hooks_left, images, tiny_cnn
from torch import nn

import cfcam_fast as cf
from cfcam_fast.core.backends import unavailable_reason


def cfcam_model(model, layers, **kwargs):
    return cf.CFCAM(model, layers, backend="reference", **kwargs)


@pytest.mark.parametrize("size", [(16, 16), (16, 20), (9, 13)])
def test_maps_shape_range_dtype_device(size):
    model, x = tiny_cnn(), torch.randn(2, 3, *size)
    with cfcam_model(model, [model.features]) as cam:
        maps = cam(x)
    assert maps.shape == (2, *size)
    assert maps.dtype == torch.float32 and maps.device == x.device
    assert torch.isfinite(maps).all() and maps.min() >= 0
    assert torch.equal(maps.amax((1, 2)), torch.ones(2))  # each image's map peaks at 1


def test_result_fields():
    model, x = tiny_cnn(), images()
    with cfcam_model(model, [model.features]) as cam:
        res = cam.explain(x)
    assert isinstance(res, cf.CFCAMResult)
    for field in ("labels", "channel_weights", "weights"):
        assert getattr(res, field).shape == (3, 12), field
    assert res.labels.dtype == torch.int64 and res.eps.shape == (3,)
    assert res.class_idx.shape == (3,) and res.logits.shape == (3, 5)
    # alpha: a softmax over the kept channels, 0 for noise.
    noise = res.labels == -1
    assert torch.all(res.weights[noise] == 0) and torch.all(res.channel_weights[noise] == 0)
    torch.testing.assert_close(res.weights.sum(1), torch.ones(3))


def test_float64_model_gives_float32_maps():
    model, x = tiny_cnn().double(), images().double()
    with cfcam_model(model, [model.features]) as cam:
        assert cam(x).dtype == torch.float32


def test_each_image_is_explained_independently_of_its_batch():
    # A batch of 3 against each image alone: every statistic of docs/algorithm.md is per image, so
    # labels are identical and maps and weights equal up to the float32 rounding by which a
    # batched convolution may differ from a single-image one (measured: 1.8e-7 on the maps,
    # which lie in [0, 1]; 1e-6 allows a few ulps more). The core itself gives exactly
    # equal results (test_reference.py::test_batch_images_are_independent).
    model, x = tiny_cnn(), images()
    with cfcam_model(model, [model.features]) as cam:
        batch = cam.explain(x)
        for b in range(3):
            alone = cam.explain(x[b:b + 1])
            assert torch.equal(batch.labels[b], alone.labels[0])
            assert torch.equal(batch.class_idx[b], alone.class_idx[0])
            for field in ("maps", "channel_weights", "weights"):
                torch.testing.assert_close(getattr(batch, field)[b], getattr(alone, field)[0],
                                           rtol=1e-6, atol=1e-6)


def test_call_and_explain_agree_and_the_with_block_leaves_no_hook():
    model, x = tiny_cnn(), images()
    with cfcam_model(model, model.features) as cam:  # a single module is accepted too
        maps = cam(x, [0, 1, 2])
        assert hooks_left(model) == {}
        res = cam.explain(x, [0, 1, 2])
    assert torch.equal(maps, res.maps)
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


def test_several_layers_are_averaged_then_renormalised():
    model, x = tiny_cnn(), images()
    layers = [model.stem, model.features]
    singles = []
    for layer in layers:
        with cfcam_model(model, [layer]) as cam:
            singles.append(cam(x, [0, 1, 2]))
    with cfcam_model(model, layers) as cam:
        maps = cam(x, [0, 1, 2])
    mean = (singles[0] + singles[1]) / 2
    expected = mean / mean.amax((1, 2), keepdim=True)
    # float32 division order: a few ulps of a value in [0, 1].
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-6)
    assert torch.equal(maps.amax((1, 2)), torch.ones(3))


# --------------------------------------------------------------------------------------
# cfcam / cfcam_explain on captured tensors
# --------------------------------------------------------------------------------------
def captured(B=2, C=12, H=5, W=6):
    A = torch.rand(B, C, H, W)
    A[:, : C // 4] *= 4.0
    return A, torch.randn(B, C, H, W) * 1e-3


def test_cfcam_output_size_default_and_explicit():
    A, G = captured()
    assert cf.cfcam(A, G, backend="reference").shape == (2, 5, 6)
    maps = cf.cfcam(A, G, output_size=(20, 24), backend="reference")
    assert maps.shape == (2, 20, 24) and maps.dtype == torch.float32
    # Explicit size: the default-size map's cam upsampled (docs/algorithm.md step 7), both renormalised.
    res = cf.cfcam_explain(A, G, backend="reference")
    up = F.interpolate(res.maps[:, None].double(), size=(20, 24), mode="bilinear",
                       align_corners=False)[:, 0]
    up = up / up.amax((1, 2), keepdim=True)
    torch.testing.assert_close(maps, up.float(), rtol=0, atol=1e-6)  # float32 rounding
    assert torch.equal(cf.cfcam_explain(A, G, (20, 24), backend="reference").maps, maps)


@pytest.mark.parametrize("size", [(0, 5), (5,), (5, 5, 5), (-1, 4), (2.5, 3), (None, 3), "ab", 7, (True, 3)])
def test_invalid_output_size(size):
    A, G = captured()
    with pytest.raises(ValueError, match="output_size"):
        cf.cfcam(A, G, output_size=size, backend="reference")


@pytest.mark.parametrize("config", ["gaussian", {"sigma": 1.0}, 1.0])
def test_invalid_config(config):
    A, G = captured()
    with pytest.raises(ValueError, match="config must be a CFCAMConfig"):
        cf.cfcam(A, G, config=config, backend="reference")
    with pytest.raises(ValueError, match="config must be a CFCAMConfig"):
        cf.CFCAM(tiny_cnn(), [nn.Identity()], config=config)


@pytest.mark.parametrize("change,message", [
    (lambda A, G: (A[0], G[0]), r"activations must be \[B, C, H, W\]"),
    (lambda A, G: (A, G[:, :5]), "same shape"),
    (lambda A, G: (A.long(), G), "floating-point"),
    (lambda A, G: (A.tolist(), G), "torch.Tensor"),
    (lambda A, G: (A[:, :0], G[:, :0]), "at least one image and one channel"),
])
def test_invalid_captured_tensors(change, message):
    A, G = change(*captured())
    with pytest.raises(ValueError, match=message):
        cf.cfcam(A, G, backend="reference")


@pytest.mark.parametrize("which", ["activations", "gradients"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_captured_tensors_name_the_batch_index(which, bad):
    A, G = captured(B=3)
    (A if which == "activations" else G)[2, 1, 0, 0] = bad
    with pytest.raises(ValueError, match=rf"{which} contain non-finite .* batch index 2$"):
        cf.cfcam(A, G, backend="reference")


# --------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------
def test_unknown_backend_is_an_error():
    A, G = captured()
    with pytest.raises(ValueError, match="unknown backend 'numba'"):
        cf.cfcam(A, G, backend="numba")
    model = tiny_cnn()
    with pytest.raises(ValueError, match="unknown backend 'numba'"):
        cf.CFCAM(model, [model.features], backend="numba")
    assert hooks_left(model) == {}


def test_triton_on_cpu_without_interpreter_says_what_to_do(monkeypatch):
    launch = pytest.importorskip("cfcam_fast.kernels._launch")
    monkeypatch.setattr(launch, "interpreted", lambda: False)  # as if Triton had compiled mode
    reason = unavailable_reason("triton", torch.device("cpu"))
    assert reason is not None and "TRITON_INTERPRET=1" in reason
    A, G = captured()
    with pytest.raises(RuntimeError, match="backend 'triton' is not available: .*TRITON_INTERPRET=1"):
        cf.cfcam(A, G, backend="triton")
    assert "TRITON_INTERPRET=1" in cf.backend_status()["core:triton"]


def test_triton_on_cpu_with_interpreter_is_available(monkeypatch):
    launch = pytest.importorskip("cfcam_fast.kernels._launch")
    monkeypatch.setattr(launch, "interpreted", lambda: True)
    assert unavailable_reason("triton", torch.device("cpu")) is None


# --------------------------------------------------------------------------------------
# the real pretrained EfficientNet-Lite0 on the cat photo
# --------------------------------------------------------------------------------------
def test_efficientnet_lite0_on_chelsea():
    model, layer = efficientnet_lite0()
    assert layer == "bn2"
    x = chelsea_batch()
    with cfcam_model(model, [model.get_submodule(layer)]) as cam:
        res = cam.explain(x)
    assert 281 <= res.class_idx.item() <= 285  # ImageNet's cat classes (tabby .. Egyptian cat)
    assert res.maps.shape == (1, 224, 224) and res.maps.dtype == torch.float32
    assert torch.isfinite(res.maps).all() and res.maps.min() >= 0 and res.maps.max() == 1
    assert res.labels.shape == (1, 1280)
    # About the top quarter of the 1280 channels is important (ties at tau may add a few).
    assert 320 <= int((res.labels == -2).sum()) <= 330
    assert np.isfinite(res.eps.item()) and res.eps.item() > 0
    assert hooks_left(model) == {} and not model.training
