"""``core.exportable.StaticCore`` (run eagerly) against the torch backend with fixed shapes,
the core ``RealtimeCFCAM`` runs: the same labels, eps and maps, bit for bit, on every kind of
input the exported frames meet; and the tracing helpers (``core.exportable.tracing``).
The exported graphs themselves are tested in tests/cams/test_export_onnx.py and
tests/cams/test_export_pt2.py."""
from __future__ import annotations

import math

import pytest
import torch
from export_helpers import CONFIGS, PROBE_KINDS, nan_safe_equal, probe_batch
from helpers import needs_native, structured

import cfcam_fast as cf
from cfcam_fast.cams.gradcam import gradcam_weights
from cfcam_fast.core.backends import torch_backend
from cfcam_fast.core.exportable import StaticCore, float64_constants, inexact_float64_scalars
from cfcam_fast.core.output import weighted_map
from cfcam_fast.core.resolve import resolve_plan

CPU = torch.device("cpu")


def _fixed_shape_core(A: torch.Tensor, G: torch.Tensor, config: cf.CFCAMConfig, size) -> cf.CFCAMResult:
    """What ``RealtimeCFCAM`` computes from captured tensors (``RealtimeCFCAM._core``)."""
    plan = resolve_plan("torch", config, CPU)
    n = torch_backend.max_remaining(A.shape[1], config.importance_percentile)
    fixed = torch_backend.FixedShapes(n=n, buffer=torch_backend.pair_matrix(A.shape[0], n, plan))
    return torch_backend.explain(A, G, size, config, plan, fixed=fixed)


def _gradients(A: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(A.shape[:2], generator=gen)[:, :, None, None].expand_as(A) * 1e-3


def _check(A: torch.Tensor, G: torch.Tensor, config: cf.CFCAMConfig, size=(7, 5), **kwargs) -> torch.Tensor:
    core = StaticCore(config, A.shape[1], size, **kwargs)
    with torch.no_grad():
        maps, labels, eps, certified = core(A, G)
    ref = _fixed_shape_core(A, G, config, size)
    assert torch.equal(labels, ref.labels)
    assert nan_safe_equal(eps, ref.eps)
    assert torch.equal(maps, ref.maps)
    return certified


@needs_native
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.filter}-{c.weighting}")
def test_equals_the_fixed_shape_core_on_every_probe_kind(config):
    A = probe_batch(PROBE_KINDS)
    assert not bool(_check(A, _gradients(A, 1), config)), "the tie image needs the exact fallback"
    full = probe_batch([k for k in PROBE_KINDS if k not in ("tie", "chain", "grid", "duplicates")])
    assert bool(_check(full, _gradients(full, 2), config)), "no ties at eps: the certified stage decides"


@needs_native
@pytest.mark.parametrize("distances,loop", [("certified", "while"), ("certified", "unrolled"), ("exact", "while")])
def test_distance_paths_and_loops_agree(distances, loop):
    A = structured(3, 40, 6, 6, seed=3)
    _check(A, _gradients(A, 4), cf.CFCAMConfig(weighting="linear"), distances=distances, loop=loop)


@needs_native
def test_percentiles_that_float32_cannot_hold():
    """eps_percentile 33.3 and min_samples_fraction 0.07: the float64 constants matter."""
    config = cf.CFCAMConfig(eps_percentile=33.3, importance_percentile=70.0, min_samples_fraction=0.07)
    A = structured(2, 40, 5, 5, seed=8)
    _check(A, _gradients(A, 9), config)


def test_few_channels_and_non_finite_images():
    config = cf.CFCAMConfig()
    A = torch.rand(2, 2, 3, 3)
    maps, labels, eps, _ = StaticCore(config, 2, (3, 3))(A, A)
    assert (labels >= -2).all() and torch.isnan(eps).all() and torch.isfinite(maps).all()
    A = structured(3, 40, 5, 5, seed=1)
    A[1, 0, 0, 0] = math.nan
    maps, *_ = StaticCore(config, 40, (5, 5))(A, _gradients(A, 1))
    assert torch.isnan(maps[1]).all() and torch.isfinite(maps[[0, 2]]).all()


def test_gradcam_equals_the_float64_map():
    A = structured(3, 40, 6, 6, seed=5) * torch.tensor([1.0, 2.0 ** -120, 2.0 ** 90])[:, None, None, None]
    G = _gradients(A, 6)
    maps, labels, eps, certified = StaticCore(cf.CFCAMConfig(), 40, (12, 12), method="gradcam")(A, G)
    w = gradcam_weights(A.double(), G.double())
    expected = weighted_map(A.double(), w, (12, 12)).float()
    torch.testing.assert_close(maps, expected, rtol=0, atol=2e-6)
    assert (labels == -2).all() and torch.isnan(eps).all() and not bool(certified)


def test_bad_arguments_are_refused():
    for kwargs, message in (({"method": "eigencam"}, "method must be"), ({"distances": "float32"}, "distances"),
                            ({"loop": "for"}, "loop must be")):
        with pytest.raises(ValueError, match=message):
            StaticCore(cf.CFCAMConfig(), 8, (4, 4), **kwargs)
    with pytest.raises(ValueError, match="built for 8 channels, got 9"):
        StaticCore(cf.CFCAMConfig(), 8, (4, 4))(torch.rand(1, 9, 2, 2), torch.rand(1, 9, 2, 2))


class _Scaled(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() * 1e-5 + 0.25


def test_float64_constants_keep_their_value_through_export():
    """Traced plainly, ``x * 1e-5`` on a float64 tensor keeps a Python float that the ONNX
    exporter would round to float32; under ``float64_constants`` it is a float64 tensor."""
    x = torch.rand(3)
    plain = torch.export.export(_Scaled(), (x,), strict=False)
    assert len(inexact_float64_scalars(plain)) == 1
    with float64_constants():
        kept = torch.export.export(_Scaled(), (x,), strict=False)
        eager = _Scaled()(x)
    assert inexact_float64_scalars(kept) == []
    assert torch.equal(kept.module()(x), _Scaled()(x)) and torch.equal(eager, _Scaled()(x))
