"""The CF-CAM core in operators every runtime has: the core of an exported frame
(``cams.export``; docs/export.md).

``core.StaticCore`` computes, on captured tensors with shapes fixed at construction, what
``RealtimeCFCAM``'s core computes, with no custom op, no host synchronisation and no
data-dependent shape: ``scaling`` (the power-of-two rescaling without ``frexp``),
``decisions`` (eps and the neighbour relation, exact and certified), ``hooking`` (DBSCAN by
star hooking in a bounded loop) and ``tracing`` (control flow that traces, and float64
constants that survive the ONNX exporter). Every other step is the shared code of ``core``.

May import torch, NumPy and the rest of ``core``; nothing else of the package.
"""
from .core import DISTANCES, METHODS, StaticCore
from .tracing import float64_constants, inexact_float64_scalars

__all__ = ["DISTANCES", "METHODS", "StaticCore", "float64_constants", "inexact_float64_scalars"]
