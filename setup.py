"""The parts of the build that must be code: the CMake build of csrc/ and the package layout.

Metadata, dependencies and extras are in pyproject.toml. CMake (CMakeLists.txt) builds the
native CPU module ``_native_cpu`` always and the CUDA module ``_native_cuda`` too when
``CFCAM_CUDA=1``. A module that fails to build fails the build, unless
``CFCAM_ALLOW_NO_NATIVE=1``: then the package is built without it and
``cfcam_fast/_native_build.json`` records why, which ``cfcam_fast.backend_status()`` reports.
The top-level ``kernels/`` folder installs as ``cfcam_fast.kernels`` (docs/install.md).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
BUILD_RECORD = "_native_build.json"  # read by cfcam_fast.core.native.status()
ALLOW_NO_NATIVE = "CFCAM_ALLOW_NO_NATIVE"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0") == "1"


NATIVE_MODULES = ("_native_cpu", "_native_cuda")


def _native_modules() -> list[str]:
    """The modules this build must produce: the CUDA one only under ``CFCAM_CUDA=1``."""
    return list(NATIVE_MODULES) if _flag("CFCAM_CUDA") else [NATIVE_MODULES[0]]


class NativeBuildError(RuntimeError):
    """The native modules could not be built; the message says why and what to do."""


class CMakeBuild(build_ext):
    """Builds every native module with one CMake run, then checks each one exists."""

    def build_extensions(self) -> None:
        out_dir = Path(self.get_ext_fullpath(self.extensions[0].name)).resolve().parent
        out_dir.mkdir(parents=True, exist_ok=True)
        record = out_dir / BUILD_RECORD
        record.unlink(missing_ok=True)
        for ext in self.extensions:  # a module left by an earlier build must not pass for this one's
            Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
        try:
            self._cmake(out_dir)
            missing = [ext.name for ext in self.extensions if not Path(self.get_ext_fullpath(ext.name)).exists()]
            if missing:
                raise NativeBuildError(f"CMake finished but did not produce {', '.join(missing)} "
                                       "(for _native_cuda: is nvcc on PATH?)")
        except NativeBuildError as exc:
            if not _flag(ALLOW_NO_NATIVE):
                raise NativeBuildError(f"cfcam_fast: the native ops failed to build: {exc}\n"
                                       f"Fix the build, or set {ALLOW_NO_NATIVE}=1 to install without "
                                       "them (the torch and scikit-learn DBSCAN paths still work).") from None
            print(f"cfcam_fast: WARNING: building without the native ops ({ALLOW_NO_NATIVE}=1): {exc}",
                  file=sys.stderr)
            built = {ext.name for ext in self.extensions if Path(self.get_ext_fullpath(ext.name)).exists()}
            reasons = {ext.name.rpartition(".")[2]: str(exc) for ext in self.extensions if ext.name not in built}
            record.write_text(json.dumps({"reason": str(exc), "modules": reasons}, indent=2) + "\n")
            self.extensions = [ext for ext in self.extensions if ext.name in built]

    def _cmake(self, out_dir: Path) -> None:
        if not (ROOT / "CMakeLists.txt").is_file() or not (ROOT / "csrc").is_dir():
            raise NativeBuildError(f"CMakeLists.txt or csrc/ is missing from {ROOT} (an incomplete sdist?)")
        import pybind11

        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        cmake = _cmake_executable()
        configure = [cmake, str(ROOT), f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
                     f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
                     "-DCMAKE_BUILD_TYPE=Release", f"-DCFCAM_CUDA={'ON' if _flag('CFCAM_CUDA') else 'OFF'}"]
        compile_ = [cmake, "--build", ".", "--parallel", str(os.cpu_count() or 1)]
        for step, argv in (("configure", configure), ("build", compile_)):
            try:
                done = subprocess.run(argv, cwd=build_dir, capture_output=True, text=True)
            except OSError as exc:
                raise NativeBuildError(f"cannot run cmake ({exc}): pip install cmake") from None
            print(done.stdout, end="")
            print(done.stderr, end="", file=sys.stderr)
            if done.returncode != 0:
                raise NativeBuildError(f"cmake {step} failed (exit status {done.returncode}): "
                                       f"{_first_error(done.stdout + done.stderr)}")

    def copy_extensions_to_source(self) -> None:
        """Editable installs: the source package gets exactly the modules this build made (an
        older one this build did not make is removed) and the build record if any."""
        source, built = ROOT / "cfcam_fast", Path(self.build_lib).resolve() / "cfcam_fast"
        made = {ext.name.rpartition(".")[2] for ext in self.extensions}
        for name in NATIVE_MODULES:
            # Unlink, or copy then rename: a process that has the old module loaded keeps its file.
            target = source / Path(self.get_ext_filename(f"cfcam_fast.{name}")).name
            if name not in made:
                target.unlink(missing_ok=True)
                continue
            shutil.copy2(built / target.name, target.with_suffix(".tmp"))
            os.replace(target.with_suffix(".tmp"), target)
        (source / BUILD_RECORD).unlink(missing_ok=True)
        if (built / BUILD_RECORD).is_file():
            shutil.copy2(built / BUILD_RECORD, source / BUILD_RECORD)


def _cmake_executable() -> str:
    """The cmake of the ``cmake`` Python package the build requires, else the one on PATH (also
    without build isolation, where the environment's bin folder need not be on PATH)."""
    try:
        import cmake
    except ImportError:
        return "cmake"
    return str(Path(cmake.CMAKE_BIN_DIR) / "cmake")


def _first_error(output: str) -> str:
    """The first error of a build's output (a ``CMake Error`` or a compiler's ``error:`` line
    and the three lines after it), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if "CMake Error" in line or "error:" in line.lower()), None)
    if first is None:
        return lines[-1] if lines else "no output"
    return " ".join(lines[first:first + 4])


setup(
    packages=find_packages(include=["cfcam_fast", "cfcam_fast.*"]) + ["cfcam_fast.kernels"],
    package_dir={"cfcam_fast": "cfcam_fast", "cfcam_fast.kernels": "kernels"},
    ext_modules=[Extension(f"cfcam_fast.{name}", sources=[]) for name in _native_modules()],
    cmdclass={"build_ext": CMakeBuild},
)
