"""``core.exportable.scaling``: the power-of-two rescaling without ``frexp`` or bit views
equals the torch backend's, bit for bit, over every float32 magnitude."""
from __future__ import annotations

import torch

from cfcam_fast.core.backends import torch_backend
from cfcam_fast.core.exportable.scaling import Powers


def test_peak_exponent_equals_frexp_over_every_float32_magnitude():
    powers = Powers()
    mags = torch.cat([torch.logspace(-45, 38, 400, dtype=torch.float64), torch.zeros(1),
                      2.0 ** torch.arange(-149, 128, dtype=torch.float64),
                      torch.nextafter(2.0 ** torch.arange(-148, 128, dtype=torch.float64).float(),
                                      torch.tensor(0.0)).double()]).float()
    mags = mags[torch.isfinite(mags)]
    x = mags[:, None] * torch.tensor([1.0, -0.75, 0.5])[None]
    negative_peak = -mags[:, None] * torch.tensor([1.0, 0.5, 0.25])[None]
    for images in (x, negative_peak, x.reshape(-1, 3, 1, 1)):
        assert torch.equal(powers.peak_exponent(images), torch_backend.peak_exponent(images))


def test_pow2_and_times_pow2_equal_the_backend():
    powers = Powers()
    e = torch.arange(-1100, 1100)
    assert torch.equal(powers.pow2(e), torch_backend.pow2(e))
    x = torch.randn(6, 4, 3, 3) * torch.logspace(-30, 30, 6)[:, None, None, None]
    shift = torch_backend.SCALE_EXPONENT - torch_backend.peak_exponent(x)
    assert torch.equal(powers.times_pow2(x, shift), torch_backend.times_pow2(x, shift))
