"""Engine.run_source on the serial engine: tasks made as others land, stop, a stuck source."""

from __future__ import annotations

import pytest

from hpcml.core.fitting import FitResult
from hpcml.engines.base import Engine, SerialEngine, SourceStuck

pytestmark = pytest.mark.timeout(60)


class Doubling:
    """Starts task 0; each result t < limit makes tasks 2t+1 and 2t+2."""

    def __init__(self, limit: int, stuck: bool = False) -> None:
        self.ready, self.out, self.seen, self.limit, self.stuck = [0], set(), [], limit, stuck

    def next_task(self):
        if not self.ready:
            return None
        t = self.ready.pop(0)
        self.out.add(t)
        return t

    def report(self, r: FitResult) -> None:
        self.out.remove(r.task)
        self.seen.append(r.task)
        if r.task < self.limit:
            self.ready += [2 * r.task + 1, 2 * r.task + 2]

    @property
    def done(self) -> bool:
        return not self.stuck and not self.ready and not self.out


def fit(t: int) -> FitResult:
    return FitResult(t, {"score": float(t)}, None, 0.0, 0.0)


def test_serial_run_source_runs_what_the_results_make():
    src = Doubling(limit=3)
    out = SerialEngine().run_source(src, fit)
    assert sorted(out) == list(range(7)) and src.seen == list(range(7)) and src.done


def test_serial_run_source_stops_and_refuses_a_stuck_source():
    engine = SerialEngine()
    src = Doubling(limit=100)
    out = engine.run_source(src, fit, should_stop=lambda: len(src.seen) >= 4)
    assert len(out) == 4 and engine.interrupted
    with pytest.raises(SourceStuck):
        SerialEngine().run_source(Doubling(limit=0, stuck=True), fit)


def test_an_engine_without_run_source_says_so():
    class Static(Engine):
        name = "static"

        def run(self, plan, run_task, observers=None, should_stop=None):
            return {}

    with pytest.raises(NotImplementedError, match="static engine"):
        Static().run_source(Doubling(1), fit)
