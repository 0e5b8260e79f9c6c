"""Thread budget per rank and the progress display."""

import io
import re
import types

import pytest

from hpcml.core import progress as progress_mod
from hpcml.core.progress import Progress, format_duration
from hpcml.core.threads import THREAD_ENV_VARS, thread_env, threads_per_rank, usable_cores

# -- threads_per_rank --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ranks, cli, environ, cores, expect",
    [
        # the command line wins over everything
        (4, 3, {"SLURM_CPUS_PER_TASK": "5", "OMP_NUM_THREADS": "7"}, 64, (3, "--threads-per-rank")),
        # then Slurm's allocation
        (4, None, {"SLURM_CPUS_PER_TASK": "5", "OMP_NUM_THREADS": "7"}, 64,
         (5, "SLURM_CPUS_PER_TASK")),
        # then OMP_NUM_THREADS (first level of a nested list)
        (4, None, {"OMP_NUM_THREADS": "7"}, 64, (7, "OMP_NUM_THREADS")),
        (4, None, {"OMP_NUM_THREADS": "6,2"}, 64, (6, "OMP_NUM_THREADS")),
        # else the cores on the node shared by its ranks
        (4, None, {}, 64, (16, "cores/ranks")),
        (3, None, {}, 8, (2, "cores/ranks")),
        # never below one thread
        (16, None, {}, 4, (1, "cores/ranks")),
        (0, None, {}, 4, (4, "cores/ranks")),
        (2, 0, {}, 8, (1, "--threads-per-rank")),
        # unusable values fall through to the next source
        (2, None, {"SLURM_CPUS_PER_TASK": "0", "OMP_NUM_THREADS": "x"}, 8, (4, "cores/ranks")),
        (2, None, {"SLURM_CPUS_PER_TASK": "", "OMP_NUM_THREADS": "3"}, 8, (3, "OMP_NUM_THREADS")),
    ],
)
def test_threads_per_rank_precedence(ranks, cli, environ, cores, expect):
    assert threads_per_rank(ranks, cli=cli, environ=environ, cores=cores) == expect


def test_threads_per_rank_reads_cores_from_environ():
    # without cores=, usable cores come from the given environment's override
    assert threads_per_rank(4, environ={"HPCML_CPU_COUNT": "12"}) == (3, "cores/ranks")


def test_usable_cores_override_and_default():
    assert usable_cores({"HPCML_CPU_COUNT": "7"}) == 7
    assert usable_cores({"HPCML_CPU_COUNT": "0"}) == 1
    assert usable_cores({}) >= 1


def test_thread_env_sets_every_pool():
    env = thread_env(3, environ={})
    assert env == {var: "3" for var in THREAD_ENV_VARS}
    assert "OMP_NUM_THREADS" in env and "OPENBLAS_NUM_THREADS" in env and "MKL_NUM_THREADS" in env


def test_thread_env_keeps_the_users_values():
    env = thread_env(3, environ={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "8"})
    assert "OMP_NUM_THREADS" not in env
    assert "MKL_NUM_THREADS" not in env
    assert env["OPENBLAS_NUM_THREADS"] == "3"
    # merged the way the launcher does it, the user's values survive
    user = {"OMP_NUM_THREADS": "1"}
    merged = {**user, **thread_env(4, environ=user)}
    assert merged["OMP_NUM_THREADS"] == "1"
    assert merged["OPENBLAS_NUM_THREADS"] == "4"


# -- format_duration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0.0s"),
        (4.23, "4.2s"),
        (59.94, "59.9s"),
        (59.97, "1m00s"),
        (60, "1m00s"),
        (185, "3m05s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (3725, "1h02m"),
        (90061, "25h01m"),
        (float("nan"), "?"),
        (float("inf"), "?"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# -- Progress ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progress_mod, "time", types.SimpleNamespace(monotonic=fake))
    return fake


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_line_has_counts_rate_and_eta(clock):
    p = Progress(100, stream=io.StringIO())
    clock.t += 10.0
    line = p.line(25)
    assert "25/100" in line
    assert "25.0%" in line
    assert "2.50/s" in line
    assert "elapsed 10.0s" in line
    assert "ETA 30.0s" in line  # 75 left at 2.5 per second
    assert p.label in line


def test_eta_from_estimated_work_when_costly_tasks_go_first(clock):
    # 10 tasks of 9 s then 90 tasks of 0.1 s, estimated: after the 10 costly ones the
    # count says 90 tasks left at 1 per 10 s, the work says 9 s of 99 left
    p = Progress(100, stream=io.StringIO(), work=99.0)
    by_count = Progress(100, stream=io.StringIO())
    clock.t += 90.0
    p.update(10, work=90.0)
    assert "10/100" in p.line(10)
    assert "ETA 9.0s" in p.line(10)
    assert "ETA 13m30s" in by_count.line(10)
    clock.t += 9.0
    p.update(100, work=99.0)
    assert "ETA 0.0s" in p.line(100)


def test_line_before_any_progress_has_unknown_eta(clock):
    p = Progress(10, stream=io.StringIO())
    assert "ETA ?" in p.line(0)


def test_skipped_tasks_do_not_count_in_the_rate(clock):
    p = Progress(100, stream=io.StringIO())
    p.skip(50)
    clock.t += 10.0
    line = p.line(60)
    assert "60/100" in line
    assert "1.00/s" in line
    assert "ETA 40.0s" in line


def test_non_tty_writes_plain_lines_throttled(clock):
    out = io.StringIO()
    p = Progress(10, stream=out, interval=5.0)
    p.update(1)  # first update is shown
    clock.t += 1.0
    p.update(2)  # within the interval: not shown
    clock.t += 1.0
    p.update(3)
    assert out.getvalue().count("\n") == 1
    clock.t += 5.0
    p.update(4)
    text = out.getvalue()
    lines = text.splitlines()
    assert len(lines) == 2
    assert "1/10" in lines[0] and "4/10" in lines[1]
    assert "\r" not in text and "\x1b" not in text and "[#" not in text
    p.update(5, force=True)  # force ignores the interval
    assert out.getvalue().splitlines()[-1].startswith("fits 5/10")


def test_close_shows_the_final_state_once(clock):
    out = io.StringIO()
    p = Progress(3, stream=out, interval=60.0)
    p.update(1)
    clock.t += 1.0
    p.update(3)
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "3/3" in lines[-1] and "100.0%" in lines[-1]
    p.close()  # nothing new to show
    assert len(out.getvalue().splitlines()) == 2


def test_tty_redraws_one_line(clock):
    out = TTY()
    p = Progress(4, stream=out)
    assert p.tty
    p.update(2)
    text = out.getvalue()
    assert text.startswith("\r[")
    assert "#" * 12 + "." * 12 in text  # half of a 24-wide bar
    assert "\n" not in text
    clock.t += 1.0
    p.update(4)
    p.close()
    assert out.getvalue().endswith("\n")
    assert out.getvalue().count("\r") == 2


def test_disabled_and_empty_progress_write_nothing(clock):
    out = io.StringIO()
    p = Progress(10, stream=out, enabled=False)
    p.update(5, force=True)
    p.close()
    q = Progress(0, stream=out)
    q.update(0, force=True)
    q.close()
    assert out.getvalue() == ""


def test_custom_label(clock):
    p = Progress(2, stream=io.StringIO(), label="predict")
    assert re.match(r"predict 1/2 ", p.line(1))
