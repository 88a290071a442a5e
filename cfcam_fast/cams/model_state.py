"""What a call does to a model, and undoes: its lock, eval mode and forward hooks.

Every place in the package that looks inside a forward pass does it through
``forward_hooks`` (or ``layer_outputs``), so no hook outlives the block that set it, also
when the block raises. ``model_lock`` and ``eval_mode`` make concurrent calls on one model
behave like calls made one at a time.
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from torch import nn

_locks: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _lock_of(module: nn.Module) -> threading.RLock:
    with _locks_guard:
        lock = _locks.get(module)
        if lock is None:
            lock = _locks[module] = threading.RLock()
        return lock


@contextmanager
def model_lock(*modules: nn.Module) -> Iterator[None]:
    """Hold the (re-entrant) locks of ``modules``, taken in one global order so that two
    callers naming the same modules can never deadlock."""
    with ExitStack() as stack:
        for module in sorted(set(modules), key=id):
            stack.enter_context(_lock_of(module))
        yield


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode, then give every submodule its own ``training`` flag back.

    Holds the model's lock throughout, so concurrent callers never see each other's flags.
    """
    with model_lock(model):
        training = _in_training(model)
        if not training:  # already in eval mode: nothing to switch, nothing to restore
            yield model
            return
        model.eval()
        try:
            yield model
        finally:
            for module in training:
                module.training = True


def _in_training(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` (itself included) whose ``training`` flag is set: a plain walk
    of the module tree, cheaper per call than ``model.modules()``."""
    found, stack, seen = [], [model], set()
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        if module.training:
            found.append(module)
        stack.extend(child for child in module._modules.values() if child is not None)
    return found


Hook = Callable[[int, nn.Module, Any], Any]


@contextmanager
def forward_hooks(modules: Sequence[nn.Module], hook: Hook) -> Iterator[None]:
    """Call ``hook(i, module, output)`` after every forward call of ``modules[i]`` while the
    block runs; a value it returns other than ``None`` replaces the module's output. The
    hooks are removed on exit, also when the block raises."""
    def register(i: int, module: nn.Module):
        return module.register_forward_hook(lambda m, _inputs, output: hook(i, m, output))

    handles = [register(i, module) for i, module in enumerate(modules)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def layer_outputs(modules: Sequence[nn.Module],
                  keep: Callable[[Any], Any] = lambda output: output) -> Iterator[list[list[Any]]]:
    """``outputs[i]``: ``keep(output)`` of every forward call of ``modules[i]`` while the
    block runs (the modules' outputs themselves are left as they are)."""
    outputs: list[list[Any]] = [[] for _ in modules]

    def record(i: int, _module: nn.Module, output: Any) -> None:
        outputs[i].append(keep(output))

    with forward_hooks(modules, record):
        yield outputs


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    """The dotted name of ``layer`` inside ``model`` (its class name if not found)."""
    for name, module in model.named_modules():
        if module is layer:
            return name or type(layer).__name__
    return type(layer).__name__
