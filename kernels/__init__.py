"""Triton kernels of cfcam_fast, installed as ``cfcam_fast.kernels``.

Each module holds one kernel beside the plain-PyTorch function it must equal. The kernels
run on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (Triton's
interpreter, for tests); a CPU tensor without it is a ``ValueError``.
"""
from .gaussian import gaussian_filter2d

__all__ = ["gaussian_filter2d"]
