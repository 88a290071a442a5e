"""Run an exported frame in a fresh, isolated interpreter (``python -I``: no PYTHONPATH, no
user site, not even the script's folder on the path) by the runner that needs least:
``ort_runner.py`` (NumPy and onnxruntime) for ``.onnx``, ``pt2_runner.py`` (torch) for
``.pt2``. The runners fail if torch (ONNX), the model's code or this package got imported,
so a result proves the artefact is self-contained. For tests and benchmarks.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def run_isolated(path: str | Path, frames: torch.Tensor | Sequence[torch.Tensor], *, bench: int = 0,
                 threads: int = 0, timeout: float = 900) -> dict[str, Any]:
    """The outputs of the artefact at ``path`` on each of ``frames`` (``[F, *input_shape]``
    or a sequence of inputs) as ``{"outputs": {name: tensor stacked over the frames},
    "metadata": {...}}`` (outputs on the CPU), plus ``bench_s`` and ``bench_cpu_s`` with
    ``bench`` timed runs of the first frame; ``threads``: onnxruntime's intra-op threads or
    torch's threads. A ``.pt2`` runs on the device its package was compiled for
    (``cfcam.device``), each timed run synchronised."""
    stacked = frames if isinstance(frames, torch.Tensor) else torch.stack(list(frames))
    onnx = Path(path).suffix.lower() == ".onnx"
    runner = HERE / ("ort_runner.py" if onnx else "pt2_runner.py")
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / ("frames.npy" if onnx else "frames.pt")
        out = Path(tmp) / ("out.npz" if onnx else "out.pt")
        if onnx:
            np.save(inp, stacked.detach().cpu().numpy())
        else:
            torch.save(stacked.detach().cpu().contiguous(), inp)
        command = [sys.executable, "-I", str(runner), str(Path(path).resolve()), str(inp), str(out)]
        command += ["--bench", str(bench)] if bench else []
        command += ["--threads", str(threads)] if threads else []
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        if done.returncode != 0:
            raise RuntimeError(f"{runner.name} failed with status {done.returncode}: {done.stderr[-4000:]}")
        if not onnx:
            return torch.load(out, weights_only=True)
        with np.load(out) as data:
            arrays = {k: data[k] for k in data.files}
    names = [str(n) for n in arrays["output_names"]]
    result: dict[str, Any] = {"outputs": {k: torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in names},
                              "metadata": {k[5:]: str(v) for k, v in arrays.items() if k.startswith("meta.")},
                              "input_names": [str(n) for n in arrays["input_names"]]}
    for key in ("bench_s", "bench_cpu_s"):
        if key in arrays:
            result[key] = arrays[key].tolist()
    return result
