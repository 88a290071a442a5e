"""What makes the exportable core trace into a static graph and still run eagerly.

- ``cond`` and ``while_loop`` are PyTorch's control-flow operators (ONNX ``If`` and
  ``Loop``; AOTInductor compiles both) while ``torch.export`` traces, and plain Python
  otherwise, so the same functions run eagerly without ``torch.compile`` (which eager
  ``torch.cond`` would call) and with ``formulas.sqrt_rn``'s correctly rounded roots.
- ``float64_constants``: the ONNX exporter writes a Python float that meets a float64
  tensor as a *float32* constant (``x * 1e-5`` became ``x * 9.999999747378752e-06``).
  Traced under this mode, every such float that float32 cannot hold exactly becomes a
  float64 tensor first, so the shared formulas (``core.formulas``, ``core.selection``)
  keep their float64 constants. ``inexact_float64_scalars`` checks a traced program for
  any that remain.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree


def exporting() -> bool:
    """Whether ``torch.export`` is tracing the caller."""
    return bool(torch.compiler.is_exporting())


def cond(pred: torch.Tensor, true_fn: Callable[..., Any], false_fn: Callable[..., Any],
         operands: Sequence[torch.Tensor]) -> Any:
    """``true_fn(*operands)`` if the scalar bool ``pred`` holds, else ``false_fn(*operands)``:
    ``torch.cond`` under export, a Python ``if`` otherwise. ``float64_constants`` does not
    reach into the branches (they are traced apart), so a float64 constant a branch needs
    must come in as a tensor."""
    if exporting():
        return torch.cond(pred, true_fn, false_fn, tuple(operands))
    return (true_fn if bool(pred) else false_fn)(*operands)


def while_loop(cond_fn: Callable[..., torch.Tensor], body_fn: Callable[..., tuple[torch.Tensor, ...]],
               carried: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Run ``carried = body_fn(*carried)`` while ``cond_fn(*carried)`` holds: the
    ``while_loop`` operator under export (its functions, like ``cond``'s branches, are
    traced apart from ``float64_constants``), a Python loop otherwise."""
    if exporting():
        from torch._higher_order_ops import while_loop as traced_loop

        return tuple(traced_loop(cond_fn, body_fn, carried))
    while bool(cond_fn(*carried)):
        carried = tuple(body_fn(*carried))
    return carried


def float32_exact(value: float) -> bool:
    """Whether float32 holds ``value`` exactly (NaN and infinities included)."""
    return value != value or float(np.float32(value)) == value


class float64_constants(TorchFunctionMode):
    """While active, a Python float passed with a float64 tensor to any torch function is
    passed as a float64 tensor instead, unless float32 holds it exactly (module docstring).
    Results are unchanged in eager mode: the tensor holds the float's exact value."""

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        leaves = _pytree.tree_leaves((args, kwargs))
        if any(isinstance(a, torch.Tensor) and a.dtype == torch.float64 for a in leaves):
            def tensor(a: Any) -> Any:
                if type(a) is float and not float32_exact(a):
                    return torch.tensor(a, dtype=torch.float64)
                return a

            args, kwargs = _pytree.tree_map(tensor, (tuple(args), kwargs))
        return func(*args, **kwargs)


def inexact_float64_scalars(program: torch.export.ExportedProgram) -> list[str]:
    """The nodes of ``program`` (subgraphs of ``cond`` and ``while_loop`` included) that pass
    a Python float float32 cannot hold to an operator with a float64 tensor input or
    output: exactly the constants the ONNX exporter would round. Should be empty."""
    found = []
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in [] if graph is None else graph.nodes:
            if node.op != "call_function":
                continue
            floats = [a for a in _pytree.tree_leaves((node.args, node.kwargs))
                      if type(a) is float and not float32_exact(a)]
            if not floats:
                continue
            values = [getattr(a, "meta", {}).get("val") for a in node.all_input_nodes] + [node.meta.get("val")]
            dtypes = {v.dtype for v in _pytree.tree_leaves(values) if isinstance(v, torch.Tensor)}
            if torch.float64 in dtypes:
                found.append(f"{node.format_node()} (floats {floats})")
    return found
