"""Score-CAM (Wang et al., 2020) as grad-cam's ``ScoreCAM``: gradient-free."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core.checks import check_captured, positive_int
from ..core.config import CFCAMResult
from ..core.output import weighted_map
from .base import BaseCAM
from .capture import Captured, select_logits
from .model_state import eval_mode
from .targets import Target, Targets, for_copies

SCORECAM_EPS = 1e-8  # the denominator guard of the grad-cam package's mask normalisation


class ScoreCAM(BaseCAM):
    """Score-CAM as grad-cam's ``ScoreCAM``: one forward pass, then masked forwards.

    Each channel ``A_c`` is upsampled to the input size (bilinear with
    ``align_corners=True``, as grad-cam's ``UpsamplingBilinear2d``), min-max normalised to
    ``M_c = (U_c - min) / (max - min + 1e-8)`` and multiplied into the image; the target
    scores of the ``C`` masked images, softmaxed over the channels, are the weights ``w``,
    and the map is ``ReLU(sum_c w_c A_c)`` with the output rule, in float64. ``targets``
    as in ``BaseCAM``: ``None`` scores the unmasked image's arg-max class.

    ``batch_size``: masked images per forward (grad-cam's attribute of the same name);
    masks are built one chunk at a time, so memory grows with it and not with ``B * C``.
    The masked forwards run on the input's device under ``torch.no_grad`` with the model in
    eval mode; its state is left as it was.
    """

    needs_gradients: ClassVar[bool] = False
    captured_only: ClassVar[bool] = False
    run_options: ClassVar[tuple[str, ...]] = ("batch_size",)

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module] | nn.Module,
                 reshape_transform: Callable | None = None, *, batch_size: int = 32,
                 output_selector: Callable | None = None, layer_call: int | None = None) -> None:
        super().__init__(model, target_layers, reshape_transform, output_selector=output_selector,
                         layer_call=layer_call)
        self.batch_size = positive_int("batch_size", batch_size)

    def _layer_results(self, x: torch.Tensor, captured: Captured, targets: Targets) -> list[CFCAMResult]:
        per_image = for_copies(targets, captured.class_idx)
        results = []
        for activations in captured.activations:
            check_captured(activations, activations)
            A = activations.detach().double()
            w = self._score_weights(x, A, per_image)
            with torch.no_grad():
                results.append(CFCAMResult.without_clusters(weighted_map(A, w, tuple(x.shape[-2:])), w))
        return results

    def _score_weights(self, x: torch.Tensor, A: torch.Tensor, targets: list[Target]) -> torch.Tensor:
        """The softmaxed target scores ``[B, C]`` of the masked images, in chunks."""
        B, C = A.shape[:2]
        x = x.detach()
        channels = A.flatten(0, 1)[:, None].to(x.device)  # [B C, 1, h, w]
        scores = torch.empty(B * C, dtype=torch.float64, device=x.device)
        with eval_mode(self.model), torch.no_grad():
            for start in range(0, B * C, self.batch_size):
                stop = min(start + self.batch_size, B * C)
                up = F.interpolate(channels[start:stop], size=x.shape[-2:], mode="bilinear", align_corners=True)
                lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
                masks = (up - lo) / (hi - lo + SCORECAM_EPS)
                image = torch.arange(start, stop, device=x.device) // C
                out = self.model(x[image] * masks.to(x.dtype))
                logits = select_logits(out, self.output_selector).flatten(1)
                scores[start:stop] = _row_scores(logits, [targets[b] for b in image.tolist()])
        return torch.softmax(scores.view(B, C), dim=1)


def _row_scores(logits: torch.Tensor, targets: list[Target]) -> torch.Tensor:
    """Each row's target score: its class's logit, or its callable target's value."""
    if not any(callable(t) for t in targets):
        idx = torch.tensor(targets, dtype=torch.int64, device=logits.device)
        return logits.gather(1, idx[:, None])[:, 0].double()
    return torch.stack([(t(row) if callable(t) else row[t]).reshape(()) for t, row in zip(targets, logits)]).double()
