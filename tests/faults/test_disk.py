"""Disk faults: a full file system under --out, a journal torn mid-line, two runs on one --out."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from faultkit import journal_lines, one_error_line, run, spec, start, wait_for

from hpcml.run.experiment import run_experiment

MODELS = """\
  m:
    estimator: faultmodels:Majority
    params: {delay: 0.15}
    grid: {C: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]}
"""


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs, mounted for the test (root)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the disk test needs root): {done.stderr}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _records(out: Path) -> tuple[int, int]:
    """(complete records, torn last lines) of the journal files."""
    complete = torn = 0
    for path in (out / "journal").glob("*.jsonl"):
        text = path.read_text()
        lines = text.split("\n")
        for line in lines[:-1]:
            json.loads(line)  # every complete line is a whole record
            complete += 1
        torn += bool(lines[-1])
    return complete, torn


@pytest.mark.timeout(120)
def test_full_disk_under_out_is_one_line_and_resume_works_after(tmp_path, small_fs):
    s = spec(tmp_path / "s.yaml", MODELS)
    out = small_fs / "out"
    proc = start(["run", "-n", "2", str(s), "--out", str(out), "--no-progress"], tmp_path)
    wait_for(lambda: journal_lines(out) >= 4, 60, "the first fits in the journal")
    filler = small_fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill it while the journal is written
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    t0 = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stdout + stderr and "Abort(" not in stderr
    lines = stderr.strip().splitlines()  # one line from each rank that hit the full disk
    assert 1 <= len(lines) <= 2, stderr
    for line in lines:
        assert line.startswith("hpcml: error: rank ")
        for needle in ("no space left on the device (ENOSPC)", f"--out {out}: ",
                       "writing journal/rank", "free space there and run the same command "
                       "again to resume"):
            assert needle in line, line
    complete, torn = _records(out)
    assert complete >= 4 and torn <= 2
    filler.unlink()
    again = run(["run", "-n", "2", str(s), "--out", str(out), "--no-progress"], tmp_path,
                timeout=90)
    assert again.returncode == 0, again.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["n_resumed"] >= complete - 1 and info["complete"]


def test_journal_torn_mid_line_resumes(tmp_path):
    s = spec(tmp_path / "s.yaml", MODELS.replace("0.15", "0"))
    first = run_experiment(s, tmp_path / "out", progress=False)
    (tmp_path / "out" / "run.json").unlink()  # as if the run had been killed
    path = next((tmp_path / "out" / "journal").glob("*.jsonl"))
    text = path.read_text()
    cut = text.rindex("\n", 0, len(text) - 1) + 40  # keep 40 bytes of the last record
    path.write_text(text[:cut])
    again = run_experiment(s, tmp_path / "out", progress=False)
    assert again.n_resumed == 39
    assert again.cv_results["mean_test_score"].tolist() == first.cv_results[
        "mean_test_score"].tolist()


@pytest.mark.timeout(90)
def test_a_second_run_on_the_same_out_is_refused_naming_the_first(tmp_path):
    s = spec(tmp_path / "s.yaml", MODELS)
    out = tmp_path / "out"
    first = start(["run", "-n", "1", str(s), "--out", str(out), "--no-progress"], tmp_path)
    wait_for(lambda: journal_lines(out) >= 1, 60, "the first run's fits")
    t0 = time.monotonic()
    second = run(["run", "-n", "2", str(s), "--out", str(out), "--no-progress"], tmp_path)
    assert time.monotonic() - t0 < 10  # refused at once, before any rank starts
    assert second.returncode == 2
    line = one_error_line(second, "another hpcml run is using this folder",
                          f"pid {first.pid}", "started 20", "choose another --out")
    holder = json.loads((out / ".hpcml.lock").read_text())
    assert holder["host"] in line
    first.kill()  # the first dies: its lock is stale
    first.wait(10)
    third = run(["run", "-n", "1", str(s), "--out", str(out), "--no-progress"], tmp_path)
    assert third.returncode == 0, third.stderr
    assert f"taking over the stale lock of pid {first.pid}" in third.stderr
    assert json.loads((out / "run.json").read_text())["n_resumed"] >= 1


def test_the_shards_of_one_run_may_share_out_but_not_a_shard(tmp_path):
    """An array's shards run at once into one --out; the same shard twice is refused."""
    from hpcml.errors import UsageError
    from hpcml.run.lock import RunLock

    first, second = RunLock(tmp_path, (0, 2)), RunLock(tmp_path, (1, 2))
    first.acquire()
    second.acquire()  # another shard: its own lock
    try:
        with pytest.raises(UsageError, match="another hpcml run is using this folder"):
            RunLock(tmp_path, (0, 2)).acquire()
    finally:
        first.release()
        second.release()
