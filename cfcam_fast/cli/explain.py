"""``cfcam-fast explain``: CF-CAM maps, overlays and a record per image for photos, files,
folders, list files or whole datasets (sharded under torchrun), or videos.

Inputs are read as ``cfcam_fast.dataset`` says (files, flat or ImageFolder folders, list
files, the bundled photos), decoded in DataLoader workers, in fixed batches of
``--batch-size`` images of the sorted list. Written to ``--out``: ``results.jsonl``, one
record per image sorted by ``file`` (the path, or ``bundled:<name>``) with ``class``
(ImageNet index), ``class_name``, ``confidence`` (softmax probability), ``label`` (the class
folder, for an ImageFolder), ``overlay`` and ``map`` (file names, when written) and
``timing`` (``batch``, ``batch_size``, ``batch_milliseconds``: the whole model call's
forward, backward and CF-CAM time; the only field that changes between runs); a file that
cannot be read or explained has ``file`` and ``error`` (the reason, also on stderr).
``<name>_cfcam.png`` per image (the map over the photo, titled with the predicted class and
its confidence; ``--annotate`` adds a colour bar and a caption; ``--no-overlays`` skips
them), ``maps/<name>.npy`` with ``--save-maps`` (float32, ``--size`` x ``--size``),
``summary.json`` and ``summary.csv`` (an entry per file, sorted: the record with the class
name as ``name``, the confidence to 6 decimals and the timing fields inline), and
``run.json`` (the options, the resolved backend plan, the counts and this run's images per
second).
``<name>`` is the file's path inside its folder or list, made filesystem-safe and unique.

Under ``torchrun --nproc_per_node=N -m cfcam_fast explain ...`` the batches are shared
between the N processes, each on its own GPU (or the CPU), and the merged outputs equal a
one-process run's. A rerun with the same ``--out`` skips the images already done, so a run
that was killed is finished by running it again. The exit status is 1 if any file failed;
none explained is an error.

A path with a video suffix (.mp4, .mov, .avi, .mkv, .webm, .m4v; needs PyAV, the ``[video]``
extra) is explained frame by frame with ``RealtimeCFCAM`` at 224x224: per video
``<name>_cfcam.mp4``, the overlays at the input's size, frame count and rate (a frame that
failed is copied as it is), and ``<name>_frames.jsonl``, one line per frame with ``index``,
``class``, ``name``, ``confidence``, ``milliseconds`` (the frame's wall time) and, for a
failed frame only, ``error`` (then ``class`` is -1, ``name`` and ``confidence`` null).
Videos run one after another; the exit status is 1 if any frame failed. ``--backend`` and
``--batch-size`` apply to images only. Videos and images in one call are refused: explain
them in separate calls.

``--onnx model.onnx`` explains the images with a frame ``cfcam-fast export`` wrote, run by
onnxruntime alone: no model is loaded, the artefact's own forward pass, class and CF-CAM
(or Grad-CAM) map are used, and the outputs are written as above. The images are
preprocessed as always (resized and ImageNet-normalised) to the artefact's input size, in
batches of its batch size; ``run.json`` records the artefact and its ``cfcam.*`` metadata.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cams.cfcam import CFCAM
from ..core.timing import timed
from ..data.dataset import Batch, Item
from . import argtypes
from .distributed import Context
from .options import (
    add_dataset_arguments,
    add_input_arguments,
    add_photos_argument,
    check_backend,
    collect_inputs,
    load_target,
    photo_set,
    run_config,
    warm_up,
)
from .outputs import save_map, write_file_atomic, write_text_atomic
from .sharded import base_record, failure_record, run_command, run_dataset, write_csv

SUMMARY_FIELDS = ["file", "label", "overlay", "map", "class", "name", "confidence", "batch", "batch_size",
                  "batch_milliseconds", "error"]
HELP = "explain images or videos (default: the photos bundled with scikit-image and scikit-learn)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``explain``."""
    from ..core.config import FILTERS, WEIGHTINGS

    add_input_arguments(parser)
    add_photos_argument(parser)
    add_dataset_arguments(parser)
    parser.add_argument("--batch-size", type=argtypes.integer(1), default=8, help="images per batch (default: 8)")
    parser.add_argument("--size", type=argtypes.integer(1), default=224,
                        help="side in pixels the images are resized to (default: 224)")
    parser.add_argument("--save-maps", action="store_true",
                        help="also write each map as maps/<name>.npy (float32, --size x --size)")
    parser.add_argument("--overlays", action=argparse.BooleanOptionalAction, default=True,
                        help="write <name>_cfcam.png per image (default: yes; --no-overlays for speed)")
    parser.add_argument("--filter", choices=FILTERS, default="gaussian",
                        help="cluster-gradient filter (default: gaussian, the paper's)")
    parser.add_argument("--weighting", choices=WEIGHTINGS, default="softmax",
                        help="channel weighting (default: softmax, the authors')")
    parser.add_argument("--annotate", action="store_true",
                        help="add a colour bar and a caption (method, model, layer, filter, weighting) "
                        "to each overlay")
    parser.add_argument("--out", default="cfcam_out", help="output folder (default: ./cfcam_out)")
    parser.add_argument("--onnx", metavar="FILE",
                        help="explain with this exported frame (cfcam-fast export), run by onnxruntime alone; "
                        "the model, weights, layer, backend, filter, weighting, size and batch size are the "
                        "artefact's")


