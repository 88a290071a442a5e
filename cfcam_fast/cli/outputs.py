"""Output files of a dataset run that survive being killed at any point.

Each rank appends its records to ``OUT/parts/rank-<K>.jsonl``, one JSON object per line,
one write and flush per batch; a line cut short by a kill is not valid JSON and is ignored
(and cut off before the rank appends again). Every other file (maps, overlays, the merged
``results.jsonl``, summaries) is written under a temporary name and moved into place with
``os.replace``, so it is either whole or absent. ``done_records`` reads what earlier runs
finished; ``merge`` writes one record per input, sorted by file.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

RESULTS = "results.jsonl"
PARTS = "parts"


def write_file_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)`` for a temporary file next to ``path``, then move it to
    ``path`` (``os.replace``); on an error the temporary file is removed."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, write: Callable) -> None:
    """Call ``write(stream)`` on a binary stream to a temporary file, then move it to ``path``."""
    def to_stream(temporary: Path) -> None:
        with temporary.open("wb") as stream:
            write(stream)
    write_file_atomic(path, to_stream)


def remove_temporaries(folder: Path) -> None:
    """Delete the temporary files a killed run left in ``folder`` and its sub-folders."""
    for leftover in Path(folder).rglob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """``text`` to ``path`` (UTF-8), atomically."""
    write_atomic(path, lambda stream: stream.write(text.encode()))


def save_map(path: Path, cam_map) -> None:
    """A ``[H, W]`` map as a float32 ``.npy`` file at ``path``, atomically."""
    array = np.ascontiguousarray(np.asarray(cam_map, dtype=np.float32))
    write_atomic(path, lambda stream: np.save(stream, array))


def read_records(path: Path) -> Iterator[dict]:
    """The whole JSON-object lines of ``path``; torn or blank lines are skipped."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "file" in record:
            yield record


def done_records(out: Path) -> dict[str, dict]:
    """Every record finished in ``out`` by earlier runs (merged results, then part files), by file."""
    out = Path(out)
    found: dict[str, dict] = {}
    sources = [out / RESULTS] + sorted((out / PARTS).glob("rank-*.jsonl"))
    for source in sources:
        for record in read_records(source):
            found.setdefault(record["file"], record)
    return found


def _jsonl(records: Iterable[dict]) -> str:
    """``records`` as JSON lines, keys sorted."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)


class PartWriter:
    """Appends one rank's records to ``OUT/parts/rank-<rank>.jsonl``, a batch per write."""

    def __init__(self, out: Path, rank: int):
        self.path = Path(out) / PARTS / f"rank-{rank}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cut_torn_tail()
        self._stream = self.path.open("ab")

    def _cut_torn_tail(self) -> None:
        """Drop a last line without its newline (a write cut short), so appends start clean."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as stream:
                stream.truncate(data.rfind(b"\n") + 1)

    def write(self, records: Iterable[dict]) -> None:
        """Append ``records`` as lines, in one write, flushed to the operating system."""
        data = _jsonl(records).encode()
        if data:
            self._stream.write(data)
            self._stream.flush()
            os.fsync(self._stream.fileno())

    def close(self) -> None:
        """Close the file."""
        self._stream.close()


def merge(out: Path, keys: list[str]) -> list[dict]:
    """Write ``OUT/results.jsonl``: one record per file in ``keys`` that a run finished (the
    first found; the same file twice is kept once), sorted by file; returns the records."""
    found = done_records(out)
    records = [found[k] for k in sorted(keys) if k in found]
    write_text_atomic(Path(out) / RESULTS, _jsonl(records))
    return records
