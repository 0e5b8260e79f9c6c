"""The scheduling simulator: same policy as the engines, event-driven claims, bounds."""

import numpy as np
import pytest

from hpcml.core.schedule import CostModel, plan_chunks
from hpcml.core.simulate import (
    costs_from_cv_results,
    grid_costs,
    grid_estimates,
    load_costs,
    main,
    node_latencies,
    noisy_estimates,
    simulate,
    synthetic_costs,
)


@pytest.mark.parametrize("p, per_rank", [(1, 5), (2, 20), (8, 8), (64, 3), (512, 4)])
def test_equal_tasks_divisible_by_p_reach_the_bound(p, per_rank):
    lat = 2e-6
    r = simulate([0.25] * (p * per_rank), p, latency=lat)
    assert r.lower_bound == pytest.approx(0.25 * per_rank)
    # every rank pays at most one claim per task plus the last, empty one
    assert r.lower_bound <= r.makespan <= r.lower_bound + (per_rank + 1) * lat + 1e-9
    assert r.ratio == pytest.approx(1.0, abs=1e-4)


def test_one_huge_task_sets_the_makespan():
    costs = [0.01] * 500 + [30.0] + [0.01] * 500
    r = simulate(costs, 16, latency=0.0)
    assert r.makespan == 30.0
    assert r.lower_bound == 30.0 and r.ratio == 1.0
    # with latency: the huge task's claim and the rank's last (empty) claim
    r = simulate(costs, 16, latency=1e-5)
    assert r.makespan == pytest.approx(30.0 + 2e-5)


def test_uses_the_real_policy():
    costs = synthetic_costs(3000, seed=4)
    est = noisy_estimates(costs, 0.5, seed=4)
    r = simulate(costs, 12, estimates=est, grain=0.05)
    expected = plan_chunks(est, 12, 0.05)
    np.testing.assert_array_equal(r.plan.order, expected.order)
    np.testing.assert_array_equal(r.plan.bounds, expected.bounds)
    assert r.n_chunks == expected.n_chunks
    # every rank makes one claim per chunk it runs, plus the one that finds nothing left
    assert r.n_claims == r.n_chunks + 12


def test_custom_policy():
    def one_per_chunk_in_task_order(est, n_ranks):
        from hpcml.core.schedule import Plan

        n = len(est)
        return Plan(np.arange(n, dtype=np.int64), np.arange(n + 1, dtype=np.int64))

    costs = [1.0, 1.0, 1.0, 3.0]
    r = simulate(costs, 2, latency=0.0, policy=one_per_chunk_in_task_order)
    assert r.n_chunks == 4
    assert r.makespan == 4.0  # the long task starts last, at t = 1
    assert simulate(costs, 2, latency=0.0).makespan == 3.0 == r.lower_bound  # longest first


def test_plan_from_estimates_runs_true_costs():
    costs = [4.0, 1.0, 1.0, 1.0, 1.0]
    exact = simulate(costs, 2, latency=0.0)
    assert exact.makespan == 4.0 == exact.lower_bound
    # the long task looks cheapest, so it goes last: 2 s of small tasks, then 4 s
    wrong = simulate(costs, 2, estimates=[0.1, 1.0, 1.0, 1.0, 1.0], latency=0.0)
    assert wrong.plan.order[-1] == 0
    assert wrong.makespan == 6.0
    assert wrong.work == exact.work == 8.0


def test_makespan_never_beats_the_bound():
    rng = np.random.default_rng(7)
    for _ in range(30):
        n, p = int(rng.integers(1, 400)), int(rng.integers(1, 40))
        costs = rng.lognormal(-3, 1.5, size=n)
        est = costs * rng.lognormal(0, 1, size=n)
        r = simulate(costs, p, estimates=est, latency=0.0)
        assert r.makespan >= r.lower_bound * (1 - 1e-12)
        assert 0.0 <= r.idle_fraction < 1.0


