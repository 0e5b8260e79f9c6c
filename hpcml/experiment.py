"""Run an experiment spec: data → folds → fit tasks → ranks → ``cv_results_`` → refit → files."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checks import check_nan_support, check_splits_vs_classes
from .data import Dataset, fingerprint, load_data
from .engine import Engine, get_engine
from .errors import UsageError
from .evaluate import evaluate_grid, share_folds, task_costs
from .fitting import FitResult, Folds, make_scorer_map
from .journal import JOURNAL_DIR, Journal, Manifest, array_id, read_journal, task_keys
from .oof import best_per_model, check_oof_folds, oof_csv, oof_methods, save_test_folds
from .outputs import (
    RESULT_FILES,
    atomic_dump_joblib,
    atomic_write_json,
    atomic_write_text,
    check_out_dir,
)
from .results import best_index, cv_results_to_csv, format_cv_results
from .schedule import shard_tasks
from .spec import ExperimentSpec, load_spec, parse_spec
from .tasks import TaskGrid
from .threads import thread_budget, threads_per_rank, usable_cores

__all__ = ["ExperimentResult", "run_experiment", "finalize"]


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns (on every rank).

    Attributes
    ----------
    cv_results : dict
        ``cv_results_`` of all models' candidates, with a ``model`` column. When the run is
        not complete (stopped, or one shard), means and ranks are over the finished splits.
    best : dict or None
        ``{"model", "params", "index", "scores"}`` of the best candidate by ``refit``
        (``None`` without refit or before the run is complete).
    best_estimator : estimator or None
        The best candidate refit on all data (``None`` without refit, and on ranks > 0).
    out : Path or None
        The output folder, when one was given.
    run : dict
        Layout, versions, wall time and the spec hash (what ``run.json`` holds).
    complete : bool
        Every task has a result (this run's or the journal's).
    interrupted : bool
        A stop request (SIGTERM/SIGUSR1) ended the run early; run again to resume.
    n_resumed : int
        Results taken from the journal of an earlier run.
    n_failed : int
        Fits that raised (scored ``error_score``).
    """

    cv_results: dict[str, Any]
    best: dict[str, Any] | None
    best_estimator: Any = None
    out: Path | None = None
    run: dict[str, Any] = field(default_factory=dict)
    complete: bool = True
    interrupted: bool = False
    n_resumed: int = 0
    n_failed: int = 0


