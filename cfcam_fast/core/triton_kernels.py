"""Whether the Triton kernels of ``cfcam_fast.kernels`` can run here: on CUDA tensors where
Triton and a device are present, and on any tensor when Triton was imported under
``TRITON_INTERPRET=1`` (the tests)."""
from __future__ import annotations

import torch


def unavailable_reason(device: torch.device | None) -> str | None:
    """Why the Triton kernels (``cfcam_fast.kernels``) cannot run on ``device`` here, or
    ``None``; without a device, whether they can run on CUDA."""
    try:
        from ..kernels._launch import interpreted
    except ImportError:
        return "Triton is not installed: pip install triton"
    # Triton settles at its first import whether it interprets (kernels/_launch.py).
    if device is not None and device.type != "cuda" and not interpreted():
        return (f"the Triton kernels run on CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 "
                "before Triton is first imported to run them on the CPU under the interpreter")
    if (device is None or device.type == "cuda") and not torch.cuda.is_available() and not interpreted():
        return "no CUDA device (and Triton was not imported under TRITON_INTERPRET=1)"
    return None
