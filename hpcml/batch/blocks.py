"""Pure partitioning of prediction work: rows (or bytes, or row groups) into blocks.

A block is a range of rows (a byte range for a .csv input), sized from a memory budget so
memory per rank stays bounded, with several blocks per rank so a slow rank does not hold the
rest back.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "row_blocks", "group_blocks", "byte_blocks", "default_block_rows",
           "model_names", "BLOCK_BYTES", "BLOCKS_PER_RANK", "MIN_BLOCK_ROWS"]

#: Memory budget of one block (its input rows in memory plus its predictions).
BLOCK_BYTES = 64 << 20
#: Aim for at least this many blocks per rank, so a slow rank does not hold the rest back...
BLOCKS_PER_RANK = 4
#: ... unless blocks would get smaller than this many rows (per-block overhead).
MIN_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class Block:
    """Rows ``[lo, hi)`` of the input (bytes, for a .csv), and the first row's number when
    known before reading (``None`` for a .csv)."""

    index: int
    lo: int
    hi: int
    row_start: int | None


def row_blocks(n_rows: int, block_rows: int) -> list[tuple[int, int]]:
    """Cut ``n_rows`` rows into consecutive ``(start, stop)`` ranges of ``block_rows`` rows.

    Examples
    --------
    >>> row_blocks(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    >>> row_blocks(0, 4)
    []
    >>> row_blocks(3, 5)
    [(0, 3)]
    """
    if block_rows < 1:
        raise ValueError(f"block_rows must be at least 1, got {block_rows}")
    return [(lo, min(lo + block_rows, n_rows)) for lo in range(0, n_rows, block_rows)]


def group_blocks(group_rows: Sequence[int], block_rows: int) -> list[tuple[int, int]]:
    """Row ranges made of whole consecutive groups (e.g. parquet row groups).

    Groups are packed in order while a block stays within ``block_rows`` rows; a group
    larger than that is a block of its own. Empty groups join the block before them.

    Examples
    --------
    >>> group_blocks([3, 3, 3, 3], 6)
    [(0, 6), (6, 12)]
    >>> group_blocks([5, 1, 10, 2], 6)
    [(0, 6), (6, 16), (16, 18)]
    >>> group_blocks([0, 4, 0], 10), group_blocks([], 10)
    ([(0, 4)], [])
    """
    if block_rows < 1:
        raise ValueError(f"block_rows must be at least 1, got {block_rows}")
    blocks: list[tuple[int, int]] = []
    start = stop = 0
    for n in group_rows:
        if stop > start and stop - start + n > block_rows:
            blocks.append((start, stop))
            start = stop
        stop += n
    if stop > start:
        blocks.append((start, stop))
    return blocks


def byte_blocks(start: int, end: int, block_bytes: int) -> list[tuple[int, int]]:
    """Nominal byte ranges covering ``[start, end)``, ``block_bytes`` each.

    A reader moves each boundary to the next line start; both neighbours of a boundary move
    it to the same place, so every line lands in exactly one block.

    Examples
    --------
    >>> byte_blocks(10, 30, 8)
    [(10, 18), (18, 26), (26, 30)]
    >>> byte_blocks(10, 10, 8)
    []
    """
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be at least 1, got {block_bytes}")
    return [(lo, min(lo + block_bytes, end)) for lo in range(start, end, block_bytes)]


def default_block_rows(
    row_bytes: float,
    n_rows: int | None = None,
    ranks: int = 1,
    budget: int = BLOCK_BYTES,
) -> int:
    """Rows per block: within ``budget`` bytes, and several blocks per rank when there is room.

    Parameters
    ----------
    row_bytes : float
        Bytes one row takes in memory (its features plus its predictions).
    n_rows : int, optional
        Rows in the input, when known.
    ranks : int
        Ranks sharing the blocks.
    budget : int
        Memory budget of one block.

    Examples
    --------
    >>> default_block_rows(80)                       # 64 MiB of 80-byte rows
    838860
    >>> default_block_rows(80, n_rows=10**6, ranks=2)  # 8 blocks: 4 per rank
    125000
    >>> default_block_rows(80, n_rows=500, ranks=2)    # tiny input: one block
    1024
    >>> default_block_rows(10**9)                    # a row over budget: one row per block
    1
    """
    rows = max(int(budget // max(row_bytes, 1)), 1)
    if n_rows is not None and n_rows > 0:
        share = math.ceil(n_rows / (BLOCKS_PER_RANK * max(ranks, 1)))
        rows = min(rows, max(share, MIN_BLOCK_ROWS))
    return rows


def model_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Column-name prefixes of models loaded from ``paths``: the file stems when they are
    unique, else ``model0``, ``model1``, ...

    Examples
    --------
    >>> model_names(["out/rf.joblib", "logit.joblib"])
    ['rf', 'logit']
    >>> model_names(["a/best_model.joblib", "b/best_model.joblib"])
    ['model0', 'model1']
    """
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) == len(stems) and all(stems):
        return stems
    return [f"model{i}" for i in range(len(paths))]
