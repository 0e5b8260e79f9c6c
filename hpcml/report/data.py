"""What a report is made of, read from a run folder once: :class:`RunData`.

The plots take a :class:`RunData` (or parts of it) and return a figure; only
:func:`load_run` reads files. A finished run's ``cv_results.csv`` is read as it is (it may
hold columns only its search strategy knows, like halving's ``iter`` and ``n_resources``);
a run that is not finished is rebuilt from its journal, as ``hpcml collect`` does, with
means over the finished folds.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.errors import UsageError

__all__ = ["RunData", "load_run", "read_cv_csv", "latest_attempt", "varying_params",
           "is_log_scale"]


@dataclass
class RunData:
    """A run's results, as plain arrays.

    Attributes
    ----------
    cv : dict
        ``cv_results_`` columns as numpy arrays (``params``: a list of dicts; ``model``:
        strings), one row per candidate.
    metrics : list of str
        Metric names (``mean_test_<metric>`` columns), the refit metric first.
    n_splits : int
        Inner CV folds.
    records : list of dict
        Journal records of the latest attempt (``rank``, ``start``, ``end``, ``task``, ...).
    n_ranks : int or None
        Ranks of the latest attempt, when known.
    nested : list of dict
        Rows of ``nested_cv.csv`` (empty without one).
    complete : bool
        Every fit is done.
    info : dict
        ``run.json`` (or ``status.json``) facts for the page's header.
    task_splits : int or None
        Folds per candidate in the journal's task numbers, when not ``n_splits`` (nested CV:
        the search, inner and outer folds of one task grid).
    """

    cv: dict[str, Any]
    metrics: list[str]
    n_splits: int
    records: list[dict[str, Any]] = field(default_factory=list)
    n_ranks: int | None = None
    nested: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True
    info: dict[str, Any] = field(default_factory=dict)
    title: str = "hpcml report"
    task_splits: int | None = None

    @property
    def models(self) -> list[str]:
        """Model names in the order of the rows."""
        return list(dict.fromkeys(str(m) for m in self.cv.get("model", ["model"] * self.n_rows)))

    @property
    def n_rows(self) -> int:
        return len(self.cv["params"])

    def rows_of(self, model: str) -> np.ndarray:
        """Row indices of ``model``'s candidates."""
        models = np.asarray(self.cv.get("model", ["model"] * self.n_rows), dtype=object)
        return np.flatnonzero(models == model)


def load_run(out: str | os.PathLike) -> RunData:
    """Read ``out`` (an ``hpcml run --out`` folder, finished or not) into a :class:`RunData`."""
    out = Path(out)
    if not out.is_dir():
        raise UsageError(f"{out}: no such folder; give the --out folder of 'hpcml run'")
    from hpcml.run.journal import JOURNAL_DIR, Manifest

    manifest = Manifest.read(out)
    finished = (out / "run.json").exists() and (out / "cv_results.csv").exists()
    info = _read_json(out / "run.json") or _read_json(out / "status.json") or {}
    refit = None
    if finished or manifest is None:
        if not (out / "cv_results.csv").exists():
            raise UsageError(f"{out}: no cv_results.csv and no manifest.json: not an hpcml run "
                             "folder (or a run that never started)")
        cv = read_cv_csv(out / "cv_results.csv")
        n_splits = _n_splits(cv)
        complete = finished
    else:
        cv, n_splits, complete, refit = _from_journal(out, manifest)
    if manifest is not None and refit is None:
        spec = manifest.get("spec", {})
        refit = spec.get("refit") if isinstance(spec.get("refit"), str) else None
    metrics = [k[len("mean_test_"):] for k in cv if k.startswith("mean_test_")]
    if refit in metrics:
        metrics.remove(refit)
        metrics.insert(0, refit)
    from hpcml.run.journal import iter_records

    records, n_ranks = latest_attempt(out / JOURNAL_DIR, list(iter_records(out)))
    nested = _read_csv_rows(out / "nested_cv.csv") if (out / "nested_cv.csv").exists() else []
    task_splits = manifest.get("n_splits") if manifest and manifest.get("nested") else None
    return RunData(cv=cv, metrics=metrics, n_splits=n_splits, records=records,
                   n_ranks=n_ranks, nested=nested, complete=complete, info=info,
                   title=f"hpcml report: {out.resolve().name}", task_splits=task_splits)


