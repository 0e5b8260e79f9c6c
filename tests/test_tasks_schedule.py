"""TaskGrid indexing and the scheduling policy (cost estimates, longest-first guided chunks)."""

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import ParameterGrid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from hpcml.core.costs import BASE_COST, estimate_cost, learn_costs
from hpcml.core.schedule import (
    DEFAULT_GRAIN,
    MIN_GRAIN,
    CostModel,
    batch_grain,
    plan_chunks,
    replan,
    replan_due,
)
from hpcml.core.tasks import TaskGrid

MODELS = [
    ("logit", {"C": [0.1, 1.0, 10.0], "penalty": ["l2"]}),
    ("rf", [{"n_estimators": [10, 50], "max_depth": [None, 3]}, {"criterion": ["entropy"]}]),
    ("dummy", {}),
]


@pytest.fixture
def grid():
    return TaskGrid(MODELS, n_splits=4)


# -- TaskGrid ----------------------------------------------------------------------------------


def test_len_and_candidates(grid):
    assert grid.n_candidates == 3 + 5 + 1
    assert len(grid) == grid.n_candidates * 4
    assert grid.model_names == ["logit", "rf", "dummy"]
    assert [c.index for c in grid.candidates] == list(range(grid.n_candidates))


def test_iteration_equals_indexing(grid):
    tasks = list(grid)
    assert tasks == [grid[i] for i in range(len(grid))]
    assert [t.index for t in tasks] == list(range(len(grid)))


def test_task_order_is_candidate_then_fold(grid):
    for t in grid:
        assert t.candidate.index == t.index // grid.n_splits
        assert t.fold == t.index % grid.n_splits
        assert grid.task_index(t.candidate.index, t.fold) == t.index


def test_negative_index(grid):
    assert grid[-1] == grid[len(grid) - 1]
    assert grid[-len(grid)] == grid[0]
    assert grid[-1].candidate.model == "dummy"
    assert grid[-1].fold == grid.n_splits - 1


@pytest.mark.parametrize("bad", [36, 37, 1000, -37])
def test_index_error(grid, bad):
    assert len(grid) == 36
    with pytest.raises(IndexError):
        grid[bad]


def test_non_integer_index(grid):
    with pytest.raises(TypeError):
        grid[1.0]


def test_candidate_order_matches_parameter_grid():
    expected = []
    for name, param_grid in MODELS:
        expected += [(name, p) for p in ParameterGrid(param_grid)]
    grid = TaskGrid(MODELS, n_splits=2)
    assert [(c.model, dict(c.params)) for c in grid.candidates] == expected
    # list-of-dicts: the rf candidates come in ParameterGrid order, sorted keys within a dict
    rf = [dict(c.params) for c in grid.candidates if c.model == "rf"]
    assert rf == list(ParameterGrid(MODELS[1][1]))
    assert rf[-1] == {"criterion": "entropy"}


def test_same_input_same_grid():
    assert list(TaskGrid(MODELS, 3)) == list(TaskGrid(MODELS, 3))


def test_n_splits_must_be_positive():
    with pytest.raises(ValueError):
        TaskGrid(MODELS, n_splits=0)


# -- plan_chunks -------------------------------------------------------------------------------


def chunks(plan):
    return [plan.chunk(c).tolist() for c in range(plan.n_chunks)]


