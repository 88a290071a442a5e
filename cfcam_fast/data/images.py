"""Image files as a model takes them: read as a photo viewer shows them, then resized and
normalised with ImageNet's statistics."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

from ..cams.imagenet import normalise


def preprocess(images: Sequence[Image.Image], size: int = 224) -> torch.Tensor:
    """``[B, 3, size, size]`` float32, each image resized to ``size x size`` (bilinear, no
    crop, so a map covers the whole photo) and normalised with the ImageNet mean and std."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    batch = []
    for image in images:
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        batch.append(normalise(pixels))
    if not batch:
        raise ValueError("preprocess needs at least one image")
    return torch.stack(batch)


ALPHA_BACKGROUND = (255, 255, 255)  # what transparent pixels are composited on: white


def load_image(path: str | Path | BinaryIO) -> Image.Image:
    """The image at ``path`` as RGB, as a photo viewer shows it: EXIF orientation applied,
    transparency composited on ``ALPHA_BACKGROUND`` (white), 16-bit greyscale scaled to 8 bits;
    palette, greyscale and CMYK images converted. An unreadable file is
    ``ValueError("cannot read image ...")``."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
                background = Image.new("RGBA", image.size, (*ALPHA_BACKGROUND, 255))
                return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
            if image.mode.startswith("I"):  # 16-bit (or wider) integer greyscale
                pixels = np.asarray(image).astype(np.float64) / 257.0
                return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).convert("RGB")
            return image.convert("RGB")
    except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, ... on broken files
        raise ValueError(f"cannot read image {path}: {exc}") from exc
