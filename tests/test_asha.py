"""The pure ASHA rule (hpcml.search.asha): promotion order, ties, NaN, no double promotion."""

from __future__ import annotations

import random

import pytest

from hpcml.search.asha import ASHA, Job, rung_resources

pytestmark = pytest.mark.timeout(60)


def make(n: int = 9, factor: float = 3, lo: int = 1, hi: int = 9) -> ASHA:
    return ASHA([{"i": i} for i in range(n)], factor=factor, min_resources=lo, max_resources=hi)


def test_rung_resources_and_bad_values():
    assert rung_resources(1, 9) == [1, 3, 9]
    assert rung_resources(1, 10) == [1, 3, 9]
    assert rung_resources(4, 4) == [4]
    assert make(hi=27).resources == [1, 3, 9, 27]
    for lo, hi, f in [(0, 9, 3), (5, 4, 3), (1, 9, 1), (1.5, 9, 3)]:
        with pytest.raises(ValueError):
            rung_resources(lo, hi, f)


def test_bottom_rung_in_draw_order_then_none_until_a_result():
    a = make(n=4)
    jobs = [a.next_job() for _ in range(4)]
    assert [(j.candidate, j.rung, j.resource, j.params) for j in jobs] == [
        (i, 0, 1, {"i": i}) for i in range(4)]
    assert a.next_job() is None and not a.done


def test_promotes_the_top_third_when_its_rung_allows():
    a = make(n=9)
    jobs = [a.next_job() for _ in range(3)]
    for j, s in zip(jobs, (0.1, 0.3, 0.2), strict=True):
        a.report(j, s)
    j = a.next_job()  # 3 scores in rung 0: the top 1 (candidate 1) goes up
    assert (j.candidate, j.rung, j.resource) == (1, 1, 3)
    j2 = a.next_job()  # candidate 1 is promoted already: a new one starts
    assert (j2.candidate, j2.rung) == (3, 0)
    a.report(j2, 0.0)
    j3 = a.next_job()  # 4 scores, top 1 is still candidate 1: never promoted twice
    assert (j3.candidate, j3.rung) == (4, 0)


def test_highest_rung_is_checked_first():
    a = make(n=12, hi=9)
    bottom = [a.next_job() for _ in range(9)]
    for j in bottom:
        a.report(j, 0.9 - 0.1 * j.candidate)  # 0 best, then 1, 2, ...
    ups = [a.next_job() for _ in range(4)]  # top 3 of 9 go up, best first; then a new one
    assert [(j.candidate, j.rung, j.resource) for j in ups] == [
        (0, 1, 3), (1, 1, 3), (2, 1, 3), (9, 0, 1)]
    for j, s in zip(ups, (0.2, 0.8, 0.5, 0.95), strict=True):
        a.report(j, s)
    # Rung 1 has 3 scores (top: candidate 1) and rung 0 has 10 (top 3: 9, 0, 1; 9 is new):
    # the higher rung goes first.
    first, second = a.next_job(), a.next_job()
    assert (first.candidate, first.rung, first.resource) == (1, 2, 9)
    assert (second.candidate, second.rung) == (9, 1)
    assert a.next_job().rung == 0


def test_ties_break_by_draw_order_and_nan_ranks_last():
    a = make(n=6)
    jobs = [a.next_job() for _ in range(6)]
    for j, s in zip(jobs, (float("nan"), 0.5, 0.5, float("nan"), 0.1, 0.5), strict=True):
        a.report(j, s)
    promoted = [a.next_job() for _ in range(2)]  # top 2 of 6
    assert [(j.candidate, j.rung) for j in promoted] == [(1, 1), (2, 1)]
    assert a.next_job() is None
    b = make(n=3)
    for j in [b.next_job() for _ in range(3)]:
        b.report(j, float("nan"))
    j = b.next_job()  # all NaN: the first drawn goes up (scikit-learn ranks NaN last too)
    assert (j.candidate, j.rung) == (0, 1)


def test_reporting_twice_or_an_unknown_job_is_refused():
    a = make(n=2)
    j = a.next_job()
    a.report(j, 0.1)
    with pytest.raises(ValueError, match="not running"):
        a.report(j, 0.2)
    with pytest.raises(ValueError, match="not running"):
        a.report(Job(1, {"i": 1}, 1, 3), 0.2)


def _simulate(a: ASHA, workers: int, seed: int) -> list[tuple[Job, list[int]]]:
    """Run ``a`` with ``workers`` random-speed workers; each promotion with its rung's top."""
    rng = random.Random(seed)
    score = {c: rng.random() for c in range(len(a.candidates))}
    running: list[Job] = []
    log = []
    while not a.done:
        while len(running) < workers and (j := a.next_job()) is not None:
            if j.rung > 0:
                below = a.rungs[j.rung - 1]
                ranked = sorted(below, key=lambda c: (-below[c], c))
                log.append((j, ranked[: int(len(below) // a.factor)]))
            running.append(j)
        assert running, "ASHA is stuck: nothing running, nothing to start, not done"
        j = running.pop(rng.randrange(len(running)))
        a.report(j, score[j.candidate] + 0.01 * j.rung)
    return log


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_every_promotion_is_from_the_top_and_the_run_ends_at_max_resources(workers):
    a = make(n=40, factor=3, lo=1, hi=27)
    log = _simulate(a, workers, seed=workers)
    assert len(a.rungs[0]) == 40 and not a.running
    for job, top in log:
        assert job.candidate in top
    pairs = [(j.candidate, j.rung) for j, _ in log]
    assert len(pairs) == len(set(pairs))  # never promoted twice
    assert all(j.resource <= 27 for j, _ in log)
    assert a.rungs[3] and max(a.resources) == 27 and len(a.rungs) == 4
    c, k = a.best()
    assert k == 3 and c in a.rungs[3]


def test_serial_run_is_deterministic():
    def run():
        a = make(n=30, hi=9)
        return [(j.candidate, j.rung) for j, _ in _simulate(a, 1, seed=3)], a.rungs
    assert run() == run()


def test_restore_replays_finished_jobs_and_restarts_unfinished_ones():
    a = make(n=9)
    jobs = [a.next_job() for _ in range(4)]
    for j, s in zip(jobs[:3], (0.1, 0.9, 0.2), strict=True):
        a.report(j, s)
    up = a.next_job()
    assert (up.candidate, up.rung) == (1, 1)
    # A fresh rule replays the journal: three bottom results, candidate 3 half done,
    # candidate 1's promotion half done (in any order).
    b = make(n=9)
    b.restore(1, 1)
    b.restore(3, 0)
    for c, s in ((2, 0.2), (0, 0.1), (1, 0.9)):
        b.restore(c, 0, s)
    first = [b.next_job() for _ in range(3)]
    assert [(j.candidate, j.rung) for j in first] == [(1, 1), (3, 0), (4, 0)]
    assert b.promoted[0] == {1} and b.started == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError):
        b.restore(9, 0, 0.5)


def test_one_rung_never_promotes_and_done_at_the_end():
    a = make(n=3, lo=5, hi=5)
    js = [a.next_job() for _ in range(3)]
    for j in js:
        a.report(j, 1.0)
    assert a.next_job() is None and a.done and a.best() == (0, 0)
