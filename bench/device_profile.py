"""Profiles of the paths whose targets a GPU run reads: where the time of one call goes.

    python -m bench.device_profile [--device cuda] [--calls 5]

Each case gets three warm-up calls, then ``--calls`` calls under ``torch.profiler`` (CPU and
CUDA activities); printed per case: the wall time per call and the operators ranked by
device time and by host (CPU) time. Cases: CF-CAM post-processing of 64 ResNet-50-like
tensors (triton and torch backends, native DBSCAN), one ResNet-18 frame through ``CFCAM``
and through ``RealtimeCFCAM``, and Grad-CAM against the floor on one ResNet-50 image.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

import cfcam_fast as cf
from cfcam_fast.benchmark.paths import floor
from cfcam_fast.cams.gradcam import GradCAM
from cfcam_fast.data.layers import resolve_layer
from cfcam_fast.data.models import load_model

from .device_checks import captured


def cases(device: torch.device) -> dict[str, Callable[[], object]]:
    """Name -> a call to profile, on ``device``."""
    from cfcam_fast.core import backends

    A, G = captured(64, device)
    out = {f"post-processing [64, 2048, 7, 7], {backend} backend, DBSCAN native":
           (lambda b=backend: cf.cfcam_explain(A, G, (224, 224), backend=b))
           for backend in ("triton", "torch") if backends.unavailable_reason(backend, device) is None}
    for name in ("resnet18", "resnet50"):
        model, layer_name = load_model(name, device=device)
        layer = resolve_layer(model, layer_name)
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
        if name == "resnet18":
            cam = cf.CFCAM(model, [layer])
            out["CFCAM frame, resnet18, batch 1"] = lambda cam=cam, x=x: cam(x)
            rt = cf.RealtimeCFCAM(model, layer, x)
            out[f"RealtimeCFCAM frame ({rt.mode}), resnet18, batch 1"] = lambda rt=rt, x=x: rt(x)
        else:
            baseline = GradCAM(model, [layer])
            out["Grad-CAM baseline, resnet50, batch 1"] = lambda c=baseline, x=x: c(x)
            out["floor, resnet50, batch 1"] = lambda m=model, layer=layer, x=x: floor(m, layer, x)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_case(fn: Callable[[], object], device: torch.device, calls: int, rows: int) -> str:
    """Wall time per call, then the operator tables, as text."""
    for _ in range(3):
        fn()
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        _sync(device)
    wall = (time.perf_counter() - start) / calls * 1e3
    table = prof.key_averages()
    parts = [f"wall {wall:.3f} ms per call under the profiler ({calls} calls)"]
    if device.type == "cuda":
        parts.append(table.table(sort_by="self_device_time_total", row_limit=rows))
    parts.append(table.table(sort_by="self_cpu_time_total", row_limit=rows))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.device_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--rows", type=int, default=25, help="operators per table")
    parser.add_argument("--only", default="", help="profile only the cases whose name contains this")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    for name, fn in cases(device).items():
        if args.only in name:
            print(f"\n===== {name} ({device})\n{profile_case(fn, device, args.calls, args.rows)}", flush=True)


if __name__ == "__main__":
    main()
