"""The metric groups an evaluation computes for each method on each batch.

A ``Metric`` names a group (``--metrics``), computes its per-image values from one
method's explanation of a batch (``Explained``), lists its table columns and says where it
applies. Adding a metric is one function and one ``Metric`` line in ``METRICS``
(docs/contributing.md).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from ..cams.base import BaseCAM
from . import faithfulness, sensitivity
from .road import PERCENTILES as ROAD_PERCENTILES
from .road import road
from .sanity import randomizable_layers, randomization_sanity
from .similarity import pearson

Values = dict[str, torch.Tensor]
Column = tuple[str, str, str]  # (key, title, "lower" or "higher" is better)


@dataclass(frozen=True)
class Settings:
    """The knobs of an evaluation: images per batch and per model call inside the metrics
    (and Score-CAM's masked forwards), deletion/insertion ``steps``, the gradient-noise
    ``scales`` and ``draws`` of robustness, ROAD's ``road_percentiles`` and ``road_noise``,
    the number of cascading-randomisation checkpoints reported (``sanity_steps``) and the
    ``seed`` of every noise draw and of the bootstrap."""

    batch_size: int = 32
    steps: int = 100
    scales: tuple[float, ...] = (1.0, 5.0, 10.0)
    draws: int = 3
    road_percentiles: tuple[float, ...] = tuple(ROAD_PERCENTILES)
    road_noise: float = 0.01
    sanity_steps: int = 2
    seed: int = 0


def sanity_checkpoints(count: int, wanted: int) -> list[int]:
    """The steps of a cascading randomisation of ``count`` layers that ``wanted`` checkpoints
    report: evenly spaced from step 0 (the output layer alone) to step ``count - 1`` (the
    whole model), rounded; ``wanted=1``: the whole model only."""
    if wanted == 1:
        return [count - 1]
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)})


@dataclass(frozen=True)
class Context:
    """``Settings`` on one model: its number of randomisable layers and the sanity steps
    reported."""

    settings: Settings
    sanity_layers: int
    sanity_at: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, settings: Settings, model: torch.nn.Module) -> Context:
        count = len(randomizable_layers(model))
        return cls(settings, count, sanity_checkpoints(count, settings.sanity_steps))


class Explained(NamedTuple):
    """One method's explanation of one batch, what every metric starts from."""

    cam: BaseCAM
    x: torch.Tensor  # [B, 3, S, S] preprocessed images
    maps: torch.Tensor  # [B, S, S]
    classes: torch.Tensor  # [B] explained (top) classes
    logits: torch.Tensor  # [B, classes] the model's output on x
    seed: int  # the batch's seed: the settings' seed plus the batch's first image index
    context: Context


class Metric(NamedTuple):
    """A group of per-image metrics: ``name`` (for ``--metrics``), ``compute(explained)``
    gives ``{key: [B] tensor}``; ``columns(context)`` the table's ``(key, title, "lower" or
    "higher" is better)`` for those keys; ``applies(cam)``: False where the metric means
    nothing for that method (its values are then null, "n/a" in the table)."""

    name: str
    compute: Callable[[Explained], Values]
    columns: Callable[[Context], list[Column]]
    applies: Callable[[BaseCAM], bool] = lambda cam: True


CONFIDENCE_COLUMNS: list[Column] = [
    ("average_drop", "Avg drop %", "lower"),
    ("average_drop_threshold", "Avg drop % (>0.5)", "lower"),
    ("increase", "Increase", "higher"),
    ("increase_threshold", "Increase (>0.5)", "higher"),
]
DELETION_COLUMNS: list[Column] = [
    ("deletion_zero", "Deletion (zero)", "lower"),
    ("insertion_zero", "Insertion (zero)", "higher"),
    ("deletion_blur", "Deletion (blur)", "lower"),
    ("insertion_blur", "Insertion (blur)", "higher"),
]
ROAD_COLUMNS: list[Column] = [
    ("road_morf", "ROAD MoRF", "lower"),
    ("road_lerf", "ROAD LeRF", "higher"),
    ("road_combined", "ROAD combined", "higher"),
]
SENSITIVITY_COLUMNS: list[Column] = [
    ("corr_top_bottom", "Corr top/bottom", "lower"),
    ("corr_top_second", "Corr top/2nd", "lower"),
]


def _confidence_change(e: Explained) -> Values:
    values = {}
    for variant, suffix in (("multiply", ""), ("threshold", "_threshold")):
        change = faithfulness.confidence_change(e.cam.model, e.x, e.maps, e.classes, variant=variant,
                                                batch_size=e.context.settings.batch_size)
        values["average_drop" + suffix], values["increase" + suffix] = change.average_drop, change.increase
    return values


def _deletion_insertion(e: Explained) -> Values:
    values = {}
    for baseline in ("zero", "blur"):
        areas = faithfulness.deletion_insertion(e.cam.model, e.x, e.maps, e.classes, steps=e.context.settings.steps,
                                                baseline=baseline, batch_size=e.context.settings.batch_size)
        values[f"deletion_{baseline}"], values[f"insertion_{baseline}"] = areas
    return values


def _road(e: Explained) -> Values:
    """ROAD MoRF and LeRF, each from one ``road`` call seeded with the batch's seed, and the
    combined score ``(LeRF - MoRF) / 2`` per percentile derived from them (road.py)."""
    s = e.context.settings
    morf = road(e.cam.model, e.x, e.maps, e.classes, order="morf", percentiles=s.road_percentiles,
                noise=s.road_noise, seed=e.seed, batch_size=s.batch_size)
    lerf = road(e.cam.model, e.x, e.maps, e.classes, order="lerf", percentiles=s.road_percentiles,
                noise=s.road_noise, seed=e.seed, batch_size=s.batch_size)
    combined = ((lerf.per_percentile - morf.per_percentile) / 2).mean(1)
    return {"road_morf": morf.scores, "road_lerf": lerf.scores, "road_combined": combined}


def _robustness(e: Explained) -> Values:
    s = e.context.settings
    ssims = sensitivity.robustness(e.cam, e.x, e.classes, scales=s.scales, draws=s.draws, seed=s.seed)
    return {f"ssim_{scale:g}": values for scale, values in zip(s.scales, ssims)}


def _pair_correlation(e: Explained, pair: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(correlation, constant_map)`` of each image's maps for two classes: the captured
    gradients of both from one batched backward where the method's maps come from one
    capture (``sensitivity.class_sensitivity``), else two ``explain`` calls (the top map is
    ``e.maps``)."""
    if e.cam.captured_only:
        result = sensitivity.class_sensitivity(e.cam, e.x, pair=pair, batch_size=e.context.settings.batch_size)
        return result.correlation, result.constant_map
    logits = e.logits.flatten(1)
    other = logits.argmin(1) if pair == "top-bottom" else logits.topk(2, dim=1).indices[:, 1]
    maps = e.cam.explain(e.x, other.to(torch.int64)).maps
    return pearson(e.maps, maps)


def _class_sensitivity(e: Explained) -> Values:
    top_bottom, constant = _pair_correlation(e, "top-bottom")
    top_second, _ = _pair_correlation(e, "top-second")
    return {"corr_top_bottom": top_bottom, "constant_map_top_bottom": constant.any(1).float(),
            "corr_top_second": top_second}


def _sanity_columns(context: Context) -> list[Column]:
    count = context.sanity_layers
    cols: list[Column] = []
    for step in context.sanity_at:
        tag = f"{step + 1}_of_{count}"
        cols += [(f"sanity_spearman_{tag}", f"Spearman {step + 1}/{count} random", "lower"),
                 (f"sanity_ssim_{tag}", f"SSIM {step + 1}/{count} random", "lower")]
    return cols


def _sanity(e: Explained) -> Values:
    """Spearman and SSIM of the maps with the maps after re-initialising the model from the
    output, at ``context.sanity_at`` (cascading, seeded with the settings' seed: the same
    random layers for every batch)."""
    result = randomization_sanity(e.cam, e.x, e.classes, order="cascading", seed=e.context.settings.seed,
                                  at=e.context.sanity_at, original_maps=e.maps)
    values = {}
    for row, step in enumerate(result.at):
        tag = f"{step + 1}_of_{len(result.steps)}"
        values[f"sanity_spearman_{tag}"], values[f"sanity_ssim_{tag}"] = result.spearman[row], result.ssim[row]
    return values


def _robustness_columns(context: Context) -> list[Column]:
    return [(f"ssim_{s:g}", f"SSIM noise {s:g}", "higher") for s in context.settings.scales]


METRICS: list[Metric] = [
    Metric("confidence", _confidence_change, lambda context: CONFIDENCE_COLUMNS),
    Metric("deletion", _deletion_insertion, lambda context: DELETION_COLUMNS),
    Metric("road", _road, lambda context: ROAD_COLUMNS),
    Metric("robustness", _robustness, _robustness_columns, lambda cam: cam.needs_gradients and cam.captured_only),
    Metric("sensitivity", _class_sensitivity, lambda context: SENSITIVITY_COLUMNS),
    Metric("sanity", _sanity, _sanity_columns),
]
"""Every metric group an evaluation can compute, in the order of its tables."""
FAITHFULNESS = ("confidence", "deletion", "road")  # the groups of the first table


def select_metrics(text: str) -> list[Metric]:
    """The metric groups a comma-separated list asks for (or ``all``), in ``METRICS`` order;
    ``ValueError`` listing the valid names for an unknown one."""
    if text.strip().lower() == "all":
        return list(METRICS)
    asked = {v.strip().lower() for v in text.split(",") if v.strip()}
    valid = [m.name for m in METRICS]
    unknown = sorted(asked - set(valid))
    if unknown or not asked:
        raise ValueError(f"unknown metric group(s) {unknown or [text]} in --metrics; valid: all, or any of "
                         + ", ".join(valid))
    return [m for m in METRICS if m.name in asked]
