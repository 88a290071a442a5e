"""The ``.pt2`` writer: an exported frame program compiled by AOTInductor.

``torch._inductor.aoti_compile_and_package`` compiles the program (pure ATen and the
``cond``/``while_loop`` control-flow operators: no custom op, so the package needs no
library of this one to load) into a package that ``torch._inductor.aoti_load_package``
loads without the model's code, in Python or in C++ (libtorch's
``AOTIModelPackageLoader``). The frame's ``cfcam.*`` metadata travel in the package
(``aot_inductor.metadata``; ``runner.get_metadata()`` after loading), with
``cfcam.device``: the device type the program was traced on, ``cpu`` or ``cuda``, which
is the one its compiled code runs on.

``inductor_flags(device)`` pins what exactness needs: no floating-point contraction (a
fused multiply-add would change the coordinate-order distance sums) and no unsafe math
(no reassociation). On the CPU these are ``INDUCTOR_FLAGS``, Inductor's defaults, pinned
so that environment variables cannot change them. On CUDA the program becomes Triton
kernels, which Inductor compiles with ``enable_fp_fusion = not emulate_precision_casts``
(``torch/_inductor/codegen/triton.py``), so ``CUDA_FLAGS`` turn that on: no contraction
in Triton's PTX either (``-fmad=false``). The compiled code targets the compiling
machine's instruction set (AVX-512 here) or GPU architecture; load it where they match.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

INDUCTOR_FLAGS: dict[str, Any] = {"cpp.enable_floating_point_contract_flag": "off",
                                  "cpp.enable_unsafe_math_opt_flag": False}
CUDA_FLAGS: dict[str, Any] = {"emulate_precision_casts": True}


def inductor_flags(device: str) -> dict[str, Any]:
    """The pinned Inductor configuration for a program on the device type ``device``:
    ``INDUCTOR_FLAGS``, plus ``CUDA_FLAGS`` on ``cuda``."""
    return {**INDUCTOR_FLAGS, **(CUDA_FLAGS if device == "cuda" else {})}


def write(program: torch.export.ExportedProgram, path: Path, metadata: dict[str, str],
          output_names: tuple[str, ...]) -> dict[str, Any]:
    """Compile ``program`` for the device type ``metadata["cfcam.device"]`` into the package
    ``path`` with ``metadata`` (and ``cfcam.outputs``); returns ``{"compile_s", "bytes"}``."""
    import torch._inductor

    start = time.perf_counter()
    torch._inductor.aoti_compile_and_package(
        program, package_path=os.fspath(path),
        inductor_configs={**inductor_flags(metadata["cfcam.device"]), "aot_inductor.metadata": dict(metadata)})
    return {"compile_s": time.perf_counter() - start, "bytes": path.stat().st_size}
