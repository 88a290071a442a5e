"""The ``triton`` backend: the ``torch`` backend's pipeline with steps 5-7 (channel weights,
combination, upsampling and normalisation) run by the fused kernels of
``cfcam_fast.kernels``. Steps 1-4 (importance split, eps, DBSCAN) and the optional
filtered maps come from the ``torch`` backend.
"""
from __future__ import annotations

import torch

from ..config import CFCAMConfig, CFCAMResult
from ..plan import Plan
from . import torch_backend


def explain(activations: torch.Tensor, gradients: torch.Tensor, output_size, config: CFCAMConfig, plan: Plan,
            return_filtered: bool = False) -> CFCAMResult:
    """CF-CAM for ``[B, C, H, W]`` CUDA tensors (CPU tensors under ``TRITON_INTERPRET=1``);
    ``plan.core`` must be "triton"."""
    if plan.core != "triton":
        raise ValueError(f"the triton backend runs plans with core:triton, got {plan}")
    return torch_backend.explain(activations, gradients, output_size, config, plan, return_filtered)
