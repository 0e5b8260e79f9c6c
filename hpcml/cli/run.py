"""``hpcml run SPEC``: run an experiment over MPI ranks (starting them itself if need be), or
on another engine (``--engine loky|dask|ray|spark``) from this one process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hpcml.cli.common import (
    default_ranks,
    error,
    positive_float,
    positive_int,
    print_best,
    shard,
    strip_ranks,
)
from hpcml.errors import EXIT_USAGE, UsageError
from hpcml.run.rank import Rank, rank_main
from hpcml.run.signals import EXIT_REQUEUE

__all__ = ["add_parser", "run", "RUN_EPILOG"]

RUN_EPILOG = """\
launching:
  hpcml run spec.yaml                  starts itself under the installed mpiexec, one rank per
                                       usable core (SLURM_NTASKS inside a Slurm allocation)
  hpcml run -n 4 spec.yaml             four ranks
  mpiexec -n 8 hpcml run spec.yaml     under your own launcher (also: srun --mpi=pmi2 / pmix)

other engines (the same tasks, journal, resume and outputs; only where the fits run changes):
  hpcml run spec.yaml --engine loky    worker processes on this machine, no MPI at all
  hpcml run spec.yaml --engine dask [--scheduler-address tcp://host:8786]   (hpcml[dask])
  hpcml run spec.yaml --engine ray [--address auto]                          (hpcml[ray])
  hpcml run spec.yaml --engine spark [--master spark://host:7077]            (hpcml[spark])

searches (in the spec; README, 'The search'; examples/halving.yaml, asha.yaml, nested.yaml):
  search: {strategy: random, n_iter: 60, random_state: 0}   grid (default), random, halving or
                                      asha; at the top level or per model; distributions
                                      written as calls: C: loguniform(1e-3, 1e2)
  outer_cv: {splitter: StratifiedKFold, n_splits: 5}        nested CV (nested_cv.csv)

outputs in --out:
  cv_results.csv     one row per (model, candidate): scikit-learn's cv_results_ columns + model
                     (+ iter and n_resources for halving and asha)
  best.json          best model, params and mean scores (by 'refit'; halving: of the last rung)
  nested_cv.csv      with outer_cv: each outer fold's choice and its test scores
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


def add_parser(sub: Any) -> None:
    """Add ``hpcml run``."""
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
        "-n", "--ranks", type=positive_int, metavar="P",
        help="start P MPI ranks with the installed mpiexec (default: usable cores); "
        "ignored when already started by mpiexec/srun",
    )
    run.add_argument(
        "--threads-per-rank", type=positive_int, metavar="T",
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
        "--fit-timeout", type=positive_float, metavar="SECONDS",
        help="stop a fit after SECONDS and score it as failed (overrides the spec's fit_timeout)",
    )
    run.add_argument(
        "--shard", type=shard, metavar="I/N",
        help="run only shard I of N (0-based) of the fit tasks, balanced by estimated cost; "
        "merge the shards with 'hpcml collect DIR'",
    )
    run.add_argument("--no-progress", action="store_true", help="do not show progress")
    talk = run.add_mutually_exclusive_group()
    talk.add_argument("-v", "--verbose", action="store_true",
                      help="log every fit on every rank (rank and host in each line)")
    talk.add_argument("-q", "--quiet", action="store_true",
                      help="only warnings and errors: no progress, no summary")
    eng = run.add_argument_group("engines (where the fits run; see README, 'Other engines')")
    eng.add_argument(
        "--engine", default="mpi", metavar="NAME",
        help="mpi (default), loky, dask, ray or spark; the engines other than mpi run in this "
        "one process and farm the fits out (-n: workers of their local cluster)",
    )
    eng.add_argument("--scheduler-address", metavar="ADDR",
                     help="dask: a running scheduler (tcp://host:8786); default: a LocalCluster")
    eng.add_argument("--address", metavar="ADDR",
                     help="ray: a running cluster ('auto', ray://host:10001); default: ray.init()")
    eng.add_argument("--master", metavar="URL",
                     help="spark: a master URL (spark://host:7077); default: local[N]")


def run(args: argparse.Namespace, argv: list[str]) -> int:
    from hpcml.run.launch import (
        run_ranks,
        srun_message,
        srun_tasks_without_mpi,
        under_mpi_launcher,
    )

    out = args.out or str(Path("results") / Path(args.spec).stem)
    if args.engine != "mpi" or args.scheduler_address or args.address or args.master:
        return _run_engine(args, out)
    tasks = srun_tasks_without_mpi()
    if tasks:
        raise UsageError(srun_message(tasks))
    if under_mpi_launcher():
        return _run_rank(args, out)
    stop = _early_stop()  # a stop signal before the ranks start: exit 75, nothing started
    # Not under a launcher: catch what is cheap to catch before starting any rank. The ranks
    # check the whole spec (estimators, grids, scoring) collectively and exit 2 on bad input;
    # doing it here too would import scikit-learn twice in a row (~2 s).
    from hpcml.core.prefix_cache import prefix_cache_bytes
    from hpcml.run.lock import check_unlocked
    from hpcml.run.outputs import check_out_dir
    from hpcml.spec.schema import precheck_spec

    precheck_spec(args.spec)
    prefix_cache_bytes()  # $HPCML_PREFIX_CACHE, checked before any rank starts
    check_out_dir(out, args.force)
    check_unlocked(out, args.shard)  # another run on this --out: refuse before starting any rank
    n = args.ranks or default_ranks()
    if stop():
        sys.stderr.write(f"hpcml: stopped by {stop.signal_name} before the ranks started; run "
                         f"the same command again (exit status {EXIT_REQUEUE}).\n")
        return EXIT_REQUEUE
    if n == 1:
        return _run_rank(args, out)
    from hpcml.core.threads import threads_per_rank, usable_cores

    threads, _ = threads_per_rank(min(n, usable_cores()), cli=args.threads_per_rank)
    rank_argv = strip_ranks(argv)
    if args.out is None:
        rank_argv += ["--out", out]
    report = _LauncherReport()
    code = run_ranks(n, rank_argv, threads, on_stdout_line=report.feed)
    from hpcml.run.signals import ignore_stop_signals

    ignore_stop_signals()  # the run is over: a late stop signal must not kill the launcher
    if report.stopped_at_start(code):
        sys.stderr.write(f"hpcml: stopped by a stop signal while the ranks started; run the "
                         f"same command again (exit status {EXIT_REQUEUE}).\n")
        return EXIT_REQUEUE
    report.explain(code, out, n)
    return 128 - code if code < 0 else code  # mpiexec killed by a signal: 128 + its number


def _early_stop() -> Any:
    """The launcher's stop flag, set by SIGTERM/SIGUSR1 until mpiexec takes over."""
    from hpcml.run.signals import EARLY, catch_early

    catch_early()  # (already done by python -m hpcml; not by the hpcml script)
    return EARLY


def _run_rank(args: argparse.Namespace, out: str) -> int:
    def work(rank: Rank) -> int:
        from hpcml.run.experiment import run_experiment
        from hpcml.run.watch import watch_run

        verbosity = 1 if args.verbose else -1 if args.quiet else 0
        with watch_run(out, rank.rank, rank.size, verbosity=verbosity, force=args.force,
                       shard=args.shard) as watch:
            result = run_experiment(
                args.spec, out, comm=rank.comm_or_none, threads=rank.threads,
                progress=not (args.no_progress or args.quiet), force=args.force,
                shard=args.shard, fit_timeout=args.fit_timeout, stop=rank.stop,
                observers=watch.observers,
            )
            watch.done(result, stop_signal=rank.stop.signal_name)
        if result.interrupted and not result.complete:
            if rank.rank == 0:
                sys.stderr.write(
                    f"hpcml: stopped by {rank.stop.signal_name or 'a stop request'}; every "
                    f"finished fit is in {out}/journal. Run the same command again to resume "
                    f"(exit status {EXIT_REQUEUE}).\n"
                )
            return EXIT_REQUEUE
        if rank.rank == 0:
            _summary(result)
        return 0

    return rank_main(work, threads=args.threads_per_rank)


#: The options of one engine only: option name -> (engine, keyword of its factory).
_ENGINE_OPTIONS = {"scheduler_address": ("dask", "scheduler_address"),
                   "address": ("ray", "address"), "master": ("spark", "master")}


def _run_engine(args: argparse.Namespace, out: str) -> int:
    """``--engine`` other than mpi: the whole run in this process, no MPI, no mpiexec."""
    from hpcml.errors import print_error
    from hpcml.run.launch import under_mpi_launcher
    from hpcml.run.signals import STOP_SIGNALS, StopFlag, ignore_stop_signals, install_stop_handlers

    stop = StopFlag()
    install_stop_handlers(stop, STOP_SIGNALS)  # the engine keeps them (farm.keep_signal_handlers)
    engine = None
    try:
        options: dict[str, Any] = {}
        for dest, (name, key) in _ENGINE_OPTIONS.items():
            value = getattr(args, dest)
            if value is not None:
                if args.engine != name:
                    raise UsageError(f"--{dest.replace('_', '-')} is an option of --engine "
                                     f"{name}, not of --engine {args.engine}")
                options[key] = value
        if under_mpi_launcher():
            raise UsageError(f"--engine {args.engine} runs in one process and farms the fits "
                             "out: start it without mpiexec/srun --mpi")
        from hpcml.core.prefix_cache import prefix_cache_bytes
        from hpcml.engines import get_engine
        from hpcml.run.outputs import check_out_dir
        from hpcml.spec.schema import precheck_spec

        precheck_spec(args.spec)
        prefix_cache_bytes()
        check_out_dir(out, args.force)
        engine = get_engine(args.engine, workers=args.ranks, threads=args.threads_per_rank,
                            **options)
        from hpcml.run.experiment import run_experiment

        result = run_experiment(
            args.spec, out, engine=engine, progress=not args.no_progress, force=args.force,
            shard=args.shard, fit_timeout=args.fit_timeout, stop=stop,
        )
    except UsageError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    finally:
        if engine is not None:
            engine.close()
        ignore_stop_signals(STOP_SIGNALS)
    if result.interrupted and not result.complete:
        sys.stderr.write(
            f"hpcml: stopped by {stop.signal_name or 'a stop request'}; every finished fit is "
            f"in {out}/journal. Run the same command again to resume (exit status "
            f"{EXIT_REQUEUE}).\n"
        )
        return EXIT_REQUEUE
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

    def stopped_at_start(self, code: int) -> bool:
        """Whether ranks died of SIGTERM/SIGUSR1 itself: it came before they could catch it
        (the first milliseconds of a rank), so the run was stopped, not broken."""
        import signal

        stop = {str(int(signal.SIGTERM)), str(int(signal.SIGUSR1))}
        return code not in (0, EXIT_USAGE) and bool(self.dead) and all(
            c in stop for *_, c in self.dead)

    def explain(self, code: int, out: str, n: int) -> None:
        if code < 0:
            import signal

            error(f"mpiexec was killed by {signal.Signals(-code).name} (out of memory, or "
                  f"killed by hand?); its ranks were stopped. Every finished fit is in {out}/"
                  "journal: run the same command again to resume")
            return
        if code in (0, EXIT_USAGE, EXIT_REQUEUE) or not self.dead:
            return
        from hpcml.run.journal import find_rank

        for pid, host, exit_code in self.dead:
            who = find_rank(out, pid, host)
            name = f"rank {who['rank']} of {n}" if who else "a rank"
            how = {"9": "killed (out of memory?) by SIGKILL",
                   "11": "a segmentation fault"}.get(exit_code, f"exit code {exit_code}")
            error(
                f"{name} (pid {pid} on {host}) died: {how}. The other ranks were stopped; "
                f"every finished fit is in {out}/journal: run the same command again to resume"
            )


def _summary(result: Any) -> None:
    if not result.complete:
        shard = result.run.get("shard")
        print(f"shard {shard} done; merge the shards with: hpcml collect {result.out}")
        return
    print_best(result.best)
    if result.out is not None:
        print(f"results: {result.out}/cv_results.csv ({len(result.cv_results['params'])} candidates)")
        if result.best and result.best.get("nested"):
            print(f"nested CV: {result.out}/nested_cv.csv")
