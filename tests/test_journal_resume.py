"""Never lose finished work: journal, resume, stop requests, time limits, failing fits."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from factories import slow_spec

from hpcml import run_experiment
from hpcml.core.fitting import FitResult
from hpcml.errors import UsageError
from hpcml.run.collect import collect
from hpcml.run.journal import Journal, Manifest, iter_records, read_journal, task_key

TESTS = Path(__file__).parent
TIMING = {"mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time"}


def spec_dict(n_samples=240, **extra):
    spec = {
        "data": {"generator": "sklearn.datasets.make_classification",
                 "params": {"n_samples": n_samples, "n_features": 6, "random_state": 4}},
        "cv": {"splitter": "StratifiedKFold", "n_splits": 3, "shuffle": True, "random_state": 0},
        "scoring": ["accuracy", "roc_auc"],
        "refit": "accuracy",
        "models": {
            "lr": {"estimator": "sklearn.linear_model.LogisticRegression",
                   "grid": {"C": [0.01, 0.1, 1.0, 10.0]}},
            "tree": {"estimator": "sklearn.tree.DecisionTreeClassifier",
                     "params": {"random_state": 0}, "grid": {"max_depth": [1, 2, 3, None]}},
        },
    }
    spec.update(extra)
    return spec


def strip_timing(cv):
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in cv.items()
            if k not in TIMING}


def read_rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


class StopAfter:
    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self):
        self.calls += 1
        return self.calls > self.n


# -- the journal itself ---------------------------------------------------------------------


def test_journal_roundtrip_and_torn_last_line(tmp_path):
    with Journal(tmp_path, rank=3) as j:
        j.append("k1", FitResult(0, {"acc": 0.5}, None, 0.1, 0.01, rank=3))
        j.append("k2", FitResult(1, {"acc": float("nan")}, None, 0.2, 0.0, error="boom"))
    path = next((tmp_path / "journal").glob("rank00003-*.jsonl"))
    with open(path, "a") as f:
        f.write('{"key": "k3", "task": 2, "te')  # a crash in the middle of a write
    found = read_journal(tmp_path, ["k1", "k2", "k3"])
    assert sorted(found) == [0, 1]
    assert found[0].test_scores == {"acc": 0.5} and found[0].rank == 3
    assert np.isnan(found[1].test_scores["acc"]) and found[1].error == "boom"
    assert [r["host"] for r in iter_records(tmp_path)] == [socket.gethostname()] * 2


def test_empty_journal_file_is_removed(tmp_path):
    with Journal(tmp_path, rank=0):
        pass
    assert list((tmp_path / "journal").glob("*.jsonl")) == []


def test_task_key_and_manifest_differences():
    assert task_key("m", {"a": 1}, 0, "cv", "d") != task_key("m", {"a": 1}, 0, "cv", "other")
    a = Manifest(spec={"models": 1, "cv": 2}, data_fingerprint="x", folds="f")
    b = Manifest(spec={"models": 1, "cv": 3}, data_fingerprint="y", folds="f")
    diffs = a.differences(b)
    assert any("data differ" in d for d in diffs) and "spec key 'cv' differs" in diffs
    assert a.differences(a) == []


# -- resume (in process) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    return run_experiment(spec_dict(), out=out, progress=False)


def test_every_fit_is_journaled(reference):
    records = list(iter_records(reference.out))
    assert len(records) == 24 == len({r["key"] for r in records})
    assert json.loads((reference.out / "manifest.json").read_text())["n_tasks"] == 24


def test_stop_then_resume_equals_uninterrupted(tmp_path, reference):
    out = tmp_path / "out"
    first = run_experiment(spec_dict(), out=out, progress=False, stop=StopAfter(7))
    assert first.interrupted and not first.complete
    assert len(list(iter_records(out))) == 7
    assert not (out / "run.json").exists()
    rows = read_rows(out / "cv_results.csv")
    finished = [int(r["finished_splits"].split("/")[0]) for r in rows]
    assert sum(finished) == 7 and 0 in finished and 3 in finished
    assert all(r["finished_splits"].endswith("/3") for r in rows)
    second = run_experiment(spec_dict(), out=out, progress=False)
    assert second.complete and second.n_resumed == 7
    assert strip_timing(second.cv_results) == strip_timing(reference.cv_results)
    assert second.best == {**reference.best, "refit_time": second.best["refit_time"]}
    assert read_rows(out / "cv_results.csv") == read_rows(reference.out / "cv_results.csv")


def test_collect_partial_then_complete(tmp_path, reference):
    out = tmp_path / "out"
    run_experiment(spec_dict(), out=out, progress=False, stop=StopAfter(10))
    info = collect(out)
    assert (info["done"], info["total"], info["complete"]) == (10, 24, False)
    assert info["best"] is None
    run_experiment(spec_dict(), out=out, progress=False)
    info = collect(out)
    assert info["complete"] and info["best"]["params"] == reference.best["params"]
    assert (out / "best_model.joblib").exists()


def test_shards_merge_to_the_same_results(tmp_path, reference):
    out = tmp_path / "out"
    a = run_experiment(spec_dict(), out=out, progress=False, shard=(0, 2))
    assert not a.complete and not (out / "run.json").exists()
    b = run_experiment(spec_dict(), out=out, progress=False, shard=(1, 2))
    assert b.complete  # the last shard sees every fit in the journal
    info = collect(out)
    assert info["complete"]
    assert read_rows(out / "cv_results.csv") == read_rows(reference.out / "cv_results.csv")
    keys = [r["key"] for r in iter_records(out)]
    assert len(keys) == len(set(keys)) == 24, "a fit ran twice"


def test_journal_of_another_spec_is_refused(tmp_path):
    out = tmp_path / "out"
    run_experiment(spec_dict(), out=out, progress=False, stop=StopAfter(2))
    other = spec_dict(scoring=["accuracy"])
    with pytest.raises(UsageError, match="another experiment.*scoring"):
        run_experiment(other, out=out, progress=False)
    with pytest.raises(UsageError, match="data differ"):
        run_experiment(spec_dict(n_samples=250), out=out, progress=False)
    assert len(list(iter_records(out))) == 2  # untouched
    fresh = run_experiment(other, out=out, progress=False, force=True)
    assert fresh.complete and fresh.n_resumed == 0


# -- failing fits and time limits -----------------------------------------------------------


def test_failing_fits_get_error_score_and_a_summary(tmp_path, capsys):
    spec = spec_dict()
    spec["models"] = {"picky": {"estimator": "factories.PickyLogistic",
                                "grid": {"C": [0.1, 1.0, 10.0]}}}
    result = run_experiment(spec, out=tmp_path / "out", progress=False)
    assert result.n_failed == 3
    assert np.isnan(result.cv_results["mean_test_accuracy"][2])
    assert result.cv_results["rank_test_accuracy"][2] == 3
    err = capsys.readouterr().err
    assert "3 of 9 fits failed" in err and "C=10.0 is above 1.0" in err
    errors = [r["error"] for r in iter_records(tmp_path / "out") if r["error"]]
    assert len(errors) == 3 and all("Traceback" in e for e in errors)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["failures"]["n_failed"] == 3


def test_fit_timeout_stops_the_fit_and_goes_on(tmp_path):
    spec = spec_dict(fit_timeout=1.0)
    spec["models"] = {"slow": {"estimator": "factories.SlowClassifier",
                               "grid": {"delay": [0.0, 30.0], "C": [1.0]}}}
    t0 = time.monotonic()
    result = run_experiment(spec, out=tmp_path / "out", progress=False)
    elapsed = time.monotonic() - t0
    assert elapsed < 25, "the 30 s fits were not stopped"
    cv = result.cv_results
    assert np.isfinite(cv["mean_test_accuracy"][0]) and np.isnan(cv["mean_test_accuracy"][1])
    errors = [r["error"] for r in iter_records(tmp_path / "out") if r["error"]]
    assert len(errors) == 3 and all("fit_timeout=1s" in e for e in errors)
    assert result.best["params"] == {"C": 1.0, "delay": 0.0}


# -- the command under MPI: kills and signals -----------------------------------------------

SLOW_SPEC = slow_spec(0.25, 200)


def hpcml_env():
    env = {**os.environ, "UCX_LOG_LEVEL": "error",
           "PYTHONPATH": str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for var in ("PMI_RANK", "PMI_SIZE", "PMI_FD", "OMPI_COMM_WORLD_SIZE", "HYDRA_CONTROL_FD"):
        env.pop(var, None)
    return env


def start(tmp_path, out):
    (tmp_path / "spec.yaml").write_text(SLOW_SPEC)
    return subprocess.Popen(
        [sys.executable, "-m", "hpcml", "run", "-n", "2", "spec.yaml", "--out", str(out),
         "--no-progress"],
        cwd=tmp_path, env=hpcml_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )


def wait_for_records(out, n, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = len(list(iter_records(out)))
        if count >= n:
            return count
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} journal records after {timeout}s")


def rank_pid(out, rank):
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(out).encode() in cmd and f"PMI_RANK={rank}".encode() in env:
            return int(proc.name)
    raise AssertionError(f"rank {rank} not found")


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory):
    """The uninterrupted run of SLOW_SPEC (one rank: fits only sleep)."""
    tmp = tmp_path_factory.mktemp("slowref")
    (tmp / "spec.yaml").write_text(SLOW_SPEC)
    proc = subprocess.run(
        [sys.executable, "-m", "hpcml", "run", "-n", "1", "spec.yaml", "--out", "ref",
         "--no-progress"],
        cwd=tmp, env=hpcml_env(), capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    return tmp / "ref"


def finish_and_compare(tmp_path, out, ref):
    proc = subprocess.run(
        [sys.executable, "-m", "hpcml", "run", "-n", "2", "spec.yaml", "--out", str(out),
         "--resume", "--no-progress"],
        cwd=tmp_path, env=hpcml_env(), capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert read_rows(out / "cv_results.csv") == read_rows(ref / "cv_results.csv")
    keys = [r["key"] for r in iter_records(out)]
    assert len(keys) == len(set(keys)) == 24


def test_sigkill_of_a_rank_loses_nothing_and_resume_finishes(tmp_path, slow_reference):
    out = tmp_path / "out"
    job = start(tmp_path, out)
    try:
        wait_for_records(out, 4)
        os.kill(rank_pid(out, 1), signal.SIGKILL)
        time.sleep(0.3)
        before = {r["key"] for r in iter_records(out)}
        _, err = job.communicate(timeout=60)  # the job ends; nobody hangs
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode != 0
    assert "rank 1 of 2 (pid" in err and f"on {socket.gethostname()}) died" in err, err
    assert "resume" in err
    after = {r["key"] for r in iter_records(out)}
    assert before <= after and len(after) >= 4
    finish_and_compare(tmp_path, out, slow_reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_signal_saves_journal_exits_75_and_resumes(tmp_path, sig, slow_reference):
    out = tmp_path / "out"
    job = start(tmp_path, out)
    try:
        wait_for_records(out, 3)
        job.send_signal(sig)
        _, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 75, err
    assert "resume" in err and "Traceback" not in err
    n = len(list(iter_records(out)))
    assert 3 <= n < 24
    assert not (out / "run.json").exists()
    finish_and_compare(tmp_path, out, slow_reference)


def test_a_stop_signal_after_the_run_cannot_kill_the_rank(tmp_path):
    """Slurm's USR1 can come while a finished rank exits (MPI's finalisation), when Python has
    given signals their default action back: the job ended FAILED with all its results
    written. A rank whose run is over ignores stop signals."""
    (tmp_path / "spec.yaml").write_text(SLOW_SPEC.replace("[0.25], C: [1, 2, 3, 4, 5, 6]",
                                                          "[0.0], C: [1]"))
    code = (
        "import os, signal, sys\n"
        "from hpcml.cli.main import main\n"
        "code = main(['run', '-n', '1', 'spec.yaml', '--out', 'out', '--no-progress'])\n"
        "print([signal.getsignal(s) is signal.SIG_IGN for s in (signal.SIGUSR1, signal.SIGTERM)])\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=hpcml_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[True, True]", proc.stdout
    assert (tmp_path / "out" / "cv_results.csv").exists()
