"""The picture of an evaluation: a few photos with every method's overlay, then the first
photo explained for its top and its bottom class."""
from __future__ import annotations

from typing import Any

import torch

from ..cams.base import BaseCAM
from ..viz import overlay
from .evaluate import reseed


def sheet_maps(cams: dict[str, BaseCAM], x: torch.Tensor, seed: int) -> dict[str, dict[str, Any]]:
    """Per method: its ``maps`` of the batch ``x`` and, for the first image, the maps of its
    top and its bottom class (``pair_maps``) with those classes (``pair_classes``)."""
    drawn = {}
    for name, cam in cams.items():
        reseed(cam, seed)
        result = cam.explain(x)
        class_idx, logits = result.model_outputs()
        top, bottom = int(class_idx[0]), int(logits[0].flatten().argmin())
        drawn[name] = {"maps": result.maps.cpu(),
                       "pair_maps": [result.maps[0].cpu(), cam.explain(x[:1], [bottom]).maps[0].cpu()],
                       "pair_classes": [top, bottom]}
    return drawn


def sheet(names: list[str], photos: list[Any], drawn: dict[str, dict[str, Any]], class_names: list[str]) -> Any:
    """A matplotlib ``Figure``: each photo with every method's overlay, then photo 0 for its
    top and bottom class (``drawn`` as ``sheet_maps`` returns it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    method_names = list(drawn)
    rows, cols = len(photos) + 2, len(method_names) + 1
    fig = Figure(figsize=(1.9 * cols, 2.0 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (name, photo) in enumerate(zip(names, photos)):
        axes[r, 0].imshow(photo)
        axes[r, 0].set_title(name, fontsize=7)
        for c, method in enumerate(method_names, 1):
            axes[r, c].imshow(overlay(photo, drawn[method]["maps"][r]))
            if r == 0:
                axes[r, c].set_title(method, fontsize=7)
    for k, which in enumerate(("top", "bottom")):
        r = len(photos) + k
        index = drawn[method_names[0]]["pair_classes"][k]
        axes[r, 0].imshow(photos[0])
        axes[r, 0].set_title(f"{names[0]}, {which}:\n{class_names[index][:24]}", fontsize=7)
        for c, method in enumerate(method_names, 1):
            axes[r, c].imshow(overlay(photos[0], drawn[method]["pair_maps"][k]))
    fig.tight_layout()
    return fig
