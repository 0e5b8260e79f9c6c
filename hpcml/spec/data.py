"""Load the data a spec names: a generator callable, or a .csv/.npz/.npy/.parquet file."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.errors import SpecError
from hpcml.spec.resolve import resolve
from hpcml.spec.schema import DataSpec

__all__ = ["Dataset", "load_data", "fingerprint"]


@dataclass
class Dataset:
    """Features, target and optional groups, as numpy arrays."""

    X: np.ndarray
    y: np.ndarray | None
    groups: np.ndarray | None = None
    feature_names: list[str] | None = None

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])


def load_data(spec: DataSpec, source: str | None = None) -> Dataset:
    """Load the data described by ``spec``.

    Raises
    ------
    SpecError
        If the file is missing or unreadable, the target column is absent, or a feature holds
        values that are not numbers.
    """
    if spec.generator is not None:
        return _from_generator(spec, source)
    path = Path(spec.path)
    if not path.exists():
        raise SpecError("data.path", f"data file not found: {path}", source)
    if path.is_dir():
        raise SpecError("data.path", f"{path} is a folder, not a data file", source)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            ds = _from_csv(path, spec, source)
        elif suffix == ".npz":
            ds = _from_npz(path, spec, source)
        elif suffix == ".npy":
            ds = _from_npy(path, spec, source)
        else:
            ds = _from_parquet(path, spec, source)
    except PermissionError as exc:
        raise SpecError("data.path", f"cannot read {path}: {exc.strerror}", source) from None
    if ds.X.ndim != 2:
        raise SpecError("data", f"X must be 2-D (rows x features), got shape {ds.X.shape}", source)
    if ds.y is not None and len(ds.y) != len(ds.X):
        raise SpecError("data", f"X has {len(ds.X)} rows but the target has {len(ds.y)}", source)
    if ds.y is not None and ds.y.dtype.kind == "f" and np.isnan(ds.y).any():
        row = int(np.flatnonzero(np.isnan(ds.y))[0])
        raise SpecError("data.target", f"{path.name}: the target holds NaN (first at row {row}, "
                        "0-based); fill in or drop those rows", source)
    return ds


def fingerprint(X: np.ndarray, y: np.ndarray | None) -> str:
    """A short content hash of the data (shape, dtype and bytes)."""
    import hashlib

    h = hashlib.sha256()
    for a in (X, y):
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype.str}".encode())
        if a.dtype.kind == "O":
            h.update(repr(a.tolist()).encode())
        else:
            h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:16]


def _from_generator(spec: DataSpec, source: str | None) -> Dataset:
    fn = resolve(spec.generator)
    try:
        out = fn(**spec.params)
    except Exception as exc:  # the user's callable: report, do not trace back
        raise SpecError("data.generator", f"{spec.generator}(...) failed: {exc}", source) from None
    groups = None
    if hasattr(out, "data") and hasattr(out, "target"):
        X, y = out.data, out.target
    elif isinstance(out, tuple) and len(out) in (2, 3):
        X, y = out[0], out[1]
        groups = out[2] if len(out) == 3 else None
    else:
        raise SpecError(
            "data.generator", "must return (X, y), (X, y, groups) or a Bunch with data/target", source
        )
    return Dataset(np.asarray(X), np.asarray(y), None if groups is None else np.asarray(groups))


def _from_csv(path: Path, spec: DataSpec, source: str | None) -> Dataset:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise SpecError("data.path", f"{path} is empty", source) from None
        # Blank lines (e.g. at the end of the file) are not rows; keep each row's line number
        # in the file for messages (a quoted field may span lines).
        rows, lines = [], []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            rows.append(row)
            lines.append(reader.line_num)
    header = [h.strip() for h in header]
    cols = _pick_columns(header, spec, path, source)
    width = len(header)
    for line, row in zip(lines, rows, strict=True):
        if len(row) != width:
            raise SpecError(
                "data.path", f"{path.name} line {line}: {len(row)} fields, header has {width}", source
            )
    table = np.array(rows, dtype=object).reshape(len(rows), width)
    feature_idx = [j for j in range(width) if j not in cols.values()]
    X = np.empty((len(rows), len(feature_idx)), dtype=np.float64)
    for k, j in enumerate(feature_idx):
        X[:, k] = _numeric_column(table[:, j], header[j], path, source, lines)
    for key in ("target", "groups"):
        if key in cols:
            _no_blank_cells(table[:, cols[key]], header[cols[key]], key, path, source, lines)
    y = _label_column(table[:, cols["target"]])
    groups = _label_column(table[:, cols["groups"]]) if "groups" in cols else None
    return Dataset(X, y, groups, [header[j] for j in feature_idx])


def _no_blank_cells(values: np.ndarray, name: str, key: str, path: Path, source: str | None,
                    lines: list[int]) -> None:
    """Refuse an empty target (or groups) cell: it would become a class of its own."""
    blank = [i for i, v in enumerate(values) if not str(v).strip()]
    if blank:
        more = f" (and {len(blank) - 1} more)" if len(blank) > 1 else ""
        raise SpecError(
            f"data.{key}", f"{path.name} line {lines[blank[0]]}, column {name!r}: empty cell"
            f"{more}; scikit-learn would refuse it (\"Input y contains NaN\"). Fill in or drop "
            "those rows", source,
        )


def _from_parquet(path: Path, spec: DataSpec, source: str | None) -> Dataset:
    try:
        import pandas as pd
    except ImportError:
        raise SpecError(
            "data.path", "reading .parquet needs pandas and pyarrow: pip install 'hpcml[parquet]'",
            source,
        ) from None
    df = pd.read_parquet(path)
    header = [str(c) for c in df.columns]
    cols = _pick_columns(header, spec, path, source)
    feats = [c for j, c in enumerate(df.columns) if j not in cols.values()]
    for c in feats:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise SpecError(
                "data.path", f"{path.name}: column {c!r} is not numeric; encode it first", source
            )
    X = df[feats].to_numpy(dtype=np.float64)
    y = _label_column(df.iloc[:, cols["target"]].to_numpy())
    groups = df.iloc[:, cols["groups"]].to_numpy() if "groups" in cols else None
    return Dataset(X, y, groups, [str(c) for c in feats])


def _from_npz(path: Path, spec: DataSpec, source: str | None) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if "X" not in keys:
                raise SpecError("data.path", f"{path.name} has no array 'X' (has {sorted(keys)})", source)
            target = spec.target or "y"
            if target not in keys:
                raise SpecError(
                    "data.target", f"{path.name} has no array {target!r} (has {sorted(keys)})", source
                )
            groups = spec.groups or ("groups" if "groups" in keys else None)
            return Dataset(z["X"], z[target], z[groups] if groups in keys else None)
    except (OSError, ValueError) as exc:
        raise SpecError("data.path", f"cannot read {path.name} as .npz: {exc}", source) from None


def _from_npy(path: Path, spec: DataSpec, source: str | None) -> Dataset:
    if not spec.target:
        raise SpecError("data.target", "with an .npy X, give the target's .npy file here", source)
    ypath = Path(spec.target)
    if not ypath.is_absolute():
        ypath = path.parent / ypath
    if not ypath.exists():
        raise SpecError("data.target", f"target file not found: {ypath}", source)
    try:
        # A memory map: rank 0 copies it straight into the node's shared memory (no private
        # copy), and a large X costs no time here.
        X = np.load(path, mmap_mode="r", allow_pickle=False)
        y = np.load(ypath, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SpecError("data.path", f"cannot read .npy data: {exc}", source) from None
    return Dataset(X, y)


def _pick_columns(header: list[str], spec: DataSpec, path: Path, source: str | None) -> dict:
    cols = {}
    for key, name in (("target", spec.target), ("groups", spec.groups)):
        if name is None:
            continue
        if name not in header:
            raise SpecError(
                f"data.{key}", f"no column {name!r} in {path.name}; columns: {', '.join(header)}",
                source,
            )
        cols[key] = header.index(name)
    return cols


def _numeric_column(
    values: np.ndarray, name: str, path: Path, source: str | None, lines: list[int] | None = None
) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        s = v.strip()
        try:
            out[i] = float(s) if s else np.nan
        except ValueError:
            line = lines[i] if lines is not None else i + 2
            raise SpecError(
                "data.path",
                f"{path.name} line {line}, column {name!r}: {v!r} is not a number; "
                "encode categorical features as numbers first",
                source,
            ) from None
    return out


def _label_column(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    try:
        num = arr.astype(np.float64)
    except (TypeError, ValueError):
        return arr.astype(str)
    if np.all(np.isfinite(num)) and np.all(num == np.round(num)):
        return num.astype(np.int64)
    return num
