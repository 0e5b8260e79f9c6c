"""``hpcml report DIR``: ``DIR/report.html``, one self-contained page of tables and plots."""

from __future__ import annotations

import argparse
from typing import Any

from hpcml.errors import UsageError

__all__ = ["add_parser", "run"]

MISSING = "hpcml report needs matplotlib: pip install 'hpcml[report]'"


def add_parser(sub: Any) -> None:
    """Add ``hpcml report``."""
    rep = sub.add_parser(
        "report",
        help="write DIR/report.html: leaderboard, score plots, folds, per-rank timeline",
        description="Write DIR/report.html, one self-contained page (no network, images "
        "inline) for a browser: the leaderboard, each model's score against each "
        "hyperparameter, heatmaps of two-parameter grids, the fold-to-fold spread, the "
        "rungs of halving runs, nested-CV outer scores, and a per-rank timeline. Works on "
        "a finished run and on a partial one (from the journal). Needs matplotlib "
        "(pip install 'hpcml[report]').",
    )
    rep.add_argument("out", metavar="DIR", help="the --out folder of 'hpcml run'")
    rep.add_argument("--output", metavar="FILE",
                     help="where to write the page (default: DIR/report.html)")
    rep.add_argument("--top", type=int, default=5, metavar="K",
                     help="candidates of each model in the leaderboard (default 5)")


def run(args: argparse.Namespace) -> int:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(MISSING) from None
    from hpcml.report.page import write_report

    path = write_report(args.out, args.output, top=args.top)
    print(f"report: {path}")
    return 0
