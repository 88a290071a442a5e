"""CAM methods on a model: capture (capture.py) followed by a core on the captured tensors."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from . import backends
from .capture import Captured, Targets, capture, check_hookable
from .config import CFCAMConfig, CFCAMResult, as_config
from .core import cfcam_explain, check_captured, run_plan
from .plan import resolve_plan


def combine_layers(results: list[CFCAMResult], captured: Captured, x: torch.Tensor) -> CFCAMResult:
    """The finish of every CAM call: with several layers the mean map renormalised to a
    maximum of 1 (other fields from the first layer); float32 maps on ``x.device``, the
    explained classes and the logits."""
    result = results[0]
    if len(results) > 1:
        maps = torch.stack([r.maps for r in results]).mean(0)
        peak = maps.flatten(1).amax(1).clamp_min(torch.finfo(maps.dtype).tiny)
        result.maps = maps / peak[:, None, None]
    result.maps = result.maps.to(x.device, torch.float32)
    result.class_idx = captured.class_idx
    result.logits = captured.logits
    return result


class BaseCAM:
    """Shared model handling of the CAM classes: target layers, context manager, call.

    ``output_selector``: a callable picking the logits from a model output that is not a
    tensor (e.g. ``lambda out: out.logits`` for Hugging Face models); without it such an
    output is a ``ValueError`` naming its types. ``layer_call``: which call to explain of a
    target layer that runs several times in one forward pass (an index into its calls:
    0 the first, -1 the last); without it such a layer is a ``ValueError``, never a silent
    pick. TorchScript models and layers (``torch.jit.trace``/``script`` output) are refused
    here, since hooks cannot run inside them; so are integer inputs and calls under
    ``torch.inference_mode()`` (the call needs autograd). A target layer of spatial size
    1x1 warns that its map is constant.

    Subclasses implement ``_core(activations, gradients, output_size) -> CFCAMResult``.
    Hooks exist only during a call, so nothing outlives a call or the ``with`` block.
    """

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module],
                 reshape_transform: Callable | None = None, *, output_selector: Callable | None = None,
                 layer_call: int | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(target_layers, nn.Module):
            target_layers = [target_layers]
        target_layers = list(target_layers)
        if not target_layers or not all(isinstance(m, nn.Module) for m in target_layers):
            raise ValueError("target_layers must be a non-empty list of modules of the model")
        check_hookable(model, target_layers)
        if output_selector is not None and not callable(output_selector):
            raise ValueError(f"output_selector must be a callable or None, got {type(output_selector).__name__}")
        if layer_call is not None and (not isinstance(layer_call, int) or isinstance(layer_call, bool)):
            raise ValueError(f"layer_call must be an int or None, got {layer_call!r}")
        self.model = model
        self.target_layers = target_layers
        self.reshape_transform = reshape_transform
        self.output_selector = output_selector
        self.layer_call = layer_call

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing is held between calls; kept for the context-manager protocol."""

    def __call__(self, x: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        """Maps ``[B, H_in, W_in]`` in ``[0, 1]``, float32, on ``x.device``."""
        return self.explain(x, targets).maps

    def explain(self, x: torch.Tensor, targets: Targets = None) -> CFCAMResult:
        """The maps with every intermediate, the explained classes and the logits.

        With several target layers, ``maps`` is their average, renormalised to a maximum
        of 1, and the other fields are those of the first layer.
        """
        captured = capture(self.model, x, self.target_layers, targets, self.reshape_transform,
                           output_selector=self.output_selector, layer_call=self.layer_call)
        results = self._explain_layers(captured.activations, captured.gradients, tuple(x.shape[-2:]))
        return combine_layers(results, captured, x)

    def _core(self, activations: torch.Tensor, gradients: torch.Tensor, output_size) -> CFCAMResult:
        raise NotImplementedError

    def _explain_layers(self, activations: list, gradients: list, output_size) -> list[CFCAMResult]:
        """One result per target layer, from its captured activations and gradients."""
        return [self._core(a, g, output_size) for a, g in zip(activations, gradients)]


class CFCAM(BaseCAM):
    """CF-CAM on a model (docs/algorithm.md): one forward and one backward for the whole batch.

    ``backend``: "auto", "reference", "torch" or "triton" (see ``cfcam_fast.backends``);
    with ``config.dbscan_backend`` it is resolved once per call into the ``plan`` every
    result records (``cfcam_fast.plan``). ``output_selector`` and ``layer_call`` as in
    ``BaseCAM``: a layer that runs more than once per forward is an error unless
    ``layer_call`` picks the call to explain.
    """

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module],
                 reshape_transform: Callable | None = None, config: CFCAMConfig | None = None,
                 backend: str = "auto", *, output_selector: Callable | None = None,
                 layer_call: int | None = None) -> None:
        super().__init__(model, target_layers, reshape_transform, output_selector=output_selector,
                         layer_call=layer_call)
        self.config = as_config(config)
        if backend != "auto":
            backends.unavailable_reason(backend)  # an unknown name fails here, not at the first call
        self.backend = backend

    def _core(self, activations, gradients, output_size) -> CFCAMResult:
        return cfcam_explain(activations, gradients, output_size, self.config, self.backend)

    def _explain_layers(self, activations: list, gradients: list, output_size) -> list[CFCAMResult]:
        """Every layer by one plan, resolved once for the call."""
        for a, g in zip(activations, gradients):
            check_captured(a, g)
        plan = resolve_plan(self.backend, self.config, activations[0].device)
        return [run_plan(a, g, output_size, self.config, plan) for a, g in zip(activations, gradients)]
