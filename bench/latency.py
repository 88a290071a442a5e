"""Real-time rows: per-frame latency percentiles and peak memory of the per-frame paths.

    python -m bench.latency [--models resnet18,efficientnet_lite0] [--frames 300] [--device cpu]

Each model at 224x224, batch 1: the eager floor (forward + backward to the layer), on
CUDA the plain forward pass replayed from a CUDA graph (the yardstick of a replayed
frame), eager ``CFCAM``, ``RealtimeCFCAM`` with the forward-only head where the model has one, and
``RealtimeCFCAM`` with the backward pass. ``--frames`` timed frames per path after a tenth
as many warm-up frames, taken round-robin (the device synchronised around each frame);
p50, p95, p99 and max. Peak memory per call (``peak_memory_mb``), at batch 1 and ``--memory-batch``, for the
eager and the forward-only paths.
Writes ``latency.md`` and ``latency.json`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

MODELS = ("resnet18", "efficientnet_lite0")
PATHS = ("floor", "forward, CUDA graph", "CFCAM (eager)", "RealtimeCFCAM", "RealtimeCFCAM, backward pass")
MEMORY_PATHS = ("CFCAM (eager)", "RealtimeCFCAM")


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile by linear interpolation (NumPy's default method)."""
    pos = (len(sorted_values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def frame_paths(name: str, device: torch.device, batch: int = 1,
                only: str | None = None) -> tuple[dict[str, Callable[[], object]], dict]:
    """Name -> one call per path for model ``name`` (or for the path ``only``), and facts
    about the set-up (layer, head)."""
    import cfcam_fast as cf
    from cfcam_fast.benchmark.paths import floor
    from cfcam_fast.data.layers import resolve_layer
    from cfcam_fast.data.models import load_model

    model, layer_name = load_model(name, device=device)
    layer = resolve_layer(model, layer_name)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    wanted = PATHS if only is None else (only,)
    paths, facts = {}, {"layer": layer_name}
    if "floor" in wanted:
        paths["floor"] = lambda: floor(model, layer, x)
    if "forward, CUDA graph" in wanted and device.type == "cuda":
        paths["forward, CUDA graph"] = replayed_forward(model, x)
    if "CFCAM (eager)" in wanted:
        eager = cf.CFCAM(model, [layer])
        paths["CFCAM (eager)"] = lambda: eager(x)
    if "RealtimeCFCAM" in wanted:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallback is recorded in the facts instead
            fast = cf.RealtimeCFCAM(model, layer, x)
        paths["RealtimeCFCAM"] = lambda: fast(x)
        facts.update(realtime_mode=fast.mode, realtime_mode_reason=fast.mode_reason,
                     cuda_graph=fast._graph is not None)
    if "RealtimeCFCAM, backward pass" in wanted:
        backward = cf.RealtimeCFCAM(model, layer, x, head=None)
        paths["RealtimeCFCAM, backward pass"] = lambda: backward(x)
    return paths, facts


def replayed_forward(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """The plain model's forward pass (no hook, no CAM) captured in a CUDA graph: one call
    copies the frame in and replays it, the yardstick of ``RealtimeCFCAM``'s replayed frame."""
    static = x.clone()
    side = torch.cuda.Stream(x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(3):
            model(static)
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        out = model(static)

    def run() -> torch.Tensor:
        static.copy_(x)
        graph.replay()
        return out
    return run


def latency_rows(device: torch.device, frames: int, models=MODELS) -> list[dict]:
    """p50/p95/p99/max milliseconds per frame of every path of every model."""
    from cfcam_fast.benchmark.runner import time_paths

    rows = []
    for name in models:
        paths, facts = frame_paths(name, device)
        times = time_paths(list(paths.values()), device, max(1, frames // 10), frames)
        for path, kept in zip(paths, times):
            ms = sorted(1e3 * t for t in kept)
            rows.append(dict(model=name, path=path, frames=len(ms), **facts,
                             **{f"p{q}_ms": percentile(ms, q) for q in (50, 95, 99)}, max_ms=ms[-1]))
    return rows


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def rss_peak_of(call: Callable[[], object], interval_s: float = 2e-4) -> int:
    """Bytes by which this process's resident set rose at most during ``call()``, sampled
    every ``interval_s`` by a second thread (the tensors of a forward and backward live
    for most of the call, so sampling sees them)."""
    import threading
    import time

    base, peak, done = _rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(interval_s)

    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        call()
    finally:
        done.set()
        watcher.join()
    return max(peak[0], _rss_bytes()) - base


def peak_memory_mb(name: str, path: str, batch: int, device: torch.device) -> float:
    """Peak memory of one call of ``path`` after one warm-up call, in MiB: on CUDA the
    allocator's peak above what was allocated before the call; on the CPU the rise of the
    resident set in a fresh process whose C library returns every block over 128 KiB to
    the system when it is freed (``MALLOC_MMAP_THRESHOLD_``), so the rise is what the call
    holds at once, not what earlier calls left cached."""
    if device.type == "cuda":
        call = frame_paths(name, device, batch, only=path)[0][path]
        call()
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    code = (f"import torch\nfrom bench.latency import frame_paths, rss_peak_of\n"
            f"call = frame_paths({name!r}, torch.device('cpu'), {batch}, only={path!r})[0][{path!r}]\n"
            f"call()\nprint(rss_peak_of(call))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)})
    return int(done.stdout.strip().splitlines()[-1]) / 2 ** 20


def memory_rows(device: torch.device, batches: list[int], models=MODELS) -> list[dict]:
    return [dict(model=name, path=path, batch=batch, peak_mib=peak_memory_mb(name, path, batch, device))
            for name in models for batch in batches for path in MEMORY_PATHS]


def markdown(rows: list[dict], memory: list[dict], device: torch.device) -> str:
    lines = ["| model | path | p50 ms | p95 ms | p99 ms | max ms | p99 / floor p99 | p99 / replayed forward p99 |",
             "|---|---|---|---|---|---|---|---|"]
    floors = {r["model"]: r["p99_ms"] for r in rows if r["path"] == "floor"}
    graphs = {r["model"]: r["p99_ms"] for r in rows if r["path"] == "forward, CUDA graph"}
    for r in rows:
        replayed = f"{r['p99_ms'] / graphs[r['model']]:.2f}" if r["model"] in graphs else "-"
        lines.append(f"| {r['model']} | {r['path']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['max_ms']:.2f} | {r['p99_ms'] / floors[r['model']]:.2f} | {replayed} |")
    modes = {r["model"]: f"{r['realtime_mode']} ({r['realtime_mode_reason']})" for r in rows}
    lines += ["", *(f"- {m}: RealtimeCFCAM runs {mode}" for m, mode in modes.items())]
    if memory:
        what = "allocator peak above the call's start" if device.type == "cuda" else "rise of the resident set"
        lines += ["", f"| model | path | batch | peak MiB ({what}) |", "|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['path']} | {r['batch']} | {r['peak_mib']:.0f} |" for r in memory]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory-batch", type=int, default=64, help="the larger batch of the memory rows (0: none)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    models = [m for m in args.models.split(",") if m]
    rows = latency_rows(device, args.frames, models)
    batches = [1] + ([args.memory_batch] if args.memory_batch > 1 else [])
    memory = memory_rows(device, batches, models)
    meta = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
                torch=torch.__version__, threads=torch.get_num_threads(), python=platform.python_version(),
                frames=args.frames)
    table = markdown(rows, memory, device)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.md").write_text(table + "\n")
    (args.out / "latency.json").write_text(json.dumps({**meta, "latency": rows, "memory": memory}, indent=2) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
