"""Read and check an experiment spec (YAML or a dict) into plain, frozen objects.

Everything here is pure apart from importing the dotted paths the spec names: a spec is code,
like a Python script, so only run specs you trust. YAML is read with the safe loader.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcml.errors import SpecError
from hpcml.spec.limits import check_size
from hpcml.spec.outer import check_outer_cv
from hpcml.spec.params import check_model_params
from hpcml.spec.resolve import resolve, splitter_class
from hpcml.spec.search import (
    Distribution,
    SearchSpec,
    check_flow_split,
    grid_value,
    model_search,
    parse_search,
)

if TYPE_CHECKING:
    from hpcml.core.tasks import TaskGrid

__all__ = ["CVSpec", "DataSpec", "ExperimentSpec", "ModelSpec", "load_spec", "parse_spec",
           "precheck_spec"]

TOP_LEVEL_KEYS = ("data", "cv", "scoring", "refit", "models", "return_train_score",
                  "error_score", "fit_timeout", "save_oof", "outer_cv", "search")
DATA_KEYS = ("generator", "params", "path", "target", "groups")
MODEL_KEYS = ("estimator", "params", "grid", "search")
DATA_SUFFIXES = (".csv", ".npz", ".npy", ".parquet")


@dataclass(frozen=True)
class DataSpec:
    """Where the data come from: a generator callable, or a file and its target column."""

    generator: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None
    target: str | None = None
    groups: str | None = None


@dataclass(frozen=True)
class CVSpec:
    """A scikit-learn splitter by name with its keyword arguments (``None``: sklearn's default)."""

    splitter: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    groups: str | None = None

    def make(self, classifier: bool, y: Any = None) -> Any:
        """Build the splitter object (``check_cv`` semantics when no splitter is named)."""
        from sklearn.model_selection import check_cv

        if self.splitter is None:
            return check_cv(self.kwargs.get("n_splits", 5), y, classifier=classifier)
        return splitter_class(self.splitter, "cv.splitter")(**self.kwargs)

    def known_n_splits(self) -> int | None:
        """The number of folds when the spec alone tells it (``n_splits``, or the default 5).

        >>> CVSpec().known_n_splits(), CVSpec("GroupKFold", {"n_splits": 3}).known_n_splits()
        (5, 3)
        """
        n = self.kwargs.get("n_splits", 5 if self.splitter is None else None)
        return n if isinstance(n, int) and not isinstance(n, bool) else None


@dataclass(frozen=True)
class ModelSpec:
    """One model: its estimator factory, fixed params, a grid (list of dicts of lists or
    :class:`~hpcml.spec.search.Distribution`) and its search (``search:``)."""

    name: str
    estimator: str
    params: Mapping[str, Any]
    grid: tuple[Mapping[str, list | Distribution], ...]
    search: SearchSpec = field(default_factory=SearchSpec)

    def make(self) -> Any:
        """A fresh, unfitted estimator with the fixed params set."""
        return _build_estimator(resolve(self.estimator), dict(self.params))


@dataclass(frozen=True)
class ExperimentSpec:
    """A checked experiment: data, cv, scoring, refit and models."""

    data: DataSpec
    cv: CVSpec
    scoring: tuple[str, ...] | None
    refit: str | bool
    models: tuple[ModelSpec, ...]
    return_train_score: bool = False
    error_score: float | str = float("nan")
    fit_timeout: float | None = None
    save_oof: Mapping[str, str] | None = None
    outer_cv: CVSpec | None = None  # nested CV (hpcml/run/nested.py)
    source: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Names of the metrics as they appear in the result columns."""
        return self.scoring if self.scoring else ("score",)

    @property
    def refit_metric(self) -> str | None:
        """The metric that picks the best candidate, or ``None`` without refit."""
        if self.refit is False:
            return None
        return self.refit if isinstance(self.refit, str) else self.metric_names[0]

    def task_grid(self, n_splits: int) -> TaskGrid:
        """Every fit task of the spec's one-round searches: the candidates their strategies
        propose (grid: ``ParameterGrid`` order; random: ``ParameterSampler``'s draws), times
        ``n_splits`` folds. Models of several rounds (halving) are not in it."""
        from hpcml.core.tasks import TaskGrid
        from hpcml.search.strategy import first_round, make_strategy

        if any(m.search.strategy == "asha" for m in self.models):
            from hpcml.search.asha_tasks import spec_grid

            return spec_grid(self, n_splits)  # every (candidate, rung) ASHA may ask for

        strategies = {m.name: make_strategy(m.search.strategy, list(m.grid), **m.search.options)
                      for m in self.models if not m.search.multi_round}
        return TaskGrid.from_candidates(
            [(name, p.params) for name, p in first_round(strategies)], n_splits)

    @property
    def multi_round(self) -> bool:
        """Whether a model's search takes several rounds of fits (halving, asha)."""
        return any(m.search.multi_round for m in self.models)

    def spec_hash(self) -> str:
        """Hash of the spec's content (not of its file name or formatting)."""
        blob = json.dumps(self.raw, sort_keys=True, default=repr).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_spec(path: str | os.PathLike) -> ExperimentSpec:
    """Read a YAML spec file and check it.

    Parameters
    ----------
    path : str or path-like
        The spec file.

    Returns
    -------
    ExperimentSpec

    Raises
    ------
    SpecError
        With the file, the key path and the fix.
    """
    raw, source, base = _read_yaml(path)
    return parse_spec(raw, source=source, base_dir=base)


def precheck_spec(path: str | os.PathLike) -> Path | None:
    """Check a spec file's structure and data path without importing what it names.

    The cheap part of :func:`load_spec`, for a launcher that should fail fast on a typo but
    not pay for importing scikit-learn before its ranks do (they run the full check).

    Parameters
    ----------
    path : str or path-like
        The spec file.

    Returns
    -------
    Path or None
        The data file the spec reads (``None`` for a generator).

    Raises
    ------
    SpecError
        The same message :func:`load_spec` gives for these mistakes.
    """
    raw, source, base = _read_yaml(path)
    _check_structure(raw, source)
    data = raw["data"]
    _check_data_structure(data, source)
    _check_models_structure(raw["models"], source)
    path_ = _data_path(data, base, source)
    if path_ is not None and not path_.exists():
        raise SpecError("data.path", f"data file not found: {path_}", source)
    return path_


def _read_yaml(path: str | os.PathLike) -> tuple[Any, str, Path]:
    import yaml

    source = str(path)
    p = Path(path)
    if not p.exists():
        raise SpecError("", f"spec file not found: {source}", None)
    if p.is_dir():
        raise SpecError("", f"{source} is a folder; give the spec's YAML file", None)
    try:
        text = p.read_text()
    except UnicodeDecodeError as exc:
        raise SpecError("", f"cannot read the spec: not UTF-8 text (byte {exc.start}: "
                        f"{exc.reason}); save it as UTF-8", source) from None
    except OSError as exc:
        raise SpecError("", f"cannot read the spec: {exc}", source) from None
    try:
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError("", f"malformed YAML at {where}{problem}", source) from None
    except (ValueError, TypeError, AttributeError, IndexError, OverflowError, RecursionError) as exc:
        # a tag the safe loader cannot build (!!timestamp null, !!int x)
        raise SpecError("", f"malformed YAML: a tagged value cannot be read ({exc})", source
                        ) from None
    check_size(raw, source)
    return raw, source, p.resolve().parent


def parse_spec(
    raw: Any, source: str | None = None, base_dir: str | os.PathLike | None = None
) -> ExperimentSpec:
    """Check a spec given as a mapping (what the YAML file holds).

    Parameters
    ----------
    raw : mapping
        The spec.
    source : str, optional
        Where it came from, for messages.
    base_dir : path-like, optional
        Folder that relative data paths are taken from (the spec file's folder).

    Returns
    -------
    ExperimentSpec
    """
    _check_structure(raw, source)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    data = _parse_data(raw["data"], base, source)
    models = _parse_models(raw["models"], source, parse_search(raw.get("search"), "search", source))
    scoring = _parse_scoring(raw.get("scoring"), source)
    refit = _parse_refit(raw.get("refit", True), scoring, source)
    cv = _parse_cv(raw.get("cv"), source)
    data, cv = _link_groups(data, cv, source)
    rts = raw.get("return_train_score", False)
    if not isinstance(rts, bool):
        raise SpecError("return_train_score", f"must be true or false, got {rts!r}", source)
    error_score = raw.get("error_score", float("nan"))
    if error_score is None or error_score == "nan":
        error_score = float("nan")
    if not (error_score == "raise" or _is_number(error_score)):
        raise SpecError("error_score", f"must be a number or 'raise', got {error_score!r}", source)
    fit_timeout = raw.get("fit_timeout")
    if fit_timeout is not None and (not _is_number(fit_timeout) or fit_timeout <= 0):
        raise SpecError(
            "fit_timeout", f"must be a number of seconds > 0 (or null), got {fit_timeout!r}",
            source,
        )
    save_oof = _parse_save_oof(raw.get("save_oof"), source)
    outer_cv = None
    if raw.get("outer_cv") is not None:
        outer_cv = _parse_cv(raw["outer_cv"], source, key="outer_cv")
        check_outer_cv(raw, outer_cv, data, refit, save_oof, source)
    return ExperimentSpec(
        outer_cv=outer_cv,
        save_oof=save_oof,
        fit_timeout=fit_timeout,
        data=data,
        cv=cv,
        scoring=scoring,
        refit=refit,
        models=models,
        return_train_score=rts,
        error_score=error_score,
        source=source,
        raw=_canonical(raw, data),
    )


# -- sections ---------------------------------------------------------------------------------


def _check_structure(raw: Any, source: str | None) -> None:
    if raw is None:
        raise SpecError("", "the spec is empty; it needs at least 'data' and 'models'", source)
    if not isinstance(raw, Mapping):
        raise SpecError("", f"the spec must be a mapping of keys, got {type(raw).__name__}", source)
    _check_keys(raw, TOP_LEVEL_KEYS, "", source)
    for key in ("data", "models"):
        if key not in raw or raw[key] is None:
            raise SpecError(key, f"missing '{key}' section; see examples/quickstart.yaml", source)


def _check_data_structure(raw: Any, source: str | None) -> None:
    if not isinstance(raw, Mapping):
        raise SpecError("data", "must be a mapping with 'generator' or 'path'", source)
    _check_keys(raw, DATA_KEYS, "data", source)
    if (raw.get("generator") is None) == (raw.get("path") is None):
        raise SpecError(
            "data", "give exactly one of 'generator' (a dotted callable) or 'path' (a file)", source
        )


def _check_models_structure(raw: Any, source: str | None) -> None:
    if not isinstance(raw, Mapping) or not raw:
        raise SpecError("models", "must map model names to {estimator, params, grid}", source)
    for name, body in raw.items():
        key = f"models.{name}"
        if not isinstance(body, Mapping):
            raise SpecError(key, "must be a mapping with 'estimator' (and 'params', 'grid')", source)
        _check_keys(body, MODEL_KEYS, key, source)
        if not body.get("estimator"):
            raise SpecError(f"{key}.estimator", "missing: a dotted class or factory path", source)


def _parse_data(raw: Any, base: Path, source: str | None) -> DataSpec:
    _check_data_structure(raw, source)
    has_gen = raw.get("generator") is not None
    params = raw.get("params") or {}
    if not isinstance(params, Mapping):
        raise SpecError("data.params", "must be a mapping of keyword arguments", source)
    groups = raw.get("groups")
    if has_gen:
        try:
            fn = resolve(raw["generator"])
        except ImportError as exc:
            raise SpecError("data.generator", str(exc), source) from None
        if not callable(fn):
            raise SpecError("data.generator", f"{raw['generator']!r} is not callable", source)
        _check_call_kwargs(fn, params, "data.params", source)
        return DataSpec(generator=raw["generator"], params=dict(params), groups=groups)
    path = _data_path(raw, base, source)
    return DataSpec(path=path, target=raw.get("target"), params=dict(params), groups=groups)


def _data_path(raw: Mapping, base: Path, source: str | None) -> Path | None:
    if raw.get("path") is None:
        return None
    path = Path(os.path.expanduser(str(raw["path"])))
    if not path.is_absolute():
        path = base / path
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise SpecError(
            "data.path", f"unsupported file type {path.suffix!r}; use one of {DATA_SUFFIXES}", source
        )
    if path.suffix.lower() in (".csv", ".parquet") and not raw.get("target"):
        raise SpecError("data.target", f"name the target column of {path.name}", source)
    return path


def _parse_models(raw: Any, source: str | None, top: dict | None) -> tuple[ModelSpec, ...]:
    _check_models_structure(raw, source)
    models = []
    for name, body in raw.items():
        key = f"models.{name}"
        try:
            factory = resolve(body["estimator"])
        except ImportError as exc:
            raise SpecError(f"{key}.estimator", str(exc), source) from None
        params = body.get("params") or {}
        if not isinstance(params, Mapping):
            raise SpecError(f"{key}.params", "must be a mapping of constructor arguments", source)
        if inspect.ismodule(factory):
            raise SpecError(
                f"{key}.estimator",
                f"{body['estimator']!r} is a module; name an estimator class or factory in it, "
                "e.g. 'sklearn.linear_model.LogisticRegression'",
                source,
            )
        try:
            estimator = _build_estimator(factory, dict(params))
        except Exception as exc:  # the user's class or factory: report, do not trace back
            where = f"{key}.params" if params else f"{key}.estimator"
            raise SpecError(where, f"{body['estimator']}: {exc}", source) from None
        if not hasattr(estimator, "fit") or not hasattr(estimator, "get_params"):
            raise SpecError(
                f"{key}.estimator",
                f"{body['estimator']!r} is not a scikit-learn estimator (no fit/get_params)",
                source,
            )
        grid = _parse_grid(body.get("grid"), estimator, f"{key}.grid", source)
        check_model_params(estimator, params, grid, key, source)
        search = model_search(body.get("search"), top, grid, estimator, key, source)
        models.append(ModelSpec(str(name), body["estimator"], dict(params), grid, search))
    return tuple(models)


def _parse_grid(raw: Any, estimator: Any, key: str, source: str | None) -> tuple[dict, ...]:
    if raw is None:
        return ({},)
    grids = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(grids, list):
        raise SpecError(key, "must be a mapping of lists, or a list of such mappings", source)
    if not grids:
        raise SpecError(key, "is an empty list; give at least one mapping or drop 'grid'", source)
    valid = sorted(estimator.get_params(deep=True))
    out = []
    for i, grid in enumerate(grids):
        gkey = key if isinstance(raw, Mapping) else f"{key}[{i}]"
        if not isinstance(grid, Mapping):
            raise SpecError(gkey, "must be a mapping of parameter names to lists", source)
        check_flow_split(grid, gkey, source)
        for pname in grid:
            if pname not in valid:
                close = difflib.get_close_matches(str(pname), valid, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise SpecError(
                    f"{gkey}.{pname}",
                    f"not a parameter of {type(estimator).__name__}.{hint} "
                    f"Valid parameters: {', '.join(valid)}",
                    source,
                )
        out.append({str(k): grid_value(v, f"{gkey}.{k}", source) for k, v in grid.items()})
    return tuple(out)


def _parse_scoring(raw: Any, source: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise SpecError("scoring", "must be a scorer name or a list of scorer names", source)
    from sklearn.metrics import get_scorer_names

    valid = sorted(get_scorer_names())
    for i, name in enumerate(names):
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=3)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            key = "scoring" if isinstance(raw, str) else f"scoring[{i}]"
            raise SpecError(
                key, f"unknown scorer {name!r}.{hint} See sklearn.metrics.get_scorer_names()", source
            )
    if len(set(names)) != len(names):
        raise SpecError("scoring", f"lists a scorer twice: {names}", source)
    return tuple(names)


def _parse_refit(raw: Any, scoring: tuple[str, ...] | None, source: str | None) -> str | bool:
    if raw is False:
        return False
    if raw is True or raw is None:
        return True
    if not isinstance(raw, str):
        raise SpecError("refit", f"must be a metric name from 'scoring' or false, got {raw!r}", source)
    names = scoring if scoring else ("score",)
    if raw not in names:
        raise SpecError(
            "refit", f"{raw!r} is not in scoring {list(names)}; name one of them or false", source
        )
    return raw


def _parse_cv(raw: Any, source: str | None, key: str = "cv") -> CVSpec:
    if raw is None:
        return CVSpec()
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = {"n_splits": raw}
    if not isinstance(raw, Mapping):
        raise SpecError(key, "must be a mapping like {splitter: KFold, n_splits: 5}", source)
    kwargs = {k: v for k, v in raw.items() if k not in ("splitter", "groups")}
    groups = raw.get("groups")
    name = raw.get("splitter")
    if name is None:
        extra = set(kwargs) - {"n_splits"}
        if extra:
            raise SpecError(key, f"name a 'splitter' to pass {sorted(extra)}", source)
        n = kwargs.get("n_splits", 5)
        if not isinstance(n, int) or n < 2:
            raise SpecError(f"{key}.n_splits", f"must be an integer >= 2, got {n!r}", source)
        return CVSpec(None, kwargs, groups)
    cls = splitter_class(name, f"{key}.splitter", source)
    try:
        cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SpecError(key, f"bad arguments for {name}: {exc}", source) from None
    return CVSpec(str(name), kwargs, groups)


def _link_groups(data: DataSpec, cv: CVSpec, source: str | None) -> tuple[DataSpec, CVSpec]:
    """One groups name for both sections: ``cv.groups`` and ``data.groups`` name the same column.

    The data loader reads ``data.groups``, so a name given only in ``cv`` is copied there. A
    ``Group*`` splitter needs groups: a named column (or array) for file data; a generator
    gives them as the third item of its ``(X, y, groups)``.
    """
    if cv.groups is not None and data.groups is not None and cv.groups != data.groups:
        raise SpecError(
            "cv.groups",
            f"{cv.groups!r} differs from data.groups {data.groups!r}; name the groups once",
            source,
        )
    groups = cv.groups if cv.groups is not None else data.groups
    if groups is not None and not isinstance(groups, str):
        key = "cv.groups" if cv.groups is not None else "data.groups"
        raise SpecError(key, f"must be a column (or array) name, got {groups!r}", source)
    if "Group" in str(cv.splitter) and groups is None and data.generator is None:
        raise SpecError(
            "cv.groups", f"{cv.splitter} needs groups: name the groups column here", source
        )
    return replace(data, groups=groups), replace(cv, groups=groups)


OOF_METHODS = ("auto", "predict", "predict_proba", "decision_function")


def _parse_save_oof(raw: Any, source: str | None) -> dict[str, str] | None:
    if raw is None or raw is False:
        return None
    if raw is True:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SpecError("save_oof", "must be true/false or {candidates: best|all, method: ...}",
                        source)
    _check_keys(raw, ("candidates", "method"), "save_oof", source)
    candidates = raw.get("candidates", "best")
    method = raw.get("method", "auto")
    if candidates not in ("best", "all"):
        raise SpecError("save_oof.candidates", f"must be 'best' or 'all', got {candidates!r}",
                        source)
    if method not in OOF_METHODS:
        raise SpecError("save_oof.method", f"must be one of {', '.join(OOF_METHODS)}, "
                        f"got {method!r}", source)
    return {"candidates": candidates, "method": method}


# -- helpers ----------------------------------------------------------------------------------


def _build_estimator(factory: Any, params: dict) -> Any:
    if inspect.isclass(factory):
        return factory(**params)
    if callable(factory):
        # A factory function returning an estimator: params go to set_params.
        est = factory()
        if params:
            est.set_params(**params)
        return est
    # An estimator instance in a module: clone it.
    from sklearn.base import clone

    est = clone(factory)
    if params:
        est.set_params(**params)
    return est


def _check_keys(raw: Mapping, valid: tuple[str, ...], where: str, source: str | None) -> None:
    for key in raw:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            path = f"{where}.{key}" if where else str(key)
            raise SpecError(
                path, f"unknown key.{hint} Valid keys here: {', '.join(valid)}", source
            )


def _check_call_kwargs(fn: Any, kwargs: Mapping, key: str, source: str | None) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind_partial(**kwargs)
    except TypeError as exc:
        valid = [p for p in sig.parameters if p not in ("args", "kwargs")]
        raise SpecError(key, f"{exc}. Valid arguments: {', '.join(valid)}", source) from None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _canonical(raw: Mapping, data: DataSpec) -> dict:
    out = json.loads(json.dumps(raw, default=repr))
    if data.path is not None:
        out["data"]["path"] = str(data.path)
    return out
