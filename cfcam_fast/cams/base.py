"""The one base class of every CAM on a model: target layers, capture, call and result.

A CAM method is a subclass that declares what it needs and computes one layer's map:

- ``needs_gradients`` (default True): the capture runs a backward pass to the target
  layers; False runs the forward pass only (also under ``torch.inference_mode()``);
- ``captured_only`` (default True): each layer's map is ``_core(activations, gradients)``
  of one capture and nothing else, so the metrics may feed it gradients of another class
  or with noise (``maps_from``); False for methods that run the model again (masked or
  noisy copies);
- ``noisy`` (default False): it draws random input noise from ``self.generator``;
- ``run_options``: the constructor keywords a run sets from its settings (``"backend"``,
  ``"batch_size"``).

It then overrides ``_weights(activations, gradients) -> [B, C]`` (the map is
``ReLU(sum_c w_c A_c)``, upsampled and normalised), or ``_core`` for any other map, or
``_layer_results`` when a layer's map needs more than its captured tensors
(docs/contributing.md has a worked example).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from ..core.checks import check_captured, deferred_checks
from ..core.config import CFCAMResult
from ..core.output import mean_of_layers, weighted_map
from .capture import Captured, capture, capture_forward, check_hookable
from .targets import Targets

CAM = TypeVar("CAM", bound="BaseCAM")


def required(gradients: torch.Tensor | None, method: str) -> torch.Tensor:
    """``gradients``, or a ``ValueError`` saying that ``method`` needs them."""
    if gradients is None:
        raise ValueError(f"{method} needs the gradients at the target layer")
    return gradients


def finish(results: list[CFCAMResult], captured: Captured, x: torch.Tensor) -> CFCAMResult:
    """The end of every CAM call: with several layers the maps are their mean, normalised
    again (other fields from the first layer); float32 maps on ``x.device``, the explained
    classes and the logits."""
    result = results[0]
    result.maps = mean_of_layers([r.maps for r in results]).to(x.device, torch.float32)
    result.class_idx = captured.class_idx
    result.logits = captured.logits
    return result


class BaseCAM:
    """A CAM method on ``model`` at ``target_layers``: ``cam(x, targets)`` gives
    ``[B, H_in, W_in]`` float32 maps in ``[0, 1]`` on ``x.device``; ``cam.explain`` the
    ``CFCAMResult`` with every intermediate, the explained classes and the logits.

    ``targets``: see ``cams.targets`` (``None`` is each image's top class).
    ``output_selector``: a callable picking the logits from a model output that is not a
    tensor (e.g. ``lambda out: out.logits`` for Hugging Face models); without it such an
    output is a ``ValueError`` naming its types. ``layer_call``: which call to explain of a
    target layer that runs several times in one forward pass (an index into its calls:
    0 the first, -1 the last); without it such a layer is a ``ValueError``, never a silent
    pick. TorchScript models and layers (``torch.jit.trace``/``script`` output) are refused
    here, since hooks cannot run inside them; so are integer inputs, and calls under
    ``torch.inference_mode()`` for methods that need gradients. A target layer of spatial
    size 1x1 warns that its map is constant.

    Hooks exist only during a call, so nothing outlives a call or the ``with`` block. The
    class attributes declare what the method needs (module docstring).
    """

    needs_gradients: ClassVar[bool] = True
    captured_only: ClassVar[bool] = True
    noisy: ClassVar[bool] = False
    run_options: ClassVar[tuple[str, ...]] = ()
    generator: torch.Generator | None = None  # where a noisy method draws its noise

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module] | nn.Module,
                 reshape_transform: Callable | None = None, *, output_selector: Callable | None = None,
                 layer_call: int | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        layers = [target_layers] if isinstance(target_layers, nn.Module) else list(target_layers)
        if not layers or not all(isinstance(m, nn.Module) for m in layers):
            raise ValueError("target_layers must be a non-empty list of modules of the model")
        check_hookable(model, layers)
        if output_selector is not None and not callable(output_selector):
            raise ValueError(f"output_selector must be a callable or None, got {type(output_selector).__name__}")
        if layer_call is not None and (not isinstance(layer_call, int) or isinstance(layer_call, bool)):
            raise ValueError(f"layer_call must be an int or None, got {layer_call!r}")
        self.model = model
        self.target_layers = layers
        self.reshape_transform = reshape_transform
        self.output_selector = output_selector
        self.layer_call = layer_call

    def __enter__(self: CAM) -> CAM:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Nothing is held between calls; kept for the context-manager protocol."""

    def __call__(self, x: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        """Maps ``[B, H_in, W_in]`` in ``[0, 1]``, float32, on ``x.device``."""
        return self.explain(x, targets).maps

    def explain(self, x: torch.Tensor, targets: Targets = None) -> CFCAMResult:
        """The maps with every intermediate, the explained classes and the logits.

        With several target layers, ``maps`` is their mean, normalised again, and the
        other fields are those of the first layer.
        """
        captured = self.capture(x, targets)
        with self._checks():
            results = self._layer_results(x, captured, targets)
        return finish(results, captured, x)

    def _checks(self) -> AbstractContextManager[None]:
        """Where the value checks of a call are read: on CUDA once, after all its work is
        enqueued (``core.checks.deferred_checks``)."""
        return deferred_checks()

    def capture(self, x: torch.Tensor, targets: Targets = None) -> Captured:
        """The target layers' activations (and gradients, if ``needs_gradients``), the
        logits and the explained classes of one pass over ``x``."""
        run = capture if self.needs_gradients else capture_forward
        return run(self.model, x, self.target_layers, targets, self.reshape_transform,
                   output_selector=self.output_selector, layer_call=self.layer_call)

    def maps_from(self, activations: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor | None],
                  output_size: Sequence[int]) -> torch.Tensor:
        """The float32 maps from given per-layer activations and gradients, several layers
        combined as ``explain`` combines them; only for ``captured_only`` methods."""
        if not self.captured_only:
            raise ValueError(f"{type(self).__name__} runs the model again for its maps, so they cannot be "
                             "computed from captured activations and gradients alone")
        return mean_of_layers([self._core(a, g, output_size).maps for a, g in zip(activations, gradients)]).float()

    def _layer_results(self, x: torch.Tensor, captured: Captured, targets: Targets) -> list[CFCAMResult]:
        """One result per target layer (by default ``_core`` of its captured tensors)."""
        size = tuple(x.shape[-2:])
        return [self._core(a, g, size) for a, g in zip(captured.activations, captured.gradients)]

    def _core(self, activations: torch.Tensor, gradients: torch.Tensor | None,
              output_size: Sequence[int]) -> CFCAMResult:
        """One layer's result: by default the map ``ReLU(sum_c w_c A_c)`` for the weights
        ``_weights`` gives, computed in float64 (so activations and gradients in float32's
        subnormal range keep their precision), upsampled and normalised."""
        grads = activations if gradients is None else gradients
        check_captured(activations, grads)
        with torch.no_grad():
            A = activations.detach().double()
            G = None if gradients is None else gradients.detach().double()
            w = self._weights(A, G)
            return CFCAMResult.without_clusters(weighted_map(A, w, output_size), w)

    def _weights(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        """The channel weights ``[B, C]`` of the map ``ReLU(sum_c w_c A_c)``."""
        raise NotImplementedError(f"{type(self).__name__} defines neither _weights nor _core")
