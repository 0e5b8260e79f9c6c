"""Slurm job scripts for hpcml: a pure renderer, checks of a request, and job queries.

:func:`render_sbatch` is pure: its signature is its schema (like submitit's
``_make_sbatch_string``). Its non-``None`` arguments become ``#SBATCH`` flags (``snake_case`` →
``--kebab-case``, sorted, every value quoted with :func:`shlex.quote`); anything else goes
through ``additional_parameters``. The other functions ask the cluster (``sinfo``, ``sbatch``,
``scontrol``, ``sacct``), always through :func:`hpcml.run.proc.call`.
"""

from __future__ import annotations

import inspect
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from hpcml.errors import UsageError

__all__ = [
    "LAUNCHERS",
    "render_sbatch",
    "render_options",
    "check_options",
    "parse_extra",
    "count_tasks",
    "time_minutes",
    "time_seconds",
    "signal_lead",
    "check_request",
    "cluster_cpus",
    "submit_script",
    "job_state",
    "TERMINAL_STATES",
]

#: How each launcher starts the ranks inside the allocation, and why.
LAUNCHERS: dict[str, tuple[str, str]] = {
    "srun-pmi2": (
        'srun --mpi=pmi2 --kill-on-bad-exit=1 --cpus-per-task="$SLURM_CPUS_PER_TASK"',
        "srun --mpi=pmi2: MPICH, the pip wheel (plain srun would start independent 1-rank copies)",
    ),
    "srun-pmix": (
        'srun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task="$SLURM_CPUS_PER_TASK"',
        "srun --mpi=pmix: Open MPI (mpi4py built against the cluster's Open MPI)",
    ),
    "mpiexec": (
        'mpiexec -n "$SLURM_NTASKS"',
        "mpiexec: the MPI's own launcher; it reads the allocation from Slurm",
    ),
}

#: Options of ``#SBATCH`` that :func:`render_sbatch` sets itself: not allowed as extras.
_OWN_FLAGS = {
    "nodes", "ntasks", "ntasks-per-node", "cpus-per-task", "time", "job-name", "partition",
    "account", "qos", "mem", "constraint", "signal", "requeue", "open-mode",
}

#: Job states after which a job will not run again by itself.
TERMINAL_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "TIMEOUT", "SPECIAL_EXIT",
})

_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$")
_FLAG = re.compile(r"^[a-z][a-z0-9-]*$")


