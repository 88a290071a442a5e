"""``cfcam-fast explain``: CF-CAM overlays and a summary for photos, files or folders, or videos.

Per image ``<name>_cfcam.png`` (the map over the photo, titled with the predicted ImageNet
class and its confidence) and one ``summary.json`` with an entry per image done, written
after every batch, so that an error part-way leaves the finished images and their entries.
An entry holds ``file`` (the path, or ``bundled:<name>``), ``overlay`` (the PNG's name),
``class`` (ImageNet index), ``name`` (class name), ``confidence`` (softmax probability) and
``milliseconds`` (the image's share of its batch's forward, backward and CF-CAM time).

A path with a video suffix (.mp4, .mov, .avi, .mkv, .webm, .m4v; needs PyAV, the ``[video]``
extra) is explained frame by frame with ``RealtimeCFCAM`` at 224x224: per video
``<name>_cfcam.mp4``, the overlays at the input's size, frame count and rate (a frame that
failed is copied as it is), and ``<name>_frames.jsonl``, one line per frame with ``index``,
``class``, ``name``, ``confidence``, ``milliseconds`` (the frame's wall time) and, for a
failed frame only, ``error`` (then ``class`` is -1, ``name`` and ``confidence`` null).
Videos run one after another; the exit status is 1 if any frame failed. ``--backend`` and
``--batch-size`` apply to images only. Videos and images in one call are refused: explain
them in separate calls.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .options import (Item, add_input_arguments, check_backend, device_option, image_items,
                      positive_int)

if TYPE_CHECKING:
    from ..realtime import RealtimeCFCAM

HELP = "explain images or videos (default: the photos bundled with scikit-image and scikit-learn)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``explain``."""
    from ..config import FILTERS, WEIGHTINGS

    add_input_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per batch (default: 8)")
    parser.add_argument("--filter", choices=FILTERS, default="gaussian",
                        help="cluster-gradient filter (default: gaussian, the paper's)")
    parser.add_argument("--weighting", choices=WEIGHTINGS, default="softmax",
                        help="channel weighting (default: softmax, the authors')")
    parser.add_argument("--out", default="cfcam_out", help="output folder (default: ./cfcam_out)")


