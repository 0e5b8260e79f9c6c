"""Parallel prediction: rows cut into blocks, blocks claimed by ranks, every model on each block.

A block is a range of rows (a byte range for a .csv input). A free rank claims the next block
with one atomic fetch-and-add (:class:`hpcml.engines.mpi.board.WorkCounter`), reads only that block, runs
every model on it under its thread budget, and hands the predictions to the output (a file,
or the root rank). Blocks are sized from a memory budget, so memory per rank stays bounded
whatever the input size, and there are several blocks per rank, so a slow rank does not
hold the rest back.

The partitioning helpers are pure (:mod:`hpcml.batch.blocks`). The readers and writers of
.npy/.csv/.parquet files are in :mod:`hpcml.batch.readers` and :mod:`hpcml.batch.writers`,
chosen by suffix from their registries; the command line is :mod:`hpcml.cli.predict`.

Output columns, in model order: ``<name>`` for a one-column output (``predict``, a binary
``decision_function``), ``<name>:<class>`` for ``predict_proba`` and a multiclass
``decision_function`` (classes in ``classes_`` order), ``<name>:<k>`` for other 2-D outputs
(e.g. a multi-output ``predict``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcml.batch.blocks import default_block_rows, model_names, row_blocks
from hpcml.errors import UsageError

__all__ = [
    "predict",
    "predict_file",
    "prepare_job",
    "PredictJob",
    "Output",
    "describe_output",
    "METHODS",
]

#: Prediction methods hpcml can run.
METHODS = ("predict", "predict_proba", "decision_function")

# --------------------------------------------------------------------------------------------
# What a model writes


@dataclass(frozen=True)
class Output:
    """What one model's ``method`` returns for ``n`` rows: ``n_cols`` columns of ``dtype``.

    ``one_d`` is true when the model returns a 1-D array (one column).
    """

    name: str
    method: str
    n_cols: int
    dtype: Any
    one_d: bool
    columns: tuple[str, ...]

    def as_2d(self, values: Any, n_rows: int) -> Any:
        """``values`` (what the model returned for ``n_rows`` rows) as a 2-D array of ``dtype``."""
        import numpy as np

        arr = np.asarray(values)
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.shape != (n_rows, self.n_cols):
            raise RuntimeError(
                f"model {self.name}: {self.method} returned shape {arr.shape} for {n_rows} rows; "
                f"expected ({n_rows}, {self.n_cols}) as on the first row"
            )
        return arr if arr.dtype == self.dtype else arr.astype(self.dtype)

    def empty(self) -> Any:
        """What the model would return for zero rows."""
        import numpy as np

        return np.empty((0,) if self.one_d else (0, self.n_cols), dtype=self.dtype)


def check_method(est: Any, method: str, name: str) -> None:
    """Refuse a model that lacks ``method``, naming those it has.

    Raises
    ------
    UsageError
    """
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if not hasattr(est, method):
        has = [m for m in METHODS if hasattr(est, m)]
        raise UsageError(
            f"model {name}: {type(est).__name__} has no {method} (it has: "
            f"{', '.join(has) or 'none of ' + ', '.join(METHODS)}); choose another --method"
        )


def check_features(est: Any, name: str, n_features: int, columns: Sequence[str] | None,
                   source: str = "the input") -> None:
    """Refuse input whose column count (or column names) do not match what ``est`` was fit on.

    Raises
    ------
    UsageError
        Naming both numbers.
    """
    expected = getattr(est, "n_features_in_", None)
    if expected is not None and int(expected) != n_features:
        raise UsageError(
            f"{source} has {n_features} columns but model {name} expects {int(expected)} "
            f"features (n_features_in_); give exactly the feature columns it was fit on"
        )
    fitted_names = getattr(est, "feature_names_in_", None)
    if columns is not None and fitted_names is not None:
        fitted = [str(c) for c in fitted_names]
        if list(columns) != fitted:
            bad = next(i for i, (a, b) in enumerate(zip(columns, fitted, strict=False)) if a != b)
            raise UsageError(
                f"{source}: column {bad + 1} is {columns[bad]!r} but model {name} was fit with "
                f"{fitted[bad]!r} there; give the columns in the order it was fit on: "
                f"{', '.join(fitted)}"
            )


def describe_output(est: Any, method: str, name: str, probe: Any) -> Output:
    """Run ``method`` on ``probe`` (one row) to learn the output's columns and dtype.

    Raises
    ------
    UsageError
        If the model fails on the probe row or returns something that is not one array.
    """
    import numpy as np

    check_method(est, method, name)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            out = getattr(est, method)(probe)
    except Exception as exc:  # the user's model: report it in one line
        raise UsageError(
            f"model {name}: {method} fails on the first row of the input: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if isinstance(out, list):
        raise UsageError(
            f"model {name}: {method} returns one array per output (a multi-output model); "
            "predict each output with a model of its own"
        )
    arr = np.asarray(out)
    if arr.ndim not in (1, 2):
        raise UsageError(f"model {name}: {method} returns a {arr.ndim}-D array; expected 1-D or 2-D")
    one_d = arr.ndim == 1
    n_cols = 1 if one_d else int(arr.shape[1])
    dtype = arr.dtype
    classes = getattr(est, "classes_", None)
    classes = None if classes is None or isinstance(classes, list) else np.asarray(classes)
    if method == "predict" and classes is not None and (
        classes.dtype.kind in "OUS" or dtype.kind in "OUS"
    ):
        dtype = np.asarray(classes.astype(str)).dtype  # wide enough for every label
    elif dtype.kind in "OS":
        dtype = np.asarray(arr.astype(str)).dtype
    if one_d:
        columns: tuple[str, ...] = (name,)
    elif method != "predict" and classes is not None and classes.ndim == 1 and len(classes) == n_cols:
        columns = tuple(f"{name}:{c}" for c in classes.tolist())
    else:
        columns = tuple(f"{name}:{k}" for k in range(n_cols))
    return Output(name, method, n_cols, np.dtype(dtype), one_d, columns)


# --------------------------------------------------------------------------------------------
# Claiming blocks


class _SelfComm:
    """The communicator of a one-process job that does not use MPI."""

    def Get_rank(self) -> int:  # noqa: N802 - mpi4py's names
        return 0

    def Get_size(self) -> int:  # noqa: N802
        return 1

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def gather(self, obj: Any, root: int = 0) -> list[Any]:
        return [obj]

    def Barrier(self) -> None:  # noqa: N802
        return None


class _LocalCounter:
    """:class:`hpcml.engines.mpi.board.WorkCounter` for one process: claims in order, shows progress."""

    def __init__(self, progress: Any = None) -> None:
        self._next = 0
        self._done = 0
        self.progress = progress

    def claim(self) -> int:
        n, self._next = self._next, self._next + 1
        return n

    def add_done(self, n: int) -> None:
        self._done += n
        if self.progress is not None:
            self.progress.update(self._done)

    def __enter__(self) -> _LocalCounter:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.close()


def _counter(comm: Any, progress: Any) -> Any:
    if isinstance(comm, _SelfComm):
        return _LocalCounter(progress)
    from hpcml.engines.mpi.board import WorkCounter

    return WorkCounter(comm, progress)


def _claim_blocks(counter: Any, n_blocks: int, work: Callable[[int], int]) -> tuple[list[int], str | None]:
    """Claim blocks until none is left and run ``work`` on each (it returns units done).

    A :class:`UsageError` in ``work`` (bad input found in a block) stops this rank's work; it
    then keeps claiming without working, so the other ranks run out of blocks soon. Returns
    the blocks done and the error message, if any.
    """
    mine: list[int] = []
    failed: str | None = None
    while (b := counter.claim()) < n_blocks:
        if failed is not None:
            continue
        try:
            done = work(b)
        except UsageError as exc:
            failed = str(exc)
            continue
        mine.append(b)
        counter.add_done(done)
    return mine, failed


def _progress(comm: Any, enabled: bool, total: int, label: str) -> Any:
    if not enabled or comm.Get_rank() != 0:
        return None
    from hpcml.core.progress import Progress

    return Progress(total, label=label)


# --------------------------------------------------------------------------------------------
# Python API


def predict(
    estimators: Any,
    X: Any,
    method: str = "predict",
    comm: Any = None,
    root_only: bool = False,
    *,
    block_rows: int | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> Any:
    """Predict ``X`` with one or several fitted estimators, rows spread over MPI ranks.

    Every rank of ``comm`` calls this with the same estimators and the same ``X`` (as with
    :class:`hpcml.MPISearchCV`). Rows are cut into blocks; each rank claims blocks as it
    becomes free and runs every estimator on each block it claims. The result equals
    ``getattr(estimator, method)(X)`` row for row.

    Parameters
    ----------
    estimators : estimator, list of estimators, or dict of name to estimator
        Fitted models.
    X : array-like, sparse matrix or DataFrame of shape (n_samples, n_features)
        Rows are sliced as they are (a DataFrame stays a DataFrame).
    method : {'predict', 'predict_proba', 'decision_function'}
    comm : mpi4py communicator, optional
        Default ``COMM_WORLD``; a world of one rank runs in this process.
    root_only : bool
        Return the predictions on rank 0 only (``None`` on the other ranks) instead of on
        every rank.
    block_rows : int, optional
        Rows per block (default: from a 64 MiB budget, at least 4 blocks per rank).
    threads : int, optional
        BLAS/OpenMP/joblib threads per rank (default as for ``hpcml run``).
    progress : bool
        Show rows done on rank 0.

    Returns
    -------
    ndarray, list of ndarray, dict of ndarray, or None
        Shaped like ``estimators``: one array, a list, or a dict with the same keys.

    Raises
    ------
    UsageError
        If an estimator lacks ``method`` or expects another number of features (on every
        rank, before any work).

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = make_classification(n_samples=50, random_state=0)
    >>> model = LogisticRegression().fit(X, y)
    >>> proba = predict(model, X, method="predict_proba", comm=None)
    >>> bool((proba == model.predict_proba(X)).all()), proba.shape
    (True, (50, 2))
    """
    import numpy as np

    from hpcml.engines import open_world

    if isinstance(estimators, dict):
        names, models = [str(k) for k in estimators], list(estimators.values())
    elif isinstance(estimators, (list, tuple)):
        names, models = [f"model{i}" for i in range(len(estimators))], list(estimators)
    else:
        names, models = ["model0"], [estimators]
    if not hasattr(X, "shape") and not hasattr(X, "iloc"):
        X = np.asarray(X)
    n_rows = int(X.shape[0])
    n_features = int(X.shape[1]) if len(X.shape) > 1 else 1
    for name, est in zip(names, models, strict=True):
        check_method(est, method, name)
        check_features(est, name, n_features, None, "X")
    probe = _rows(X, 0, 1) if n_rows else np.zeros((1, n_features))
    outputs = [describe_output(est, method, name, probe) for name, est in zip(names, models, strict=True)]

    world = open_world(comm)
    try:
        return _predict(world, X, names, models, estimators, outputs, method, n_rows,
                        n_features, threads, block_rows, progress, root_only)
    finally:
        world.close()


def _predict(world: Any, X: Any, names: list[str], models: list[Any], estimators: Any,
             outputs: list[Output], method: str, n_rows: int, n_features: int,
             threads: int | None, block_rows: int | None, progress: bool,
             root_only: bool) -> Any:
    import numpy as np

    from hpcml.core.threads import thread_budget, threads_per_rank

    wcomm = getattr(world, "comm", None) or _SelfComm()
    rank, size = wcomm.Get_rank(), wcomm.Get_size()
    if size > 1:  # every rank learns of a mismatch and raises: none is left in a collective
        shapes = wcomm.allgather((n_rows, n_features))
        other = next((r for r, shape in enumerate(shapes) if shape != shapes[0]), None)
        if other is not None:
            raise ValueError(
                f"hpcml.predict: rank {other} has X of shape {shapes[other]} but rank 0 has "
                f"{shapes[0]}; every rank must call predict with the same X"
            )
    if threads is None:
        threads, _ = threads_per_rank(world.layout()["ranks_on_node"])
    itemsize = getattr(getattr(X, "dtype", None), "itemsize", 8)
    out_bytes = sum(o.n_cols * o.dtype.itemsize for o in outputs)
    rows_per_block = block_rows or default_block_rows(
        n_features * itemsize + out_bytes, n_rows, size
    )
    blocks = row_blocks(n_rows, rows_per_block)
    results: dict[int, list[Any]] = {}

    def work(b: int) -> int:
        lo, hi = blocks[b]
        Xb = _rows(X, lo, hi)
        results[b] = [np.asarray(getattr(est, method)(Xb)) for est in models]
        return hi - lo

    bar = _progress(wcomm, progress, n_rows, "rows")
    with thread_budget(threads), _counter(wcomm, bar) as counter:
        _claim_blocks(counter, len(blocks), work)

    full = _collect(wcomm, results, len(blocks), outputs)
    if not root_only and size > 1:
        # copies: the shared windows die with the world
        full = [np.array(world.bcast_array(full[m] if rank == 0 else None))
                for m in range(len(outputs))]
    if full is None:
        return None
    if isinstance(estimators, dict):
        return dict(zip(estimators, full, strict=True))
    if isinstance(estimators, (list, tuple)):
        return full
    return full[0]


def _rows(X: Any, lo: int, hi: int) -> Any:
    return X.iloc[lo:hi] if hasattr(X, "iloc") else X[lo:hi]


def _collect(comm: Any, results: dict[int, list[Any]], n_blocks: int,
             outputs: list[Output]) -> list[Any] | None:
    """Every block's predictions, joined in row order on rank 0 (``None`` elsewhere).

    Blocks travel one message each (of bounded size), each rank's in block order.
    """
    import numpy as np

    rank, size = comm.Get_rank(), comm.Get_size()
    owners = comm.gather(sorted(results), root=0)
    if rank != 0:
        for b in sorted(results):
            comm.send(results.pop(b), dest=0, tag=11)
        return None
    for r in range(1, size):
        for b in owners[r]:
            results[b] = comm.recv(source=r, tag=11)
    if n_blocks == 0:
        return [o.empty() for o in outputs]
    return [np.concatenate([results[b][m] for b in range(n_blocks)], axis=0)
            for m in range(len(outputs))]


# --------------------------------------------------------------------------------------------
# Files: the job behind ``hpcml predict``


@dataclass
class PredictJob:
    """Everything checked before any rank starts: models, input, output, columns."""

    model_paths: list[str]
    models: list[Any]
    names: list[str]
    method: str
    input: str
    out: str
    reader: Any
    outputs: list[Output]
    block_rows: int | None = None
    columns: list[str] = field(default_factory=list)


def prepare_job(
    model_paths: Sequence[str],
    input: str,
    out: str,
    method: str = "predict",
    force: bool = False,
    block_rows: int | None = None,
) -> PredictJob:
    """Load the models, open the input and check everything a run needs; write nothing.

    Raises
    ------
    UsageError
        A missing or unreadable file, a model without ``method``, a column count that does
        not match a model, an output that exists (without ``force``) or has an unknown type.
    """
    import joblib

    from hpcml.batch.readers import open_reader
    from hpcml.batch.writers import check_columns, check_output

    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    names = model_names(model_paths)
    for p in model_paths:
        if not Path(p).is_file():
            raise UsageError(f"model file not found: {p}")
    reader = open_reader(input)  # cheap checks first: loading a model imports scikit-learn
    check_output(out, input, force)
    models = []
    for p, name in zip(model_paths, names, strict=True):
        try:
            est = joblib.load(p)
        except Exception as exc:  # a user's file: one line, no traceback
            raise UsageError(f"{p}: cannot load the model: {type(exc).__name__}: {exc}") from None
        check_method(est, method, f"{name} ({p})")
        check_features(est, f"{name} ({p})", reader.n_features, reader.columns, input)
        models.append(est)
    probe = reader.head()
    if probe.shape[0] == 0:
        import numpy as np

        probe = np.zeros((1, reader.n_features), dtype=probe.dtype)
    outputs = [describe_output(est, method, name, probe)
               for est, name in zip(models, names, strict=True)]
    job = PredictJob(list(model_paths), models, names, method, input, out, reader, outputs,
                     block_rows)
    job.columns = [c for o in outputs for c in o.columns]
    check_columns(out, job.columns, [o.dtype for o in outputs for _ in range(o.n_cols)])
    return job


def predict_file(
    job: PredictJob,
    comm: Any = None,
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run ``job`` on every rank of ``comm`` (``None``: this process alone, no MPI).

    Collective. Each rank claims blocks, reads each block once, runs every model on it and
    writes its predictions at the block's rows of the output (written under a temporary name,
    renamed by rank 0 when complete).

    Returns
    -------
    dict
        ``rows``, ``columns``, ``blocks``, ``block_rows`` (an estimate for a .csv), ``seconds``
        and ``out`` (the same on every rank, but ``seconds``).

    Raises
    ------
    UsageError
        On every rank, when a rank found bad input in a block (e.g. a value that is not a
        number); nothing is written then.
    """
    import numpy as np

    from hpcml.batch.writers import open_writer
    from hpcml.core.threads import thread_budget, threads_per_rank

    comm = _SelfComm() if comm is None else comm
    size = comm.Get_size()
    start = time.time()
    reader, outputs, models = job.reader, job.outputs, job.models
    if threads is None:
        threads, _ = threads_per_rank(size)
    out_bytes = sum(o.n_cols * max(o.dtype.itemsize, 8) for o in outputs)
    rows = job.block_rows or default_block_rows(
        reader.row_bytes + out_bytes, reader.n_rows or reader.estimated_rows(), size
    )
    blocks = reader.blocks(rows)
    writer = open_writer(job.out, job.columns, outputs, reader.n_rows, comm)

    def work(b: int) -> int:
        block = blocks[b]
        X = reader.read(block)
        n = int(X.shape[0])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            preds = [o.as_2d(getattr(est, job.method)(X), n) if n else
                     np.empty((0, o.n_cols), dtype=o.dtype)
                     for est, o in zip(models, outputs, strict=True)]
        writer.write(block, preds)
        return n if reader.n_rows is not None else 1

    total = reader.n_rows if reader.n_rows is not None else len(blocks)
    bar = _progress(comm, progress, total, "rows" if reader.n_rows is not None else "blocks")
    from hpcml.engines.mpi.world import abort_on_error

    with abort_on_error(comm):  # a world of one (also _SelfComm): the error just propagates
        with thread_budget(threads), _counter(comm, bar) as counter:
            _, failed = _claim_blocks(counter, len(blocks), work)
        errors = [e for e in comm.allgather(failed) if e is not None]
        if errors:
            writer.abort()
        else:
            n_rows = writer.finish()
    if errors:  # on every rank, after the others know: nothing was written
        raise UsageError(errors[0])
    return {"out": job.out, "rows": n_rows, "columns": list(job.columns), "blocks": len(blocks),
            "block_rows": rows, "seconds": time.time() - start}
