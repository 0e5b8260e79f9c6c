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

resume and wall time:
  Every finished fit goes to DIR/journal at once. Running the same command again resumes:
  only the missing fits run, and the results equal an uninterrupted run. SIGTERM or SIGUSR1
  (sbatch --signal=B:USR1@120) stops every rank between fits, keeps the journal and exits
  with status 75; run again (the Slurm templates requeue) to finish. 'hpcml collect DIR'
  shows the results so far at any time.

exit status: 0 done, 1 a failure (traceback shown with rank and host), 2 bad input,
             75 stopped by SIGTERM/SIGUSR1 with the journal saved (run again to resume).
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
    run.add_argument(
        "--resume", action="store_true",
        help="continue from the journal in --out (the default when it holds a journal of the "
        "same spec and data; a journal of another spec or data is refused)",
    )
    run.add_argument(
        "--force", action="store_true",
        help="discard what --out holds (results, journal) and start over",
    )
    run.add_argument(
        "--fit-timeout", type=_positive_float, metavar="SECONDS",
        help="stop a fit after SECONDS and score it as failed (overrides the spec's fit_timeout)",
    )
    run.add_argument(
        "--shard", type=_shard, metavar="I/N",
        help="run only shard I of N (0-based) of the fit tasks, balanced by estimated cost; "
        "merge the shards with 'hpcml collect DIR'",
    )
    run.add_argument("--no-progress", action="store_true", help="do not show progress")

    col = sub.add_parser(
        "collect",
        help="rebuild cv_results.csv from the journal (partial results, or merge shards)",
        description="Rebuild DIR/cv_results.csv from DIR/journal at any time: unfinished "
        "candidates are marked in a 'finished_splits' column and their means are over the "
        "finished folds. When every fit is done, also write best.json, refit the best model "
        "into best_model.joblib and write run.json.",
    )
    col.add_argument("out", metavar="DIR", help="the --out folder of 'hpcml run'")
    col.add_argument("--no-refit", action="store_true", help="do not refit the best model")

    from .predict_cli import add_parser as add_predict_parser

    add_predict_parser(sub)

    info = sub.add_parser(
        "info", help="show the MPI library, launcher and thread layout a run would use"
    )
    info.add_argument("-n", "--ranks", type=_positive_int, metavar="P", help="ranks to plan for")
    info.add_argument("--threads-per-rank", type=_positive_int, metavar="T")

    plan = sub.add_parser(
        "plan",
        help="show what a run of SPEC would do (tasks, layout, estimated cost), fitting nothing",
        description="Load SPEC and its data, and print the task count, the rank and thread "
        "layout, the estimated cost and the lower bound on the run time, before any fit runs. "
        "Estimates come from the model kinds and the data size: expect a factor of 2-3 either way.",
    )
    plan.add_argument("spec", metavar="SPEC")
    plan.add_argument("-n", "--ranks", type=_positive_int, metavar="P", help="ranks to plan for")
    plan.add_argument("--threads-per-rank", type=_positive_int, metavar="T")

    from .slurm_cli import add_parsers as add_slurm_parsers

    add_slurm_parsers(sub)
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
        if args.command == "predict":
            from .predict_cli import run as run_predict

            return run_predict(args)
        if args.command == "collect":
            return _cmd_collect(args)
        if args.command == "plan":
            return _cmd_plan(args)
        if args.command in ("slurm", "submit"):
            from .slurm_cli import dispatch as slurm_dispatch

            return slurm_dispatch(args)
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return 0  # pragma: no cover