def _batches(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def run(args: argparse.Namespace) -> int:
    """Explain every image or video; returns 0 (1 if a video frame failed), or raises
    ``ValueError`` naming the bad input."""
    from ..video import is_video

    videos = [path for path in args.paths if is_video(path)]
    if videos:
        if len(videos) != len(args.paths):
            raise ValueError("videos and images in one call: explain them in separate calls")
        return _explain_videos(args, videos)
    import torch
    from tqdm import tqdm

    from .. import CFCAM, CFCAMConfig
    from ..models import imagenet_classes, load_model, preprocess, resolve_layer
    from ..viz import save_overlay

    device = device_option(args.device)
    config = CFCAMConfig(filter=args.filter, weighting=args.weighting)
    items = image_items(args.paths)
    model, default = load_model(args.model, args.weights, device)
    layer_name = args.layer or default
    layer = resolve_layer(model, layer_name)
    check_backend(args.backend, device)
    classes = imagenet_classes()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    summary: list[dict] = []
    batches = list(_batches(items, args.batch_size))
    progress = tqdm(batches, desc="explain", unit="batch", disable=len(batches) < 2)
    with CFCAM(model, [layer], config=config, backend=args.backend) as cam, progress:
        for batch in progress:
            images, error = [], None
            for _, _, load in batch:
                try:
                    images.append(load())
                except ValueError as exc:
                    error = exc
                    break
            if images:
                x = preprocess(images).to(device)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                result = cam.explain(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                milliseconds = (time.perf_counter() - start) * 1000.0 / len(images)
                probabilities = result.logits.float().softmax(1).cpu()
                maps = result.maps.cpu()
                for i, ((name, source, _), image) in enumerate(zip(batch, images)):
                    index = int(result.class_idx[i])
                    label = classes[index] if 0 <= index < len(classes) else f"class {index}"
                    confidence = float(probabilities[i, index])
                    png = out / f"{name}_cfcam.png"
                    save_overlay(png, image, maps[i], f"{label} ({confidence * 100:.1f}%)")
                    summary.append({"file": source, "overlay": png.name, "class": index, "name": label,
                                    "confidence": round(confidence, 6),
                                    "milliseconds": round(milliseconds, 3)})
                    tqdm.write(f"{name}: {label} ({confidence * 100:.1f}%)")
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            if error is not None:
                raise error
    print(f"wrote {len(summary)} overlays and summary.json to {out} "
          f"(model {args.model}, layer {layer_name}, backend {args.backend}, device {device})")
    return 0


def _explain_videos(args: argparse.Namespace, paths: list[str]) -> int:
    """Explain each video frame by frame; returns 1 if any frame failed, else 0."""
    import torch

    from .. import CFCAMConfig, RealtimeCFCAM
    from ..models import imagenet_classes, load_model, resolve_layer
    from ..video import import_av

    import_av()
    for text in paths:
        if not Path(text).is_file():
            raise ValueError(f"no such file: {text}")
    device = device_option(args.device)
    model, default = load_model(args.model, args.weights, device)
    layer_name = args.layer or default
    rt = RealtimeCFCAM(model, resolve_layer(model, layer_name), torch.zeros(1, 3, 224, 224, device=device),
                       config=CFCAMConfig(filter=args.filter, weighting=args.weighting))
    classes = imagenet_classes()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed, used = 0, set()
    for text in paths:
        stem, n = Path(text).stem, 1
        name = stem
        while name in used:
            n += 1
            name = f"{stem}_{n}"
        used.add(name)
        failed += _explain_video(rt, Path(text), out / name, classes,
                                 f"model {args.model}, layer {layer_name}, device {device}")
    return 1 if failed else 0


def _explain_video(rt: RealtimeCFCAM, path: Path, prefix: Path, classes: list[str], setup: str) -> int:
    """Write ``<prefix>_cfcam.mp4`` and ``<prefix>_frames.jsonl`` for one video; returns the
    number of failed frames."""
    import torch
    from tqdm import tqdm

    from ..video import VideoWriter, read_video
    from ..viz import overlay

    frames, info = read_video(path)
    held: deque = deque()  # frames read but not yet written (the stream reads one ahead)

    def keep() -> Iterator:
        for frame in frames:
            held.append(frame)
            yield frame

    video, log = Path(f"{prefix}_cfcam.mp4"), Path(f"{prefix}_frames.jsonl")
    count, failed, total_ms = 0, 0, 0.0
    with VideoWriter(video, info.fps) as writer, log.open("w") as lines:
        results = rt.stream(keep(), skip_errors=True)
        for result in tqdm(results, total=info.frames, desc=prefix.name, unit="frame"):
            frame = held.popleft() if held else None  # None: the frame itself could not be decoded
            error = result.error
            if error is None and not bool(torch.isfinite(result.maps).all()):
                error = f"frame {result.index}: non-finite activations or gradients"
            record = {"index": result.index, "class": -1, "name": None, "confidence": None,
                      "milliseconds": round(result.ms, 3)}
            if error is None:
                k = result.class_idx
                record.update({"class": k, "name": classes[k] if 0 <= k < len(classes) else f"class {k}",
                               "confidence": round(result.confidence, 6)})
                writer.write(overlay(frame, result.maps))
            else:
                failed += 1
                record["error"] = error
                tqdm.write(f"cfcam-fast: {path}: {error}", file=sys.stderr)
                if frame is not None:
                    writer.write(frame)
            count, total_ms = count + 1, total_ms + result.ms
            lines.write(json.dumps(record) + "\n")
    print(f"{path}: {count} frames ({failed} failed, {total_ms / max(count, 1):.1f} ms each); wrote "
          f"{video.name} and {log.name} to {prefix.parent} ({setup})")
    return failed
