"""The plots as pure functions of a run's results (no run, no browser)."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest

from hpcml.report.data import RunData, is_log_scale, load_run, varying_params
from hpcml.report.folds import plot_fold_spread
from hpcml.report.heatmap import plot_heatmap
from hpcml.report.leaderboard import leaderboard
from hpcml.report.nested import plot_nested
from hpcml.report.page import render_report
from hpcml.report.params import plot_param_scores
from hpcml.report.rungs import plot_rungs
from hpcml.report.timeline import plot_timeline, timeline_numbers

pytestmark = pytest.mark.timeout(120)


def grid_data() -> RunData:
    """Two models: ``svc`` with C (logarithmic) x kernel, ``knn`` with one parameter."""
    rng = np.random.default_rng(0)
    params, models = [], []
    for c in (0.01, 0.1, 1.0, 10.0, 100.0):
        for kernel in ("linear", "rbf"):
            params.append({"C": c, "kernel": kernel})
            models.append("svc")
    for k in (1, 5, 15):
        params.append({"n_neighbors": k})
        models.append("knn")
    n, splits = len(params), 4
    scores = 0.7 + 0.2 * rng.random((n, splits))
    cv = {"model": np.array(models, dtype=object), "params": params,
          "mean_fit_time": rng.random(n)}
    for k in range(splits):
        cv[f"split{k}_test_acc"] = scores[:, k]
    cv["mean_test_acc"], cv["std_test_acc"] = scores.mean(1), scores.std(1)
    records = [{"rank": t % 2, "start": t * 0.5, "end": t * 0.5 + 0.4, "task": t,
                "error": "ValueError: x" if t == 3 else None} for t in range(n * splits)]
    return RunData(cv=cv, metrics=["acc"], n_splits=splits, records=records, n_ranks=2)


def test_log_axes_where_the_values_are_logarithmic():
    data = grid_data()
    fig = plot_param_scores(data, "svc")
    c_ax, kernel_ax = fig.axes[:2]
    assert c_ax.get_xscale() == "log" and kernel_ax.get_xscale() == "linear"
    assert [t.get_text() for t in kernel_ax.get_xticklabels()] == ["linear", "rbf"]
    assert c_ax.collections, "the ± std band"
    knn = plot_param_scores(data, "knn")
    assert knn.axes[0].get_xscale() == "linear"  # 1..15 is not orders of magnitude
    assert is_log_scale([1e-4, 1e-2, 1]) and not is_log_scale(["a", "b", "c"])
    assert varying_params([{"a": 1, "b": 2}, {"a": 1, "b": 3}]) == ["b"]


def test_heatmap_only_for_two_parameters():
    data = grid_data()
    fig = plot_heatmap(data, "svc")
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (2, 5) and np.isfinite(image).all()
    assert plot_heatmap(data, "knn") is None


def test_fold_spread_and_leaderboard():
    data = grid_data()
    fig = plot_fold_spread(data, top=2)
    assert len(fig.axes[0].get_yticklabels()) == 4  # 2 of each model
    rows = leaderboard(data, top=2)
    assert [r["model"] for r in rows].count("svc") == 2 and len(rows) == 4
    best = int(np.argmax(data.cv["mean_test_acc"]))
    assert rows[0]["rank"] == 1 and rows[0]["params"] == data.cv["params"][best]


def test_timeline_numbers_and_chart():
    data = grid_data()
    nums = timeline_numbers(data.records, 2)
    assert nums["makespan"] == pytest.approx(52 * 0.5 - 0.1)
    assert nums["lower_bound"] == pytest.approx(52 * 0.4 / 2)
    fig = plot_timeline(data.records, 2, {t: "svc" for t in range(52)})
    title = fig.axes[0].get_title()
    assert "makespan" in title and "lower bound" in title and "idle" in title
    assert plot_timeline([], 2) is None


def test_rungs_of_a_halving_run():
    data = grid_data()
    n = data.n_rows
    data.cv["iter"] = np.array([0.0] * n + [1.0] * 4)
    data.cv["n_resources"] = np.array([100.0] * n + [400.0] * 4)
    data.cv["params"] = data.cv["params"] + data.cv["params"][:4]
    data.cv["model"] = np.concatenate([data.cv["model"], data.cv["model"][:4]])
    for key in ("mean_test_acc", "std_test_acc"):
        data.cv[key] = np.concatenate([data.cv[key], data.cv[key][:4] + 0.05])
    fig = plot_rungs(data)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["0\n100 res.\n13 cand.", "1\n400 res.\n4 cand."]
    assert plot_rungs(grid_data()) is None


def test_nested_outer_scores():
    rows = [{"outer_fold": str(i), "model": "svc", "test_acc": str(0.8 + i / 100),
             "fit_time": "3"} for i in range(5)]
    fig = plot_nested(rows)
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "test_acc"
    assert plot_nested([]) is None


def test_nested_outer_scores_of_several_models_side_by_side():
    """nested_cv.csv as a run writes it: test_* columns are the scores, one mean per model."""
    rows = [{"outer_fold": str(i), "model": m, "params": "{}", "test_acc": str(0.8 + i / 100),
             "inner_best_score": "0.9", "selected": str(m == "svc"), "fit_time": "3",
             "error": ""} for i in range(3) for m in ("svc", "tree")]
    fig = plot_nested(rows)
    (ax,) = fig.axes
    assert ax.get_title() == "test_acc" and len(ax.patches) == 6
    assert [t.get_text().split(":")[0] for t in ax.get_legend().get_texts()] == ["svc", "tree"]


def test_page_has_rungs_and_nested_sections_from_the_files(tmp_path):
    """A run folder whose cv_results.csv has halving columns and a nested_cv.csv."""
    keys = ["model", "params", "iter", "n_resources", "split0_test_acc", "split1_test_acc",
            "mean_test_acc", "std_test_acc", "rank_test_acc"]
    with open(tmp_path / "cv_results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for i, (c, it) in enumerate([(0.1, 0), (1.0, 0), (10.0, 0), (1.0, 1)]):
            s = [0.7 + 0.05 * i, 0.72 + 0.05 * i]
            w.writerow(["svc", json.dumps({"C": c}), it, 50 * (1 + 3 * it), *s, np.mean(s),
                        np.std(s), 4 - i])
    (tmp_path / "run.json").write_text(json.dumps({"ranks": 2, "hosts": ["a"]}))
    (tmp_path / "nested_cv.csv").write_text("outer_fold,test_acc\n0,0.8\n1,0.82\n2,0.79\n")
    page = render_report(load_run(tmp_path))
    assert "<h2>Halving rungs</h2>" in page and "<h2>Nested cross-validation</h2>" in page
    assert "Per-rank timeline" not in page  # no journal


def test_report_without_matplotlib_names_the_extra(tmp_path, monkeypatch, capsys):
    from hpcml.cli.main import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'hpcml[report]'" in err
