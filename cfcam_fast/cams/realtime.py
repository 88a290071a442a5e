"""Real-time CF-CAM: one fixed input shape, buffers made once, no host wait per frame on CUDA.

``RealtimeCFCAM`` is built for the shape, dtype and device of an example input. Each frame
runs the forward pass, the gradient at the target layer and the CF-CAM core with every
shape fixed at construction (``core.backends.torch_backend.FixedShapes``) and one ``Plan`` resolved
there (``rt.plan``): at most ``max_remaining(C, q)``
channels can fall below the importance split, so the pairwise stage always works on that
many points, and the compiled DBSCAN ops (``core.native``: exact selection and
union-find labelling on each image's first ``count`` points) read the true counts from
the device. On CUDA the whole frame is captured once into a CUDA graph and replayed.

Where the model ends in global average pooling and a linear layer, the gradient at the
last block is ``W[k] / (H W)`` (``cams.head``): proven once against autograd at
construction, the frame then runs as a forward pass under ``torch.inference_mode()``, and
``RealtimeCFCAM.export`` writes it as an ONNX model or an AOTInductor package
(``cams.export``). ``method="gradcam"`` gives the Grad-CAM frame (CAM, for these heads).
"""
from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from ..core import backends, cluster
from ..core.backends import torch_backend
from ..core.checks import check_captured, finite_images
from ..core.config import CFCAMConfig, CFCAMResult, as_config
from ..core.graphs import graph_capture_blocker
from ..core.output import weighted_map
from ..core.resolve import resolve_plan
from .capture import hooked_forward, select_logits
from .gradcam import gradcam_weights
from .head import LinearHead, find_linear_head
from .imagenet import normalise
from .model_state import eval_mode, layer_name, layer_outputs, model_lock
from .targets import Targets, class_indices

if TYPE_CHECKING:
    from .export import Exported

Head = str | nn.Linear | None
Method = Literal["cfcam", "gradcam"]
METHODS: tuple[str, ...] = get_args(Method)


