"""The benchmark runner (``cfcam-fast bench``): every path, every model and batch size, in one process.

Each path gets ``warmup`` untimed calls, then ``repeats`` timed ones, taken round-robin
over the paths (the device is synchronised before and after each); the median is
reported. Outputs go to ``--out``: ``results.md`` (the printed tables), ``results.json``
and ``results.png``.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path as FilePath

import torch

from ..cams.model_state import layer_outputs
from ..core.timing import synchronize
from . import report
from .paths import FLOOR, build_paths, path_names

MODELS = ("resnet18", "resnet50", "efficientnet_lite0")
IMAGE_SIZE = 224


def time_paths(fns: Sequence[Callable[[], object]], device: torch.device, warmup: int,
               repeats: int) -> list[list[float]]:
    """Seconds of ``repeats`` calls of each of ``fns``, after ``warmup`` untimed calls of each.

    The timed calls go round-robin (every function once per round), so that a slow drift
    of a shared machine's load spreads over all of them instead of biasing some.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, kept in zip(fns, times):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            kept.append(time.perf_counter() - start)
    return times


def _versions() -> dict[str, str | None]:
    import importlib.metadata as md

    versions: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
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
    from ..data.layers import resolve_layer
    from ..data.models import load_model

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
        with torch.no_grad(), layer_outputs([layer], keep=lambda out: list(out.shape)) as shapes:
            model(x)
        layer_out = shapes[0][0]
        runs = {p.name: p.run for p in paths if p.run is not None}
        times = dict(zip(runs, time_paths(list(runs.values()), device, warmup, repeats)))
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


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)  # progress on stderr


@dataclass(frozen=True)
class Settings:
    """What a run times: ``models`` (names), ``batches`` (default 1 and 8, and 64 on CUDA),
    ``warmup`` untimed and ``repeats`` timed calls per path, the torch CPU ``threads``
    (``None``: torch's own choice), ``paths`` (parts of path names; empty: every path, the
    floor always) and the output folder ``out``; ``quick``: the smallest model, batch 1, one
    repeat."""

    device: torch.device
    models: tuple[str, ...] = MODELS
    batches: tuple[int, ...] | None = None
    warmup: int = 1
    repeats: int = 3
    threads: int | None = None
    paths: str = ""
    out: str = "bench/out"
    quick: bool = False


def run(settings: Settings) -> int:
    """Time everything ``settings`` asks for, print the tables and write the outputs. The
    process's torch thread count is restored afterwards (``threads`` sets it meanwhile)."""
    previous = torch.get_num_threads()
    try:
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        return _run(settings)
    finally:
        torch.set_num_threads(previous)


def _run(settings: Settings) -> int:
    device = settings.device
    models = list(settings.models)
    if not models:
        raise ValueError("--models: name at least one model")
    batches = list(settings.batches or ([1, 8, 64] if device.type == "cuda" else [1, 8]))
    parts = path_parts(settings.paths, device)
    repeats = settings.repeats
    if settings.quick:
        models, batches, repeats = [MODELS[0]], [1], 1
    out = FilePath(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in models:
        _log(f"{name} on {device}")
        rows += bench_model(name, batches, device, settings.warmup, repeats, _log, parts)
    report.add_ratios(rows)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(device), "device": str(device), "versions": _versions(),
            "git_commit": _git_commit(),
            "settings": {"models": models, "batches": batches, "paths": parts or "all",
                         "warmup": settings.warmup, "repeats": repeats,
                         "image_size": IMAGE_SIZE, "statistic": "median"}}
    table = report.markdown(rows, str(device))
    print(table)
    (out / "results.md").write_text(table + "\n")
    report.write_json(out / "results.json", meta, rows)
    report.write_plot(out / "results.png", rows, str(device))
    _log(f"wrote {out / 'results.md'}, {out / 'results.json'} and {out / 'results.png'}")
    return 0
