"""The plan board: chunk claims that re-plan the unclaimed tasks with measured costs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hpcml.core.fitting import FitResult
from hpcml.core.schedule import CostModel, Plan, plan_chunks
from hpcml.engines.mpi.board import PlanBoard
from hpcml.engines.mpi.engine import MPIEngine

pytestmark = pytest.mark.mpi


def test_a_lone_claimer_replans_with_what_it_measured(comm):
    # 40 tasks of two models, estimated equal, one per chunk: model 1 (odd tasks) turns out
    # 10x dearer. Only rank 0 claims, so the re-plan at claim 2P must land at chunk 3P.
    size, n = comm.Get_size(), 40
    model = np.arange(n, dtype=np.int64) % 2
    costs = CostModel(np.ones(n), np.arange(n, dtype=np.int64), model)
    plan = Plan(np.arange(n, dtype=np.int64), np.arange(n + 1, dtype=np.int64), costs, size, 0.0)
    seen = []
    # an old t0: a slow claim rate, so the re-plan starts P chunks after the claim
    with PlanBoard(comm, plan, t0=time.time() - 1e4) as board:
        if comm.Get_rank() == 0:
            while (chunk := board.next_chunk()) is not None:
                seen.extend(chunk.tolist())
                board.publish([10.0 if t % 2 else 1.0 for t in chunk])
    if comm.Get_rank() != 0:
        return
    q = 3 * size
    assert board.replans >= 1
    assert seen[:q] == list(range(q))
    rest = list(range(q, n))
    assert seen[q:] == [t for t in rest if t % 2] + [t for t in rest if not t % 2]


def test_every_task_once_while_ranks_race_and_replan(comm):
    # Estimates say the tasks cost the same; in truth one model's tasks take 20x longer.
    # Every rank claims, re-plans land or are dropped: still every task runs exactly once.
    size, n = comm.Get_size(), 240
    cand = np.arange(n, dtype=np.int64) // 3
    model = cand % 4
    est = np.full(n, 1e-3)
    plan = plan_chunks(est, size, grain=0.0, cost_model=CostModel(est, cand, model))
    engine = MPIEngine(comm)
    calls = []

    def run_task(t):
        calls.append(t)
        time.sleep(2e-3 if model[t] == 3 else 1e-4)
        return FitResult(t, {"score": float(t)}, None, 0.0, 0.0)

    results = engine.run(plan, run_task)
    assert sorted(sum(comm.allgather(calls), [])) == list(range(n))  # no task twice
    replans = engine.replans  # summed over the ranks: the same on every rank
    assert comm.allgather(replans) == [replans] * size
    if comm.Get_rank() == 0:
        assert sorted(results) == list(range(n))
        assert all(results[t].test_scores["score"] == t for t in results)
        assert replans <= 7  # one per re-plan point (2P, 4P, ... claims) at most
