"""``data.video``: reading and writing videos with PyAV, on a clip that pans across a bundled
photo (made here, so nothing is downloaded). ``cfcam-fast explain`` on videos is tested in
tests/cli/test_videos.py."""
import re
from fractions import Fraction

import numpy as np
import pytest
from helpers import PAN_FRAMES, pan_video

from cfcam_fast.data.video import VideoWriter, read_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "pan.mp4"
    return path, pan_video(path, 10)


@pytest.mark.parametrize("fps", [10, Fraction(30000, 1001)])
def test_read_video_gives_the_frames_rate_and_size_written(tmp_path, fps):
    path = tmp_path / "pan.mp4"
    written = pan_video(path, fps)
    frames, info = read_video(path)
    assert (info.fps, info.frames, info.width, info.height) == (fps, PAN_FRAMES, 320, 240)
    assert isinstance(info.fps, Fraction)
    decoded = list(frames)
    assert len(decoded) == PAN_FRAMES
    for got, expected in zip(decoded, written):
        assert got.shape == (240, 320, 3) and got.dtype == np.uint8
        # Lossy H.264, but RGB in RGB order: close to what was written, far from it as BGR.
        assert np.abs(got.astype(int) - expected).mean() < 6
        assert np.abs(got.astype(int) - expected[..., ::-1]).mean() > 12


def test_writer_keeps_count_and_rate_and_pads_odd_sizes(tmp_path):
    pytest.importorskip("av")
    path, rate = tmp_path / "odd.mp4", Fraction(30000, 1001)
    with VideoWriter(path, rate) as writer:
        for i in range(PAN_FRAMES):
            writer.write(np.full((121, 161, 3), 20 * i, dtype=np.uint8))
    frames, info = read_video(path)
    assert (info.fps, info.frames, info.width, info.height) == (rate, PAN_FRAMES, 162, 122)
    assert len(list(frames)) == PAN_FRAMES == writer.count


def test_writer_round_trips_a_clip(clip, tmp_path):
    path, _ = clip
    frames, info = read_video(path)
    with VideoWriter(tmp_path / "copy.mp4", info.fps) as writer:
        for frame in frames:
            writer.write(frame)
    _, copy = read_video(tmp_path / "copy.mp4")
    assert copy == info


def test_a_file_that_is_not_a_video_is_a_value_error_naming_it(tmp_path):
    pytest.importorskip("av")
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")
    with pytest.raises(ValueError, match=re.escape(f"cannot read video {path}")):
        read_video(path)
