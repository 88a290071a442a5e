"""CF-CAM on a model (docs/algorithm.md): one forward and one backward for the whole batch,
then the CF-CAM core on the captured tensors."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import ClassVar

import torch
from torch import nn

from ..core import backends
from ..core.checks import check_captured, check_layout
from ..core.config import CFCAMConfig, CFCAMResult, as_config
from ..core.explain import cfcam_explain, checks_for, run_plan
from ..core.resolve import resolve_plan
from .base import BaseCAM, required
from .capture import Captured
from .targets import Targets


class CFCAM(BaseCAM):
    """CF-CAM on a model (docs/algorithm.md): one forward and one backward for the whole batch.

    ``backend``: "auto", "reference", "torch" or "triton" (see ``core.backends``); with
    ``config.dbscan_backend`` it is resolved once per call into the ``plan`` every result
    records (``cfcam_fast.plan``). ``output_selector`` and ``layer_call`` as in
    ``BaseCAM``: a layer that runs more than once per forward is an error unless
    ``layer_call`` picks the call to explain.
    """

    run_options: ClassVar[tuple[str, ...]] = ("backend",)

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module] | nn.Module,
                 reshape_transform: Callable | None = None, config: CFCAMConfig | None = None,
                 backend: str = "auto", *, output_selector: Callable | None = None,
                 layer_call: int | None = None) -> None:
        super().__init__(model, target_layers, reshape_transform, output_selector=output_selector,
                         layer_call=layer_call)
        self.config = as_config(config)
        if backend != "auto":
            backends.unavailable_reason(backend)  # an unknown name fails here, not at the first call
        self.backend = backend

    def _core(self, activations: torch.Tensor, gradients: torch.Tensor | None,
              output_size: Sequence[int]) -> CFCAMResult:
        return cfcam_explain(activations, required(gradients, "CF-CAM"), output_size, self.config, self.backend)

    def _checks(self) -> AbstractContextManager[None]:
        return nullcontext()  # _layer_results reads the checks where its plan says (checks_for)

    def _layer_results(self, x: torch.Tensor, captured: Captured, targets: Targets) -> list[CFCAMResult]:
        """Every layer by one plan, resolved once for the call."""
        pairs = [(a, required(g, "CF-CAM")) for a, g in zip(captured.activations, captured.gradients)]
        for a, g in pairs:
            check_layout(a, g)
        plan = resolve_plan(self.backend, self.config, pairs[0][0].device)
        size = tuple(x.shape[-2:])
        with checks_for(plan):
            for a, g in pairs:
                check_captured(a, g)
            return [run_plan(a, g, size, self.config, plan) for a, g in pairs]
