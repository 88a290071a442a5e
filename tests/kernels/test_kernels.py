"""The Triton kernels of ``cfcam_fast.kernels``, against the functions they must equal.

Without a GPU the kernels run on CPU tensors in Triton's interpreter (the conftest sets
``TRITON_INTERPRET=1`` before Triton is imported); with one, on CUDA tensors, compiled.
Every kernel is checked against the plain-PyTorch function it must equal (and the filters
against SciPy / the reference backend) on fresh random inputs: each test draws a new seed
and names it in its failure message. Every kernel is also compiled for an H100 (sm_90)
with ``triton.compile``, so a kernel that only runs in the interpreter fails here; that
happens in a subprocess, since a process that imported Triton to interpret cannot compile.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

from cfcam_fast.core.backends import reference, torch_backend
from cfcam_fast.core.config import CFCAMConfig
from cfcam_fast.core.filters import (
    OFFICIAL_NORM_EPS,
    OFFICIAL_SIGMA_RANGE,
    OFFICIAL_SIGMA_SPATIAL,
    gaussian_filter2d_torch,
    official_filter_torch,
)
from cfcam_fast.kernels import channel_weights as _channel_weights
from cfcam_fast.kernels import combine as _combine
from cfcam_fast.kernels import gaussian_filter2d as _gaussian_filter2d
from cfcam_fast.kernels import official_filter2d as _official_filter2d
from cfcam_fast.kernels._launch import interpreted

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.skipif(DEVICE.type == "cpu" and not interpreted(),
                                reason="no CUDA device and Triton was not imported under TRITON_INTERPRET=1")


def on_device(fn):
    """``fn`` run on ``DEVICE`` copies of its tensor arguments, results back on the CPU."""
    def move(x, to):
        if isinstance(x, torch.Tensor):
            return x.to(to)
        return type(x)(move(v, to) for v in x) if isinstance(x, tuple) else x

    return lambda *args: move(fn(*(move(a, DEVICE) for a in args)), "cpu")


gaussian_filter2d = on_device(_gaussian_filter2d)
official_filter2d = on_device(_official_filter2d)
channel_weights = on_device(_channel_weights)
combine = on_device(_combine)


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
    ((1, 512, 3), 1.0, 4.0),        # the largest H, a few columns
    ((2, 2, 512), 40.0, 4.0),       # the largest W, radius 160
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


# --- official filter -------------------------------------------------------------------

def reference_official(g: torch.Tensor) -> np.ndarray:
    """The reference backend's direct (loop) reading of the official filter, map by map."""
    maps = g.double().reshape(-1, *g.shape[-2:]).numpy()
    return np.stack([reference.official_filter(m) for m in maps]).reshape(g.shape)


# Gradients at scale 0.1 make the range term exp(-d^2 / 0.02) vary (at scale 1 it is ~0
# off the mean). The kernel computes exp as exp2(x * log2(e)) in fp32 (interpreter and GPU
# alike), a relative error of about |x| * 6e-8 on a tap: up to ~1e-5 where the exponent
# reaches 100 or more (scale 1). Outputs are bounded by max|g| ~ 4 * scale, so: 1e-5 relative
# plus 1e-5 * scale absolute (torch and the kernel agree to ~1e-8 at scale 0.1).
def official_tol(scale: float) -> dict:
    return dict(rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("shape, scale", [
    ((2, 3, 7, 9), 0.1),   # odd sizes, 4-D batch
    ((1, 1), 0.1),         # a single pixel
    ((4, 1, 5), 0.1),      # a row
    ((3, 6, 1), 1.0),      # a column, range term ~0 off the mean
    ((1, 12, 10), 0.05),   # kernel wider than the spatial sigma's reach
])
def test_official_matches_torch_and_reference(shape, scale, seed):
    g = randn(shape, seed) * scale
    y = official_filter2d(g)
    assert y.shape == g.shape and y.dtype == g.dtype
    torch.testing.assert_close(y, official_filter_torch(g), **official_tol(scale), msg=lambda m: f"seed {seed}: {m}")
    np.testing.assert_allclose(y.numpy(), reference_official(g), **official_tol(scale), err_msg=f"seed {seed}")


def test_official_non_contiguous_and_precisions(seed):
    base = randn((5, 9, 8), seed) * 0.1
    view = base.transpose(-1, -2)[1:4]
    torch.testing.assert_close(official_filter2d(view), official_filter_torch(view), **official_tol(0.1),
                               msg=lambda m: f"seed {seed}: {m}")
    # fp16 in, fp32 inside, one rounding to fp16 out (relative 2^-10).
    half = base.half()
    torch.testing.assert_close(official_filter2d(half).float(), official_filter_torch(half).float(),
                               rtol=2 ** -10, atol=2 ** -14, msg=lambda m: f"seed {seed}: {m}")
    # fp64 throughout: the reference to fp64 rounding.
    np.testing.assert_allclose(official_filter2d(base.double()).numpy(), reference_official(base),
                               rtol=1e-10, atol=1e-14, err_msg=f"seed {seed}")


def test_official_bad_input():
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W\]"):
        official_filter2d(torch.zeros(4))
    with pytest.raises(ValueError, match="int32"):
        official_filter2d(torch.zeros(3, 3, dtype=torch.int32))


