"""ASHA over MPI ranks, at any world size: every fit journaled, promotions by the rule, a stop
then a resume that completes (and, at one rank, equals an uninterrupted run)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpcml import run_experiment
from hpcml.run.journal import iter_records
from hpcml.search.asha import ASHA

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(240)]

FACTOR = 3


def spec(n_iter: int = 12) -> dict:
    return {
        "data": {"generator": "sklearn.datasets.make_classification",
                 "params": {"n_samples": 240, "n_features": 8, "random_state": 3}},
        "cv": {"n_splits": 3},
        "scoring": ["accuracy"],
        "refit": "accuracy",
        "search": {"strategy": "asha", "factor": FACTOR, "resource": "n_estimators",
                   "min_resources": 1, "max_resources": 9, "n_iter": n_iter,
                   "random_state": 0},
        "models": {"rf": {"estimator": "sklearn.ensemble.RandomForestClassifier",
                          "params": {"random_state": 0},
                          "grid": {"max_depth": "randint(1, 10)",
                                   "min_samples_leaf": [1, 2, 4, 8]}}},
    }


def journal_keys(out) -> list[str]:
    return [rec["key"] for rec in iter_records(out)]


def test_asha_run_journals_every_fit_and_promotes_by_the_rule(comm, shared_tmp, monkeypatch):
    log = []
    plain = ASHA.next_job

    def watched(self):  # on the root, where the rule lives: the rung's top at each promotion
        job = plain(self)
        if job is not None and job.rung > 0:
            below = self.rungs[job.rung - 1]
            ranked = sorted(below, key=lambda c: (np.isnan(below[c]), -np.nan_to_num(below[c]), c))
            log.append((job.candidate, job.rung, ranked[: len(below) // FACTOR]))
        return job

    monkeypatch.setattr(ASHA, "next_job", watched)
    out = shared_tmp / "asha"
    result = run_experiment(spec(), out, comm=comm, progress=False)
    assert result.complete and not result.interrupted
    cv = result.cv_results
    n_rows = len(cv["params"])
    assert set(cv["iter"]) == {0, 1, 2}
    assert list(cv["n_resources"]) == [[1, 3, 9][k] for k in cv["iter"]]
    assert sum(1 for k in cv["iter"] if k == 0) == 12
    assert all(p["n_estimators"] == r for p, r in zip(cv["params"], cv["n_resources"],
                                                       strict=True))
    best = result.best
    assert best["iter"] == 2 and best["params"]["n_estimators"] == 9
    top = [i for i, k in enumerate(cv["iter"]) if k == 2]
    assert best["index"] in top
    assert cv["mean_test_accuracy"][best["index"]] == max(cv["mean_test_accuracy"][i] for i in top)
    if comm.Get_rank() == 0:
        keys = journal_keys(out)
        assert len(keys) == len(set(keys)) == n_rows * 3  # every fit once, none lost
        assert log, "no promotion happened"
        for candidate, rung, ranked in log:
            assert candidate in ranked, (candidate, rung, ranked)
        assert len({(c, k) for c, k, _ in log}) == len(log)  # never promoted twice
        saved = json.loads((out / "best.json").read_text())
        assert saved["params"] == best["params"] and saved["n_resources"] == 9
        assert (out / "best_model.joblib").exists()
        if comm.Get_size() > 1:
            ranks = {rec["rank"] for rec in iter_records(out)}
            assert ranks == set(range(comm.Get_size())), ranks  # every rank fitted


@pytest.mark.parametrize("who", ["first", "last"])
def test_asha_stop_then_resume_completes(comm, shared_tmp, who):
    out = shared_tmp / f"asha-stop-{who}"
    done = []
    stopper = 0 if who == "first" else comm.Get_size() - 1

    def stop() -> bool:  # one rank asks to stop after 6 of its fits
        return comm.Get_rank() == stopper and len(done) >= 6

    first = run_experiment(spec(), out, comm=comm, progress=False, stop=stop,
                           observers=(_Count(done),))
    assert first.interrupted and not first.complete and first.best is None
    assert not (out / "run.json").exists() and (out / "cv_results.csv").exists()
    before = journal_keys(out) if comm.Get_rank() == 0 else None
    second = run_experiment(spec(), out, comm=comm, progress=False)
    assert second.complete and not second.interrupted and second.n_resumed > 0
    assert second.best is not None and (out / "run.json").exists()
    if comm.Get_rank() == 0:
        keys = journal_keys(out)
        assert len(keys) == len(set(keys)) == len(second.cv_results["params"]) * 3
        assert set(before) <= set(keys)
    if comm.Get_size() == 1:  # serially the rule is deterministic: as if never stopped
        whole = run_experiment(spec(), shared_tmp / f"asha-whole-{who}", comm=comm,
                               progress=False)
        assert whole.cv_results["params"] == second.cv_results["params"]
        np.testing.assert_array_equal(whole.cv_results["mean_test_accuracy"],
                                      second.cv_results["mean_test_accuracy"])
        assert whole.best == {**second.best, "refit_time": whole.best["refit_time"]}


class _Count:
    """An observer that counts this rank's results."""

    def __init__(self, done: list) -> None:
        self.done = done

    def result(self, r) -> None:
        self.done.append(r.task)
