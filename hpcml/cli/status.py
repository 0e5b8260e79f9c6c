"""``hpcml status DIR``: what a run is doing (or did), from its ``status.json``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from hpcml.cli.common import positive_float
from hpcml.errors import UsageError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add ``hpcml status``."""
    st = sub.add_parser(
        "status",
        help="show what a run is doing: fits done, ETA, best so far, each rank",
        description="Print DIR/status.json for a person: the state, fits done and failed, "
        "the ETA, the best candidate so far of each model, and what each rank does. Works "
        "from a login node while the job runs, and on a finished, stopped or killed run: "
        "a run whose heartbeat is older than --stale seconds is reported as not alive (exit status 3).",
    )
    st.add_argument("out", metavar="DIR", help="the --out folder of 'hpcml run'")
    st.add_argument("--stale", type=positive_float, metavar="SECONDS", default=None,
                    help="heartbeat age after which a running run counts as dead (default 15)")
    st.add_argument("--json", action="store_true", help="print status.json as it is")


def run(args: argparse.Namespace) -> int:
    import json

    from hpcml.run.status import format_status, is_alive, read_status

    out = Path(args.out)
    if not out.is_dir():
        raise UsageError(f"{out}: no such folder; give the --out folder of 'hpcml run'")
    found = read_status(out)
    if not found:
        raise UsageError(f"{out}: no status.json (a run that never started, or one made "
                         "before hpcml wrote status files); 'hpcml collect DIR' reads the journal")
    stale = args.stale
    now = time.time()
    texts = []
    for status in found:
        if args.json:
            texts.append(json.dumps(status, indent=2))
            continue
        head = f"shard {status['shard']}:\n" if status.get("shard") else ""
        texts.append(head + format_status(status, now=now, stale_after=stale))
    try:
        sys.stdout.write("\n\n".join(texts) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # hpcml status DIR | head
        sys.stderr.close()
    dead = any(s.get("state") == "running" and not is_alive(s, now, stale) for s in found)
    return 3 if dead else 0
