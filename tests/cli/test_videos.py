"""``cfcam-fast explain`` on videos (``cli.videos``): an overlay video and one record per frame
for a clip that pans across a bundled photo (made here, so nothing is downloaded), a failed
frame, videos mixed with images, and a missing PyAV."""
import sys

import numpy as np
import pytest
from helpers import PAN_FRAMES, json_lines, pan_video

import cfcam_fast as cf
from cfcam_fast.cli import main
from cfcam_fast.data.models import imagenet_classes
from cfcam_fast.data.video import INSTALL_HINT, read_video

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "pan.mp4"
    return path, pan_video(path, 10)


def test_explain_video_writes_overlay_video_and_one_record_per_frame(clip, tmp_path, capsys):
    path, written = clip
    out = tmp_path / "out"
    assert main(["explain", str(path), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["pan_cfcam.mp4", "pan_frames.jsonl"]
    frames, info = read_video(out / "pan_cfcam.mp4")
    assert (info.fps, info.frames, info.width, info.height) == (10, PAN_FRAMES, 320, 240)
    overlays = list(frames)
    assert len(overlays) == PAN_FRAMES
    assert np.abs(overlays[0].astype(int) - written[0]).mean() > 20  # the map is drawn on it
    records = json_lines(out / "pan_frames.jsonl")
    assert [r["index"] for r in records] == list(range(PAN_FRAMES))
    classes = imagenet_classes()
    for record in records:
        assert set(record) == {"index", "class", "name", "confidence", "milliseconds"}
        assert record["name"] == classes[record["class"]]
        assert 0.0 < record["confidence"] <= 1.0 and record["milliseconds"] > 0.0
    assert sum(r["class"] in CAT_CLASSES for r in records) > PAN_FRAMES // 2
    assert f"{path}: {PAN_FRAMES} frames (0 failed" in capsys.readouterr().out


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
    assert len(records) == PAN_FRAMES
    assert records[3] == {"index": 3, "class": -1, "name": None, "confidence": None,
                          "milliseconds": records[3]["milliseconds"], "error": "frame 3: a bad frame"}
    assert all("error" not in r for i, r in enumerate(records) if i != 3)
    frames, info = read_video(out / "pan_cfcam.mp4")
    copied = list(frames)[3]
    assert info.frames == PAN_FRAMES and np.abs(copied.astype(int) - written[3]).mean() < 6
    captured = capsys.readouterr()
    assert "frame 3: a bad frame" in captured.err and f"{PAN_FRAMES} frames (1 failed" in captured.out


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
