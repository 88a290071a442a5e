"""CF-CAM as a CAM class of the ``grad-cam`` package (``pip install grad-cam``).

``CFCAM`` subclasses ``pytorch_grad_cam.base_cam.BaseCAM``: it takes the package's
``ClassifierOutputTarget`` targets, ``aug_smooth``, ``eigen_smooth`` and
``reshape_transform``, releases its hooks on leaving a ``with`` block, returns NumPy maps
``[B, H, W]`` (float32, in ``[0, 1]``) that its ``show_cam_on_image`` and its metrics accept,
and computes each layer's map with ``cfcam_fast``'s core on the input's device (the package
keeps the captured tensors on the CPU; they are moved back for the core).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..core.config import CFCAMConfig, as_config
from ..core.explain import cfcam_explain
from ..core.output import mean_of_layers, upsample_and_normalise

try:
    from pytorch_grad_cam.base_cam import BaseCAM as _GradCamBase
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
except ImportError as exc:  # pragma: no cover - exercised only without the optional package
    raise ImportError("cfcam_fast.integrations.grad_cam needs the grad-cam package: pip install grad-cam") from exc


class CFCAM(_GradCamBase):
    """CF-CAM with the ``grad-cam`` package's call: ``cam(input_tensor=x, targets=[...])``.

    ``config`` and ``backend`` are those of ``cfcam_fast.CFCAM``. The map of one layer is
    exactly ``cfcam_fast.CFCAM``'s (docs/algorithm.md step 7, divided by its maximum, not min-max
    scaled); several layers are averaged and divided by the maximum, as ``cfcam_fast``
    does. ``eigen_smooth=True`` means what it means for the package's ``GradCAM``: the
    first principal component of the weighted activations ``alpha_c A_c`` (docs/algorithm.md step 6,
    the package's ``get_2d_projection``) replaces their sum, then ReLU and step 7.
    """

    def __init__(self, model: torch.nn.Module, target_layers: list[torch.nn.Module],
                 reshape_transform: Callable | None = None, config: CFCAMConfig | None = None,
                 backend: str = "auto") -> None:
        super().__init__(model, target_layers, reshape_transform)
        self.config = as_config(config)
        self.backend = backend

    def compute_cam_per_layer(self, input_tensor: torch.Tensor, targets, eigen_smooth: bool) -> list:
        size = tuple(input_tensor.shape[-2:])
        per_layer = []
        for act, grad in zip(self.activations_and_grads.activations, self.activations_and_grads.gradients):
            act = act.to(input_tensor.device)
            grad = grad.to(act.device)
            if eigen_smooth:
                alpha = cfcam_explain(act, grad, None, self.config, self.backend).weights
                weighted = (alpha[:, :, None, None] * act.float()).cpu().numpy()
                maps = upsample_and_normalise(torch.from_numpy(get_2d_projection(weighted)).clamp(min=0), size)
            else:
                maps = cfcam_explain(act, grad, size, self.config, self.backend).maps
            per_layer.append(maps.float().cpu().numpy()[:, None])
        return per_layer

    def aggregate_multi_layers(self, cam_per_target_layer: list) -> np.ndarray:
        maps = [torch.from_numpy(np.asarray(layer_maps)[:, 0]) for layer_maps in cam_per_target_layer]
        return mean_of_layers(maps).numpy().astype(np.float32)