def run(args: argparse.Namespace) -> int:
    """Explain every image or video; returns 0, or 1 if a file or video frame failed; raises
    ``ValueError`` naming the bad input, or when no image could be explained."""
    from ..data.video import is_video

    photo_set(args)  # --photos with paths is refused before any of them is read
    videos = [path for path in args.paths if is_video(path)]
    if args.onnx is not None:
        _check_onnx_options(args, videos)
    if videos:
        if len(videos) != len(args.paths):
            raise ValueError("videos and images in one call: explain them in separate calls")
        from .videos import explain_videos

        return explain_videos(args, videos)
    return run_command(args.device, args.timeout, Path(args.out),
                       lambda ctx, out: _explain_images(args, ctx, out))


@dataclass
class Explainer:
    """What explains the batches of a run: ``explain(x)`` returns ``(maps, class_idx, logits)``
    of a batch; ``config`` the options ``config.json`` records; ``caption`` the overlays'
    (with ``--annotate``); ``described`` the run's model, layer and backend in words; ``plan``
    what computed the maps; ``warm_up`` (CUDA) the call that pays one-time costs."""

    explain: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    config: dict[str, Any]
    caption: str | None
    described: str
    plan: str
    warm_up: Callable[[], None] | None = None


def _model_explainer(args: argparse.Namespace, ctx: Context) -> Explainer:
    """CF-CAM of the model the options name (``CFCAM`` on ``--backend``)."""
    from ..core.config import CFCAMConfig
    from ..core.resolve import resolve_plan

    target = load_target(args, ctx.device, args.size)
    check_backend(args.backend, ctx.device)
    caption = (f"CF-CAM, {args.filter} filter, {args.weighting} weighting; "
               f"{args.model}, layer {target.layer_name}") if args.annotate else None
    config = {**run_config("explain", args, target, ctx.device), "filter": args.filter,
              "weighting": args.weighting}
    cam = CFCAM(target.model, [target.layer], reshape_transform=target.transform,
                config=CFCAMConfig(filter=args.filter, weighting=args.weighting), backend=args.backend)

    def explain(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        result = cam.explain(x)
        return (result.maps, *result.model_outputs())

    plan = resolve_plan(args.backend, cam.config, ctx.device)  # what computed the maps (result.plan)
    return Explainer(explain, config, caption, f"model {args.model}, layer {target.layer_name}, backend "
                     f"{args.backend}", str(plan), warm_up(cam, args.batch_size, args.size, ctx.device))


def _check_onnx_options(args: argparse.Namespace, videos: list[str]) -> None:
    """``ValueError`` for what ``--onnx`` cannot combine with."""
    if videos:
        raise ValueError("--onnx explains images; explain videos with a model (RealtimeCFCAM), without --onnx")
    given = [flag for flag, value in (("--weights", args.weights), ("--layer", args.layer),
                                      ("--random-weights", args.random_weights)) if value]
    if given:
        raise ValueError(f"--onnx brings its own model and layer: drop {', '.join(given)}")


def _onnx_explainer(args: argparse.Namespace, ctx: Context) -> Explainer:
    """The frame of ``--onnx``, run by onnxruntime; sets ``args.size`` and ``args.batch_size``
    to the artefact's."""
    from ..cams.export.onnx import require_onnx
    from ..cams.export.ort_runner import OnnxFrame

    require_onnx(("onnxruntime",))
    if not Path(args.onnx).is_file():
        raise ValueError(f"cannot read the ONNX model {args.onnx}: no such file")
    try:
        frame = OnnxFrame(args.onnx)
    except Exception as exc:  # onnxruntime's own errors for a file that is no model
        raise ValueError(f"cannot load the ONNX model {args.onnx}: {str(exc).splitlines()[0]}") from exc
    if "cfcam.method" not in frame.metadata or len(frame.input_shape) != 4 \
            or frame.input_shape[2] != frame.input_shape[3]:
        raise ValueError(f"{args.onnx} is not a frame cfcam-fast export wrote (no cfcam.* metadata, or an input "
                         f"that is not [B, 3, S, S]: {list(frame.input_shape)})")
    batch, _, size, _ = frame.input_shape
    args.size, args.batch_size = size, batch
    info = frame.info
    method = {"cfcam": "CF-CAM", "gradcam": "Grad-CAM"}.get(info["cfcam.method"], info["cfcam.method"])
    caption = (f"{method}, {info['cfcam.filter']} filter, {info['cfcam.weighting']} weighting; "
               f"{Path(args.onnx).name}, layer {info['cfcam.layer']}") if args.annotate else None
    decode = "cpu"
    config = {"command": "explain", "onnx": str(Path(args.onnx).resolve()), "metadata": frame.metadata,
              "size": size, "batch_size": batch, "decode": decode}

    def explain(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = x.detach().cpu().float().numpy()
        padded = np.zeros(frame.input_shape, dtype=np.float32)
        outs = []
        for start in range(0, len(images), batch):  # the artefact's batch is fixed: pad the last one
            chunk = images[start:start + batch]
            padded[:len(chunk)] = chunk
            padded[len(chunk):] = 0.0
            out = frame(padded)
            outs.append({k: out[k][:len(chunk)] for k in ("maps", "class_idx", "logits")})
        maps, class_idx, logits = (torch.from_numpy(np.concatenate([o[k] for o in outs]))
                                   for k in ("maps", "class_idx", "logits"))
        return maps, class_idx, logits

    return Explainer(explain, config, caption, f"ONNX frame {args.onnx} ({info['cfcam.method']}, layer "
                     f"{info['cfcam.layer']}), onnxruntime", f"onnxruntime {info['cfcam.method']} frame")


def _explain_images(args: argparse.Namespace, ctx: Context, out: Path) -> int:
    from ..data.models import imagenet_classes

    items = collect_inputs(args)
    explainer = _onnx_explainer(args, ctx) if args.onnx is not None else _model_explainer(args, ctx)
    classes = imagenet_classes()
    if args.save_maps:
        (out / "maps").mkdir(parents=True, exist_ok=True)
    config = explainer.config

    def process(batch: Batch, items: list[Item], wanted: set[int]) -> tuple[list[dict], Callable[[], None] | None]:
        return _explain_batch(explainer, batch, items, wanted, out, classes, args, ctx.device)

    outcome = run_dataset(ctx, items, out, batch_size=args.batch_size, size=args.size,
                          workers=args.workers, keep_images=args.overlays, process=process,
                          command="explain", config=config, decode_on_device=config["decode"] == "device",
                          warm_up=explainer.warm_up)
    if not ctx.main:  # the run's exit status is rank 0's (torchrun stops every rank when one fails)
        return 0
    records = outcome.records
    failed = sum("error" in r for r in records)
    entries = [_summary_entry(r) for r in records]
    write_text_atomic(out / "summary.json", json.dumps(entries, indent=2) + "\n")
    write_csv(out / "summary.csv", SUMMARY_FIELDS, entries)
    run_info = {**config, "plan": explainer.plan, "device": str(ctx.device), "world_size": ctx.world_size,
                "workers": args.workers,
                "images": len(items), "explained": len(records) - failed, "failed": failed,
                "this_run": outcome.this_run()}
    write_text_atomic(out / "run.json", json.dumps(run_info, indent=2) + "\n")
    print(outcome.line("explain"))
    if failed == len(items):
        raise ValueError(f"no image could be explained: all {failed} failed (reasons above and in "
                         f"{out / 'summary.json'})")
    print(f"wrote {len(records) - failed} records to {out / 'results.jsonl'}, summary.json, summary.csv and "
          f"run.json{f' ({failed} of {len(items)} files skipped)' if failed else ''} ({explainer.described}, "
          f"device {ctx.device}, {ctx.world_size} process{'es' if ctx.world_size > 1 else ''})")
    return 1 if failed else 0


def _summary_entry(record: dict) -> dict:
    """A record as an entry of ``summary.json`` and ``summary.csv``: the class name as ``name``,
    the confidence to 6 decimals and the timing fields inline."""
    entry = {k: v for k, v in record.items() if k not in ("class_name", "timing")}
    if "error" not in record:
        entry.update(name=record["class_name"], confidence=round(record["confidence"], 6), **record["timing"])
    return {k: entry[k] for k in SUMMARY_FIELDS if k in entry}


def _explain_batch(explainer: Explainer, batch: Batch, items: list[Item], wanted: set[int], out: Path,
                   classes: list[str], args: argparse.Namespace,
                   device: torch.device) -> tuple[list[dict], Callable[[], None] | None]:
    """Explain ``batch`` as one model call (each image alone if that call fails, to find the bad
    one); returns the records of the images in ``wanted`` and the function that writes their
    files (maps and overlays), which the loop runs on its writer thread."""
    from ..data.models import class_name
    from ..viz import save_overlay

    records = [failure_record(items[i], reason) for i, reason in batch.failures if i in wanted]
    writes: list[Callable[[], None]] = []
    pixels = batch.pixels
    if pixels is None:
        return records, None
    number = min(batch.indices + [i for i, _ in batch.failures]) // args.batch_size
    pending = [list(range(len(batch.indices)))]
    while pending:
        group = pending.pop(0)
        try:
            (maps, class_idx, logits), milliseconds = timed(partial(explainer.explain, pixels[group].to(device)),
                                                            device)
        except (ValueError, RuntimeError) as exc:
            if len(group) > 1:
                pending[:0] = [[one] for one in group]
            elif batch.indices[group[0]] in wanted:
                records.append(failure_record(items[batch.indices[group[0]]], f"cannot explain it: {exc}"))
            continue
        probabilities = logits.float().softmax(1).cpu()
        maps = maps.cpu()
        for row, position in enumerate(group):
            index = batch.indices[position]
            if index not in wanted:
                continue
            item = items[index]
            k = int(class_idx[row])
            label = class_name(classes, k)
            confidence = float(probabilities[row, k])
            record = {**base_record(item), "class": k, "class_name": label, "confidence": confidence}
            if args.save_maps:
                writes.append(partial(save_map, out / "maps" / f"{item.name}.npy", maps[row].numpy()))
                record["map"] = f"maps/{item.name}.npy"
            if args.overlays:
                png = out / f"{item.name}_cfcam.png"
                writes.append(partial(write_file_atomic, png, partial(
                    save_overlay, image=batch.images[position], cam=maps[row],
                    title=f"{label} ({confidence * 100:.1f}%)", caption=explainer.caption, colorbar=args.annotate)))
                record["overlay"] = png.name
            record["timing"] = {"batch": number, "batch_size": len(group),
                                "batch_milliseconds": round(milliseconds, 3)}
            records.append(record)

    def write_files() -> None:
        for write in writes:
            write()

    return records, write_files if writes else None
