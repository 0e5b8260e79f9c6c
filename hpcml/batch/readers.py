"""Readers of prediction inputs, by file format: a rank reads only the rows of its block.

- ``.npy``: a memory map of just the block's rows (unmapped after the copy);
- ``.csv`` (a header line naming the columns, then numbers): a byte range whose ends are moved
  to the next line start, so every line lands in exactly one block. Quoted fields may not
  hold line breaks; an empty field is NaN;
- ``.parquet`` (needs pyarrow): whole row groups, packed into blocks.

A new format is a reader class with ``columns``, ``n_rows``, ``estimated_rows``,
``blocks(block_rows)``, ``read(block)`` and ``head()``, and one line in :data:`READERS`.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.batch.blocks import Block, byte_blocks, group_blocks, row_blocks
from hpcml.errors import UsageError

__all__ = ["open_reader", "READERS", "FORMATS", "NpyReader", "CsvReader", "ParquetReader"]

#: File types hpcml predict reads and writes (by suffix).
FORMATS = (".npy", ".csv", ".parquet")
_PARQUET_HINT = "pip install 'hpcml[parquet]' (pyarrow)"


def _format_of(path: str | os.PathLike, what: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(
            f"{what} {path}: unknown file type {suffix or '(no suffix)'!r}; "
            f"use {', '.join(FORMATS[:-1])} or {FORMATS[-1]}"
        )
    return suffix


def _pyarrow(what: str) -> Any:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"{what} needs pyarrow: {_PARQUET_HINT}") from None
    return pq


def open_reader(path: str | os.PathLike) -> Any:
    """A reader of ``path`` (.npy, .csv or .parquet) that knows its columns.

    Raises
    ------
    UsageError
        If the file is missing, of an unknown type, or not a table of numbers.
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(f"input file not found: {path}")
    if p.is_dir():
        raise UsageError(f"input {path} is a folder, not a data file")
    fmt = _format_of(path, "input")
    try:
        return READERS[fmt](p)
    except PermissionError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


class NpyReader:
    """Rows of a 2-D numeric ``.npy``, read through a memory map of one block at a time."""

    columns: list[str] | None = None

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                self.offset = f.tell()
        except ValueError as exc:
            raise UsageError(f"cannot read {path} as .npy: {exc}") from None
        if dtype.kind not in "biuf":
            raise UsageError(
                f"{path}: holds {dtype} values; hpcml predict needs numbers (bool, int or float)"
            )
        if len(shape) != 2:
            raise UsageError(f"{path}: must be 2-D (rows x features), got shape {shape}")
        need = self.offset + int(np.prod(shape)) * dtype.itemsize
        if path.stat().st_size < need:
            raise UsageError(f"{path}: file is truncated ({path.stat().st_size} of {need} bytes)")
        self.shape, self.fortran, self.dtype = tuple(shape), bool(fortran), dtype
        self.n_rows, self.n_features = int(shape[0]), int(shape[1])
        self.row_bytes = self.n_features * dtype.itemsize

    def estimated_rows(self) -> int:
        return self.n_rows

    def blocks(self, block_rows: int) -> list[Block]:
        return [Block(i, lo, hi, lo) for i, (lo, hi) in enumerate(row_blocks(self.n_rows, block_rows))]

    def read(self, block: Block) -> np.ndarray:
        n, k = block.hi - block.lo, self.n_features
        if n == 0 or k == 0:
            return np.empty((n, k), dtype=self.dtype)
        if self.fortran:  # columns are contiguous: map them all, copy the block's rows
            mm = np.memmap(self.path, self.dtype, "r", self.offset, self.shape, order="F")
            out = np.array(mm[block.lo : block.hi], order="C")
        else:
            start = self.offset + block.lo * self.row_bytes
            mm = np.memmap(self.path, self.dtype, "r", start, (n, k))
            out = np.array(mm)
        del mm
        return out

    def head(self) -> np.ndarray:
        return self.read(Block(0, 0, min(self.n_rows, 1), 0))


