"""The CF-CAM core on captured tensors: ``cfcam`` and ``cfcam_explain`` (docs/algorithm.md)."""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from . import backends, graphs
from .arrays import ArrayLike, as_tensor, returner
from .checks import check_captured, check_layout, checked_output_size, deferred_checks
from .config import CFCAMConfig, CFCAMResult, as_config
from .plan import Plan
from .resolve import resolve_plan


def cfcam_explain(activations: ArrayLike, gradients: ArrayLike,
                  output_size: Sequence[int] | None = None, config: CFCAMConfig | None = None,
                  backend: str = "auto", *, return_filtered: bool = False) -> CFCAMResult:
    """CF-CAM of captured ``[B, C, H, W]`` activations and gradients, with every intermediate.

    ``output_size`` is the ``(H_in, W_in)`` the maps are upsampled to (default: the layer's
    own size). ``return_filtered=True`` also returns the filtered cluster-mean maps.
    ``backend`` and ``config.dbscan_backend`` are resolved once into the ``result.plan``
    that computes it (``cfcam_fast.plan.resolve_plan``).

    Tensors, or arrays of another library with ``__dlpack__`` (NumPy on the CPU, CuPy or JAX
    on CUDA), taken without a copy where the library allows it; the result's arrays are
    then of the activations' library (``core.arrays``).
    """
    back = returner(activations)
    activations, gradients = as_tensor(activations), as_tensor(gradients)
    return back(_explain(activations, gradients, output_size, config, backend, return_filtered))


def _explain(activations: torch.Tensor, gradients: torch.Tensor, output_size: Sequence[int] | None,
             config: CFCAMConfig | None, backend: str, return_filtered: bool) -> CFCAMResult:
    config = as_config(config)
    check_layout(activations, gradients)
    plan = resolve_plan(backend, config, activations.device)
    with checks_for(plan):
        check_captured(activations, gradients)
        return run_plan(activations, gradients, output_size, config, plan, return_filtered=return_filtered)


def checks_for(plan: Plan) -> AbstractContextManager[None]:
    """Where the value checks of a call by ``plan`` are read: on CUDA, by the fast cores,
    once after all the work is enqueued (``checks.deferred_checks``); the reference core
    reads them first, since NumPy and scikit-learn refuse non-finite input themselves."""
    return deferred_checks() if plan.core != "reference" else nullcontext()


def run_plan(activations: torch.Tensor, gradients: torch.Tensor, output_size: Sequence[int] | None,
             config: CFCAMConfig, plan: Plan, *, return_filtered: bool = False) -> CFCAMResult:
    """``cfcam_explain`` by a resolved ``plan``, on tensors that passed ``check_captured``."""
    if activations.device.type != plan.device.type:
        raise ValueError(f"the plan ({plan}) was resolved for {plan.device.type} tensors, "
                         f"got {activations.device.type} ones")
    size = checked_output_size(output_size, activations)
    with torch.no_grad():
        A, G = activations.detach(), gradients.detach()
        replayed = None if return_filtered else graphs.run(A, G, size, config, plan)
        if replayed is not None:
            return replayed
        return backends.module(plan.core).explain(A, G, size, config, plan, return_filtered=return_filtered)


def cfcam(activations: ArrayLike, gradients: ArrayLike, output_size: Sequence[int] | None = None,
          config: CFCAMConfig | None = None, backend: str = "auto") -> Any:
    """CF-CAM maps ``[B, H_in, W_in]`` in ``[0, 1]`` from captured activations and gradients
    (tensors or arrays with ``__dlpack__``, as ``cfcam_explain`` takes them)."""
    return cfcam_explain(activations, gradients, output_size, config, backend).maps
