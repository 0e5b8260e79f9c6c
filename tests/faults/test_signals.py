"""SIGTERM and SIGUSR1 at every phase of a run: exit 75 (run again to resume) or a finished
result, never a half-written file; a run stopped with 75 resumes to the same results."""

from __future__ import annotations

import csv
import json
import signal
import time
from pathlib import Path

import psutil
import pytest
from faultkit import journal_lines, run, spec, start, wait_for

N_ALL = 80
MODELS = f"""\
  m:
    estimator: faultmodels:Majority
    params: {{delay: 0.1, refit_delay: 1.5, n_all: {N_ALL}, hog: false}}
    grid: {{C: [1, 2, 3, 4, 5, 6]}}
"""


def _catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (from /proc: SigCgt)."""
    try:
        if b"hpcml" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return False  # not exec'd yet: the handlers seen would be pytest's
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(next(ln for ln in text.splitlines() if ln.startswith("SigCgt:")).split()[1], 16)
    return bool(mask >> (sig - 1) & 1)


def _ranks_started(launcher: int) -> bool:
    try:
        kids = psutil.Process(launcher).children(recursive=True)
    except psutil.Error:
        return False
    ranks = [p for p in kids if p.name().startswith("python")]
    return len(ranks) == 2


def _refit_started(tmp_path: Path) -> bool:
    return (tmp_path / "refit.started").exists()


PHASES = {
    # phase: (signal, what to wait for before sending it)
    "start-up": (signal.SIGTERM, lambda p, t: _catches(p.pid, signal.SIGTERM)),
    "ranks starting": (signal.SIGUSR1, lambda p, t: _ranks_started(p.pid)),
    "data load": (signal.SIGUSR1, lambda p, t: (t / "load.started").exists()),
    "fitting": (signal.SIGTERM, lambda p, t: journal_lines(t / "out") >= 2),
    # fits in forked workers: the TERM that reaches them too must not kill them (exit 1)
    "fitting with fit_timeout": (signal.SIGTERM, lambda p, t: journal_lines(t / "out") >= 2),
    "refit": (signal.SIGUSR1, lambda p, t: _refit_started(t)),
    "writing outputs": (signal.SIGTERM, None),  # a storm of signals until the run ends
}


def _check_files(out: Path) -> None:
    """Every file in ``out`` is whole: no temporary left, each result parses."""
    if not out.exists():
        return
    assert not [p for p in out.rglob("*.tmp*")], "a temporary file was left"
    if (out / "cv_results.csv").exists():
        with open(out / "cv_results.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 6
    for name in ("best.json", "run.json", "manifest.json"):
        if (out / name).exists():
            json.loads((out / name).read_text())
    if (out / "best_model.joblib").exists():
        import joblib

        joblib.load(out / "best_model.joblib")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("phase", list(PHASES))
def test_stop_signal_at_every_phase(tmp_path, phase):
    sig, ready = PHASES[phase]
    s = spec(tmp_path / "s.yaml", MODELS,
             data=f"{{generator: faultmodels:marked_data, params: {{folder: '{tmp_path}'}}}}")
    out = tmp_path / "out"
    args = ["run", "-n", "2", str(s), "--out", str(out), "--no-progress"]
    if "fit_timeout" in phase:
        args += ["--fit-timeout", "60"]
    proc = start(args, tmp_path)
    if ready is None:
        wait_for(lambda: _refit_started(tmp_path), 60, "the refit")
        while proc.poll() is None:
            proc.send_signal(sig)
            time.sleep(0.05)
    else:
        wait_for(lambda: ready(proc, tmp_path), 60, phase)
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode in (0, 75), stderr
    assert "Traceback" not in stdout + stderr
    _check_files(out)
    if proc.returncode == 75:
        assert "run the same command again" in stderr.lower() or "Run the same" in stderr
        again = run(args, tmp_path, timeout=90)
        assert again.returncode == 0, again.stderr
        _check_files(out)
    assert json.loads((out / "run.json").read_text())["complete"]
