"""The timed paths: each a name, a kind and a callable on one batch, or a reason it is skipped.

Kinds: ``floor`` (the forward plus the backward down to the target layer, which no
gradient-based CAM can undercut), ``model`` (end to end through the model) and ``post``
(CF-CAM on pre-captured activations and gradients only).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ..cams.base import required
from ..cams.capture import capture
from ..cams.cfcam import CFCAM
from ..cams.gradcam import GradCAM
from ..cams.model_state import layer_outputs
from ..core import backends as core_backends
from ..core import cluster
from ..core.config import CFCAMConfig
from ..core.explain import cfcam, cfcam_explain

FLOOR = "floor: forward + backward to layer"
FULL_BACKWARD = "forward + full backward"
GRADCAM = "Grad-CAM (cfcam_fast baseline)"
PEER_GRADCAM = "grad-cam package GradCAM"
AUTHORS = "authors' algorithm (reference, official filter)"
AUTHORS_POST = "authors' algorithm, post-processing only"


@dataclass
class Path:
    """One row of the table: ``run`` times one batch; ``skipped`` says why it cannot run."""

    name: str
    kind: str
    run: Callable[[], object] | None = None
    skipped: str | None = None


def floor(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Forward, then the gradient of the top-class scores with respect to the layer's output."""
    with layer_outputs([layer]) as kept:
        logits = model(x)
    score = logits.max(1).values.sum()
    return torch.autograd.grad(score, kept[0][0])[0]


def full_backward(model: nn.Module, x: torch.Tensor) -> None:
    """Forward, then ``backward`` through every parameter (what most CAM libraries run)."""
    logits = model(x)
    logits.max(1).values.sum().backward()
    model.zero_grad(set_to_none=True)


def core_variants(device: torch.device) -> list[tuple[str, str, str | None, str | None]]:
    """``(label, core backend, DBSCAN backend, skip reason)`` for every cfcam_fast path."""
    variants: list[tuple[str, str, str | None, str | None]] = []
    for name in cluster.BACKENDS:
        reason = cluster.unavailable_reason(name, device)
        if name == "cuml" and reason is not None:
            continue  # an optional GPU extra: listed only where it can run
        variants.append((f"torch, DBSCAN {name}", "torch", name, reason))
    reason = core_backends.unavailable_reason("triton", device)
    if device.type != "cuda":
        reason = "the Triton kernels run on CUDA only (the CPU interpreter is not benchmarked)"
    variants.append(("triton", "triton", None, reason))
    variants.append(("triton, DBSCAN fused", "triton", "fused", reason))
    return variants


def build_paths(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> list[Path]:
    """Every path for ``model`` at ``layer`` on the batch ``x`` (on ``x``'s device)."""
    size = tuple(x.shape[-2:])
    captured = capture(model, x, [layer])
    A, G = captured.activations[0].detach(), required(captured.gradients[0], "the benchmark").detach()
    authors = CFCAMConfig(filter="official")
    paths = [
        Path(FLOOR, "floor", lambda: floor(model, layer, x)),
        Path(FULL_BACKWARD, "model", lambda: full_backward(model, x)),
        Path(GRADCAM, "model", lambda: GradCAM(model, [layer])(x)),
        _peer_gradcam(model, layer, x),
        Path(AUTHORS, "model", lambda: CFCAM(model, [layer], config=authors, backend="reference")(x)),
        Path(AUTHORS_POST, "post", lambda: cfcam_explain(A, G, size, authors, "reference").maps),
    ]
    for label, backend, dbscan, reason in core_variants(x.device):
        config = CFCAMConfig() if dbscan is None else CFCAMConfig(dbscan_backend=dbscan)
        cam = CFCAM(model, [layer], config=config, backend=backend)
        paths.append(Path(f"cfcam_fast {label}", "model", None if reason else partial(cam, x), reason))
        paths.append(Path(f"cfcam_fast {label}, post-processing only", "post",
                          None if reason else partial(cfcam, A, G, size, config, backend), reason))
    return paths


def _peer_gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> Path:
    try:
        from pytorch_grad_cam import GradCAM as PeerGradCAM
    except ImportError:
        return Path(PEER_GRADCAM, "model", skipped="the grad-cam package is not installed: pip install grad-cam")

    def run():
        # The package keeps hooks on the model while a GradCAM object lives: scope them to
        # the call so that they never slow the other paths down.
        with PeerGradCAM(model=model, target_layers=[layer]) as cam:
            return cam(input_tensor=x, targets=None)

    return Path(PEER_GRADCAM, "model", run)


def path_names(device: torch.device) -> list[str]:
    """The names of every path the runner reports on ``device`` (skipped ones included)."""
    names = [FLOOR, FULL_BACKWARD, GRADCAM, PEER_GRADCAM, AUTHORS, AUTHORS_POST]
    for label, *_ in core_variants(device):
        names += [f"cfcam_fast {label}", f"cfcam_fast {label}, post-processing only"]
    return names
