"""Capture of target-layer activations and gradients: one forward and one backward.

The backward is ``torch.autograd.grad`` of the target scores with respect to the target
layers' outputs alone, so it runs only down to those layers and never touches a
parameter's ``.grad``. Hooks live for one call and are removed even when it raises; the
model runs in eval mode and gets its ``training`` flags back afterwards.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .model_state import eval_mode, forward_hooks, layer_name, model_lock
from .targets import Targets, target_scores


@dataclass
class Captured:
    """What one capture returns: per target layer, ``[B, C, H, W]`` activations and
    gradients (after ``reshape_transform``), plus the logits and the explained classes
    (-1 where a callable target names no class)."""

    activations: list[torch.Tensor]
    gradients: list[torch.Tensor | None]
    logits: torch.Tensor
    class_idx: torch.Tensor


def check_hookable(model: nn.Module, layers: Sequence[nn.Module]) -> None:
    """``ValueError`` when ``model`` or a target layer is TorchScript (``torch.jit.trace`` or
    ``torch.jit.script`` output): forward hooks cannot run inside a TorchScript graph."""
    for what, module in [("model", model)] + [("target layer", layer) for layer in layers]:
        if isinstance(module, torch.jit.ScriptModule):
            kind = ("traced (torch.jit.TracedModule)" if isinstance(module, torch.jit.TracedModule)
                    else "scripted (torch.jit.ScriptModule)")
            raise ValueError(f"the {what} is {kind}: forward hooks cannot run inside a TorchScript graph, "
                             "so the target layer's output cannot be captured; pass the original nn.Module, "
                             "before torch.jit.trace or torch.jit.script")


def _describe(value: Any) -> str:
    """A short description of a model output, naming the types inside a tuple, list or dict."""
    name = type(value).__name__
    if isinstance(value, (tuple, list)):
        return f"{name} of ({', '.join(type(v).__name__ for v in value)})"
    if isinstance(value, Mapping):
        return f"{name} of {{{', '.join(f'{k!r}: {type(v).__name__}' for k, v in value.items())}}}"
    return name


def _check_input(x: Any) -> torch.Tensor:
    """The input batch, or ``ValueError``: a floating-point tensor ``[B, ...]``, outside
    ``torch.inference_mode()``; an inference tensor is cloned into a normal one."""
    if torch.is_inference_mode_enabled():
        raise ValueError("CAM calls need autograd (a backward pass to the target layers), which is off "
                         "under torch.inference_mode(): call outside torch.inference_mode()")
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"input must be a batched tensor [B, ...], got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        raise ValueError(f"input is a {x.dtype} tensor; models take floating-point images: convert and "
                         "normalise it first (e.g. x.float() / 255, then the model's mean and std)")
    return x.clone() if x.is_inference() else x


def select_logits(out: Any, output_selector: Callable | None) -> torch.Tensor:
    """The logits in a model output ``out``: ``output_selector(out)`` if given, else ``out``;
    ``ValueError`` naming the types when that is not a tensor."""
    if output_selector is None:
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"the model returned {_describe(out)}, not a tensor of logits; pass "
                             "output_selector= to pick them (e.g. output_selector=lambda out: out.logits "
                             "for Hugging Face models, or lambda out: out[0])")
        return out
    logits = output_selector(out)
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"output_selector returned {_describe(logits)}, not a tensor of logits")
    return logits


@contextmanager
def hooked_forward(model: nn.Module, x: torch.Tensor, layers: Sequence[nn.Module],
                   layer_call: int | None = None, *,
                   grad: bool = True) -> Iterator[tuple[Any, list[torch.Tensor]]]:
    """Forward ``x`` in eval mode, grad enabled; yields the model's output and the
    target layers' outputs (graph kept): the call ``layer_call`` of a layer that runs
    several times, which without it is an error. Hooks and training flags are restored on
    exit, and the model's lock is held until then, so the caller's backward runs under it
    too. ``grad=False``: under ``no_grad`` instead, each kept output a detached copy (the
    model goes on with its own)."""
    x = _check_input(x)
    check_hookable(model, layers)
    outputs: list[list[torch.Tensor]] = [[] for _ in layers]

    def keep(i: int, module: nn.Module, output: Any) -> torch.Tensor | None:
        _check_layer_output(model, module, output)
        if not grad:
            outputs[i].append(output.detach().clone())  # in-place ops after the layer cannot reach it
            return None
        if not output.requires_grad:
            output = output.detach().requires_grad_(True)
        outputs[i].append(output)
        # The model goes on with a copy, so an in-place op after the layer (e.g.
        # ReLU(inplace=True)) cannot overwrite what is kept or modify a leaf.
        return output.clone()

    with model_lock(model, *layers), forward_hooks(layers, keep), eval_mode(model), torch.set_grad_enabled(grad):
        out = model(x)
        yield out, _chosen_calls(model, layers, outputs, layer_call)


def _check_layer_output(model: nn.Module, module: nn.Module, output: Any) -> None:
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"target layer {layer_name(model, module)!r} returned {type(output).__name__}, not a tensor")


def _chosen_calls(model: nn.Module, layers: Sequence[nn.Module], outputs: list[list[torch.Tensor]],
                  layer_call: int | None) -> list[torch.Tensor]:
    """Per target layer, the output of the call to explain (see ``_hooked_forward``)."""
    missing = [layer_name(model, layer) for layer, calls in zip(layers, outputs) if not calls]
    if missing:
        scripted = [name for name, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)]
        hint = f" (hooks cannot run inside the TorchScript submodule {scripted[0]!r})" if scripted else ""
        raise ValueError(f"target layer(s) {missing} did not run in the forward pass{hint}")
    for layer, calls in zip(layers, outputs):
        if layer_call is None and len(calls) > 1:
            raise ValueError(f"target layer {layer_name(model, layer)!r} ran {len(calls)} times in one forward "
                             "pass; choose the call to explain with layer_call= (0 the first, -1 the last)")
        if layer_call is not None and not -len(calls) <= layer_call < len(calls):
            raise ValueError(f"layer_call={layer_call}, but target layer {layer_name(model, layer)!r} ran "
                             f"{len(calls)} time(s) in the forward pass")
    return [calls[0 if layer_call is None else layer_call] for calls in outputs]


def _checked_layout(model: nn.Module, layer: nn.Module, act: torch.Tensor, grad: torch.Tensor | None,
                    reshape_transform: Callable | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Detach, fill missing gradients with zeros, apply ``reshape_transform``, check [B, C, H, W]."""
    act = act.detach()
    grad = torch.zeros_like(act) if grad is None else grad.detach()
    if reshape_transform is not None:
        act, grad = reshape_transform(act), reshape_transform(grad)
    if act.dim() != 4:
        raise ValueError(f"target layer {layer_name(model, layer)!r} gave shape {tuple(act.shape)}; "
                         "CF-CAM needs [B, C, H, W] (pass a reshape_transform for other layouts)")
    if act.shape[-2:] == (1, 1):
        warnings.warn(f"target layer {layer_name(model, layer)!r} has spatial size 1x1: its map is constant "
                      "and carries no spatial information; choose an earlier layer", UserWarning, stacklevel=4)
    return act, grad


