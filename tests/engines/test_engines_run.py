"""The same spec on every engine: identical scores, and a stop signal then a resume.

One cluster per engine for the whole module (Spark's JVM and Ray take seconds to start): the
in-process runs share it; each stop test starts one ``hpcml run --engine X`` process.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from enginehelpers import (
    SLOW_SPEC,
    SPEC,
    hpcml,
    hpcml_env,
    need,
    read_scores,
    start,
    stop_group,
    wait_for_records,
)

from hpcml import run_experiment
from hpcml.engines import get_engine
from hpcml.run.journal import iter_records

ENGINES = ["loky", "dask", "ray", "spark"]


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("engines")
    (root / "spec.yaml").write_text(SPEC)
    (root / "slow.yaml").write_text(SLOW_SPEC)
    return root


@pytest.fixture(scope="module")
def serial(specs) -> Path:
    """The serial engine's outputs of both specs: the reference."""
    for name in ("spec", "slow"):
        run_experiment(specs / f"{name}.yaml", specs / f"serial-{name}", progress=False,
                       engine=get_engine("serial"))
    return specs


@pytest.fixture(scope="module")
def mpi(specs) -> Path:
    """``hpcml run -n 2`` (the default engine, over two MPI ranks) of the first spec."""
    proc = hpcml("run", "-n", "2", "spec.yaml", "--out", "mpi-spec", "--no-progress", cwd=specs)
    assert proc.returncode == 0, proc.stderr
    return specs / "mpi-spec"


@pytest.fixture(scope="module", params=ENGINES)
def engine(request):
    """One engine (and its local cluster of two workers) for every test of this module.

    Its workers import the specs' estimators (``factories``) from the environment they start
    with, as a user's workers would: ``tests/`` goes on ``PYTHONPATH`` first.
    """
    need(request.param)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = hpcml_env()["PYTHONPATH"]
    eng = get_engine(request.param, workers=2)
    try:
        eng.start()
        yield eng
    finally:
        eng.close()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@pytest.mark.timeout(240)
def test_same_scores_as_serial_and_mpi(engine, serial, mpi, specs):
    out = specs / f"{engine.name}-spec"
    result = run_experiment(specs / "spec.yaml", out, progress=False, engine=engine)
    assert result.complete and not result.interrupted
    rows = read_scores(out / "cv_results.csv")
    assert rows == read_scores(serial / "serial-spec" / "cv_results.csv")
    assert rows == read_scores(mpi / "cv_results.csv")
    run = json.loads((out / "run.json").read_text())
    assert run["engine"] == engine.name and run["ranks"] == 2
    assert run["engine_options"]["threads_per_task"] == 1
    timings = [r for r in iter_records(out)]
    assert len(timings) == 24


#: Both stop signals, without a second stop run per engine: Ray replaces SIGTERM's handler
#: at start-up and Spark SIGINT's (the engines put the stop handlers back).
STOP_SIGNAL = {"loky": signal.SIGUSR1, "dask": signal.SIGUSR1, "ray": signal.SIGTERM,
               "spark": signal.SIGTERM}


@pytest.mark.timeout(300)
def test_stop_signal_exits_75_keeps_the_journal_and_resumes(engine, serial, specs):
    sig = STOP_SIGNAL[engine.name]
    out = specs / f"{engine.name}-slow"
    job = start("run", "slow.yaml", "--engine", engine.name, "-n", "2", "--out", str(out),
                "--no-progress", cwd=specs)
    try:
        wait_for_records(out, 3)
        job.send_signal(sig)
        output, err = job.communicate(timeout=90)
    finally:
        stop_group(job)
    assert job.returncode == 75, (output, err, len(list(iter_records(out))))
    assert "resume" in err and "Traceback" not in err, err
    kept = {r["key"] for r in iter_records(out)}
    assert 3 <= len(kept) < 24, len(kept)
    assert not (out / "run.json").exists()
    # The resume, on this module's cluster of the same engine: only the missing fits run.
    result = run_experiment(specs / "slow.yaml", out, progress=False, engine=engine)
    assert result.complete and result.n_resumed == len(kept)
    keys = [r["key"] for r in iter_records(out)]
    assert len(keys) == len(set(keys)) == 24
    assert read_scores(out / "cv_results.csv") == read_scores(
        serial / "serial-slow" / "cv_results.csv")
