"""Limits on what a spec file may expand to (YAML anchors and aliases can nest exponentially)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hpcml.errors import SpecError

__all__ = ["MAX_VALUES", "check_size"]

#: Values (scalars, lists and mappings) a spec may hold once its aliases are expanded.
MAX_VALUES = 100_000


def check_size(raw: Any, source: str | None = None, limit: int = MAX_VALUES) -> None:
    """Refuse a spec that holds more than ``limit`` values once expanded.

    Every alias is counted each time it is used, as the run would (it hashes and stores
    the spec), but computed once per anchor: a "billion laughs" is refused in microseconds.

    Examples
    --------
    >>> check_size({"a": [1, 2, {"b": 3}]})
    >>> x = [1] * 10
    >>> bomb = [[[[[[x] * 10] * 10] * 10] * 10] * 10]
    >>> check_size(bomb, "s.yaml")
    Traceback (most recent call last):
    ...
    hpcml.errors.SpecError: s.yaml: the spec holds more than 100000 values once its YAML \
aliases are expanded; write the values out, or use fewer nested anchors
    """
    memo: dict[int, int] = {}

    def size(node: Any) -> int:  # an alias is the same object: counted once, used n times
        if isinstance(node, Mapping):
            items = [*node.keys(), *node.values()]
        elif isinstance(node, (list, tuple, set)):
            items = list(node)
        else:
            return 1
        key = id(node)
        if key not in memo:
            memo[key] = 1 + sum(size(v) for v in items)
        return memo[key]

    try:
        n = size(raw)
    except RecursionError:
        raise SpecError("", "the spec is nested too deeply; flatten it", source) from None
    if n > limit:
        raise SpecError(
            "", f"the spec holds more than {limit} values once its YAML aliases are "
            "expanded; write the values out, or use fewer nested anchors", source,
        )
