"""CF-CAM as a ``torchcam`` extractor (``pip install torchcam``).

``CFCAM`` subclasses torchcam's gradient-based extractor, so it takes torchcam's
constructor arguments (``enable_hooks`` and ``reshape_transform`` included), hooks,
back-propagates and fuses exactly as torchcam's ``GradCAM`` does, and works with
``torchcam.metrics``, ``torchcam.explain`` and ``torchcam.utils.overlay_mask``; the maps come
from ``cfcam_fast``'s core on the hooked tensors' device::

    with CFCAM(model, "features") as extractor:
        out = model(x)
        cams = extractor(class_idx, out)   # one [B, h, w] map per target layer

Map size: by default the maps are at the target layer's resolution ``[B, h, w]``, as
torchcam's extractors return them (so ``overlay_mask`` and ``fuse_cams`` resize them as
they resize torchcam's own). Earlier versions returned maps at the input's size; pass
``upsample=True`` for those (``cfcam_fast.CFCAM``'s maps, docs/algorithm.md step 7).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.config import CFCAMConfig, as_config
from ..core.explain import cfcam

try:
    from torchcam.methods.gradient import _GradCAM
except ImportError as exc:  # pragma: no cover - exercised only without the optional package
    raise ImportError("cfcam_fast.integrations.torchcam needs torchcam: pip install torchcam") from exc


class CFCAM(_GradCAM):
    """CF-CAM with torchcam's constructor and call: ``extractor(class_idx, scores)``.

    The positional arguments are torchcam's (``model, target_layer, input_shape,
    enable_hooks, reshape_transform``); ``config`` and ``backend`` (keyword-only) are those of
    ``cfcam_fast.CFCAM``. Each map is docs/algorithm.md's, divided by its maximum (not min-max scaled),
    at the layer's resolution; with ``upsample=True`` at the size of the model's last input
    (recorded by a forward pre-hook on the model), exactly ``cfcam_fast.CFCAM``'s maps.
    The maps are always normalised, so ``normalized=False`` is refused.
    """

    def __init__(self, model: nn.Module, target_layer: Any = None, input_shape: tuple = (3, 224, 224),
                 enable_hooks: bool = True, reshape_transform: Callable | None = None, *,
                 config: CFCAMConfig | None = None, backend: str = "auto", upsample: bool = False) -> None:
        super().__init__(model, target_layer, input_shape, enable_hooks=enable_hooks,
                         reshape_transform=reshape_transform)
        self.config = as_config(config)
        self.backend = backend
        self.upsample = upsample
        self._input_size: tuple | None = None
        if upsample:
            self.hook_handles.append(model.register_forward_pre_hook(self._hook_input))

    def _hook_input(self, _module: nn.Module, args: tuple) -> None:
        if self._hooks_enabled and args and isinstance(args[0], torch.Tensor):
            self._input_size = tuple(args[0].shape[-2:])

    def compute_cams(self, class_idx: Any = None, scores: Any = None, normalized: bool = True, *,
                     targets: Any = None, **kwargs: Any) -> list[torch.Tensor]:
        if not normalized:
            raise ValueError("CF-CAM maps are always normalised (docs/algorithm.md step 7); call with normalized=True")
        self._backprop(scores, class_idx, targets=targets, **kwargs)
        size = self._input_size if self.upsample else None
        maps = []
        for act, grad in zip(self.hook_a, self.hook_g):
            if act is None or grad is None:
                raise ValueError("the target layer's activations or gradients were not captured: run the model "
                                 "with the extractor's hooks enabled, then call it with the model's scores")
            maps.append(cfcam(act, grad, size, self.config, self.backend))
        return maps

    def _extra_repr(self) -> str:
        return f"{super()._extra_repr()}, upsample={self.upsample}"
