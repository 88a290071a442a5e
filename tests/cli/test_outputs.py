"""``cli.outputs``: the per-rank part files survive a line torn by a kill and merge without
duplicates, in order; atomic writes leave nothing behind on an error."""
import json

import pytest

from cfcam_fast.cli.outputs import PartWriter, done_records, merge, read_records, remove_temporaries, write_atomic


def test_part_files_survive_a_torn_line_and_merge_dedupes_and_sorts(tmp_path):
    writer = PartWriter(tmp_path, 0)
    writer.write([{"file": "b", "class": 1}, {"file": "a", "class": 2}])
    writer.close()
    part = tmp_path / "parts" / "rank-0.jsonl"
    with part.open("a") as stream:
        stream.write('{"file": "c", "cla')  # a write cut short by a kill
    assert [r["file"] for r in read_records(part)] == ["b", "a"]
    writer = PartWriter(tmp_path, 0)  # reopening cuts the torn tail, so the next line is whole
    writer.write([{"file": "c", "class": 3}])
    writer.close()
    other = PartWriter(tmp_path, 1)
    other.write([{"file": "a", "class": 2}, {"file": "z", "class": 9}])  # "a" twice; "z" not asked for
    other.close()
    assert set(done_records(tmp_path)) == {"a", "b", "c", "z"}
    records = merge(tmp_path, ["c", "a", "b"])
    assert [r["file"] for r in records] == ["a", "b", "c"]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records


def test_atomic_writes_leave_nothing_behind_on_an_error(tmp_path):
    target = tmp_path / "x.npy"
    write_atomic(target, lambda stream: stream.write(b"old"))

    def fail(stream):
        stream.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomic(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.npy"]
    (tmp_path / ".y.npy.abc.tmp").write_bytes(b"left by a kill")
    remove_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]
