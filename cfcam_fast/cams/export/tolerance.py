"""How closely an exported frame's outputs must match ``RealtimeCFCAM``'s on the same input
(docs/export.md, "Tolerances"): for the tests, ``bench.export_latency`` and a deployment's
own acceptance check.

The maps: ``|map - ref| <= 2 kappa RHO + 2^-20`` per image (``map_tolerance``), with
``kappa = max_p sum_c |alpha_c A_c(p)| / max_p cam(p)`` (the condition number of the
normalised map: 1 for non-negative ``alpha`` and ``A``, larger where a signed ``linear``
weighting cancels) and ``RHO = 1e-5``, a relative budget per term ``alpha_c A_c``. It covers
float32 rounding of sums of up to 1280 terms in another order (worst case ``k u``, typically
``sqrt(k) u`` ~ 2e-6) and the runtimes' own convolutions (activations ~2e-6 relative apart).
The factor 2 is the normalisation (numerator and peak); bilinear upsampling is a convex
combination and adds nothing; ``2^-20`` absorbs the float32 rounding of values in [0, 1].

eps: identical on the same activations; end to end within ``EPS_RTOL``, because each
runtime's convolutions round the activations differently (~1e-6 relative).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..model_state import eval_mode, layer_outputs

RHO = 1e-5
EPS_RTOL = 1e-5


def map_tolerance(A: torch.Tensor, alpha: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Per image ``2 kappa RHO + 2^-20`` (module docstring), from the reference's terms:
    activations ``A`` ``[B, C, h, w]`` and channel weights ``alpha`` ``[B, C]``, for maps
    of ``size``."""
    a, w = A.double(), alpha.double()
    S = torch.einsum("bc,bchw->bhw", w.abs(), a.abs()).flatten(1).amax(1)
    cam = torch.einsum("bc,bchw->bhw", w, a).clamp(min=0)
    peak = F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False).flatten(1).amax(1)
    kappa = torch.where(peak > 0, S / torch.where(peak > 0, peak, 1.0), 0.0)
    return 2 * kappa * RHO + 2.0 ** -20


def layer_activations(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer``'s output for ``x`` in eager PyTorch (eval mode, no hook left): the ``A`` of
    ``map_tolerance``."""
    with torch.inference_mode(), eval_mode(model), layer_outputs([layer]) as kept:
        model(x)
    return kept[0][0].clone()
