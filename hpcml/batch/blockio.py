"""Read one block of rows; write each block's predictions at its rows of one output file.

Readers give a rank only the rows of the block it claimed, so its memory stays bounded
whatever the input size:

- ``.npy``: a memory map of just the block's rows (unmapped after the copy);
- ``.csv`` (a header line naming the columns, then numbers): a byte range whose ends are moved
  to the next line start, so every line lands in exactly one block. Quoted fields may not
  hold line breaks; an empty field is NaN;
- ``.parquet`` (needs pyarrow): whole row groups, packed into blocks.

Writers (collective: every rank makes one, writes its blocks, and calls ``finish``) build the
output under a temporary name beside it; rank 0 renames it into place when it is complete:

- ``.npy``: rank 0 preallocates the array with :func:`numpy.lib.format.open_memmap` and each
  rank writes its rows in place (when row numbers are known before reading, i.e. not from a
  .csv; else each block goes to a part file first, placed once the row counts are known);
- ``.csv``: each block is formatted into a part file; the parts are then written at their
  byte offsets of the output, by the ranks that made them;
- ``.parquet``: part files, joined in order by rank 0 (one row group per block).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.batch.predict import byte_blocks, group_blocks, row_blocks
from hpcml.errors import UsageError

__all__ = [
    "Block",
    "open_reader",
    "open_writer",
    "check_output",
    "check_columns",
    "format_csv",
    "FORMATS",
]

#: File types hpcml predict reads and writes (by suffix).
FORMATS = (".npy", ".csv", ".parquet")
_PARQUET_HINT = "pip install 'hpcml[parquet]' (pyarrow)"


@dataclass(frozen=True)
class Block:
    """Rows ``[lo, hi)`` of the input (bytes, for a .csv), and the first row's number when
    known before reading (``None`` for a .csv)."""

    index: int
    lo: int
    hi: int
    row_start: int | None


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


# --------------------------------------------------------------------------------------------
# Readers


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
        if fmt == ".npy":
            return NpyReader(p)
        if fmt == ".csv":
            return CsvReader(p)
        return ParquetReader(p)
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


# --------------------------------------------------------------------------------------------
# Output checks


def check_output(out: str | os.PathLike, input: str | os.PathLike | None = None,
                 force: bool = False) -> str:
    """Check that ``out`` can be written, without touching it; returns its format.

    Raises
    ------
    UsageError
        Unknown type, an existing file (without ``force``), a folder, the input itself, no
        permission.
    """
    fmt = _format_of(out, "--out")
    if fmt == ".parquet":
        _pyarrow(f"writing {out}")
    p = Path(out)
    if p.is_dir():
        raise UsageError(f"--out {out}: is a folder; give a file name ending in {fmt}")
    if input is not None and p.exists() and p.resolve() == Path(input).resolve():
        raise UsageError(f"--out {out}: is the input file; choose another name")
    if p.exists() and not force:
        raise UsageError(f"--out {out}: already exists; choose another name or pass --force")
    parent = p.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):  # a temporary file goes beside it
        raise UsageError(f"--out {out}: no permission to write there")
    return fmt


def check_columns(out: str | os.PathLike, columns: list[str], dtypes: list[Any]) -> None:
    """Refuse an .npy output whose columns cannot share one dtype (text labels and numbers).

    Raises
    ------
    UsageError
    """
    if Path(out).suffix.lower() != ".npy" or not dtypes:
        return
    text = [c for c, d in zip(columns, dtypes, strict=True) if np.dtype(d).kind == "U"]
    if text and len(text) != len(columns):
        other = next(c for c, d in zip(columns, dtypes, strict=True) if np.dtype(d).kind != "U")
        raise UsageError(
            f"--out {out}: column {text[0]} holds text labels and column {other} numbers, but "
            "an .npy array holds one type; write a .csv or .parquet instead, or predict them "
            "separately"
        )


def _common_dtype(outputs: list[Any]) -> np.dtype:
    if not outputs:
        return np.dtype(np.float64)
    return np.result_type(*[o.dtype for o in outputs])


# --------------------------------------------------------------------------------------------
# Writers


def open_writer(out: str | os.PathLike, columns: list[str], outputs: list[Any],
                n_rows: int | None, comm: Any) -> Any:
    """A writer of ``out`` (collective over ``comm``; rank 0 creates the temporary files)."""
    fmt = _format_of(out, "--out")
    cls = {".npy": NpyWriter, ".csv": CsvWriter, ".parquet": ParquetWriter}[fmt]
    return cls(Path(out), columns, outputs, n_rows, comm)


class _Writer:
    """What the writers share: temporary names, part files, the final rename."""

    suffix = ""

    def __init__(self, out: Path, columns: list[str], outputs: list[Any], n_rows: int | None,
                 comm: Any) -> None:
        self.out, self.columns, self.outputs, self.n_rows, self.comm = (
            out, columns, outputs, n_rows, comm)
        self.rank = comm.Get_rank()
        token, self._made = None, []
        if self.rank == 0:
            token = uuid.uuid4().hex[:12]
            folder = out.resolve().parent
            while not folder.exists():  # folders made here go again if the run is refused
                self._made.append(folder)
                folder = folder.parent
            out.resolve().parent.mkdir(parents=True, exist_ok=True)
        token = comm.bcast(token, root=0)
        self.tmp = out.resolve().parent / f".{out.name}.{token}.tmp"
        self.parts = out.resolve().parent / f".{out.name}.{token}.parts"
        self.mine: dict[int, Any] = {}
        self.setup()
        comm.Barrier()

    def setup(self) -> None:
        if self.rank == 0:
            self.parts.mkdir()

    def part(self, index: int) -> Path:
        return self.parts / f"{index:09d}{self.suffix}"

    def write(self, block: Block, preds: list[np.ndarray]) -> None:
        raise NotImplementedError

    def _merged(self, local: dict[int, Any]) -> dict[int, Any]:
        merged: dict[int, Any] = {}
        for part in self.comm.allgather(local):
            merged.update(part)
        return merged

    def _commit(self) -> None:
        """Rank 0 renames the complete file into place; every rank returns after that."""
        self.comm.Barrier()
        if self.rank == 0:
            os.replace(self.tmp, self.out)
            shutil.rmtree(self.parts, ignore_errors=True)
        self.comm.Barrier()

    def abort(self) -> None:
        """Remove the temporary files (collective)."""
        self.comm.Barrier()
        if self.rank == 0:
            shutil.rmtree(self.parts, ignore_errors=True)
            with _quiet():
                os.unlink(self.tmp)
            for folder in self._made:
                with _quiet():
                    folder.rmdir()


class NpyWriter(_Writer):
    """One 2-D array, rows x columns, of the columns' common dtype."""

    suffix = ".npy"

    def setup(self) -> None:
        super().setup()
        self.dtype = _common_dtype(self.outputs)
        self.width = len(self.columns)
        self.offset = None
        if self.n_rows is not None:  # row numbers known: preallocate, write blocks in place
            self.offset = self._preallocate(self.n_rows)

    def _preallocate(self, n_rows: int) -> int:
        offset = None
        if self.rank == 0:
            mm = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=self.dtype,
                                           shape=(n_rows, self.width))
            offset = int(mm.offset) if isinstance(mm, np.memmap) else _data_offset(self.tmp)
            del mm
        return self.comm.bcast(offset, root=0)

    def _place(self, row_start: int, Y: np.ndarray) -> None:
        if Y.size == 0:
            return
        start = self.offset + row_start * self.width * self.dtype.itemsize
        mm = np.memmap(self.tmp, self.dtype, "r+", start, Y.shape)
        mm[:] = Y
        mm.flush()
        del mm

    def _stack(self, preds: list[np.ndarray]) -> np.ndarray:
        n = preds[0].shape[0] if preds else 0
        Y = np.empty((n, self.width), dtype=self.dtype)
        j = 0
        for p in preds:
            Y[:, j : j + p.shape[1]] = p
            j += p.shape[1]
        return Y

    def write(self, block: Block, preds: list[np.ndarray]) -> None:
        Y = self._stack(preds)
        if self.offset is not None and block.row_start is not None:
            self._place(block.row_start, Y)
        else:
            np.save(self.part(block.index), Y, allow_pickle=False)
        self.mine[block.index] = Y.shape[0]

    def finish(self) -> int:
        rows = self._merged(dict(self.mine))
        starts = _starts(rows)
        total = sum(rows.values())
        if self.offset is None:
            self.offset = self._preallocate(total)
            for b in sorted(self.mine):
                self._place(starts[b], np.load(self.part(b), allow_pickle=False))
        elif total != self.n_rows:  # pragma: no cover - a reader bug
            raise RuntimeError(f"wrote {total} rows of {self.n_rows}")
        self._commit()
        return total


