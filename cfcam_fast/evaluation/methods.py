"""The CAM methods an evaluation compares: one registry line per method.

``METHODS`` maps a display name to a ``Method``: a CAM class with the keyword arguments
that make it that method (CF-CAM's filter and weighting). A run builds each on its model
and target layer, passing the settings the class declares in ``run_options`` (CF-CAM's
``backend``, the ``batch_size`` of the methods that run the model in chunks). Adding a
method is one class in ``cfcam_fast.cams`` and one line here (docs/contributing.md).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..cams.base import BaseCAM
from ..cams.cfcam import CFCAM
from ..cams.eigencam import EigenCAM
from ..cams.gradcam import GradCAM, GradCAMPlusPlus
from ..cams.normgrad import NormGrad
from ..cams.scorecam import ScoreCAM
from ..cams.smooth_gradcam import SmoothGradCAMPlusPlus
from ..core.config import FILTERS, WEIGHTINGS, CFCAMConfig


@dataclass(frozen=True)
class Method:
    """A CAM class and the keyword arguments that make it one method."""

    cam: type[BaseCAM]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self, model: nn.Module, layer: nn.Module, reshape_transform: Callable | None = None,
              **run: Any) -> BaseCAM:
        """The method on ``model`` at ``layer``; of the ``run`` settings (``backend``,
        ``batch_size``), those the class declares in ``run_options``."""
        options = {key: run[key] for key in self.cam.run_options if key in run}
        return self.cam(model, [layer], reshape_transform, **self.kwargs, **options)


METHODS: dict[str, Method] = {
    **{f"CF-CAM {f}/{w}": Method(CFCAM, {"config": CFCAMConfig(filter=f, weighting=w)})
       for f in FILTERS for w in WEIGHTINGS},
    "Grad-CAM": Method(GradCAM),
    "Grad-CAM++": Method(GradCAMPlusPlus),
    "Eigen-CAM": Method(EigenCAM),
    "Smooth Grad-CAM++": Method(SmoothGradCAMPlusPlus),
    "NormGrad": Method(NormGrad),
    "Score-CAM": Method(ScoreCAM),
}
"""Every method an evaluation can compare, by display name, in the order of its tables."""


def short_key(name: str) -> str:
    """A method's short key for ``--methods``: its display name in lower case, spaces and
    slashes as dashes (``CF-CAM gaussian/softmax`` -> ``cf-cam-gaussian-softmax``)."""
    return name.lower().replace(" ", "-").replace("/", "-")


def select_methods(text: str) -> list[str]:
    """The display names a comma-separated list asks for (display names or short keys, or
    ``all``), in ``METHODS`` order; ``ValueError`` listing the valid names for an unknown one."""
    if text.strip().lower() == "all":
        return list(METHODS)
    lookup = {**{short_key(n): n for n in METHODS}, **{n.lower(): n for n in METHODS}}
    asked = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in asked if v.lower() not in lookup]
    if unknown or not asked:
        raise ValueError(f"unknown method(s) {unknown or [text]} in --methods; valid: all, or any of "
                         + ", ".join(f"{short_key(n)} ({n!r})" for n in METHODS))
    chosen = {lookup[v.lower()] for v in asked}
    return [n for n in METHODS if n in chosen]


def build_methods(model: nn.Module, layer: nn.Module, names: list[str] | None = None,
                  reshape_transform: Callable | None = None, **run: Any) -> dict[str, BaseCAM]:
    """The registered methods ``names`` (default all of ``METHODS``) built on ``model`` and
    ``layer``, by display name; ``run``: the settings ``Method.build`` passes on."""
    return {name: METHODS[name].build(model, layer, reshape_transform, **run)
            for name in (list(METHODS) if names is None else names)}
