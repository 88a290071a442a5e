"""Run an exported ``.pt2`` frame (an AOTInductor package) with torch alone: no model code,
no cfcam_fast.

This file imports nothing of the package. As a script::

    python -I pt2_runner.py FRAME.pt2 FRAMES.pt OUTPUT.pt [--bench N] [--threads T]

Loads the package with ``torch._inductor.aoti_load_package``, runs it on each frame of
``FRAMES.pt`` (``[F, *input_shape]``) and saves ``{"outputs": {name: tensor stacked over
the frames}, "metadata": {...}, "load_s": s}`` and, with ``--bench N``, the seconds of N
timed runs of the first frame after 10 warm-up runs (``bench_s``, ``bench_cpu_s``). It
exits with status 3 if timm, torchvision or cfcam_fast got imported.
"""
from __future__ import annotations

import json
import sys
import time

import torch


class Pt2Frame:
    """A loaded ``.pt2`` frame: ``frame(x)`` returns ``{name: tensor}``; ``metadata`` the
    ``cfcam.*`` strings (the output names are ``cfcam.outputs``)."""

    def __init__(self, path: str) -> None:
        import torch._inductor

        self.runner = torch._inductor.aoti_load_package(path)
        self.metadata: dict[str, str] = {k: v for k, v in self.runner.get_metadata().items()
                                         if k.startswith("cfcam.")}
        self.output_names: list[str] = json.loads(self.metadata["cfcam.outputs"])

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return dict(zip(self.output_names, self.runner(x)))


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
    runs = [{k: v.clone() for k, v in frame(x).items()} for x in frames]
    result: dict = {"outputs": {k: torch.stack([r[k] for r in runs]) for k in frame.output_names},
                    "metadata": frame.metadata, "load_s": load_s}
    if bench:
        for _ in range(10):
            frame(frames[0])
        wall, cpu = [], []
        for _ in range(bench):
            t, c = time.perf_counter(), time.thread_time()
            frame(frames[0])
            cpu.append(time.thread_time() - c)
            wall.append(time.perf_counter() - t)
        result.update(bench_s=wall, bench_cpu_s=cpu)
    leaked = [m for m in ("timm", "torchvision", "cfcam_fast") if m in sys.modules]
    if leaked:
        print(f"imported {leaked}", file=sys.stderr)
        return 3
    torch.save(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
