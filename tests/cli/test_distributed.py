"""``cli.distributed``: the shards and the one-process set-up, in-process; then ``explain`` and
``evaluate`` over a dataset in several processes (torchrun, gloo on the CPU): the merged
outputs equal a one-process run's, bit for bit, also after ranks were killed and the run was
resumed; a rank that dies makes the run fail naming it instead of hanging.

Those tests start real processes (``python -m cfcam_fast``, ``python -m torch.distributed.run``)
on a random-initialised ResNet-18 at 64 px, so they take a few minutes on 2 CPU cores and are
marked slow. ``rank_killer.py``, beside this file, runs the command with one rank killed
part-way (``KILL_AFTER``).
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cfcam_fast.cli.distributed import Context, setup

ROOT = Path(__file__).resolve().parents[2]
IMAGES = 16
# Batches of 2 give 9 batches for the 17 files: each rank gets several, and a kill after 4 images
# leaves work to resume. 64 px keeps layer4 at 2x2, the smallest grid where a map has a shape.
OPTIONS = ["--model", "resnet18", "--random-weights", "--size", "64", "--batch-size", "2", "--timeout", "60"]
EXPLAIN = ["explain", *OPTIONS, "--save-maps", "--no-overlays"]
RUN_LIMIT_S = 240  # a hung run fails the test instead of blocking the suite
KILLER = Path(__file__).with_name("rank_killer.py")  # runs cfcam-fast, killing a rank part-way (KILL_AFTER)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "KILL_AFTER")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"  # the same thread count in every process and every run
    env.update(extra)
    return env


def _cli(args: list, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cfcam_fast", *map(str, args)], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=RUN_LIMIT_S)


def _torchrun_command(args: list, processes: int = 2, killer: bool = False) -> list:
    program = [str(KILLER)] if killer else ["-m", "cfcam_fast"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            *program, *map(str, args)]


def _torchrun(args: list, processes: int = 2, **env) -> subprocess.CompletedProcess:
    return subprocess.run(_torchrun_command(args, processes, killer="KILL_AFTER" in env), cwd=ROOT,
                          env=_env(**env), capture_output=True, text=True, timeout=RUN_LIMIT_S)


def _records(out: Path) -> list[dict]:
    """results.jsonl without the timings (the one field that differs between runs)."""
    lines = (out / "results.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "timing"} for line in lines]


def _assert_same_outputs(out: Path, reference: Path) -> None:
    records = _records(out)
    assert records == _records(reference)
    files = [r["file"] for r in records]
    assert files == sorted(set(files))  # sorted, each file once
    maps = sorted(p.name for p in (out / "maps").iterdir())
    assert maps == sorted(p.name for p in (reference / "maps").iterdir())
    assert maps == sorted(Path(r["map"]).name for r in records if "map" in r)
    for name in maps:
        assert np.array_equal(np.load(out / "maps" / name), np.load(reference / "maps" / name)), name
    assert not (out / "parts").exists()


def test_shards_are_disjoint_and_cover_the_work():
    work = list(range(11))
    shards = [Context(rank=r, world_size=3).shard(work) for r in range(3)]
    assert sorted(sum(shards, [])) == work and shards[1] == [1, 4, 7, 10]


def test_setup_without_torchrun_is_one_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    ctx = setup("cpu", 5.0)
    assert (ctx.rank, ctx.world_size, ctx.grouped, ctx.device.type) == (0, 1, False, "cpu")
    assert ctx.sum([3, 4], "a count") == [3, 4]
    with pytest.raises(ValueError, match="timeout"):
        setup("cpu", 0.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """An ImageFolder with two classes of 8 small random images each, plus one corrupt file."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        folder = root / ("cat" if i % 2 else "dog")
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40 + i, 48, 3), dtype=np.uint8)).save(folder / f"img {i:02d}.png")
    (root / "cat" / "broken.png").write_text("not a PNG")
    return root


@pytest.fixture(scope="module")
def single(data, tmp_path_factory) -> Path:
    """The one-process run every sharded run is compared with (decoding in one worker process)."""
    out = tmp_path_factory.mktemp("single") / "out"
    done = _cli([*EXPLAIN, data, "--workers", "1", "--out", out])
    assert done.returncode == 1, done.stderr  # 1: the corrupt file failed
    return out


@pytest.mark.slow
def test_one_process_records_labels_maps_and_the_corrupt_file(single, data):
    records = _records(single)
    assert len(records) == IMAGES + 1
    broken = [r for r in records if "error" in r]
    assert [r["file"] for r in broken] == [str(data / "cat" / "broken.png")]
    assert broken[0]["error"].startswith("cannot read image") and broken[0]["label"] == "cat"
    for record in records:
        assert record["label"] == Path(record["file"]).parent.name
        if "error" not in record:
            assert set(record) == {"file", "label", "class", "class_name", "confidence", "map"}
            cam_map = np.load(single / record["map"])
            assert cam_map.dtype == np.float32 and cam_map.shape == (64, 64)
    assert (single / "maps" / "cat__img_01.npy").is_file()  # path inside the folder, made safe
    run = json.loads((single / "run.json").read_text())
    assert (run["images"], run["explained"], run["failed"]) == (IMAGES + 1, IMAGES, 1)


