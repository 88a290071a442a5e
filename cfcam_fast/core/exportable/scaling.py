"""The torch backend's exact power-of-two rescaling, in operators every runtime has.

``core.backends.torch_backend`` scales each image so that no float32 product underflows or
overflows (``SCALE_EXPONENT``), reading exponents with ``frexp`` and building ``2^e`` from
bits. Neither exists in ONNX, so here:

- ``peak_exponent``: for a finite float32 peak ``p > 0``, ``e - 1 = max{j : 2^j <= p}``,
  and counting the ``2^j <= p`` over ``j = -149 .. 127`` (every power of two a float32
  reaches) gives it exactly; 0 for an image of zeros, as ``frexp`` gives;
- ``pow2``: ``2^e`` read from a table of exact float64 powers of two (Python's ``2.0 ** e``
  is exact for ``-1022 <= e <= 1023``), after the same clamp.

Both equal the torch backend's helpers bit for bit (tests/core/test_exportable_scaling.py), so the
exportable core computes on the very float32 values ``RealtimeCFCAM`` computes on.
"""
from __future__ import annotations

import torch


def pow2_table() -> torch.Tensor:
    """``[2046]`` float64: ``2^e`` for ``e = -1022 .. 1023``."""
    return torch.tensor([2.0 ** e for e in range(-1022, 1024)], dtype=torch.float64)


def float32_powers() -> torch.Tensor:
    """``[277]`` float64: ``2^j`` for ``j = -149 .. 127``."""
    return torch.tensor([2.0 ** j for j in range(-149, 128)], dtype=torch.float64)


class Powers(torch.nn.Module):
    """The two tables as (non-persistent) buffers, so that they follow the module's device
    and an exported program holds them once."""

    table: torch.Tensor
    float32: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", pow2_table(), persistent=False)
        self.register_buffer("float32", float32_powers(), persistent=False)

    def pow2(self, e: torch.Tensor) -> torch.Tensor:
        """``torch_backend.pow2``: ``2.0 ** e`` in float64, exactly, ``e`` clamped to
        ``[-1022, 1023]``."""
        idx = (e.to(torch.int64).clamp(-1022, 1023) + 1022).reshape(-1)
        return self.table.index_select(0, idx).reshape(e.shape)

    def peak_exponent(self, x: torch.Tensor) -> torch.Tensor:
        """``torch_backend.peak_exponent``: per image of ``x`` ``[B, ...]`` (float32), the
        int64 ``e`` with its largest magnitude in ``[2^(e-1), 2^e)``, 0 for zeros."""
        flat = x.flatten(1)
        peak = torch.maximum(flat.amax(1), -flat.amin(1)).to(torch.float64)
        e = (self.float32[None, :] <= peak[:, None]).to(torch.int64).sum(1) - 149
        return torch.where(peak == 0, torch.zeros_like(e), e)

    def times_pow2(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """``torch_backend.times_pow2``: float32 ``x[b] * 2^e[b]``, exact wherever the
        result is a normal float32."""
        return x * self.pow2(e).float().view((-1,) + (1,) * (x.dim() - 1))