class FrameError(ValueError):
    """A frame of a stream that could not be explained; ``index`` is its position."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"frame {index}: {message}")
        self.index = index


@dataclass
class FrameResult:
    """One frame of ``RealtimeCFCAM.stream``: the map ``[H, W]`` (float32, CPU, in [0, 1],
    at the example input's size), the explained class, its softmax probability and the
    wall milliseconds of the frame. A failed frame (``skip_errors=True``) has ``maps=None``,
    ``class_idx=-1``, ``confidence=nan`` and the message in ``error``."""

    index: int
    maps: torch.Tensor | None
    class_idx: int
    confidence: float
    ms: float
    error: str | None = None


class RealtimeCFCAM:
    """CF-CAM of ``model`` at ``target_layer`` for inputs shaped like ``example_input``.

    ``rt(x)`` returns the ``[B, H, W]`` maps of ``cf.CFCAM(model, [target_layer],
    config=config)`` on the same input (labels identical). ``targets``: fixed at
    construction; classes as ``cams.targets`` parses them (``None``: each image's top class).

    ``head``: ``"auto"`` finds a global-average-pooling + linear head after the layer and,
    once proven against autograd on the example input, runs frames forward-only; an
    ``nn.Linear`` declares the head (still proven); ``None`` always runs the backward pass.
    ``mode`` says which runs and ``mode_reason`` why. ``graph``: capture the frame in a
    CUDA graph on CUDA (a failed capture warns and runs eagerly). ``compile``: wrap the
    CF-CAM core in ``torch.compile(fullgraph=True)``. ``plan`` (``cfcam_fast.plan.Plan``,
    also on every result) says which implementations run, fixed at construction: core
    triton on CUDA with the gaussian filter where Triton is usable, else torch; DBSCAN as
    ``config.dbscan_backend`` resolves.

    Needs the compiled DBSCAN ops (``core.native``) for the input's device, or, with
    ``dbscan_backend="fused"``, the fused Triton stage: they label fixed-shape batches
    exactly without a host wait. Non-finite activations or
    gradients are a ``ValueError`` naming the image on the CPU (as for ``CFCAM``); on CUDA,
    where a frame may not wait for the host, that image's map is NaN instead.

    Calls are serialised per object (a replayed graph has one set of buffers) and hold the
    model's lock, so concurrent calls behave like calls made one at a time.

    ``method="gradcam"``: the same frame with Grad-CAM's map instead (``cf.GradCAM``'s, in
    float64; for a global-average-pooling + linear head that is CAM), ``labels`` -2, ``eps``
    NaN, ``plan`` None; it needs no compiled ops. ``export`` writes either frame as an ONNX
    model or an AOTInductor package (docs/export.md).
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module, example_input: torch.Tensor,
                 config: CFCAMConfig | None = None, targets: Targets = None, *, head: Head = "auto",
                 graph: bool = True, compile: bool = False, method: Method = "cfcam") -> None:
        if not isinstance(model, nn.Module) or not isinstance(target_layer, nn.Module):
            raise ValueError("model and target_layer must be torch.nn.Module instances")
        if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4 \
                or not example_input.is_floating_point():
            raise ValueError("example_input must be a float [B, C, H, W] tensor, got "
                             f"{getattr(example_input, 'dtype', type(example_input).__name__)} "
                             f"{tuple(getattr(example_input, 'shape', ()))}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.model, self.layer, self.config, self.method = model, target_layer, as_config(config), method
        self.shape, self.dtype, self.device = tuple(example_input.shape), example_input.dtype, example_input.device
        needed = "fused" if self.config.dbscan_backend == "fused" else "native"
        reason = cluster.unavailable_reason(needed, self.device) if method == "cfcam" else None
        if reason is not None:
            raise ValueError(f"RealtimeCFCAM needs the {needed} DBSCAN backend on {self.device}: {reason}")
        self._targets = class_indices(targets, self.shape[0], self.device)
        self._lock = threading.Lock()
        self._head = None
        self.mode, self.mode_reason = "backward", "head=None: the backward pass runs for every frame"
        if head is not None:
            self._head, why = self._find_head(example_input, None if head == "auto" else head)
            self.mode, self.mode_reason = ("forward-only", why) if self._head is not None else ("backward", why)
            if self._head is None:
                warnings.warn(f"RealtimeCFCAM: running the backward pass for every frame: {why}", stacklevel=2)
        with torch.no_grad(), eval_mode(model):
            _, A = self._forward(example_input)
        if A.dim() != 4:
            raise ValueError(f"the target layer gave shape {tuple(A.shape)}; RealtimeCFCAM needs [B, C, H, W]")
        C = A.shape[1]
        n = torch_backend.max_remaining(C, self.config.importance_percentile)
        fused = self.device.type == "cuda" and self.config.filter == "gaussian" \
            and backends.unavailable_reason("triton", self.device) is None
        self.plan = resolve_plan("triton" if fused else "torch", self.config, self.device)
        buffer = torch_backend.pair_matrix(self.shape[0], n, self.plan) if method == "cfcam" else None  # Grad-CAM: none
        self._fixed = torch_backend.FixedShapes(n=n, buffer=buffer)
        self._core_fn = torch.compile(self._core, fullgraph=True) if compile else self._core
        self._graph: torch.cuda.CUDAGraph | None = None
        if graph and self.device.type == "cuda":
            self._capture_graph(example_input)

    # ------------------------------------------------------------------ construction
    def _find_head(self, example_input: torch.Tensor, declared: object) -> tuple[LinearHead | None, str]:
        if declared is not None and not isinstance(declared, nn.Linear):
            raise ValueError(f"head must be 'auto', None or an nn.Linear, got {declared!r}")
        return find_linear_head(self.model, self.layer, example_input, head=declared)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and a copy of the target layer's output, without autograd's
        bookkeeping (call under ``no_grad`` or ``inference_mode``, in eval mode)."""
        with layer_outputs([self.layer], keep=torch.Tensor.clone) as kept:
            logits = select_logits(self.model(x), None)
        if len(kept[0]) != 1:
            raise ValueError(f"the target layer ran {len(kept[0])} times in one forward pass; "
                             "RealtimeCFCAM needs a layer that runs once")
        return logits, kept[0][0]

    def _capture_graph(self, example_input: torch.Tensor) -> None:
        """Warm up on a side stream (kernel compilation, cuDNN choices), then capture one frame."""
        blocker = graph_capture_blocker()
        if blocker is not None:
            warnings.warn(f"RealtimeCFCAM: no CUDA graph, frames run eagerly: {blocker}", stacklevel=3)
            return
        self._static_x = example_input.detach().clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._frame(self._static_x)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._static_out = self._frame(self._static_x)
            self._graph = graph
        except RuntimeError as exc:  # a capture that fails leaves the eager path, said aloud
            torch.cuda.synchronize(self.device)
            warnings.warn(f"RealtimeCFCAM: CUDA graph capture failed, frames run eagerly: {exc}", stacklevel=3)

    # ------------------------------------------------------------------ one frame
    def _core(self, A: torch.Tensor, G: torch.Tensor) -> CFCAMResult:
        with torch.no_grad():
            if self.method == "gradcam":  # as cf.GradCAM computes it: in float64
                A64, G64 = A.double(), G.double()
                w = gradcam_weights(A64, G64)
                return CFCAMResult.without_clusters(weighted_map(A64, w, self.shape[-2:]), w)
            return torch_backend.explain(A, G, self.shape[-2:], self.config, self.plan, fixed=self._fixed)

    def _frame(self, x: torch.Tensor) -> CFCAMResult:
        """Forward, gradient at the layer and CF-CAM for one batch, with no host wait on CUDA."""
        if self._head is not None:
            with torch.inference_mode(), eval_mode(self.model):
                logits, A = self._forward(x)
                class_idx = logits.argmax(1) if self._targets is None else self._targets
                G = self._head.gradients(A, class_idx)
        else:
            with hooked_forward(self.model, x, [self.layer]) as (out, raw):
                logits = select_logits(out, None)
                class_idx = logits.detach().argmax(1) if self._targets is None else self._targets
                score = logits.flatten(1).gather(1, class_idx[:, None]).sum()
                G = torch.autograd.grad(score, raw[0])[0].detach()
            A = raw[0].detach()
            logits = logits.detach()
        if self.device.type == "cpu":
            check_captured(A, G)
        result = self._core_fn(A, G)
        if self.device.type == "cuda":
            result.maps = torch.where(finite_images(A, G)[:, None, None], result.maps, math.nan)
        result.class_idx = class_idx
        result.logits = logits
        return result

    # ------------------------------------------------------------------ public calls
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != self.shape or x.dtype != self.dtype \
                or x.device != self.device:
            raise ValueError(f"RealtimeCFCAM was built for {self.dtype} {list(self.shape)} on {self.device}; "
                             f"got {getattr(x, 'dtype', type(x).__name__)} {list(getattr(x, 'shape', []))} "
                             f"on {getattr(x, 'device', '?')}")

    def explain(self, x: torch.Tensor) -> CFCAMResult:
        """Maps, labels, weights, eps, explained classes and logits of one batch (fresh tensors)."""
        self._check_input(x)
        with self._lock, model_lock(self.model, self.layer):
            if self._graph is None:
                return self._frame(x)
            self._static_x.copy_(x)
            self._graph.replay()
            out = self._static_out
            class_idx, logits = out.model_outputs()
            return CFCAMResult(maps=out.maps.clone(), labels=out.labels.clone(),
                               channel_weights=out.channel_weights.clone(), weights=out.weights.clone(),
                               eps=out.eps.clone(), class_idx=class_idx.clone(), logits=logits.clone(),
                               plan=out.plan)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The ``[B, H, W]`` maps in ``[0, 1]`` (float32, on the input's device)."""
        return self.explain(x).maps

    # ------------------------------------------------------------------ deployment
    def export(self, path: str | Path, *, extra_outputs: tuple[str, ...] = (), distances: str = "certified",
               dbscan_loop: str = "while") -> Exported:
        """Write this frame as a static graph to ``path``: ``.onnx`` (ONNX, opset 18; needs
        the ``[onnx]`` extra) or ``.pt2`` (an AOTInductor package). It takes one input,
        ``input``, of this object's shape and dtype, and returns ``logits``, ``class_idx``
        and ``maps`` (then ``extra_outputs``: ``labels``, ``eps``, ``activations``,
        ``gradients``, ``certified``); the config, targets, layer and head travel as
        ``cfcam.*`` metadata. Only forward-only frames export: a head not proven to be global
        average pooling + linear is a ``ValueError`` naming it and the reason. ``distances``
        and ``dbscan_loop``: see ``core.exportable`` (the defaults suit every runtime).
        The model's parameters, buffers and training flags are left as they were, and no
        hook remains, also when the export fails. Returns ``cams.export.Exported``."""
        from .export import Frame, export, format_of

        format_of(path)
        if self.mode != "forward-only" or self._head is None:
            raise ValueError(f"cannot export the frame of {type(self.model).__name__} at "
                             f"{layer_name(self.model, self.layer)!r} forward-only: the head after it is not "
                             f"proven to be global average pooling + linear, so the frame would need a backward "
                             f"pass, which is not exported: {self.mode_reason}")
        frame = Frame(self.model, self.layer, self._head, self.shape, self.config, self._targets,
                      method=self.method, extra_outputs=extra_outputs, distances=distances, loop=dbscan_loop,
                      head_proof=self.mode_reason)
        example = torch.randn(self.shape, generator=torch.Generator().manual_seed(0)).to(self.device, self.dtype)
        return export(frame, path, example)

    # ------------------------------------------------------------------ streams
    def preprocess(self, frame) -> torch.Tensor:
        """An ``HxWx3`` uint8 frame (NumPy array or tensor, RGB) resized to the example
        input's size (bilinear, antialiased) and normalised with ImageNet's mean and std."""
        t = torch.as_tensor(frame)
        if t.dim() != 3 or t.shape[2] != 3 or t.dtype != torch.uint8:
            raise ValueError(f"expected an HxWx3 uint8 frame, got {t.dtype} {list(t.shape)}")
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        x = t.permute(2, 0, 1)[None].to(torch.float32).div_(255.0)
        x = F.interpolate(x, size=self.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
        return normalise(x).to(self.dtype)

    def stream(self, frames: Iterable, preprocess: Callable | None = None,
               skip_errors: bool = False) -> Iterator[FrameResult]:
        """One ``FrameResult`` per frame of ``frames``, in order (needs a batch-1 example input).

        A worker thread reads and preprocesses frame t+1 (on CUDA in pinned memory and on a
        side stream) while frame t is explained. ``preprocess`` replaces ``self.preprocess``:
        it maps a frame to a ``[1, C, H, W]`` tensor like the example input. A frame that
        fails raises ``FrameError`` naming its index, or with ``skip_errors=True`` gives a
        result with ``error`` set; either way this object stays usable.
        """
        if self.shape[0] != 1:
            raise ValueError(f"stream needs a batch-1 example input, got batch {self.shape[0]}")
        prepare = preprocess or self.preprocess
        source = iter(frames)
        side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

        def next_frame():
            frame = next(source)
            if side is None:
                return prepare(frame), None
            with torch.cuda.stream(side):
                x = torch.as_tensor(prepare(frame))
                x = x.to(self.device, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record(side)
            return x, ready

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cfcam-stream") as pool:
            pending = pool.submit(next_frame)
            index = 0
            while True:
                failure: Exception | None
                try:
                    x, ready = pending.result()
                except StopIteration:
                    return
                except Exception as exc:
                    x, ready, failure = None, None, exc
                else:
                    failure = None
                pending = pool.submit(next_frame)  # frame t+1 is prepared while t is explained
                start = time.perf_counter()
                try:
                    if failure is not None:
                        raise failure
                    if ready is not None:
                        torch.cuda.current_stream(self.device).wait_event(ready)
                        x.record_stream(torch.cuda.current_stream(self.device))
                    result = self.explain(x.reshape(self.shape) if x.numel() == math.prod(self.shape) else x)
                    class_idx, logits = result.model_outputs()
                    probability = logits.float().softmax(1)[0]
                    k = int(class_idx[0])
                    out = FrameResult(index, result.maps[0].cpu(), k, float(probability[k]),
                                      (time.perf_counter() - start) * 1e3)
                except Exception as exc:
                    error = FrameError(index, str(exc))
                    if not skip_errors:
                        pending.cancel()
                        raise error from exc
                    out = FrameResult(index, None, -1, math.nan, (time.perf_counter() - start) * 1e3, str(error))
                yield out
                index += 1