# --- channel weights ---------------------------------------------------------------------

def random_labels(B: int, C: int, seed: int, clusters: int = 3) -> torch.Tensor:
    """Labels in {-2, -1, 0 .. clusters-1}, every image with each kind where C allows."""
    gen = torch.Generator().manual_seed(seed + 1)
    labels = torch.randint(-2, clusters, (B, C), generator=gen)
    labels[:, : min(C, clusters + 2)] = torch.arange(-2, clusters)[: min(C, clusters + 2)]
    return labels[:, torch.randperm(C, generator=gen)]


def reference_weights(G: torch.Tensor, labels: torch.Tensor, config: CFCAMConfig) -> np.ndarray:
    """docs/algorithm.md step 5 read directly: filter each cluster-mean map (SciPy / the loop
    official filter) in fp64 and take its mean."""
    Gd, lab = G.double().numpy(), labels.numpy()
    w = np.zeros(lab.shape)
    for b in range(lab.shape[0]):
        w[b, lab[b] == -2] = Gd[b, lab[b] == -2].mean(axis=(1, 2))
        for k in set(lab[b][lab[b] >= 0].tolist()):
            w[b, lab[b] == k] = reference.apply_filter(Gd[b, lab[b] == k].mean(axis=0), config).mean()
    return w


# Weights are means of fp32 sums of up to ~70 terms of size ~0.1 (the gradients here) or
# of filtered maps: rounding ~1e-8; 1e-7 absolute plus 1e-5 relative.
WEIGHT_TOL = dict(rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("filter_name, sigma", [("gaussian", 1.0), ("gaussian", 6.0), ("official", 1.0)])
@pytest.mark.parametrize("shape", [(2, 12, 7, 7), (3, 5, 1, 1), (2, 9, 6, 11)])
def test_channel_weights_match_torch_and_reference(filter_name, sigma, shape, seed):
    G = randn(shape, seed) * 0.1
    labels = random_labels(shape[0], shape[1], seed)
    config = CFCAMConfig(filter=filter_name, sigma=sigma)
    w = channel_weights(G, labels, config)
    assert w.dtype == torch.float32 and w.shape == labels.shape
    assert (w[labels == -1] == 0).all()
    torch.testing.assert_close(w, torch_backend.channel_weights(G, labels, config), **WEIGHT_TOL,
                               msg=lambda m: f"seed {seed}: {m}")
    np.testing.assert_allclose(w.numpy(), reference_weights(G, labels, config), **WEIGHT_TOL,
                               err_msg=f"seed {seed}")


@pytest.mark.parametrize("filter_name", ["gaussian", "official"])
def test_channel_weights_views_half_and_no_clusters(filter_name, seed):
    config = CFCAMConfig(filter=filter_name)
    G = (randn((2, 10, 9, 8), seed) * 0.1).transpose(-1, -2)
    labels = random_labels(2, 10, seed)
    torch.testing.assert_close(channel_weights(G, labels, config), torch_backend.channel_weights(G, labels, config),
                               **WEIGHT_TOL, msg=lambda m: f"seed {seed}: {m}")
    # fp16 gradients are read as fp16 and summed in fp32, as the torch path does after .float().
    half = G.half()
    torch.testing.assert_close(channel_weights(half, labels, config),
                               torch_backend.channel_weights(half.float(), labels, config),
                               **WEIGHT_TOL, msg=lambda m: f"seed {seed}: {m}")
    no_clusters = labels.clamp(max=-1)
    torch.testing.assert_close(channel_weights(G, no_clusters, config),
                               torch_backend.channel_weights(G, no_clusters, config), **WEIGHT_TOL)


def test_channel_weights_bad_input():
    G = torch.zeros(2, 4, 3, 3)
    with pytest.raises(ValueError, match="int64 labels of shape"):
        channel_weights(G, torch.zeros(2, 4, dtype=torch.int32), CFCAMConfig())
    with pytest.raises(ValueError, match="int64 labels of shape"):
        channel_weights(G, torch.zeros(2, 5, dtype=torch.int64), CFCAMConfig())
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        channel_weights(G[0], torch.zeros(4, 3, dtype=torch.int64), CFCAMConfig())
    with pytest.raises(ValueError, match="at least one image"):
        channel_weights(G[:0], torch.zeros(0, 4, dtype=torch.int64), CFCAMConfig())
    with pytest.raises(ValueError, match="CFCAMConfig"):
        channel_weights(G, torch.zeros(2, 4, dtype=torch.int64), "gaussian")


# --- combination -------------------------------------------------------------------------

def reference_combine(A: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, weighting: str,
                      size) -> tuple[np.ndarray, np.ndarray]:
    """Steps 6-7 by the reference backend's NumPy functions, image by image, in fp64."""
    maps, alphas = [], []
    for a, wb, lab in zip(A.double().numpy(), w.double().numpy(), labels.numpy()):
        kept = lab != -1
        alpha = np.zeros(lab.shape)
        if kept.any():
            alpha[kept] = reference.combination_weights(wb[kept], weighting)
        cam = reference.bilinear_resize(np.maximum(np.tensordot(alpha, a, axes=1), 0.0), size)
        maps.append(cam / cam.max() if cam.max() > 0 else cam)
        alphas.append(alpha)
    return np.stack(maps), np.stack(alphas)


# Maps lie in [0, 1] and alpha in [0, 1]: fp32 sums of <= 16 products and one division,
# against fp64: 1e-6 absolute.
COMBINE_TOL = dict(rtol=0, atol=1e-6)


@pytest.mark.parametrize("weighting", ["softmax", "standardized", "linear"])
@pytest.mark.parametrize("shape, size", [
    ((2, 12, 7, 7), (20, 17)),   # upsampling, odd ratios
    ((3, 5, 1, 1), (4, 3)),      # 1x1 maps
    ((2, 9, 6, 11), (6, 11)),    # same size
    ((1, 16, 9, 5), (4, 2)),     # downsampling
])
def test_combine_matches_torch_and_reference(weighting, shape, size, seed):
    A = randn(shape, seed).relu()
    w = randn(shape[:2], seed + 2)
    labels = random_labels(shape[0], shape[1], seed)
    maps, alpha = combine(A, w, labels, weighting, size)
    assert maps.shape == (shape[0], *size) and maps.dtype == torch.float32
    t_maps, t_alpha = torch_backend.combine(A, w, labels, weighting, size)
    torch.testing.assert_close(maps, t_maps, **COMBINE_TOL, msg=lambda m: f"seed {seed}: {m}")
    torch.testing.assert_close(alpha, t_alpha, **COMBINE_TOL, msg=lambda m: f"seed {seed}: {m}")
    r_maps, r_alpha = reference_combine(A, w, labels, weighting, size)
    np.testing.assert_allclose(maps.numpy(), r_maps, **COMBINE_TOL, err_msg=f"seed {seed}")
    np.testing.assert_allclose(alpha.numpy(), r_alpha, **COMBINE_TOL, err_msg=f"seed {seed}")


@pytest.mark.parametrize("case", ["view", "half", "equal_weights", "all_noise", "zero_map", "many_channels"])
def test_combine_edge_cases(case, seed):
    A = randn((2, 8, 6, 5), seed).relu()
    w = randn((2, 8), seed + 2)
    labels = random_labels(2, 8, seed)
    if case == "view":
        A = randn((2, 5, 6, 8), seed).relu().permute(0, 3, 2, 1)
    elif case == "half":
        A = A.half()
    elif case == "equal_weights":        # std 0: standardized gives uniform alpha
        w = torch.full((2, 8), 0.25)
    elif case == "all_noise":            # nothing kept: alpha 0 and a zero map
        labels = torch.full((2, 8), -1)
    elif case == "zero_map":             # ReLU leaves nothing: the map stays 0, no division
        A = -A
    elif case == "many_channels":        # several channel blocks per program
        A = randn((1, 300, 3, 4), seed).relu()
        w = randn((1, 300), seed + 2)
        labels = random_labels(1, 300, seed)
    for weighting in ("softmax", "standardized", "linear"):
        maps, alpha = combine(A, w, labels, weighting, (7, 9))
        t_maps, t_alpha = torch_backend.combine(A.float(), w, labels, weighting, (7, 9))
        torch.testing.assert_close(maps, t_maps, **COMBINE_TOL, msg=lambda m, w=weighting: f"{w} seed {seed}: {m}")
        torch.testing.assert_close(alpha, t_alpha, **COMBINE_TOL, msg=lambda m, w=weighting: f"{w} seed {seed}: {m}")


def test_combine_bad_input():
    A = torch.zeros(2, 4, 3, 3)
    labels = torch.zeros(2, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="weighting"):
        combine(A, torch.zeros(2, 4), labels, "max", (3, 3))
    with pytest.raises(ValueError, match="output_size"):
        combine(A, torch.zeros(2, 4), labels, "softmax", (0, 3))
    with pytest.raises(ValueError, match="channel_weights must be"):
        combine(A, torch.zeros(2, 3), labels, "softmax", (3, 3))


# --- compiled for the H100 (and the CPU error without the interpreter) ---------------------

F32 = {"w": "*fp32", "labels": "*i64", "counts": "*fp32"}
COMPILE_CASES = {
    **{f"gaussian-{src}-axis{axis}": ("gaussian", "gaussian_axis_kernel",
                                       {"src": f"*{src}", "dst": f"*{acc}", "taps": f"*{acc}"},
                                       {"AXIS": axis, "ACC": f"tl.{acc}", "BLOCK": 1024})
       for src, acc in [("fp32", "fp32"), ("fp16", "fp32"), ("bf16", "fp32"), ("fp64", "fp64")]
       for axis in (0, 1)},
    **{f"official-taps-{src}": ("official", "official_taps_kernel", {"g": f"*{src}", "K": f"*{acc}"},
                                {"SPATIAL_DIV": 2 * OFFICIAL_SIGMA_SPATIAL ** 2,
                                 "RANGE_DIV": 2 * OFFICIAL_SIGMA_RANGE ** 2, "NORM_EPS": OFFICIAL_NORM_EPS,
                                 "ACC": f"tl.{acc}", "BLOCK": 64})
       for src, acc in [("fp32", "fp32"), ("fp16", "fp32"), ("fp64", "fp64")]},
    **{f"official-correlate-{src}": ("official", "official_correlate_kernel",
                                     {"g": f"*{src}", "K": "*fp32", "out": f"*{src}"},
                                     {"ACC": "tl.fp32", "BLOCK": 256})
       for src in ("fp32", "fp16")},
    **{f"channel-stats-maps{maps}": ("weights", "channel_stats_kernel",
                                     {**F32, "G": "*fp32", "sums": "*fp32", "mean_map": "*fp32"},
                                     {"MAPS": maps, "ACC": "tl.fp32", "BLOCK_C": 16, "BLOCK_HW": 64})
       for maps in (False, True)},
    **{f"cluster-weights-divide{divide}": ("weights", "cluster_weights_kernel", {**F32, "values": "*fp32"},
                                           {"DIVIDE": divide, "BLOCK": 1024})
       for divide in (False, True)},
    **{f"alpha-{weighting}": ("combine", "alpha_kernel",
                              {**F32, "alpha": "*fp32", "cam": "*fp32", "peak": "*fp32"},
                              {"WEIGHTING": code, "BLOCK_C": 1024})
       for weighting, code in [("softmax", 0), ("standardized", 1), ("linear", 2)]},
    **{f"weighted-sum-{src}": ("combine", "weighted_sum_kernel", {"A": f"*{src}", "alpha": "*fp32", "cam": "*fp32"},
                               {"CHANNELS": 256, "BLOCK_C": 32, "BLOCK_HW": 64})
       for src in ("fp32", "fp16")},
    **{f"upsample-write{write}": ("combine", "upsample_kernel",
                                  {"cam": "*fp32", "peak": "*fp32", "out": "*fp32", "scale_h": "fp32",
                                   "scale_w": "fp32"}, {"WRITE": write, "BLOCK": 1024})
       for write in (False, True)},
}

# Run with Triton imported normally: compile every case for sm_90 down to a cubin (no GPU
# needed), and call a kernel on a CPU tensor, which must be a ValueError.
COMPILER = """
import importlib, json, sys
import torch, triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from cfcam_fast.kernels import gaussian_filter2d
results = {}
cases = json.load(sys.stdin)
PTX_WANTED = cases.pop("ptx_wanted")
for case, (module, name, types, constexprs) in cases.items():
    kernel = getattr(importlib.import_module("cfcam_fast.kernels." + module), name)
    constexprs = {k: getattr(tl, v[3:].replace("fp", "float")) if str(v).startswith("tl.") else v
                  for k, v in constexprs.items()}
    signature = {arg: types.get(arg, "i32") for arg in kernel.arg_names}
    signature.update({k: "constexpr" for k in constexprs})
    try:
        source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
        results[case] = "ok" if compiled.asm["cubin"] else "empty"
        if case in PTX_WANTED:
            results[case + ":ptx"] = compiled.asm["ptx"]
    except Exception as exc:
        results[case] = f"{type(exc).__name__}: {exc}"
try:
    gaussian_filter2d(torch.zeros(3, 3), 1.0)
    results["cpu-error"] = "no error"
except ValueError as exc:
    results["cpu-error"] = str(exc)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def compiled_for_h100() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cases = json.dumps({**COMPILE_CASES, "ptx_wanted": PTX_WANTED})
    done = subprocess.run([sys.executable, "-c", COMPILER], input=cases, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", sorted(COMPILE_CASES))
def test_kernel_compiles_for_h100(case, compiled_for_h100):
    assert compiled_for_h100[case] == "ok", compiled_for_h100[case]


PTX_WANTED = ["official-taps-fp64"]


def test_official_fp64_constants_stay_fp64_when_compiled(compiled_for_h100):
    """The first GPU run found the compiled fp64 official filter 2e-10 off the reference: its
    constants, passed as Python floats, reached the kernel as fp32 (the interpreter keeps them
    fp64). The compiled fp64 kernel must hold 2 * 0.1 ** 2 as the fp64 literal itself."""
    ptx = compiled_for_h100["official-taps-fp64:ptx"]
    exact = struct.pack(">d", 2 * OFFICIAL_SIGMA_RANGE ** 2).hex().upper()
    assert f"0d{exact}" in ptx, "2 * sigma_range ** 2 is not an fp64 literal in the PTX"


def test_cpu_tensor_without_interpreter_is_a_clear_error(compiled_for_h100):
    message = compiled_for_h100["cpu-error"]
    assert "TRITON_INTERPRET=1" in message and "gaussian_filter2d_torch" in message, message
