"""Smooth Grad-CAM++ as torchcam's ``SmoothGradCAMpp``, with the noisy copies batched."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import nn

from ..core.checks import check_captured, positive_int
from ..core.config import CFCAMResult
from ..core.output import weighted_map
from .base import BaseCAM, required
from .capture import Captured, capture, capture_forward
from .targets import Targets, for_copies

SMOOTH_GRADCAM_PLUSPLUS_EPS = 1e-8  # the denominator guard of torchcam's SmoothGradCAMpp


class SmoothGradCAMPlusPlus(BaseCAM):
    """Smooth Grad-CAM++ (Omeiza et al., 2019) computing torchcam 0.5.0's ``SmoothGradCAMpp``.

    ``num_samples`` noisy copies ``x + n_m`` of the batch, ``n_m ~ N(0, std^2)`` elementwise,
    go through forwards and backwards of at most ``batch_size`` images each. With ``A`` the
    clean activations and ``G_m`` the gradients of copy ``m`` (of the clean image's target:
    ``None`` means the clean arg-max class):

    - ``D2 = mean_m G_m^2``, ``D3 = mean_m G_m^3``;
    - ``alpha = D2 / (2 D2 + sum_positions(D3 * A) + 1e-8)`` (0 where that denominator is 0),
      torchcam's formula: the sum is over ``D3 * A`` per position, not ``sum(A) * D3`` as in
      grad-cam's Grad-CAM++, and there is no ``G != 0`` mask;
    - ``w_c = sum_positions(alpha * ReLU(G_last))`` and the map ``ReLU(sum_c w_c A_last_c)``,
      where ``G_last`` and ``A_last`` are the gradients and activations of the last noisy
      copy: torchcam's hooks keep the last forward's tensors, so this is what it computes.

    Noise: torchcam draws ``Normal(0, std).sample(x.shape)`` once per copy, in order, from
    torch's global generator on the CPU, in float32. Here each copy is
    ``torch.randn(x.shape, generator=generator) * std`` in float32, in the same order, on the
    generator's device (``generator=None``: the global CPU generator, as torchcam), then
    moved to ``x.device``; seeding torch identically before each call gives both the same
    draws. ``std=0`` is allowed (no noise). ``channel_weights`` and ``weights`` are ``w``.
    """

    captured_only: ClassVar[bool] = False
    noisy: ClassVar[bool] = True
    run_options: ClassVar[tuple[str, ...]] = ("batch_size",)

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module] | nn.Module,
                 reshape_transform: Callable | None = None, *, num_samples: int = 4, std: float = 0.3,
                 batch_size: int = 32, generator: torch.Generator | None = None,
                 output_selector: Callable | None = None, layer_call: int | None = None) -> None:
        super().__init__(model, target_layers, reshape_transform, output_selector=output_selector,
                         layer_call=layer_call)
        self.num_samples = positive_int("num_samples", num_samples)
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not math.isfinite(std) or std < 0:
            raise ValueError(f"std must be a finite number >= 0 (the noise's standard deviation), got {std!r}")
        self.std = float(std)
        self.batch_size = positive_int("batch_size", batch_size)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator

    def _noisy_copies(self, x: torch.Tensor) -> torch.Tensor:
        """``[num_samples * B, ...]``: copy ``m`` of image ``b`` at row ``m * B + b``."""
        device = self.generator.device if self.generator is not None else torch.device("cpu")
        noise = [torch.randn(x.shape, generator=self.generator, dtype=torch.float32, device=device) * self.std
                 for _ in range(self.num_samples)]
        return (x.detach()[None] + torch.stack(noise).to(x.device)).flatten(0, 1)

    def capture(self, x: torch.Tensor, targets: Targets = None) -> Captured:
        """The clean batch's forward pass: activations, logits and explained classes (the
        gradients come from the noisy copies)."""
        return capture_forward(self.model, x, self.target_layers, targets, self.reshape_transform,
                               output_selector=self.output_selector, layer_call=self.layer_call)

    def _layer_results(self, x: torch.Tensor, clean: Captured, targets: Targets) -> list[CFCAMResult]:
        """Each layer's weights and map from the noisy copies' gradients, in chunks."""
        per_image = for_copies(targets, clean.class_idx)
        B, n = x.shape[0], self.num_samples
        noisy = self._noisy_copies(x)
        layers = len(self.target_layers)
        d2: list[torch.Tensor] = []
        d3: list[torch.Tensor] = []
        last_a: list[torch.Tensor] = []
        last_g: list[torch.Tensor] = []
        for start in range(0, n * B, self.batch_size):
            rows = torch.arange(start, min(start + self.batch_size, n * B))
            image, copy = rows % B, rows // B
            chunk = capture(self.model, noisy[rows.to(noisy.device)], self.target_layers,
                            [per_image[b] for b in image.tolist()], self.reshape_transform,
                            output_selector=self.output_selector, layer_call=self.layer_call)
            for i, (a, grad) in enumerate(zip(chunk.activations, chunk.gradients)):
                g = required(grad, "Smooth Grad-CAM++").double()
                if len(d2) < layers:
                    d2.append(g.new_zeros((B, *g.shape[1:])))
                    d3.append(g.new_zeros((B, *g.shape[1:])))
                    last_a.append(a.new_zeros((B, *a.shape[1:])))
                    last_g.append(g.new_zeros((B, *g.shape[1:])))
                at = image.to(g.device)
                d2[i].index_add_(0, at, g * g)
                d3[i].index_add_(0, at, g * g * g)
                is_last = (copy == n - 1).to(g.device)
                last_a[i][at[is_last]] = a[is_last]
                last_g[i][at[is_last]] = g[is_last]
        size = tuple(x.shape[-2:])
        return [self._weights_and_map(A, D2 / n, D3 / n, A_last, G_last, size)
                for A, D2, D3, A_last, G_last in zip(clean.activations, d2, d3, last_a, last_g)]

    @staticmethod
    def _weights_and_map(A: torch.Tensor, D2: torch.Tensor, D3: torch.Tensor, A_last: torch.Tensor,
                         G_last: torch.Tensor, output_size: Sequence[int]) -> CFCAMResult:
        check_captured(A_last, G_last)
        with torch.no_grad():
            A, A_last = A.double(), A_last.double()
            denom = 2 * D2 + (D3 * A).sum(dim=(2, 3), keepdim=True) + SMOOTH_GRADCAM_PLUSPLUS_EPS
            alpha = torch.where(denom != 0, D2 / denom, torch.zeros_like(D2))
            w = (alpha * G_last.clamp_min(0)).sum(dim=(2, 3))
            return CFCAMResult.without_clusters(weighted_map(A_last, w, output_size), w)
