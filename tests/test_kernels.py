"""The Triton kernels of ``cfcam_fast.kernels`` on the CPU, under Triton's interpreter.

Every kernel is checked against the plain-PyTorch function it must equal (and the
filters against SciPy) on fresh random inputs: each test draws a new seed and names it in
its failure message. Every kernel is also compiled for an H100 (sm_90) with
``triton.compile``, so a kernel that only runs in the interpreter fails here.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from scipy import ndimage
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from cfcam_fast.filters import gaussian_filter2d_torch
from cfcam_fast.kernels import gaussian as gaussian_mod
from cfcam_fast.kernels._launch import compiled
from cfcam_fast.kernels.gaussian import gaussian_filter2d

H100 = GPUTarget("cuda", 90, 32)
TL_TYPES = {"fp32": tl.float32, "fp64": tl.float64}


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch):
    """Kernels on CPU tensors run in the interpreter only while this is set (checked per call)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture
def seed() -> int:
    """A fresh seed per test (the conftest fixes torch's global one), shown on failure."""
    return int.from_bytes(os.urandom(4), "little")


def randn(shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def scipy_gaussian(x: torch.Tensor, sigma: float, truncate: float) -> np.ndarray:
    """SciPy's filter over the last two axes only (sigma 0 on the others is the identity)."""
    sigmas = [0.0] * (x.dim() - 2) + [sigma, sigma]
    return ndimage.gaussian_filter(x.double().numpy(), sigmas, mode="constant", cval=0.0, truncate=truncate)


# fp32: the kernel and conv2d add the same fp32 products in different orders, and SciPy
# works in fp64, so they differ by a few fp32 ulps of values of order 1: 1e-6 absolute.
FP32_TOL = dict(rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape, sigma, truncate", [
    ((2, 3, 7, 9), 1.0, 4.0),       # odd sizes, a 4-D batch
    ((1, 1), 1.0, 4.0),             # a single pixel
    ((5, 1, 1), 3.0, 4.0),          # 1x1 maps, sigma larger than the map
    ((3, 6, 5), 10.0, 4.0),         # radius 40 on a 6x5 map
    ((2, 17, 1), 0.7, 2.5),         # a column, another truncate
    ((1, 1, 33), 2.0, 4.0),         # a row longer than one block of taps
    ((4, 20, 20), 0.3, 4.0),        # radius 1
])
def test_gaussian_matches_torch_and_scipy(shape, sigma, truncate, seed):
    x = randn(shape, seed)
    y = gaussian_filter2d(x, sigma, truncate)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, gaussian_filter2d_torch(x, sigma, truncate), **FP32_TOL,
                               msg=lambda m: f"seed {seed}: {m}")
    np.testing.assert_allclose(y.numpy(), scipy_gaussian(x, sigma, truncate), rtol=1e-5, atol=1e-6,
                               err_msg=f"seed {seed}")


@pytest.mark.parametrize("view", ["transposed", "strided", "sliced_batch"])
def test_gaussian_non_contiguous(view, seed):
    base = randn((6, 11, 10), seed)
    x = {"transposed": base.transpose(-1, -2),
         "strided": base[:, ::2, 1::3],
         "sliced_batch": base.permute(1, 0, 2)[2:9]}[view]
    assert not x.is_contiguous()
    torch.testing.assert_close(gaussian_filter2d(x, 1.3), gaussian_filter2d_torch(x, 1.3), **FP32_TOL,
                               msg=lambda m: f"seed {seed}: {m}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gaussian_half_precision_accumulates_in_fp32(dtype, seed):
    x = randn((3, 9, 14), seed, dtype)
    y = gaussian_filter2d(x, 1.0)
    assert y.dtype == dtype
    # Both accumulate the fp16/bf16 inputs in fp32 and round once at the end: equal to
    # within one rounding of the output type (fp16 ulp 2^-10, bf16 2^-7, relative).
    ulp = 2 ** -10 if dtype == torch.float16 else 2 ** -7
    torch.testing.assert_close(y.float(), gaussian_filter2d_torch(x, 1.0).float(), rtol=ulp, atol=ulp,
                               msg=lambda m: f"seed {seed}: {m}")


def test_gaussian_float64_accumulates_in_float64(seed):
    x = randn((2, 8, 7), seed, torch.float64)
    # fp64 throughout: agrees with SciPy to rounding of fp64.
    np.testing.assert_allclose(gaussian_filter2d(x, 2.0).numpy(), scipy_gaussian(x, 2.0, 4.0),
                               rtol=1e-12, atol=1e-13, err_msg=f"seed {seed}")


def test_gaussian_empty_batch():
    assert gaussian_filter2d(torch.zeros(0, 4, 4), 1.0).shape == (0, 4, 4)


@pytest.mark.parametrize("x, sigma, truncate, match", [
    (torch.zeros(5), 1.0, 4.0, r"\[\.\.\., H, W\]"),
    (torch.zeros(3, 3, dtype=torch.int64), 1.0, 4.0, "int64"),
    (torch.zeros(3, 3), 0.0, 4.0, "sigma"),
    (torch.zeros(3, 3), float("nan"), 4.0, "sigma"),
    (torch.zeros(3, 3), 1.0, -1.0, "truncate"),
])
def test_gaussian_bad_input(x, sigma, truncate, match):
    with pytest.raises(ValueError, match=match):
        gaussian_filter2d(x, sigma, truncate)


def test_cpu_tensor_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1.*gaussian_filter2d_torch"):
        gaussian_filter2d(torch.zeros(3, 3), 1.0)


# --- compiled for the H100 -----------------------------------------------------------------

@pytest.fixture
def compile_for_h100(monkeypatch):
    """``triton.compile`` of a kernel for sm_90 down to a cubin (no GPU needed); the
    compiler's code generator must not see ``TRITON_INTERPRET=1``."""
    monkeypatch.delenv("TRITON_INTERPRET")

    def run(kernel, signature: dict, constexprs: dict):
        signature = {**signature, **{name: "constexpr" for name in constexprs}}
        source = ASTSource(fn=compiled(kernel), signature=signature, constexprs=constexprs)
        return triton.compile(source, target=H100).asm["cubin"]
    return run


def signature_of(kernel, types: dict) -> dict:
    """Every non-constexpr argument of ``kernel`` typed: ``types`` for pointers and floats,
    ``i32`` for the rest (the sizes, strides and counts)."""
    return {name: types.get(name, "i32") for name in compiled(kernel).arg_names}


@pytest.mark.parametrize("src, acc", [("fp32", "fp32"), ("fp16", "fp32"), ("bf16", "fp32"), ("fp64", "fp64")])
@pytest.mark.parametrize("axis", [0, 1])
def test_gaussian_compiles_for_h100(src, acc, axis, compile_for_h100):
    kernel = gaussian_mod.gaussian_axis_kernel
    types = {"src": f"*{src}", "dst": f"*{acc}", "taps": f"*{acc}"}
    assert compile_for_h100(kernel, signature_of(kernel, types),
                            {"AXIS": axis, "ACC": TL_TYPES[acc], "BLOCK": gaussian_mod.BLOCK})
