"""CF-CAM as a CAM class of the ``grad-cam`` package (``pip install grad-cam``).

``CFCAM`` subclasses ``pytorch_grad_cam.base_cam.BaseCAM``: it takes the package's
``ClassifierOutputTarget`` targets, ``aug_smooth`` and ``reshape_transform``, returns NumPy
maps ``[B, H, W]`` in ``[0, 1]`` that its ``show_cam_on_image`` and its metrics accept, and
computes each layer's map with ``cfcam_fast``'s core on the input's device (the package keeps
the captured tensors on the CPU; they are moved back for the core).
"""
from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np
import torch

from ..config import CFCAMConfig, as_config
from ..core import cfcam

try:
    from pytorch_grad_cam.base_cam import BaseCAM as _GradCamBase
except ImportError as exc:  # pragma: no cover - exercised only without the optional package
    raise ImportError("cfcam_fast.integrations.grad_cam needs the grad-cam package: pip install grad-cam") from exc


class CFCAM(_GradCamBase):
    """CF-CAM with the ``grad-cam`` package's call: ``cam(input_tensor=x, targets=[...])``.

    ``config`` and ``backend`` are those of ``cfcam_fast.CFCAM``. The map of one layer is
    exactly ``cfcam_fast.CFCAM``'s (SPEC.md step 7, divided by its maximum, not min-max
    scaled); several layers are averaged and divided by the maximum, as ``cfcam_fast``
    does. ``eigen_smooth`` has no meaning for CF-CAM and is refused.
    """

    def __init__(self, model: torch.nn.Module, target_layers: List[torch.nn.Module],
                 reshape_transform: Optional[Callable] = None, config: Optional[CFCAMConfig] = None,
                 backend: str = "auto") -> None:
        super().__init__(model, target_layers, reshape_transform)
        self.config = as_config(config)
        self.backend = backend

    def compute_cam_per_layer(self, input_tensor: torch.Tensor, targets, eigen_smooth: bool) -> list:
        if eigen_smooth:
            raise ValueError("eigen_smooth is not defined for CF-CAM; call with eigen_smooth=False")
        size = tuple(input_tensor.shape[-2:])
        per_layer = []
        for act, grad in zip(self.activations_and_grads.activations, self.activations_and_grads.gradients):
            act = act.to(input_tensor.device)
            maps = cfcam(act, grad.to(act.device), size, self.config, self.backend)
            per_layer.append(maps.float().cpu().numpy()[:, None])
        return per_layer

    def aggregate_multi_layers(self, cam_per_target_layer: list) -> np.ndarray:
        maps = np.concatenate(cam_per_target_layer, axis=1).mean(axis=1)
        peak = np.maximum(maps.reshape(len(maps), -1).max(axis=1), np.finfo(np.float32).tiny)
        return (maps / peak[:, None, None]).astype(np.float32)  # zero maps stay zero
