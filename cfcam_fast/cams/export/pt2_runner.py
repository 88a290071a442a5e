"""Run an exported ``.pt2`` frame (an AOTInductor package) with torch alone: no model code,
no cfcam_fast.

This file imports nothing of the package. As a script::

    python -I pt2_runner.py FRAME.pt2 FRAMES.pt OUTPUT.pt [--bench N] [--threads T]

Loads the package with ``torch._inductor.aoti_load_package``, runs it on each frame of
``FRAMES.pt`` (``[F, *input_shape]``, moved to the package's device, ``cfcam.device``:
``cpu`` or ``cuda``) and saves ``{"outputs": {name: tensor stacked over the frames, on the
CPU}, "metadata": {...}, "load_s": s}`` and, with ``--bench N``, the seconds of N timed runs
of the first frame after 10 warm-up runs (``bench_s``, ``bench_cpu_s``; on CUDA each run
ends with ``torch.cuda.synchronize()``, so the wall time includes the device's work). It
exits with status 3 if timm, torchvision or cfcam_fast got imported.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import torch


class Pt2Frame:
    """A loaded ``.pt2`` frame: ``frame(x)`` returns ``{name: tensor}`` on ``device`` (the
    package's ``cfcam.device``; ``x`` is moved there); ``metadata`` the ``cfcam.*`` strings
    (the output names are ``cfcam.outputs``)."""

    def __init__(self, path: str) -> None:
        import torch._inductor

        self.runner = torch._inductor.aoti_load_package(path)
        self.metadata: dict[str, str] = {k: v for k, v in self.runner.get_metadata().items()
                                         if k.startswith("cfcam.")}
        self.output_names: list[str] = json.loads(self.metadata["cfcam.outputs"])
        # Packages written before the key existed are CPU packages.
        self.device = torch.device(self.metadata.get("cfcam.device", "cpu"))

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return dict(zip(self.output_names, self.runner(x.to(self.device))))

    def synchronize(self) -> None:
        """Wait for the device's queued work (nothing to wait for on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def timed(call: Callable[[], object], sync: Callable[[], None], runs: int) -> tuple[list[float], list[float]]:
    """Wall and thread CPU seconds of ``runs`` calls of ``call``, each followed by ``sync()``
    (waiting for the device), after 10 warm-up calls (``bench.export_latency`` times its
    in-process rows with it too)."""
    for _ in range(10):
        call()
    sync()
    wall, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.thread_time()
        call()
        sync()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    return wall, cpu


def main(argv: list[str]) -> int:
    """The script (module docstring)."""
    package, inp, out = argv[:3]
    bench = int(argv[argv.index("--bench") + 1]) if "--bench" in argv else 0
    if "--threads" in argv:
        torch.set_num_threads(int(argv[argv.index("--threads") + 1]))
    start = time.perf_counter()
    frame = Pt2Frame(package)
    load_s = time.perf_counter() - start
    frames = torch.load(inp, weights_only=True)
    runs = [{k: v.to("cpu", copy=True) for k, v in frame(x).items()} for x in frames]
    result: dict = {"outputs": {k: torch.stack([r[k] for r in runs]) for k in frame.output_names},
                    "metadata": frame.metadata, "load_s": load_s}
    if bench:
        x = frames[0].to(frame.device)
        wall, cpu = timed(lambda: frame(x), frame.synchronize, bench)
        result.update(bench_s=wall, bench_cpu_s=cpu)
    leaked = [m for m in ("timm", "torchvision", "cfcam_fast") if m in sys.modules]
    if leaked:
        print(f"imported {leaked}", file=sys.stderr)
        return 3
    torch.save(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
