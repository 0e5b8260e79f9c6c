"""``hpcml slurm render|submit`` and ``hpcml submit``: the Slurm commands of the CLI.

The options of ``hpcml slurm render`` are built from :func:`hpcml.slurm.render.render_sbatch`'s
signature, so the command line and the Python function cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["add_parser", "run"]

SLURM_EPILOG = """\
examples:
  hpcml slurm render spec.yaml --out results/spec --nodes 2 --ranks-per-node 16 \\
      --threads-per-rank 2 --time 04:00:00 --partition compute > job.sbatch
  hpcml slurm submit spec.yaml --out results/spec --ranks-per-node 8 --time 30
                                    renders, runs sbatch and prints the job id

The script runs 'hpcml run' with the Python environment that rendered it. Before the time
limit Slurm sends USR1 (--signal-seconds); hpcml stops between fits with its journal saved and
exits 75, and the script requeues the job, which resumes from the journal. Templates to copy
and edit by hand are in the repository's slurm/ folder.
"""

#: Help of each option of render_sbatch (the signature gives names, types and defaults).
_HELP = {
    "nodes": "nodes (default: %(default)s)",
    "ranks_per_node": "MPI ranks per node (--ntasks-per-node; default: %(default)s)",
    "threads_per_rank": "threads per rank (--cpus-per-task, OMP_NUM_THREADS; default: %(default)s)",
    "time": "wall time: MM, HH:MM:SS, D-HH, ... (default: %(default)s)",
    "job_name": "job name (default: hpcml)",
    "partition": "partition",
    "account": "account to charge",
    "qos": "quality of service",
    "mem": "memory per node, e.g. 64G",
    "constraint": "node features, e.g. 'skylake'",
    "signal_seconds": "USR1 this many seconds before the time limit; the job requeues and "
    "resumes (default: 300, or a quarter of a shorter time limit)",
    "launcher": "how ranks start: srun-pmi2 (MPICH: the pip wheel), srun-pmix (Open MPI), "
    "mpiexec (default: %(default)s)",
    "python": "Python that runs hpcml in the job (default: this one)",
}


_METAVAR = {"nodes": "N", "ranks_per_node": "P", "threads_per_rank": "T", "time": "TIME",
            "signal_seconds": "SECONDS", "python": "PATH"}


class _StrictParser(argparse.ArgumentParser):
    """Refuses unknown options by name and lists the valid ones (argparse does not list them)."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extras = super().parse_known_args(args, namespace)
        unknown = [a for a in extras if a.startswith("-")]
        if unknown:
            valid = sorted(o for a in self._actions for o in a.option_strings if o.startswith("--"))
            self.error(f"unknown option(s): {' '.join(unknown)}. Valid options: "
                       f"{', '.join(valid)}")
        return ns, extras


def add_parser(subparsers: Any) -> None:
    """Add ``slurm`` (``render``, ``submit``) and ``submit`` to ``hpcml``'s subcommands."""
    previous = subparsers._parser_class
    subparsers._parser_class = _StrictParser
    try:
        _add_slurm(subparsers)
        _add_submit(subparsers)
    finally:
        subparsers._parser_class = previous


def _add_slurm(subparsers: Any) -> None:
    from hpcml.slurm.render import LAUNCHERS, render_options

    slurm = subparsers.add_parser(
        "slurm", help="render or submit an sbatch script that runs an experiment",
        description="Render an sbatch script for an experiment, or submit it.",
        epilog=SLURM_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = slurm.add_subparsers(dest="slurm_command", metavar="ACTION")
    actions.required = True
    for name, what in (("render", "print the sbatch script (nothing is submitted)"),
                       ("submit", "render the script, submit it with sbatch, print the job id")):
        p = actions.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        p.add_argument("spec", metavar="SPEC", help="experiment spec (YAML)")
        p.add_argument("--out", "-o", metavar="DIR", required=True,
                       help="results folder of the job (on a file system the nodes share)")
        for opt, default in render_options().items():
            if opt == "additional_parameters":
                continue
            flag = "--" + opt.replace("_", "-")
            kwargs: dict[str, Any] = {"default": default, "help": _HELP.get(opt)}
            if opt == "launcher":
                kwargs["choices"] = list(LAUNCHERS)
            elif isinstance(default, int) or opt == "signal_seconds":
                kwargs["type"] = int
            if opt != "launcher":
                kwargs["metavar"] = _METAVAR.get(opt, opt.split("_")[-1].upper())
            p.add_argument(flag, **kwargs)
        p.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. --extra mail-type=END "
                       "(KEY alone: a flag); repeatable")


