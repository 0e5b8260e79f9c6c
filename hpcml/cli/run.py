"""``hpcml run SPEC``: run an experiment over MPI ranks (starting them itself if need be)."""

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


def run(args: argparse.Namespace, argv: list[str]) -> int:
    from hpcml.run.launch import (
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
    stop = _early_stop()  # a stop signal before the ranks start: exit 75, nothing started
    # Not under a launcher: catch what is cheap to catch before starting any rank. The ranks
    # check the whole spec (estimators, grids, scoring) collectively and exit 2 on bad input;
    # doing it here too would import scikit-learn twice in a row (~2 s).
    from hpcml.run.lock import check_unlocked
    from hpcml.run.outputs import check_out_dir
    from hpcml.spec.schema import precheck_spec

    precheck_spec(args.spec)
    check_out_dir(out, args.force)
    check_unlocked(out)  # another run on this --out: refuse before starting any rank
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

        result = run_experiment(
            args.spec, out, comm=rank.comm_or_none, threads=rank.threads,
            progress=not args.no_progress, force=args.force, shard=args.shard,
            fit_timeout=args.fit_timeout, stop=rank.stop,
        )
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
