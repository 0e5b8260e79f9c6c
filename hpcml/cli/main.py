"""``hpcml`` command line: the parser and the dispatch to one module per command.

Imports stay lazy, so a rank starts MPI and sizes its thread pools before numpy loads.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hpcml.errors import UsageError, exit_status, print_error

__all__ = ["main", "build_parser", "COMMANDS"]

DESCRIPTION = """\
Run scikit-learn model selection (a K-fold x model x hyperparameter grid) over MPI ranks.

Every (model, candidate, fold) is one fit task; tasks are spread over all ranks, scores are
gathered into scikit-learn's cv_results_ format, and the best model is refit and saved.
'hpcml run' starts itself under the installed mpiexec; it also runs under your own
'mpiexec -n P' or 'srun --mpi=pmi2'. See 'hpcml run --help'.
"""

#: command -> module of hpcml.cli that adds its parser (``add_parser``) and runs it (``run``).
COMMANDS = {
    "run": "run",
    "collect": "collect",
    "status": "status",
    "report": "report",
    "predict": "predict",
    "info": "info",
    "plan": "plan",
    "slurm": "slurm",
    "submit": "slurm",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hpcml``."""
    from hpcml import __version__

    parser = argparse.ArgumentParser(
        prog="hpcml", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"hpcml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in dict.fromkeys(COMMANDS.values()):
        importlib.import_module(f"hpcml.cli.{module}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hpcml`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = importlib.import_module(f"hpcml.cli.{COMMANDS[args.command]}")
    try:
        if args.command == "run":
            return command.run(args, argv)
        return command.run(args)
    except UsageError as exc:
        print_error(str(exc))
        return exit_status(exc)
    except KeyboardInterrupt:
        return 130