def capture(model: nn.Module, x: torch.Tensor, layers: Sequence[nn.Module], targets: Targets = None,
            reshape_transform: Callable | None = None, *, output_selector: Callable | None = None,
            layer_call: int | None = None) -> Captured:
    """One forward and one backward through ``model`` for the batch ``x``
    (``output_selector`` and ``layer_call`` as in ``base.BaseCAM``)."""
    with hooked_forward(model, x, layers, layer_call) as (out, raw):
        logits = select_logits(out, output_selector)
        scores, class_idx = target_scores(logits, targets)
        grads = torch.autograd.grad(scores.sum(), raw, allow_unused=True)
    activations: list[torch.Tensor] = []
    gradients: list[torch.Tensor | None] = []
    for layer, act, grad in zip(layers, raw, grads):
        act, grad = _checked_layout(model, layer, act, grad, reshape_transform)
        activations.append(act)
        gradients.append(grad)
    return Captured(activations, gradients, logits.detach(), class_idx)


@dataclass
class CapturedClasses:
    """What ``capture_classes`` returns: per target layer, ``[B, C, H, W]`` activations and
    ``[K, B, C, H, W]`` gradients (row ``k`` for class ``class_idx[:, k]``), the logits and
    the ``[B, K]`` explained classes."""

    activations: list
    gradients: list
    logits: torch.Tensor
    class_idx: torch.Tensor


