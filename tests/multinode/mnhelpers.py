"""Helpers of the two-node tests: srun across both nodes, rank scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from slurmhelpers import SLOW_SPEC

#: SLOW_SPEC with fits of 1 s: 18 fits, 4.5 s on 4 ranks; long enough to interrupt.
SLOW_1S = SLOW_SPEC.replace("sleep: 0.25", "sleep: 1.0")

#: srun of one step over both nodes: 2 ranks on each; a rank that fails ends the step.
SRUN = ["srun", "--nodes=2", "--ntasks=4", "--ntasks-per-node=2", "--mpi=pmi2",
        "--kill-on-bad-exit=1"]

#: A rank whose C heap is full of freed, incompressible bytes before MPI starts (what
#: importing numpy or scikit-learn first leaves, made certain), that then joins the world
#: through hpcml and prints its rank, host and node communicator size.
START_SCRIPT = """\
import os, random
r = random.Random(int(os.environ.get("SLURM_PROCID", "0")))
keep, freed = [], []
for i in range(20000):
    (keep if i % 2 else freed).append(os.urandom(r.randint(600, 9000)))
del freed
from hpcml.engines.mpi import world as _mpi
comm, _ = _mpi.join_world()
layout = _mpi.node_layout(comm)
comm.Barrier()
print("rank", comm.Get_rank(), layout["host"], layout["ranks_on_node"], flush=True)
"""

#: Every rank gets X through MPIWorld.bcast_array (rank 0 loads it): each prints the
#: (device, inode) of the shared mapping that backs its X, its host and its node rank.
SHARED_SCRIPT = """\
import json, os, sys
import numpy as np
from hpcml.engines.mpi import world as _mpi
comm, _ = _mpi.join_world()
engine = _mpi.MPIWorld(comm)
X = np.load(sys.argv[1], mmap_mode="r") if engine.rank == 0 else None
X = engine.bcast_array(X)
addr = X.ctypes.data
backing = None
with open("/proc/self/maps") as maps:
    for line in maps:
        span, perms, offset, dev, inode = line.split()[:5]
        lo, hi = (int(v, 16) for v in span.split("-"))
        if lo <= addr < hi:
            backing = [perms, dev, inode, line.split()[5] if len(line.split()) > 5 else ""]
node, _ = engine._node_comms()
print(json.dumps({"rank": engine.rank, "host": os.uname().nodename,
                  "node_rank": node.Get_rank(), "writeable": bool(X.flags.writeable),
                  "backing": backing, "sum": float(np.asarray(X).sum())}), flush=True)
engine.close()
"""

#: ``python -m hpcml.joblib`` script: two ``Parallel`` calls with the same large X, each
#: task answering where it ran and the (perms, device, inode) of the mapping holding its X;
#: rank 0 prints them with the backend's counts of what it sent.
JOBLIB_SCRIPT = """\
import json, os, socket, time
import numpy as np
import joblib
from joblib import Parallel, delayed
from hpcml.core.shipping import array_key
from hpcml.engines.mpi.joblib_backend import get_client

def where(X):
    time.sleep(0.1)
    addr = X.ctypes.data
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms, _, dev, inode = line.split()[:5]
            lo, hi = (int(v, 16) for v in span.split("-"))
            if lo <= addr < hi:
                return [socket.gethostname(), os.getpid(), [perms, dev, inode], float(X.sum())]

client = get_client()
X = np.random.default_rng(0).random((500, 400))
with joblib.parallel_config(backend="mpi", n_jobs=-1):
    first = Parallel(batch_size=1)(delayed(where)(X) for _ in range(12))
    after_first = [client.sent[array_key(X)], client.bytes_sent]
    second = Parallel(batch_size=1)(delayed(where)(X) for _ in range(6))
print(json.dumps({"tasks": first + second, "nodes": client.nodes, "nbytes": X.nbytes,
                  "sum": float(X.sum()), "after_first": after_first,
                  "after_second": [client.sent[array_key(X)], client.bytes_sent]}), flush=True)
"""


def srun(args: list[str], cwd: Path, env: dict, timeout: float = 120,
         layout: list[str] | None = None) -> subprocess.CompletedProcess:
    """``srun`` (both nodes, 4 ranks, unless ``layout``) of ``args``; never hangs."""
    return subprocess.run([*(layout or SRUN), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, errors="replace", timeout=timeout)


def python(script: str) -> list[str]:
    """The command of a rank that runs ``script`` with this Python."""
    return [sys.executable, "-c", script]


def run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def rank_pids(pids: list[int], marker: str) -> list[int]:
    """The pids among ``pids`` whose command line holds ``marker`` (the ranks, no stepd)."""
    found = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmd and "slurmstepd" not in cmd and "srun" not in cmd.split()[0]:
            found.append(pid)
    return found
