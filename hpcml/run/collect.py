"""``hpcml collect DIR``: results from the journal, at any time, from any number of shards."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from hpcml.core.nested import NestedLayout
from hpcml.errors import UsageError
from hpcml.run.journal import Manifest, read_journal, task_keys
from hpcml.spec.schema import parse_spec

__all__ = ["collect"]


def collect(out: str | os.PathLike, refit: bool = True) -> dict[str, Any]:
    """Rebuild ``cv_results.csv`` (and, when complete, the best model) from ``out``'s journal.

    Parameters
    ----------
    out : path
        An hpcml output folder (it holds ``manifest.json`` and ``journal/``).
    refit : bool
        When every task is done and the spec has ``refit``, load the data and refit the best
        candidate into ``best_model.joblib`` (with all cores of this node).

    Returns
    -------
    dict
        ``{"done", "total", "complete", "best"}``.
    """
    from hpcml.run.finalize import finalize

    wall0 = time.time()
    out = Path(out)
    if not out.is_dir():
        raise UsageError(f"{out}: no such folder")
    manifest = Manifest.read(out)
    if manifest is None:
        raise UsageError(f"{out}: no manifest.json, so not an hpcml run folder (or a run that "
                         "never started); give the --out folder of 'hpcml run'")
    spec = parse_spec(manifest["spec"], source=manifest.get("source"))
    if any(m.search.strategy == "asha" for m in spec.models):
        from hpcml.run.asha_run import collect_asha

        return collect_asha(out, spec, manifest, lambda: _load_xy(out, spec, manifest), refit,
                            lambda results, n: _collect_info(manifest, results, n, wall0))
    if spec.multi_round:
        raise UsageError(f"{out}: a search of several rounds (halving) makes its rounds as it "
                         "runs, so the journal alone cannot be collected; run the same "
                         "'hpcml run' command again to resume and finish it (a stopped run "
                         "already wrote its partial cv_results.csv)")
    grid = spec.task_grid(manifest["n_splits"])
    keys = task_keys(grid, manifest["folds"], manifest["data_fingerprint"])
    results = read_journal(out, keys)
    done, total = len(results), len(grid)
    extra = None
    layout = NestedLayout.from_manifest(manifest)
    if layout is not None:  # nested CV: its outputs, and the search's own results
        from hpcml.run.nested import nested_outputs

        extra = nested_outputs(spec, grid, layout, results, n_resumed=done)
        total = extra.n_tasks
        grid, results = spec.task_grid(layout.n_search), layout.search_results(results)
    complete = len(results) == len(grid) and (extra is None or extra.complete)
    estimators = {m.name: m.make() for m in spec.models}
    X = y = None
    run: dict[str, Any] = {}
    if complete:
        if refit and spec.refit_metric is not None:
            X, y = _load_xy(out, spec, manifest)
        run = _collect_info(manifest, results, total, wall0)
    folds, classes = None, None
    folds_path = out / "journal" / "test_folds.npz"
    if spec.save_oof and folds_path.exists():
        from hpcml.core.oof import load_test_folds

        folds, classes = load_test_folds(folds_path)
    _, best, _ = finalize(spec, grid, results, X, y, estimators, out=out, run=run,
                          refit=refit and complete, folds=folds, classes=classes, extra=extra)
    return {"done": done, "total": total, "complete": complete, "best": best}


def _load_xy(out: Path, spec: Any, manifest: Any) -> tuple[Any, Any]:
    """The spec's data for a refit, refused when it is not the data the run had."""
    from hpcml.spec.data import fingerprint, load_data

    data = load_data(spec.data, spec.source)
    if fingerprint(data.X, data.y) != manifest["data_fingerprint"]:
        raise UsageError(
            f"{out}: the data of {spec.source} changed since the run; "
            "cannot refit on different data (pass --no-refit to skip the refit)"
        )
    return data.X, data.y


def _collect_info(manifest, results, n_tasks, wall0) -> dict[str, Any]:
    from hpcml.run.finalize import versions

    ranks = sorted({r.rank for r in results.values()})
    return {
        "spec_hash": manifest.get("spec_hash"),
        "spec": manifest.get("source"),
        "data_fingerprint": manifest.get("data_fingerprint"),
        "collected": True,
        "n_samples": manifest.get("n_samples"),
        "n_tasks": n_tasks,
        "ranks_seen": len(ranks),
        "versions": versions(),
        "wall_time": time.time() - wall0,
        "engine": "collect",
    }
