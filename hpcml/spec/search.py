"""The spec's ``search:`` block and the distributions of its grids.

``search:`` at the top level applies to every model; ``models.NAME.search`` replaces it for
that model (the whole block: a model's block does not inherit the top level's options).
Each strategy takes scikit-learn's own argument names and defaults:

=========  ==================================================  ================================
strategy   options                                             scikit-learn class
=========  ==================================================  ================================
grid       (none)                                              ``GridSearchCV``
random     n_iter, random_state                                ``RandomizedSearchCV``
halving    factor, resource, min_resources, max_resources,     ``HalvingGridSearchCV``, or
           aggressive_elimination, random_state, n_candidates  ``HalvingRandomSearchCV`` when
                                                               the grid holds a distribution or
                                                               ``n_candidates`` is given
asha       factor, resource, min_resources, max_resources,     (none: Li et al., MLSys 2020)
           n_iter, random_state
=========  ==================================================  ================================

A grid value is a list, or a scipy.stats distribution written as a call with literal
arguments (``loguniform(1e-3, 1e2)``, ``randint(1, 20)``, ``expon(scale=0.1)``). The call is
parsed with :mod:`ast`, never evaluated. Everything here is pure.
"""

from __future__ import annotations

import ast
import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpcml.errors import SpecError

__all__ = ["DISTRIBUTIONS", "STRATEGY_OPTIONS", "Distribution", "SearchSpec",
           "parse_distribution", "grid_value", "check_flow_split", "unseeded", "with_seed", "parse_search", "model_search", "has_distribution"]

#: Name in a spec -> the scipy.stats distribution it builds.
DISTRIBUTIONS: dict[str, str] = {
    "loguniform": "loguniform", "reciprocal": "reciprocal", "uniform": "uniform",
    "randint": "randint", "expon": "expon", "norm": "norm", "lognorm": "lognorm",
    "truncnorm": "truncnorm", "halfnorm": "halfnorm", "beta": "beta", "gamma": "gamma",
    "poisson": "poisson", "geom": "geom", "binom": "binom", "triang": "triang",
}
#: Longest distribution call accepted (a spec is small; this bounds the parser's work).
MAX_CALL_CHARS = 300
_EXAMPLE = "e.g. loguniform(1e-3, 1e2), uniform(0, 1), randint(1, 20), expon(scale=0.1)"


@dataclass(frozen=True)
class Distribution:
    """A scipy.stats distribution of a grid, as the spec wrote it.

    It samples like the frozen scipy object (``rvs``), so scikit-learn's ``ParameterSampler``
    draws the same values from it as from ``scipy.stats.loguniform(1e-3, 1e2)``.

    >>> d = parse_distribution("loguniform(1e-3, 1e2)", "grid.C")
    >>> d, bool(d.rvs(random_state=0) == d.make().rvs(random_state=0))
    (loguniform(0.001, 100.0), True)
    """

    name: str
    args: tuple[float, ...] = ()
    kwargs: tuple[tuple[str, float], ...] = ()

    def make(self) -> Any:
        """The frozen scipy.stats distribution."""
        import scipy.stats

        return getattr(scipy.stats, DISTRIBUTIONS[self.name])(*self.args, **dict(self.kwargs))

    def rvs(self, *args: Any, **kwargs: Any) -> Any:
        """Draw from the distribution (``scipy.stats`` ``rvs``)."""
        return self.make().rvs(*args, **kwargs)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
        return f"{self.name}({', '.join(parts)})"


