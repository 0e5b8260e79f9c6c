"""TaskGrid indexing and the scheduling policy (cost estimates, longest-first guided chunks)."""

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import ParameterGrid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from hpcml.schedule import DEFAULT_GRAIN, estimate_cost, plan_chunks
from hpcml.tasks import TaskGrid

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
    # each batch is worth at least about one grain of work, except the last remainder
    sizes = np.diff(plan.bounds)
    assert sizes[:-1].min() * 1e-5 >= DEFAULT_GRAIN * 0.99


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
    assert chunks(plan) == [[1], [0], [2, 3, 4, 5]]


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
    from hpcml.schedule import BASE_COST

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
