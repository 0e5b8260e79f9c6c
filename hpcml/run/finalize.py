"""From fit results to files: ``cv_results_``, the best candidate, its refit, ``run.json``.

Used at the end of a run (root only) and by ``hpcml collect``; :func:`refit_best` is also the
refit of the scikit-learn drop-ins, and :func:`run_info` the one place versions are read.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.core.fitting import FitResult, Folds
from hpcml.core.oof import best_per_model, oof_csv
from hpcml.core.results import best_index, cv_results_to_csv, format_cv_results
from hpcml.core.tasks import TaskGrid
from hpcml.core.threads import thread_budget, usable_cores
from hpcml.errors import RunError, SpecError, UsageError
from hpcml.run.outputs import atomic_dump_joblib, atomic_write_json, atomic_write_text
from hpcml.spec.schema import ExperimentSpec

__all__ = ["all_failed_error", "finalize", "refit_best", "run_info", "versions", "is_classifier_spec"]


def finalize(
    spec: ExperimentSpec,
    grid: TaskGrid,
    results: dict[int, FitResult],
    X: Any,
    y: Any,
    estimators: dict[str, Any],
    out: Path | None,
    run: dict[str, Any],
    refit: bool = True,
    folds: Folds | None = None,
    classes: list[str] | None = None,
    extra: Any = None,
) -> tuple[dict[str, Any], dict[str, Any] | None, Any]:
    """From results to ``cv_results``, the best candidate, its refit and the files in ``out``.

    A complete set of results gives the final files (``run.json`` last: it marks a finished
    run); an incomplete one gives ``cv_results.csv`` with a ``finished_splits`` column.
    ``extra`` is more of the run beyond the search (nested CV's
    :class:`~hpcml.run.nested.NestedOutputs`): its ``files`` are written before ``run.json``
    and its ``best`` entries go into ``best.json``; until it is ``complete`` the run is not
    finished (no refit, ``best.json`` or ``run.json``).
    """
    complete = len(results) == len(grid)
    finished = complete and (extra is None or extra.complete)
    cv = format_cv_results(
        grid.candidates, grid.n_splits, results, spec.metric_names, spec.return_train_score,
        partial=not complete,
    )
    best, best_est = None, None
    if complete and results and all(r.error is not None for r in results.values()):
        if out is not None:  # the scores and the journal stay; no refit of a failing model
            atomic_write_text(out / "cv_results.csv", cv_results_to_csv(cv))
        raise all_failed_error(results, grid, out, spec.source)
    if finished and spec.refit_metric is not None:
        i = best_index(cv, spec.refit_metric)
        cand = grid.candidates[i]
        best = {
            "model": cand.model,
            "params": dict(cand.params),
            "index": i,
            "refit_metric": spec.refit_metric,
            "scores": {m: float(cv[f"mean_test_{m}"][i]) for m in spec.metric_names},
        }
        if extra is not None:
            best.update(extra.best)
        if refit and X is not None:
            best_est, refit_time = refit_best(estimators[cand.model], cand.params, X, y)
            best["refit_time"] = refit_time
    if out is not None:
        atomic_write_text(out / "cv_results.csv", cv_results_to_csv(cv, partial=not complete))
        if finished:
            failed = [r for r in results.values() if r.error is not None]
            if failed:
                run["failures"] = _failure_summary(failed, grid)
            if best is not None:
                atomic_write_json(out / "best.json", best)
            if best_est is not None:
                atomic_dump_joblib(out / "best_model.joblib", best_est)
            if spec.save_oof and folds is not None:
                metric = spec.refit_metric or spec.metric_names[0]
                which = (best_per_model(grid, cv, metric) if spec.save_oof["candidates"] == "best"
                         else list(range(grid.n_candidates)))
                n_samples = len(X) if X is not None else int(run.get("n_samples") or 0)
                n_samples = max(n_samples, int(folds.test_flat.max(initial=-1)) + 1)
                if classes is None and y is not None and is_classifier_spec(estimators):
                    classes = [str(c) for c in np.unique(y)]
                text = oof_csv(grid, results, folds, n_samples, which, classes)
                atomic_write_text(out / "oof_predictions.csv", text)
            for name, text in (extra.files.items() if extra is not None else ()):
                atomic_write_text(out / name, text)
            atomic_write_json(out / "run.json", run)  # last: its presence marks a finished run
    if finished:
        _warn_failures(results, grid)
    return cv, best, best_est


#: Exception types that point at the spec (its params, data or scoring): exit status 2.
SPEC_CAUSES = ("InvalidParameterError", "ValueError", "TypeError", "KeyError")


def all_failed_error(results: dict[int, FitResult], grid: TaskGrid, out: Path | None,
                     source: str | None = None) -> UsageError:
    """scikit-learn's "All the N fits failed" as one line: the error counts and the fix.

    A :class:`SpecError` (exit 2) when every error is of a type that points at the spec
    (bad params or data), else a :class:`RunError` (exit 1: time limits, memory, the
    estimator's own bugs).
    """
    counts: dict[str, int] = {}
    for r in results.values():
        last = (r.error or "").strip().splitlines()[-1:] or ["unknown error"]
        counts[last[0]] = counts.get(last[0], 0) + 1
    kinds = {line.split(":", 1)[0].rsplit(".", 1)[-1] for line in counts}
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    detail = "; ".join(f"{n} with {line[:300]}" for line, n in ordered[:3])
    if len(ordered) > 3:
        detail += f"; {len(ordered) - 3} more kinds"
    kept = f"; cv_results.csv and the journal are in {out}" if out is not None else ""
    head = f"All the {len(results)} fits failed ({detail}){kept}, and nothing was refit"
    if kinds <= set(SPEC_CAUSES):
        info = _failure_summary(list(results.values()), grid)["first"]
        return SpecError(f"models.{info['model']}",
                         f"{head}. Fix the model's params or the data, then run with --force",
                         source)
    return RunError(f"{head}. Fix the cause above (a fit_timeout too short? memory?) and run "
                    "again with --force")


def _failure_summary(failed: list[FitResult], grid: TaskGrid) -> dict[str, Any]:
    first = failed[0]
    task = grid[first.task]
    last_line = (first.error or "").strip().splitlines()[-1:] or [""]
    return {
        "n_failed": len(failed),
        "first": {"model": task.candidate.model, "params": dict(task.candidate.params),
                  "fold": task.fold, "error": last_line[0]},
    }


def _warn_failures(results: dict[int, FitResult], grid: TaskGrid) -> None:
    failed = [r for r in results.values() if r.error is not None]
    if not failed:
        return
    info = _failure_summary(failed, grid)["first"]
    sys.stderr.write(
        f"hpcml: warning: {len(failed)} of {len(grid)} fits failed and were scored with "
        f"error_score; first: models.{info['model']} {info['params']} fold {info['fold']}: "
        f"{info['error']} (tracebacks in the journal)\n"
    )


def refit_best(estimator: Any, params: dict, X: Any, y: Any, **fit_params: Any) -> tuple[Any, float]:
    """Refit ``estimator`` with ``params`` on all data, with every core of this node.

    Returns the fitted estimator and the refit's seconds. ``fit_params`` go to ``fit``.
    """
    from sklearn.base import clone

    cores = usable_cores()
    # The refit model may keep a reference to its training data (e.g. k-NN): give it a
    # private copy, not the shared-memory view that the engine frees.
    X = X if getattr(X, "flags", None) is None or X.flags.writeable else np.array(X)
    if y is not None and hasattr(y, "flags") and not y.flags.writeable:
        y = np.array(y)
    est = clone(estimator)
    est.set_params(**clone(dict(params), safe=False))
    t = time.time()
    with thread_budget(cores):
        est.fit(X, y, **fit_params) if y is not None else est.fit(X, **fit_params)
    return est, time.time() - t


def is_classifier_spec(estimators: dict[str, Any]) -> bool:
    """Whether every model of the spec is a classifier (class labels in the outputs)."""
    from sklearn.base import is_classifier

    return all(is_classifier(e) for e in estimators.values())


def versions() -> dict[str, str]:
    """Versions of Python, hpcml and the libraries a result depends on."""
    import joblib
    import sklearn
    import threadpoolctl

    from hpcml import __version__

    out = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "joblib": joblib.__version__,
        "threadpoolctl": threadpoolctl.__version__,
        "hpcml": __version__,
    }
    if "mpi4py" in sys.modules:  # never start MPI just to name it
        from hpcml.engines.mpi.world import mpi_versions

        out.update(mpi_versions())
    return out


def run_info(spec: ExperimentSpec, *, engine_info: dict[str, Any], layout: dict[str, Any],
             threads: int | None, threads_source: str | None, data_fingerprint: str,
             n_samples: int, n_features: int | None, n_tasks: int, wall0: float,
             **extra: Any) -> dict[str, Any]:
    """What ``run.json`` holds: the spec, the data, where the ranks ran, versions, wall time."""
    info = {
        "spec_hash": spec.spec_hash(),
        "spec": spec.source,
        "data_fingerprint": data_fingerprint,
        "n_samples": n_samples,
        "n_features": n_features,
        "engine": engine_info.get("engine"),
        "replans": engine_info.get("replans", 0),
        "ranks": engine_info.get("ranks", layout.get("size", 1)),
        "nodes": layout.get("n_nodes", 1),
        "hosts": layout.get("hosts", []),
        "ranks_per_node": layout.get("ranks_on_node", 1),
        "threads_per_rank": threads,
        "threads_source": threads_source,
        "n_tasks": n_tasks,
        "versions": versions(),
        "wall_time": time.time() - wall0,
        "command": sys.argv,
    }
    if engine_info.get("options"):  # an engine's settings (workers, addresses, versions)
        info["engine_options"] = engine_info["options"]
    info.update(extra)
    return info
