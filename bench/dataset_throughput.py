"""Images per second of ``cfcam-fast explain`` over a folder, in 1 and in N processes (torchrun).

    python bench/dataset_throughput.py [--images 96] [--processes 1,2] [--model resnet18]
                                       [--size 224] [--batch-size 8] [--workers N] [--threads N]
                                       [--device cpu|cuda]

Writes ``--images`` JPEGs (the bundled photos, cropped and resized to 256x256 in turn) to a
temporary folder and runs ``python -m cfcam_fast explain`` on them (``--random-weights``,
``--no-overlays``, fresh ``--out``) once per process count: one process directly, more under
``python -m torch.distributed.run``. Prints a markdown table: the dataset loop's images per
second (``run.json``, from the start of the loop to the merged ``results.jsonl``), the
warm-up call's seconds (on CUDA: kernel compilation, autotuning, the core's graph), the
seconds until the first batch was explained and the steady rate after it (the loader's
start and the first decode land in the first batch), the
whole command's wall time (process start, imports and model set-up included), the torch
threads per process (``--threads`` sets ``OMP_NUM_THREADS`` for every run; without it one
process takes torch's default and torchrun sets 1 per process), and the
in-process ceiling: ``CFCAM.explain`` on one preprocessed batch, repeated, with no decoding or
writing. Not a test: numbers depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_images(folder: Path, count: int) -> None:
    """``count`` 256x256 JPEGs cut from the bundled photos (centred crops that shrink by 8 px per round
    through the photos, down to half the short side, then start over)."""
    from cfcam_fast.data.photos import bundled_photos

    photos = [image for _, image in bundled_photos()]
    for i in range(count):
        photo = photos[i % len(photos)]
        side = min(photo.size) - (8 * (i // len(photos))) % (min(photo.size) // 2)  # crops shrink, then repeat
        left, top = (photo.size[0] - side) // 2, (photo.size[1] - side) // 2
        photo.crop((left, top, left + side, top + side)).resize((256, 256)).save(folder / f"{i:04d}.jpg", quality=90)


def run_explain(folder: Path, out: Path, processes: int, args: argparse.Namespace) -> tuple[float, dict]:
    """Wall seconds of one ``explain`` command and its ``run.json``."""
    options = ["explain", str(folder), "--model", args.model, "--random-weights", "--no-overlays",
               "--size", str(args.size), "--batch-size", str(args.batch_size), "--out", str(out)]
    if args.workers is not None:
        options += ["--workers", str(args.workers)]
    if processes == 1:
        command = [sys.executable, "-m", "cfcam_fast", *options, "--device", args.device]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "-m", "cfcam_fast", *options]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, json.loads((out / "run.json").read_text())


def ceiling(args: argparse.Namespace, repeats: int = 3) -> float:
    """Images per second of ``CFCAM.explain`` alone on one batch in this process (median of runs)."""
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    import cfcam_fast as cf
    from cfcam_fast.core.timing import timed
    from cfcam_fast.data.models import load_model

    torch.manual_seed(0)
    model, layer = load_model(args.model, None, args.device, random_weights=True)
    x = torch.randn(args.batch_size, 3, args.size, args.size, device=args.device)
    times = []
    with cf.CFCAM(model, [model.get_submodule(layer)]) as cam:
        cam.explain(x)  # warm-up
        for _ in range(repeats):
            times.append(timed(lambda: cam.explain(x), x.device)[1] / 1000.0)
    return args.batch_size / sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (default: 1,2)")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, help="DataLoader workers per process (default: the CLI's)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every run (default: unset)")
    parser.add_argument("--device", help="torch device of the one-process run and the ceiling (default: cuda "
                                         "if available, else cpu; under torchrun the CLI picks each process's)")
    args = parser.parse_args()
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    print(f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, torch "
          f"{torch.__version__}; {args.model} (random weights) at {args.size} px, {args.images} JPEGs of "
          f"256x256, batch {args.batch_size}, device {args.device}, overlays off\n")
    rows = ["| processes | torch threads each | images/s (dataset loop) | warm-up s | first batch s "
            "| images/s after it (steady) | command wall s | images/s (wall) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "images"
        folder.mkdir()
        write_images(folder, args.images)
        for processes in (int(p) for p in args.processes.split(",")):
            wall, run = run_explain(folder, Path(temporary) / f"out{processes}", processes, args)
            this_run = run["this_run"]
            first = this_run["first_batch_seconds"]
            steady = this_run["steady_images_per_second"]
            threads = args.threads or (1 if processes > 1 else torch.get_num_threads())
            rows.append(f"| {processes} | {threads} | {this_run['images_per_second']:.2f} | "
                        f"{this_run['warmup_seconds']:.2f} | {first:.2f} | "
                        f"{'-' if steady is None else f'{steady:.2f}'} | {wall:.1f} | {args.images / wall:.2f} |")
    print("\n".join(rows))
    rate = ceiling(args)
    print(f"\nin-process ceiling (CFCAM.explain on one batch, {torch.get_num_threads()} threads): {rate:.2f} images/s")


if __name__ == "__main__":
    main()
