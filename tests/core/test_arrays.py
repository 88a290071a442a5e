"""Arrays of other libraries through DLPack (``cfcam_fast.core.arrays``): ``cf.cluster.dbscan``
and ``cf.cfcam_explain`` take NumPy arrays (CuPy and JAX on CUDA, in the GPU tests) without
a copy and return the caller's array type, with the tensors' results."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import cfcam_fast as cf
from cfcam_fast.core.arrays import as_tensor, returner


def _captured(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = np.maximum(rng.normal(size=(2, 24, 5, 5)), 0).astype(np.float32)
    G = (rng.normal(size=(2, 24, 5, 5)) * 1e-3).astype(np.float32)
    return A, G


def test_numpy_arrays_are_viewed_not_copied():
    A, _ = _captured()
    t = as_tensor(A)
    assert isinstance(t, torch.Tensor) and np.shares_memory(t.numpy(), A)
    strided = A[:, ::2]  # DLPack carries strides: still a view
    assert np.shares_memory(as_tensor(strided).numpy(), A)


def test_read_only_arrays_are_copied_and_other_values_pass_through():
    A, _ = _captured()
    A.setflags(write=False)
    t = as_tensor(A)
    assert torch.equal(t, torch.from_numpy(A.copy()))
    assert as_tensor(1.5) == 1.5 and as_tensor(None) is None
    assert returner(torch.zeros(1))(torch.ones(1)).dtype == torch.float32


def test_cfcam_explain_takes_and_returns_numpy():
    A, G = _captured()
    got = cf.cfcam_explain(A, G, (10, 10))
    ref = cf.cfcam_explain(torch.from_numpy(A), torch.from_numpy(G), (10, 10))
    for name in ("maps", "labels", "channel_weights", "weights", "eps"):
        value = getattr(got, name)
        assert isinstance(value, np.ndarray), name
        np.testing.assert_array_equal(value, getattr(ref, name).numpy())
    assert got.plan == ref.plan
    filtered = cf.cfcam_explain(A, G, return_filtered=True).filtered
    assert all(isinstance(f, np.ndarray) for f in filtered)
    assert isinstance(cf.cfcam(A, G), np.ndarray)


def test_dbscan_takes_and_returns_numpy():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(3, 40, 4))
    valid = rng.random((3, 40)) > 0.2
    eps = np.array([0.8, 1.0, 1.2])
    labels = cf.cluster.dbscan(points, eps, 3, valid=valid)
    assert isinstance(labels, np.ndarray) and labels.dtype == np.int64
    ref = cf.cluster.dbscan(torch.from_numpy(points), torch.from_numpy(eps), 3, valid=torch.from_numpy(valid))
    np.testing.assert_array_equal(labels, ref.numpy())


def test_bad_arrays_get_the_tensor_errors():
    with pytest.raises(ValueError, match="activations must be"):
        cf.cfcam_explain(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="points must be"):
        cf.cluster.dbscan(np.zeros((2, 3), dtype=np.int64), 1.0, 2)


@pytest.mark.gpu
@pytest.mark.parametrize("library", ["cupy", "jax"])
def test_cuda_arrays_of_cupy_and_jax(library):
    A, G = _captured(5)
    if library == "cupy":
        cupy = pytest.importorskip("cupy")
        a, g, to_numpy = cupy.asarray(A), cupy.asarray(G), cupy.asnumpy
    else:
        jax = pytest.importorskip("jax")
        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if not gpus:
            pytest.skip("JAX sees no GPU")
        a, g = jax.device_put(A, gpus[0]), jax.device_put(G, gpus[0])
        to_numpy = np.asarray
    got = cf.cfcam_explain(a, g, (10, 10))
    assert type(got.maps).__module__.split(".")[0] in (library, "jaxlib")
    ref = cf.cfcam_explain(torch.from_numpy(A).cuda(), torch.from_numpy(G).cuda(), (10, 10))
    np.testing.assert_array_equal(to_numpy(got.labels), ref.labels.cpu().numpy())
    np.testing.assert_allclose(to_numpy(got.maps), ref.maps.cpu().numpy(), rtol=0, atol=0)
    labels = cf.cluster.dbscan(a.reshape(2, 24, 25), 0.5, 3)
    np.testing.assert_array_equal(to_numpy(labels), cf.cluster.dbscan(
        torch.from_numpy(A).cuda().reshape(2, 24, 25), 0.5, 3).cpu().numpy())
