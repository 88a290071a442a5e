"""JPEG files decoded on a CUDA device, in batches (nvJPEG, through ``torchvision.io``), then
oriented, resized and normalised there as ``images.load_image`` and ``images.preprocess``
do on the CPU.

The CPU path resizes with Pillow; here ``interpolate(mode="bilinear", antialias=True)``
resizes and the result is rounded to 8 bits, as Pillow rounds: the two agree to about one
grey level (docs/cli.md). nvJPEG applies no EXIF orientation, so it is read from the
file's header on the CPU and applied to the decoded tensor.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..cams.imagenet import normalise

JPEG_MAGIC = b"\xff\xd8\xff"
EXIF_ORIENTATION = 0x0112


def is_jpeg(head: bytes) -> bool:
    """Whether a file starting with ``head`` is a JPEG (its start-of-image marker)."""
    return head[:3] == JPEG_MAGIC


def orientation(data: bytes) -> int:
    """The EXIF orientation (1 to 8; 1 when absent or unreadable) of a JPEG's bytes, read from
    its header alone."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a header Pillow cannot read: the decoder will say what is wrong
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def orient(image: torch.Tensor, code: int) -> torch.Tensor:
    """``[C, H, W]`` ``image`` turned as EXIF orientation ``code`` asks (``ImageOps.exif_transpose``)."""
    if code == 2:
        return image.flip(-1)
    if code == 3:
        return image.flip(-2, -1)
    if code == 4:
        return image.flip(-2)
    if code == 5:
        return image.transpose(-2, -1)
    if code == 6:
        return torch.rot90(image, -1, dims=(-2, -1))
    if code == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if code == 8:
        return torch.rot90(image, 1, dims=(-2, -1))
    return image


def decode(encoded: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor | str]:
    """Each JPEG (a 1-D uint8 CPU tensor of its bytes) as an oriented ``[3, H, W]`` uint8 RGB
    tensor on ``device``, or the decoder's reason it could not. One batched call; where it
    refuses the batch, one call per image."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not encoded:
        return []
    results: list[torch.Tensor | str]
    try:
        results = list(decode_jpeg(list(encoded), mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        results = []
        for data in encoded:
            try:
                results.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError as exc:
                results.append(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return [r if isinstance(r, str) else orient(r, orientation(data.numpy().tobytes()))
            for r, data in zip(results, encoded)]


def to_pixels(image: torch.Tensor, size: int) -> torch.Tensor:
    """A ``[3, H, W]`` uint8 image as ``[3, size, size]`` float32 model input: resized
    (bilinear, antialiased, no crop), rounded to 8 bits, scaled to ``[0, 1]`` and normalised
    with ImageNet's statistics."""
    x = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return normalise(x.round_().clamp_(0, 255)[0] / 255.0)
