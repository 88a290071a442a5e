"""What the tests of exported frames share (tests/core/test_exportable_*.py,
tests/cams/test_export_*.py, tests/cli/test_export_cli.py): a probe model whose input is
the target layer's activations, inputs that reach every branch of the exported core, the
map tolerance, and the comparisons with ``RealtimeCFCAM`` and the reference.

The tolerances are ``cfcam_fast.cams.export.tolerance``'s (docs/export.md says why).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from helpers import point_cloud
from torch import nn

import cfcam_fast as cf
from cfcam_fast.cams.export.tolerance import EPS_RTOL, layer_activations, map_tolerance

CONFIGS = [cf.CFCAMConfig(filter=f, weighting=w) for f in ("gaussian", "official")
           for w in ("softmax", "standardized", "linear")]

# ----------------------------------------------------------------------------- the probe

PROBE_C, PROBE_SIDE, PROBE_CLASSES = 48, 3, 5
# 48 channels: 36 slots below the importance split (max_remaining), 630 pairs; the doubled
# list's 25th percentile reads rank 157 twice, so eps is one pair's distance exactly.
PROBE_LOW = 36
PROBE_KINDS = ("random", "dead", "tie", "tiny", "huge", "blobs", "chain", "grid", "duplicates", "relu")


class Probe(nn.Module):
    """Its input is the target layer's output (``act``), then global average pooling and a
    linear head: a model whose activations a test chooses exactly."""

    def __init__(self, channels: int = PROBE_C, classes: int = PROBE_CLASSES, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.act = nn.Identity()
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(x).mean((2, 3)))


def probe_image(kind: str, seed: int) -> torch.Tensor:
    """``[48, 3, 3]`` activations of one kind (``PROBE_KINDS``): 36 low-norm channels (a
    point cloud in their 9 coordinates) and 12 large ones, so that exactly the 36 fall below
    the split, except for ``"tie"`` (two equal channels at the split: 35 fall below, and the
    exported core takes its exact fallback). ``"dead"``: 20 of the 36 are zero (190 of 630
    pairs at distance 0, so eps sits at its floor). ``"tiny"``/``"huge"``: a random image
    times ``2^-140`` (float32 subnormals) or ``2^100``."""
    rng = np.random.default_rng(seed)
    d = PROBE_SIDE * PROBE_SIDE
    if kind in ("random", "dead", "tie", "tiny", "huge"):
        low = rng.normal(0, 1, (PROBE_LOW, d))
    else:
        cloud = point_cloud(kind, PROBE_LOW, rng)
        low = np.zeros((PROBE_LOW, d))
        low[:, : min(d, cloud.shape[1])] = cloud[:, :d]
        low /= max(1.0, float(np.abs(low).max()))
    high = rng.normal(0, 1, (PROBE_C - PROBE_LOW, d)) + 50.0
    if kind == "dead":
        low[:20] = 0.0
    image = np.concatenate([low, high])
    if kind == "tie":  # sorted positions 35 and 36 (the percentile reads 35.25) hold equal channels
        image[35] = image[36] = np.full(d, 10.0)
    perm = rng.permutation(PROBE_C)
    x = torch.from_numpy(image[perm]).float().reshape(PROBE_C, PROBE_SIDE, PROBE_SIDE)
    scale = {"tiny": 2.0 ** -140, "huge": 2.0 ** 100}.get(kind, 1.0)
    return x * scale


def probe_batch(kinds: Sequence[str], seed: int = 0) -> torch.Tensor:
    """``[len(kinds), 48, 3, 3]``: one ``probe_image`` per kind."""
    return torch.stack([probe_image(kind, seed + i) for i, kind in enumerate(kinds)])


def probe_realtime(config: cf.CFCAMConfig | None = None, targets: Any = None, batch: int = 2,
                   method: str = "cfcam", device: str = "cpu") -> cf.RealtimeCFCAM:
    """``RealtimeCFCAM`` of a ``Probe`` at its ``act`` for ``[batch, 48, 3, 3]`` inputs on
    ``device``."""
    model = Probe().eval().to(device)
    return cf.RealtimeCFCAM(model, model.act, probe_batch(["random"] * batch, seed=99).to(device), config,
                            targets, method=method)


# ----------------------------------------------------------------------------- comparisons


def assert_maps(maps: torch.Tensor, ref_maps: torch.Tensor, A: torch.Tensor, alpha: torch.Tensor) -> float:
    """``maps`` within ``map_tolerance`` of ``ref_maps`` (NaN where the reference is NaN);
    returns the largest error."""
    maps, ref_maps = torch.as_tensor(maps), torch.as_tensor(ref_maps)
    assert maps.dtype == torch.float32 and maps.shape == ref_maps.shape
    nan = torch.isnan(ref_maps).flatten(1).any(1)
    assert torch.equal(torch.isnan(maps).flatten(1).all(1), nan), "NaN maps differ"
    ok = ~nan
    if not bool(ok.any()):
        return 0.0
    tol = map_tolerance(A[ok], alpha[ok], ref_maps.shape[-2:])
    err = (maps[ok] - ref_maps[ok]).abs().flatten(1).amax(1)
    assert bool((err <= tol).all()), f"map error {err.tolist()} above tolerance {tol.tolist()}"
    assert float(maps[ok].min()) >= 0.0 and float(maps[ok].max()) <= 1.0
    return float(err.max())


def check_against_realtime(rt: cf.RealtimeCFCAM, x: torch.Tensor, outs: dict, *, eps_exact: bool) -> cf.CFCAMResult:
    """One frame's outputs (``logits``, ``class_idx``, ``maps``, and ``labels``/``eps`` if
    present; on the CPU) against ``rt.explain(x)`` on ``rt``'s device: classes and labels
    identical, eps identical or within ``EPS_RTOL``, maps within ``map_tolerance``."""
    x = x.to(rt.device)
    ref = rt.explain(x)
    class_idx = torch.as_tensor(outs["class_idx"])
    assert class_idx.dtype == torch.int64 and torch.equal(class_idx, ref.class_idx.cpu()), "class_idx differs"
    torch.testing.assert_close(torch.as_tensor(outs["logits"]), ref.logits.cpu(), rtol=1e-4, atol=1e-4)
    assert_maps(outs["maps"], ref.maps.cpu(), layer_activations(rt.model, rt.layer, x).cpu(), ref.weights.cpu())
    if "labels" in outs:
        assert torch.equal(torch.as_tensor(outs["labels"]), ref.labels.cpu()), "DBSCAN labels differ"
    if "eps" in outs:
        eps, ref_eps = torch.as_tensor(outs["eps"]), ref.eps.cpu()
        if eps_exact:
            assert nan_safe_equal(eps, ref_eps), f"eps {eps.tolist()} != {ref_eps.tolist()}"
        else:
            torch.testing.assert_close(eps, ref_eps, rtol=EPS_RTOL, atol=0, equal_nan=True)
    return ref


def check_core(config: cf.CFCAMConfig, outs: dict, output_size: Sequence[int]) -> None:
    """The CF-CAM stage alone: the reference backend (SciPy, NumPy, scikit-learn) on the
    artefact's own activations and gradients gives its labels and eps bit for bit, and its
    maps within tolerance."""
    A, G = torch.as_tensor(outs["activations"]), torch.as_tensor(outs["gradients"])
    ref = cf.cfcam_explain(A, G, output_size=tuple(output_size), config=config, backend="reference")
    assert torch.equal(torch.as_tensor(outs["labels"]), ref.labels), "labels differ from the reference's"
    assert torch.equal(torch.as_tensor(outs["eps"]), ref.eps), "eps differs from the reference's"
    assert_maps(outs["maps"], ref.maps, A, ref.weights)


def nan_safe_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``torch.equal`` with NaN equal to NaN."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


def exact_distances(points: torch.Tensor) -> np.ndarray:
    """``[n, n]`` SciPy ``pdist`` distances of ``[n, d]`` points (the reference's)."""
    from scipy.spatial.distance import pdist, squareform

    return squareform(pdist(points.double().numpy()))


def sklearn_labels(dist: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """scikit-learn's DBSCAN labels on precomputed distances."""
    from sklearn.cluster import DBSCAN

    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(dist).labels_


def check_pair_at_eps(activations: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor) -> None:
    """In each image, some pair of clustered channels is exactly eps apart (SciPy's
    distance), eps is above its floor, and scikit-learn on the same distances gives the
    labels: the boundary pair counts as neighbours, as the reference decides."""
    for b in range(activations.shape[0]):
        rest = (labels[b] != -2).nonzero().flatten()
        dist = exact_distances(activations[b].flatten(1)[rest])
        e = float(eps[b])
        assert e > 1e-5 and bool((dist == e).any()), "no pair exactly at eps"
        ms = max(2, int(0.05 * len(rest)))
        assert sklearn_labels(dist, e, ms).tolist() == labels[b][rest].tolist()


# ----------------------------------------------------------------------------- real models and artefacts

EXTRAS = ("labels", "eps", "activations", "gradients", "certified")
# Frames of two probe images each, together every kind (``PROBE_KINDS``).
FRAMES = [["random", "dead"], ["blobs", "relu"], ["tiny", "huge"], ["tie", "chain"], ["grid", "duplicates"]]


def frame_outputs(run: dict, i: int) -> dict[str, torch.Tensor]:
    """Frame ``i``'s outputs of ``cams.export.isolated.run_isolated``, by name."""
    return {name: values[i] for name, values in run["outputs"].items()}


_CACHE: dict = {}


def cached(key: Any, build: Callable[[], Any]) -> Any:
    """``build()`` once per test session for ``key`` (exports take seconds to minutes)."""
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def real_model(name: str) -> tuple[nn.Module, nn.Module]:
    """A model and its target layer: torchvision ResNet-18 (``layer4``) and MobileNetV2
    (``features``) random-initialised (seed 0), timm EfficientNet-Lite0 with its real
    weights (``bn2``)."""
    from helpers import efficientnet_lite0, torchvision_model

    if name == "efficientnet_lite0":
        model, layer = efficientnet_lite0()
        return model, model.get_submodule(layer)
    model = torchvision_model(name)
    return model, (model.layer4 if name == "resnet18" else model.features)


def fresh_inputs(count: int, seed: int, shape: Sequence[int] = (1, 3, 224, 224)) -> list[torch.Tensor]:
    """``count`` seeded random inputs, none equal to the example an export traced."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(tuple(shape), generator=gen) for _ in range(count)]


def bundled_inputs() -> list[torch.Tensor]:
    """The bundled photos, preprocessed, as ``[1, 3, 224, 224]`` inputs."""
    from cfcam_fast.data.images import preprocess
    from cfcam_fast.data.photos import bundled_photos

    batch = preprocess([image for _, image in bundled_photos()])
    return [image[None] for image in batch]


def exported(tmp_path_factory: Any, key: tuple, rt: cf.RealtimeCFCAM, suffix: str, **kwargs: Any) -> Any:
    """``rt.export`` into a session-wide temporary folder, once per ``key``."""
    def build() -> Any:
        folder = Path(tmp_path_factory.mktemp("export"))
        return rt.export(folder / f"frame{suffix}", **kwargs)
    return cached(("export", suffix, *key), build)


def check_probe_frames(rt: cf.RealtimeCFCAM, inputs: Sequence[torch.Tensor], run: dict,
                       rt_eps_exact: bool = True) -> None:
    """The probe's artefact on ``FRAMES`` (``inputs``, in order): the input is the
    activations, so eps is compared bit for bit, against the reference and against
    ``RealtimeCFCAM`` (within ``EPS_RTOL`` with ``rt_eps_exact=False``: on CUDA it decides
    on a float64 matrix product, docs/exactness.md); the certified stage decides every
    frame but those with a tie at the split (the tie image) or at eps (the integer grid);
    dead channels put eps at its floor; every full image has a pair exactly at eps."""
    for i, (kinds, x) in enumerate(zip(FRAMES, inputs)):
        outs = frame_outputs(run, i)
        assert torch.equal(outs["activations"], x)
        check_against_realtime(rt, x, outs, eps_exact=rt_eps_exact)
        check_core(rt.config, outs, rt.shape[-2:])
        assert bool(outs["certified"]) == (kinds[0] not in ("tie", "grid")), kinds
    dead = frame_outputs(run, 0)
    assert dead["eps"][1].item() == 1e-5  # the floor, a float64 constant that survived export
    assert int((dead["labels"][1] == 0).sum()) >= 20  # the dead channels form one cluster
    for i in (0, 1, 2):  # every image with all 36 slots used: eps is one pair's distance
        outs = frame_outputs(run, i)
        keep = outs["eps"] > 1e-5
        check_pair_at_eps(outs["activations"][keep], outs["labels"][keep], outs["eps"][keep])
    assert int((frame_outputs(run, 3)["labels"][0] != -2).sum()) == 35  # one slot short: the fallback ran


def check_real_model(tmp_path_factory: Any, name: str, suffix: str, config: cf.CFCAMConfig, targets: Any,
                     seed: int) -> None:
    """A real model's CF-CAM artefact on fresh random inputs and the bundled photos, run in a
    fresh interpreter: against ``RealtimeCFCAM`` (``eps`` within ``EPS_RTOL``) and, on its own
    activations, the reference (bit for bit)."""
    from cfcam_fast.cams.export.isolated import run_isolated

    model, layer = real_model(name)
    rt = cf.RealtimeCFCAM(model, layer, fresh_inputs(1, seed=1234)[0], config, targets)
    info = exported(tmp_path_factory, (name,), rt, suffix, extra_outputs=EXTRAS)
    inputs = fresh_inputs(2, seed=seed) + bundled_inputs()
    run = run_isolated(info.path, inputs)
    assert run["metadata"]["cfcam.filter"] == config.filter and run["metadata"]["cfcam.weighting"] == config.weighting
    for i, x in enumerate(inputs):
        outs = frame_outputs(run, i)
        check_against_realtime(rt, x, outs, eps_exact=False)
        check_core(config, outs, rt.shape[-2:])
        if targets is not None:
            assert outs["class_idx"].tolist() == targets


def check_real_gradcam(tmp_path_factory: Any, name: str, suffix: str, seed: int) -> None:
    """A real model's Grad-CAM artefact against ``cf.GradCAM`` (backward pass, float64)."""
    from cfcam_fast.cams.export.isolated import run_isolated

    model, layer = real_model(name)
    rt = cf.RealtimeCFCAM(model, layer, fresh_inputs(1, seed=1234)[0], method="gradcam")
    info = exported(tmp_path_factory, (name, "gradcam"), rt, suffix, extra_outputs=("activations",))
    inputs = fresh_inputs(2, seed=seed) + bundled_inputs()[:2]
    run = run_isolated(info.path, inputs)
    assert run["metadata"]["cfcam.method"] == "gradcam"
    gradcam = cf.GradCAM(model, [layer])
    for i, x in enumerate(inputs):
        outs = frame_outputs(run, i)
        ref = gradcam.explain(x)
        assert torch.equal(outs["class_idx"], ref.class_idx)
        assert_maps(outs["maps"], ref.maps, outs["activations"], ref.weights)
