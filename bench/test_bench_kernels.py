"""Each Triton kernel of ``cfcam_fast.kernels`` against its plain-PyTorch equivalent.

Run: ``python -m pytest bench/test_bench_kernels.py``. The Triton rows need a CUDA device
(they skip without one: the CPU interpreter is not benchmarked); the torch rows run on the
same device, so the two compare on one machine. On CUDA each row also records in
``extra_info`` the bytes the operation must move and the time those take at the device's
measured copy bandwidth (``floor_us``). Shapes: ResNet-50's last block for a batch of 64
(``[64, 2048, 7, 7]``, output 224 x 224), the size the 100-microsecond target for
the weighting and combination stages refers to.
"""
from __future__ import annotations

import pytest
import torch

from cfcam_fast import CFCAMConfig
from cfcam_fast.core.backends import torch_backend
from cfcam_fast.core.filters import gaussian_filter2d_torch, official_filter_torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
RESNET50 = (64, 2048, 7, 7)
OUTPUT = (224, 224)
CLUSTERS = 20


def sync() -> None:
    """Wait for the device, so that a timed call includes its kernels."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def kernels():
    """``cfcam_fast.kernels``, or a skip when the Triton rows cannot run here."""
    if DEVICE.type != "cuda":
        pytest.skip("the Triton kernels are benchmarked on CUDA only")
    import cfcam_fast.kernels as k
    from cfcam_fast.kernels._launch import interpreted
    if interpreted():
        pytest.skip("Triton was imported under TRITON_INTERPRET=1: the kernels would be interpreted")
    return k


@pytest.fixture(scope="module")
def bandwidth() -> float | None:
    """Device-to-device copy bandwidth in bytes per second (read + write), or None on CPU."""
    if DEVICE.type != "cuda":
        return None
    src = torch.empty(1 << 28, dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)
    dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    return 10 * 2 * src.numel() / (start.elapsed_time(end) / 1e3)


def tensors(shape, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale).to(DEVICE)


def labels_for(B: int, C: int) -> torch.Tensor:
    """A quarter important (-2), then noise (-1) and ``CLUSTERS`` clusters at random."""
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(-1, CLUSTERS, (B, C), generator=gen)
    labels[:, : C // 4] = -2
    return labels[:, torch.randperm(C, generator=gen)].to(DEVICE)


def run(benchmark, bandwidth, fn, bytes_moved: int):
    """Time ``fn`` (synchronised) and record the bandwidth floor of ``bytes_moved``."""
    def timed():
        fn()
        sync()

    benchmark.extra_info["bytes"] = bytes_moved
    if bandwidth:
        benchmark.extra_info["floor_us"] = bytes_moved / bandwidth * 1e6
    benchmark(timed)


@pytest.mark.parametrize("shape", [(64, 32, 7, 7), (8, 64, 56, 56)], ids=["clusters-7x7", "56x56"])
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_gaussian_filter2d(benchmark, bandwidth, impl, shape):
    fn = kernels().gaussian_filter2d if impl == "triton" else gaussian_filter2d_torch
    x = tensors(shape)
    run(benchmark, bandwidth, lambda: fn(x, 1.0), 2 * x.numel() * 4)


@pytest.mark.parametrize("shape", [(64, 32, 7, 7), (8, 16, 28, 28)], ids=["clusters-7x7", "28x28"])
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_official_filter2d(benchmark, bandwidth, impl, shape):
    fn = kernels().official_filter2d if impl == "triton" else official_filter_torch
    g = tensors(shape, scale=0.1)
    run(benchmark, bandwidth, lambda: fn(g), 2 * g.numel() * 4)


@pytest.mark.parametrize("filter_name", ["gaussian", "official"])
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_channel_weights(benchmark, bandwidth, impl, filter_name):
    fn = kernels().channel_weights if impl == "triton" else torch_backend.channel_weights
    G, labels = tensors(RESNET50, scale=1e-3), labels_for(*RESNET50[:2])
    config = CFCAMConfig(filter=filter_name)
    run(benchmark, bandwidth, lambda: fn(G, labels, config), G.numel() * 4 + labels.numel() * 12)


@pytest.mark.parametrize("weighting", ["softmax", "standardized"])
@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_combine(benchmark, bandwidth, impl, weighting):
    fn = kernels().combine if impl == "triton" else torch_backend.combine
    A, labels = tensors(RESNET50).relu(), labels_for(*RESNET50[:2])
    w = tensors(RESNET50[:2], seed=2, scale=1e-3)
    bytes_moved = A.numel() * 4 + labels.numel() * 16 + RESNET50[0] * OUTPUT[0] * OUTPUT[1] * 4
    run(benchmark, bandwidth, lambda: fn(A, w, labels, weighting, OUTPUT), bytes_moved)


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_weighting_and_combination_stages(benchmark, bandwidth, impl):
    """Steps 5-7 together for 64 ResNet-50 images (target: < 100 us on CUDA)."""
    k = kernels() if impl == "triton" else torch_backend
    A, G, labels = tensors(RESNET50).relu(), tensors(RESNET50, seed=3, scale=1e-3), labels_for(*RESNET50[:2])
    config = CFCAMConfig()

    def stages():
        w = k.channel_weights(G, labels, config)
        return k.combine(A, w, labels, config.weighting, OUTPUT)

    bytes_moved = 2 * A.numel() * 4 + labels.numel() * 24 + RESNET50[0] * OUTPUT[0] * OUTPUT[1] * 4
    run(benchmark, bandwidth, stages, bytes_moved)
