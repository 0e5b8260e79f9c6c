"""``hpcml`` command line. Imports stay lazy so a rank can size thread pools before numpy loads."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import EXIT_USAGE, UsageError

__all__ = ["main", "build_parser"]

DESCRIPTION = """\
Run scikit-learn model selection (a K-fold x model x hyperparameter grid) over MPI ranks.

Every (model, candidate, fold) is one fit task; tasks are spread over all ranks, scores are
gathered into scikit-learn's cv_results_ format, and the best model is refit and saved.
'hpcml run' starts itself under the installed mpiexec; it also runs under your own
'mpiexec -n P' or 'srun --mpi=pmi2'. See 'hpcml run --help'.
"""

RUN_EPILOG = """\
launching:
  hpcml run spec.yaml                  starts itself under the installed mpiexec, one rank per
                                       usable core (SLURM_NTASKS inside a Slurm allocation)
  hpcml run -n 4 spec.yaml             four ranks
  mpiexec -n 8 hpcml run spec.yaml     under your own launcher (also: srun --mpi=pmi2 / pmix)

outputs in --out:
  cv_results.csv     one row per (model, candidate): scikit-learn's cv_results_ columns + model
  best.json          best model, params and mean scores (by 'refit')
  best_model.joblib  the best estimator refit on all data (a pickle: load only trusted files)
  run.json           ranks, hosts, threads per rank, versions, wall time, spec hash

exit status: 0 done, 1 a failure (traceback shown with rank and host), 2 bad input.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hpcml``."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="hpcml", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"hpcml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run an experiment spec (grid search over MPI ranks)",
        description="Run the experiment described by SPEC (a YAML file).",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("spec", metavar="SPEC", help="experiment spec (YAML), e.g. examples/quickstart.yaml")
    run.add_argument(
        "--out", "-o", metavar="DIR",
        help="folder for the results (default: results/<spec name>)",
    )
    run.add_argument(
        "-n", "--ranks", type=_positive_int, metavar="P",
        help="start P MPI ranks with the installed mpiexec (default: usable cores); "
        "ignored when already started by mpiexec/srun",
    )
    run.add_argument(
        "--threads-per-rank", type=_positive_int, metavar="T",
        help="BLAS/OpenMP/joblib threads per rank (default: SLURM_CPUS_PER_TASK, "
        "OMP_NUM_THREADS, else cores on the node / ranks on the node)",
    )
    run.add_argument("--force", action="store_true", help="overwrite the results of a finished run in --out")
    run.add_argument("--no-progress", action="store_true", help="do not show progress")

    info = sub.add_parser(
        "info", help="show the MPI library, launcher and thread layout a run would use"
    )
    info.add_argument("-n", "--ranks", type=_positive_int, metavar="P", help="ranks to plan for")
    info.add_argument("--threads-per-rank", type=_positive_int, metavar="T")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hpcml`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args, argv)
        if args.command == "info":
            return _cmd_info(args)
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return 0  # pragma: no cover


def _cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    from .launch import (
        find_mpiexec,
        mpiexec_command,
        srun_message,
        srun_tasks_without_mpi,
        under_mpi_launcher,
    )

    out = args.out or str(Path("results") / Path(args.spec).stem)
    tasks = srun_tasks_without_mpi()
    if tasks:
        raise UsageError(srun_message(tasks))
    if under_mpi_launcher():
        return _run_rank(args, out)
    # Not under a launcher: check everything we can before starting any rank.
    from .outputs import check_out_dir
    from .spec import load_spec

    spec = load_spec(args.spec)
    if spec.data.path is not None and not Path(spec.data.path).exists():
        raise UsageError(f"{args.spec}: data.path: data file not found: {spec.data.path}")
    check_out_dir(out, args.force)
    n = args.ranks or _default_ranks()
    if n == 1:
        return _run_rank(args, out)
    from ._proc import run_foreground
    from .threads import thread_env, threads_per_rank, usable_cores

    threads, _ = threads_per_rank(min(n, usable_cores()), cli=args.threads_per_rank)
    env = {**os.environ, **thread_env(threads)}
    env.setdefault("UCX_LOG_LEVEL", "error")  # MPICH's UCX netmod warns on benign exits
    rank_argv = [a for a in _strip_ranks(argv)]
    if args.out is None:
        rank_argv += ["--out", out]
    return run_foreground(mpiexec_command(find_mpiexec(), n, rank_argv), env=env)


def _run_rank(args: argparse.Namespace, out: str) -> int:
    from . import _mpi
    from .threads import thread_env, threads_per_rank

    comm = _mpi.world()
    rank = comm.Get_rank()
    try:
        _mpi.check_launch()
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    layout = _mpi.node_layout(comm)
    threads, _ = threads_per_rank(layout["ranks_on_node"], cli=args.threads_per_rank)
    os.environ.update(thread_env(threads))  # before numpy is imported in this rank
    with _mpi.abort_on_error(comm):
        try:
            from .experiment import run_experiment

            result = run_experiment(
                args.spec, out, comm=comm if comm.Get_size() > 1 else None,
                threads=threads, progress=not args.no_progress, force=args.force,
            )
        except UsageError as exc:
            if rank == 0:
                _error(str(exc))
            return EXIT_USAGE
    if rank == 0:
        _summary(result)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .launch import find_mpiexec, under_mpi_launcher
    from .threads import threads_per_rank, usable_cores

    cores = usable_cores()
    n = args.ranks or _default_ranks()
    threads, source = threads_per_rank(min(n, cores), cli=args.threads_per_rank)
    try:
        mpiexec = find_mpiexec()
    except UsageError as exc:
        mpiexec = f"not found ({exc})"
    from . import _mpi

    print(f"MPI library:       {_mpi.mpi_library_version()}")
    print(f"mpiexec:           {mpiexec}")
    print(f"under a launcher:  {'yes' if under_mpi_launcher() else 'no'}")
    print(f"usable cores:      {cores}")
    print(f"ranks:             {n}")
    print(f"threads per rank:  {threads} (from {source})")
    return 0


def _summary(result) -> None:
    best = result.best
    if best is not None:
        scores = ", ".join(f"{k}={v:.6g}" for k, v in best["scores"].items())
        print(f"best: {best['model']} {best['params']} ({scores})")
    if result.out is not None:
        print(f"results: {result.out}/cv_results.csv ({len(result.cv_results['params'])} candidates)")


def _default_ranks() -> int:
    from .threads import usable_cores

    ntasks = os.environ.get("SLURM_NTASKS", "")
    if ntasks.isdigit() and int(ntasks) > 0:
        return int(ntasks)
    return usable_cores()


def _strip_ranks(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("-n", "--ranks"):
            skip = True
            continue
        if a.startswith("--ranks=") or (a.startswith("-n") and a[2:].isdigit()):
            continue
        out.append(a)
    return out


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _error(message: str) -> None:
    sys.stderr.write(f"hpcml: error: {message}\n")
    sys.stderr.flush()
