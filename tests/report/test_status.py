"""``DIR/status.json`` on every way a run ends, and ``hpcml status`` reading it."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from helpers import SLOW_SPEC, SPEC, hpcml, start, wait_status

from hpcml.run.status import format_status, is_alive, read_status

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """SPEC run to the end on one rank, with --verbose."""
    root = tmp_path_factory.mktemp("finished")
    (root / "spec.yaml").write_text(SPEC)
    proc = hpcml("run", "-n", "1", "spec.yaml", "--out", "out", "--no-progress", "--verbose",
                 cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "out", proc


def test_finished_run_status_names_the_best_candidate(finished):
    out, run = finished
    best = json.loads((out / "best.json").read_text())
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished" and status["phase"] == "done"
    assert status["fits"] == {"total": 33, "done": 33, "failed": 0, "resumed": 0,
                              "this_run": 33}
    assert status["command"][:2] == ["hpcml", "run"] and status["hosts"]
    assert next(iter(status["best"])) == best["model"]
    assert status["best"][best["model"]]["params"] == best["params"]
    assert status["summary"]["fits"] == 33 and status["summary"]["speedup"] > 0
    proc = hpcml("status", str(out), cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(" * "))
    assert best["model"] in line and str(best["params"]) in line
    assert "state: finished" in proc.stdout and "33/33 done" in proc.stdout


def test_verbose_logs_carry_rank_and_host_and_rank0_sums_up(finished):
    _, run = finished
    logs = [ln for ln in run.stderr.splitlines() if "hpcml[rank " in ln]
    assert logs and all(" on " in ln for ln in logs)
    assert sum("DEBUG: task " in ln for ln in logs) == 33
    summary = [ln for ln in logs if "INFO: finished:" in ln]
    assert len(summary) == 1 and "33 fits" in summary[0] and "speed-up" in summary[0]


def test_status_while_running_then_sigkill_leaves_a_stale_heartbeat(tmp_path):
    # fits of 1 s (24 in all, ~12 s on 2 ranks): the run cannot end before the kill lands,
    # even on a busy machine where the status is rewritten only every few seconds
    (tmp_path / "spec.yaml").write_text(SLOW_SPEC.replace("delay: [0.3]", "delay: [1.0]"))
    path = tmp_path / "out" / "status.json"
    job = start("run", "-n", "2", "spec.yaml", "--out", "out", "--no-progress", cwd=tmp_path)
    try:
        running = wait_status(path, lambda s: s["fits"]["this_run"] >= 4, job=job)
        assert running["state"] == "running" and running["phase"] == "fitting"
        assert running["fits"]["total"] == 24 and running["eta"] is not None
        assert [r["rank"] for r in running["rank_status"]] == [0, 1]
        # every rank is fitting a (1 s) task almost all the time: both show one in flight
        both = wait_status(path, lambda s: all(r["current"] for r in s["rank_status"]), job=job)
        assert {r["current"]["model"] for r in both["rank_status"]} == {"slow"}
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    time.sleep(0.5)
    status = json.loads(path.read_text())  # still valid JSON
    assert status["state"] == "running" and 4 <= status["fits"]["done"] < 24
    assert is_alive(status, now=status["heartbeat"] + 1, stale_after=5)
    assert not is_alive(status, now=status["heartbeat"] + 7, stale_after=5)
    time.sleep(2.5)
    proc = hpcml("status", str(tmp_path / "out"), "--stale", "2", cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "NOT ALIVE" in proc.stdout and "resume" in proc.stdout
    # the report of the killed run comes from its journal
    report = hpcml("report", str(tmp_path / "out"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "partial:" in (tmp_path / "out" / "report.html").read_text()


def test_sigterm_stops_with_75_and_state_stopped(tmp_path):
    (tmp_path / "spec.yaml").write_text(SLOW_SPEC)
    path = tmp_path / "out" / "status.json"
    job = start("run", "-n", "2", "spec.yaml", "--out", "out", "--no-progress", cwd=tmp_path)
    try:
        wait_status(path, lambda s: s["fits"]["this_run"] >= 2, job=job)
        job.send_signal(signal.SIGTERM)
        _, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 75, err
    status = json.loads(path.read_text())
    assert status["state"] == "stopped" and status["stop_signal"] == "SIGTERM"
    assert 2 <= status["fits"]["done"] < 24 and status["eta"] is None
    assert all(r["current"] is None for r in status["rank_status"])
    proc = hpcml("status", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0 and "state: stopped by SIGTERM" in proc.stdout


FAILING_SPEC = """\
data:
  generator: sklearn.datasets.make_classification
  params: {n_samples: 120, n_features: 5, random_state: 3}
cv: {splitter: StratifiedKFold, n_splits: 3}
scoring: [accuracy]
error_score: raise
models:
  picky:
    estimator: factories.PickyLogistic
    grid: {C: [0.1, 0.5, 1.0, 2.0, 4.0]}
