"""One command for a session with a GPU: build, test, sanitize, check and time, into one folder.

    python -m bench.device_session --out DIR [--budget-s 480]

Stages, each a subprocess with its own log under ``DIR`` and a time limit, in this order:

1. ``build``: ``pip install --no-deps --no-build-isolation -e .`` with ``CFCAM_CUDA=1`` (the
   CUDA ops built, or the stage fails: a failed native build fails the install).
2. At once, on the one GPU: ``gpu_tests`` (``pytest -m gpu``), ``kernel_tests`` (the
   Triton kernel tests, which run compiled on CUDA where it exists) and ``memcheck``
   (the GPU tests again under ``compute-sanitizer --tool memcheck``, with PyTorch's caching
   allocator off so that an out-of-bounds access hits memory no tensor owns) and
   ``memcheck_graph`` (the CUDA-graph tests under memcheck with the allocator on: a capture
   cannot call ``cudaMalloc``, so those tests skip in ``memcheck``). Test files are found
   by name under ``tests/``; JAX is told not to take most of the GPU's memory.
3. ``fused``: ``bench.fused_pairs`` (the fused pairwise stage at ResNet-50 size: exact
   against the CPU's certified path, no host wait, per-step timings against today's CUDA
   path), its JSON folded into ``summary.md``.
4. ``checks``: ``bench.device_checks`` (CUDA against CPU, triton against torch, CUDA
   timings at batch 1 and 64, frame latency p50/p99, host synchronisations).
5. ``export_pt2``: ``bench.export_latency --device cuda`` on ResNet-18: ``RealtimeCFCAM``'s
   frame exported as a CUDA ``.pt2`` (an AOTInductor compile of a minute or two), its p50
   and p99 (``--frames`` frames, each synchronised) against ``RealtimeCFCAM``'s CUDA-graph
   replay and the plain forward pass, and its outputs checked against ``RealtimeCFCAM``'s;
   tables folded into ``summary.md`` (its log stays in the scratch folder). It needs CUDA:
   a dry run on the CPU skips it (on the CPU, ``python -m bench.export_latency`` is that run).
6. ``profile``: ``bench.device_profile`` (operators ranked by device and host time for
   the paths the targets read).
7. ``bench``: the benchmark runner's CUDA rows, batch 1 and 64, three models (``--models``),
   every path or those of ``--bench-paths`` (a short session times ``triton,grad-cam`` only:
   the authors' algorithm and scikit-learn's DBSCAN take most of the stage's minutes).
8. ``road``: ``bench.road`` on CUDA (64 images; grad-cam's CPU imputer on 8), its table
   folded into ``summary.md`` (its log stays in the scratch folder).
9. ``dataset``: ``bench/dataset_throughput.py``, ``cfcam-fast explain`` over 512 JPEGs at
   batch 64 in one process on the GPU, images per second (folded in like ``road``).

A failed stage does not stop the later ones. ``summary.md`` (stage table, environment,
the checks' and the runner's tables) and ``session.json`` are rewritten after every stage,
so a run stopped at its limit still leaves them. At most eight files land in ``DIR``,
all at its top level (what a device run brings back): the build's log stays in a scratch
folder and only its tail reaches ``summary.md`` if it fails. ``--skip`` leaves stages out (a dry
run on the CPU: ``--skip build,export_pt2,bench``).
All the stages no longer fit one device call of 600 s: bench/RESULTS.md ("Taking the CUDA
rows") splits them into two calls on one warm machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The test files memcheck runs (their GPU tests), found by name anywhere under tests/.
MEMCHECK_TESTS = ("test_base.py", "test_native.py", "test_triton_backend.py", "test_torch_backend.py",
                  "test_cluster.py", "test_capture.py", "test_realtime.py", "test_pairs.py", "test_fused_backend.py",
                  "test_enqueue_only.py", "test_cuda_concurrency.py", "test_jpeg.py")
# The Triton kernels' tests, run whole (compiled on CUDA where it exists).
KERNEL_TESTS = ("test_kernels.py", "test_pairs.py")
# JAX takes 75% of the GPU's memory at its first array unless told not to; stages share the GPU.
SHARED_GPU_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONUNBUFFERED": "1"}


def test_files(names: tuple[str, ...]) -> list[str]:
    """The paths, relative to the repository, of the test files named ``names``."""
    return sorted(str(p.relative_to(ROOT)) for name in names for p in (ROOT / "tests").rglob(name))
PYTEST = [sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider"]


@dataclass
class Stage:
    """One subprocess: its command, time limit in seconds and environment additions."""

    name: str
    argv: list[str]
    limit_s: float
    env: dict[str, str] = field(default_factory=dict)
    scratch_log: bool = False  # log kept out of the output folder
    result: dict = field(default_factory=dict)

    def log_path(self, out: Path, work: Path) -> Path:
        return (work if self.scratch_log else out) / f"{self.name}.log"


def compute_sanitizer() -> str | None:
    """The path of ``compute-sanitizer``: on PATH, or in the CUDA toolkit's bin folder."""
    for candidate in (shutil.which("compute-sanitizer"), "/usr/local/cuda/bin/compute-sanitizer"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def stages(work: Path, batches: str, frames: int, models: str, bench_paths: str) -> list[list[Stage]]:
    """The stages in order; the stages of one inner list run at the same time."""
    sanitizer = compute_sanitizer()
    memcheck = ([sanitizer, "--tool", "memcheck", "--target-processes", "all", "--error-exitcode", "86",
                 "--print-limit", "100", *PYTEST, "-m", "gpu"] if sanitizer else [])
    return [
        [Stage("build", [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", "."],
               150, {"CFCAM_CUDA": "1"}, scratch_log=True)],
        [Stage("gpu_tests", [*PYTEST, "-m", "gpu", "tests"], 240),
         Stage("kernel_tests", [*PYTEST, *test_files(KERNEL_TESTS)], 240),
         Stage("memcheck", memcheck and [*memcheck, *test_files(MEMCHECK_TESTS)], 240,
               {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}),
         Stage("memcheck_graph", memcheck and [*memcheck, "-k", "cuda_graph or replays_a_graph",
                                               *test_files(("test_realtime.py", "test_enqueue_only.py"))], 240,
               scratch_log=True)],
        [Stage("fused", [sys.executable, "-m", "bench.fused_pairs"], 150, scratch_log=True)],
        [Stage("checks", [sys.executable, "-m", "bench.device_checks", "--out", str(work / "checks"),
                          "--batches", batches, "--frames", str(frames)], 240)],
        [Stage("export_pt2", [sys.executable, "-m", "bench.export_latency", "--device", "cuda", "--models", "resnet18",
                              "--frames", str(frames), "--out", str(work / "export")], 240, scratch_log=True)],
        [Stage("profile", [sys.executable, "-m", "bench.device_profile"], 120)],
        [Stage("bench", [sys.executable, "-m", "cfcam_fast", "bench",
                         "--models", models,
                         "--batches", batches, "--repeats", "3", "--warmup", "1", "--paths", bench_paths,
                         "--out", str(work / "bench")], 240)],
        [Stage("road", [sys.executable, "-m", "bench.road", "--device", "cuda", "--images", "64",
                        "--gradcam-images", "8"], 120, scratch_log=True)],
        [Stage("dataset", [sys.executable, "bench/dataset_throughput.py", "--images", "512", "--processes", "1",
                           "--batch-size", "64"], 150, scratch_log=True)],
    ]


def run_group(group: list[Stage], out: Path, work: Path, deadline: float) -> None:
    """Start every stage of ``group``, wait for each within its limit and the deadline."""
    running = []
    for stage in group:
        if not stage.argv:
            stage.result = {"status": "skipped: compute-sanitizer not found"}
            continue
        log = open(stage.log_path(out, work), "w")
        log.write("$ " + " ".join(stage.argv) + "\n")
        log.flush()
        proc = subprocess.Popen(stage.argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **SHARED_GPU_ENV, **stage.env},
                                start_new_session=True)  # its own group: a time-out kills its children too
        running.append((stage, proc, log, time.monotonic()))
    for stage, proc, log, started in running:
        limit = min(started + stage.limit_s, deadline)
        try:
            rc = proc.wait(timeout=max(0.0, limit - time.monotonic()))
            status = "passed" if rc == 0 else f"FAILED (exit {rc})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = f"TIMED OUT after {limit - started:.0f} s"
        log.close()
        stage.result = {"status": status, "seconds": round(time.monotonic() - started, 1)}


def environment() -> dict[str, str]:
    """The GPU, driver and package versions, read without importing cfcam_fast."""
    info = {}
    try:
        info["nvidia-smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        info["nvidia-smi"] = f"unavailable ({exc})"
    probe = ("import platform, torch, importlib.metadata as md\n"
             "v = lambda d: md.version(d) if d in {x.metadata['Name'].lower() for x in md.distributions()} else None\n"
             "print(f'python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
             "triton {v(\"triton\")}, numpy {v(\"numpy\")}, scikit-learn {v(\"scikit-learn\")}, timm {v(\"timm\")}, "
             "torchvision {v(\"torchvision\")}')")
    info["versions"] = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                      timeout=120).stdout.strip()
    return info


def _tail(path: Path, lines: int = 15) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []


def _json_line(path: Path) -> dict | None:
    """The last line of a log that is a JSON object, if any."""
    for line in reversed(_tail(path, 50)):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def write_summary(out: Path, work: Path, env: dict, groups: list[list[Stage]]) -> None:
    """``summary.md`` and ``session.json`` from what has run so far."""
    every = [stage for group in groups for stage in group]
    lines = ["# GPU session", "", *(f"- {k}: {v}" for k, v in env.items()), "",
             "| stage | status | seconds | last line of its log |", "|---|---|---|---|"]
    lines += [f"| {s.name} | {s.result.get('status', 'not run')} | {s.result.get('seconds', '')} "
              f"| {' '.join(_tail(s.log_path(out, work), 1)).strip('= ')[:120] if s.result else ''} |" for s in every]
    for stage in every:
        if stage.result.get("status", "").startswith(("FAILED", "TIMED")):
            lines += ["", f"## {stage.name}: last lines of {stage.name}.log", "", "```",
                      *_tail(stage.log_path(out, work)), "```"]
    documents = {"checks": work / "checks" / "device_checks.md",
                 "export_pt2": work / "export" / "export_latency.md", "bench": work / "bench" / "results.md",
                 "road": work / "road.log", "dataset": work / "dataset.log"}
    for name, path in documents.items():
        if path.exists():
            lines += ["", f"## {name}", "", *("#" + line if line.startswith("#") else line
                                               for line in path.read_text().splitlines())]
    fused = _json_line(work / "fused.log")
    if fused is not None:
        lines += ["", "## fused", "", "```json", json.dumps(fused, indent=1), "```"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    data = {"environment": env, "stages": {s.name: {"argv": s.argv, **s.result} for s in every}}
    for name, path in {"checks": work / "checks" / "device_checks.json",
                       "export_pt2": work / "export" / "export_latency.json",
                       "bench": work / "bench" / "results.json"}.items():
        if path.exists():
            data[name] = json.loads(path.read_text())
    if fused is not None:
        data["fused"] = fused
    (out / "session.json").write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run every stage not skipped; 0 when all that ran passed."""
    parser = argparse.ArgumentParser(prog="python -m bench.device_session", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the logs and tables")
    parser.add_argument("--budget-s", type=float, default=480, help="wall-clock budget of all stages")
    parser.add_argument("--skip", default="", help="comma-separated stage names to leave out")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--frames", type=int, default=300, help="timed frames per latency row")
    parser.add_argument("--models", default="resnet18,resnet50,efficientnet_lite0", help="the runner's models")
    parser.add_argument("--bench-paths", default="", help="the runner's --paths (default: every path)")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cfcam_session_"))
    skip = {s for s in args.skip.split(",") if s}
    groups = stages(work, args.batches, args.frames, args.models, args.bench_paths)
    env = environment()
    for group in groups:
        todo = [s for s in group if s.name not in skip]
        for stage in group:
            if stage.name in skip:
                stage.result = {"status": "skipped (--skip)"}
        run_group(todo, args.out, work, deadline)
        write_summary(args.out, work, env, groups)
    print((args.out / "summary.md").read_text())
    statuses = [s.result["status"] for g in groups for s in g]
    return 0 if all(st == "passed" or st.startswith("skipped") for st in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
