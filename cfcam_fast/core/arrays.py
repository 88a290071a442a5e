"""Arrays of other libraries in and out, through DLPack: NumPy on the CPU, CuPy or JAX on
CUDA, or anything else with ``__dlpack__``.

``as_tensor`` views such an array as a tensor without a copy where the library allows it
(a read-only NumPy array is copied, since DLPack cannot mark a tensor read-only), and
``returner`` gives the function that hands results back as the caller's array type, again
without a copy where it can.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import torch

ArrayLike = Any  # a torch.Tensor, or an array of another library with ``__dlpack__``

# The module whose ``from_dlpack`` makes arrays of a type, by the top of the type's module.
_FROM_DLPACK = {"numpy": "numpy", "cupy": "cupy", "jax": "jax.numpy", "jaxlib": "jax.numpy"}


def is_foreign(value: Any) -> bool:
    """Whether ``value`` is an array of another library that DLPack can bring in."""
    return not isinstance(value, torch.Tensor) and hasattr(value, "__dlpack__")


def as_tensor(value: Any) -> Any:
    """``value`` as a tensor if it is an array with ``__dlpack__`` (sharing its memory where
    possible); anything else is returned as it is."""
    if not is_foreign(value):
        return value
    try:
        return torch.from_dlpack(value)
    except (BufferError, RuntimeError, TypeError):  # e.g. a read-only NumPy array: copy it
        import numpy as np

        return torch.as_tensor(np.array(value))


def returner(like: Any) -> Callable[[Any], Any]:
    """The function that turns a tensor (or a dataclass of tensors, or a list of them) into
    arrays of ``like``'s library; the identity when ``like`` is a tensor or not an array."""
    if not is_foreign(like):
        return lambda result: result
    root = type(like).__module__.split(".")[0]
    name = _FROM_DLPACK.get(root, root)
    try:
        convert = importlib.import_module(name).from_dlpack
    except (ImportError, AttributeError):
        return lambda result: result  # a library with no from_dlpack: tensors it is

    def back(result: Any) -> Any:
        if isinstance(result, torch.Tensor):
            return convert(result.detach().contiguous())
        if isinstance(result, list):
            return [back(item) for item in result]
        if dataclasses.is_dataclass(result) and not isinstance(result, type):
            changes = {f.name: back(getattr(result, f.name)) for f in dataclasses.fields(result)
                       if isinstance(getattr(result, f.name), (torch.Tensor, list))}
            return dataclasses.replace(result, **changes)
        return result

    return back
