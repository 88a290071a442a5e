"""The argument checks every layer shares (``core.checks``), met through ``cf.cfcam`` and
``cf.cfcam_explain``: the layout and values of the captured tensors (non-finite values and
float64 values outside float32's range name the batch index) and ``output_size``."""
import pytest
import torch
from helpers import captured, captured_pair

import cfcam_fast as cf


@pytest.mark.parametrize("size", [(0, 5), (5,), (5, 5, 5), (-1, 4), (2.5, 3), (None, 3), "ab", 7, (True, 3)])
def test_invalid_output_size(size):
    A, G = captured()
    with pytest.raises(ValueError, match="output_size"):
        cf.cfcam(A, G, output_size=size, backend="reference")


@pytest.mark.parametrize("change,message", [
    (lambda A, G: (A[0], G[0]), r"activations must be \[B, C, H, W\]"),
    (lambda A, G: (A, G[:, :5]), "same shape"),
    (lambda A, G: (A.long(), G), "floating-point"),
    (lambda A, G: (A.tolist(), G), "torch.Tensor"),
    (lambda A, G: (A[:, :0], G[:, :0]), "at least one image and one channel"),
])
def test_invalid_captured_tensors(change, message):
    A, G = change(*captured())
    with pytest.raises(ValueError, match=message):
        cf.cfcam(A, G, backend="reference")


@pytest.mark.parametrize("which", ["activations", "gradients"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_captured_tensors_name_the_batch_index(which, bad):
    A, G = captured(B=3)
    (A if which == "activations" else G)[2, 1, 0, 0] = bad
    with pytest.raises(ValueError, match=rf"{which} contain non-finite .* batch index 2$"):
        cf.cfcam(A, G, backend="reference")


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("name", ["activations", "gradients"])
@pytest.mark.parametrize("factor", [1e42, 1e-50, 1e-40])
def test_float64_outside_float32_names_the_batch_index(backend, name, factor):
    A, G = (t.double() for t in captured_pair())
    scale = torch.tensor([1.0, factor, 1.0], dtype=torch.float64)[:, None, None, None]
    A, G = (A * scale, G) if name == "activations" else (A, G * scale)
    with pytest.raises(ValueError, match=rf"{name} overflow or underflow float32, .* at batch index 1: "):
        cf.cfcam_explain(A, G, (12, 12), backend=backend)