def _from_journal(out: Path, manifest: Mapping[str, Any]):
    from hpcml.core.nested import NestedLayout
    from hpcml.core.results import format_cv_results
    from hpcml.run.journal import read_journal, task_keys
    from hpcml.spec.schema import parse_spec

    spec = parse_spec(manifest["spec"], source=manifest.get("source"))
    grid = spec.task_grid(manifest["n_splits"])
    results = read_journal(out, task_keys(grid, manifest["folds"], manifest["data_fingerprint"]))
    layout = NestedLayout.from_manifest(manifest)
    if layout is not None:  # nested CV: the search's own fits (the outer scores come after)
        grid, results = spec.task_grid(layout.n_search), layout.search_results(results)
    complete = len(results) == len(grid) and layout is None
    cv = format_cv_results(grid.candidates, grid.n_splits, results, spec.metric_names,
                           spec.return_train_score, partial=not complete)
    cv = {k: _unmask(v) if isinstance(v, np.ma.MaskedArray) else v for k, v in cv.items()}
    return cv, grid.n_splits, complete, spec.refit_metric


def _unmask(column: np.ma.MaskedArray) -> np.ndarray:
    """A ``param_*`` column as objects, ``None`` where a candidate has no such parameter."""
    out = np.array(column.data, dtype=object)
    out[np.ma.getmaskarray(column)] = None
    return out


def read_cv_csv(path: str | os.PathLike) -> dict[str, Any]:
    """``cv_results.csv`` back into columns: numbers as float arrays, ``params`` as dicts."""
    rows = _read_csv_rows(path)
    if not rows:
        raise UsageError(f"{path}: empty cv_results.csv")
    cv: dict[str, Any] = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if key == "params":
            cv[key] = [json.loads(v) for v in values]
        elif key in ("model", "finished_splits") or key.startswith("param_"):
            cv[key] = np.array(values, dtype=object)
        else:
            try:
                cv[key] = np.array([float(v) if v != "" else math.nan for v in values])
            except ValueError:
                cv[key] = np.array(values, dtype=object)
    if "finished_splits" in cv:
        cv["n_finished_splits"] = np.array([float(s.split("/")[0]) for s in cv["finished_splits"]])
    return cv


def _read_csv_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _n_splits(cv: Mapping[str, Any]) -> int:
    ks = [k for k in cv if k.startswith("split") and "_test_" in k]
    metrics = max(sum(1 for k in cv if k.startswith("mean_test_")), 1)
    return max(len(ks) // metrics, 1)


def latest_attempt(folder: Path, records: Sequence[dict[str, Any]],
                   gap: float = 5.0) -> tuple[list[dict[str, Any]], int | None]:
    """The records of the latest run attempt, and its rank count.

    A record's ``start``/``end`` count from its attempt's start; the journal files of one
    attempt are opened within seconds of each other (their names carry the time), so files
    opened more than ``gap`` seconds after the previous one begin a new attempt.
    """
    from hpcml.run.status import journal_time

    files = sorted(folder.glob("*.jsonl"), key=journal_time) if folder.is_dir() else []
    if not files:
        return list(records), None
    times = [journal_time(p) for p in files]
    first = len(files) - 1
    while first > 0 and times[first] - times[first - 1] <= gap:
        first -= 1
    keep = files[first:]
    ranks = {int(p.name[4:9]) for p in keep if p.name.startswith("rank") and p.name[4:9].isdigit()}
    chosen: list[dict[str, Any]] = []
    for path in keep:
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.endswith("\n"):
                        try:
                            chosen.append(json.loads(line))
                        except ValueError:
                            continue
        except OSError:
            continue
    n_ranks = max(ranks) + 1 if ranks else None
    return chosen, n_ranks


def varying_params(params: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of the parameters that take more than one value among ``params``.

    Examples
    --------
    >>> varying_params([{"C": 1, "k": "a"}, {"C": 2, "k": "a"}])
    ['C']
    """
    names: dict[str, set[str]] = {}
    for p in params:
        for k, v in p.items():
            names.setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=repr))
    return sorted(k for k, vals in names.items() if len(vals) > 1)


def is_log_scale(values: Sequence[Any]) -> bool:
    """Whether numeric ``values`` are spread over orders of magnitude (plot them on log axes).

    Examples
    --------
    >>> is_log_scale([0.001, 0.01, 0.1, 1.0]), is_log_scale([1, 2, 3, 4]), is_log_scale([0, 1])
    (True, False, False)
    """
    nums = [v for v in values if _is_number(v)]
    if len(nums) < 3 or len(nums) != len(values) or min(nums) <= 0:
        return False
    return max(nums) / min(nums) >= 50


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and math.isfinite(float(v))
