"""CF-CAM as a ``torchcam`` extractor (``pip install torchcam``).

``CFCAM`` subclasses torchcam's gradient-based extractor, so it hooks, back-propagates and
fuses exactly as torchcam's ``GradCAM`` does and works with ``torchcam.metrics``; the maps
come from ``cfcam_fast``'s core on the hooked tensors' device::

    with CFCAM(model, "features") as extractor:
        out = model(x)
        cams = extractor(class_idx, out)   # one [B, H_in, W_in] map per target layer
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from ..config import CFCAMConfig, as_config
from ..core import cfcam

try:
    from torchcam.methods.gradient import _GradCAM
except ImportError as exc:  # pragma: no cover - exercised only without the optional package
    raise ImportError("cfcam_fast.integrations.torchcam needs torchcam: pip install torchcam") from exc


class CFCAM(_GradCAM):
    """CF-CAM with torchcam's call pattern: ``extractor(class_idx, scores)``.

    ``config`` and ``backend`` are those of ``cfcam_fast.CFCAM``. The maps are at the size
    of the model's last input (recorded by a forward pre-hook on the model), exactly
    ``cfcam_fast.CFCAM``'s maps: SPEC.md step 7 always normalises them, so
    ``normalized=False`` is refused.
    """

    def __init__(self, model: nn.Module, target_layer: Any = None, input_shape: tuple = (3, 224, 224),
                 config: Optional[CFCAMConfig] = None, backend: str = "auto",
                 reshape_transform: Optional[Callable] = None) -> None:
        super().__init__(model, target_layer, input_shape, reshape_transform=reshape_transform)
        self.config = as_config(config)
        self.backend = backend
        self._input_size: Optional[tuple] = None
        self.hook_handles.append(model.register_forward_pre_hook(self._hook_input))

    def _hook_input(self, _module: nn.Module, args: tuple) -> None:
        if self._hooks_enabled and args and isinstance(args[0], torch.Tensor):
            self._input_size = tuple(args[0].shape[-2:])

    def compute_cams(self, class_idx: Any = None, scores: Any = None, normalized: bool = True, *,
                     targets: Any = None, **kwargs: Any) -> list[torch.Tensor]:
        if not normalized:
            raise ValueError("CF-CAM maps are always normalised (SPEC.md step 7); call with normalized=True")
        self._backprop(scores, class_idx, targets=targets, **kwargs)
        return [cfcam(act, grad, self._input_size, self.config, self.backend)
                for act, grad in zip(self.hook_a, self.hook_g)]
