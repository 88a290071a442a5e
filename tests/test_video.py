"""Videos: reading and writing with PyAV, and ``cfcam-fast explain`` on a clip that pans
across a bundled photo (made here, so nothing is downloaded)."""
import re
import sys
from fractions import Fraction

import numpy as np
import pytest
from helpers import json_lines
from skimage import data

import cfcam_fast as cf
from cfcam_fast.cli import main
from cfcam_fast.data.models import imagenet_classes
from cfcam_fast.data.video import INSTALL_HINT, VideoWriter, read_video

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
FRAMES = 12


def _pan(path, fps, size=(240, 320)) -> list[np.ndarray]:
    """Encode (PyAV, H.264) a window of ``size`` moving right across the cat photo at ``fps``;
    returns the frames."""
    av = pytest.importorskip("av")
    photo = data.chelsea()  # 300 x 451
    height, width = size
    frames = [np.ascontiguousarray(photo[20:20 + height, 10 * i:10 * i + width]) for i in range(FRAMES)]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, 1 / Fraction(fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "pan.mp4"
    return path, _pan(path, 10)


@pytest.mark.parametrize("fps", [10, Fraction(30000, 1001)])
def test_read_video_gives_the_frames_rate_and_size_written(tmp_path, fps):
    path = tmp_path / "pan.mp4"
    written = _pan(path, fps)
    frames, info = read_video(path)
    assert (info.fps, info.frames, info.width, info.height) == (fps, FRAMES, 320, 240)
    assert isinstance(info.fps, Fraction)
    decoded = list(frames)
    assert len(decoded) == FRAMES
    for got, expected in zip(decoded, written):
        assert got.shape == (240, 320, 3) and got.dtype == np.uint8
        # Lossy H.264, but RGB in RGB order: close to what was written, far from it as BGR.
        assert np.abs(got.astype(int) - expected).mean() < 6
        assert np.abs(got.astype(int) - expected[..., ::-1]).mean() > 12


def test_writer_keeps_count_and_rate_and_pads_odd_sizes(tmp_path):
    pytest.importorskip("av")
    path, rate = tmp_path / "odd.mp4", Fraction(30000, 1001)
    with VideoWriter(path, rate) as writer:
        for i in range(FRAMES):
            writer.write(np.full((121, 161, 3), 20 * i, dtype=np.uint8))
    frames, info = read_video(path)
    assert (info.fps, info.frames, info.width, info.height) == (rate, FRAMES, 162, 122)
    assert len(list(frames)) == FRAMES == writer.count


def test_writer_round_trips_a_clip(clip, tmp_path):
    path, _ = clip
    frames, info = read_video(path)
    with VideoWriter(tmp_path / "copy.mp4", info.fps) as writer:
        for frame in frames:
            writer.write(frame)
    _, copy = read_video(tmp_path / "copy.mp4")
    assert copy == info


def test_explain_video_writes_overlay_video_and_one_record_per_frame(clip, tmp_path, capsys):
    path, written = clip
    out = tmp_path / "out"
    assert main(["explain", str(path), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["pan_cfcam.mp4", "pan_frames.jsonl"]
    frames, info = read_video(out / "pan_cfcam.mp4")
    assert (info.fps, info.frames, info.width, info.height) == (10, FRAMES, 320, 240)
    overlays = list(frames)
    assert len(overlays) == FRAMES
    assert np.abs(overlays[0].astype(int) - written[0]).mean() > 20  # the map is drawn on it
    records = json_lines(out / "pan_frames.jsonl")
    assert [r["index"] for r in records] == list(range(FRAMES))
    classes = imagenet_classes()
    for record in records:
        assert set(record) == {"index", "class", "name", "confidence", "milliseconds"}
        assert record["name"] == classes[record["class"]]
        assert 0.0 < record["confidence"] <= 1.0 and record["milliseconds"] > 0.0
    assert sum(r["class"] in CAT_CLASSES for r in records) > FRAMES // 2
    assert f"{path}: {FRAMES} frames (0 failed" in capsys.readouterr().out


def test_a_failed_frame_is_recorded_copied_and_makes_the_exit_status_nonzero(clip, tmp_path, monkeypatch,
                                                                             capsys):
    path, written = clip
    prepare, seen = cf.RealtimeCFCAM.preprocess, []

    def failing_on_frame_3(self, frame):
        seen.append(frame)
        if len(seen) == 4:
            raise ValueError("a bad frame")
        return prepare(self, frame)

    monkeypatch.setattr(cf.RealtimeCFCAM, "preprocess", failing_on_frame_3)
    out = tmp_path / "out"
    assert main(["explain", str(path), "--model", "resnet18", "--random-weights", "--out", str(out)]) == 1
    records = json_lines(out / "pan_frames.jsonl")
    assert len(records) == FRAMES
    assert records[3] == {"index": 3, "class": -1, "name": None, "confidence": None,
                          "milliseconds": records[3]["milliseconds"], "error": "frame 3: a bad frame"}
    assert all("error" not in r for i, r in enumerate(records) if i != 3)
    frames, info = read_video(out / "pan_cfcam.mp4")
    copied = list(frames)[3]
    assert info.frames == FRAMES and np.abs(copied.astype(int) - written[3]).mean() < 6
    captured = capsys.readouterr()
    assert "frame 3: a bad frame" in captured.err and f"{FRAMES} frames (1 failed" in captured.out


def test_a_file_that_is_not_a_video_is_a_value_error_naming_it(tmp_path):
    pytest.importorskip("av")
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")
    with pytest.raises(ValueError, match=re.escape(f"cannot read video {path}")):
        read_video(path)


def test_videos_and_images_in_one_call_are_refused(tmp_path, capsys):
    paths = [str(tmp_path / "clip.mp4"), str(tmp_path / "cat.png")]
    assert main(["explain", *paths, "--out", str(tmp_path / "out")]) == 1
    assert "videos and images in one call" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_without_pyav_a_video_is_a_one_line_error_saying_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "av", None)  # "import av" now raises ImportError
    with pytest.raises(ImportError, match="pip install"):
        read_video(tmp_path / "clip.mp4")
    assert main(["explain", str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == f"cfcam-fast: error: {INSTALL_HINT}"