@pytest.mark.slow
def test_two_processes_give_the_one_process_outputs(single, data, tmp_path):
    out = tmp_path / "out"
    done = _torchrun([*EXPLAIN, data, "--workers", "0", "--out", out])
    assert done.returncode != 0  # the corrupt file makes its rank's exit status 1
    assert "explain: 16 done, 0 skipped as already done, 1 failed" in done.stdout
    _assert_same_outputs(out, single)
    assert json.loads((out / "run.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_a_dead_rank_fails_the_run_named_and_a_rerun_completes_it(single, data, tmp_path):
    out = tmp_path / "out"
    killed = _torchrun([*EXPLAIN, data, "--workers", "0", "--out", out], KILL_AFTER="1:4")
    assert killed.returncode != 0
    # torchrun stops the other rank and names the dead one as the root cause.
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s*\n\s*exitcode\s*:\s*-9", killed.stderr), killed.stderr
    assert not (out / "results.jsonl").exists()
    lines = (out / "parts" / "rank-1.jsonl").read_text().splitlines()
    assert len(lines) == 4
    with (out / "parts" / "rank-1.jsonl").open("a") as part:  # a line torn by the kill
        part.write(lines[-1][: len(lines[-1]) // 2])
    resumed = _torchrun([*EXPLAIN, data, "--workers", "0", "--out", out])
    skipped = int(re.search(r"(\d+) skipped as already done", resumed.stdout).group(1))
    assert skipped >= 4, resumed.stdout
    _assert_same_outputs(out, single)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_without_the_launcher_the_survivor_names_the_dead_rank_and_one_process_resumes(single, data, tmp_path):
    """Ranks started by hand (no torchrun agent to stop them): rank 1 dies, rank 0's next
    collective fails at once (gloo sees the closed connection) and it exits naming rank 1."""
    out = tmp_path / "out"
    port = _free_port()
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "KILL_AFTER": "1:4"}
    args = [sys.executable, str(KILLER), *EXPLAIN, str(data), "--workers", "0", "--out", str(out),
            "--timeout", "30"]
    ranks = [subprocess.Popen(args, cwd=ROOT, env=_env(RANK=str(r), LOCAL_RANK=str(r), **common),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outputs = [rank.communicate(timeout=RUN_LIMIT_S) for rank in ranks]
    assert ranks[1].returncode == -signal.SIGKILL
    assert ranks[0].returncode == 1
    message = outputs[0][1]
    assert "cfcam-fast: error: rank 0: lost the other ranks" in message, message
    assert "ranks that had not finished their share: 1" in message and "Traceback" not in message
    resumed = _cli([*EXPLAIN, data, "--workers", "0", "--out", out])  # another world size resumes too
    assert resumed.returncode == 1 and " 0 skipped" not in resumed.stdout
    _assert_same_outputs(out, single)


@pytest.mark.slow
def test_all_ranks_killed_part_way_then_rerun(single, data, tmp_path):
    out = tmp_path / "out"
    run = subprocess.Popen(_torchrun_command([*EXPLAIN, data, "--workers", "0", "--out", out]), cwd=ROOT,
                           env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parts = out / "parts"
    deadline = time.monotonic() + RUN_LIMIT_S
    while run.poll() is None and time.monotonic() < deadline:
        written = sum(len(p.read_text().splitlines()) for p in parts.glob("rank-*.jsonl")) if parts.exists() else 0
        if written >= 4:
            break
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)  # the launcher and both ranks, wherever they are
    run.wait()
    assert not (out / "results.jsonl").exists()
    resumed = _torchrun([*EXPLAIN, data, "--workers", "0", "--out", out])
    assert resumed.returncode != 0 and " 0 skipped" not in resumed.stdout
    _assert_same_outputs(out, single)


@pytest.mark.slow
def test_evaluate_from_a_list_file_two_processes_equal_one(data, tmp_path):
    listing = tmp_path / "lists" / "few.txt"
    listing.parent.mkdir()
    chosen = sorted((data / "dog").iterdir())[:4]
    listing.write_text("# four dogs and a missing file\n\n" + "\n".join(
        [str(chosen[0]), *(os.path.relpath(p, listing.parent) for p in chosen[1:]), "missing.png"]) + "\n")
    # CF-CAM, a gradient method and one with seeded noisy copies (Score-CAM's masked forwards
    # are deterministic and slow: tests/cli/test_evaluate.py runs them); one ROAD percentile and
    # one sanity step keep the two runs short.
    fast = ["evaluate", *OPTIONS, "--steps", "2", "--scales", "1", "--draws", "1",
            "--methods", "cf-cam-gaussian-softmax,grad-cam,smooth-grad-cam++",
            "--road-percentiles", "50", "--sanity-steps", "1", listing]
    one = _cli([*fast, "--workers", "0", "--out", tmp_path / "one"])
    two = _torchrun([*fast, "--workers", "0", "--out", tmp_path / "two"])
    assert one.returncode == 1 and two.returncode != 0  # the missing file
    records = _records(tmp_path / "one")
    assert records == _records(tmp_path / "two") and len(records) == 5
    assert records[-1]["file"] == str(listing.parent / "missing.png") and "no such file" in records[-1]["error"]
    summaries = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two")]
    means = [{m: e["metrics"] for m, e in s["methods"].items()} for s in summaries]
    assert means[0] == means[1]
    interval = means[0]["Grad-CAM"]["deletion_zero"]
    assert interval["n"] == 4 and interval["ci95"][0] <= interval["mean"] <= interval["ci95"][1]
    assert list(summaries[0]["methods"]) == ["CF-CAM gaussian/softmax", "Grad-CAM", "Smooth Grad-CAM++"]
    assert all(e["milliseconds_per_image"] > 0 for e in summaries[1]["methods"].values())
    assert (tmp_path / "two" / "evaluate.md").is_file() and (tmp_path / "two" / "evaluate.png").is_file()