class CsvReader:
    """Rows of a ``.csv`` with a header line, read by byte ranges cut at line ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        with open(path, "rb") as f:
            first = f.readline()
            sample = f.read(1 << 16)
        try:
            text = first.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise UsageError(f"{path}: the header line is not UTF-8 text") from None
        if not text.strip():
            raise UsageError(f"{path}: is empty; expected a header line naming the columns")
        header = [h.strip() for h in next(csv.reader([text.rstrip("\r\n")]))]
        if _looks_like_data(header):
            raise UsageError(
                f"{path}: the first line holds numbers ({text.strip()[:40]}...); a .csv input "
                "needs a header line naming the columns first"
            )
        self.columns = header
        self.n_features = len(header)
        self.data_start = len(first)
        self.n_rows = None  # not known before reading
        lines = sample.count(b"\n")
        self.line_bytes = len(sample) / lines if lines else max(len(sample), 1)
        self.row_bytes = self.n_features * 8 + self.line_bytes

    def estimated_rows(self) -> int:
        return int((self.size - self.data_start) / self.line_bytes)

    def blocks(self, block_rows: int) -> list[Block]:
        block_bytes = max(int(block_rows * self.line_bytes), 1)
        ranges = byte_blocks(self.data_start, self.size, block_bytes)
        return [Block(i, lo, hi, None) for i, (lo, hi) in enumerate(ranges)]

    def _line_start(self, f: Any, offset: int) -> int:
        """The first line start at or after ``offset``."""
        if offset <= self.data_start:
            return self.data_start
        if offset >= self.size:
            return self.size
        f.seek(offset - 1)
        f.readline()
        return f.tell()

    def read(self, block: Block) -> np.ndarray:
        with open(self.path, "rb") as f:
            lo, hi = self._line_start(f, block.lo), self._line_start(f, block.hi)
            if hi <= lo:
                return np.empty((0, self.n_features))
            f.seek(lo)
            raw = f.read(hi - lo)
        return self.parse(raw, lo)

    def head(self) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(self.data_start)
            for line in f:
                if line.strip():
                    return self.parse(line, self.data_start)
        return np.empty((0, self.n_features))

    def parse(self, raw: bytes, offset: int) -> np.ndarray:
        """Rows of numbers from the bytes of whole lines that start at byte ``offset``."""
        if not raw.strip():
            return np.empty((0, self.n_features))
        try:  # numpy's C parser straight from the bytes: no text copy (a StringIO is 4x)
            X = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float64, ndmin=2,
                           quotechar='"', comments=None, encoding="utf-8")
        except ValueError:  # empty fields, blank lines with spaces, or a real mistake
            return self._parse_slowly(raw, offset)
        if X.shape[1] != self.n_features:
            return self._parse_slowly(raw, offset)
        return X

    def _parse_slowly(self, raw: bytes, offset: int) -> np.ndarray:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"{self.path}: not UTF-8 text near byte {offset + exc.start}"
            ) from None
        rows, at = [], offset
        for line in text.splitlines(keepends=True):
            here, at = at, at + len(line.encode())
            if not line.strip():
                continue
            fields = next(csv.reader([line.rstrip("\r\n")]))
            if len(fields) != self.n_features:
                raise UsageError(
                    f"{self.path}: the line at byte {here} has {len(fields)} fields but the "
                    f"header has {self.n_features}: {line.strip()[:60]!r}"
                )
            row = []
            for name, v in zip(self.columns, fields, strict=True):
                s = v.strip()
                try:
                    row.append(float(s) if s else np.nan)
                except ValueError:
                    raise UsageError(
                        f"{self.path}: the line at byte {here}, column {name!r}: {v!r} is not "
                        "a number; encode categorical features as numbers first"
                    ) from None
            rows.append(row)
        return np.array(rows, dtype=np.float64).reshape(len(rows), self.n_features)


def _looks_like_data(fields: list[str]) -> bool:
    """Whether a first line is numbers with a decimal point or exponent, not column names.

    >>> _looks_like_data(["0.5", "1e3"]), _looks_like_data(["0", "1"]), _looks_like_data(["a"])
    (True, False, False)
    """
    try:
        [float(f) for f in fields]
    except ValueError:
        return False
    return any(c in f.lower() for f in fields for c in ".e")


class ParquetReader:
    """Rows of a ``.parquet`` of numeric columns, read by whole row groups, as float64."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa

        pq = _pyarrow(f"reading {path}")
        self.path = path
        try:
            self.file = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow's own errors for a bad file
            raise UsageError(f"cannot read {path} as .parquet: {exc}") from None
        schema = self.file.schema_arrow
        for f in schema:
            t = f.type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                    or pa.types.is_decimal(t)):
                raise UsageError(
                    f"{path}: column {f.name!r} holds {t}, not numbers; encode it first"
                )
        md = self.file.metadata
        self.columns = [str(n) for n in schema.names]
        self.n_features = len(self.columns)
        self.n_rows = int(md.num_rows)
        self.group_rows = [int(md.row_group(g).num_rows) for g in range(md.num_row_groups)]
        self.group_start = np.concatenate([[0], np.cumsum(self.group_rows, dtype=np.int64)])
        self.row_bytes = self.n_features * 16  # Arrow columns + the float64 copy

    def estimated_rows(self) -> int:
        return self.n_rows

    def blocks(self, block_rows: int) -> list[Block]:
        ranges = group_blocks(self.group_rows, block_rows)
        return [Block(i, lo, hi, lo) for i, (lo, hi) in enumerate(ranges)]

    def read(self, block: Block) -> np.ndarray:
        starts = self.group_start[:-1]
        groups = [int(g) for g in np.flatnonzero((starts >= block.lo) & (starts < block.hi))]
        table = self.file.read_row_groups(groups, use_threads=False)
        return self._to_numpy(table)

    def head(self) -> np.ndarray:
        batch = next(self.file.iter_batches(batch_size=1, use_threads=False), None)
        if batch is None:
            return np.empty((0, self.n_features))
        import pyarrow as pa

        return self._to_numpy(pa.Table.from_batches([batch]).slice(0, 1))

    def _to_numpy(self, table: Any) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        out = np.empty((table.num_rows, self.n_features), dtype=np.float64)
        for j in range(self.n_features):
            col = pc.cast(table.column(j), pa.float64())
            out[:, j] = col.to_numpy() if col.null_count == 0 else np.asarray(
                col.fill_null(float("nan")).to_numpy()
            )
        return out


#: Input suffix -> reader class.
READERS: dict[str, type] = {".npy": NpyReader, ".csv": CsvReader, ".parquet": ParquetReader}
