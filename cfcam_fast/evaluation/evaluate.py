"""Evaluate CAM methods on images, from Python: ``evaluate(model, layer, images, ...)``.

An ``Evaluator`` holds the methods built on one model and layer, the chosen metric groups
and the ``Settings``; ``Evaluator.batch`` explains one batch with every method and computes
every metric, and ``evaluate`` runs it over a tensor of images in batches and summarises
(``summary.summarize``). The ``cfcam-fast evaluate`` command runs the same ``Evaluator``
over files and datasets, in one process or several.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from ..cams.base import BaseCAM
from ..core.timing import timed
from .groups import Context, Explained, Metric, Settings, select_metrics
from .methods import build_methods, select_methods
from .summary import summarize, tables


def reseed(cam: BaseCAM, seed: int) -> None:
    """A method that draws input noise (``noisy``) gets a fresh generator seeded with
    ``seed``, so its draws depend on the batch alone, not on the process or the order."""
    if cam.noisy:
        cam.generator = torch.Generator().manual_seed(seed)


@dataclass
class BatchValues:
    """What ``Evaluator.batch`` returns: the explained ``classes`` ``[B]`` (of the first
    method), per method and metric key one value per image (``None`` where the metric does
    not apply) and per method the milliseconds per image its explanation took."""

    classes: list[int]
    values: dict[str, dict[str, list[float | None]]]
    milliseconds: dict[str, float]

    def record(self, row: int) -> dict[str, Any]:
        """Image ``row``'s ``class``, ``metrics`` and ``timing``."""
        return {"class": self.classes[row],
                "metrics": {m: {k: v[row] for k, v in per.items()} for m, per in self.values.items()},
                "timing": {"milliseconds_per_image": {m: round(ms, 3) for m, ms in self.milliseconds.items()}}}


@dataclass
class Evaluator:
    """The methods ``cams`` (by display name) on one model, the metric groups ``chosen``
    and the ``context`` they run in. A method explains a batch's first image once, untimed,
    before its first timed call (one-time set-up costs stay out of its time)."""

    cams: dict[str, BaseCAM]
    chosen: list[Metric]
    context: Context
    warmed: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, model: nn.Module, layer: nn.Module, methods: Sequence[str] | str = "all",
              metrics: Sequence[str] | str = "all", settings: Settings | None = None, *, backend: str = "auto",
              reshape_transform: Callable | None = None) -> Evaluator:
        """The registered ``methods`` and metric groups ``metrics`` (names, a comma-separated
        list or ``"all"``) on ``model`` at ``layer``."""
        settings = settings or Settings()
        names = select_methods(methods if isinstance(methods, str) else ",".join(methods))
        chosen = select_metrics(metrics if isinstance(metrics, str) else ",".join(metrics))
        cams = build_methods(model, layer, names, reshape_transform, backend=backend,
                             batch_size=settings.batch_size)
        return cls(cams, chosen, Context.of(settings, model))

    def batch(self, x: torch.Tensor, seed: int) -> BatchValues:
        """Every method's explanation of ``x`` and every chosen metric of it; ``seed`` is
        the batch's (the settings' seed plus its first image's index)."""
        values: dict[str, dict[str, list[float | None]]] = {}
        milliseconds: dict[str, float] = {}
        classes: list[int] | None = None
        for name, cam in self.cams.items():
            if name not in self.warmed:
                cam.explain(x[:1])
                self.warmed.add(name)
            reseed(cam, seed)
            result, batch_ms = timed(partial(cam.explain, x), x.device)
            milliseconds[name] = batch_ms / len(x)
            class_idx, logits = result.model_outputs()
            if classes is None:
                classes = [int(c) for c in class_idx]
            explained = Explained(cam, x, result.maps, class_idx, logits, seed, self.context)
            values[name] = {}
            for metric in self.chosen:
                if not metric.applies(cam):
                    values[name].update({key: [None] * len(x) for key, _, _ in metric.columns(self.context)})
                    continue
                for key, tensor in metric.compute(explained).items():
                    values[name][key] = [float(v) for v in tensor.detach().double().cpu()]
        return BatchValues(classes or [], values, milliseconds)

    def warm_up(self, shape: tuple[int, ...], device: torch.device) -> None:
        """Pay the one-time costs (kernel compilation, autotuning, graph capture) before the
        first timed batch: every method explains a random batch of ``shape`` twice."""
        x = torch.randn(shape, device=device, generator=torch.Generator(device).manual_seed(0))
        for name, cam in self.cams.items():
            for _ in range(2):
                cam.explain(x)
            self.warmed.add(name)

    def summarize(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Per method and metric the mean over ``records`` and its bootstrap interval."""
        return summarize(records, list(self.cams), self.context.settings.seed)

    def tables(self, summary: dict[str, Any]) -> str:
        """The markdown tables of ``summary``."""
        return tables(summary, self.context, self.chosen)


@dataclass
class Evaluation:
    """``evaluate``'s result: one record per image (``index``, ``class``, ``metrics`` per
    method and key, ``timing``), the ``summary`` per method and metric (mean, 95% bootstrap
    interval, count; ``summary.summarize``) and its markdown ``table``."""

    records: list[dict[str, Any]]
    summary: dict[str, Any]
    table: str


def evaluate(model: nn.Module, layer: nn.Module, images: torch.Tensor, methods: Sequence[str] | str = "all",
             metrics: Sequence[str] | str = "all", settings: Settings | None = None, *, backend: str = "auto",
             reshape_transform: Callable | None = None) -> Evaluation:
    """Evaluate the registered ``methods`` (``evaluation.methods.METHODS``: display names or
    short keys, or ``"all"``) with the metric groups ``metrics`` (``groups.METRICS``) on
    ``images`` ``[N, 3, H, W]`` (normalised as the model expects), in batches of
    ``settings.batch_size`` on the images' device. Each method explains each image's top
    class. Returns the per-image records, the summary with 95% bootstrap intervals and the
    markdown table; what ``cfcam-fast evaluate`` writes, without the files."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a [N, 3, H, W] tensor, got {getattr(images, 'shape', type(images))}")
    evaluator = Evaluator.build(model, layer, methods, metrics, settings, backend=backend,
                                reshape_transform=reshape_transform)
    size = evaluator.context.settings.batch_size
    records = []
    for start in range(0, images.shape[0], size):
        got = evaluator.batch(images[start:start + size], evaluator.context.settings.seed + start)
        records += [{"index": start + row, **got.record(row)} for row in range(len(got.classes))]
    summary = evaluator.summarize(records)
    return Evaluation(records, summary, evaluator.tables(summary))


__all__ = ["BatchValues", "Evaluation", "Evaluator", "evaluate", "reseed"]
