"""Resolve the dotted paths that a spec names (``pkg.mod.Name`` or ``pkg.mod:func``)."""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from hpcml.errors import SpecError

__all__ = ["resolve", "splitter_class"]


def resolve(path: str) -> Any:
    """Import the object that ``path`` names.

    Parameters
    ----------
    path : str
        ``package.module.Name``, ``package.module:function`` or
        ``package.module:Class.attribute``.

    Returns
    -------
    object
        The imported object.

    Raises
    ------
    ImportError
        With a message that says which part failed to import.

    Examples
    --------
    >>> resolve("math.sqrt")(4.0)
    2.0
    >>> resolve("os.path:join")("a", "b")
    'a/b'
    """
    if not isinstance(path, str) or not path.strip():
        raise ImportError(f"expected a dotted path like 'package.module.Name', got {path!r}")
    path = path.strip()
    names = path.replace(":", ".", 1).split(".")
    if not all(n.isidentifier() for n in names):  # "..", "/x", "a-b": no import is tried
        raise ImportError(f"{path!r} is not a dotted path like 'package.module.Name' "
                          "(or 'package.module:function')")
    if ":" in path:
        module_name, _, attr = path.partition(":")
        module = _import_module(module_name, path)
        return _getattr_chain(module, attr, path)
    parts = path.split(".")
    # Longest importable module prefix, then attributes.
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and not module_name.startswith(exc.name) and exc.name != module_name:
                raise ImportError(f"importing {module_name!r} failed: {exc}") from exc
            continue
        except Exception as exc:  # the module's own code failed: say so, no traceback
            raise ImportError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
                              ) from exc
        return _getattr_chain(module, ".".join(parts[cut:]), path)
    raise ImportError(f"no module found for {path!r}; write it as 'package.module.Name'")


def _import_module(name: str, path: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or the module's own code failing
        raise ImportError(f"cannot import module {name!r} (from {path!r}): {exc}") from exc


def _getattr_chain(obj: Any, attrs: str, path: str) -> Any:
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise ImportError(
                f"{path!r}: module {getattr(obj, '__name__', obj)!r} has no attribute {attr!r}"
            ) from None
    return obj


def splitter_class(name: str, key: str, source: str | None = None) -> Any:
    """The splitter class ``name`` names: one of ``sklearn.model_selection``, or a dotted path.

    Raises
    ------
    SpecError
        Naming ``key``, the closest valid name, and every valid one.
    """
    import sklearn.model_selection as ms

    if not isinstance(name, str):
        raise SpecError(key, f"must be a splitter name like 'KFold', got {name!r}", source)
    if "." in name or ":" in name:
        try:
            cls = resolve(name)
        except ImportError as exc:
            raise SpecError(key, str(exc), source) from None
    else:
        cls = getattr(ms, name, None)
    if cls is None or not inspect.isclass(cls) or not hasattr(cls, "split"):
        valid = sorted(
            n for n in dir(ms)
            if inspect.isclass(getattr(ms, n)) and hasattr(getattr(ms, n), "split")
            and not inspect.isabstract(getattr(ms, n)) and not n.startswith("Base")
        )
        close = difflib.get_close_matches(str(name), valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecError(
            key, f"{name!r} is not a splitter in sklearn.model_selection.{hint} Valid: {', '.join(valid)}",
            source,
        )
    return cls
