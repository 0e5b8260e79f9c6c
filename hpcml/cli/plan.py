"""``hpcml plan SPEC``: tasks, layout and estimated cost of a run, fitting nothing."""

from __future__ import annotations

import argparse
from typing import Any

from hpcml.cli.common import default_ranks, positive_int

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add ``hpcml plan``."""
    plan = sub.add_parser(
        "plan",
        help="show what a run of SPEC would do (tasks, layout, estimated cost), fitting nothing",
        description="Load SPEC and its data, and print the task count, the rank and thread "
        "layout, the estimated cost and the lower bound on the run time, before any fit runs. "
        "Estimates come from the model kinds and the data size: expect a factor of 2-3 either way.",
    )
    plan.add_argument("spec", metavar="SPEC")
    plan.add_argument("-n", "--ranks", type=positive_int, metavar="P", help="ranks to plan for")
    plan.add_argument("--threads-per-rank", type=positive_int, metavar="T")


def run(args: argparse.Namespace) -> int:
    from hpcml.run.plan import describe_plan

    print(describe_plan(args.spec, ranks=args.ranks or default_ranks(),
                        threads=args.threads_per_rank))
    return 0