class CsvWriter(_Writer):
    """A header line of column names, then one line per row; parts placed at byte offsets."""

    suffix = ".csv"

    def write(self, block: Block, preds: list[np.ndarray]) -> None:
        data = format_csv(preds).encode()
        with open(self.part(block.index), "wb") as f:
            f.write(data)
        n = preds[0].shape[0] if preds else 0
        self.mine[block.index] = (n, len(data))

    def finish(self) -> int:
        sizes = self._merged(dict(self.mine))
        header = (",".join(_quote(c) for c in self.columns) + "\n").encode()
        offsets = _starts({b: s[1] for b, s in sizes.items()})
        total_bytes = sum(s[1] for s in sizes.values())
        if self.rank == 0:
            with open(self.tmp, "wb") as f:
                f.write(header)
                f.truncate(len(header) + total_bytes)
        self.comm.Barrier()
        if self.mine:
            fd = os.open(self.tmp, os.O_WRONLY)
            try:
                for b in sorted(self.mine):
                    _copy_at(self.part(b), fd, len(header) + offsets[b])
                os.fsync(fd)
            finally:
                os.close(fd)
        self._commit()
        return sum(s[0] for s in sizes.values())


class ParquetWriter(_Writer):
    """A table with one column per output column; one row group per block."""

    suffix = ".parquet"

    def _table(self, preds: list[np.ndarray]) -> Any:
        import pyarrow as pa

        arrays, j = {}, 0
        for p in preds:
            for k in range(p.shape[1]):
                arrays[self.columns[j]] = pa.array(np.ascontiguousarray(p[:, k]))
                j += 1
        return pa.table(arrays, schema=self._schema())

    def _schema(self) -> Any:
        import pyarrow as pa

        fields = []
        for o in self.outputs:
            t = pa.string() if o.dtype.kind == "U" else pa.from_numpy_dtype(o.dtype)
            fields += [pa.field(c, t) for c in o.columns]
        return pa.schema(fields)

    def write(self, block: Block, preds: list[np.ndarray]) -> None:
        import pyarrow.parquet as pq

        pq.write_table(self._table(preds), self.part(block.index))
        self.mine[block.index] = preds[0].shape[0] if preds else 0

    def finish(self) -> int:
        import pyarrow.parquet as pq

        rows = self._merged(dict(self.mine))
        self.comm.Barrier()
        if self.rank == 0:
            with pq.ParquetWriter(self.tmp, self._schema()) as w:
                for b in sorted(rows):
                    if rows[b]:
                        w.write_table(pq.read_table(self.part(b)))
        self._commit()
        return sum(rows.values())