def test_timeline_runs_every_task_once_without_overlap():
    costs = synthetic_costs(2000, sigma=1.5, seed=2)
    r = simulate(costs, 7, latency=5e-6, overhead=1e-4, record=True)
    tl = r.timeline()
    assert sorted(t for *_, t in tl) == list(range(2000))
    for rank in range(7):
        spans = sorted((s, e) for rk, s, e, _ in tl if rk == rank)
        assert all(a[1] <= b[0] + 1e-12 for a, b in zip(spans, spans[1:], strict=False))
    assert max(e for _, _, e, _ in tl) < r.makespan
    assert all(e - s == pytest.approx(costs[t] + 1e-4) for _, s, e, t in tl)
    with pytest.raises(ValueError, match="record=True"):
        simulate(costs, 7).timeline()


def test_overhead_is_busy_time_but_not_work():
    r0 = simulate([0.01] * 1000, 4, latency=0.0)
    r1 = simulate([0.01] * 1000, 4, latency=0.0, overhead=0.001)
    assert r1.work == r0.work and r1.lower_bound == r0.lower_bound
    assert r1.busy == pytest.approx(r0.busy + 1.0)
    assert r1.makespan == pytest.approx(r0.makespan + 0.25, rel=0.05)


def test_counter_serialises_claims():
    p, c, s = 100, 1.0, 1e-4
    r = simulate([c] * p, p, latency=0.0, service=s)
    # claims are served at 0, s, 2s, ...: the last rank starts at p*s; its final claim waits s
    assert r.makespan == pytest.approx(c + (p + 1) * s)


def test_per_rank_latency():
    lat = node_latencies(8, 4, intra=1e-6, inter=1e-3)
    assert lat.tolist() == [1e-6] * 4 + [1e-3] * 4
    r = simulate([1.0] * 8, 8, latency=lat)
    assert r.makespan == pytest.approx(1.0 + 2e-3)  # a far rank: two round trips
    with pytest.raises(ValueError):
        simulate([1.0], 2, latency=[1e-6, 1e-6, 1e-6])


def test_scale_4096_ranks_100000_tasks_is_fast_and_deterministic():
    costs = synthetic_costs(100_000, median=0.05, sigma=0.5, seed=0)
    est = noisy_estimates(costs, 0.3, seed=0)
    lat = node_latencies(4096, 64)
    a = simulate(costs, 4096, estimates=est, latency=lat, overhead=1e-4)
    b = simulate(costs, 4096, estimates=est, latency=lat, overhead=1e-4)
    assert a.n_tasks == 100_000 and a.n_ranks == 4096
    assert 1.0 <= a.ratio < 1.5
    assert a.n_claims == a.n_chunks + 4096
    assert (a.makespan, a.n_claims, a.busy) == (b.makespan, b.n_claims, b.busy)


def test_bad_input():
    with pytest.raises(ValueError, match="estimates"):
        simulate([1.0, 2.0], 2, estimates=[1.0])
    with pytest.raises(ValueError, match="n_ranks"):
        simulate([1.0], 0)
    with pytest.raises(ValueError, match="non-negative"):
        simulate([1.0, -1.0], 2)
    with pytest.raises(ValueError, match="non-negative"):
        simulate([1.0], 1, latency=-1.0)


def test_no_tasks():
    r = simulate([], 3, latency=1e-6)
    assert r.n_chunks == 0 and r.n_claims == 3
    assert r.lower_bound == 0.0


def test_costs_from_cv_results(tmp_path):
    path = tmp_path / "cv_results.csv"
    path.write_text(
        "model,mean_fit_time,std_fit_time,mean_score_time,std_score_time,params,"
        "split0_test_acc,split1_test_acc,split2_test_acc,mean_test_acc\n"
        'a,0.5,0.0,0.25,0.0,"{}",1,1,1,1\n'
        'b,2.0,0.0,0.0,0.0,"{}",1,1,1,1\n'
    )
    assert costs_from_cv_results(path).tolist() == [0.75] * 3 + [2.0] * 3
    assert load_costs(path).tolist() == [0.75] * 3 + [2.0] * 3
    np.save(tmp_path / "c.npy", np.array([1.0, 2.0]))
    assert load_costs(tmp_path / "c.npy").tolist() == [1.0, 2.0]
    (tmp_path / "c.txt").write_text("0.5\n1.5\n")
    assert load_costs(tmp_path / "c.txt").tolist() == [0.5, 1.5]