def run_experiment(
    spec: str | os.PathLike | dict | ExperimentSpec,
    out: str | os.PathLike | None = None,
    *,
    comm: Any = None,
    engine: Engine | None = None,
    threads: int | None = None,
    progress: bool = True,
    force: bool = False,
    shard: tuple[int, int] | None = None,
    fit_timeout: float | None = None,
    stop: Callable[[], bool] | None = None,
) -> ExperimentResult:
    """Run a grid-search experiment on every rank of ``comm`` (or serially).

    Call it on every rank (e.g. a script under ``mpiexec -n P``); all ranks return the same
    ``cv_results``. With ``out``, every finished fit goes to a journal there at once, and a
    later call with the same spec and data resumes: it runs only the missing fits and gives
    the same results (timings aside).

    Parameters
    ----------
    spec : path, dict or ExperimentSpec
        A YAML spec file, or its content as a dict (relative data paths from the cwd).
    out : path, optional
        Folder for ``cv_results.csv``, ``best.json``, ``best_model.joblib``, ``run.json`` and
        the journal.
    comm : mpi4py communicator, optional
        Defaults to ``COMM_WORLD`` (serial when it has one rank).
    engine : Engine, optional
        Overrides ``comm``.
    threads : int, optional
        Threads for each fit (per rank); default from Slurm, ``OMP_NUM_THREADS`` or cores ÷ ranks.
    progress : bool
        Show progress on rank 0 (standard error).
    force : bool
        Discard what ``out`` holds (results, journal) and start over.
    shard : (i, n), optional
        Run only shard ``i`` of ``n`` (0-based) of the tasks, balanced by estimated cost;
        ``hpcml collect`` merges the shards' journals.
    fit_timeout : float, optional
        Seconds a fit may take (overrides the spec's ``fit_timeout``).
    stop : callable, optional
        Polled between fits; when it returns true, every rank stops and the journal is kept.

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
    own_engine = engine is None
    engine = engine or get_engine(comm)
    if out is not None:
        _collective(engine, lambda: check_out_dir(out, force))
    estimators = {m.name: m.make() for m in spec.models}
    first = next(iter(estimators.values()))

    data = _collective(engine, lambda: load_data(spec.data, spec.source))
    X = engine.bcast_array(data.X if engine.is_root else None)
    y = engine.bcast_array(data.y if engine.is_root else None)
    if engine.is_root:
        data.X, data.y = X, y  # drop the private copy: one copy of the data per node
    _collective(engine, lambda: check_nan_support(X, estimators, data.feature_names,
                                                  spec.source))
    folds = share_folds(engine, _collective(engine, lambda: _make_folds(spec, first, data)))
    methods = oof_methods(spec.save_oof, estimators, spec.source)
    grid = TaskGrid([(m.name, list(m.grid)) for m in spec.models], len(folds))
    manifest = None
    if engine.is_root:
        manifest = _manifest(spec, data, folds, grid)
    manifest = engine.bcast(manifest)
    keys = task_keys(grid, manifest["folds"], manifest["data_fingerprint"])

    resumed: dict[int, FitResult] = {}
    if out is not None:
        resumed = _collective(engine, lambda: _prepare_out(Path(out), manifest, keys, force)) or {}
        if engine.is_root and spec.save_oof:
            _keep_test_folds(Path(out), folds, y, estimators)
    done = engine.bcast(sorted(resumed) if engine.is_root else None)
    todo = np.setdiff1d(np.arange(len(grid)), np.asarray(done, dtype=np.int64))
    if shard is not None:
        n_train = int(np.mean(np.diff(folds.train_off)))
        owner = shard_tasks(task_costs(grid, estimators, n_train, X.shape[1]), shard[1])
        todo = todo[owner[todo] == shard[0]]
    if engine.is_root and progress and done:
        sys.stderr.write(f"resuming: {len(done)} of {len(grid)} fits are in the journal\n")

    layout = engine.layout()
    threads, source = threads_per_rank(layout["ranks_on_node"], cli=threads)
    metric_arg = list(spec.metric_names) if spec.scoring else None
    scorers = {name: make_scorer_map(metric_arg, est)[0] for name, est in estimators.items()}
    journal = None
    if out is not None:
        label = f"{shard[0]}/{shard[1]}" if shard else ""
        journal = Journal(out, engine.rank, shard=label)
    try:
        results = evaluate_grid(
            engine, grid, folds, X, y, estimators, scorers, threads=threads,
            return_train_score=spec.return_train_score, error_score=spec.error_score,
            progress=progress, tasks=todo,
            on_result=None if journal is None else (lambda r: journal.append(keys[r.task], r)),
            should_stop=stop, fit_timeout=fit_timeout or spec.fit_timeout,
            oof_methods=methods,
            measured=engine.bcast(
                {t: r.fit_time + r.score_time for t, r in resumed.items()}
                if engine.is_root else None
            ),
        )
    finally:
        if journal is not None:
            journal.close()
    interrupted = engine.interrupted

    payload = None
    best_est = None
    if engine.is_root:
        results = {**resumed, **results}
        complete = len(results) == len(grid)
        n_failed = sum(r.error is not None for r in results.values())
        run = _run_info(spec, engine, layout, threads, source, data, len(grid), wall0)
        run.update(n_resumed=len(resumed), n_failed=n_failed, complete=complete,
                   shard=None if shard is None else f"{shard[0]}/{shard[1]}")
        cv, best, best_est = finalize(
            spec, grid, results, X, y, estimators,
            out=None if out is None or (shard is not None and not complete) else Path(out),
            run=run, refit=complete, folds=folds,
        )
        payload = (cv, best, run, complete, len(resumed), n_failed)
        engine.release()
    else:
        engine.wait_for_root()
    cv, best, run, complete, n_resumed, n_failed = engine.bcast(payload)
    X = y = folds = data = None  # the shared-memory views die with the engine
    if own_engine:
        engine.close()
    return ExperimentResult(
        cv, best, best_est, Path(out) if out is not None else None, run,
        complete=complete, interrupted=interrupted, n_resumed=n_resumed, n_failed=n_failed,
    )


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
) -> tuple[dict[str, Any], dict[str, Any] | None, Any]:
    """From results to ``cv_results``, the best candidate, its refit and the files in ``out``.

    A complete set of results gives the final files (``run.json`` last: it marks a finished
    run); an incomplete one gives ``cv_results.csv`` with a ``finished_splits`` column.
    """
    complete = len(results) == len(grid)
    cv = format_cv_results(
        grid.candidates, grid.n_splits, results, spec.metric_names, spec.return_train_score,
        partial=not complete,
    )
    best, best_est = None, None
    if complete and spec.refit_metric is not None:
        i = best_index(cv, spec.refit_metric)
        cand = grid.candidates[i]
        best = {
            "model": cand.model,
            "params": dict(cand.params),
            "index": i,
            "refit_metric": spec.refit_metric,
            "scores": {m: float(cv[f"mean_test_{m}"][i]) for m in spec.metric_names},
        }
        if refit and X is not None:
            best_est, refit_time = _refit(estimators[cand.model], cand.params, X, y)
            best["refit_time"] = refit_time
    if out is not None:
        atomic_write_text(out / "cv_results.csv", cv_results_to_csv(cv, partial=not complete))
        if complete:
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
                if classes is None and y is not None and _is_classifier_spec(estimators):
                    classes = [str(c) for c in np.unique(y)]
                text = oof_csv(grid, results, folds, n_samples, which, classes)
                atomic_write_text(out / "oof_predictions.csv", text)
            atomic_write_json(out / "run.json", run)  # last: its presence marks a finished run
    if complete:
        _warn_failures(results, grid)
    return cv, best, best_est


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


def _manifest(spec: ExperimentSpec, data: Dataset, folds: Folds, grid: TaskGrid) -> Manifest:
    return Manifest(
        spec=dict(spec.raw),
        spec_hash=spec.spec_hash(),
        source=spec.source,
        data_fingerprint=fingerprint(data.X, data.y),
        folds=array_id(*folds.arrays()),
        n_splits=grid.n_splits,
        n_samples=data.n_samples,
        n_candidates=grid.n_candidates,
        n_tasks=len(grid),
    )


def _prepare_out(out: Path, manifest: Manifest, keys: list[str], force: bool):
    """Check ``out`` against this run and read its journal (root only)."""
    existing = Manifest.read(out)
    if existing is not None and force:
        shutil.rmtree(out / JOURNAL_DIR, ignore_errors=True)
        for name in ("manifest.json", *RESULT_FILES):
            (out / name).unlink(missing_ok=True)
        existing = None
    if existing is not None:
        diffs = existing.differences(manifest)
        if diffs:
            raise UsageError(
                f"--out {out}: holds the journal of another experiment ({'; '.join(diffs)}); "
                "choose another folder, or pass --force to discard it"
            )
    out.mkdir(parents=True, exist_ok=True)
    if existing is None:
        manifest.write(out)
    return read_journal(out, keys)


def _keep_test_folds(out: Path, folds: Folds, y: Any, estimators: dict[str, Any]) -> None:
    (out / JOURNAL_DIR).mkdir(parents=True, exist_ok=True)
    path = out / JOURNAL_DIR / "test_folds.npz"
    if not path.exists():
        classes = np.unique(y) if y is not None and _is_classifier_spec(estimators) else None
        save_test_folds(path, folds, classes)


def _is_classifier_spec(estimators: dict[str, Any]) -> bool:
    from sklearn.base import is_classifier

    return all(is_classifier(e) for e in estimators.values())


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
    folds = _split(spec, estimator, data)
    if spec.save_oof:
        check_oof_folds(folds, data.n_samples, spec.source)
    return folds


def _split(spec: ExperimentSpec, estimator: Any, data: Dataset) -> Folds:
    from sklearn.base import is_classifier

    from .errors import SpecError

    splitter = spec.cv.make(is_classifier(estimator), data.y)
    check_splits_vs_classes(splitter, data.y, spec.source)
    groups = data.groups
    try:
        splits = list(splitter.split(data.X, data.y, groups))
    except ValueError as exc:
        raise SpecError("cv", f"cannot split the data: {exc}", spec.source) from None
    if not splits:
        raise SpecError("cv", "the splitter produced no folds", spec.source)
    return Folds(splits)


def _refit(estimator: Any, params: dict, X, y) -> tuple[Any, float]:
    """Refit the best candidate on all data with every core of this node."""
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
        "replans": info.get("replans", 0),
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