def parse_distribution(text: str, key: str, source: str | None = None) -> Distribution:
    """Parse ``NAME(literal, ..., kw=literal)`` into a :class:`Distribution` (never ``eval``).

    Raises
    ------
    SpecError
        Naming ``key`` and the fix, for a call that is not one of :data:`DISTRIBUTIONS`
        with number arguments that scipy accepts.

    >>> parse_distribution("expon(scale=0.1)", "grid.C")
    expon(scale=0.1)
    >>> parse_distribution("logunifrom(1, 2)", "grid.C")
    Traceback (most recent call last):
    ...
    hpcml.errors.SpecError: grid.C: unknown distribution 'logunifrom'. Did you mean \
'loguniform'? Use one of: beta, binom, expon, gamma, geom, halfnorm, lognorm, loguniform, \
norm, poisson, randint, reciprocal, triang, truncnorm, uniform
    """
    def bad(why: str) -> SpecError:
        return SpecError(key, f"{why}; write a distribution call with number arguments, "
                         f"{_EXAMPLE}, or a list of values", source)

    if len(text) > MAX_CALL_CHARS:
        raise bad(f"a distribution call of {len(text)} characters (at most {MAX_CALL_CHARS})")
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise bad(f"{text!r} is not a distribution call") from None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise bad(f"{text!r} is not a distribution call")
    name = node.func.id
    if name not in DISTRIBUTIONS:
        close = difflib.get_close_matches(name, list(DISTRIBUTIONS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecError(key, f"unknown distribution {name!r}.{hint} Use one of: "
                        f"{', '.join(sorted(DISTRIBUTIONS))}", source)
    if any(kw.arg is None for kw in node.keywords):
        raise bad(f"{text!r}: '**' is not allowed")
    args = tuple(_number(a, text, bad) for a in node.args)
    kwargs = tuple((str(kw.arg), _number(kw.value, text, bad)) for kw in node.keywords)
    dist = Distribution(name, args, kwargs)
    try:
        import numpy as np

        value = dist.rvs(random_state=0)
        finite = bool(np.all(np.isfinite(value)))
    except Exception as exc:  # noqa: BLE001 - scipy's own refusal of the arguments
        why = str(exc).strip().split(". ")[0] or type(exc).__name__
        raise SpecError(key, f"{text}: scipy.stats.{name} refuses these arguments ({why}); "
                        f"{_EXAMPLE}", source) from None
    if not finite:
        raise SpecError(key, f"{text}: scipy.stats.{name} draws non-finite values with these "
                        f"arguments; {_EXAMPLE}", source)
    return dist


def _number(node: ast.AST, text: str, bad: Callable[[str], SpecError]) -> float:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise bad(f"{text!r}: arguments must be numbers") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(f"{text!r}: arguments must be numbers, got {value!r}")
    if not math.isfinite(value):
        raise bad(f"{text!r}: arguments must be finite numbers")
    return value


def grid_value(values: Any, key: str, source: str | None = None) -> list | Distribution:
    """A grid entry: a non-empty list (kept as a list), or a distribution call.

    >>> grid_value([1, 2], "g.C"), grid_value("randint(1, 20)", "g.k")
    ([1, 2], randint(1, 20))
    """
    if isinstance(values, list):
        if not values:
            raise SpecError(key, "is an empty list; give at least one value", source)
        return list(values)
    if isinstance(values, str) and "(" in values:
        return parse_distribution(values, key, source)
    raise SpecError(key, f"must be a list of values, e.g. [{values!r}], or a distribution "
                    f"({_EXAMPLE})", source)


def check_flow_split(grid: Mapping[Any, Any], key: str, source: str | None = None) -> None:
    """Refuse a call that YAML cut at a comma: ``{C: loguniform(1e-3, 1e2)}`` reads as
    ``{'C': 'loguniform(1e-3', '1e2)': None}`` (a comma ends a plain value in ``{...}``).

    >>> check_flow_split({"C": "loguniform(1e-3", "1e2)": None}, "grid")
    Traceback (most recent call last):
    ...
    hpcml.errors.SpecError: grid.C: 'loguniform(1e-3' is a call that YAML cut at its comma: in a {...} mapping, quote it ("loguniform(1e-3, 1e2)") or write the grid as an indented block
    """
    for name, value in grid.items():
        if isinstance(value, str) and value.count("(") > value.count(")"):
            raise SpecError(f"{key}.{name}", f"{value!r} is a call that YAML cut at its comma: "
                            'in a {...} mapping, quote it ("loguniform(1e-3, 1e2)") or write '
                            "the grid as an indented block", source)


def has_distribution(grid: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any entry of a parsed grid (list of mappings) is a distribution."""
    return any(isinstance(v, Distribution) for g in grid for v in g.values())


# -- the search block -------------------------------------------------------------------------

_NEEDED = object()  # an option's default that depends on the grid (halving's min_resources)


def _pos_int(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10**12
    return None if ok else "must be an integer >= 1"


def _seed(v: Any) -> str | None:
    ok = v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32)
    return None if ok else "must be an integer in [0, 2**32 - 1] or null"


def _factor(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 1 < v <= 1e6
    return None if ok else "must be a number > 1 (e.g. 3: a third of the candidates go on)"


def _resource(v: Any) -> str | None:
    ok = isinstance(v, str) and v != ""
    return None if ok else "must be 'n_samples' or the name of an estimator param (n_estimators)"


def _either(*words: str, integer: bool = True) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v in words or (integer and _pos_int(v) is None):
            return None
        return "must be " + " or ".join([*(["an integer >= 1"] if integer else []),
                                          *(repr(w) for w in words)])
    return check


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


#: strategy -> option -> (default, check). The defaults are scikit-learn's.
STRATEGY_OPTIONS: dict[str, dict[str, tuple[Any, Callable[[Any], str | None]]]] = {
    "grid": {},
    "random": {"n_iter": (10, _pos_int), "random_state": (None, _seed)},
    "halving": {
        "factor": (3, _factor), "resource": ("n_samples", _resource),
        "min_resources": (_NEEDED, _either("exhaust", "smallest")),
        "max_resources": ("auto", _either("auto")),
        "aggressive_elimination": (False, _bool), "random_state": (None, _seed),
        "n_candidates": (None, _either("exhaust")),
    },
    "asha": {
        "factor": (3, _factor), "resource": ("n_samples", _resource),
        "min_resources": ("smallest", _either("smallest")),
        "max_resources": ("auto", _either("auto")),
        "n_iter": (10, _pos_int), "random_state": (None, _seed),
    },
}
#: The strategies that evaluate in several rounds (each needs the results of the last).
MULTI_ROUND = ("halving", "asha")


@dataclass(frozen=True)
class SearchSpec:
    """A model's search: its strategy and options (scikit-learn's names, defaults filled in).

    Attributes
    ----------
    strategy : str
        ``grid``, ``random``, ``halving`` or ``asha``.
    options : mapping
        Every option of the strategy (:data:`STRATEGY_OPTIONS`), given or default.
    sampled : bool
        Candidates are drawn by ``ParameterSampler`` (random, asha, halving over
        distributions or with ``n_candidates``), not enumerated by ``ParameterGrid``.
    key : str
        Where the block was written (``search`` or ``models.NAME.search``), for messages.
    """

    strategy: str = "grid"
    options: Mapping[str, Any] = field(default_factory=dict)
    sampled: bool = False
    key: str = "search"

    @property
    def multi_round(self) -> bool:
        """Whether the strategy needs more than one round of fits."""
        return self.strategy in MULTI_ROUND

    @property
    def sklearn_class(self) -> str | None:
        """The scikit-learn search that gives the same results (``None`` for asha).

        >>> SearchSpec("halving", sampled=True).sklearn_class
        'HalvingRandomSearchCV'
        """
        if self.strategy == "halving":
            return "HalvingRandomSearchCV" if self.sampled else "HalvingGridSearchCV"
        return {"grid": "GridSearchCV", "random": "RandomizedSearchCV"}.get(self.strategy)


def parse_search(raw: Any, key: str, source: str | None = None) -> dict[str, Any] | None:
    """Check a ``search:`` block's keys and values (``None`` when it is absent).

    Returns the block as a dict with ``strategy`` set; defaults are filled in by
    :func:`model_search`, which knows the model's grid.

    >>> parse_search({"strategy": "random", "n_iter": 5}, "search")
    {'strategy': 'random', 'n_iter': 5}
    >>> parse_search({"strategy": "random", "n_itr": 5}, "search")
    Traceback (most recent call last):
    ...
    hpcml.errors.SpecError: search.n_itr: unknown key for strategy 'random'. Did you mean \
'n_iter'? Valid keys here: strategy, n_iter, random_state
    """
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise SpecError(key, "must be a mapping like {strategy: random, n_iter: 20, "
                        "random_state: 0}", source)
    strategy = raw.get("strategy", "grid")
    if strategy not in STRATEGY_OPTIONS:
        close = difflib.get_close_matches(str(strategy), list(STRATEGY_OPTIONS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"{key}.strategy", f"unknown strategy {strategy!r}.{hint} Use one of: "
                        f"{', '.join(STRATEGY_OPTIONS)}", source)
    options = STRATEGY_OPTIONS[strategy]
    valid = ("strategy", *options)
    for name, value in raw.items():
        if name == "strategy":
            continue
        if name not in options:
            close = difflib.get_close_matches(str(name), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            elsewhere = [s for s, o in STRATEGY_OPTIONS.items() if name in o]
            also = f" ({name!r} belongs to strategy {' or '.join(elsewhere)})" if elsewhere else ""
            raise SpecError(f"{key}.{name}", f"unknown key for strategy {strategy!r}.{hint}"
                            f"{also} Valid keys here: {', '.join(valid)}", source)
        problem = options[name][1](value)
        if problem is not None:
            raise SpecError(f"{key}.{name}", f"{problem}, got {value!r}", source)
    return {"strategy": strategy, **{k: v for k, v in raw.items() if k != "strategy"}}


def model_search(own: Any, top: dict[str, Any] | None, grid: Sequence[Mapping[str, Any]],
                 estimator: Any, model_key: str, source: str | None = None) -> SearchSpec:
    """The search of one model: its own block, else the top level's, else the grid.

    Checks what needs the model: a distribution in a grid search, the ``resource`` (an
    estimator param not in the grid), and scikit-learn's rules for halving's options.

    Parameters
    ----------
    own : mapping or None
        ``models.NAME.search`` as written.
    top : dict or None
        The top-level block, already checked by :func:`parse_search`.
    grid : sequence of mapping
        The model's parsed grid (lists and :class:`Distribution` objects).
    estimator : estimator
        The model's estimator (its params name the possible resources).
    model_key : str
        ``models.NAME``.
    source : str, optional
        The spec file.

    Returns
    -------
    SearchSpec
    """
    key = f"{model_key}.search"
    block = parse_search(own, key, source)
    if block is None:
        block, key = (top, "search") if top is not None else ({"strategy": "grid"}, "search")
    strategy = block["strategy"]
    for_model = "" if key.startswith("models.") else f" (for {model_key})"
    sampled = strategy in ("random", "asha") or (
        strategy == "halving" and (has_distribution(grid) or block.get("n_candidates") is not None))
    if strategy == "grid":
        for i, g in enumerate(grid):
            for pname, values in g.items():
                if isinstance(values, Distribution):
                    where = f"{model_key}.grid" if len(grid) == 1 else f"{model_key}.grid[{i}]"
                    raise SpecError(
                        f"{where}.{pname}", f"{values!r} is a distribution, which a grid search "
                        "cannot enumerate: use search: {strategy: random, n_iter: 20} (or "
                        "halving), or give a list of values", source)
    options = {}
    for name, (default, _check) in STRATEGY_OPTIONS[strategy].items():
        value = block.get(name, default)
        if value is _NEEDED:  # scikit-learn: 'exhaust' for HalvingGridSearchCV, else 'smallest'
            value = "smallest" if sampled else "exhaust"
        if name == "n_candidates" and value is None and sampled:
            value = "exhaust"
        options[name] = value
    if strategy in MULTI_ROUND:
        _check_resources(options, grid, estimator, key, for_model, source)
    if strategy == "halving" and not sampled:
        options.pop("n_candidates")
    return SearchSpec(strategy, options, sampled, key)


def _check_resources(options: dict[str, Any], grid: Sequence[Mapping[str, Any]],
                     estimator: Any, key: str, for_model: str, source: str | None) -> None:
    """scikit-learn's checks of a halving search's resource options, before any fit."""
    resource = options["resource"]
    if resource != "n_samples":
        valid = sorted(estimator.get_params(deep=True))
        if resource not in valid:
            close = difflib.get_close_matches(resource, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"{key}.resource", f"{resource!r} is not 'n_samples' nor a "
                            f"parameter of {type(estimator).__name__}{for_model}.{hint}", source)
        if any(resource in g for g in grid):
            raise SpecError(f"{key}.resource", f"{resource!r} is also in the grid{for_model}: "
                            "a resource cannot be searched; drop it from the grid", source)
        if options["max_resources"] == "auto":
            raise SpecError(f"{key}.max_resources", f"must be an integer when resource is "
                            f"{resource!r} (max_resources: auto means n_samples)", source)
    lo, hi = options["min_resources"], options["max_resources"]
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        raise SpecError(f"{key}.min_resources", f"{lo} is greater than max_resources {hi}",
                        source)
    if options.get("n_candidates") == "exhaust" and lo == "exhaust":
        raise SpecError(f"{key}.min_resources", "n_candidates and min_resources cannot both "
                        "be 'exhaust'; set min_resources: smallest or n_candidates to a number",
                        source)


def unseeded(spec: Any) -> bool:
    """Whether a model's search draws with ``random_state: null`` (a seed must be chosen)."""
    return any("random_state" in m.search.options and m.search.options["random_state"] is None
               for m in spec.models)


def with_seed(spec: Any, seed: int) -> Any:
    """``spec`` (an ``ExperimentSpec``) with ``random_state: null`` searches drawing from
    ``seed``, written into its content too (the manifest keeps it: a resume draws the same).

    >>> from hpcml.spec.schema import parse_spec
    >>> raw = {"data": {"generator": "sklearn.datasets.make_classification"},
    ...        "search": {"strategy": "random"},
    ...        "models": {"t": {"estimator": "sklearn.tree.DecisionTreeClassifier",
    ...                         "grid": {"max_depth": [1, 2]}}}}
    >>> s = with_seed(parse_spec(raw), 7)
    >>> s.models[0].search.options["random_state"], s.raw["search"]["random_state"]
    (7, 7)
    """
    from dataclasses import replace

    raw = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in spec.raw.items()}
    models, raw_models = [], dict(raw.get("models") or {})
    for m in spec.models:
        if "random_state" in m.search.options and m.search.options["random_state"] is None:
            m = replace(m, search=replace(m.search, options={**m.search.options,
                                                             "random_state": int(seed)}))
            if m.search.key == "search":
                raw["search"] = {**raw.get("search", {}), "random_state": int(seed)}
            else:
                body = dict(raw_models[m.name])
                body["search"] = {**body["search"], "random_state": int(seed)}
                raw_models[m.name] = body
        models.append(m)
    raw["models"] = raw_models
    return replace(spec, models=tuple(models), raw=raw)
