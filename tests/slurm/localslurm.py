"""A real one-node Slurm cluster (munged + slurmctld + slurmd), all state in one folder.

Used by the tests' ``slurm`` fixture; also a command for trying the templates by hand::

    python tests/slurm/localslurm.py install        # apt-get the Debian packages (root)
    python tests/slurm/localslurm.py start DIR      # prints: export SLURM_CONF=DIR/slurm.conf
    python tests/slurm/localslurm.py stop DIR

No systemd: the daemons run as root, fork into the background, and are stopped by the pids in
their pid files (never by name). Ports are picked free at start, so two clusters (or a
leftover one) do not collide. Slurm commands find this cluster through ``SLURM_CONF``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
PROGRAMS = ("slurmctld", "slurmd", "sbatch", "munged", "mungekey")


class ClusterError(RuntimeError):
    """The local cluster could not be installed or started (with the daemon's log)."""


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]


def install(timeout: float = 300) -> None:
    """``apt-get install`` the Slurm and munge packages (root only; no-op when present)."""
    if not missing_programs():
        return
    if os.geteuid() != 0:
        raise ClusterError(f"Slurm is not installed ({', '.join(missing_programs())} missing) "
                           "and only root can apt-get install it")
    if shutil.which("apt-get") is None:
        raise ClusterError("Slurm is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 1024  # pragma: no cover


def _alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class LocalSlurm:
    """A one-node cluster rooted at ``root`` (created if needed).

    Attributes
    ----------
    env : dict
        ``{"SLURM_CONF": ...}``: set it for every Slurm command and job of this cluster.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).absolute()
        self.conf = self.root / "slurm.conf"
        self.munge_dir = self.root / "munge"
        self.socket = self.munge_dir / "munge.socket"
        self.env = {"SLURM_CONF": str(self.conf)}
        self.node = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1

    # -- files ---------------------------------------------------------------------------
    @property
    def pid_files(self) -> dict[str, Path]:
        """Daemon name -> pid file, in the order they are stopped."""
        return {
            "slurmd": self.root / "run" / "slurmd.pid",
            "slurmctld": self.root / "run" / "slurmctld.pid",
            "munged": self.munge_dir / "munged.pid",
        }

    def logs(self) -> str:
        """The tail of every daemon log, for error messages."""
        parts = []
        for log in sorted([*self.root.glob("log/*.log"), self.munge_dir / "munged.log"]):
            if log.exists():
                parts.append(f"--- {log}\n" + "\n".join(log.read_text().splitlines()[-25:]))
        return "\n".join(parts)

    def write_config(self) -> None:
        for sub in ("state", "spool", "log", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # munged refuses a socket folder that others cannot enter ("Socket is inaccessible").
        self.root.chmod(0o755)
        self.munge_dir.mkdir(mode=0o755, exist_ok=True)
        self.munge_dir.chmod(0o755)
        memory = max(min(_free_mb() // 2, 16000), 256)
        r = self.root
        self.conf.write_text(f"""\
# A one-node cluster for hpcml's tests (tests/slurm/localslurm.py). No systemd, no cgroups.
ClusterName=hpcmltest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
# Job ids of two clusters on one host must differ: MPICH names its shared memory after them.
FirstJobId={random.randint(10_000, 9_000_000)}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket},cred_expire=5
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
EnforcePartLimits=ALL
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1
SchedulerType=sched/backfill
JobRequeue=1
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    # -- daemons -------------------------------------------------------------------------
    def start(self, timeout: float = 30) -> LocalSlurm:
        """Start munged, slurmctld and slurmd; return once the node takes jobs."""
        if missing_programs():
            install()
        self.stop()  # a leftover cluster in this folder
        self.write_config()
        key = self.munge_dir / "munge.key"
        if not key.exists():
            self._run([_sbin("mungekey"), "--create", f"--keyfile={key}"])
        key.chmod(0o600)
        m = self.munge_dir
        self._run([_sbin("munged"), f"--socket={self.socket}", f"--key-file={key}",
                   f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log",
                   f"--seed-file={m}/munged.seed", "--force"])
        env = {**os.environ, **self.env}
        self._run([_sbin("slurmctld"), "-f", str(self.conf)], env=env)
        self._run([_sbin("slurmd"), "-f", str(self.conf)], env=env)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until ``sinfo`` shows the node idle (or raise with the daemon logs)."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True,
                                  text=True, env={**os.environ, **self.env}, timeout=10)
            state = (proc.stdout + proc.stderr).strip()
            if proc.returncode == 0 and state.startswith(("idle", "mixed", "allocated")):
                return
            time.sleep(0.1)
        raise ClusterError(f"the local Slurm node is not ready after {timeout:g} s "
                           f"(sinfo: {state!r})\n{self.logs()}")

    def stop(self, timeout: float = 15) -> None:
        """Cancel every job, then stop the daemons by their pid files (SIGTERM, then SIGKILL)."""
        env = {**os.environ, **self.env}
        if self.conf.exists() and self._pid("slurmctld"):
            subprocess.run(["scancel", "--quiet", "--full", "--user", str(os.getuid())],
                           env=env, capture_output=True, timeout=10)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                q = subprocess.run(["squeue", "-h", "-o", "%A"], env=env, capture_output=True,
                                   text=True, timeout=10)
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(0.2)
        for name in self.pid_files:
            pid = self._pid(name)
            if pid is None:
                continue
            with _suppress_lookup():
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                with _suppress_lookup():
                    os.kill(pid, signal.SIGKILL)
            self.pid_files[name].unlink(missing_ok=True)

    def _pid(self, name: str) -> int | None:
        try:
            pid = int(self.pid_files[name].read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def _run(self, cmd: list[str], env: dict | None = None) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        if proc.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                               f"{proc.stdout}{proc.stderr}\n{self.logs()}")


class _suppress_lookup:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return exc_type is ProcessLookupError


def main(argv: list[str]) -> int:
    usage = "usage: localslurm.py install | start DIR | stop DIR"
    if not argv or argv[0] not in ("install", "start", "stop"):
        print(usage, file=sys.stderr)
        return 2
    try:
        if argv[0] == "install":
            install()
            return 0
        if len(argv) != 2:
            print(usage, file=sys.stderr)
            return 2
        cluster = LocalSlurm(argv[1])
        if argv[0] == "start":
            cluster.start()
            print(f"export SLURM_CONF={cluster.conf}")
        else:
            cluster.stop()
    except ClusterError as exc:
        print(f"localslurm: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
