"""Run an experiment spec: data → folds → fit tasks → ranks → ``cv_results_`` → refit → files."""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import Dataset, fingerprint, load_data
from .engine import Engine, get_engine
from .errors import UsageError
from .evaluate import evaluate_grid, share_folds
from .fitting import Folds, make_scorer_map
from .outputs import atomic_dump_joblib, atomic_write_json, atomic_write_text, check_out_dir
from .results import best_index, cv_results_to_csv, format_cv_results
from .spec import ExperimentSpec, load_spec, parse_spec
from .tasks import TaskGrid
from .threads import thread_budget, threads_per_rank, usable_cores

__all__ = ["ExperimentResult", "run_experiment"]


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns (on every rank).

    Attributes
    ----------
    cv_results : dict
        ``cv_results_`` of all models' candidates, with a ``model`` column.
    best : dict or None
        ``{"model", "params", "index", "scores"}`` of the best candidate by ``refit``.
    best_estimator : estimator or None
        The best candidate refit on all data (``None`` without refit, and on ranks > 0).
    out : Path or None
        The output folder, when one was given.
    run : dict
        Layout, versions, wall time and the spec hash (what ``run.json`` holds).
    """

    cv_results: dict[str, Any]
    best: dict[str, Any] | None
    best_estimator: Any = None
    out: Path | None = None
    run: dict[str, Any] = field(default_factory=dict)


def run_experiment(
    spec: str | os.PathLike | dict | ExperimentSpec,
    out: str | os.PathLike | None = None,
    *,
    comm: Any = None,
    engine: Engine | None = None,
    threads: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> ExperimentResult:
    """Run a grid-search experiment on every rank of ``comm`` (or serially).

    Call it on every rank (e.g. a script under ``mpiexec -n P``); all ranks return the same
    ``cv_results``.

    Parameters
    ----------
    spec : path, dict or ExperimentSpec
        A YAML spec file, or its content as a dict (relative data paths from the cwd).
    out : path, optional
        Folder for ``cv_results.csv``, ``best.json``, ``best_model.joblib`` and ``run.json``.
    comm : mpi4py communicator, optional
        Defaults to ``COMM_WORLD`` (serial when it has one rank).
    engine : Engine, optional
        Overrides ``comm``.
    threads : int, optional
        Threads for each fit (per rank); default from Slurm, ``OMP_NUM_THREADS`` or cores ÷ ranks.
    progress : bool
        Show progress on rank 0 (standard error).
    force : bool
        Overwrite the results of a finished run in ``out``.

    Returns
    -------
    ExperimentResult

    Raises
    ------
    UsageError
        Bad spec, data or output folder, on every rank, before anything is written.
    """
    wall0 = time.time()
    spec = _as_spec(spec)
    engine = engine or get_engine(comm)
    if out is not None:
        _collective(engine, lambda: check_out_dir(out, force))
    data = _collective(engine, lambda: load_data(spec.data, spec.source))
    X = engine.bcast_array(data.X if engine.is_root else None)
    y = engine.bcast_array(data.y if engine.is_root else None)
    estimators = {m.name: m.make() for m in spec.models}
    first = next(iter(estimators.values()))
    folds = _collective(engine, lambda: _make_folds(spec, first, data))
    folds = share_folds(engine, folds)

    layout = _layout(engine)
    threads, source = threads_per_rank(layout["ranks_on_node"], cli=threads)
    grid = TaskGrid([(m.name, list(m.grid)) for m in spec.models], len(folds))
    metric_arg = list(spec.metric_names) if spec.scoring else None
    scorers = {name: make_scorer_map(metric_arg, est)[0] for name, est in estimators.items()}
    if out is not None and engine.is_root:
        Path(out).mkdir(parents=True, exist_ok=True)
    results = evaluate_grid(
        engine, grid, folds, X, y, estimators, scorers, threads=threads,
        return_train_score=spec.return_train_score, error_score=spec.error_score,
        progress=progress,
    )

    payload = None
    if engine.is_root:
        cv = format_cv_results(
            grid.candidates, grid.n_splits, results, spec.metric_names, spec.return_train_score
        )
        best, best_est = None, None
        if spec.refit_metric is not None:
            i = best_index(cv, spec.refit_metric)
            cand = grid.candidates[i]
            best = {
                "model": cand.model,
                "params": dict(cand.params),
                "index": i,
                "refit_metric": spec.refit_metric,
                "scores": {m: float(cv[f"mean_test_{m}"][i]) for m in spec.metric_names},
            }
            best_est, refit_time = _refit(estimators[cand.model], cand.params, X, y, layout)
            best["refit_time"] = refit_time
        run = _run_info(spec, engine, layout, threads, source, data, len(grid), wall0)
        if out is not None:
            _write_outputs(Path(out), cv, best, best_est, run)
        payload = (cv, best, run)
        engine.release()
    else:
        engine.wait_for_root()
        best_est = None
    cv, best, run = engine.bcast(payload)
    return ExperimentResult(cv, best, best_est, Path(out) if out is not None else None, run)


def _as_spec(spec: Any) -> ExperimentSpec:
    if isinstance(spec, ExperimentSpec):
        return spec
    if isinstance(spec, dict):
        return parse_spec(spec, source="<dict>")
    return load_spec(spec)


def _collective(engine: Engine, fn):
    """Run ``fn`` on the root; a ``UsageError`` there is raised on every rank."""
    value, error = None, None
    if engine.is_root:
        try:
            value = fn()
        except UsageError as exc:
            error = exc
    err = engine.bcast(None if error is None else (type(error), str(error)))
    if err is not None:
        if engine.is_root:
            raise error
        raise UsageError(err[1])
    return value


def _make_folds(spec: ExperimentSpec, estimator: Any, data: Dataset) -> Folds:
    from sklearn.base import is_classifier

    from .errors import SpecError

    splitter = spec.cv.make(is_classifier(estimator), data.y)
    groups = data.groups
    try:
        splits = list(splitter.split(data.X, data.y, groups))
    except ValueError as exc:
        raise SpecError("cv", f"cannot split the data: {exc}", spec.source) from None
    if not splits:
        raise SpecError("cv", "the splitter produced no folds", spec.source)
    return Folds(splits)


def _layout(engine: Engine) -> dict[str, Any]:
    comm = getattr(engine, "comm", None)
    if comm is None:
        import socket

        host = socket.gethostname()
        return {"rank": 0, "size": 1, "ranks_on_node": 1, "host": host, "hosts": [host],
                "n_nodes": 1}
    from ._mpi import node_layout

    return node_layout(comm)


def _refit(estimator: Any, params: dict, X, y, layout: dict) -> tuple[Any, float]:
    """Refit the best candidate on all data with every core of this node."""
    from sklearn.base import clone

    cores = usable_cores()
    est = clone(estimator)
    est.set_params(**clone(dict(params), safe=False))
    t = time.time()
    with thread_budget(cores):
        est.fit(X, y) if y is not None else est.fit(X)
    return est, time.time() - t


def _run_info(spec, engine, layout, threads, source, data, n_tasks, wall0) -> dict[str, Any]:
    import joblib
    import sklearn
    import threadpoolctl

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "joblib": joblib.__version__,
        "threadpoolctl": threadpoolctl.__version__,
    }
    info = engine.info()
    try:
        import mpi4py

        versions["mpi4py"] = mpi4py.__version__
        from ._mpi import mpi_library_version

        versions["mpi"] = mpi_library_version()
    except ImportError:  # pragma: no cover - mpi4py is a dependency
        pass
    from . import __version__

    versions["hpcml"] = __version__
    return {
        "spec_hash": spec.spec_hash(),
        "spec": spec.source,
        "data_fingerprint": fingerprint(data.X, data.y),
        "n_samples": int(data.X.shape[0]),
        "n_features": int(data.X.shape[1]),
        "engine": info.get("engine"),
        "ranks": engine.size,
        "nodes": layout.get("n_nodes", 1),
        "hosts": layout.get("hosts", []),
        "ranks_per_node": layout.get("ranks_on_node", 1),
        "threads_per_rank": threads,
        "threads_source": source,
        "n_tasks": n_tasks,
        "versions": versions,
        "wall_time": time.time() - wall0,
        "command": sys.argv,
    }


def _write_outputs(out: Path, cv, best, best_est, run) -> None:
    atomic_write_text(out / "cv_results.csv", cv_results_to_csv(cv))
    if best is not None:
        atomic_write_json(out / "best.json", best)
    if best_est is not None:
        atomic_dump_joblib(out / "best_model.joblib", best_est)
    atomic_write_json(out / "run.json", run)  # last: its presence marks a finished run
