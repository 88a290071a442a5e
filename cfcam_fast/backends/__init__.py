"""Backends that compute the CF-CAM core, and the registry that picks one.

Every backend module offers ``explain(activations, gradients, output_size, config,
return_filtered) -> CFCAMResult``. ``status()`` says which are usable here and why not.
"""
from __future__ import annotations

import importlib

import torch

CORE_BACKENDS = ("reference", "torch", "triton")


def _triton_reason(device: torch.device | None) -> str | None:
    try:
        from ..kernels._launch import interpreted
    except ImportError:
        return "Triton is not installed: pip install triton"
    # Triton settles at its first import whether it interprets (kernels/_launch.py).
    if device is not None and device.type != "cuda" and not interpreted():
        return (f"the Triton kernels run on CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 "
                "before Triton is first imported to run them on the CPU under the interpreter")
    if device is None and not torch.cuda.is_available() and not interpreted():
        return "no CUDA device (and Triton was not imported under TRITON_INTERPRET=1)"
    return None


def unavailable_reason(name: str, device: torch.device | None = None) -> str | None:
    """Why core backend ``name`` cannot run on ``device`` here, or ``None`` if it can."""
    if name not in CORE_BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {CORE_BACKENDS + ('auto',)}")
    if name == "triton":
        return _triton_reason(device)
    return None


def status() -> dict[str, str]:
    """Each core backend mapped to "available" or the reason it is not."""
    return {name: unavailable_reason(name) or "available" for name in CORE_BACKENDS}


def resolve(name: str, device: torch.device):
    """The backend module for ``name`` on ``device``; ``"auto"`` picks the fastest usable one.

    A named backend that cannot run is an error saying what to install or change.
    """
    if name == "auto":
        name = "triton" if device.type == "cuda" and unavailable_reason("triton", device) is None else "torch"
    reason = unavailable_reason(name, device)
    if reason is not None:
        raise RuntimeError(f"backend {name!r} is not available: {reason}")
    return importlib.import_module(f"{__name__}.{name if name == 'reference' else name + '_backend'}")