def random_costs(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return rng.lognormal(mean=-4, sigma=2, size=n)


@pytest.mark.parametrize("n_workers", [1, 3, 16, 200])
def test_every_task_exactly_once(n_workers):
    costs = random_costs()
    plan = plan_chunks(costs, n_workers)
    flat = [t for c in chunks(plan) for t in c]
    assert sorted(flat) == list(range(len(costs)))
    assert all(len(c) >= 1 for c in chunks(plan))
    assert plan.bounds[0] == 0 and plan.bounds[-1] == len(costs)
    assert np.all(np.diff(plan.bounds) > 0)


def test_chunks_are_longest_first():
    costs = random_costs()
    plan = plan_chunks(costs, 8)
    flat = np.concatenate([plan.chunk(c) for c in range(plan.n_chunks)])
    np.testing.assert_array_equal(flat, plan.order)
    claimed = costs[flat]
    assert np.all(np.diff(claimed) <= 0)
    # a later chunk never holds a costlier task than an earlier chunk
    maxes = [costs[plan.chunk(c)].max() for c in range(plan.n_chunks)]
    mins = [costs[plan.chunk(c)].min() for c in range(plan.n_chunks)]
    assert all(maxes[c + 1] <= mins[c] for c in range(plan.n_chunks - 1))


def test_ties_keep_task_order():
    plan = plan_chunks([1.0, 2.0, 1.0, 2.0, 1.0], n_workers=1, grain=0.0)
    assert plan.order.tolist() == [1, 3, 0, 2, 4]


def test_tiny_tasks_are_batched():
    n = 10_000
    plan = plan_chunks(np.full(n, 1e-5), n_workers=4)
    assert sorted(plan.order.tolist()) == list(range(n))
    assert plan.n_chunks < n / 50
    # each batch is worth at least about one batch floor of work, except the last remainder
    sizes = np.diff(plan.bounds)
    floor = batch_grain(n * 1e-5, 4)
    assert MIN_GRAIN <= floor <= DEFAULT_GRAIN
    assert sizes[:-1].min() * 1e-5 >= floor * 0.99


def test_guided_chunks_shrink():
    plan = plan_chunks(np.full(4000, 1e-3), n_workers=4, grain=0.0)
    sizes = np.diff(plan.bounds)
    assert sizes[0] > sizes[-1]
    assert np.all(np.diff(sizes) <= 0)
    # the first chunk is about 1 / (2 * workers) of the work
    assert sizes[0] == pytest.approx(4000 / 8, rel=0.01)


def test_single_huge_task_gets_its_own_chunk():
    costs = [0.01] * 50 + [1000.0] + [0.01] * 50
    plan = plan_chunks(costs, n_workers=4)
    assert plan.chunk(0).tolist() == [50]
    assert 50 not in np.concatenate([plan.chunk(c) for c in range(1, plan.n_chunks)])


def test_expensive_tasks_one_at_a_time():
    costs = [10.0] * 8 + [1e-4] * 100
    plan = plan_chunks(costs, n_workers=4)
    first = chunks(plan)[:8]
    assert first == [[i] for i in range(8)]


def test_plan_is_deterministic():
    costs = random_costs(seed=3)
    a = plan_chunks(costs, 7)
    b = plan_chunks(list(costs), 7)
    np.testing.assert_array_equal(a.order, b.order)
    np.testing.assert_array_equal(a.bounds, b.bounds)


def test_doc_example():
    plan = plan_chunks([1.0, 5.0, 0.01, 0.01, 0.01, 0.01], n_workers=2, grain=0.05)
    assert chunks(plan) == [[1], [0], [2, 3, 4], [5]]


def test_batch_floor_shrinks_with_the_work_per_worker():
    # plenty of work per worker: the full grain; little: 1 % of it, never under MIN_GRAIN
    assert batch_grain(100.0 * 64, 64) == DEFAULT_GRAIN
    assert batch_grain(0.5 * 64, 64) == pytest.approx(0.005)
    assert batch_grain(0.01, 64) == MIN_GRAIN
    # 2.5 ms tasks on 4,096 ranks, 24 each: the last batches are one or two tasks
    plan = plan_chunks(np.full(100_000, 2.5e-3), 4096)
    assert np.diff(plan.bounds)[-4096:].max() <= 2


def test_empty_plan():
    plan = plan_chunks([], n_workers=4)
    assert plan.n_chunks == 0
    assert plan.order.tolist() == []


# -- estimate_cost -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "est",
    [RandomForestClassifier(), "GradientBoostingClassifier", "ExtraTreesRegressor",
     make_pipeline(StandardScaler(), RandomForestClassifier())],
)
def test_cost_monotonic_in_n_estimators(est):
    costs = [estimate_cost(est, {"n_estimators": k}, 2000, 20) for k in (10, 50, 100, 400)]
    assert all(a < b for a, b in zip(costs, costs[1:], strict=False))


@pytest.mark.parametrize(
    "est",
    [LogisticRegression(), DecisionTreeClassifier(), RandomForestClassifier(), "SVC",
     "KNeighborsClassifier", "HistGradientBoostingClassifier"],
)
def test_cost_monotonic_in_n_samples(est):
    costs = [estimate_cost(est, {}, n, 20) for n in (100, 1000, 10_000, 100_000)]
    assert all(a < b for a, b in zip(costs, costs[1:], strict=False))
    assert all(c > 0 for c in costs)


def test_cost_uses_the_pipeline_last_step_and_step_params():
    pipe = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=10))
    small = estimate_cost(pipe, {}, 1000, 10)
    big = estimate_cost(pipe, {"randomforestclassifier__n_estimators": 500}, 1000, 10)

    assert big - BASE_COST == pytest.approx((small - BASE_COST) * 50)


