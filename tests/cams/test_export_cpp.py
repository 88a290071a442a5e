"""examples/cpp/explain_frame.cpp, the libtorch example: built with CMake against this torch's
libtorch and run on a tiny CNN's ``.pt2`` frame, once with a raw float32 input and once with
a PPM photo, against ``RealtimeCFCAM`` (class identical, logit within 1e-4, map within the
map tolerance of ``cfcam_fast.cams.export.tolerance``; the PGM checked for its size only).

Slow: about 55 s on the 2-core CPU VM (export 37 s, CMake configure 4 s and build 8 s, the
runs under a second each). Skipped without cmake or a C++ compiler, and where torch is a
CUDA build but no CUDA toolkit is found: libtorch's CMake config then fails
(examples/cpp/README.md)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from export_helpers import assert_maps
from helpers import cat_photo, needs_native, tiny_cnn

import cfcam_fast as cf
from cfcam_fast.cams.export.tolerance import layer_activations
from cfcam_fast.data.images import preprocess

pytestmark = [needs_native, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cpp"
SIZE = 16


def cmake_arguments(build: Path) -> list[str]:
    """How to configure the example; skips where it cannot be built."""
    cmake = shutil.which("cmake") or shutil.which("cmake", path=str(Path(sys.executable).parent))
    if cmake is None:
        pytest.skip("cmake is not installed")
    if not any(shutil.which(c) for c in (os.environ.get("CXX", "c++"), "g++", "clang++")):
        pytest.skip("no C++ compiler (c++, g++, clang++ or $CXX)")
    args = [cmake, "-S", str(EXAMPLE), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"]
    args += ["-G", "Ninja"] if shutil.which("ninja") else []
    if torch.version.cuda:
        roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
        root = next((r for r in roots if r and Path(r, "include", "cuda_runtime.h").exists()), None)
        if root is None:
            pytest.skip("torch is a CUDA build, whose CMake config needs the CUDA toolkit: no "
                        "include/cuda_runtime.h under $CUDA_HOME, $CUDA_PATH or /usr/local/cuda")
        args.append(f"-DCUDA_TOOLKIT_ROOT_DIR={root}")
    return args


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    """A tiny CNN's ``RealtimeCFCAM``, its ``.pt2`` frame and the built example."""
    folder = tmp_path_factory.mktemp("cpp")
    configure = cmake_arguments(folder / "build")
    model = tiny_cnn().eval()
    rt = cf.RealtimeCFCAM(model, model.features, torch.zeros(1, 3, SIZE, SIZE))
    package = rt.export(folder / "frame.pt2").path
    for command in (configure, [configure[0], "--build", str(folder / "build")]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return rt, package, folder / "build" / "explain_frame"


def explain(binary: Path, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=120)


def check_run(rt: cf.RealtimeCFCAM, x: torch.Tensor, done: subprocess.CompletedProcess, prefix: Path) -> None:
    """The program's output for input ``x`` against ``rt.explain(x)``."""
    assert done.returncode == 0, done.stderr
    ref = rt.explain(x)
    match = re.fullmatch(r"image 0: class (\d+), logit (\S+)\n", done.stdout)
    assert match, done.stdout
    assert int(match[1]) == int(ref.class_idx[0])
    assert float(match[2]) == pytest.approx(float(ref.logits[0, ref.class_idx[0]]), rel=1e-4, abs=1e-4)
    maps = torch.from_numpy(np.fromfile(f"{prefix}.f32", dtype="<f4").reshape(1, SIZE, SIZE))
    assert_maps(maps, ref.maps, layer_activations(rt.model, rt.layer, x), ref.weights)
    header = f"P5\n{SIZE} {SIZE}\n255\n".encode()
    pgm = Path(f"{prefix}-0.pgm").read_bytes()
    assert pgm.startswith(header) and len(pgm) == len(header) + SIZE * SIZE


def test_raw_float32_input(frame, tmp_path):
    rt, package, binary = frame
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    x.numpy().astype("<f4").tofile(tmp_path / "x.f32")
    check_run(rt, x, explain(binary, package, tmp_path / "x.f32", tmp_path / "out"), tmp_path / "out")


def test_ppm_photo_normalised_as_preprocess_does(frame, tmp_path):
    rt, package, binary = frame
    cat_photo((SIZE, SIZE)).save(tmp_path / "cat.ppm")
    x = preprocess([cat_photo((SIZE, SIZE))], SIZE)
    check_run(rt, x, explain(binary, package, tmp_path / "cat.ppm", tmp_path / "out"), tmp_path / "out")


def test_refusals(frame, tmp_path):
    rt, package, binary = frame
    (tmp_path / "short.f32").write_bytes(b"\0" * 100)
    cat_photo((SIZE, SIZE + 1)).save(tmp_path / "tall.ppm")
    (tmp_path / "text.ppm").write_text("P3\n16 16\n255\n")
    out = tmp_path / "out"
    for args, message in [((package,), "usage: explain_frame"),
                          ((tmp_path / "none.pt2", tmp_path / "short.f32", out), "cannot read"),
                          ((tmp_path / "short.f32", tmp_path / "short.f32", out), "explain_frame: "),  # no package
                          ((package, tmp_path / "short.f32", out), "100 bytes; the input [1, 3, 16, 16] takes 3072"),
                          ((package, tmp_path / "tall.ppm", out), "is 16x17; the frame takes 16x16"),
                          ((package, tmp_path / "text.ppm", out), "not a binary 8-bit PPM")]:
        done = explain(binary, *args)
        assert done.returncode != 0 and message in done.stderr, (args, done.stderr)
    assert not list(tmp_path.glob("out*"))
