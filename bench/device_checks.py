"""The in-process part of a GPU session: CUDA checks, CUDA timings, frame latency, sync points.

``bench.device_session`` runs this after building the package with the CUDA ops; it needs
torch (and Triton, torchvision and timm for the triton and latency rows) and nothing else.

Inputs of the checks and timings: ResNet-50-like last-block tensors ``[B, 2048, 7, 7]``
(ReLU of Gaussian noise, a tenth of the channels dead; gradients of scale 1e-3), fixed seed.

- Checks, reported (not raised, so the timings are taken whatever they say): CUDA against
  CPU labels (equal unless a pair sits within 1e-16 of eps: the CPU's certified distances
  and CUDA's float64 products may differ in the last bit), eps and maps; the triton
  backend against the torch backend on CUDA; the native CUDA ops against the CPU ops on
  the same float64 distances (equal).
- Timings (CUDA events, median of ``--repeats``): post-processing per image at each batch
  for each backend, and the native eps selection plus labelling per image at the largest.
- Frame latency (``bench.latency``): one 224x224 frame at a time through ResNet-18 and
  EfficientNet-Lite0, ``--frames`` timed frames after a warm-up, p50/p95/p99/max of the
  floor, ``CFCAM`` and ``RealtimeCFCAM`` (a CUDA graph on CUDA); peak memory per call at
  batch 1 and the largest batch, on CUDA.
- Sync points: every place a CF-CAM call makes the host wait for the device (run under
  ``torch.cuda.set_sync_debug_mode("warn")``), per backend, eager and replayed.

Writes ``device_checks.json`` and ``device_checks.md`` under ``--out``. ``--device cpu``
runs the same on the CPU (a dry run; CUDA-only rows are skipped).
"""
from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import cfcam_fast as cf
from cfcam_fast import cluster
from cfcam_fast.core import graphs
from cfcam_fast.core import native as _native
from cfcam_fast.core.formulas import min_samples_for
from cfcam_fast.core.selection import eps_from_sq_distances

from . import latency

CHANNELS, SIDE = 2048, 7
PATHS = [("torch", "native"), ("torch", "torch"), ("triton", "native"), ("triton", "fused")]


