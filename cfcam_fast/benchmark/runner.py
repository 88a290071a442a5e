"""The benchmark runner (``cfcam-fast bench``): every path, every model and batch size, in one process.

Each path gets ``warmup`` untimed calls, then ``repeats`` timed ones, taken round-robin
over the paths (the device is synchronised before and after each); the median is
reported. Outputs go to ``--out``: ``results.md`` (the printed tables), ``results.json``
and ``results.png``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path as FilePath

import torch

from ..commands.options import device_option
from . import report
from .paths import FLOOR, build_paths, path_names

MODELS = ("resnet18", "resnet50", "efficientnet_lite0")
IMAGE_SIZE = 224


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The runner's options (``cfcam-fast bench``)."""
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated model names (default: %(default)s)")
    parser.add_argument("--batches", type=_positive_ints,
                        help="comma-separated batch sizes (default: 1,8, and 64 on CUDA)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--repeats", type=_int_at_least(1), default=3,
                        help="timed runs per path; the median is reported (default: 3)")
    parser.add_argument("--warmup", type=_int_at_least(0), default=1,
                        help="untimed runs per path before timing (default: 1)")
    parser.add_argument("--threads", type=_int_at_least(1),
                        help="torch CPU threads (default: torch's own choice); 1 avoids the collapse "
                        "of multi-threaded kernels on a CPU shared with other busy processes")
    parser.add_argument("--paths", default="",
                        help="comma-separated parts of path names: time only the paths whose name holds one "
                             "(case-insensitive), and the floor; the others are listed as not selected "
                             "(default: every path)")
    parser.add_argument("--out", default="bench/out", help="output folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="smallest model, batch 1, one repeat (a smoke test of the runner)")


def time_paths(fns: Sequence[Callable[[], object]], device: torch.device, warmup: int,
               repeats: int) -> list[list[float]]:
    """Seconds of ``repeats`` calls of each of ``fns``, after ``warmup`` untimed calls of each.

    The timed calls go round-robin (every function once per round), so that a slow drift
    of a shared machine's load spreads over all of them instead of biasing some.
    """
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, kept in zip(fns, times):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            kept.append(time.perf_counter() - start)
    return times


def _versions() -> dict[str, str | None]:
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("triton", "numpy", "scikit-learn", "scipy", "timm", "torchvision", "grad-cam", "cfcam-fast"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return versions


def _git_commit() -> str | None:
    """The HEAD commit of the checkout this package runs from (an editable install), with
    ``+dirty`` when files differ from it; None for an installed wheel or outside git."""
    import subprocess

    root = FilePath(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None  # an installed package: its folder's enclosing repository is not its source
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine_info(device: torch.device) -> dict:
    """Platform, CPU count and the device's name, for the JSON and RESULTS.md."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    info["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return info


def selected(name: str, parts: Sequence[str]) -> bool:
    """Whether the path called ``name`` is timed under ``--paths`` ``parts`` (none: every path;
    the floor always, since every ratio reads it)."""
    return not parts or name == FLOOR or any(part.lower() in name.lower() for part in parts)


def path_parts(text: str, device: torch.device) -> list[str]:
    """``--paths`` as a list; ``ValueError`` for a part that names no path on ``device``."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    names = path_names(device)
    unknown = [p for p in parts if not any(p.lower() in n.lower() for n in names)]
    if unknown:
        raise ValueError(f"--paths: {unknown} match no path; the paths are: {'; '.join(names)}")
    return parts


def bench_model(name: str, batches: Sequence[int], device: torch.device, warmup: int, repeats: int,
                log=print, parts: Sequence[str] = ()) -> list[dict]:
    """Rows for every path of model ``name`` at each batch size (timed where ``selected``)."""
    from cfcam_fast.models import load_model, resolve_layer

    model, layer_name = load_model(name, device=device)
    layer = resolve_layer(model, layer_name)
    rows = []
    for batch in batches:
        torch.manual_seed(0)
        x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
        paths = build_paths(model, layer, x)
        for path in paths:
            if path.run is not None and not selected(path.name, parts):
                path.run, path.skipped = None, "not selected (--paths)"
        with torch.no_grad():
            _, layer_out = _layer_shape(model, layer, x)
        timed = [p for p in paths if p.run is not None]
        times = dict(zip((p.name for p in timed), time_paths([p.run for p in timed], device, warmup, repeats)))
        for path in paths:
            row = {"model": name, "layer": layer_name, "batch": batch, "input_shape": list(x.shape),
                   "layer_shape": layer_out, "path": path.name, "kind": path.kind,
                   "skipped": path.skipped, "times_s": None, "median_s": None,
                   "ms_per_image": None, "images_per_s": None}
            if path.name in times:
                median = statistics.median(times[path.name])
                row.update(times_s=times[path.name], median_s=median, ms_per_image=1e3 * median / batch,
                           images_per_s=batch / median)
                log(f"  {name} b{batch} {path.name}: {row['ms_per_image']:.2f} ms/image")
            rows.append(row)
    return rows


def _layer_shape(model, layer, x):
    shapes = []
    handle = layer.register_forward_hook(lambda _m, _i, out: shapes.append(list(out.shape)))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, shapes[0]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)  # progress on stderr


def run(args: argparse.Namespace) -> int:
    """Time everything ``args`` asks for, print the tables and write the outputs. The
    process's torch thread count is restored afterwards (``--threads`` sets it meanwhile)."""
    previous = torch.get_num_threads()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        return _run(args)
    finally:
        torch.set_num_threads(previous)


def _run(args: argparse.Namespace) -> int:
    device = device_option(args.device)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise ValueError("--models: name at least one model")
    batches = args.batches or ([1, 8, 64] if device.type == "cuda" else [1, 8])
    parts = path_parts(args.paths, device)
    repeats = args.repeats
    if args.quick:
        models, batches, repeats = [MODELS[0]], [1], 1
    out = FilePath(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in models:
        _log(f"{name} on {device}")
        rows += bench_model(name, batches, device, args.warmup, repeats, _log, parts)
    report.add_ratios(rows)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(device), "device": str(device), "versions": _versions(),
            "git_commit": _git_commit(),
            "settings": {"models": models, "batches": batches, "paths": parts or "all",
                         "warmup": args.warmup, "repeats": repeats,
                         "image_size": IMAGE_SIZE, "statistic": "median"}}
    table = report.markdown(rows, str(device))
    print(table)
    (out / "results.md").write_text(table + "\n")
    report.write_json(out / "results.json", meta, rows)
    report.write_plot(out / "results.png", rows, str(device))
    _log(f"wrote {out / 'results.md'}, {out / 'results.json'} and {out / 'results.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The runner on ``argv``; returns the exit status (1 with a one-line message on bad input)."""
    parser = argparse.ArgumentParser(prog="cfcam-fast bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ValueError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
