"""A real two-node Slurm cluster on one machine: each node in its own network, UTS and mount
namespace, all state in one folder.

Used by the tests' ``cluster2`` fixture; also a command for trying hpcml by hand (root)::

    python tests/multinode/localcluster2.py install     # apt-get the Debian packages
    python tests/multinode/localcluster2.py start DIR   # prints: export SLURM_CONF=... PATH=...
    python tests/multinode/localcluster2.py stop DIR

Layout: a network namespace for the controller (``<prefix>-ctl``) holding a bridge, and one
per node (``<prefix>-node1``, ...), each joined to the bridge by a veth pair. Addresses are
in 10.77.0.0/24, only inside these namespaces: no default route, no forwarding, nothing in
the root namespace. slurmctld runs in the controller's namespace with hostname ``ctl``;
each slurmd runs in its node's namespace with its own hostname and a private mount namespace
whose ``/etc/hosts`` names every node. munged runs in the root namespace: its unix socket is
reachable from every network namespace.

The Slurm clients (``sbatch``, ``srun``, ``squeue``, ...) must talk to the controller from a
namespace that reaches it: ``DIR/bin`` holds wrappers that enter the controller's network
namespace when called from the root namespace (and run the real command elsewhere, e.g. in a
batch script on a node). Put ``DIR/bin`` first on ``PATH`` (``env`` does).

Tear-down stops the daemons by their pid files, kills any process still inside the cluster's
namespaces (by pid) and deletes the namespaces. Namespaces of a cluster whose creating
process is dead are removed at the next start.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "slurm"))

import localslurm  # noqa: E402
from localslurm import (  # noqa: E402
    ClusterError,
    _alive,
    _sbin,
    _suppress_lookup,
)

__all__ = ["ClusterError", "LocalCluster2", "install", "clean_stale", "CLIENTS"]

#: Prefix of every network namespace this module creates (then: creator's pid, role).
PREFIX = "hpcml2n"
NETNS_DIR = Path("/run/netns")
#: Where each cluster records its folder (``<prefix>.root``), so a stale one can be stopped.
REGISTRY = Path("/run/hpcml2n")
SUBNET = "10.77.0"
CTL_HOST = "ctl"
#: Slurm commands that get a wrapper in ``DIR/bin``.
CLIENTS = ("sbatch", "srun", "salloc", "squeue", "scontrol", "scancel", "sinfo", "sacct")

WRAPPER = """\
#!/bin/sh
# {name} for the two-node test cluster. Outside the cluster's network namespaces (whose ids
# are listed here), enter the controller's: the cluster's addresses exist only in them.
case "$(readlink /proc/self/ns/net)" in
    {inside}) exec {real} "$@" ;;
