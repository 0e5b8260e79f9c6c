"""Helpers of the fault tests (tests/faults/): run ``hpcml`` as a user would, never leave a process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

_started: list[subprocess.Popen] = []


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no launcher variables, the test models importable."""
    env = {**os.environ, "UCX_LOG_LEVEL": "error", **extra}
    for var in ("PMI_RANK", "PMI_SIZE", "PMI_FD", "HYDRA_CONTROL_FD", "PMIX_RANK"):
        env.pop(var, None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), str(HERE.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def start(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    """Start ``python -m hpcml ARGS`` in its own session (killed at the end of the test)."""
    proc = subprocess.Popen([sys.executable, "-m", "hpcml", *args], cwd=cwd,
                            env=cli_env(HPCML_TEST_MARKS=str(cwd)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)
    _started.append(proc)
    return proc


def run(args: list[str], cwd: Path, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run ``python -m hpcml ARGS`` to its end (killed, and the test failed, at ``timeout``)."""
    proc = start(args, cwd, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, err = proc.communicate()
        pytest.fail(f"hpcml {' '.join(args)} still running after {timeout} s:\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def procs_with(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker`` (zombies excluded)."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(
                    p.info["cmdline"] or ()):
                found.append(p.pid)
        except (psutil.Error, TypeError):
            continue
    return found


def wait_gone(marker: str, timeout: float) -> list[int]:
    """Wait up to ``timeout`` s for every process with ``marker`` to end; those left."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        left = procs_with(marker)
        if not left:
            return []
        time.sleep(0.2)
    return procs_with(marker)


def kill_tree(pid: int) -> None:
    """SIGKILL a process we started and its descendants."""
    import psutil

    try:
        parent = psutil.Process(pid)
        kids = parent.children(recursive=True)
    except psutil.Error:
        return
    for p in [parent, *kids]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The one ``hpcml: error:`` line of ``proc``'s stderr, holding every needle; no traceback."""
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("hpcml: error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def wait_for(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def journal_lines(out: Path) -> int:
    return sum(p.read_text().count("\n") for p in (out / "journal").glob("*.jsonl")) \
        if (out / "journal").is_dir() else 0


@pytest.fixture(autouse=True, name="_no_leftovers")
def no_leftovers():
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait(10)


def spec(path: Path, models: str, data: str = "{generator: faultmodels:small}", **top) -> Path:
    """Write a spec with ``models`` (YAML text of the models mapping) to ``path``."""
    extra = "".join(f"{k}: {v}\n" for k, v in top.items())
    path.write_text(f"data: {data}\ncv: 2\n{extra}models:\n{models}")
    return path
