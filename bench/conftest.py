"""Shared inputs of the pytest-benchmark suites: a model, a batch and captured tensors.

The captured tensors come from ResNet-50's ``layer4`` (random-init weights: only shapes
matter for timing) on a fixed random batch of 8, so they are ``[8, 2048, 7, 7]``; the
intermediates of each CF-CAM stage are computed once from them with the torch backend.
"""
from dataclasses import dataclass

import pytest
import torch

from cfcam_fast import CFCAMConfig, cluster
from cfcam_fast.cams.capture import capture
from cfcam_fast.core.backends.torch_backend import channel_weights, cluster_channels, importance_split
from cfcam_fast.core.formulas import min_samples_for
from cfcam_fast.data.layers import resolve_layer
from cfcam_fast.data.models import load_model

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
STAGE_BATCH = 8


def sync() -> None:
    """Wait for the device, so that a timed call includes its kernels."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@dataclass
class Stages:
    """Inputs of every stage: captured ``A``, ``G``; the remaining channels' ``points``
    ``[B, n, HW]``, their squared distances ``dist``, ``counts``, the squared threshold
    ``eps`` (``cluster.sq_threshold``) and ``min_samples``; ``labels``."""

    A: torch.Tensor
    G: torch.Tensor
    points: torch.Tensor
    dist: torch.Tensor
    counts: torch.Tensor
    eps: torch.Tensor
    min_samples: torch.Tensor
    labels: torch.Tensor
    w: torch.Tensor


@pytest.fixture(scope="session")
def resnet50():
    """ResNet-50 on the benchmark device and its ``layer4``."""
    model, layer_name = load_model("resnet50", device=DEVICE)
    return model, resolve_layer(model, layer_name)


@pytest.fixture(scope="session")
def stages(resnet50) -> Stages:
    """Captured-like ``[8, 2048, 7, 7]`` tensors and the intermediates of each stage."""
    model, layer = resnet50
    x = torch.randn(STAGE_BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    captured = capture(model, x, [layer])
    A, G = captured.activations[0].detach().float(), captured.gradients[0].detach().float()
    config = CFCAMConfig()
    flat = A.flatten(2)
    important = importance_split(flat, config.importance_percentile)
    counts = A.shape[1] - important.sum(1)
    n = int(counts.max())
    rest = torch.sort(important.to(torch.uint8), dim=1, stable=True).indices[:, :n]
    points = flat.gather(1, rest[:, :, None].expand(-1, -1, flat.shape[2]))
    dist = cluster.pairwise_sq_distances(points)
    labels, eps = cluster_channels(A, config)
    min_samples = min_samples_for(counts, config)
    return Stages(A, G, points, dist, counts, cluster.sq_threshold(eps.nan_to_num(0.0)), min_samples, labels,
                  channel_weights(G, labels, config))
