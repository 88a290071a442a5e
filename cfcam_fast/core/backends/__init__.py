"""Backends that compute the CF-CAM core: their names, why one cannot run, which "auto" picks.

Every backend module offers ``explain(activations, gradients, output_size, config, plan,
return_filtered) -> CFCAMResult`` and follows ``plan`` (``core.plan``), which is
resolved once per call (``core.resolve``), where ``status`` reports every backend.
"""
from __future__ import annotations

import importlib

import torch

from .. import triton_kernels
from ..plan import CORES as CORE_BACKENDS


def unavailable_reason(name: str, device: torch.device | None = None) -> str | None:
    """Why core backend ``name`` cannot run on ``device`` here, or ``None`` if it can."""
    if name not in CORE_BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {CORE_BACKENDS + ('auto',)}")
    if name == "triton":
        return triton_kernels.unavailable_reason(device)
    return None


def pick(name: str, device: torch.device) -> str:
    """The core backend that runs for ``name`` on ``device``: ``"auto"`` is triton on CUDA
    where usable, else torch; a named backend that cannot run is a ``RuntimeError`` saying
    what to install or change."""
    if name == "auto":
        return "triton" if device.type == "cuda" and unavailable_reason("triton", device) is None else "torch"
    reason = unavailable_reason(name, device)
    if reason is not None:
        raise RuntimeError(f"backend {name!r} is not available: {reason}")
    return name


def module(name: str):
    """The module of core backend ``name`` (a name ``pick`` returned)."""
    if name not in CORE_BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {CORE_BACKENDS}")
    return importlib.import_module(f"{__name__}.{name if name == 'reference' else name + '_backend'}")


def resolve(name: str, device: torch.device):
    """The backend module for ``name`` on ``device`` (``pick`` then ``module``)."""
    return module(pick(name, device))