def capture_classes(model: nn.Module, x: torch.Tensor, layers: Sequence[nn.Module],
                    classes: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
                    reshape_transform: Callable | None = None, *, output_selector: Callable | None = None,
                    layer_call: int | None = None) -> CapturedClasses:
    """Gradients of ``K`` classes per image from one forward and one batched backward.

    ``classes``: an integer ``[B, K]`` tensor, or a callable mapping the ``[B, N]`` logits to
    one (e.g. the top and the bottom class). The backward is a single
    ``torch.autograd.grad(..., is_grads_batched=True)`` over the ``K`` one-hot seeds, so each
    row equals a separate backward of that class's logit. ``output_selector`` and
    ``layer_call`` as in ``base.BaseCAM``.
    """
    with hooked_forward(model, x, layers, layer_call) as (out, raw):
        logits = select_logits(out, output_selector)
        flat = logits.flatten(1)
        idx = classes(flat.detach()) if callable(classes) else classes
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.shape[0] != flat.shape[0] \
                or idx.shape[1] < 1 or idx.is_floating_point():
            raise ValueError(f"classes must be an integer tensor [{flat.shape[0]}, K], got "
                             f"{getattr(idx, 'dtype', type(idx).__name__)} {tuple(getattr(idx, 'shape', ()))}")
        idx = idx.to(flat.device, torch.int64)
        if bool(((idx < 0) | (idx >= flat.shape[1])).any()):
            raise ValueError(f"classes must lie in [0, {flat.shape[1]}), got {idx.tolist()}")
        K = idx.shape[1]
        scores = flat.gather(1, idx).T  # [K, B]
        seeds = torch.eye(K, dtype=scores.dtype, device=scores.device)[:, :, None].expand(K, K, scores.shape[1])
        grads = torch.autograd.grad(scores, raw, grad_outputs=seeds, is_grads_batched=True, allow_unused=True)
    activations, gradients = [], []
    for layer, act, grad in zip(layers, raw, grads):
        if grad is None:
            grad = torch.zeros((K, *act.shape), dtype=act.dtype, device=act.device)
        act_t, grad_t = _checked_layout(model, layer, act, grad.flatten(0, 1), reshape_transform)
        activations.append(act_t)
        gradients.append(grad_t.reshape(K, act.shape[0], *grad_t.shape[1:]))
    return CapturedClasses(activations, gradients, logits.detach(), idx)


def capture_forward(model: nn.Module, x: torch.Tensor, layers: Sequence[nn.Module], targets: Targets = None,
                    reshape_transform: Callable | None = None, *, output_selector: Callable | None = None,
                    layer_call: int | None = None) -> Captured:
    """One forward and no backward, under ``torch.no_grad``, for the gradient-free CAMs.

    Returns the target layers' activations, the logits and the explained classes as
    ``capture`` does; ``gradients`` holds ``None`` per layer. Unlike ``capture`` it also
    runs under ``torch.inference_mode()``. Model state, locks, hooks and arguments as in
    ``capture`` (``output_selector`` and ``layer_call`` as in ``base.BaseCAM``).
    """
    with torch.inference_mode(False), hooked_forward(model, x, layers, layer_call, grad=False) as (out, raw):
        logits = select_logits(out, output_selector)
        _, class_idx = target_scores(logits, targets)
    activations = []
    for layer, act in zip(layers, raw):
        # The activations stand in for the absent gradients; only the checked activations are kept.
        activations.append(_checked_layout(model, layer, act, act, reshape_transform)[0])
    return Captured(activations, [None] * len(layers), logits.detach(), class_idx)
