"""Triton kernels of cfcam_fast, installed as ``cfcam_fast.kernels``.

Each module holds one kernel beside the plain-PyTorch function it must equal:
``gaussian_filter2d`` (``filters.gaussian_filter2d_torch``), ``official_filter2d``
(``filters.official_filter_torch``), ``channel_weights`` and ``combine`` (the stages of
``backends.torch_backend``). The kernels run on CUDA tensors, and on CPU tensors under
``TRITON_INTERPRET=1`` (Triton's interpreter, for tests); a CPU tensor without it is a
``ValueError``.
"""
from .combine import combine
from .gaussian import gaussian_filter2d
from .official import official_filter2d
from .weights import channel_weights

__all__ = ["channel_weights", "combine", "gaussian_filter2d", "official_filter2d"]
