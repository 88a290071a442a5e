"""CAM methods on a model: capture (capture.py) followed by a core on the captured tensors."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from . import backends
from .capture import Targets, capture
from .config import CFCAMConfig, CFCAMResult, as_config
from .core import cfcam_explain


class BaseCAM:
    """Shared model handling of the CAM classes: target layers, context manager, call.

    Subclasses implement ``_core(activations, gradients, output_size) -> CFCAMResult``.
    Hooks exist only during a call, so nothing outlives a call or the ``with`` block.
    """

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module],
                 reshape_transform: Optional[Callable] = None) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(target_layers, nn.Module):
            target_layers = [target_layers]
        target_layers = list(target_layers)
        if not target_layers or not all(isinstance(m, nn.Module) for m in target_layers):
            raise ValueError("target_layers must be a non-empty list of modules of the model")
        self.model = model
        self.target_layers = target_layers
        self.reshape_transform = reshape_transform

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing is held between calls; kept for the context-manager protocol."""

    def __call__(self, x: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        """Maps ``[B, H_in, W_in]`` in ``[0, 1]``, float32, on ``x.device``."""
        return self.explain(x, targets).maps

    def explain(self, x: torch.Tensor, targets: Targets = None) -> CFCAMResult:
        """The maps with every intermediate, the explained classes and the logits.

        With several target layers, ``maps`` is their average, renormalised to a maximum
        of 1, and the other fields are those of the first layer.
        """
        captured = capture(self.model, x, self.target_layers, targets, self.reshape_transform)
        size = tuple(x.shape[-2:])
        results = [self._core(a, g, size) for a, g in zip(captured.activations, captured.gradients)]
        result = results[0]
        if len(results) > 1:
            maps = torch.stack([r.maps for r in results]).mean(0)
            peak = maps.flatten(1).amax(1).clamp_min(torch.finfo(maps.dtype).tiny)
            result.maps = maps / peak[:, None, None]
        result.maps = result.maps.to(x.device, torch.float32)
        result.class_idx = captured.class_idx
        result.logits = captured.logits
        return result

    def _core(self, activations: torch.Tensor, gradients: torch.Tensor, output_size) -> CFCAMResult:
        raise NotImplementedError


class CFCAM(BaseCAM):
    """CF-CAM on a model (SPEC.md): one forward and one backward for the whole batch.

    ``backend``: "auto", "reference", "torch" or "triton" (see ``cfcam_fast.backends``).
    """

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module],
                 reshape_transform: Optional[Callable] = None, config: Optional[CFCAMConfig] = None,
                 backend: str = "auto") -> None:
        super().__init__(model, target_layers, reshape_transform)
        self.config = as_config(config)
        if backend != "auto":
            backends.unavailable_reason(backend)  # an unknown name fails here, not at the first call
        self.backend = backend

    def _core(self, activations, gradients, output_size) -> CFCAMResult:
        return cfcam_explain(activations, gradients, output_size, self.config, self.backend)
