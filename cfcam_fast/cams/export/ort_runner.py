"""Run an exported ``.onnx`` frame with NumPy and onnxruntime alone: no torch, no cfcam_fast.

This file imports nothing of the package, so a deployment may copy it as it is. As a script::

    python -I ort_runner.py MODEL.onnx FRAMES.npy OUTPUT.npz [--bench N] [--threads T]

``FRAMES.npy`` holds ``[F, *input_shape]``: F frames, each run on its own. ``OUTPUT.npz``
gets every output by its name (stacked over the frames), the metadata (``meta.<key>``), the
input and output names, and with ``--bench N`` the seconds of N timed runs of the first
frame after 10 warm-up runs (``bench_s``, and this thread's CPU seconds ``bench_cpu_s``).
It exits with status 3 if torch, cfcam_fast or a model library (torchvision, timm) got
imported.
"""
from __future__ import annotations

import importlib
import json
import sys
import time
from typing import Any

import numpy as np

JSON_KEYS = ("cfcam.config", "cfcam.targets", "cfcam.input_shape", "cfcam.outputs")


class OnnxFrame:
    """An exported frame loaded into an onnxruntime CPU session: ``frame(x)`` returns
    ``{name: array}`` for one input ``x`` (float32, the exported shape). ``metadata``: the
    ``cfcam.*`` strings; ``info``: the same with the JSON values parsed. ``threads``: the
    session's intra-op threads (0: onnxruntime's default)."""

    def __init__(self, path: str, threads: int = 0) -> None:
        ort: Any = importlib.import_module("onnxruntime")  # (no type information)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        (entry,) = self.session.get_inputs()
        self.input_name = entry.name
        self.input_shape = tuple(int(s) for s in entry.shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.info: dict[str, Any] = {k: json.loads(v) if k in JSON_KEYS else v for k, v in self.metadata.items()}

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape != self.input_shape:
            raise ValueError(f"this frame was exported for input {list(self.input_shape)}, got {list(x.shape)}")
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: x})))


def main(argv: list[str]) -> int:
    """The script (module docstring)."""
    model, inp, out = argv[:3]
    bench = int(argv[argv.index("--bench") + 1]) if "--bench" in argv else 0
    threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else 0
    frame = OnnxFrame(model, threads)
    frames = np.load(inp)
    runs = [frame(x) for x in frames]
    arrays: dict[str, Any] = {k: np.stack([r[k] for r in runs]) for k in frame.output_names}
    for key, value in frame.metadata.items():
        arrays[f"meta.{key}"] = np.array(value)
    if bench:
        for _ in range(10):
            frame(frames[0])
        wall, cpu = [], []
        for _ in range(bench):
            t, c = time.perf_counter(), time.thread_time()
            frame(frames[0])
            cpu.append(time.thread_time() - c)
            wall.append(time.perf_counter() - t)
        arrays["bench_s"], arrays["bench_cpu_s"] = np.array(wall), np.array(cpu)
    leaked = [m for m in ("torch", "cfcam_fast", "torchvision", "timm") if m in sys.modules]
    if leaked:
        print(f"imported {leaked}", file=sys.stderr)
        return 3
    arrays["input_names"] = np.array([frame.input_name])
    arrays["output_names"] = np.array(frame.output_names)
    np.savez(out, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
