"""Run an experiment as a submitit job: ``hpcml.submit(spec, executor=...)`` → a handle.

On Slurm the job is one ``srun --mpi=pmi2`` step of ``nodes × ranks_per_node`` tasks: every
task is an MPI rank and runs :func:`hpcml.run_experiment`. Without Slurm, submitit's
``LocalExecutor`` runs one task that starts the ranks with ``mpiexec``, so the same code runs on
a laptop. :meth:`SearchJob.result` waits for the job and returns its
:class:`~hpcml.run.experiment.ExperimentResult`; a job that ends without a result (cancelled,
killed, out of time) raises :class:`JobError` instead of waiting forever, also on clusters
without accounting, where ``sacct`` (what submitit polls) does not work.

Usage::

    import hpcml
    job = hpcml.submit("spec.yaml", out="results/spec", nodes=2, ranks_per_node=16,
                       threads_per_rank=2, time="04:00:00", folder="jobs/%j")
    print(job.job_id)
    result = job.result()          # ExperimentResult: cv_results, best, best_estimator, ...
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import tempfile
import time as _time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcml.errors import UsageError
from hpcml.run.signals import EXIT_REQUEUE

__all__ = ["submit", "SearchJob", "JobError", "ExperimentCall"]

#: submitit executors that run on a Slurm cluster.
_SLURM = ("slurm",)
#: Lines after srun in submitit's job script: requeue when the ranks stopped for a signal.
_REQUEUE_LINES = [
    "hpcml_status=$?",
    f'if [ "$hpcml_status" -eq {EXIT_REQUEUE} ]; then scontrol requeue "$SLURM_JOB_ID"; fi',
]


class JobError(RuntimeError):
    """A submitted job ended without a result (cancelled, failed, timed out, or gone)."""


class ExperimentCall:
    """The function a submitit job runs, on every task (MPI rank) of the job.

    On Slurm, USR1 and submitit's preemption signal (USR2) stop the ranks between fits with
    the journal saved; they exit with status 75, the job script requeues the job, and the
    rerun resumes from the journal in ``out``. :meth:`checkpoint` is submitit's hook for the
    other cases (its local executor): submitit requeues the same call, never with ``force``.
    """

    def __init__(self, spec: Any, out: str | None, threads: int | None, force: bool,
                 local_ranks: int = 1) -> None:
        self.spec, self.out, self.threads = spec, out, threads
        self.force, self.local_ranks = force, local_ranks

    def __call__(self) -> Any:
        from hpcml.run.launch import under_mpi_launcher

        slurm_step = os.environ.get("SLURM_STEP_ID", "").isdigit()
        if slurm_step:
            return _run_on_ranks(self.spec, self.out, self.threads, self.force,
                                 stop_signals=_stop_signals())
        if under_mpi_launcher() or self.local_ranks <= 1:
            return _run_on_ranks(self.spec, self.out, self.threads, self.force)
        return self._run_with_mpiexec()

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """What submitit requeues: the same call, resuming (never ``force``: keep the journal)."""
        from submitit.core.utils import DelayedSubmission

        again = ExperimentCall(self.spec, self.out, self.threads, False, self.local_ranks)
        return DelayedSubmission(again, *args, **kwargs)

    def _run_with_mpiexec(self) -> Any:
        """Start ``local_ranks`` ranks with mpiexec; they send the result back in a pickle."""
        from hpcml.run.launch import run_ranks

        with tempfile.TemporaryDirectory(prefix="hpcml-submit-") as tmp:
            args, result = Path(tmp, "args.pkl"), Path(tmp, "result.pkl")
            args.write_bytes(pickle.dumps((self.spec, self.out, self.threads, self.force)))
            status = run_ranks(self.local_ranks, [str(args), str(result)], self.threads or 1,
                               module="hpcml.slurm.submit")
            if result.exists():
                kind, value = pickle.loads(result.read_bytes())
                if kind == "ok":
                    return value
                raise UsageError(value)
        raise JobError(f"the {self.local_ranks} MPI ranks failed (exit status {status}); "
                       "their traceback is in the job's error log")


def _run_on_ranks(spec: Any, out: str | None, threads: int | None, force: bool,
                  stop_signals: Sequence[int] = ()) -> Any:
    """Join the MPI world this process was started in and run the experiment.

    With ``stop_signals`` (in a Slurm job), those signals stop every rank between fits with
    the journal saved; then every rank exits with status 75 (no result) and the job script
    requeues the job (see :func:`_configure`): the rerun resumes from the journal. The ranks
    end cleanly, so MPI leaves no shared memory behind for the rerun, which has the same job
    and step ids.
    """
    from hpcml.run.experiment import run_experiment
    from hpcml.run.rank import Rank, on_rank

    def work(rank: Rank) -> Any:
        from hpcml.run.watch import watch_run

        with watch_run(out, rank.rank, rank.size, force=force) as watch:  # DIR/status.json
            result = run_experiment(spec, out, comm=rank.comm_or_none, threads=rank.threads,
                                    force=force, stop=rank.stop if stop_signals else None,
                                    observers=watch.observers)
            watch.done(result, stop_signal=rank.stop.signal_name)
        if stop_signals and rank.stop() and not result.complete:
            if rank.rank == 0:
                sys.stderr.write(f"hpcml: stopped by {rank.stop.signal_name}; the finished "
                                 f"fits are in {out}; the job requeues itself and resumes\n")
            sys.exit(EXIT_REQUEUE)  # no result: submitit waits for the requeued run
        return result

    # Stop handlers before MPI starts, as in ``hpcml run``; plain srun refused; threads
    # before numpy (see hpcml.run.rank).
    return on_rank(work, threads=threads, stop_signals=stop_signals)


def _stop_signals() -> tuple[int, ...]:
    """USR1 (hpcml's wall-time signal) and submitit's preemption signal (USR2 by default)."""
    import signal

    from submitit import JobEnvironment

    return tuple({signal.SIGUSR1, JobEnvironment._usr_sig()})


def _rank_main(argv: Sequence[str]) -> int:
    """``python -m hpcml.slurm.submit ARGS RESULT`` on every rank (the local executor's ranks)."""
    args_path, result_path = argv
    spec, out, threads, force = pickle.loads(Path(args_path).read_bytes())
    from hpcml.engines.mpi.world import world_rank

    try:
        result = _run_on_ranks(spec, out, threads, force)
    except UsageError as exc:
        if world_rank() == 0:
            Path(result_path).write_bytes(pickle.dumps(("usage", str(exc))))
        return 2
    if world_rank() == 0:
        Path(result_path).write_bytes(pickle.dumps(("ok", result)))
    return 0


class SearchJob:
    """A submitted experiment. :meth:`result` waits for it and returns its result.

    Attributes
    ----------
    job : submitit.Job
        The submitit job (logs: ``job.stdout()``, ``job.stderr()``, ``job.paths``).
    out : Path or None
        The results folder.
    """

    def __init__(self, job: Any, out: str | os.PathLike | None, cluster: str) -> None:
        self.job = job
        self.out = None if out is None else Path(out)
        self.cluster = cluster

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)

    @property
    def _task0(self) -> Any:
        return self.job.task(0) if self.job.num_tasks > 1 else self.job

    @property
    def state(self) -> str:
        """``PENDING``, ``RUNNING``, ``COMPLETED``, ``CANCELLED``, ... (``UNKNOWN``: no record)."""
        if self.cluster in _SLURM:
            from hpcml.slurm.render import job_state

            return job_state(self.job_id) or "UNKNOWN"
        return str(self.job.state)

    def done(self) -> bool:
        """Whether the job has ended (with or without a result)."""
        if self._task0.paths.result_pickle.exists():
            return True
        if self.cluster in _SLURM:
            from hpcml.slurm.render import TERMINAL_STATES

            state = self.state
            return state in TERMINAL_STATES or state == "UNKNOWN"
        return bool(self.job.done())

    def cancel(self) -> None:
        """Cancel the job (``scancel`` on Slurm)."""
        self.job.cancel(check=False)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job and return its :class:`~hpcml.run.experiment.ExperimentResult`.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most; the job keeps running after a timeout.

        Raises
        ------
        JobError
            The job ended without a result: cancelled, failed (with the failing rank's
            traceback when there is one), out of time, or no longer known to Slurm.
        TimeoutError
            ``timeout`` passed while the job was still pending or running.
        submitit.core.utils.FailedJobError
            The experiment raised (the traceback is in the message).
        """
        deadline = None if timeout is None else _time.monotonic() + timeout
        pickle_path = self._task0.paths.result_pickle
        delay, ended = 0.2, None
        while True:
            if pickle_path.exists():
                return self._task0.result()
            if self.cluster not in _SLURM:
                if self.job.done():
                    return self._task0.result()
            else:
                from hpcml.slurm.render import TERMINAL_STATES

                state = self.state
                if state in TERMINAL_STATES or state == "UNKNOWN":
                    # The result file can reach a network file system a little later.
                    ended = ended or _time.monotonic()
                    grace = 15.0 if state == "COMPLETED" else 2.0
                    if _time.monotonic() - ended > grace:
                        raise JobError(self._ended_message(state))
            if deadline is not None and _time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {self.job_id} is still {self.state} after {timeout:g} s; it keeps "
                    f"running: wait again with .result(), or stop it with .cancel()"
                )
            _time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def _ended_message(self, state: str) -> str:
        why = {
            "CANCELLED": "it was cancelled (scancel, or by an administrator)",
            "TIMEOUT": "it reached its time limit and was not requeued",
            "OUT_OF_MEMORY": "a rank ran out of memory: request more --mem",
            "NODE_FAIL": "a node failed",
            "PREEMPTED": "it was preempted and not requeued",
            "UNKNOWN": "Slurm no longer knows it (and has no accounting to ask)",
        }.get(state, "it ended without writing a result")
        lines = [f"job {self.job_id} ended in state {state} without a result: {why}."]
        errors = self._task_errors()
        if errors:
            lines += ["A rank raised:", errors]
        else:
            log = self._tail(self._task0.paths.stderr)
            if log:
                lines += [f"End of its error log ({self._task0.paths.stderr}):", log]
        if self.out is not None:
            lines.append(f"Fits it finished are kept in {self.out}: submit again to resume.")
        return "\n".join(lines)

    def _task_errors(self) -> str:
        for k in range(self.job.num_tasks):
            path = self.job.task(k).paths.result_pickle
            if path.exists():
                try:
                    kind, value = pickle.loads(path.read_bytes())
                except Exception:  # noqa: BLE001 - a partial file: nothing to show
                    continue
                if kind == "error":
                    return f"task {k}:\n{value}"
        return ""

    @staticmethod
    def _tail(path: Path, n: int = 20) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"SearchJob(job_id={self.job_id!r}, cluster={self.cluster!r}, out={self.out!r})"


def submit(
    spec: str | os.PathLike | dict | Any,
    executor: Any = None,
    *,
    out: str | os.PathLike | None = None,
    folder: str | os.PathLike | None = None,
    nodes: int = 1,
    ranks_per_node: int = 1,
    threads_per_rank: int = 1,
    time: str | int = 60,
    partition: str | None = None,
    mpi: str | None = "pmi2",
    force: bool = False,
) -> SearchJob:
    """Submit an experiment with submitit; return a handle whose ``.result()`` is its result.

    Parameters
    ----------
    spec : path, dict or ExperimentSpec
        The experiment. It is checked here, before anything is submitted.
    executor : submitit executor or str, optional
        A ``submitit.AutoExecutor``/``SlurmExecutor``/``LocalExecutor`` (its parameters are
        updated with the layout below), or a cluster name (``"slurm"``, ``"local"``,
        ``"debug"``). Default: Slurm when ``sinfo`` reaches a cluster, else submitit's local
        executor on this machine.
    out : path, optional
        Results folder (default ``results/<spec name>`` for a spec file).
    folder : path, optional
        submitit's folder for job files and logs (``%j``: the job id); default
        ``hpcml-jobs/%j``. Used when ``executor`` is not an executor object.
    nodes, ranks_per_node, threads_per_rank : int
        The layout (Slurm: ``nodes``, ``tasks_per_node``, ``cpus_per_task``). The local
        executor runs ``nodes × ranks_per_node`` ranks on this machine, at most one per
        ``threads_per_rank`` usable cores.
    time : int or str
        Time limit: minutes, or a Slurm time like ``"02:00:00"``.
    partition : str, optional
        Slurm partition.
    mpi : str or None
        srun's MPI plugin: ``"pmi2"`` (MPICH, the pip wheel), ``"pmix"`` (Open MPI); ``None``
        starts plain srun (one rank per job, or refused with several).
    force : bool
        Start over even if ``out`` holds results or a journal.

    Returns
    -------
    SearchJob
    """
    from hpcml.run.outputs import check_out_dir
    from hpcml.slurm.render import check_request, cluster_cpus, count_tasks, time_minutes
    from hpcml.spec.schema import load_spec, parse_spec

    if isinstance(spec, (str, os.PathLike)):
        checked = load_spec(spec)
        spec = str(Path(spec).absolute())
        if out is None:
            out = Path("results") / Path(spec).stem
    elif isinstance(spec, dict):
        checked = parse_spec(spec, source="<dict>")
    else:
        checked = spec
    if out is not None:
        out = str(Path(out).absolute())
        check_out_dir(out, force)
    minutes = time_minutes(time)
    executor, cluster = _executor(executor, folder)

    ranks = nodes * ranks_per_node
    if cluster in _SLURM:
        for message in check_request(count_tasks(checked), nodes, ranks_per_node,
                                     threads_per_rank, cluster_cpus(partition)):
            warnings.warn(message, stacklevel=2)
        local_ranks = 1
    else:
        from hpcml.core.threads import usable_cores

        local_ranks = max(min(ranks, usable_cores() // threads_per_rank), 1)
        if local_ranks < ranks:
            warnings.warn(f"no Slurm here: running {local_ranks} rank(s) on this machine "
                          f"instead of {ranks}", stacklevel=2)
    _configure(executor, cluster, nodes=nodes, ranks_per_node=ranks_per_node,
               threads=threads_per_rank, minutes=minutes, partition=partition, mpi=mpi)
    call = ExperimentCall(spec, out, threads_per_rank, force, local_ranks)
    return SearchJob(executor.submit(call), out, cluster)


def _executor(executor: Any, folder: str | os.PathLike | None) -> tuple[Any, str]:
    import submitit

    if executor is None:
        # submitit picks Slurm whenever srun is installed; also ask whether a cluster answers.
        from hpcml.slurm.render import cluster_cpus

        executor = "slurm" if shutil.which("srun") and cluster_cpus() is not None else "local"
    if isinstance(executor, str):
        folder = Path(folder if folder is not None else Path("hpcml-jobs") / "%j").absolute()
        if "\n" in str(folder) or "\r" in str(folder):
            raise UsageError(f"folder {str(folder)!r}: submitit writes it into #SBATCH lines, "
                             "which cannot hold a line break; choose another folder")
        executor = submitit.AutoExecutor(folder=folder, cluster=executor)
    if isinstance(executor, submitit.AutoExecutor):
        return executor, executor.cluster
    if isinstance(executor, submitit.SlurmExecutor):
        return executor, "slurm"
    if isinstance(executor, submitit.LocalExecutor):
        return executor, "local"
    if isinstance(executor, submitit.DebugExecutor):
        return executor, "debug"
    raise UsageError(f"executor: expected a submitit executor or one of 'slurm', 'local', "
                     f"'debug', got {executor!r}")


def _configure(executor: Any, cluster: str, *, nodes: int, ranks_per_node: int, threads: int,
               minutes: int, partition: str | None, mpi: str | None) -> None:
    """Set the layout on ``executor`` (in its own parameter names)."""
    import submitit

    from hpcml.core.threads import THREAD_ENV_VARS
    from hpcml.slurm.render import signal_lead

    # srun does not inherit --cpus-per-task (Slurm 22.05+); a rank that dies (even inside
    # MPI_Init, before hpcml can abort the others) ends the whole step.
    srun_args = ["--kill-on-bad-exit=1", f"--cpus-per-task={threads}"]
    if mpi:
        srun_args.insert(0, f"--mpi={mpi}")
    # Before Python starts: submitit imports numpy before it loads the job.
    setup = [f"export {' '.join(f'{v}={threads}' for v in THREAD_ENV_VARS)}"]
    # submitit's 90 s would stop a job of a minute or two as it starts, and every rerun too.
    lead = signal_lead(minutes)
    if isinstance(executor, submitit.AutoExecutor):
        params: dict[str, Any] = {"timeout_min": minutes}
        if cluster in _SLURM:
            params.update(nodes=nodes, tasks_per_node=ranks_per_node, cpus_per_task=threads,
                          slurm_srun_args=srun_args, slurm_setup=setup,
                          slurm_teardown=_REQUEUE_LINES, slurm_signal_delay_s=lead)
            if partition:
                params["slurm_partition"] = partition
        else:
            params.update(nodes=1, tasks_per_node=1)
        executor.update_parameters(**params)
    elif isinstance(executor, submitit.SlurmExecutor):
        executor.update_parameters(
            nodes=nodes, ntasks_per_node=ranks_per_node, cpus_per_task=threads, time=minutes,
            srun_args=srun_args, setup=setup, teardown=_REQUEUE_LINES, signal_delay_s=lead,
            **({"partition": partition} if partition else {}),
        )
    elif isinstance(executor, submitit.LocalExecutor):
        executor.update_parameters(timeout_min=minutes, tasks_per_node=1, nodes=1)


if __name__ == "__main__":
    sys.exit(_rank_main(sys.argv[1:]))