def render_sbatch(
    spec: str,
    out: str,
    *,
    nodes: int = 1,
    ranks_per_node: int = 1,
    threads_per_rank: int = 1,
    time: str = "01:00:00",
    job_name: str | None = None,
    partition: str | None = None,
    account: str | None = None,
    qos: str | None = None,
    mem: str | None = None,
    constraint: str | None = None,
    signal_seconds: int | None = None,
    launcher: str = "srun-pmi2",
    python: str | None = None,
    additional_parameters: Mapping[str, Any] | None = None,
) -> str:
    """The text of an sbatch script that runs ``hpcml run SPEC --out OUT`` on MPI ranks.

    Parameters
    ----------
    spec, out : str
        The experiment spec and the results folder, as the job will see them (give absolute
        paths: the job may start in another folder).
    nodes, ranks_per_node, threads_per_rank : int
        The layout: ``nodes`` × ``ranks_per_node`` MPI ranks, ``threads_per_rank`` cores each
        (``--cpus-per-task``, ``OMP_NUM_THREADS``).
    time : str
        Wall time, in one of Slurm's formats (``MM``, ``HH:MM:SS``, ``D-HH``, ...).
    job_name : str, optional
        Default: ``hpcml``.
    partition, account, qos, mem, constraint : str, optional
        The sbatch options of the same names; left out when ``None``.
    signal_seconds : int, optional
        Seconds before the time limit at which Slurm sends USR1 to the batch shell; the shell
        passes it to the ranks, which stop between fits and exit 75, and the job requeues
        itself (``scontrol requeue``). The rerun resumes from the journal in ``out``.
        Default: :func:`signal_lead` (300, or a quarter of a shorter time limit). It must be
        less than the time limit: a signal due at the start would stop every run of the job.
    launcher : {"srun-pmi2", "srun-pmix", "mpiexec"}
        See :data:`LAUNCHERS`.
    python : str, optional
        The Python that runs hpcml in the job; default: this one (``sys.executable``), so the
        job uses the environment that rendered the script.
    additional_parameters : mapping, optional
        More ``#SBATCH`` flags, e.g. ``{"mail-type": "END"}``; ``True`` gives a bare flag.

    Returns
    -------
    str
        The script, ending with a newline.

    Examples
    --------
    >>> text = render_sbatch("/x/s.yaml", "/x/my out", time="10", python="/v/bin/python")
    >>> [line for line in text.splitlines() if "--time" in line or line.startswith("OUT=")]
    ['#SBATCH --time=10', "OUT='/x/my out'"]
    """
    for name, value in (("nodes", nodes), ("ranks_per_node", ranks_per_node),
                        ("threads_per_rank", threads_per_rank)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{name}: expected a positive integer, got {value!r}")
    signal_seconds = signal_lead(time, signal_seconds)
    if launcher not in LAUNCHERS:
        raise UsageError(f"launcher: unknown {launcher!r}; choose one of {', '.join(LAUNCHERS)}")
    python = sys.executable if python is None else python

    flags: dict[str, Any] = {
        "nodes": nodes,
        "ntasks_per_node": ranks_per_node,
        "cpus_per_task": threads_per_rank,
        "time": time,
        "job_name": job_name or "hpcml",
        "partition": partition,
        "account": account,
        "qos": qos,
        "mem": mem,
        "constraint": constraint,
        "signal": f"B:USR1@{signal_seconds}",
        "requeue": True,
        "open_mode": "append",
    }
    flags = {k.replace("_", "-"): v for k, v in flags.items() if v is not None}
    for key, value in (additional_parameters or {}).items():
        key = str(key).replace("_", "-").lstrip("-")
        if not _FLAG.match(key):
            raise UsageError(f"extra sbatch option {key!r}: not an option name like 'mail-type'")
        if key in _OWN_FLAGS:
            raise UsageError(
                f"extra sbatch option {key!r}: set it with its own option "
                f"(--{key if key != 'ntasks-per-node' else 'ranks-per-node'}), not as an extra"
            )
        flags[key] = value
    header = [_sbatch_flag(k, flags[k]) for k in sorted(flags)]
    launch, why = LAUNCHERS[launcher]
    q = shlex.quote
    run = (f'{launch} "$PYTHON" -m hpcml run "$SPEC" --out "$OUT" '
           f"--threads-per-rank {threads_per_rank}")
    lines = [
        "#!/bin/bash",
        "# hpcml job: rendered by 'hpcml slurm render'. Render again rather than edit it.",
        *header,
        "",
        "set -u",
        "# The Python environment that rendered this script (hpcml, mpi4py and the MPI library).",
        f"PYTHON={q(python)}",
        'export PATH="$(dirname "$PYTHON"):$PATH"',
        f"SPEC={q(spec)}",
        f"OUT={q(out)}",
        "",
        "# One BLAS/OpenMP pool of --cpus-per-task threads per rank, kept on the rank's cores.",
        f"export OMP_NUM_THREADS={threads_per_rank} OMP_PROC_BIND=close OMP_PLACES=cores",
        "",
        f"# {why}.",
        "# Slurm sends USR1 to this shell before the time limit: pass it on; every rank stops",
        "# between fits, keeps its journal and exits 75. TERM (scancel, preemption) is passed on",
        "# too, but only USR1 leads to a requeue.",
        "child= requeue=",
        'trap \'requeue=1; [ -n "$child" ] && kill -USR1 "$child" 2>/dev/null\' USR1',
        'trap \'[ -n "$child" ] && kill -TERM "$child" 2>/dev/null\' TERM',
        f"{run} &",
        "child=$!",
        'while kill -0 "$child" 2>/dev/null; do wait "$child"; done  # wait again after a trap',
        'wait "$child"; status=$?',
        "",
        "# 75 after USR1: stopped with the journal saved. Requeue: the rerun resumes from it.",
        'if [ "$status" -eq 75 ] && [ -n "$requeue" ]; then',
        '    echo "hpcml: requeueing job $SLURM_JOB_ID to finish the search" >&2',
        '    scontrol requeue "$SLURM_JOB_ID" && exit 0',
        "fi",
        'exit "$status"',
        "",
    ]
    return "\n".join(lines)


def time_seconds(value: str | int) -> int:
    """A Slurm time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) or
    an int of minutes, in seconds.

    Examples
    --------
    >>> time_seconds("02:00:00"), time_seconds("90"), time_seconds("1-12"), time_seconds(5)
    (7200, 5400, 129600, 300)
    >>> time_seconds("0:30")
    30
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise UsageError(f"time: expected a positive number of minutes, got {value}")
        return value * 60
    text = str(value).strip()
    if not _TIME.match(text):
        raise UsageError(
            f"time: {value!r} is not a Slurm time; use MM, HH:MM:SS, D-HH or D-HH:MM:SS"
        )
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:
        h, m, sec = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        h, m, sec = parts
    else:
        h, m, sec = 0, parts[0], parts[1] if len(parts) > 1 else 0
    seconds = ((int(days or 0) * 24 + h) * 60 + m) * 60 + sec
    if seconds < 1:
        raise UsageError(f"time: {value!r}: give a wall time of a second or more (Slurm's 0, "
                         "no limit, is not supported: hpcml stops before the limit)")
    return seconds


def time_minutes(value: str | int) -> int:
    """:func:`time_seconds` in whole minutes, rounded up.

    Examples
    --------
    >>> time_minutes("02:00:00"), time_minutes("90"), time_minutes("1-12"), time_minutes(5)
    (120, 90, 2160, 5)
    >>> time_minutes("0:30")
    1
    """
    return -(-time_seconds(value) // 60)


def signal_lead(time: str | int, signal_seconds: int | None = None) -> int:
    """Seconds before the time limit ``time`` at which Slurm is to send the stop signal.

    The default is 5 minutes, or a quarter of a shorter time limit: the signal must come
    after the start (Slurm may send it up to a minute early), and before the end with time
    for the fits under way to finish.

    Examples
    --------
    >>> signal_lead("02:00:00"), signal_lead("5"), signal_lead("02:00:00", 600)
    (300, 75, 600)
    >>> signal_lead("5", 300)
    Traceback (most recent call last):
    ...
    hpcml.errors.UsageError: signal_seconds: 300 s is not less than the time limit '5' (300 s): the signal would stop the job as it starts; give fewer seconds or a longer time
    """
    wall = time_seconds(time)
    if signal_seconds is None:
        return min(300, wall // 4)
    if (not isinstance(signal_seconds, int) or isinstance(signal_seconds, bool)
            or signal_seconds < 0 or signal_seconds > 65535):
        raise UsageError(f"signal_seconds: expected 0..65535 seconds, got {signal_seconds!r}")
    if signal_seconds >= wall:
        raise UsageError(
            f"signal_seconds: {signal_seconds} s is not less than the time limit {time!r} "
            f"({wall} s): the signal would stop the job as it starts; give fewer seconds or "
            "a longer time"
        )
    return signal_seconds


def render_options() -> dict[str, Any]:
    """The keyword options of :func:`render_sbatch` with their defaults (its schema).

    Examples
    --------
    >>> opts = render_options()
    >>> opts["nodes"], opts["partition"], "spec" in opts
    (1, None, False)
    """
    sig = inspect.signature(render_sbatch)
    return {
        name: p.default for name, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY
    }


def check_options(options: Mapping[str, Any]) -> None:
    """Refuse unknown option names, listing the valid ones with their defaults.

    Examples
    --------
    >>> check_options({"nodes": 2})
    >>> check_options({"node": 2})
    Traceback (most recent call last):
    ...
    hpcml.errors.UsageError: unknown option(s): node. Valid options are: ...
    """
    valid = render_options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listing = ", ".join(f"{k} (default: {v!r})" for k, v in sorted(valid.items()))
        raise UsageError(f"unknown option(s): {', '.join(unknown)}. Valid options are: {listing}")


def parse_extra(items: Sequence[str]) -> dict[str, str]:
    """``["mail-type=END", ...]`` → ``{"mail-type": "END", ...}`` (``KEY`` alone: a bare flag).

    Examples
    --------
    >>> parse_extra(["mail-type=END", "exclusive", "comment=a=b"])
    {'mail-type': 'END', 'exclusive': True, 'comment': 'a=b'}
    """
    extra: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise UsageError(f"--extra {item!r}: expected KEY=VALUE, e.g. mail-type=END")
        extra[key] = value if sep else True
    return extra


def count_tasks(spec: Any) -> int | None:
    """Fit tasks of a checked spec (candidates × folds), or ``None`` if the folds are unknown.

    The number of folds is known when the spec gives ``n_splits`` (or uses the default 5).
    With ``outer_cv`` (nested CV), the inner fits and outer refits count too.
    """
    n_splits = spec.cv.known_n_splits()
    if n_splits is None:
        return None
    grid = spec.task_grid(n_splits)
    if getattr(spec, "outer_cv", None) is None:
        return len(grid)
    n_outer = spec.outer_cv.known_n_splits()
    if n_outer is None:
        return None
    return grid.n_candidates * n_splits * (1 + n_outer) + len(grid.model_names) * n_outer


def check_request(
    n_tasks: int | None,
    nodes: int,
    ranks_per_node: int,
    threads_per_rank: int,
    cluster: tuple[int, int] | None = None,
) -> list[str]:
    """Check a request against the spec and the cluster: warnings, or raise if impossible.

    Parameters
    ----------
    n_tasks : int or None
        Fit tasks of the spec (:func:`count_tasks`).
    nodes, ranks_per_node, threads_per_rank : int
        The request.
    cluster : (cpus_per_node, n_nodes), optional
        The largest node of the partition and its node count (:func:`cluster_cpus`).

    Returns
    -------
    list of str
        Warnings (the request runs, but wastes something).

    Raises
    ------
    UsageError
        When no node of the cluster could run it.

    Examples
    --------
    >>> check_request(3, 1, 4, 1)
    ['4 ranks for 3 fit tasks: 1 rank(s) would have nothing to do; use --ranks-per-node 3']
    >>> check_request(40, 1, 4, 2, cluster=(4, 1))
    Traceback (most recent call last):
    ...
    hpcml.errors.UsageError: 4 ranks per node x 2 threads per rank = 8 CPUs per node, but the nodes have at most 4 CPUs; use e.g. --ranks-per-node 2 --threads-per-rank 2
    """
    warnings = []
    ranks = nodes * ranks_per_node
    if n_tasks is not None and n_tasks < ranks:
        fit = max(n_tasks // nodes, 1)
        warnings.append(
            f"{ranks} ranks for {n_tasks} fit tasks: {ranks - n_tasks} rank(s) would have "
            f"nothing to do; use --ranks-per-node {fit}"
            + ("" if nodes == 1 else " or fewer --nodes")
        )
    if cluster is not None:
        cpus, n_nodes = cluster
        need = ranks_per_node * threads_per_rank
        if need > cpus:
            rpn = max(cpus // threads_per_rank, 1)
            tpr = max(cpus // rpn, 1)
            raise UsageError(
                f"{ranks_per_node} ranks per node x {threads_per_rank} threads per rank = "
                f"{need} CPUs per node, but the nodes have at most {cpus} CPUs; "
                f"use e.g. --ranks-per-node {rpn} --threads-per-rank {tpr}"
            )
        if nodes > n_nodes:
            raise UsageError(f"--nodes {nodes}: the partition has {n_nodes} node(s)")
    return warnings


def cluster_cpus(partition: str | None = None) -> tuple[int, int] | None:
    """``(CPUs of the largest node, number of nodes)`` from ``sinfo``; ``None`` without Slurm.

    ``None`` too when ``sinfo`` is there but cannot reach a controller: nothing to check.
    """
    if shutil.which("sinfo") is None:
        return None
    from hpcml.run.proc import call

    cmd = ["sinfo", "--noheader", "--format=%c %D"]
    if partition:
        cmd.append(f"--partition={partition}")
    try:
        proc = call(cmd, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    cpus, count = 0, 0
    for line in proc.stdout.split("\n"):
        parts = line.split()
        if len(parts) != 2:
            continue
        c, n = re.match(r"\d*", parts[0]).group(), re.match(r"\d*", parts[1]).group()
        if c and n:
            cpus, count = max(cpus, int(c)), count + int(n)
    if partition and count == 0:
        raise UsageError(f"--partition {partition}: sinfo knows no such partition")
    return (cpus, count) if count else None


def submit_script(script: str, extra_args: Sequence[str] = ()) -> str:
    """Submit ``script`` (its text) with ``sbatch --parsable``; return the job id."""
    if shutil.which("sbatch") is None:
        raise UsageError("sbatch not found: run this on a Slurm login node "
                         "(or print the script with 'hpcml slurm render')")
    from hpcml.run.proc import call

    proc = call(["sbatch", "--parsable", *extra_args], input=script, timeout=120, check=False)
    if proc.returncode != 0:
        raise UsageError(f"sbatch refused the job: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip().split(";")[0]


def job_state(job_id: str) -> str | None:
    """The state of a job (``PENDING``, ``RUNNING``, ``CANCELLED``, ...), or ``None``.

    Asks ``scontrol`` (the controller knows a job until ``MinJobAge`` after it ends), then
    ``sacct`` (accounting, when the cluster has it). ``None``: neither knows the job.
    """
    from hpcml.run.proc import call

    try:
        proc = call(["scontrol", "--oneliner", "show", "job", str(job_id)], timeout=30,
                    check=False)
    except (OSError, subprocess.TimeoutExpired):
        proc = None
    if proc is not None and proc.returncode == 0:
        states = re.findall(r"\bJobState=(\S+)", proc.stdout)
        if states:
            # An array job lists its tasks: running while any task is, else its worst end.
            running = [s for s in states if s not in TERMINAL_STATES]
            failed = [s for s in states if s != "COMPLETED"]
            return (running or failed or states)[0]
    try:
        proc = call(["sacct", "--noheader", "--parsable2", "--format=JobID,State",
                     f"--jobs={job_id}"], timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    for line in proc.stdout.splitlines():
        jid, _, state = line.partition("|")
        if jid == str(job_id) and state:
            return state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
    return None


def _sbatch_flag(key: str, value: Any) -> str:
    if value is True:
        return f"#SBATCH --{key}"
    if "\n" in str(value) or "\r" in str(value):
        raise UsageError(f"--{key} {value!r}: an #SBATCH line cannot hold a line break")
    return f"#SBATCH --{key}={shlex.quote(str(value))}"
