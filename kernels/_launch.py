"""Where a kernel runs: as Triton itself decides, made explicit.

Triton settles at its first import whether it interprets: with ``TRITON_INTERPRET=1`` set
then, its own library (``tl.sum``, ``tl.max``...) is interpreted and nothing can be
compiled in that process; without it, nothing can be interpreted. So:

- Triton imported under ``TRITON_INTERPRET=1``: every kernel runs in the interpreter, on
  CPU tensors (the tests) and on CUDA tensors alike (slowly).
- Otherwise: kernels are compiled for CUDA tensors; a CPU tensor is a ``ValueError``
  naming the plain-PyTorch function to use instead. No silent fallback, so a test of a
  kernel always runs the kernel.

A kernel module imported under a different setting than Triton itself is brought to
Triton's mode (``triton.jit`` looks at the variable when it decorates).
"""
from __future__ import annotations

import functools

import torch
from triton.language import standard
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

MAX_ELEMENTS = 2 ** 31 - 1
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def interpreted() -> bool:
    """Whether Triton was imported under ``TRITON_INTERPRET=1`` (kernels are interpreted)."""
    return isinstance(standard.sum, InterpretedFunction)


@functools.cache
def _interpreted(fn) -> InterpretedFunction:
    return InterpretedFunction(fn)


@functools.cache
def _jit(fn) -> JITFunction:
    return JITFunction(fn)


def launcher(kernel, device: torch.device, op: str, torch_equivalent: str):
    """``kernel`` ready to be launched (``launcher(...)[grid](...)``) on ``device``."""
    if interpreted():
        return kernel if isinstance(kernel, InterpretedFunction) else _interpreted(kernel.fn)
    if device.type != "cuda":
        raise ValueError(f"{op} is a Triton kernel for CUDA tensors, got a {device.type} tensor: move it "
                         f"to CUDA, set TRITON_INTERPRET=1 before Triton is first imported to run the "
                         f"kernel in Triton's interpreter, or call {torch_equivalent}")
    return kernel if isinstance(kernel, JITFunction) else _jit(kernel.fn)


def check_maps(op: str, x) -> None:
    """``ValueError`` unless ``x`` is a floating ``[..., H, W]`` tensor the kernels can index."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"{op} needs a [..., H, W] tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{op} takes {FLOAT_DTYPES} tensors, got {x.dtype}")
    check_size(op, x)


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


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """The torch dtype of ``accumulator(dtype)``, for scratch tensors the kernels accumulate in."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def map_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For maps ``x`` ``[..., H, W]``: ``out``, an empty tensor of ``x``'s shape and dtype,
    and the ``[N, H, W]`` views ``src`` of ``x`` and ``dst`` of ``out`` the kernels walk."""
    H, W = x.shape[-2:]
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return out, x.reshape(-1, H, W), out.view(-1, H, W)
