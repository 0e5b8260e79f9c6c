"""Successive halving simulated on P workers: round barriers against ASHA, one cost model."""

import dataclasses
import time

import numpy as np
import pytest

from hpcml.core.simulate_halving import (
    halving_rounds,
    halving_workload,
    simulate_async,
    simulate_barriers,
)

pytestmark = pytest.mark.timeout(120)


def flat(w, unit=0.01):
    """The same workload with every fit at resource r costing exactly ``unit * r``."""
    n = w.n_candidates
    return dataclasses.replace(w, fixed_cost=np.zeros(n), unit_cost=np.full(n, unit),
                               error=np.ones((n, w.n_folds)))


@pytest.mark.parametrize("n, factor, lo, hi", [
    (100, 3, 10, 810), (20, 3, 10, 810), (243, 3, 10, 810), (81, 3, 20, 1620),
    (50, 2, 16, 1000), (7, 4, 20, 20),
])
def test_rounds_are_scikit_learns(n, factor, lo, hi):
    from sklearn.datasets import make_classification
    from sklearn.dummy import DummyClassifier
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV

    X, y = make_classification(n_samples=hi, n_features=4, random_state=0)
    search = HalvingGridSearchCV(DummyClassifier(), {"random_state": list(range(n))},
                                 factor=factor, min_resources=lo, max_resources=hi, cv=2,
                                 refit=False).fit(X, y)
    assert halving_rounds(n, factor, lo, hi) == list(zip(search.n_candidates_,
                                                         search.n_resources_, strict=True))


def test_one_worker_does_the_same_work_both_ways():
    # 81 = 3**4 candidates on 5 rungs, all fits of a rung alike, and each candidate worse
    # than the ones before it at every resource: ASHA's top third of a rung never changes,
    # so it promotes exactly what the rounds keep: 81, 27, 9, 3, 1
    w = flat(halving_workload(81, n_folds=3, min_resources=1, max_resources=81, seed=2))
    w = dataclasses.replace(w, final=np.linspace(0.9, 0.7, 81), gap=np.zeros(81), noise=0.0)
    b, a = simulate_barriers(w, 1), simulate_async(w, 1)
    assert b.rung_sizes() == a.rung_sizes() == {1: 81, 3: 27, 9: 9, 27: 3, 81: 1}
    assert b.n_fits == a.n_fits == 3 * (81 + 27 + 9 + 3 + 1)
    assert a.busy == pytest.approx(b.busy)
    assert a.best().candidate == b.best().candidate == 0
    # one worker never idles: the makespan is the work
    assert b.makespan == pytest.approx(b.busy) and a.makespan == pytest.approx(a.busy)
    assert b.utilisation == pytest.approx(1.0) and a.utilisation == pytest.approx(1.0)
    assert b.barrier_idle == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("p", [1, 64])
