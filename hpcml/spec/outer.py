"""The spec's ``outer_cv`` block (nested cross-validation): the checks beyond the ``cv`` form.

``outer_cv`` has the form of ``cv`` (:func:`hpcml.spec.schema._parse_cv` reads both); this
module checks what nested CV needs on top of it. It imports nothing from
:mod:`hpcml.spec.schema` (which calls it), so the parsed objects come in as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hpcml.errors import SpecError

__all__ = ["check_outer_cv", "NESTED_STRATEGIES"]

#: The strategies nested CV runs: those of one round, whose candidates do not depend on
#: results (each outer fold searches the same candidates, as scikit-learn's search with a
#: fixed ``random_state`` does in ``cross_validate``).
NESTED_STRATEGIES = (None, "grid", "random")


def check_outer_cv(raw: Mapping[str, Any], outer: Any, data: Any, refit: Any,
                   save_oof: Any, source: str | None = None) -> None:
    """Refuse an ``outer_cv`` that nested CV cannot run, naming the key and the fix.

    Parameters
    ----------
    raw : mapping
        The whole spec as written (for ``search`` blocks).
    outer : CVSpec
        The parsed ``outer_cv``.
    data : DataSpec
        The parsed ``data`` (its ``groups``, linked with ``cv.groups``).
    refit : str or bool
        The parsed ``refit``.
    save_oof : mapping or None
        The parsed ``save_oof``.
    source : str, optional
        The spec file, for messages.

    Raises
    ------
    SpecError
        ``refit: false``, ``save_oof``, a search strategy of several rounds, or groups that
        differ from the data's.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> check_outer_cv({}, NS(splitter="KFold", groups=None), NS(groups=None, generator="g"),
    ...                True, None)
    >>> check_outer_cv({}, NS(splitter="KFold", groups=None), NS(groups=None, generator="g"),
    ...                False, None)
    Traceback (most recent call last):
    ...
    hpcml.errors.SpecError: outer_cv: nested CV picks each outer fold's candidate by the refit \
metric, so it needs refit; set refit to a metric of scoring (or true), or drop outer_cv
    """
    if refit is False:
        raise SpecError("outer_cv", "nested CV picks each outer fold's candidate by the refit "
                        "metric, so it needs refit; set refit to a metric of scoring (or "
                        "true), or drop outer_cv", source)
    if save_oof is not None:
        raise SpecError("save_oof", "is not supported with outer_cv yet; drop save_oof, or "
                        "drop outer_cv", source)
    for key, block in _search_blocks(raw):
        strategy = block.get("strategy", "grid") if isinstance(block, Mapping) else None
        if strategy not in NESTED_STRATEGIES:
            raise SpecError(f"{key}.strategy", f"outer_cv (nested CV) runs the searches of "
                            f"one round ({', '.join(NESTED_STRATEGIES[1:])}) only for now, not "
                            f"{strategy!r}; use strategy: grid or random, or drop outer_cv",
                            source)
    groups = getattr(outer, "groups", None)
    if groups is not None and groups != data.groups:
        raise SpecError("outer_cv.groups", f"{groups!r} differs from the data's groups "
                        f"{data.groups!r}; name the groups column once, in data.groups",
                        source)
    if ("Group" in str(outer.splitter) and data.groups is None
            and getattr(data, "generator", None) is None):
        raise SpecError("outer_cv.groups", f"{outer.splitter} needs groups: name the groups "
                        "column in data.groups", source)


def _search_blocks(raw: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The ``search`` blocks of the spec: the top level's and each model's."""
    out = []
    if raw.get("search") is not None:
        out.append(("search", raw["search"]))
    models = raw.get("models")
    if isinstance(models, Mapping):
        for name, body in models.items():
            if isinstance(body, Mapping) and body.get("search") is not None:
                out.append((f"models.{name}.search", body["search"]))
    return out
