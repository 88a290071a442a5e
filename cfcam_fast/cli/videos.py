"""``cfcam-fast explain`` on videos: each frame explained with ``RealtimeCFCAM``, an overlay
video and a record per frame (see ``cli.explain``)."""
from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from ..cams.realtime import RealtimeCFCAM
from ..data.dataset import unique_name
from ..data.models import class_name
from . import argtypes
from .options import load_target


def explain_videos(args: argparse.Namespace, paths: list[str]) -> int:
    """Explain each video frame by frame; returns 1 if any frame failed, else 0."""
    import torch

    from ..core.config import CFCAMConfig
    from ..data.models import imagenet_classes
    from ..data.video import import_av

    import_av()
    for text in paths:
        if not Path(text).is_file():
            raise ValueError(f"no such file: {text}")
    device = argtypes.device(args.device)
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
    failed, used = 0, set[str]()
    for text in paths:
        failed += _explain_video(rt, Path(text), out / unique_name(Path(text).stem, used), classes,
                                 f"model {args.model}, layer {layer_name}, device {device}")
    return 1 if failed else 0


def _explain_video(rt: RealtimeCFCAM, path: Path, prefix: Path, classes: list[str], setup: str) -> int:
    """Write ``<prefix>_cfcam.mp4`` and ``<prefix>_frames.jsonl`` for one video; returns the
    number of failed frames."""
    import torch
    from tqdm import tqdm

    from ..data.video import VideoWriter, read_video
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
            if error is None and frame is None:
                error = f"frame {result.index}: explained, but the decoded frame was not kept"
            if error is None and frame is not None:
                k = result.class_idx
                record.update({"class": k, "name": class_name(classes, k),
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
