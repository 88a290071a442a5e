"""The ``.onnx`` writer: an exported frame program as one ONNX model.

Opset ``OPSET`` = 18, the first with ``ScatterElements(reduction="min")``, which the DBSCAN
hooking uses; every other operator is older. One input, ``input`` (the example's shape,
float32), and the frame's outputs by name. The frame's ``cfcam.*`` metadata (and
``cfcam.opset``) go in the model's ``metadata_props``. ONNX Runtime (1.32) has no float64
``Resize`` and no bool ``Where`` kernel; the frame uses neither.
"""
from __future__ import annotations

import importlib.util
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

OPSET = 18
INSTALL_HINT = 'ONNX export needs onnx, onnxscript and onnxruntime: pip install "cfcam-fast[onnx]"'


class MissingExtra(ImportError, ValueError):
    """An optional dependency is not installed: an ``ImportError``, and a ``ValueError`` so
    that the command line reports it as a one-line user error."""


def require_onnx(modules: tuple[str, ...] = ("onnx", "onnxscript", "onnxruntime")) -> None:
    """``MissingExtra`` saying what to install unless ``modules`` (by default all three the
    export needs; running needs onnxruntime only) can be imported."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(f"{INSTALL_HINT} (missing: {', '.join(missing)})")


def write(program: torch.export.ExportedProgram, path: Path, metadata: dict[str, str],
          output_names: tuple[str, ...]) -> dict[str, Any]:
    """Write ``program`` to ``path`` as ONNX with ``metadata``; checks the model and
    returns ``{"convert_s", "bytes", "nodes"}``."""
    require_onnx()
    import onnx

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress notes and deprecations
        converted = torch.onnx.export(program, (), dynamo=True, opset_version=OPSET, input_names=["input"],
                                      output_names=list(output_names), optimize=True, verbose=False)
    assert converted is not None
    model = converted.model_proto
    del model.metadata_props[:]
    for key, value in {**metadata, "cfcam.opset": str(OPSET)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(model, os.fspath(path))
    onnx.checker.check_model(os.fspath(path))
    return {"convert_s": time.perf_counter() - start, "bytes": path.stat().st_size, "nodes": len(model.graph.node)}
