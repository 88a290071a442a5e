"""One command for a session that has a GPU: the CUDA checks, then the CUDA timings.

Needs nothing beside torch (and Triton, for the triton rows), so it runs on the device
image as it is, where scikit-learn, SciPy and torchvision may be missing. In a ``run``:

    CFCAM_CUDA=1 pip install --no-deps --no-build-isolation -e . && python -m bench.device_session --out $OUT

Inputs: ResNet-50-like last-block tensors ``[B, 2048, 7, 7]`` (ReLU of Gaussian noise, a
tenth of the channels dead; gradients of scale 1e-3), fixed seed.

- Checks, reported (not raised, so the timings are taken whatever they say): CUDA against
  CPU labels (equal unless a pair sits within 1e-16 of eps: the CPU's certified distances
  and CUDA's float64 products may differ in the last bit), eps and maps; the triton
  backend against the torch backend on CUDA; the native CUDA ops against the CPU ops on
  the same float64 distances (equal).
- Timings (CUDA events, median of ``--repeats``): post-processing per image at batch 1 and
  64 for each backend, and the native eps selection plus labelling per image at batch 64.

Writes ``device_session.json`` and ``device_session.md`` under ``--out``. ``--device cpu``
runs the same on the CPU (a dry run of the script; CUDA-only rows are skipped).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import cfcam_fast as cf
from cfcam_fast import _native, cluster
from cfcam_fast.selection import eps_from_sq_distances
from cfcam_fast.spec_math import min_samples_for

CHANNELS, SIDE = 2048, 7
PATHS = [("torch", "native"), ("torch", "torch"), ("triton", "native")]


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


def checks(device: torch.device) -> dict[str, str]:
    """CUDA against CPU, triton against torch, native CUDA ops against CPU ops."""
    if device.type != "cuda":
        return {"cuda": "skipped: no CUDA device"}
    out = {}
    A, G = captured(4, torch.device("cpu"))
    cpu = cf.cfcam_explain(A, G, (224, 224), backend="torch")
    for backend, dbscan in PATHS:
        name = f"{backend}+{dbscan} (cuda) vs torch+native (cpu)"
        reason = unavailable(backend, dbscan, device)
        if reason:
            out[name] = f"skipped: {reason}"
            continue
        got = cf.cfcam_explain(A.to(device), G.to(device), (224, 224), cf.CFCAMConfig(dbscan_backend=dbscan),
                               backend=backend)
        mismatched = int((got.labels.cpu() != cpu.labels).sum())
        eps_rel = float(((got.eps.cpu() - cpu.eps).abs() / cpu.eps).max())
        map_err = float((got.maps.cpu() - cpu.maps).abs().max())
        out[name] = f"labels differing: {mismatched}; eps max rel diff {eps_rel:.1e}; maps max abs diff {map_err:.1e}"
    if _native.available(device):
        points = A.flatten(2)[:, CHANNELS // 4:].double()
        dist = cluster.pairwise_sq_distances(points)
        counts = torch.full((points.shape[0],), points.shape[1], dtype=torch.int64)
        eps = eps_from_sq_distances(dist, counts, 25.0, 1e-5, _native.pair_ranks)
        threshold, ms = cluster.sq_threshold(eps), min_samples_for(counts, cf.CFCAMConfig())
        cpu_labels = _native.dbscan_labels(dist, counts, threshold, ms)
        gpu_eps = eps_from_sq_distances(dist.to(device), counts.to(device), 25.0, 1e-5, _native.pair_ranks)
        gpu_labels = _native.dbscan_labels(dist.to(device), counts.to(device), threshold.to(device), ms.to(device))
        out["native ops cuda vs cpu (same distances)"] = (
            f"eps equal: {bool(torch.equal(gpu_eps.cpu(), eps))}; "
            f"labels equal: {bool(torch.equal(gpu_labels.cpu(), cpu_labels))}")
    return out


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
            total = median_ms(lambda: cf.cfcam_explain(A, G, (224, 224), config, backend=backend), device, repeats)
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

        total = median_ms(select_and_label, device, repeats)
        rows.append(dict(path="native eps selection + labelling (given float64 distances)", batch=batch,
                         ms_per_image=total / batch))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    report = dict(
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        versions=dict(python=platform.python_version(), torch=torch.__version__,
                      cuda=torch.version.cuda, cfcam_fast=cf.__version__),
        backend_status=cf.backend_status(),
        input=f"[B, {CHANNELS}, {SIDE}, {SIDE}] float32, output 224x224",
        checks=checks(device),
        timings=timings(device, batches, args.repeats),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "device_session.json").write_text(json.dumps(report, indent=2))
    lines = [f"# device session, {report['date']}, {report['device']}", "",
             f"versions: {report['versions']}", f"input: {report['input']}", "", "## checks", ""]
    lines += [f"- {name}: {result}" for name, result in report["checks"].items()]
    lines += ["", "## timings (median of %d)" % args.repeats, "", "| path | batch | ms / image |", "|---|---|---|"]
    for row in report["timings"]:
        value = f"{row['ms_per_image']:.3f}" if "ms_per_image" in row else row["skipped"]
        lines.append(f"| {row['path']} | {row['batch']} | {value} |")
    (args.out / "device_session.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