def test_noisy_estimates():
    c = synthetic_costs(100, seed=1)
    np.testing.assert_array_equal(noisy_estimates(c, 0.0), c)
    e = noisy_estimates(c, 0.5, seed=1)
    assert not np.array_equal(e, c) and np.all(e > 0)
    np.testing.assert_array_equal(e, noisy_estimates(c, 0.5, seed=1))


def test_main_prints_a_table(capsys, tmp_path):
    assert main(["--ranks", "4", "64", "--tasks", "2000", "--estimate-error", "0.3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[:2] == ["P", "sum/P"]
    assert [line.split()[0] for line in out[3:]] == ["4", "64"]
    ratios = [float(line.split()[5]) for line in out[3:]]
    assert all(r >= 1.0 for r in ratios)
    np.save(tmp_path / "c.npy", np.array([1.0, 2.0, 3.0]))
    assert main(["--ranks", "2", "--costs", str(tmp_path / "c.npy"), "--tasks", "50"]) == 0
    assert "resampled to 50" in capsys.readouterr().out


# -- re-plans with measured costs ---------------------------------------------------------------


def test_grid_costs_folds_cost_about_the_same():
    costs, cand, model = grid_costs(200, n_folds=5, n_models=4, fold_sigma=0.05, seed=3)
    per = costs.reshape(200, 5)
    assert np.all(per.max(axis=1) / per.min(axis=1) < 1.5)
    assert cand.tolist()[:10] == [0] * 5 + [1] * 5
    assert sorted(set(model.tolist())) == [0, 1, 2, 3]
    est = grid_estimates(costs, cand, model, error=0.0)
    np.testing.assert_allclose(est.reshape(200, 5), per.mean(axis=1, keepdims=True).repeat(5, 1))


def test_learning_beats_a_fixed_plan_when_a_model_is_misestimated():
    # the cost model is 10x too low for one model of four: its tasks would go last
    costs, cand, model = grid_costs(2000, n_folds=5, sigma=0.5, seed=5)
    est = costs.copy()
    est[model == 3] /= 10
    cm = CostModel(est, cand, model)
    fixed = simulate(costs, 256, estimates=est, cost_model=cm, learn=False)
    learnt = simulate(costs, 256, estimates=est, cost_model=cm, learn=True)
    assert fixed.n_replans == 0 and learnt.n_replans >= 1
    assert learnt.makespan < fixed.makespan
    assert learnt.ratio < 1.03 < fixed.ratio
    # re-plans only reorder: the same tasks run, each once
    assert sorted(learnt.plan.order.tolist()) == list(range(costs.size))


def test_a_replan_that_cannot_land_in_time_is_dropped():
    # a re-plan that takes far longer than the rest of the run never lands
    costs, cand, model = grid_costs(500, n_folds=5, seed=1)
    cm = CostModel(costs * 3, cand, model)
    r = simulate(costs, 8, estimates=costs * 3, cost_model=cm, replan_cost=10.0)
    assert r.n_replans == 0
    np.testing.assert_array_equal(r.plan.order, plan_chunks(costs * 3, 8).order)


def test_main_compares_learning_and_a_fixed_plan(capsys):
    args = ["--ranks", "64", "--tasks", "5000", "--estimate-error", "0.5", "--model-error", "1"]
    assert main(args) == 0
    learnt = capsys.readouterr().out
    assert main([*args, "--no-learn"]) == 0
    fixed = capsys.readouterr().out
    assert "re-planned with measured costs" in learnt and "fixed plan" in fixed
    row = {name: out.splitlines()[3].split() for name, out in (("l", learnt), ("f", fixed))}
    assert int(row["f"][9]) == 0 < int(row["l"][9])  # the re-plans column
