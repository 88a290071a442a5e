"""The real-time frame as a deployable artefact: ONNX (``.onnx``) or an AOTInductor package
(``.pt2``); docs/export.md.

``frame.Frame`` is the model, its proven forward-only head and the static core
(``core.exportable``) as one module; ``export(frame, path, example)`` traces it once with
``torch.export`` and writes the format the path's suffix names (``onnx``, ``aoti``), with
the frame's ``cfcam.*`` metadata (``Frame.metadata``). ``RealtimeCFCAM.export`` is the
public way in. ``ort_runner`` (NumPy and onnxruntime only) and ``pt2_runner`` (torch only)
run the artefacts without this package; ``isolated`` runs them in a fresh interpreter.

May import ``core`` and the rest of ``cams``; onnx and onnxruntime only when used.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...core.exportable import float64_constants, inexact_float64_scalars
from ..model_state import eval_mode
from . import aoti, onnx
from .frame import EXTRA_OUTPUTS, OUTPUTS, Frame

FORMATS = {".onnx": "onnx", ".pt2": "pt2"}

__all__ = ["EXTRA_OUTPUTS", "FORMATS", "OUTPUTS", "Exported", "Frame", "export", "format_of", "non_aten_ops",
           "trace"]


@dataclass(frozen=True)
class Exported:
    """An artefact written by ``export``: its ``path``, ``format`` (``"onnx"`` or ``"pt2"``),
    ``output_names``, ``metadata`` (the ``cfcam.*`` strings it carries) and ``timings``
    (seconds: ``trace_s``, then ``convert_s`` or ``compile_s``; and ``bytes``)."""

    path: Path
    format: str
    output_names: tuple[str, ...]
    metadata: dict[str, str]
    timings: dict[str, Any] = field(default_factory=dict)


def format_of(path: str | Path) -> str:
    """``"onnx"`` or ``"pt2"`` by the suffix of ``path``; ``ValueError`` for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot export to {str(path)!r}: the suffix chooses the format, and the supported ones "
                         f"are .onnx (ONNX, run by onnxruntime) and .pt2 (an AOTInductor package); got "
                         f"{suffix or 'none'!r}")
    return FORMATS[suffix]


def trace(frame: Frame, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of ``frame`` on ``example`` in eval mode, with float64 constants kept
    (``core.exportable.tracing``). The model's training flags are restored and no hook
    remains, also when tracing fails."""
    with eval_mode(frame.model), torch.no_grad(), float64_constants():
        program = torch.export.export(frame, (example,), strict=False)
    rounded = inexact_float64_scalars(program)
    foreign = non_aten_ops(program)
    if rounded or foreign:  # a bug of this package, not of the caller's model
        raise RuntimeError(f"the traced frame is not exportable as it stands: float64 constants the ONNX exporter "
                           f"would round {rounded}, operators outside ATen {foreign}")
    return program


def non_aten_ops(program: torch.export.ExportedProgram) -> list[str]:
    """Every operator of ``program`` (subgraphs of ``cond`` and ``while_loop`` included) that
    is neither ATen, nor one of those two control-flow operators, nor ``getitem``."""
    found = set()
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in [] if graph is None else graph.nodes:
            if node.op != "call_function":
                continue
            target = node.target
            if isinstance(target, torch._ops.OpOverload):
                if target.namespace != "aten":
                    found.add(str(target))
            elif isinstance(target, torch._ops.HigherOrderOperator):
                if target.name() not in ("cond", "while_loop"):
                    found.add(target.name())
            elif getattr(target, "__module__", None) not in ("_operator", "operator"):
                found.add(str(target))
    return sorted(found)


def export(frame: Frame, path: str | Path, example: torch.Tensor) -> Exported:
    """Trace ``frame`` on ``example`` and write it to ``path``, in the format its suffix
    names (``format_of``), with ``frame.metadata()`` (and, for ``.pt2``, ``cfcam.device``:
    the example's device type, which the package is compiled for)."""
    path = Path(path)
    kind = format_of(path)
    if kind == "onnx":
        onnx.require_onnx()
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    start = time.perf_counter()
    program = trace(frame, example)
    timings: dict[str, Any] = {"trace_s": time.perf_counter() - start}
    metadata = frame.metadata()
    if kind == "pt2":  # compiled code runs on the device type it was compiled for
        metadata["cfcam.device"] = example.device.type
    writer = onnx.write if kind == "onnx" else aoti.write
    timings.update(writer(program, path, metadata, frame.output_names))
    return Exported(path, kind, frame.output_names, metadata, timings)
