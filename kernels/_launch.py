"""Where a kernel runs: compiled on CUDA tensors, interpreted on CPU tensors.

On CUDA tensors a kernel is always compiled, also when ``TRITON_INTERPRET=1`` was set when
it was defined (then ``triton.jit`` gave an interpreted function; the compiled one is
rebuilt from the same Python source). On CPU tensors it runs in Triton's interpreter when
``TRITON_INTERPRET=1`` is set at call time (before or after importing the kernels);
otherwise it is a ``ValueError`` naming the plain-PyTorch function to use instead: no
silent fallback, so a test of a kernel always runs the kernel.
"""
from __future__ import annotations

import functools
import os

import torch
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

MAX_ELEMENTS = 2 ** 31 - 1


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set now."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.lru_cache(maxsize=None)
def _interpreted(fn) -> InterpretedFunction:
    return InterpretedFunction(fn)


@functools.lru_cache(maxsize=None)
def _jit(fn) -> JITFunction:
    return JITFunction(fn)


def compiled(kernel) -> JITFunction:
    """The compiled (``JITFunction``) form of a ``triton.jit`` kernel, however it was defined."""
    return kernel if isinstance(kernel, JITFunction) else _jit(kernel.fn)


def launcher(kernel, device: torch.device, op: str, torch_equivalent: str):
    """``kernel`` ready to be launched (``launcher(...)[grid](...)``) on ``device``."""
    if device.type == "cuda":
        return compiled(kernel)
    if not interpreting():
        raise ValueError(f"{op} is a Triton kernel for CUDA tensors, got a {device.type} tensor: move it "
                         f"to CUDA, set TRITON_INTERPRET=1 to run the kernel in Triton's interpreter, "
                         f"or call {torch_equivalent}")
    return _interpreted(kernel.fn) if isinstance(kernel, JITFunction) else kernel


def check_size(op: str, *tensors: torch.Tensor) -> None:
    """The kernels index with 32-bit integers: ``ValueError`` for larger tensors."""
    for t in tensors:
        if t.numel() > MAX_ELEMENTS:
            raise ValueError(f"{op} handles tensors of at most {MAX_ELEMENTS} elements, got "
                             f"{t.numel()} (shape {tuple(t.shape)}): split the batch")


def accumulator(dtype: torch.dtype):
    """Triton accumulation type for input ``dtype``: float64 for float64, else float32."""
    import triton.language as tl
    return tl.float64 if dtype == torch.float64 else tl.float32
