"""``hpcml predict``: saved models score a large input, its rows spread over MPI ranks.

Like ``hpcml run``: it starts itself under the installed ``mpiexec`` (``-n P``), or joins the
world of the launcher that started it. Every check (models, method, input, column count,
output) runs before any rank starts, and again on the ranks, collectively: on bad input every
rank exits with status 2 and only rank 0 prints the one-line error.
"""

from __future__ import annotations

import argparse
from typing import Any

from hpcml.batch.predict import METHODS
from hpcml.cli.common import default_ranks, positive_int
from hpcml.errors import UsageError
from hpcml.run.rank import Rank, rank_main

__all__ = ["add_parser", "run"]

PREDICT_EPILOG = """\
examples:
  hpcml predict results/qs/best_model.joblib big.npy --out preds.npy
  hpcml predict -n 8 a.joblib b.joblib rows.csv --out proba.csv --method predict_proba
  mpiexec -n 16 hpcml predict model.joblib rows.parquet --out preds.parquet

input and output: .npy (2-D numbers), .csv (a header line naming the columns, then numbers),
.parquet (pip install 'hpcml[parquet]'). The output has the input's rows in the same order
and one column per model (predict), or per model and class (predict_proba):
  <model file stem>            predict, binary decision_function
  <model file stem>:<class>    predict_proba, multiclass decision_function
(model0, model1, ... when two model files have the same stem). An .npy output is one 2-D
array with the columns in that order. The names are printed at the end.

memory: each rank holds one block of rows at a time (default: 64 MiB of input per block,
at least 4 blocks per rank), whatever the size of the input; --block-rows sets it.

exit status: 0 done, 1 a failure (traceback shown with rank and host), 2 bad input.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hpcml predict`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser(
        "predict",
        help="predict a large input with saved models (rows spread over MPI ranks)",
        description="Predict INPUT with one or more saved models (joblib files), writing one "
        "column per model (or per model and class) to OUTPUT in the input's row order.",
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="fitted model saved with joblib, e.g. results/qs/best_model.joblib")
    p.add_argument("input", metavar="INPUT", help="rows to predict: .npy, .csv or .parquet")
    p.add_argument("--out", "-o", required=True, metavar="OUTPUT",
                   help="where to write the predictions: .npy, .csv or .parquet")
    p.add_argument("--method", choices=METHODS, default="predict",
                   help="model method to call (default: predict)")
    p.add_argument(
        "-n", "--ranks", type=positive_int, metavar="P",
        help="start P MPI ranks with the installed mpiexec (default: usable cores); "
        "ignored when already started by mpiexec/srun",
    )
    p.add_argument("--block-rows", type=positive_int, metavar="N",
                   help="rows per block (default: from a 64 MiB memory budget per block)")
    p.add_argument(
        "--threads-per-rank", type=positive_int, metavar="T",
        help="BLAS/OpenMP/joblib threads per rank (default: SLURM_CPUS_PER_TASK, "
        "OMP_NUM_THREADS, else cores on the node / ranks on the node)",
    )
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.add_argument("--no-progress", action="store_true", help="do not show progress")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``hpcml predict``; returns the exit status."""
    from hpcml.run.launch import srun_message, srun_tasks_without_mpi, under_mpi_launcher

    tasks = srun_tasks_without_mpi()
    if tasks:
        raise UsageError(srun_message(tasks))
    if under_mpi_launcher():
        return _run_rank(args)
    # Not under a launcher: check everything before starting any rank.
    from hpcml.core.threads import threads_per_rank, usable_cores

    job = _prepare(args)
    n = args.ranks or default_ranks()
    if n == 1:
        from hpcml.batch.predict import predict_file

        threads, _ = threads_per_rank(1, cli=args.threads_per_rank)
        _summary(predict_file(job, None, threads=threads, progress=not args.no_progress))
        return 0
    del job  # the ranks load the models themselves
    from hpcml.run.launch import run_ranks

    threads, _ = threads_per_rank(min(n, usable_cores()), cli=args.threads_per_rank)
    return run_ranks(n, rank_argv(args), threads)


def rank_argv(args: argparse.Namespace) -> list[str]:
    """The arguments each rank gets: these options without ``-n``.

    Examples
    --------
    >>> ns = argparse.Namespace(models=["m.joblib"], input="x.npy", out="y.npy",
    ...     method="predict", block_rows=None, threads_per_rank=2, force=True, no_progress=False)
    >>> rank_argv(ns)
    ['predict', 'm.joblib', 'x.npy', '--out', 'y.npy', '--method', 'predict', '--threads-per-rank', '2', '--force']
    """
    argv = ["predict", *args.models, args.input, "--out", args.out, "--method", args.method]
    if args.block_rows:
        argv += ["--block-rows", str(args.block_rows)]
    if args.threads_per_rank:
        argv += ["--threads-per-rank", str(args.threads_per_rank)]
    if args.force:
        argv.append("--force")
    if args.no_progress:
        argv.append("--no-progress")
    return argv


def _prepare(args: argparse.Namespace) -> Any:
    from hpcml.batch.predict import prepare_job

    return prepare_job(args.models, args.input, args.out, method=args.method, force=args.force,
                       block_rows=args.block_rows)


def _run_rank(args: argparse.Namespace) -> int:
    def work(rank: Rank) -> int:
        from hpcml.batch.predict import predict_file
        from hpcml.engines import open_world

        world = open_world(rank.comm)
        try:
            job = world.agree(lambda: _prepare(args))  # every rank loads the models
            summary = predict_file(job, rank.comm_or_none, threads=rank.threads,
                                   progress=not args.no_progress)
        finally:
            world.close()
        if rank.rank == 0:
            _summary(summary)
        return 0

    return rank_main(work, threads=args.threads_per_rank, stop_signals=())


def _summary(summary: dict[str, Any]) -> None:
    cols = summary["columns"]
    shown = ", ".join(cols[:12]) + (f", ... ({len(cols)} in all)" if len(cols) > 12 else "")
    print(f"wrote {summary['out']}: {summary['rows']} rows x {len(cols)} columns ({shown}) "
          f"in {summary['seconds']:.1f}s")
