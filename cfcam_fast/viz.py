"""Drawing a CAM over its image: an RGB array, or a titled PNG (matplotlib's Agg canvas)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ImageLike = Image.Image | np.ndarray | torch.Tensor
MapLike = np.ndarray | torch.Tensor


def _image_array(image: ImageLike) -> np.ndarray:
    """``[H, W, 3]`` uint8 from a PIL image, an ``[H, W(, C)]`` array or a ``[C, H, W]`` tensor.

    Floating-point arrays and tensors must hold values in [0, 1].
    """
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dim() == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
            image = image.permute(1, 2, 0)
        image = image.numpy()
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a PIL image, a NumPy array or a tensor, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image must be [H, W], [H, W, 1|3|4] or [1|3|4, H, W], got shape {image.shape}")
    if image.dtype != np.uint8:
        values = image.astype(np.float64)
        if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
            raise ValueError("a floating-point image must hold finite values in [0, 1] "
                             "(undo the normalisation first), or pass uint8 pixels")
        image = np.round(values * 255.0).astype(np.uint8)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _map_array(cam: MapLike, height: int, width: int) -> np.ndarray:
    """The map as ``[height, width]`` float32 in [0, 1], bilinearly resized."""
    cam = torch.as_tensor(np.asarray(cam) if not isinstance(cam, torch.Tensor) else cam.detach().cpu())
    if cam.dim() != 2:
        raise ValueError(f"cam must be one [H, W] map, got shape {tuple(cam.shape)}")
    cam = cam.to(torch.float32)
    # 1e-6: float32 rounding of a map normalised to [0, 1] by division.
    if not torch.isfinite(cam).all() or cam.min() < -1e-6 or cam.max() > 1.0 + 1e-6:
        raise ValueError("cam must hold finite values in [0, 1]")
    if tuple(cam.shape) != (height, width):
        cam = F.interpolate(cam[None, None], size=(height, width), mode="bilinear",
                            align_corners=False)[0, 0]
    return cam.clamp(0.0, 1.0).numpy()


def overlay(image: ImageLike, cam: MapLike, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """``[H_img, W_img, 3]`` uint8: the image blended with the coloured map.

    ``cam`` is one ``[H, W]`` map in [0, 1], resized (bilinear) to the image;
    ``alpha`` is the map's share of each pixel, ``colormap`` a matplotlib colormap name.
    """
    import matplotlib

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ValueError(f"unknown colormap {colormap!r}; use a matplotlib colormap name such as 'jet'") \
            from None
    pixels = _image_array(image)
    heat = cmap(_map_array(cam, *pixels.shape[:2]))[..., :3] * 255.0
    blended = (1.0 - alpha) * pixels.astype(np.float64) + alpha * heat
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def save_overlay(path: str | Path, image: ImageLike, cam: MapLike, title: str,
                 alpha: float = 0.5, colormap: str = "jet", *, caption: str | None = None,
                 colorbar: bool = False) -> None:
    """Write the overlay of ``cam`` on ``image`` as a PNG at ``path``, titled ``title``.

    ``caption``: a line of text under the image (e.g. method, layer and weighting);
    ``colorbar``: a bar on the right mapping the colours to map values 0 to 1.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    blended = overlay(image, cam, alpha, colormap)
    height, width = blended.shape[:2]
    scale = 6.0 / max(height, width)
    top, bottom = 0.5, 0.4 if caption else 0.0  # inches for the title and the caption
    bar = 0.9 if colorbar else 0.0  # inches for the colour bar and its ticks
    fig_w, fig_h = width * scale + bar, height * scale + top + bottom
    figure = Figure(figsize=(fig_w, fig_h))
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.0, bottom / fig_h, width * scale / fig_w, height * scale / fig_h))
    axes.imshow(blended)
    axes.set_axis_off()
    figure.suptitle(title, y=0.99, va="top")
    if colorbar:
        bar_axes = figure.add_axes((width * scale / fig_w + 0.1 / fig_w, bottom / fig_h,
                                    0.2 / fig_w, height * scale / fig_h))
        figure.colorbar(ScalarMappable(Normalize(0.0, 1.0), colormaps[colormap]), cax=bar_axes)
    if caption:
        figure.text(width * scale / 2 / fig_w, bottom / 2 / fig_h, caption, ha="center", va="center",
                    fontsize=9, wrap=True)
    figure.savefig(str(path), format="png", dpi=100)
