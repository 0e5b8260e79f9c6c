"""Stage 3-4 of a run whose searches take several rounds (successive halving).

The root drives every model's strategy (:class:`~hpcml.search.rounds.RoundDriver`: the
models advance together) and shares each round with the other ranks; each round's fits are
one pool of tasks on the engine, like a grid's (journal, resume, ``fit_timeout``, stop
signal, progress). A fit's journal key is its content: model, params (a halving's resource
param included), fold and the fold's indices (a rung on ``n_samples`` subsamples them), so a
rerun replays the finished rounds from the journal and fits only what is missing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.core.fitting import FitResult, Folds
from hpcml.core.tasks import TaskGrid
from hpcml.engines.base import Engine
from hpcml.errors import SpecError, UsageError
from hpcml.run.journal import Manifest, array_id, read_journal, task_key
from hpcml.search.rounds import RoundDriver, SklearnStrategy, sklearn_search
from hpcml.search.strategy import make_strategy
from hpcml.spec.data import fingerprint
from hpcml.spec.schema import ExperimentSpec

__all__ = ["fit_rounds"]


def fit_rounds(engine: Engine, spec: ExperimentSpec, placed: Any, folds: Folds,
               out: str | os.PathLike | None, force: bool, shard: tuple[int, int] | None,
               threads: int | None, progress: bool, fit_timeout: float | None,
               stop: Callable[[], bool] | None, observers: tuple[Any, ...], stages: Any,
               ) -> tuple[Any, dict[int, FitResult] | None, bool]:
    """Fit round after round until every strategy is done (or a stop request).

    ``stages`` is :mod:`hpcml.run.experiment` (its ``Work``, ``fit_tasks`` and
    ``prepare_out``), handed in so that neither module imports the other; the other
    arguments are :func:`~hpcml.run.experiment.run_experiment`'s.

    Returns
    -------
    (Work, results, interrupted)
        The :class:`~hpcml.run.experiment.Work` of every round together (its grid holds
        every candidate of every round, in order, and ``iter``/``n_resources`` columns),
        this run's results (root; ``None`` elsewhere) and whether a stop ended it early.
    """
    Work, prepare_out, fit_tasks = stages.Work, stages.prepare_out, stages.fit_tasks
    world = engine.world
    halving = [m.name for m in spec.models if m.search.multi_round]
    if shard is not None:
        raise UsageError(f"--shard: models.{halving[0]} searches by strategy "
                         f"{_strategy(spec)}, whose rounds depend on each other; run it "
                         "without --shard")
    if getattr(spec, "outer_cv", None) is not None:
        raise SpecError("outer_cv", "nested CV runs a grid or random search; "
                        f"models.{halving[0]} searches by strategy {_strategy(spec)}: drop "
                        "outer_cv or use strategy: grid or random", spec.source)
    if spec.save_oof:
        raise SpecError("save_oof", "is not supported with a search of several rounds "
                        f"(models.{halving[0]}); drop save_oof", spec.source)
    n_splits = len(folds)
    cv_id = array_id(*folds.arrays())
    manifest = world.agree(lambda: _manifest(spec, placed.data, cv_id, n_splits), on_root=True)
    data_id = manifest["data_fingerprint"]
    if out is not None:
        world.agree(lambda: prepare_out(Path(out), manifest, [], force, None) and None,
                    on_root=True)
    root: dict[str, Any] = {}  # what only the root holds: the driver, the journal's finds

    def start() -> None:
        root["driver"] = _driver(spec, placed, folds)

    world.agree(start, on_root=True)
    driver = root.get("driver")
    metric = spec.refit_metric or spec.metric_names[0]

    candidates: list[tuple[str, dict]] = []
    iters: list[int | None] = []
    n_resources: list[int | None] = []
    fold_sets: list[Folds] = [folds]
    fold_ids: dict[str, int] = {cv_id: 0}
    fold_set: list[int] = []
    keys: list[str] = []
    resumed: dict[int, FitResult] = {}
    results: dict[int, FitResult] = {}
    interrupted = False
    try:
        while True:
            batch = world.agree(lambda: _propose(driver, spec), on_root=True)
            if not batch:
                break
            base = len(candidates)
            round_grid = TaskGrid.from_candidates([(m, p) for m, p, *_ in batch], n_splits)
            round_keys, round_sets = [], []
            for model, params, itr, resource, sub in batch:
                set_id = cv_id if sub is None else array_id(*sub.arrays())
                if set_id not in fold_ids:
                    fold_ids[set_id] = len(fold_sets)
                    fold_sets.append(sub)
                round_keys += [task_key(model, params, k, set_id, data_id)
                               for k in range(n_splits)]
                round_sets.append(fold_ids[set_id])
                fold_set.append(fold_ids[set_id])
                candidates.append((model, params))
                iters.append(itr)
                n_resources.append(None if resource is None else int(next(iter(
                    resource.values()))))
            root["found"] = {}
            if out is not None:
                def look(keys: list[str] = round_keys) -> None:
                    root["found"] = read_journal(out, keys)

                world.agree(look, on_root=True)
            found: dict[int, FitResult] = root["found"]
            done = world.bcast(sorted(found) if world.is_root else None)
            todo = np.setdiff1d(np.arange(len(round_grid)), np.asarray(done, dtype=np.int64))
            if world.is_root and progress and done:
                sys.stderr.write(f"resuming: {len(done)} of {len(round_grid)} fits of this "
                                 "round are in the journal\n")
            round_work = Work(round_grid, manifest, round_keys, found, todo,
                              fold_sets=fold_sets, fold_set=np.asarray(round_sets),
                              level=np.asarray([b[2] or 0 for b in batch], dtype=np.int64))
            got, interrupted = fit_tasks(engine, spec, placed, folds, round_work, out, None,
                                         threads, progress, fit_timeout, stop, observers)
            offset = base * n_splits
            keys += round_keys
            if world.is_root:
                for t, r in found.items():
                    resumed[offset + t] = replace(r, task=offset + t)
                for t, r in (got or {}).items():
                    results[offset + t] = replace(r, task=offset + t)
            if interrupted:
                break
            merged = {**found, **(got or {})}
            world.agree(lambda b=batch, m=merged: _feed(driver, b, m, n_splits, metric),
                        on_root=True)
    finally:
        if driver is not None:
            driver.close()
    grid = TaskGrid.from_candidates(candidates, n_splits)
    work = Work(grid, manifest, keys, resumed, np.arange(len(grid)), fold_sets=fold_sets,
                fold_set=np.asarray(fold_set, dtype=np.int64),
                columns=_columns(iters, n_resources),
                best_among=_best_among(spec, candidates, iters), unfinished=interrupted)
    return work, (results if world.is_root else None), interrupted


def _strategy(spec: ExperimentSpec) -> str:
    return next(m.search.strategy for m in spec.models if m.search.multi_round)


def _manifest(spec: ExperimentSpec, data: Any, cv_id: str, n_splits: int) -> Manifest:
    return Manifest(spec=dict(spec.raw), spec_hash=spec.spec_hash(), source=spec.source,
                    data_fingerprint=fingerprint(data.X, data.y), folds=cv_id, n_splits=n_splits,
                    n_samples=data.n_samples, n_candidates=None, n_tasks=None)


def _driver(spec: ExperimentSpec, placed: Any, folds: Folds) -> RoundDriver:
    """Every model's strategy (root only): scikit-learn's loop for the halving ones."""
    strategies = {}
    for m in spec.models:
        if m.search.multi_round:
            if m.search.sklearn_class is None:
                raise SpecError(f"{m.search.key}.strategy", f"strategy {m.search.strategy!r} "
                                "is not available in this version of hpcml", spec.source)
            search = sklearn_search(m.search, placed.estimators[m.name], m.grid)
            strategies[m.name] = SklearnStrategy(search, folds, placed.X, placed.y)
        else:
            strategies[m.name] = make_strategy(m.search.strategy, list(m.grid),
                                               **m.search.options)
    return RoundDriver(strategies)


def _propose(driver: RoundDriver, spec: ExperimentSpec) -> list[tuple]:
    try:
        batch = driver.next_round()
    except ValueError as exc:  # scikit-learn's own checks of the search (min_resources_ ...)
        name = getattr(exc, "hpcml_model", None)
        key = next((m.search.key for m in spec.models if m.name == name), "search")
        raise SpecError(key, f"{exc} (models.{name}, as scikit-learn checks it); change the "
                        "search's options", spec.source) from None
    return [(m, dict(p.params), p.iter, p.resource, p.folds) for m, p in batch]


def _feed(driver: RoundDriver, batch: list[tuple], results: dict[int, FitResult],
          n_splits: int, metric: str) -> None:
    """Each strategy's results of the round: per proposal, (score, fit, score time) by fold."""
    by_model: dict[str, list] = {}
    for c, (model, *_rest) in enumerate(batch):
        rows = []
        for k in range(n_splits):
            r = results[c * n_splits + k]
            rows.append((r.test_scores[metric], r.fit_time, r.score_time))
        by_model.setdefault(model, []).append(rows)
    driver.feed(by_model)


def _columns(iters: list[int | None], n_resources: list[int | None]) -> dict[str, Any]:
    """``iter`` and ``n_resources`` as masked integer columns (empty for a one-round model)."""
    out = {}
    for name, values in (("iter", iters), ("n_resources", n_resources)):
        data = np.array([-1 if v is None else v for v in values], dtype=np.int64)
        out[name] = np.ma.MaskedArray(data, mask=data < 0)
    return out


def _best_among(spec: ExperimentSpec, candidates: list[tuple[str, dict]],
                iters: list[int | None]) -> list[int]:
    """The candidates the best is taken from: a halving model's last rung, every candidate
    of a one-round model (scikit-learn's ``_select_best_index`` for each)."""
    last: dict[str, int] = {}
    for (model, _), itr in zip(candidates, iters, strict=True):
        if itr is not None:
            last[model] = max(last.get(model, 0), itr)
    return [i for i, ((model, _), itr) in enumerate(zip(candidates, iters, strict=True))
            if model not in last or itr == last[model]]
