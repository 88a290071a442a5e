"""The exported frame: a model, its forward-only head and the static CF-CAM core as one
``nn.Module`` whose ``forward(x)`` is a static graph.

Outputs, in order: ``logits`` ``[B, K]``, ``class_idx`` ``[B]`` (int64), ``maps``
``[B, H, W]`` (float32 in [0, 1] at the input's size), then any of ``EXTRA_OUTPUTS``
asked for: ``labels`` ``[B, C]`` (int64: -2 important, -1 noise, >= 0 cluster), ``eps``
``[B]`` (float64), ``activations`` and ``gradients`` (``[B, C, h, w]`` at the target layer)
and ``certified`` (bool scalar: the certified stage decided every image, no exact fallback).

The gradient at the layer is ``LinearHead.gradients`` (``W[k] / (h w)``), read from the
model's own ``nn.Linear`` so that its weight is stored once. The targets, when fixed, are a
buffer: ``None`` explains each image's top class (an ``argmax`` in the graph).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

import torch
from torch import nn

from ...core.config import CFCAMConfig
from ...core.exportable import StaticCore
from ..capture import select_logits
from ..head import LinearHead
from ..model_state import layer_name, layer_outputs

OUTPUTS = ("logits", "class_idx", "maps")
EXTRA_OUTPUTS = ("labels", "eps", "activations", "gradients", "certified")
FORMAT_VERSION = "1"


class Frame(nn.Module):
    """CF-CAM (``method="cfcam"``) or Grad-CAM (``"gradcam"``; CAM for these heads) of
    ``model`` at ``layer`` for inputs of ``input_shape``, the gradient from ``head`` (a
    ``LinearHead`` that ``find_linear_head`` proved). ``targets``: ``None`` or ``[B]``
    int64 classes. ``extra_outputs``: any of ``EXTRA_OUTPUTS``, returned after the three
    outputs in that order. ``distances``, ``loop``: as ``core.exportable.StaticCore``.
    Run it in eval mode (``cams.export.export`` does)."""

    targets: torch.Tensor | None
    head_weight: torch.Tensor | None

    def __init__(self, model: nn.Module, layer: nn.Module, head: LinearHead, input_shape: Sequence[int],
                 config: CFCAMConfig, targets: torch.Tensor | None = None, *, method: str = "cfcam",
                 extra_outputs: Sequence[str] = (), distances: str = "certified", loop: str = "while",
                 head_proof: str = "") -> None:
        super().__init__()
        unknown = [e for e in extra_outputs if e not in EXTRA_OUTPUTS]
        if unknown or len(set(extra_outputs)) != len(extra_outputs):
            raise ValueError(f"extra_outputs must be distinct names among {EXTRA_OUTPUTS}, got {list(extra_outputs)}")
        self.model, self.layer = model, layer
        self.input_shape = tuple(int(s) for s in input_shape)
        self.extra_outputs = tuple(extra_outputs)
        self.layer_name, self.head_name, self.head_proof = layer_name(model, layer), head.name, head_proof
        # The core's tables go where the model and its head live (a CUDA frame traces on CUDA).
        self.core = StaticCore(config, head.weight.shape[1], self.input_shape[-2:], method=method,
                               distances=distances, loop=loop).to(head.weight.device)
        # The model's own nn.Linear when it holds the head's weight; else the weight travels as a buffer.
        self._linear_name = head.name if _holds(model, head) else None
        self.register_buffer("head_weight", None if self._linear_name else head.weight.detach().clone(),
                             persistent=False)
        self.register_buffer("targets", None if targets is None else targets.detach().to(torch.int64).clone(),
                             persistent=False)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The names of ``forward``'s outputs, in order."""
        return OUTPUTS + self.extra_outputs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with layer_outputs([self.layer]) as kept:
            logits = select_logits(self.model(x), None)
        if len(kept[0]) != 1:
            raise ValueError(f"the target layer {self.layer_name!r} ran {len(kept[0])} times in one forward pass; "
                             "an exported frame needs a layer that runs once")
        A = kept[0][0]
        class_idx = logits.argmax(1) if self.targets is None else self.targets
        G = LinearHead(self._head_weight(), None).gradients(A, class_idx)
        maps, labels, eps, certified = self.core(A, G)
        extras = {"labels": labels, "eps": eps, "activations": A, "gradients": G, "certified": certified}
        return (logits, class_idx, maps) + tuple(extras[name] for name in self.extra_outputs)

    def _head_weight(self) -> torch.Tensor:
        if self.head_weight is not None:
            return self.head_weight
        linear = self.model.get_submodule(str(self._linear_name))
        assert isinstance(linear, nn.Linear)
        return linear.weight

    def metadata(self) -> dict[str, str]:
        """What the frame was built with, as the ``cfcam.*`` strings both formats carry
        (docs/export.md lists them)."""
        from importlib import metadata

        try:
            version = metadata.version("cfcam-fast")
        except metadata.PackageNotFoundError:
            version = "unknown"
        core = self.core
        targets = None if self.targets is None else [int(t) for t in self.targets.tolist()]
        return {
            "cfcam.format_version": FORMAT_VERSION,
            "cfcam.package_version": version,
            "cfcam.method": core.method,
            "cfcam.config": json.dumps(asdict(core.config), sort_keys=True),
            "cfcam.filter": core.config.filter,
            "cfcam.weighting": core.config.weighting,
            "cfcam.targets": json.dumps(targets),
            "cfcam.input_shape": json.dumps(list(self.input_shape)),
            "cfcam.layer": self.layer_name,
            "cfcam.head": self.head_name,
            "cfcam.head_proof": self.head_proof,
            "cfcam.pairwise_points": str(core.n),
            "cfcam.distances": core.distances,
            "cfcam.dbscan_loop": core.loop,
            "cfcam.outputs": json.dumps(list(self.output_names)),
        }


def _holds(model: nn.Module, head: LinearHead) -> bool:
    """Whether the model's ``nn.Linear`` named ``head.name`` has the head's weight (the same
    storage)."""
    try:
        module = model.get_submodule(head.name) if head.name else None
    except AttributeError:
        return False
    return isinstance(module, nn.Linear) and module.weight.shape == head.weight.shape \
        and module.weight.data_ptr() == head.weight.data_ptr()
