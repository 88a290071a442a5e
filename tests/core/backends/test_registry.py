"""The registry of core backends (``core.backends``): unknown names, why a backend cannot
run here (Triton on the CPU without its interpreter), and what ``"auto"`` and a name resolve
to."""
import pytest
import torch
from helpers import captured, hooks_left, structured, tiny_cnn

import cfcam_fast as cf
from cfcam_fast.core import backends
from cfcam_fast.core.backends import unavailable_reason
from cfcam_fast.kernels._launch import interpreted

interpreter = pytest.mark.skipif(not interpreted(), reason="Triton was not imported under TRITON_INTERPRET=1")


def test_unknown_backend_is_an_error():
    A, G = captured()
    with pytest.raises(ValueError, match="unknown backend 'numba'"):
        cf.cfcam(A, G, backend="numba")
    model = tiny_cnn()
    with pytest.raises(ValueError, match="unknown backend 'numba'"):
        cf.CFCAM(model, [model.features], backend="numba")
    assert hooks_left(model) == {}


def test_triton_on_cpu_without_interpreter_says_what_to_do(monkeypatch):
    launch = pytest.importorskip("cfcam_fast.kernels._launch")
    monkeypatch.setattr(launch, "interpreted", lambda: False)  # as if Triton had compiled mode
    reason = unavailable_reason("triton", torch.device("cpu"))
    assert reason is not None and "TRITON_INTERPRET=1" in reason
    A, G = captured()
    with pytest.raises(RuntimeError, match="backend 'triton' is not available: .*TRITON_INTERPRET=1"):
        cf.cfcam(A, G, backend="triton")
    assert "TRITON_INTERPRET=1" in cf.backend_status()["core:triton"]


def test_triton_on_cpu_with_interpreter_is_available(monkeypatch):
    launch = pytest.importorskip("cfcam_fast.kernels._launch")
    monkeypatch.setattr(launch, "interpreted", lambda: True)
    assert unavailable_reason("triton", torch.device("cpu")) is None


def test_auto_picks_the_torch_backend_on_cpu():
    A = structured(1, 32, 4, 4, seed=1)
    G = torch.randn(1, 32, 4, 4)
    auto = cf.cfcam_explain(A, G, None, backend="auto")
    torch_ = cf.cfcam_explain(A, G, None, backend="torch")
    assert torch.equal(auto.maps, torch_.maps)


@interpreter
def test_registry_resolves_triton_under_the_interpreter():
    assert backends.resolve("triton", torch.device("cpu")).__name__ == "cfcam_fast.core.backends.triton_backend"