def _cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    from .launch import (
        run_ranks,
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
    # Not under a launcher: catch what is cheap to catch before starting any rank. The ranks
    # check the whole spec (estimators, grids, scoring) collectively and exit 2 on bad input;
    # doing it here too would import scikit-learn twice in a row (~2 s).
    from .outputs import check_out_dir
    from .spec import precheck_spec

    precheck_spec(args.spec)
    check_out_dir(out, args.force)
    n = args.ranks or _default_ranks()
    if n == 1:
        return _run_rank(args, out)
    from .threads import threads_per_rank, usable_cores

    threads, _ = threads_per_rank(min(n, usable_cores()), cli=args.threads_per_rank)
    rank_argv = [a for a in _strip_ranks(argv)]
    if args.out is None:
        rank_argv += ["--out", out]
    report = _LauncherReport()
    code = run_ranks(n, rank_argv, threads, on_stdout_line=report.feed)
    report.explain(code, out, n)
    return code


def _run_rank(args: argparse.Namespace, out: str) -> int:
    from . import _mpi
    from .signals import EXIT_REQUEUE, StopFlag, ignore_stop_signals, install_stop_handlers

    # Before MPI starts: a wall-time signal during start-up must not kill the rank.
    stop = StopFlag()
    install_stop_handlers(stop)
    comm, threads = _mpi.join_world(args.threads_per_rank)
    rank = comm.Get_rank()
    with _mpi.abort_on_error(comm):
        try:
            from .experiment import run_experiment

            result = run_experiment(
                args.spec, out, comm=comm if comm.Get_size() > 1 else None,
                threads=threads, progress=not args.no_progress, force=args.force,
                shard=args.shard, fit_timeout=args.fit_timeout, stop=stop,
            )
        except UsageError as exc:
            if rank == 0:
                _error(str(exc))
            return EXIT_USAGE
        finally:
            ignore_stop_signals()  # a late one must not turn the exit status into a death
    if result.interrupted and not result.complete:
        if rank == 0:
            sys.stderr.write(
                f"hpcml: stopped by {stop.signal_name or 'a stop request'}; every finished fit "
                f"is in {out}/journal. Run the same command again to resume "
                f"(exit status {EXIT_REQUEUE}).\n"
            )
        return EXIT_REQUEUE
    if rank == 0:
        _summary(result)
    return 0


class _LauncherReport:
    """Reads mpiexec's "PID 1234 RUNNING AT host" report to name the rank that died."""

    def __init__(self) -> None:
        self.dead: list[tuple[int, str, str]] = []
        self._pid: tuple[int, str] | None = None

    def feed(self, line: str) -> None:
        import re

        m = re.search(r"PID (\d+) RUNNING AT (\S+)", line)
        if m:
            self._pid = (int(m.group(1)), m.group(2))
        m = re.search(r"EXIT CODE: (\d+)", line)
        if m and self._pid is not None:
            self.dead.append((*self._pid, m.group(1)))
            self._pid = None

    def explain(self, code: int, out: str, n: int) -> None:
        if code in (0, EXIT_USAGE, 75) or not self.dead:
            return
        from .journal import find_rank

        for pid, host, exit_code in self.dead:
            who = find_rank(out, pid, host)
            name = f"rank {who['rank']} of {n}" if who else "a rank"
            how = {"9": "killed by SIGKILL (out of memory, or killed by hand?)",
                   "11": "a segmentation fault"}.get(exit_code, f"exit code {exit_code}")
            _error(
                f"{name} (pid {pid} on {host}) died: {how}. The other ranks were stopped; "
                f"every finished fit is in {out}/journal: run the same command again to resume"
            )


def _cmd_collect(args: argparse.Namespace) -> int:
    from .collect import collect

    info = collect(args.out, refit=not args.no_refit)
    state = "complete" if info["complete"] else "partial"
    print(f"{args.out}/cv_results.csv: {info['done']}/{info['total']} fits ({state})")
    if info["best"] is not None:
        best = info["best"]
        scores = ", ".join(f"{k}={v:.6g}" for k, v in best["scores"].items())
        print(f"best: {best['model']} {best['params']} ({scores})")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from .plan import describe_plan

    print(describe_plan(args.spec, ranks=args.ranks or _default_ranks(),
                        threads=args.threads_per_rank))
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
    if not result.complete:
        shard = result.run.get("shard")
        print(f"shard {shard} done; merge the shards with: hpcml collect {result.out}")
        return
    print_best(result.best)
    if result.out is not None:
        print(f"results: {result.out}/cv_results.csv ({len(result.cv_results['params'])} candidates)")


def print_best(best: dict | None) -> None:
    """``best: model {params} (metric=score, ...)`` on standard output."""
    if best is not None:
        scores = ", ".join(f"{k}={v:.6g}" for k, v in best["scores"].items())
        print(f"best: {best['model']} {best['params']} ({scores})")


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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


def _shard(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    if not sep or not i.strip().isdigit() or not n.strip().isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"expected I/N like 0/4, got {text!r}")
    if not 0 <= int(i) < int(n):
        raise argparse.ArgumentTypeError(f"shard I/N needs 0 <= I < N, got {text!r}")
    return int(i), int(n)


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
