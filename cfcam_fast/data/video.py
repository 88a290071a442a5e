"""Videos in and out, frame by frame, with PyAV (the optional ``[video]`` extra).

``read_video`` decodes lazily to ``HxWx3`` uint8 RGB arrays; ``VideoWriter`` encodes frames
at a given rate, one output frame per frame written, so a video read and written back keeps
its frame count and rate. PyAV is imported only when a video is used.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})
INSTALL_HINT = 'video input needs PyAV: pip install "cfcam-fast[video]" (or pip install av)'


class PyAVMissing(ImportError, ValueError):
    """PyAV is not installed: an ``ImportError``, and a ``ValueError`` so that the CLI
    reports it as a one-line user error."""


def import_av() -> ModuleType:
    """The ``av`` module, or ``PyAVMissing`` saying what to install."""
    try:
        import av
    except ImportError:
        raise PyAVMissing(INSTALL_HINT) from None
    return av


def is_video(path: str | Path) -> bool:
    """Whether ``path``'s suffix is a video container's (.mp4, .mov, .avi, .mkv, .webm, .m4v)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """A video stream: its frame rate (exact), frame count (``None`` when the container does
    not say) and frame size in pixels."""

    fps: Fraction
    frames: int | None
    width: int
    height: int


def read_video(path: str | Path) -> tuple[Iterator[np.ndarray], VideoInfo]:
    """The frames of the first video stream of ``path`` (decoded one at a time, ``HxWx3``
    uint8 RGB) and its ``VideoInfo``. The file stays open until the frames are exhausted
    or the iterator is dropped. An unreadable file is a ``ValueError`` naming it."""
    av = import_av()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"cannot read video {path}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise ValueError(f"cannot read video {path}: it has no video stream")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        container.close()
        raise ValueError(f"cannot read video {path}: its frame rate is unknown")
    info = VideoInfo(Fraction(rate), stream.frames or None, stream.width, stream.height)

    def frames() -> Iterator[np.ndarray]:
        with container:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")

    return frames(), info


def _codec(av: ModuleType) -> str:
    """H.264 (``libx264``) where PyAV's FFmpeg has it, else MPEG-4 Part 2 (``mpeg4``)."""
    try:
        av.codec.Codec("libx264", "w")
    except (av.FFmpegError, ValueError):
        return "mpeg4"
    return "libx264"


class VideoWriter:
    """Encodes ``HxWx3`` uint8 RGB frames to ``path`` (an .mp4, .mov or .mkv) at ``fps``
    frames per second: frame ``i`` is shown at ``i / fps`` seconds, so the file holds as
    many frames as were written, at that rate.

    H.264 (``libx264``) where PyAV's FFmpeg has it, else ``mpeg4``, both in yuv420p, which
    needs an even width and height: a frame with an odd one is padded by one pixel (its
    last row or column repeated). All frames must have the size of the first. Use as a
    context manager, or call ``close`` to flush the encoder and finish the file.
    """

    def __init__(self, path: str | Path, fps: Fraction | float) -> None:
        self._av = import_av()
        self.path, self.fps = Path(path), Fraction(fps).limit_denominator(1_000_000)
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._container = self._av.open(str(self.path), mode="w")
        self._stream: Any = None
        self._size: tuple[int, int] | None = None
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        """Encode one ``HxWx3`` uint8 RGB frame."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 frame, got {frame.dtype} {list(frame.shape)}")
        if self._stream is None:
            self._size = frame.shape[:2]
            self._stream = self._container.add_stream(_codec(self._av), rate=self.fps)
            self._stream.height, self._stream.width = (n + n % 2 for n in self._size)
            self._stream.pix_fmt = "yuv420p"
        elif frame.shape[:2] != self._size:
            height, width = self._size or (0, 0)
            raise ValueError(f"frame {self.count} is {frame.shape[1]}x{frame.shape[0]}, the video "
                             f"{width}x{height}")
        height, width = frame.shape[:2]
        frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        picture = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        picture.pts, picture.time_base = self.count, 1 / self.fps
        self._container.mux(self._stream.encode(picture))
        self.count += 1

    def close(self) -> None:
        """Flush the encoder and close the file."""
        if self._stream is not None:
            self._container.mux(self._stream.encode(None))
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
