"""``cfcam-fast explain``: CF-CAM overlays and a summary for photos, files or folders, or videos.

Per image ``<name>_cfcam.png`` (the map over the photo, titled with the predicted ImageNet
class and its confidence; with ``--annotate`` also a colour bar and a caption naming the
method, model, layer, filter and weighting), and ``summary.json`` and ``summary.csv`` with
an entry per file in input order, rewritten after every batch, so that an error part-way
leaves the finished images and their entries. An entry holds ``file`` (the path, or
``bundled:<name>``), ``overlay`` (the PNG's name), ``class`` (ImageNet index), ``name``
(class name), ``confidence`` (softmax probability), ``batch`` (which model call explained
it), ``batch_size`` (images in that call) and ``batch_milliseconds`` (the whole call's
forward, backward and CF-CAM time; with ``--batch-size 1`` the image's own time). A file
that cannot be read or explained is reported on stderr and skipped; its entry holds only
``file`` and ``error`` (the reason). Images load as a photo viewer shows them
(``models.load_image``: EXIF orientation applied, transparency on white). The exit status
is 1 if any file was skipped; none explained is an error.

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
import csv
import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .options import (add_input_arguments, check_backend, device_option, image_items, load_target,
                      positive_int, skipped, try_load)

if TYPE_CHECKING:
    from ..realtime import RealtimeCFCAM

SUMMARY_FIELDS = ["file", "overlay", "class", "name", "confidence", "batch", "batch_size",
                  "batch_milliseconds", "error"]
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
    parser.add_argument("--annotate", action="store_true",
                        help="add a colour bar and a caption (method, model, layer, filter, weighting) "
                        "to each overlay")
    parser.add_argument("--out", default="cfcam_out", help="output folder (default: ./cfcam_out)")


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def run(args: argparse.Namespace) -> int:
    """Explain every image or video; returns 0, or 1 if a file or video frame failed; raises
    ``ValueError`` naming the bad input, or when no image could be explained."""
    from ..video import is_video

    videos = [path for path in args.paths if is_video(path)]
    if videos:
        if len(videos) != len(args.paths):
            raise ValueError("videos and images in one call: explain them in separate calls")
        return _explain_videos(args, videos)
    from tqdm import tqdm

    from .. import CFCAM, CFCAMConfig
    from ..models import imagenet_classes
    from ..viz import save_overlay

    device = device_option(args.device)
    config = CFCAMConfig(filter=args.filter, weighting=args.weighting)
    items = image_items(args.paths)
    target = load_target(args, device)
    check_backend(args.backend, device)
    classes = imagenet_classes()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    caption = (f"CF-CAM, {args.filter} filter, {args.weighting} weighting; "
               f"{args.model}, layer {target.layer_name}") if args.annotate else None

    entries: dict[int, dict] = {}  # input position -> summary entry
    calls = 0
    batches = list(_batches(list(enumerate(items)), args.batch_size))
    progress = tqdm(batches, desc="explain", unit="batch", disable=len(batches) < 2)
    with CFCAM(target.model, [target.layer], reshape_transform=target.transform, config=config,
               backend=args.backend) as cam, progress:
        for batch in progress:
            loaded = []
            for position, item in batch:
                image, reason = try_load(item)
                if image is None:
                    entries[position] = skipped(item[1], reason)
                else:
                    loaded.append((position, item, image))
            pending = [loaded] if loaded else []
            while pending:  # a call that fails is retried image by image, to skip only the bad one
                group = pending.pop(0)
                try:
                    result, milliseconds = _timed_explain(cam, [image for _, _, image in group], device)
                except (ValueError, RuntimeError) as exc:
                    if len(group) > 1:
                        pending[:0] = [[one] for one in group]
                    else:
                        position, (_, source, _), _ = group[0]
                        entries[position] = skipped(source, f"cannot explain it: {exc}")
                    continue
                probabilities = result.logits.float().softmax(1).cpu()
                maps = result.maps.cpu()
                for i, (position, (name, source, _), image) in enumerate(group):
                    index = int(result.class_idx[i])
                    label = _class_name(classes, index)
                    confidence = float(probabilities[i, index])
                    png = out / f"{name}_cfcam.png"
                    save_overlay(png, image, maps[i], f"{label} ({confidence * 100:.1f}%)",
                                 caption=caption, colorbar=args.annotate)
                    entries[position] = {"file": source, "overlay": png.name, "class": index, "name": label,
                                         "confidence": round(confidence, 6), "batch": calls,
                                         "batch_size": len(group),
                                         "batch_milliseconds": round(milliseconds, 3)}
                    tqdm.write(f"{name}: {label} ({confidence * 100:.1f}%)")
                calls += 1
            _write_summary(out, [entries[p] for p in sorted(entries)])
    failed = sum("error" in entry for entry in entries.values())
    if failed == len(items):
        raise ValueError(f"no image could be explained: all {failed} failed (reasons above and in "
                         f"{out / 'summary.json'})")
    print(f"wrote {len(items) - failed} overlays, summary.json and summary.csv to {out}"
          f"{f' ({failed} of {len(items)} files skipped)' if failed else ''} (model {args.model}, "
          f"layer {target.layer_name}, backend {args.backend}, device {device})")
    return 1 if failed else 0


def _class_name(classes: list[str], index: int) -> str:
    """The ImageNet name of class ``index``, or ``"class <index>"`` outside the list."""
    return classes[index] if 0 <= index < len(classes) else f"class {index}"


def _timed_explain(cam, images: list, device):
    """``cam.explain`` on the preprocessed ``images`` and its wall time in milliseconds."""
    import torch

    from ..models import preprocess

    x = preprocess(images).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = cam.explain(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, (time.perf_counter() - start) * 1000.0


def _write_summary(out: Path, entries: list[dict]) -> None:
    """``summary.json`` and ``summary.csv`` (columns ``SUMMARY_FIELDS``) for ``entries``."""
    (out / "summary.json").write_text(json.dumps(entries, indent=2) + "\n")
    with (out / "summary.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(entries)


def _explain_videos(args: argparse.Namespace, paths: list[str]) -> int:
    """Explain each video frame by frame; returns 1 if any frame failed, else 0."""
    import torch

    from .. import CFCAMConfig, RealtimeCFCAM
    from ..models import imagenet_classes
    from ..video import import_av

    import_av()
    for text in paths:
        if not Path(text).is_file():
            raise ValueError(f"no such file: {text}")
    device = device_option(args.device)
    target = load_target(args, device)
    if target.transform is not None:
        raise ValueError(f"videos need a target layer with a [B, C, H, W] output, and {args.model}'s "
                         f"{target.layer_name} needs --reshape {args.reshape}: explain frames as images")
    layer_name = target.layer_name
    rt = RealtimeCFCAM(target.model, target.layer, torch.zeros(1, 3, 224, 224, device=device),
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
                record.update({"class": k, "name": _class_name(classes, k),
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
