"""The forward-only gradient shortcut for models that end in global average pooling + linear.

If ``logits = mean_hw(A) @ W.T + b`` after the target layer, then ``d logit_k / dA`` is
``W[k, c] / (H W)`` at every position: no backward pass is needed. ``find_linear_head``
finds such a head and proves the shortcut once, against autograd, on an example input.

Tolerance (float32, defaults ``RTOL = 1e-5``, ``ATOL = 1e-12``): a value ``v`` passes
against its reference ``r`` when ``|v - r| <= ATOL + RTOL * s``, with ``s`` the magnitude
of the terms that make ``r``. For a logit, ``s = |W[k]| @ mean_hw(|A|) + |b[k]|``: it bounds
every partial sum of the pooling (over H*W values) and of the dot product (over C
channels), so any float32 summation order errs by at most ``(H*W + C) * u * s`` and in
practice (random rounding, blocked sums) by about ``sqrt(H*W + C) * u * s``: ``~2e-6 * s``
for 1280 channels at 7x7 (``u = 2^-24 = 6e-8``, float32's unit roundoff), while a layer
after the pooling or a wrong head moves logits by ``O(s)`` (docs/exactness.md gives the
errors seen on real models). For a gradient, ``s = |W[k, c]| / (H W)``: autograd computes
the same one-hot product and division, so the two agree to a few ulp. ``ATOL`` only admits
values whose scale is zero or denormal. bfloat16/float16 models (and likely TF32 matmuls
on CUDA) round above this tolerance and so fall back unless a looser ``rtol`` is given.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .capture import hooked_forward
from .model_state import forward_hooks, layer_name

RTOL = 1e-5
ATOL = 1e-12


@dataclass(frozen=True, eq=False)
class LinearHead:
    """A global-average-pool + linear head after the target layer: logits = mean_hw(A) @ weight.T + bias.
    ``name``: the ``nn.Linear``'s dotted name in the model (``""`` when not known)."""

    weight: torch.Tensor  # [K, C], the head's (detached) parameter
    bias: torch.Tensor | None  # [K] or None
    name: str = ""

    def __repr__(self) -> str:
        return f"LinearHead(weight={list(self.weight.shape)}, bias={self.bias is not None})"

    def gradients(self, activations: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
        """``d logit[b, class_idx[b]] / d activations`` for ``[B, C, H, W]`` activations:
        ``weight[class_idx[b], c] / (H W)`` everywhere, an expanded view in activations' dtype
        and device. ``class_idx``: ``[B]`` integers on the weight's device. No host
        synchronisation (``index_select``, no data-dependent shape)."""
        B, C, H, W = activations.shape
        rows = self.weight.index_select(0, class_idx)
        rows = rows.to(device=activations.device, dtype=activations.dtype) / (H * W)
        return rows[:, :, None, None].expand(B, C, H, W)


def find_linear_head(model: nn.Module, layer: nn.Module, example_input: torch.Tensor,
                     head: nn.Linear | None = None, *, rtol: float = RTOL,
                     atol: float = ATOL) -> tuple[LinearHead | None, str]:
    """The head after ``layer`` if the forward-only shortcut is proven on ``example_input``,
    else ``(None, reason)``.

    Without ``head``, the candidate is the last ``nn.Linear`` that runs after ``layer`` in
    the forward pass; a declared ``head`` is proven the same way. The proof (one forward in
    eval mode, grad enabled): the logits equal ``mean_hw(A) @ W.T + b``, and autograd's
    gradients of the top and the lowest class's logits with respect to ``A`` equal
    ``LinearHead.gradients``, both within the tolerance of the module docstring. Training
    flags, parameters and requires_grad flags are left as they were, and no hook remains.
    """
    name = layer_name(model, layer)
    order: list[nn.Module] = []
    modules = [layer] + ([] if head is not None else [m for m in model.modules() if isinstance(m, nn.Linear)])
    try:
        with forward_hooks(modules, lambda _i, module, _output: order.append(module)), \
                torch.inference_mode(False), hooked_forward(model, example_input.clone(), [layer]) as (logits, raw):
            A = raw[0]
            if head is None:
                after = order[order.index(layer) + 1:] if layer in order else []
                head = next((m for m in reversed(after) if isinstance(m, nn.Linear) and m is not layer), None)
                if head is None:
                    return None, f"no nn.Linear runs after {name!r} in the forward pass"
            why = _disproof(logits, A, head, name, layer_name(model, head), rtol, atol)
    except ValueError as exc:
        return None, str(exc)
    if why is not None:
        return None, why
    head_name = layer_name(model, head)
    return (LinearHead(head.weight.detach(), None if head.bias is None else head.bias.detach(), head_name),
            f"global average pooling + linear head {head_name!r} ({head.out_features} classes), "
            "proven against autograd on the example input")


def _disproof(logits: torch.Tensor, A: torch.Tensor, head: nn.Linear, name: str, head_name: str,
              rtol: float, atol: float) -> str | None:
    """Why the shortcut does not hold on this forward pass, or None if it does."""
    if A.dim() != 4:
        return f"the output of {name!r} has shape {tuple(A.shape)}, not [B, C, H, W]"
    B, C = A.shape[:2]
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != B:
        return f"the model output is not a [{B}, K] tensor of logits: {getattr(logits, 'shape', type(logits))}"
    if tuple(head.weight.shape) != (logits.shape[1], C):
        return (f"the head {head_name!r} has weight {tuple(head.weight.shape)} but {name!r} gives {C} "
                f"channels and the model {logits.shape[1]} outputs: not global average pooling + this linear")
    W = head.weight.detach().double()
    b = torch.zeros_like(W[:, 0]) if head.bias is None else head.bias.detach().double()
    with torch.no_grad():
        a = A.detach().double()
        expected = a.mean((2, 3)) @ W.T + b
        scale = a.abs().mean((2, 3)) @ W.abs().T + b.abs()
        why = _mismatch(logits.detach().double(), expected, scale, rtol, atol)
    if why is not None:
        hint = "" if A.dtype in (torch.float32, torch.float64) else f"; {A.dtype} may need a larger rtol"
        return (f"the layers after {name!r} are not global average pooling + linear: logits differ from "
                f"mean(A) @ W.T + b by {why}{hint}")
    shortcut = LinearHead(head.weight.detach(), None)
    for k in (logits.argmax(1), logits.argmin(1)):
        score = logits.gather(1, k[:, None]).sum()
        try:
            (grad,) = torch.autograd.grad(score, A, retain_graph=True, allow_unused=True)
        except RuntimeError as exc:
            return f"autograd could not differentiate the logits with respect to {name!r}: {exc}"
        if grad is None:
            return f"the logits do not depend on the output of {name!r}"
        expected = shortcut.gradients(A, k).double()
        why = _mismatch(grad.double(), expected, expected.abs(), rtol, atol)
        if why is not None:
            return f"autograd's gradient at {name!r} differs from W[k] / (H W) by {why}"
    return None


def _mismatch(value: torch.Tensor, expected: torch.Tensor, scale: torch.Tensor,
              rtol: float, atol: float) -> str | None:
    """None if ``|value - expected| <= atol + rtol * scale`` everywhere, else the worst error."""
    err = (value - expected).abs()
    allowed = atol + rtol * scale
    if bool((err <= allowed).all()):
        return None
    worst = int(torch.nan_to_num(err - allowed, nan=float("inf")).argmax())
    return f"{err.flatten()[worst].item():.3g} (allowed {allowed.flatten()[worst].item():.3g})"