def _add_submit(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "submit", help="run an experiment as a submitit job (Slurm, else this machine)",
        description="Submit an experiment with submitit: on Slurm one srun --mpi=pmi2 step of "
        "NODES x RANKS-PER-NODE ranks; without Slurm, submitit's local executor runs the ranks "
        "with mpiexec. Prints the job id; --wait also waits and prints the best model.",
    )
    p.add_argument("spec", metavar="SPEC", help="experiment spec (YAML)")
    p.add_argument("--out", "-o", metavar="DIR", help="results folder (default: results/<spec name>)")
    p.add_argument("--folder", metavar="DIR", default=os.path.join("hpcml-jobs", "%j"),
                   help="submitit's folder for job files and logs (%%j: job id; "
                   "default: %(default)s)")
    p.add_argument("--nodes", type=int, default=1, metavar="N")
    p.add_argument("--ranks-per-node", type=int, default=1, metavar="P")
    p.add_argument("--threads-per-rank", type=int, default=1, metavar="T")
    p.add_argument("--time", default="01:00:00", help="time limit (default: %(default)s)")
    p.add_argument("--partition")
    p.add_argument("--executor", choices=["auto", "slurm", "local"], default="auto",
                   help="auto: Slurm when sinfo reaches a cluster, else this machine (default)")
    p.add_argument("--mpi", choices=["pmi2", "pmix", "none"], default="pmi2",
                   help="srun's MPI plugin: pmi2 for MPICH (default), pmix for Open MPI")
    p.add_argument("--force", action="store_true", help="start over even if --out holds results")
    p.add_argument("--wait", action="store_true", help="wait for the job, print the best model")


def run(args: argparse.Namespace) -> int:
    """Run ``hpcml slurm ...`` or ``hpcml submit ...``; return the exit status."""
    if args.command == "submit":
        return _cmd_submit(args)
    return _cmd_slurm(args)


def _cmd_slurm(args: argparse.Namespace) -> int:
    from hpcml.slurm.render import (
        check_request,
        cluster_cpus,
        count_tasks,
        parse_extra,
        render_options,
        render_sbatch,
        submit_script,
    )
    from hpcml.spec.schema import load_spec

    options = {k: getattr(args, k) for k in render_options() if k != "additional_parameters"}
    options["additional_parameters"] = parse_extra(args.extra)
    spec = load_spec(args.spec)
    script = render_sbatch(os.path.abspath(args.spec), os.path.abspath(args.out), **options)
    cluster = cluster_cpus(args.partition)
    for message in check_request(count_tasks(spec), args.nodes, args.ranks_per_node,
                                 args.threads_per_rank, cluster):
        _warn(message)
    if args.slurm_command == "render":
        sys.stdout.write(script)
        return 0
    job_id = submit_script(script)
    print(job_id)
    sys.stderr.write(f"hpcml: submitted job {job_id}; results in {os.path.abspath(args.out)}, "
                     f"log in slurm-{job_id}.out\n")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    import warnings

    from submitit.core.utils import FailedJobError, UncompletedJobError

    from hpcml.slurm.submit import JobError, submit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        job = submit(
            args.spec, None if args.executor == "auto" else args.executor, out=args.out,
            folder=args.folder, nodes=args.nodes, ranks_per_node=args.ranks_per_node,
            threads_per_rank=args.threads_per_rank, time=args.time, partition=args.partition,
            mpi=None if args.mpi == "none" else args.mpi, force=args.force,
        )
    for w in caught:
        if issubclass(w.category, UserWarning):
            _warn(str(w.message))
    print(job.job_id)
    sys.stdout.flush()
    sys.stderr.write(f"hpcml: submitted job {job.job_id} ({job.cluster}); logs in "
                     f"{job.job.paths.folder}\n")
    if not args.wait:
        return 0
    try:
        result = job.result()
    except (JobError, FailedJobError, UncompletedJobError) as exc:
        sys.stderr.write(f"hpcml: error: {exc}\n")
        return 1
    from hpcml.cli.common import print_best

    print_best(result.best)
    if result.out is not None:
        print(f"results: {result.out}/cv_results.csv")
    return 0


def _warn(message: str) -> None:
    sys.stderr.write(f"hpcml: warning: {message}\n")