def format_csv(preds: list[np.ndarray]) -> str:
    """Lines of comma-separated values, one per row (floats in their shortest exact form).

    Examples
    --------
    >>> print(format_csv([np.array([[1], [2]]), np.array([[0.1, 0.9], [1/3, 2/3]])]), end="")
    1,0.1,0.9
    2,0.3333333333333333,0.6666666666666666
    >>> print(format_csv([np.array([["a,b"], ['x "y" z']])]), end="")
    "a,b"
    "x ""y"" z"
    """
    cols = [_format_column(p[:, k]) for p in preds for k in range(p.shape[1])]
    if not cols or not cols[0]:
        return ""
    lines = cols[0] if len(cols) == 1 else map(",".join, zip(*cols, strict=True))
    return "\n".join(lines) + "\n"


def _format_column(col: np.ndarray) -> list[str]:
    kind = col.dtype.kind
    if kind == "f":
        return list(map(float.__repr__, col.astype(np.float64).tolist()))
    if kind in "biu":
        return list(map(str, col.tolist()))
    return [_quote(s) for s in col.astype(str).tolist()]


def _quote(s: str) -> str:
    if any(c in s for c in ',"\n\r') or s != s.strip():
        return '"' + s.replace('"', '""') + '"'
    return s


def _starts(sizes: dict[int, int]) -> dict[int, int]:
    """Where each block starts, blocks in index order.

    >>> _starts({2: 5, 0: 3, 1: 0})
    {0: 0, 1: 3, 2: 3}
    """
    out, at = {}, 0
    for b in sorted(sizes):
        out[b], at = at, at + sizes[b]
    return out


def _copy_at(src: Path, fd: int, offset: int, chunk: int = 1 << 22) -> None:
    with open(src, "rb") as f:
        while data := f.read(chunk):
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                offset, view = offset + n, view[n:]


def _data_offset(path: Path) -> int:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(f)
        else:
            np.lib.format.read_array_header_2_0(f)
        return f.tell()


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)
