"""Triton kernels of cfcam_fast, installed as ``cfcam_fast.kernels``.

Each module holds one kernel beside the plain-PyTorch function it must equal:
``gaussian_filter2d`` (``filters.gaussian_filter2d_torch``), ``official_filter2d``
(``filters.official_filter_torch``), ``channel_weights`` and ``combine`` (the stages of
``backends.torch_backend``), and ``fused_eps_and_labels`` and ``fused_labels``, the
pairwise stage without the distance matrix (``pairs``, beside ``eps_and_labels_torch``).
They are compiled for CUDA tensors; with
``TRITON_INTERPRET=1`` set before Triton's first import they all run in Triton's
interpreter instead, CPU tensors included (for tests). A CPU tensor otherwise is a
``ValueError`` (see ``_launch``).
"""
from .combine import combine
from .gaussian import gaussian_filter2d
from .official import official_filter2d
from .pairs import fused_eps_and_labels, fused_labels
from .weights import channel_weights

__all__ = ["channel_weights", "combine", "fused_eps_and_labels", "fused_labels", "gaussian_filter2d",
           "official_filter2d"]