esac
exec nsenter --net={netns} {real} "$@"
"""

#: Debian packages of the namespace tools (``ip``; ``nsenter`` and ``unshare``).
NETNS_PACKAGES = {"ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux"}


def install(timeout: float = 300) -> None:
    """``apt-get install`` Slurm, munge and the namespace tools (root; no-op when present)."""
    localslurm.install(timeout)
    missing = sorted({pkg for prog, pkg in NETNS_PACKAGES.items() if shutil.which(prog) is None})
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _netns_pids(name: str) -> list[int]:
    """Pids of the processes inside network namespace ``name`` (none if it is gone)."""
    try:
        ino = os.stat(NETNS_DIR / name).st_ino
    except OSError:
        return []
    target = f"net:[{ino}]"
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "net") == target:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _kill_all(pids: list[int], timeout: float = 5) -> None:
    """SIGKILL these pids and wait until none is alive."""
    for pid in pids:
        if pid != os.getpid():
            with _suppress_lookup():
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids if p != os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.02)


def _delete_netns(name: str) -> None:
    _kill_all(_netns_pids(name))
    if (NETNS_DIR / name).exists():
        _ip("netns", "delete", name, check=False)


def clean_stale() -> list[str]:
    """Stop the clusters whose creator is dead: daemons, namespaces, processes inside."""
    removed = []
    for entry in sorted(REGISTRY.glob(f"{PREFIX}*.root")) if REGISTRY.exists() else []:
        owner = entry.name[len(PREFIX):-len(".root")]
        if owner.isdigit() and not _alive(int(owner)):
            root = entry.read_text().strip()
            if Path(root, "slurm.conf").exists():
                LocalCluster2(root, owner=int(owner)).stop()
            entry.unlink(missing_ok=True)
    for path in sorted(NETNS_DIR.glob(f"{PREFIX}*-*")) if NETNS_DIR.exists() else []:
        owner = path.name[len(PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            _delete_netns(path.name)
            removed.append(path.name)
    return removed


class LocalCluster2:
    """A two-node (``n_nodes``) cluster rooted at ``root`` (created if needed).

    Parameters
    ----------
    root : path-like
        Folder of every file of the cluster (config, logs, spool, munge, wrappers).
    n_nodes : int
        Compute nodes, named ``node1``, ``node2``, ...
    cpus : int
        CPUs of each node (Slurm's view; they all share this machine's cores).
    owner : int, optional
        The pid named in the namespaces (default: this process): once it is dead, the next
        start of any cluster removes them.

    Attributes
    ----------
    env : dict
        ``SLURM_CONF`` and ``PATH`` (wrappers first): set them for every Slurm command.
    nodes : list of str
        The node names (also their hostnames inside their namespaces).
    """

    def __init__(self, root: str | os.PathLike, n_nodes: int = 2, cpus: int = 2,
                 owner: int | None = None) -> None:
        self.owner = os.getpid() if owner is None else owner
        self.root = Path(root).absolute()
        self.conf = self.root / "slurm.conf"
        self.munge_dir = self.root / "munge"
        self.socket = self.munge_dir / "munge.socket"
        self.bin = self.root / "bin"
        self.cpus = cpus
        self.nodes = [f"node{i + 1}" for i in range(n_nodes)]
        self.addr = {CTL_HOST: f"{SUBNET}.1",
                     **{n: f"{SUBNET}.{11 + i}" for i, n in enumerate(self.nodes)}}
        self.env = {"SLURM_CONF": str(self.conf),
                    "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.tag_file = self.root / "run" / "netns-prefix"

    # -- names ---------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        """``hpcml2n<pid>``: the namespaces' prefix, fixed at :meth:`start`."""
        try:
            return self.tag_file.read_text().strip()
        except OSError:
            return f"{PREFIX}{self.owner}"

    def netns(self, host: str) -> str:
        """The network namespace of ``host`` (``ctl`` or a node name)."""
        return f"{self.prefix}-{host}"

    def nsenter(self, host: str = CTL_HOST) -> list[str]:
        """The command prefix that runs a command in ``host``'s network namespace."""
        return ["nsenter", f"--net={NETNS_DIR / self.netns(host)}"]

    @property
    def pid_files(self) -> dict[str, Path]:
        """Daemon -> pid file, in the order they are stopped."""
        run = self.root / "run"
        files = {f"slurmd:{n}": run / f"slurmd-{n}.pid" for n in self.nodes}
        files["slurmctld"] = run / "slurmctld.pid"
        files["munged"] = self.munge_dir / "munged.pid"
        return files

    def pid(self, name: str) -> int | None:
        """The pid of daemon ``name`` (``slurmctld``, ``slurmd:node1``, ``munged``) if alive."""
        try:
            pid = int(self.pid_files[name].read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def node_pids(self, node: str) -> list[int]:
        """Pids of every process in ``node``'s network namespace (slurmd, stepds, ranks)."""
        return _netns_pids(self.netns(node))

    def logs(self, lines: int = 25) -> str:
        """The tail of every daemon log, for error messages."""
        parts = []
        for log in sorted([*self.root.glob("log/*.log"), self.munge_dir / "munged.log"]):
            if log.exists():
                text = log.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {log}\n" + "\n".join(text))
        return "\n".join(parts)

    # -- files ---------------------------------------------------------------------------
    def write_files(self) -> None:
        """slurm.conf, /etc/hosts of the nodes, the client wrappers, the folders."""
        for sub in ("state", "log", "run", "bin", *(f"spool/{n}" for n in self.nodes)):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # munged refuses a socket folder others cannot enter
        self.munge_dir.mkdir(mode=0o755, exist_ok=True)
        self.munge_dir.chmod(0o755)
        hosts = ["127.0.0.1\tlocalhost"] + [f"{a}\t{h}" for h, a in self.addr.items()]
        (self.root / "hosts").write_text("\n".join(hosts) + "\n")
        r = self.root
        node_lines = "\n".join(
            f"NodeName={n} NodeAddr={self.addr[n]} NodeHostname={n} CPUs={self.cpus} "
            f"RealMemory=2000 State=UNKNOWN" for n in self.nodes)
        self.conf.write_text(f"""\
# A {len(self.nodes)}-node cluster on one machine (tests/multinode/localcluster2.py).
ClusterName=hpcml2n
SlurmctldHost={CTL_HOST}({self.addr[CTL_HOST]})
SlurmctldPort={random.randint(20000, 29999)}
SlurmdPort={random.randint(30000, 39999)}
# Job ids of two clusters on one host must differ: MPICH names its shared memory after them.
FirstJobId={random.randint(10_000, 9_000_000)}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket},cred_expire=5
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
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
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1
SchedulerType=sched/backfill
JobRequeue=1
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
{node_lines}
PartitionName=debug Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
""")

    # -- network -------------------------------------------------------------------------
    def make_network(self) -> None:
        """The namespaces, the bridge in the controller's, a veth pair per node."""
        self.tag_file.write_text(f"{PREFIX}{self.owner}\n")
        REGISTRY.mkdir(exist_ok=True)
        (REGISTRY / f"{PREFIX}{self.owner}.root").write_text(f"{self.root}\n")
        ctl = self.netns(CTL_HOST)
        for host in (CTL_HOST, *self.nodes):
            _delete_netns(self.netns(host))
            _ip("netns", "add", self.netns(host))
            _ip("-n", self.netns(host), "link", "set", "lo", "up")
        _ip("-n", ctl, "link", "add", "br0", "type", "bridge")
        _ip("-n", ctl, "addr", "add", f"{self.addr[CTL_HOST]}/24", "dev", "br0")
        _ip("-n", ctl, "link", "set", "br0", "up")
        for node in self.nodes:
            ns = self.netns(node)
            _ip("-n", ctl, "link", "add", f"v{node}", "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", ctl, "link", "set", f"v{node}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.addr[node]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        self.write_wrappers()

    def write_wrappers(self) -> None:
        """``DIR/bin``: each Slurm client, run in the controller's netns unless in the cluster."""
        inside = "|".join(f"net:\\[{os.stat(NETNS_DIR / self.netns(h)).st_ino}\\]"
                          for h in (CTL_HOST, *self.nodes))
        for name in CLIENTS:
            wrapper = self.bin / name
            wrapper.write_text(WRAPPER.format(name=name, real=f"/usr/bin/{name}", inside=inside,
                                              netns=NETNS_DIR / self.netns(CTL_HOST)))
            wrapper.chmod(0o755)

    # -- daemons -------------------------------------------------------------------------
    def _in_host(self, host: str, command: str) -> list[str]:
        """Run shell ``command`` as ``host``: its netns, its hostname, its /etc/hosts."""
        hosts = self.root / "hosts"
        return [*self.nsenter(host), "unshare", "--uts", "--mount", "--propagation", "private",
                "sh", "-c", f"hostname {host} && mount --bind '{hosts}' /etc/hosts && "
                f"exec {command}"]

    def start(self, timeout: float = 30) -> LocalCluster2:
        """Start munged, slurmctld and the slurmds; return once every node takes jobs."""
        if os.geteuid() != 0:
            raise ClusterError("the two-node cluster needs root (network namespaces)")
        install()  # no-op when everything is there
        clean_stale()
        self.stop()  # a leftover cluster in this folder
        self.write_files()
        self.make_network()
        key = self.munge_dir / "munge.key"
        if not key.exists():
            self._run([_sbin("mungekey"), "--create", f"--keyfile={key}"])
        key.chmod(0o600)
        m = self.munge_dir
        self._run([_sbin("munged"), f"--socket={self.socket}", f"--key-file={key}",
                   f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log",
                   f"--seed-file={m}/munged.seed", "--force"])
        env = {**os.environ, **self.env}
        self._run(self._in_host(CTL_HOST, f"{_sbin('slurmctld')} -f '{self.conf}'"), env=env)
        for node in self.nodes:
            self._run(self._in_host(node, f"{_sbin('slurmd')} -f '{self.conf}'"), env=env)
        self.wait_ready(timeout)
        return self

    def sinfo_states(self) -> dict[str, str]:
        """Node name -> state, from ``sinfo`` in the controller's namespace."""
        proc = subprocess.run([*self.nsenter(), "sinfo", "-h", "-N", "-o", "%N %T"],
                              capture_output=True, text=True, env={**os.environ, **self.env},
                              timeout=10)
        states = {}
        for line in proc.stdout.splitlines():
            name, _, state = line.partition(" ")
            states[name] = state
        return states

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until ``sinfo`` shows every node idle (or raise with the daemon logs)."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.sinfo_states()
            if len(states) == len(self.nodes) and all(
                    s.startswith(("idle", "mixed", "allocated")) for s in states.values()):
                return
            time.sleep(0.05)
        raise ClusterError(f"the nodes are not ready after {timeout:g} s (sinfo: {states})\n"
                           f"{self.logs()}")

    def stop(self, timeout: float = 10) -> None:
        """Cancel every job, stop the daemons, kill what is left inside, delete the namespaces."""
        env = {**os.environ, **self.env}
        if self.conf.exists() and self.pid("slurmctld"):
            subprocess.run([*self.nsenter(), "scancel", "--quiet", "--full", "--user",
                            str(os.getuid())], env=env, capture_output=True, timeout=10)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                q = subprocess.run([*self.nsenter(), "squeue", "-h", "-o", "%A"], env=env,
                                   capture_output=True, text=True, timeout=10)
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(0.1)
        for name, path in self.pid_files.items():
            pid = self.pid(name)
            if pid is not None:
                with _suppress_lookup():
                    os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                if _alive(pid):
                    with _suppress_lookup():
                        os.kill(pid, signal.SIGKILL)
            path.unlink(missing_ok=True)
        if self.tag_file.exists():
            for host in (*self.nodes, CTL_HOST):
                _delete_netns(self.netns(host))
            (REGISTRY / f"{self.prefix}.root").unlink(missing_ok=True)
            self.tag_file.unlink()

    def _run(self, cmd: list[str], env: dict | None = None) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        if proc.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                               f"{proc.stdout}{proc.stderr}\n{self.logs()}")


def main(argv: list[str]) -> int:
    """The command line: ``install``, ``start DIR``, ``stop DIR``."""
    usage = "usage: localcluster2.py install | start DIR | stop DIR"
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
        # The namespaces outlive this command: name them after the shell that ran it.
        cluster = LocalCluster2(argv[1], owner=os.getppid())
        if argv[0] == "start":
            t0 = time.monotonic()
            cluster.start()
            print(f"export SLURM_CONF={cluster.conf} PATH={cluster.bin}:$PATH")
            print(f"# up in {time.monotonic() - t0:.2f} s: nodes {' '.join(cluster.nodes)}",
                  file=sys.stderr)
        else:
            cluster.stop()
    except ClusterError as exc:
        print(f"localcluster2: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
