"""NormGrad (Rebuffi et al., "There and Back Again", CVPR 2020) at a single layer."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..core.checks import check_captured
from ..core.config import CFCAMResult
from ..core.output import upsample_and_normalise
from .base import BaseCAM, required


class NormGrad(BaseCAM):
    """NormGrad at the target layer, computed batched in float64 on the tensors' device.

    A virtual identity ``1x1`` convolution after the target layer has the weight gradient
    ``sum_u G_u A_u^T`` over positions ``u``; NormGrad's map is the norm of each position's
    term, ``||G_u A_u^T||_F = ||A_u||_2 * ||G_u||_2``, the norms taken over the channels
    (TorchRay's ``norm_grad``). It is non-negative, so the output rule's ReLU is a no-op.
    One forward and one backward as ``cf.GradCAM``; ``channel_weights`` and ``weights`` are
    NaN (the map has no channel weights), ``labels`` -2, ``eps`` NaN.
    """

    def _core(self, activations: torch.Tensor, gradients: torch.Tensor | None,
              output_size: Sequence[int]) -> CFCAMResult:
        gradients = required(gradients, "NormGrad")
        check_captured(activations, gradients)
        with torch.no_grad():
            A, G = activations.detach().double(), gradients.detach().double()
            cam = torch.linalg.vector_norm(A, dim=1) * torch.linalg.vector_norm(G, dim=1)
            nan = torch.full(A.shape[:2], math.nan, dtype=torch.float64, device=A.device)
            return CFCAMResult.without_clusters(upsample_and_normalise(cam, output_size), nan)
