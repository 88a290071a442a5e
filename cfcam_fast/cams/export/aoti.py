"""The ``.pt2`` writer: an exported frame program compiled by AOTInductor.

``torch._inductor.aoti_compile_and_package`` compiles the program (pure ATen and the
``cond``/``while_loop`` control-flow operators: no custom op, so the package needs no
library of this one to load) into a package that ``torch._inductor.aoti_load_package``
loads without the model's code, in Python or in C++ (libtorch's
``AOTIModelPackageLoader``). The frame's ``cfcam.*`` metadata travel in the package
(``aot_inductor.metadata``; ``runner.get_metadata()`` after loading).

``INDUCTOR_FLAGS`` pins what exactness needs: no floating-point contraction (a fused
multiply-add would change the coordinate-order distance sums) and no unsafe math (no
reassociation). They are Inductor's defaults, pinned so that environment variables cannot
change them. The compiled code targets the compiling machine's instruction set (AVX-512
here); load it on machines that have the same.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

INDUCTOR_FLAGS: dict[str, Any] = {"cpp.enable_floating_point_contract_flag": "off",
                                  "cpp.enable_unsafe_math_opt_flag": False}


def write(program: torch.export.ExportedProgram, path: Path, metadata: dict[str, str],
          output_names: tuple[str, ...]) -> dict[str, Any]:
    """Compile ``program`` into the package ``path`` with ``metadata`` (and
    ``cfcam.outputs``); returns ``{"compile_s", "bytes"}``."""
    import torch._inductor

    start = time.perf_counter()
    torch._inductor.aoti_compile_and_package(
        program, package_path=os.fspath(path),
        inductor_configs={**INDUCTOR_FLAGS, "aot_inductor.metadata": dict(metadata)})
    return {"compile_s": time.perf_counter() - start, "bytes": path.stat().st_size}
