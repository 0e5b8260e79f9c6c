"""What the commands share: argument types, the default rank count, the best-candidate line."""

from __future__ import annotations

import argparse
import os

from hpcml.errors import print_error as error

__all__ = ["error", "positive_int", "positive_float", "shard", "default_ranks", "print_best",
           "strip_ranks"]


def default_ranks() -> int:
    from hpcml.core.threads import usable_cores

    ntasks = os.environ.get("SLURM_NTASKS", "")
    if ntasks.isdigit() and int(ntasks) > 0:
        return int(ntasks)
    return usable_cores()


def strip_ranks(argv: list[str]) -> list[str]:
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


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


def shard(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    if not sep or not i.strip().isdigit() or not n.strip().isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"expected I/N like 0/4, got {text!r}")
    if not 0 <= int(i) < int(n):
        raise argparse.ArgumentTypeError(f"shard I/N needs 0 <= I < N, got {text!r}")
    return int(i), int(n)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def print_best(best: dict | None) -> None:
    """``best: model {params} (metric=score, ...)`` on standard output."""
    if best is not None:
        scores = ", ".join(f"{k}={v:.6g}" for k, v in best["scores"].items())
        print(f"best: {best['model']} {best['params']} ({scores})")
        if best.get("nested"):  # outer_cv: the whole search's outer-fold scores
            nested = ", ".join(f"{k}={v['mean']:.6g} ± {v['std']:.2g}"
                               for k, v in best["nested"].items() if v["mean"] is not None)
            print(f"nested CV (outer folds, model choice included): {nested or 'no scores'}")