def test_async_promotes_at_least_the_top_third_of_each_rung(p):
    # with noisy scores the top third moves as results come in, and ASHA promotes what was
    # in it at the time: at least floor(n_k / factor) reach rung k + 1, often more
    w = halving_workload(243, seed=6)
    a, b = simulate_async(w, p), simulate_barriers(w, p)
    sizes = list(a.rung_sizes().values())
    assert all(up >= low // 3 for low, up in zip(sizes, sizes[1:], strict=False))
    assert a.n_fits > b.n_fits


@pytest.mark.parametrize("p", [1, 3, 16, 64, 700])
def test_utilisation_is_at_most_one_and_busy_is_the_fits(p):
    w = halving_workload(120, seed=5)
    for run in (simulate_barriers(w, p), simulate_async(w, p)):
        assert 0.0 < run.utilisation <= 1.0
        assert run.busy <= p * run.makespan * (1 + 1e-12)
        assert run.makespan >= max(c.time for c in run.completions) - 1e-12
        # every fold of every evaluated candidate was fitted, nothing else
        assert run.n_fits == w.n_folds * len(run.completions)
        assert run.busy == pytest.approx(sum(
            w.fit_cost(c.candidate, c.resource, f) for c in run.completions
            for f in range(w.n_folds)))


def test_barrier_idle_when_the_rung_does_not_divide_p():
    # one rung, one fold, fits of 0.1 s on 4 workers: 8 fits are two full waves,
    # 10 fits are three waves with 2 workers idle in the last
    for n, idle in ((8, 0.0), (10, 2 * 0.1)):
        w = flat(halving_workload(n, n_folds=1, min_resources=10, max_resources=10),
                 unit=0.01)
        b = simulate_barriers(w, 4)
        assert b.barrier_idle == pytest.approx(idle, abs=1e-9)
        assert b.makespan == pytest.approx(0.1 * -(-n // 4))
        assert b.n_workers * b.makespan - b.busy == pytest.approx(b.barrier_idle, abs=1e-9)
    # over several rungs of 243 candidates x 5 folds on 64 workers the barriers cost time
    b = simulate_barriers(halving_workload(243, seed=1), 64)
    assert b.barrier_idle > 0.05 * b.n_workers * b.makespan


def test_barriers_follow_the_round_plan_and_keep_the_best():
    w = halving_workload(100, seed=3)
    b = simulate_barriers(w, 8)
    rounds = halving_rounds(100, 3, 10, 810)
    assert sorted(b.rung_sizes().items()) == sorted((r, n) for n, r in rounds)
    by_rung: dict[int, dict[int, float]] = {}
    for c in b.completions:
        by_rung.setdefault(c.rung, {})[c.candidate] = c.score
    for k in range(len(rounds) - 1):
        kept = set(by_rung[k + 1])
        worst_kept = min(by_rung[k][c] for c in kept)
        assert all(s < worst_kept for c, s in by_rung[k].items() if c not in kept)
    # no fit of rung k + 1 ends before the last one of rung k (the barrier)
    ends = {k: max(c.time for c in b.completions if c.rung == k) for k in by_rung}
    starts = {k: min(c.time for c in b.completions if c.rung == k) for k in by_rung}
    assert all(starts[k + 1] > ends[k] for k in range(len(rounds) - 1))


def test_async_never_waits_for_a_round():
    w = halving_workload(243, seed=1)
    a = simulate_async(w, 64)
    first_promotion = min(c.time for c in a.completions if c.rung == 1)
    last_bottom = max(c.time for c in a.completions if c.rung == 0)
    assert first_promotion < last_bottom  # promoted while the bottom rung still runs
    assert a.barrier_idle == 0.0
    assert a.top_resource == 810 and a.n_top >= 1
    assert a.best().resource == 810
    assert a.time_to(a.best().score) == a.best().time


def test_deterministic_for_a_seed():
    runs = [(simulate_barriers(halving_workload(200, seed=s), 32),
             simulate_async(halving_workload(200, seed=s), 32)) for s in (4, 4, 5)]
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    assert runs[0][0].completions != runs[2][0].completions
    assert runs[0][1].completions != runs[2][1].completions


def test_a_rule_that_never_finishes_is_an_error():
    class Stuck:
        def __init__(self, candidates, **kwargs):
            pass

        def next_job(self):
            return None

        def report(self, job, score):  # pragma: no cover - never called
            raise AssertionError

        done = False

    with pytest.raises(RuntimeError, match="not done"):
        simulate_async(halving_workload(3), 2, rule=Stuck)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_workers"):
        simulate_barriers(halving_workload(3), 0)
    with pytest.raises(ValueError, match="min_resources"):
        halving_workload(3, min_resources=20, max_resources=10)


def test_fast_at_1024_workers():
    w = halving_workload(2187, seed=0)
    t = time.perf_counter()
    b, a = simulate_barriers(w, 1024), simulate_async(w, 1024)
    wall = time.perf_counter() - t
    assert b.n_fits > 16_000 and a.n_fits > 16_000
    assert wall < 30.0  # ~5 s on a loaded 2-core VM; the target is < 10 s