def test_cost_ranks_model_kinds():
    n, d = 4000, 30
    assert estimate_cost("DummyClassifier", {}, n, d) < estimate_cost("LogisticRegression", {}, n, d)
    assert estimate_cost("RandomForestClassifier", {"n_estimators": 200}, n, d) > estimate_cost(
        "RandomForestClassifier", {"n_estimators": 60}, n, d
    )
    shallow = estimate_cost("RandomForestClassifier", {"max_depth": 2}, n, d)
    deep = estimate_cost("RandomForestClassifier", {"max_depth": None}, n, d)
    assert shallow < deep


def test_cost_specific_names_win_over_their_suffixes():
    n, d = 5000, 20
    # HistGradientBoosting is costed as itself, not as GradientBoosting
    assert estimate_cost("HistGradientBoostingClassifier", {}, n, d) < estimate_cost(
        "GradientBoostingClassifier", {}, n, d
    )
    # LinearSVC is linear in n_samples, SVC (a kernel machine) is quadratic
    linear = [estimate_cost("LinearSVC", {}, k, d) for k in (10_000, 100_000)]
    kernel = [estimate_cost("SVC", {}, k, d) for k in (10_000, 100_000)]
    assert linear[1] / linear[0] < 11
    assert kernel[1] / kernel[0] > 50


# -- learning costs during a run ----------------------------------------------------------------


def test_learn_costs_dict_and_arrays_agree():
    est = np.array([1.0, 1.0, 2.0, 2.0, 5.0, 5.0])
    cand = np.array([0, 0, 1, 1, 2, 2])
    model = np.array([0, 0, 0, 0, 1, 1])
    a = learn_costs(est, cand, model, {0: 3.0, 1: 5.0})
    b = learn_costs(est, cand, model, (np.array([0, 1]), np.array([3.0, 5.0])))
    np.testing.assert_array_equal(a, b)
    # candidate 0: its own mean; candidate 1: model 0's ratio (median of 3 and 5) x 2;
    # model 1 has nothing measured: its estimates stay
    assert a.tolist() == [4.0, 4.0, 8.0, 8.0, 5.0, 5.0]


def test_learn_costs_without_measurements_is_the_estimate():
    est = np.array([1.0, 2.0])
    out = learn_costs(est, [0, 1], [0, 0], {})
    assert out.tolist() == [1.0, 2.0] and out is not est


def test_replan_keeps_claimed_chunks_and_every_task_once():
    rng = np.random.default_rng(2)
    est = rng.lognormal(-3, 1, size=300)
    plan = plan_chunks(est, 4, cost_model=CostModel(est, np.arange(300) // 5, np.zeros(300)))
    true = est * rng.lognormal(0, 1, size=300)
    first = plan.n_chunks // 3
    new = replan(plan, first, true)
    for c in range(first):
        np.testing.assert_array_equal(new.chunk(c), plan.chunk(c))
    assert sorted(new.order.tolist()) == list(range(300))
    start = plan.bounds[first]
    assert np.all(np.diff(true[new.order[start:]]) <= 0)  # the rest longest first by `true`
    assert new.bounds[-1] == 300 and np.all(np.diff(new.bounds) > 0)
    assert new.costs is plan.costs and new.n_workers == 4


def test_replan_past_the_end_changes_nothing():
    plan = plan_chunks([3.0, 2.0, 1.0], 2, grain=0.0)
    new = replan(plan, plan.n_chunks, np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(new.order, plan.order)
    np.testing.assert_array_equal(new.bounds, plan.bounds)


def test_cost_model_learns_from_the_folds_measured_so_far():
    # two candidates of 5 folds; estimates say candidate 1 is cheap, it is 10x dearer
    est = np.array([1.0] * 5 + [0.5] * 5)
    cm = CostModel(est, np.arange(10) // 5, np.zeros(10, dtype=np.int64))
    costs = cm.learn(np.array([5]), np.array([10.0]))
    assert costs[5:].tolist() == [10.0] * 5
    assert costs[:5].tolist() == [20.0] * 5  # model ratio 20 from candidate 1's fold


def test_replan_points_are_unique_and_geometric():
    for p in (1, 2, 3, 64):
        due = [c for c in range(70 * p) if replan_due(c, p)]
        assert due == [p * 2**k for k in range(1, 7)]