def captured(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(batch)
    A = torch.randn(batch, CHANNELS, SIDE, SIDE, generator=gen).relu()
    A[:, : CHANNELS // 10] = 0
    G = torch.randn(batch, CHANNELS, SIDE, SIDE, generator=gen) * 1e-3
    return A.to(device), G.to(device)


def median_ms(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` in ms, after one warm-up call; CUDA events on a GPU."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def unavailable(backend: str, dbscan: str, device: torch.device) -> str | None:
    if backend == "triton" and device.type != "cuda":
        return "the Triton kernels are timed on CUDA only"
    return cluster.unavailable_reason(dbscan, device)


def runnable(device: torch.device, out: dict[str, str], label: str):
    """``(name, backend, dbscan)`` of each of ``PATHS`` that can run on ``device``; the
    others are recorded in ``out`` as skipped. ``label`` formats the name."""
    for backend, dbscan in PATHS:
        name = label.format(backend, dbscan)
        reason = unavailable(backend, dbscan, device)
        if reason:
            out[name] = f"skipped: {reason}"
        else:
            yield name, backend, dbscan


def checks(device: torch.device) -> dict[str, str]:
    """CUDA against CPU, triton against torch, native CUDA ops against CPU ops."""
    if device.type != "cuda":
        return {"cuda": "skipped: no CUDA device"}
    out = {}
    A, G = captured(4, torch.device("cpu"))
    cpu = cf.cfcam_explain(A, G, (224, 224), backend="torch")
    for name, backend, dbscan in runnable(device, out, "{}+{} (cuda) vs torch+native (cpu)"):
        try:
            got = cf.cfcam_explain(A.to(device), G.to(device), (224, 224), cf.CFCAMConfig(dbscan_backend=dbscan),
                                   backend=backend)
        except Exception as exc:  # reported, so that the other checks and the timings still run
            out[name] = f"FAILED: {type(exc).__name__}: {exc}"
            continue
        mismatched = int((got.labels.cpu() != cpu.labels).sum())
        eps_rel = float(((got.eps.cpu() - cpu.eps).abs() / cpu.eps).max())
        map_err = float((got.maps.cpu() - cpu.maps).abs().max())
        out[name] = f"labels differing: {mismatched}; eps max rel diff {eps_rel:.1e}; maps max abs diff {map_err:.1e}"
    if _native.available(device):
        try:
            out["native ops cuda vs cpu (same distances)"] = _native_ops_check(device)
        except Exception as exc:
            out["native ops cuda vs cpu (same distances)"] = f"FAILED: {type(exc).__name__}: {exc}"
    return out


def _native_ops_check(device: torch.device) -> str:
    """The native CUDA selection and labelling against the CPU ops on the same float64 distances."""
    A, _ = captured(4, torch.device("cpu"))
    points = A.flatten(2)[:, CHANNELS // 4:].double()
    dist = cluster.pairwise_sq_distances(points)
    counts = torch.full((points.shape[0],), points.shape[1], dtype=torch.int64)
    eps = eps_from_sq_distances(dist, counts, 25.0, 1e-5, _native.pair_ranks)
    threshold, ms = cluster.sq_threshold(eps), min_samples_for(counts, cf.CFCAMConfig())
    cpu_labels = _native.dbscan_labels(dist, counts, threshold, ms)
    gpu_eps = eps_from_sq_distances(dist.to(device), counts.to(device), 25.0, 1e-5, _native.pair_ranks)
    gpu_labels = _native.dbscan_labels(dist.to(device), counts.to(device), threshold.to(device), ms.to(device))
    return (f"eps equal: {bool(torch.equal(gpu_eps.cpu(), eps))}; "
            f"labels equal: {bool(torch.equal(gpu_labels.cpu(), cpu_labels))}")


def timings(device: torch.device, batches: list[int], repeats: int) -> list[dict]:
    rows = []
    for batch in batches:
        A, G = captured(batch, device)
        for backend, dbscan in PATHS:
            row = dict(path=f"post-processing, {backend} backend, DBSCAN {dbscan}", batch=batch)
            reason = unavailable(backend, dbscan, device)
            if reason:
                rows.append({**row, "skipped": reason})
                continue
            config = cf.CFCAMConfig(dbscan_backend=dbscan)
            try:
                total = median_ms(functools.partial(cf.cfcam_explain, A, G, (224, 224), config, backend=backend),
                                  device, repeats)
            except Exception as exc:
                rows.append({**row, "skipped": f"FAILED: {type(exc).__name__}: {exc}"})
                continue
            rows.append({**row, "ms_per_image": total / batch})
    if device.type == "cuda" and _native.available(device):
        batch = max(batches)
        A, _ = captured(batch, device)
        points = A.flatten(2)[:, CHANNELS // 4:].double()
        dist = cluster.pairwise_sq_distances(points)
        counts = torch.full((batch,), points.shape[1], dtype=torch.int64, device=device)
        ms = min_samples_for(counts, cf.CFCAMConfig())

        def select_and_label():
            eps = eps_from_sq_distances(dist, counts, 25.0, 1e-5, _native.pair_ranks)
            return _native.dbscan_labels(dist, counts, cluster.sq_threshold(eps), ms)

        row = dict(path="native eps selection + labelling (given float64 distances)", batch=batch)
        try:
            rows.append({**row, "ms_per_image": median_ms(select_and_label, device, repeats) / batch})
        except Exception as exc:
            rows.append({**row, "skipped": f"FAILED: {type(exc).__name__}: {exc}"})
    if device.type == "cuda" and cluster.unavailable_reason("fused", device) is None:
        from cfcam_fast.kernels.pairs import fused_eps_and_labels

        batch = max(batches)
        A, _ = captured(batch, device)
        points = A.flatten(2)[:, CHANNELS // 4:].contiguous()
        counts = torch.full((batch,), points.shape[1], dtype=torch.int64, device=device)
        ms = min_samples_for(counts, cf.CFCAMConfig())
        floor = torch.full((batch,), 1e-5, dtype=torch.float64, device=device)
        row = dict(path="fused eps selection + labelling (given the points, no distances)", batch=batch)
        try:
            rows.append({**row, "ms_per_image": median_ms(
                functools.partial(fused_eps_and_labels, points, counts, 25.0, floor, ms), device, repeats) / batch})
        except Exception as exc:
            rows.append({**row, "skipped": f"FAILED: {type(exc).__name__}: {exc}"})
    return rows


def sync_points(device: torch.device) -> dict[str, str]:
    """Per backend, every place at which one CF-CAM call (batch 4) makes the host wait, from
    ``torch.cuda.set_sync_debug_mode("warn")``: one, at the end, is the design (the value
    checks read once); a replayed graph is taken by the third call of a shape."""
    if device.type != "cuda":
        return {"cuda": "skipped: no CUDA device"}
    import warnings

    A, G = captured(4, device)
    out = {}
    for name, backend, dbscan in runnable(device, out, "{}+{}"):
        config = cf.CFCAMConfig(dbscan_backend=dbscan)
        for _ in range(2):  # compile and load, then capture the graph, outside the probe
            cf.cfcam_explain(A, G, (224, 224), config, backend=backend)
        for label in ("replayed", "eager"):
            graphs.set_enabled(label == "replayed")
            torch.cuda.synchronize(device)
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    cf.cfcam_explain(A, G, (224, 224), config, backend=backend)
            finally:
                torch.cuda.set_sync_debug_mode(0)
                graphs.set_enabled(True)
            places = [f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]
            out[f"{name}, {label}"] = f"{len(places)} host wait(s)" + (f" at {', '.join(places)}" if places else "")
    return out


def _version_of(dist: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--frames", type=int, default=300, help="timed frames per latency row")
    parser.add_argument("--latency-models", default=",".join(latency.MODELS),
                        help="comma-separated models of the latency rows ('' for none)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    latency_models = [m for m in args.latency_models.split(",") if m]
    report = dict(
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        versions=dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
                      triton=_version_of("triton"), cfcam_fast=cf.__version__),
        backend_status=cf.backend_status(),
        input=f"[B, {CHANNELS}, {SIDE}, {SIDE}] float32, output 224x224",
        checks=checks(device),
        timings=timings(device, batches, args.repeats),
        latency=latency.latency_rows(device, args.frames, latency_models),
        memory=latency.memory_rows(device, [1, max(batches)], latency_models) if device.type == "cuda" else [],
        sync_points=sync_points(device),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "device_checks.json").write_text(json.dumps(report, indent=2))
    lines = [f"# device checks, {report['date']}, {report['device']}", "",
             f"versions: {report['versions']}", f"input: {report['input']}", "", "## checks", ""]
    lines += [f"- {name}: {result}" for name, result in report["checks"].items()]
    lines += ["", f"## timings (median of {args.repeats})", "", "| path | batch | ms / image |", "|---|---|---|"]
    for row in report["timings"]:
        value = f"{row['ms_per_image']:.3f}" if "ms_per_image" in row else row["skipped"]
        lines.append(f"| {row['path']} | {row['batch']} | {value} |")
    lines += ["", f"## frame latency (batch 1, 224x224, {args.frames} frames) and peak memory", "",
              latency.markdown(report["latency"], report["memory"], device)]
    lines += ["", "## host synchronisations (set_sync_debug_mode('warn'))", ""]
    lines += [f"- {name}: {result}" for name, result in report["sync_points"].items()]
    (args.out / "device_checks.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