"""


def test_a_fit_that_raises_makes_the_run_failed_with_its_error(tmp_path):
    """``error_score: raise``: the fit's exception aborts every rank; whichever rank it was,
    the status says failed, with the error (the root's own file, or the rank's)."""
    (tmp_path / "spec.yaml").write_text(FAILING_SPEC)
    proc = hpcml("run", "-n", "2", "spec.yaml", "--out", "out", "--no-progress", cwd=tmp_path)
    assert proc.returncode not in (0, 2, 75)
    [status] = read_status(tmp_path / "out")
    assert status["state"] == "failed" and "is above 1.0" in status["error"], status
    shown = hpcml("status", "out", cwd=tmp_path)
    assert "state: failed" in shown.stdout and "is above 1.0" in shown.stdout


def test_bad_input_refused_before_the_run_leaves_no_status(tmp_path):
    (tmp_path / "spec.yaml").write_text(SLOW_SPEC.replace("factories.SlowClassifier",
                                                          "factories.broken_factory"))
    proc = hpcml("run", "-n", "1", "spec.yaml", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_finished_run_folder_is_not_touched_by_a_refused_run(finished, tmp_path):
    out, _ = finished
    before = (out / "status.json").read_bytes()
    proc = hpcml("run", "-n", "1", "spec.yaml", "--out", "out", cwd=out.parent)
    assert proc.returncode == 2 and "finished run" in proc.stderr
    assert (out / "status.json").read_bytes() == before


def test_another_rank_that_failed_makes_the_status_failed(tmp_path):
    t = time.time()
    (tmp_path / "status.json").write_text(json.dumps(
        {"state": "running", "started": t, "heartbeat": t, "interval": 2.0}))
    (tmp_path / ".status").mkdir()
    (tmp_path / ".status" / "rank00001.json").write_text(json.dumps(
        {"rank": 1, "started": t, "error": "ValueError: boom (task 3 on rank 1, node7)"}))
    [status] = read_status(tmp_path)
    assert status["state"] == "failed" and "boom" in status["error"]
    assert "state: failed" in format_status(status, now=t)


def test_status_command_is_light_for_a_login_node(finished):
    """``hpcml status`` reads a file: it must not load numpy or scikit-learn (seconds on a
    busy login node's file system)."""
    import subprocess
    import sys

    from helpers import env

    out, _ = finished
    code = ("import sys; from hpcml.cli.main import main; rc = main(['status', sys.argv[1]]); "
            "print(sorted(m for m in ('numpy', 'sklearn', 'matplotlib') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], env=env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_quiet_run_prints_no_progress_and_no_info(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    proc = hpcml("run", "-n", "1", "spec.yaml", "--out", "out", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert json.loads((tmp_path / "out" / "status.json").read_text())["state"] == "finished"


def test_summary_names_failures_with_the_first_error_and_the_speedup():
    from hpcml.run.status import _summary, summary_line

    records = [{"fit_time": 2.0, "score_time": 0.5, "error": None},
               {"fit_time": 1.0, "score_time": 0.0,
                "error": "Traceback (most recent call last):\n  ...\nValueError: C=2 is above 1.0"},
               {"fit_time": 1.5, "score_time": 0.0, "error": None}]
    s = _summary(records, wall=2.5, ranks=2)
    assert (s["fits"], s["failed"], s["first_error"]) == (3, 1, "ValueError: C=2 is above 1.0")
    assert s["speedup"] == pytest.approx(5.0 / 2.5)
    line = summary_line(s)
    assert "3 fits, 1 failed (first: ValueError: C=2 is above 1.0)" in line
    assert "wall 2.5s" in line and "speed-up 2.00x" in line


def test_format_status_shows_each_rank_and_the_eta():
    t = 1000.0
    status = {
        "state": "running", "phase": "fitting", "heartbeat": t, "interval": 2.0,
        "started": t - 60, "elapsed": 60.0, "ranks": 2, "hosts": ["n1", "n2"],
        "command": ["hpcml", "run", "s.yaml"], "eta": 125.0, "metric": "r2",
        "fits": {"total": 40, "done": 10, "failed": 1, "resumed": 0, "this_run": 10},
        "best": {"ridge": {"params": {"alpha": 1.0}, "mean": 0.91, "std": 0.02, "folds": "4/4"}},
        "rank_status": [
            {"rank": 0, "host": "n1", "fits": 6, "busy_fraction": 0.97,
             "current": {"task": 12, "model": "ridge", "params": {"alpha": 10.0}, "fold": 2,
                         "since": t - 3, "seconds": 3.0}},
            {"rank": 1, "host": "n2", "fits": 4, "busy_fraction": 0.5, "current": None}],
    }
    text = format_status(status, now=t + 1)
    assert "state: running (fitting" in text and "ETA 2m05s" in text
    assert "10/40 done, 1 failed" in text and "* ridge {'alpha': 1.0}: 0.91" in text
    assert "rank 0 on n1: 6 fits, busy 97%, fitting ridge {'alpha': 10.0} fold 2" in text
    assert "rank 1 on n2: 4 fits, busy 50%, idle" in text
    assert "NOT ALIVE" in format_status(status, now=t + 60)
