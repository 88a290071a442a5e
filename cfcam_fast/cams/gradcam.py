"""Grad-CAM and Grad-CAM++: channel weights from the captured gradients.

Both compute in float64 on the tensors' device and end with docs/algorithm.md step 7's
output rule (``core.output``), so they differ from CF-CAM only in the channel weights.
"""
from __future__ import annotations

import torch

from .base import BaseCAM, required

GRADCAM_PLUSPLUS_EPS = 1e-6  # the denominator guard of the grad-cam package's Grad-CAM++


def gradcam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM's channel weights ``[B, C]``: the spatial mean of the gradients."""
    return gradients.mean(dim=(2, 3))


def gradcam_plusplus_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++'s channel weights ``[B, C]`` (Chattopadhay et al., eq. 19).

    With an exponential output the higher derivatives are powers of the gradient, so
    ``a = G^2 / (2 G^2 + sum(A) G^3 + 1e-6)`` (0 where ``G == 0``) and
    ``w_c = sum over positions of a * ReLU(G)``, as the ``grad-cam`` package computes it.
    """
    g2 = gradients * gradients
    g3 = g2 * gradients
    total = activations.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + total * g3 + GRADCAM_PLUSPLUS_EPS)
    alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
    return (alpha * gradients.clamp_min(0)).sum(dim=(2, 3))


class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al.) with ``cf.CFCAM``'s call, result and constructor.

    ``labels`` are -2 (every channel kept), ``channel_weights`` and ``weights`` the mean
    gradients, ``eps`` NaN, ``plan`` None (no backend choice: torch on the tensors' device).
    """

    def _weights(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        return gradcam_weights(activations, required(gradients, "Grad-CAM"))


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ (Chattopadhay et al.) with ``cf.CFCAM``'s call, result and constructor.

    ``channel_weights`` and ``weights`` are the Grad-CAM++ weights
    (``gradcam_plusplus_weights``); ``labels`` -2, ``eps`` NaN, ``plan`` None (no backend
    choice: torch on the tensors' device).
    """

    def _weights(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        return gradcam_plusplus_weights(activations, required(gradients, "Grad-CAM++"))
