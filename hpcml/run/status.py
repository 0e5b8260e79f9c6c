"""``DIR/status.json``: what a run is doing, for a person on a login node.

The root rank's :class:`RunStatus` rewrites ``status.json`` atomically every ``interval``
seconds from a background thread and once more at the end, on every way out: ``finished``,
``stopped`` (a stop signal, exit 75) and ``failed`` (an exception). A run killed by SIGKILL
cannot write anything: its ``heartbeat`` stops moving, and :func:`is_alive` tells.

No MPI here. What the other ranks did reaches the root through the files they already
write: their journal lines (flushed at once, fsync'd every 2 s) give fits, failures, scores
and busy time; a small ``DIR/.status/rankNNNNN.json`` per rank, written by the same kind of
thread, gives the task it is fitting now (engines announce a task's start to observers with
a ``task_started(task)`` method).

The file appears once the run is past its checks (its ``manifest.json`` is written, or a
fit starts): bad input that the run refuses before writing anything leaves no status.

The file holds (schema version 1)::

    state        running | finished | stopped | failed
    phase        starting | fitting | finishing | done
    heartbeat    Unix time of the last write; interval: seconds between writes
    started      Unix time the run started; elapsed: seconds since
    command, cwd, pid, hosts, ranks, shard, spec, out
    fits         {total, done, failed, resumed, this_run}
    eta          seconds left (null before the first fit); eta_at: Unix time
    metric       the metric of "best" (the spec's refit, else its first)
    best         {model: {params, mean, std, folds}} best so far per model (finished folds)
    rank_status  [{rank, host, fits, busy_fraction, current: {task, model, params, fold,
                   since, seconds} or null}]
    error        the exception of a failed run; stop_signal: the signal of a stopped one
    summary      at the end: fits, failures and the first error, wall time, speed-up
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpcml.run.outputs import atomic_write_json
from hpcml.run.rungs import best_by_rung

__all__ = ["RunStatus", "JournalTail", "read_status", "is_alive", "status_path", "STATUS_FILE",
           "STALE_AFTER", "SCHEMA"]

STATUS_FILE = "status.json"
RANK_DIR = ".status"
JOURNAL_DIR = "journal"  # hpcml.run.journal's (not imported: it loads numpy and sklearn)
SCHEMA = 1
#: Seconds without a heartbeat after which a run counts as dead.
STALE_AFTER = 15.0


def status_path(out: str | os.PathLike, shard: tuple[int, int] | None = None) -> Path:
    """``DIR/status.json``, or ``DIR/status-shard0of4.json`` for a shard of a run."""
    name = STATUS_FILE if shard is None else f"status-shard{shard[0]}of{shard[1]}.json"
    return Path(out) / name


def read_status(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Every status file of ``out`` (one, or one per shard); a torn or missing one is skipped.

    A run whose other rank failed (and aborted every rank, the root before it could say so)
    is ``failed`` with that rank's error, from the rank's own file in ``DIR/.status``.
    """
    found = []
    for path in sorted(Path(out).glob("status*.json")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    for status in found:
        if status.get("state") != "running":
            continue
        for info in _rank_files(out):
            if info.get("error") and float(info.get("started", 0.0)) >= status["started"] - 120:
                status.update(state="failed", phase="done", error=info["error"])
                break
    return found


def _rank_files(out: str | os.PathLike) -> list[dict[str, Any]]:
    folder = Path(out) / RANK_DIR
    found = []
    for path in sorted(folder.glob("rank*.json")) if folder.is_dir() else ():
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return found


def is_alive(status: Mapping[str, Any], now: float | None = None,
             stale_after: float | None = None) -> bool:
    """Whether a ``running`` status has a heartbeat younger than ``stale_after`` seconds
    (default: :data:`STALE_AFTER`, or three write intervals if that is longer).

    Examples
    --------
    >>> is_alive({"state": "running", "heartbeat": 100.0, "interval": 2.0}, now=105.0)
    True
    >>> is_alive({"state": "running", "heartbeat": 100.0, "interval": 2.0}, now=200.0)
    False
    >>> is_alive({"state": "finished", "heartbeat": 100.0}, now=101.0)
    False
    """
    if status.get("state") != "running":
        return False
    now = time.time() if now is None else now
    limit = stale_after if stale_after is not None else max(
        STALE_AFTER, 3 * float(status.get("interval") or 0.0))
    return now - float(status.get("heartbeat") or 0.0) <= limit


class JournalTail:
    """The journal's records, read incrementally: each call parses only the new lines."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.folder = Path(out) / JOURNAL_DIR
        self._offsets: dict[Path, int] = {}

    def new_records(self) -> list[tuple[Path, dict[str, Any]]]:
        """(file, record) of the complete lines written since the last call."""
        out: list[tuple[Path, dict[str, Any]]] = []
        if not self.folder.is_dir():
            return out
        for path in sorted(self.folder.glob("*.jsonl")):
            start = self._offsets.get(path, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(start)
                    data = f.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1  # a torn last line waits for the next call
            for line in data[:end].splitlines():
                try:
                    out.append((path, json.loads(line)))
                except ValueError:
                    continue
            self._offsets[path] = start + end
        return out


def _label(task: Mapping[str, Any] | None) -> str:
    if not task:
        return "-"
    return f"{task['model']} {task['params']} fold {task['fold']}"


class RunStatus:
    """The status observer of one rank (see the module docstring).

    Parameters
    ----------
    out : path
        The run's output folder.
    rank, size : int
        This rank and the number of ranks.
    command : list of str, optional
        The command line (default ``sys.argv``).
    shard : (i, n), optional
        The shard this run does.
    interval : float
        Seconds between writes.
    """

    def __init__(self, out: str | os.PathLike, rank: int = 0, size: int = 1, *,
                 command: list[str] | None = None, shard: tuple[int, int] | None = None,
                 interval: float = 2.0) -> None:
        self.out = Path(out)
        self.rank, self.size, self.shard = rank, size, shard
        self.interval = float(interval)
        self.path = status_path(out, shard)
        self.host = socket.gethostname()
        self.started = time.time()
        self.command = _command(sys.argv) if command is None else list(command)
        self.state, self.phase = "running", "starting"
        self.error: str | None = None
        self.stop_signal: str | None = None
        self.summary: dict[str, Any] | None = None
        self._current: tuple[int, float] | None = None
        self._armed = False  # past the run's checks: files may be written
        self._t0: float | None = None  # when this rank started fitting
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._tail = JournalTail(out)
        self._grid: Any = None
        self._rounds = False  # a search of several rounds: no grid ahead, fits by the journal
        #: key -> (candidate id, model, params, rung), told by the run as each round starts
        self._known: dict[str, tuple[int, str, dict[str, Any], int]] = {}
        self._n_splits = 1
        self._nested: Any = None  # the NestedLayout of a run with outer_cv
        self._metric: str | None = None
        self._records: dict[str, dict[str, Any]] = {}  # key -> record (all attempts)
        self._this_run: dict[str, dict[str, Any]] = {}  # key -> record of this attempt
        self._thread = threading.Thread(target=self._loop, name="hpcml-status", daemon=True)
        self._thread.start()

    # -- observer -------------------------------------------------------------------------
    def task_started(self, task: int) -> None:
        """A fit of ``task`` starts on this rank."""
        now = time.time()
        with self._lock:
            if self._t0 is None:
                self._t0 = now
            self._current = (int(task), now)
            self.phase = "fitting"
            self._armed = True

    def result(self, r: Any) -> None:
        """A fit ended on this rank."""
        with self._lock:
            self._current = None
            self.phase = "fitting"
            self._armed = True

    def task_failed(self, task: int, exc: BaseException) -> None:
        """``task`` raised out of the fit (not a fit error: those are scored): the engine
        aborts every rank next, so write the final state now."""
        if not isinstance(exc, Exception):
            self.finish("stopped", stop_signal="SIGINT")
            return
        self.finish("failed", error=f"{type(exc).__name__}: {exc} (task {task} on rank "
                                    f"{self.rank}, {self.host})")

    def close(self) -> None:
        """The engine is done fitting; the outputs (and the refit) come next."""
        with self._lock:
            self._current = None
            self.phase = "finishing"

    # -- lifecycle ------------------------------------------------------------------------
    def finish(self, state: str, *, error: str | None = None, stop_signal: str | None = None,
               ) -> dict[str, Any] | None:
        """Write the final state (``finished``, ``stopped`` or ``failed``); stop the thread.

        Returns the summary of this attempt (root only).
        """
        with self._lock:
            if self.state == "running":  # the first end is the one that tells
                self.state, self.error, self.stop_signal = state, error, stop_signal
            self.phase, self._current = "done", None
        self._wake.set()
        self._thread.join(timeout=30)
        if state == "failed" and not self.armed():
            return None  # refused before anything was written: keep it that way
        try:
            self.write()
        except OSError as exc:  # a full disk must not hide the run's own outcome
            sys.stderr.write(f"hpcml: warning: cannot write {self.path}: {exc}\n")
        return self.summary

    def armed(self) -> bool:
        """Whether the run is past its checks: a fit started, or it wrote its manifest."""
        if not self._armed:
            try:
                fresh = (self.out / "manifest.json").stat().st_mtime >= self.started - 1.0
            except OSError:
                fresh = False
            self._armed = fresh
        return self._armed

    def _loop(self) -> None:
        while not self._wake.wait(self.interval):
            if not self.armed():
                continue
            try:
                self.write()
            except Exception:  # noqa: BLE001 - a status must never break a run
                continue

    def write(self) -> None:
        """Write this rank's file now (``status.json`` on the root)."""
        if self.rank != 0:
            self._write_rank_file()
            return
        snapshot = self.snapshot()
        atomic_write_json(self.path, snapshot)

    def _write_rank_file(self) -> None:
        with self._lock:
            current = self._current
        folder = self.out / RANK_DIR
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / f"rank{self.rank:05d}.json", {
            "rank": self.rank, "host": self.host, "pid": os.getpid(), "heartbeat": time.time(),
            "started": self.started, "task": None if current is None else current[0],
            "since": None if current is None else current[1],
            "state": self.state, "error": self.error,
        })

    # -- the snapshot (root) --------------------------------------------------------------
    def _load_grid(self) -> None:
        """The task grid and keys, from the manifest (once fitting began: it is this run's)."""
        if self._grid is not None or self._rounds or self.phase == "starting":
            return
        from hpcml.run.journal import Manifest, task_keys

        manifest = Manifest.read(self.out)
        if manifest is None:
            return
        from hpcml.spec.schema import parse_spec

        spec = parse_spec(manifest["spec"], source=manifest.get("source"))
        self._metric = spec.refit_metric or spec.metric_names[0]
        self._spec_source = manifest.get("source")
        if spec.multi_round:  # its rounds are made as it runs: fits counted, total unknown
            self._rounds = True
            return
        grid = spec.task_grid(manifest["n_splits"])
        if manifest.get("nested"):
            from hpcml.core.nested import NestedLayout

            self._nested = NestedLayout.from_manifest(manifest)
        self._keys = {k: i for i, k in enumerate(
            task_keys(grid, manifest["folds"], manifest["data_fingerprint"]))}
        self._metric = spec.refit_metric or spec.metric_names[0]
        self._spec_source = manifest.get("source")
        self._grid = grid

    def _read_journal(self) -> None:
        born = self.started - 2.0
        for path, rec in self._tail.new_records():
            key = rec.get("key")
            if key is None:
                continue
            self._records[key] = rec
            if journal_time(path) >= born:
                self._this_run[key] = rec

    def snapshot(self) -> dict[str, Any]:
        """The content of ``status.json`` now."""
        now = time.time()
        self._load_grid()
        if self._grid is not None or self._rounds:
            self._read_journal()
        with self._lock:
            state, phase, current, t0 = self.state, self.phase, self._current, self._t0
        grid = self._grid
        known = {k: r for k, r in self._records.items()
                 if grid is None or k in self._keys}
        this_run = [r for k, r in self._this_run.items() if k in known]
        total = len(grid) if grid is not None else None
        if grid is not None and self._nested is not None:  # not every outer-refit slot runs
            total = self._nested.n_tasks(grid.n_candidates, len(grid.model_names))
        n_done, n_this = len(known), len(this_run)
        failed = sum(r.get("error") is not None for r in known.values())
        eta = None
        if total is not None and n_this and t0 is not None and state == "running":
            rate = n_this / max(now - t0, 1e-9)
            eta = (total - n_done) / rate if n_done < total else 0.0
        ranks = self._ranks(this_run, current, now, t0)
        if state != "running":  # over: nobody fits (the other ranks' last files may lag)
            for r in ranks:
                r["current"] = None
        hosts = sorted({self.host, *(r["host"] for r in ranks if r.get("host"))})
        status = {
            "schema": SCHEMA,
            "state": state,
            "phase": phase,
            "heartbeat": now,
            "interval": self.interval,
            "started": self.started,
            "elapsed": now - self.started,
            "command": self.command,
            "cwd": os.getcwd(),
            "pid": os.getpid(),
            "hosts": hosts,
            "ranks": self.size,
            "shard": None if self.shard is None else f"{self.shard[0]}/{self.shard[1]}",
            "spec": getattr(self, "_spec_source", None),
            "out": str(self.out.resolve()),
            "fits": {"total": total, "done": n_done, "failed": failed,
                     "resumed": n_done - n_this, "this_run": n_this},
            "eta": eta,
            "eta_at": None if eta is None else now + eta,
            "metric": self._metric,
            "best": self._best(known),
            "rank_status": ranks,
            "error": self.error,
            "stop_signal": self.stop_signal,
        }
        if state != "running":
            self.summary = status["summary"] = _summary(this_run, now - self.started, self.size)
        return status

    def tasks_known(self, grid: Any, keys: Sequence[str], level: Any = None) -> None:
        """The run's tasks about to be fitted (a round of a search in rounds, or asha's
        grid): which candidate and rung each journal key is, for the best so far."""
        if level is None:
            return
        with self._lock:
            self._n_splits = grid.n_splits
            base = len({v[0] for v in self._known.values()})
            for i, key in enumerate(keys):
                c = i // grid.n_splits
                cand = grid.candidates[c]
                self._known[key] = (base + c, cand.model, dict(cand.params), int(level[c]))

    def _best(self, records: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
        """The best candidate so far of each model, by mean over its finished folds."""
        if self._grid is None and self._known and self._metric is not None:
            return self._best_by_rung(records)
        if self._grid is None or self._metric is None:
            return {}
        grid, metric = self._grid, self._metric
        n_search = grid.n_splits if self._nested is None else self._nested.n_search
        scores: dict[int, list[float]] = defaultdict(list)
        for key, rec in records.items():
            value = (rec.get("test") or {}).get(metric)
            cand, fold = divmod(self._keys[key], grid.n_splits)
            if fold >= n_search:  # a nested CV fit: not the search on all data
                continue
            if rec.get("error") is None and isinstance(value, (int, float)) and math.isfinite(value):
                scores[cand].append(float(value))
        best: dict[str, Any] = {}
        for c, values in sorted(scores.items()):  # ties: the first candidate, as sklearn
            cand = grid.candidates[c]
            mean = sum(values) / len(values)
            if cand.model not in best or mean > best[cand.model]["mean"]:
                std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
                best[cand.model] = {"params": dict(cand.params), "mean": mean, "std": std,
                                    "folds": f"{len(values)}/{n_search}"}
        return dict(sorted(best.items(), key=lambda kv: -kv[1]["mean"]))

    def _best_by_rung(self, records: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            known = dict(self._known)
        return best_by_rung(records, known, self._metric, self._n_splits)

    def _ranks(self, this_run: list[dict[str, Any]], current: tuple[int, float] | None,
               now: float, t0: float | None) -> list[dict[str, Any]]:
        """Each rank: fits, busy fraction, the task it fits now."""
        busy: dict[int, float] = defaultdict(float)
        fits: dict[int, int] = defaultdict(int)
        hosts: dict[int, str] = {0: self.host}
        for rec in this_run:
            r = int(rec.get("rank", 0))
            busy[r] += max(float(rec.get("end", 0.0)) - float(rec.get("start", 0.0)), 0.0)
            fits[r] += 1
            hosts.setdefault(r, rec.get("host", ""))
        now_of: dict[int, tuple[int, float] | None] = {0: current}
        for info in _rank_files(self.out):
            if float(info.get("started", 0.0)) < self.started - 120:  # an earlier attempt
                continue
            r = int(info["rank"])
            hosts[r] = info.get("host", hosts.get(r, ""))
            if info.get("task") is not None:
                now_of[r] = (int(info["task"]), float(info["since"]))
        span = max(now - t0, 1e-9) if t0 is not None else None
        out = []
        for r in range(self.size):
            cur = now_of.get(r)
            in_flight = max(now - cur[1], 0.0) if cur is not None else 0.0
            entry: dict[str, Any] = {
                "rank": r, "host": hosts.get(r), "fits": fits.get(r, 0),
                "busy_fraction": None if span is None else min((busy[r] + in_flight) / span, 1.0),
                "current": None,
            }
            if cur is not None and self._grid is not None and 0 <= cur[0] < len(self._grid):
                task = self._grid[cur[0]]
                fold = task.fold if self._nested is None else self._nested.label(task.fold)
                entry["current"] = {"task": cur[0], "model": task.candidate.model,
                                    "params": dict(task.candidate.params), "fold": fold,
                                    "since": cur[1], "seconds": in_flight}
            out.append(entry)
        return out


def _command(argv: list[str]) -> list[str]:
    """The command line as typed: ``hpcml ...`` for ``python -m hpcml`` too."""
    if argv and (argv[0].endswith("__main__.py") or Path(argv[0]).name == "hpcml"):
        return ["hpcml", *argv[1:]]
    return list(argv)


def journal_time(path: Path) -> float:
    """When a journal file was opened: the time stamp in its name (its mtime if none)."""
    parts = path.name.split("-")
    for part in parts:
        if len(part) == 15 and part[8] == "T" and part.replace("T", "").isdigit():
            try:
                return time.mktime(time.strptime(part, "%Y%m%dT%H%M%S"))
            except ValueError:
                break
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _summary(records: list[dict[str, Any]], wall: float, ranks: int) -> dict[str, Any]:
    """Fits, failures (and the first error's last line), wall time, speed-up of this run."""
    failed = [r for r in records if r.get("error")]
    first = None
    if failed:
        lines = str(failed[0]["error"]).strip().splitlines()
        first = lines[-1] if lines else ""
    fit_seconds = sum(float(r.get("fit_time", 0.0)) + float(r.get("score_time", 0.0))
                      for r in records)
    return {"fits": len(records), "failed": len(failed), "first_error": first,
            "wall_time": wall, "fit_seconds": fit_seconds, "ranks": ranks,
            "speedup": fit_seconds / wall if wall > 0 else None}


def _since(t: float | None, now: float) -> str:
    from hpcml.core.progress import format_duration

    return "?" if t is None else format_duration(max(now - t, 0.0))


def format_status(status: Mapping[str, Any], now: float | None = None,
                  stale_after: float | None = None) -> str:
    """``status.json`` as text for a person."""
    from hpcml.core.progress import format_duration

    now = time.time() if now is None else now
    state = status.get("state", "?")
    lines = []
    if state == "running" and not is_alive(status, now, stale_after):
        lines.append(f"state: NOT ALIVE (says running, but its last heartbeat was "
                     f"{_since(status.get('heartbeat'), now)} ago: killed, or its node died); "
                     "run the same command again to resume")
    else:
        extra = f" by {status['stop_signal']}" if status.get("stop_signal") else ""
        lines.append(f"state: {state}{extra}" + (
            f" ({status.get('phase')}, heartbeat {_since(status.get('heartbeat'), now)} ago)"
            if state == "running" else ""))
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status.get("started", 0)))
    lines.append(f"started: {started} ({format_duration(float(status.get('elapsed') or 0))}"
                 f" run), {status.get('ranks')} rank(s) on {', '.join(status.get('hosts', []))}")
    lines.append(f"command: {' '.join(status.get('command') or [])}")
    fits = status.get("fits") or {}
    total = fits.get("total")
    done = f"{fits.get('done', 0)}/{total if total is not None else '?'}"
    eta = status.get("eta")
    eta_text = f", ETA {format_duration(eta)}" if eta is not None and state == "running" else ""
    lines.append(f"fits: {done} done, {fits.get('failed', 0)} failed, "
                 f"{fits.get('resumed', 0)} from an earlier run{eta_text}")
    if status.get("error"):
        lines.append(f"error: {status['error']}")
    best = status.get("best") or {}
    if best:
        lines.append(f"best so far by {status.get('metric')} (mean over finished folds):")
        for i, (model, b) in enumerate(best.items()):
            mark = "*" if i == 0 else " "
            rung = f", rung {b['iter']}" if b.get("iter") is not None else ""
            lines.append(f" {mark} {model} {b['params']}: {b['mean']:.6g} ± {b['std']:.3g} "
                         f"({b['folds']} folds{rung})")
    for r in status.get("rank_status") or []:
        frac = r.get("busy_fraction")
        busy = "?" if frac is None else f"{100 * frac:.0f}%"
        cur = r.get("current")
        doing = (f"fitting {_label(cur)} for {format_duration(cur['seconds'])}" if cur
                 else "idle")
        lines.append(f"  rank {r['rank']} on {r.get('host') or '?'}: {r.get('fits', 0)} fits,"
                     f" busy {busy}, {doing}")
    summary = status.get("summary")
    if summary:
        lines.append(summary_line(summary))
    return "\n".join(lines)


def summary_line(s: Mapping[str, Any]) -> str:
    from hpcml.core.progress import format_duration

    failed = f"{s['failed']} failed"
    if s.get("first_error"):
        failed += f" (first: {s['first_error']})"
    speed = f"; speed-up {s['speedup']:.2f}x over the sum of fit times" if s.get("speedup") else ""
    return (f"this run: {s['fits']} fits, {failed}, wall {format_duration(s['wall_time'])}, "
            f"fits took {format_duration(s['fit_seconds'])} in all on {s['ranks']} rank(s)"
            f"{speed}")
