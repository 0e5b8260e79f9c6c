"""Writers of predictions, by file format: each block's predictions at its rows of one file.

Collective: every rank makes one, writes its blocks, and calls ``finish``. The output is built
under a temporary name beside it; rank 0 renames it into place when it is complete:

- ``.npy``: rank 0 preallocates the array with :func:`numpy.lib.format.open_memmap` and each
  rank writes its rows in place (when row numbers are known before reading, i.e. not from a
  .csv; else each block goes to a part file first, placed once the row counts are known);
- ``.csv``: each block is formatted into a part file; the parts are then written at their
  byte offsets of the output, by the ranks that made them;
- ``.parquet``: part files, joined in order by rank 0 (one row group per block).

A new format is a :class:`_Writer` subclass and one line in :data:`WRITERS`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.batch.blocks import Block
from hpcml.batch.readers import _format_of, _pyarrow
from hpcml.core.csvcells import column, quote
from hpcml.errors import UsageError

__all__ = ["open_writer", "WRITERS", "check_output", "check_columns", "format_csv"]

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
    cls = WRITERS[fmt]
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
        header = (",".join(quote(c) for c in self.columns) + "\n").encode()
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


#: Output suffix -> writer class.
WRITERS: dict[str, type] = {".npy": NpyWriter, ".csv": CsvWriter, ".parquet": ParquetWriter}


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
    cols = [column(p[:, k]) for p in preds for k in range(p.shape[1])]
    if not cols or not cols[0]:
        return ""
    lines = cols[0] if len(cols) == 1 else map(",".join, zip(*cols, strict=True))
    return "\n".join(lines) + "\n"


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
