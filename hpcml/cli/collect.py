"""``hpcml collect DIR``: results from the journal, partial or merged from shards."""

from __future__ import annotations

import argparse
from typing import Any

from hpcml.cli.common import print_best

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add ``hpcml collect``."""
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


def run(args: argparse.Namespace) -> int:
    from hpcml.run.collect import collect

    info = collect(args.out, refit=not args.no_refit)
    state = "complete" if info["complete"] else "partial"
    print(f"{args.out}/cv_results.csv: {info['done']}/{info['total']} fits ({state})")
    print_best(info["best"])
    return 0
