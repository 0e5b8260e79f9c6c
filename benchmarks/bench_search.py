"""hpcml against scikit-learn and dask on the same model x grid x folds, whole commands.

    python benchmarks/bench_search.py [-n 2] [--repeat 2] [--workloads startup mixed tiny large]

Per workload and repetition, each tool runs as a fresh command, timed with
``time.perf_counter`` around the subprocess, while a thread sums the PSS of the command's
process tree every 0.2 s:

- ``hpcml``: ``hpcml run -n P spec.yaml`` (MPI start-up, imports, data, fits, refit, files);
- ``hpcml+tl``: the same rank code under ``mpiexec -n P`` with every task's rank, start and
  end recorded (``benchmarks/timeline.py``): gives the fits' makespan, the exact LB, the
  time spent in claims, and a timeline PNG;
- ``sklearn``: a script running ``GridSearchCV(Pipeline([("model", ...)]), n_jobs=P)`` with
  the models as a step grid (loky workers);
- ``drop-in``: the same search with ``hpcml.MPISearchCV`` (scikit-learn's ``fit``, the fits
  spread over the ranks) in a script under ``mpiexec -n P``;
- ``dask``: the same ``GridSearchCV`` under ``joblib.parallel_config(backend="dask")`` on a
  ``dask.distributed.LocalCluster`` of P one-thread workers (skipped if dask is missing).

Columns: ``wall`` whole command; ``search`` the grid search without the refit (hpcml: the
run's wall time in ``run.json`` minus the refit, data and folds included; hpcml+tl: the
fits' makespan; sklearn/dask: ``fit()`` minus ``refit_time_``); ``LB`` = max(sum(c)/P, max(c))
from that run's own fit+score times; ``other`` = CPU cores used by the rest of the machine
meanwhile (noise). Needs ``pip install -e '.[bench]'``. Run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (  # noqa: E402
    BIN,
    PYTHON,
    WORKLOADS,
    lower_bound,
    machine,
    make_data,
    model_name,
    sklearn_search,
    timed_run,
)

TOOLS = ("hpcml", "hpcml+tl", "drop-in", "sklearn", "dask")


# -- the peers, each in a fresh process ------------------------------------------------------


def _peer(tool: str, workload: str, n: int, result: str, folder: str) -> int:
    """Run one workload with scikit-learn (loky), dask or the drop-in (on every rank of
    ``mpiexec``); write timings and costs as JSON (rank 0)."""
    rank = 0
    if tool == "drop-in":
        from hpcml.engines.mpi.world import world  # MPI before numpy and scikit-learn

        rank = world().Get_rank()
    import joblib

    spec = WORKLOADS[workload]
    t = time.perf_counter()
    X, y = make_data(spec)
    data_s = time.perf_counter() - t
    search = sklearn_search(spec, n_jobs=n)
    cluster_s = 0.0
    if tool == "drop-in":
        from hpcml import MPISearchCV

        params = search.get_params(deep=False)
        est, grid = params.pop("estimator"), params.pop("param_grid")
        search = MPISearchCV(est, grid, progress=False, **params)
    if tool == "dask":
        import logging

        from dask.distributed import Client, LocalCluster

        t = time.perf_counter()
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
        cluster_s = time.perf_counter() - t
        t = time.perf_counter()
        with joblib.parallel_config(backend="dask"):
            search.fit(X, y)
        fit_s = time.perf_counter() - t
        client.close()
        cluster.close()
    else:
        t = time.perf_counter()
        search.fit(X, y)
        fit_s = time.perf_counter() - t
    if rank:
        return 0
    cv = search.cv_results_
    n_splits = search.n_splits_
    costs = [float(f + s) for f, s in zip(cv["mean_fit_time"], cv["mean_score_time"], strict=True)
             for _ in range(n_splits)]
    best = search.best_params_
    joblib.dump(search.best_estimator_, Path(folder) / "best_model.joblib")
    Path(result).write_text(json.dumps({
        "data_s": data_s, "cluster_s": cluster_s, "fit_s": fit_s,
        "refit_s": float(search.refit_time_), "costs": costs,
        "best": {"model": model_name(spec, best["model"]),
                 "params": {k.split("__", 1)[1]: v for k, v in best.items() if k != "model"},
                 "score": float(search.best_score_)},
    }, default=repr))
    return 0


# -- one repetition of one workload ----------------------------------------------------------


def _hpcml_costs(csv_path: Path) -> list[float]:
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    n_splits = len([k for k in rows[0] if k.startswith("split") and "_test_" in k])
    n_splits //= max(len([k for k in rows[0] if k.startswith("mean_test_")]), 1)
    return [float(r["mean_fit_time"]) + float(r["mean_score_time"])
            for r in rows for _ in range(n_splits)]


def run_tool(tool: str, workload: str, spec_path: Path, n: int, folder: Path) -> dict:
    """Run one tool once; return its row of measurements."""
    folder.mkdir(parents=True, exist_ok=True)
    row: dict = {"tool": tool}
    if tool == "hpcml":
        out = folder / "out"
        done = timed_run([str(BIN / "hpcml"), "run", "-n", str(n), str(spec_path), "--out",
                          str(out), "--force", "--no-progress"])
        if done.returncode == 0:
            run = json.loads((out / "run.json").read_text())
            best = json.loads((out / "best.json").read_text())
            costs = _hpcml_costs(out / "cv_results.csv")
            row.update(refit=best["refit_time"], search=run["wall_time"] - best["refit_time"],
                       lb=lower_bound(costs, n), work=sum(costs),
                       best={"model": best["model"], "params": best["params"],
                             "score": best["scores"][best["refit_metric"]]})
    elif tool == "hpcml+tl":
        from timeline import record_run, summary

        tl_json = folder / "tasks.json"
        done = record_run(spec_path, n, tl_json, folder / "out")
        if done.returncode == 0:
            data = json.loads(tl_json.read_text())
            s = summary(data)
            best = json.loads((folder / "out" / "best.json").read_text())
            row.update(refit=best["refit_time"], search=s["makespan"], lb=s["lb"],
                       work=s["work"], timeline=str(tl_json),
                       claims={k: s[k] for k in ("n_claims", "claim_s", "claim_max",
                                                  "done_s", "done_max", "span_overhead",
                                                  "idle", "simulated", "poll_stop_s",
                                                  "journal_append_s", "journal_sync_s")})
    else:
        from _harness import thread_env

        result = folder / "peer.json"
        cmd = [PYTHON, str(Path(__file__).resolve()), "--peer", tool, "--workload",
               workload, "-n", str(n), "--result", str(result), "--folder", str(folder)]
        if tool == "drop-in":
            done = timed_run([str(BIN / "mpiexec"), "-n", str(n), *cmd], env=thread_env(n))
        else:
            done = timed_run(cmd)
        if done.returncode == 0:
            peer = json.loads(result.read_text())
            row.update(refit=peer["refit_s"], search=peer["fit_s"] - peer["refit_s"],
                       lb=lower_bound(peer["costs"], n), work=sum(peer["costs"]),
                       best=peer["best"], cluster_s=peer["cluster_s"], data_s=peer["data_s"])
    row.update(wall=done.wall, pss=done.peak_pss, anon=done.peak_anon, other=done.other_cores,
               steal=done.steal_cores, ok=done.returncode == 0)
    return row


def fixed_costs(spec_path: Path, n: int, folder: Path) -> dict[str, float]:
    """Wall seconds of the pieces of a command's fixed cost (start-up and shutdown)."""
    mpiexec = str(BIN / "mpiexec")
    from _harness import thread_env

    cmds = {
        "python -c pass": ([PYTHON, "-c", "pass"], None),
        "import sklearn.model_selection": ([PYTHON, "-c", "import sklearn.model_selection"], None),
        "import hpcml.run.experiment": ([PYTHON, "-c", "import hpcml.run.experiment"], None),
        "launcher's spec check (precheck_spec)": (
            [PYTHON, "-c",
             f"from hpcml.spec.schema import precheck_spec; precheck_spec({str(spec_path)!r})"],
            None),
        "full spec check (load_spec, on the ranks)": (
            [PYTHON, "-c", f"from hpcml.spec.schema import load_spec; load_spec({str(spec_path)!r})"],
            None),
        f"mpiexec -n {n} python: MPI init + barrier": (
            [mpiexec, "-n", str(n), PYTHON, "-c",
             "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"], thread_env(n)),
        f"mpiexec -n {n} python -m hpcml run (no launcher)": (
            [mpiexec, "-n", str(n), PYTHON, "-m", "hpcml", "run", str(spec_path), "--out",
             str(folder / "ranks-only"), "--force", "--no-progress"], thread_env(n)),
    }
    return {name: timed_run(cmd, env=env).wall for name, (cmd, env) in cmds.items()}


def _same_best(a: dict | None, b: dict | None) -> str:
    if not a or not b:
        return ""
    same = a["model"] == b["model"] and abs(a["score"] - b["score"]) < 1e-9 and all(
        str(a["params"].get(k)) == str(v) for k, v in b["params"].items())
    return "same" if same else "DIFF"


def print_table(workload: str, rows: list[dict], n: int) -> None:
    spec = WORKLOADS[workload]
    print(f"\n== {workload}: {_describe(spec)}; P = {n}")
    head = ("tool", "rep", "wall s", "hpcml/x", "search s", "own LB s", "search/LB", "/hpcml LB",
            "refit s", "rest s", "PSS MiB", "anon MiB", "other", "best")
    print("  ".join(f"{h:>9}" for h in head))
    for rep in sorted({r["rep"] for r in rows}):
        mine = {r["tool"]: r for r in rows if r["rep"] == rep}
        ref = mine.get("hpcml", {}).get("best")
        # the LB of this workload: the exact per-task fit+score times of the recorded hpcml run
        hpcml_lb = mine.get("hpcml+tl", {}).get("lb") or mine.get("hpcml", {}).get("lb")
        for tool, r in mine.items():
            if not r["ok"]:
                print(f"{tool:>9}  {rep:>9}  failed")
                continue
            vs = ""
            if tool in ("sklearn", "dask") and mine.get("hpcml", {}).get("ok"):
                vs = f"{mine['hpcml']['wall'] / r['wall']:.3f}"
            elif tool == "drop-in" and mine.get("sklearn", {}).get("ok"):
                vs = f"{r['wall'] / mine['sklearn']['wall']:.3f} of sklearn"
            rest = r["wall"] - r.get("search", 0.0) - r.get("refit", 0.0)
            cells = (tool, rep, f"{r['wall']:.2f}", vs, f"{r['search']:.2f}", f"{r['lb']:.2f}",
                     f"{r['search'] / r['lb']:.3f}",
                     f"{r['search'] / hpcml_lb:.3f}" if hpcml_lb else "",
                     f"{r['refit']:.2f}", f"{rest:.2f}",
                     f"{r['pss'] / 2**20:.0f}",
                     f"{r['anon'] / 2**20:.0f}" if r.get("anon") else "", f"{r['other']:.2f}",
                     _same_best(ref, r.get("best")) if tool != "hpcml" else "")
            print("  ".join(f"{c:>9}" for c in cells))
        tl = mine.get("hpcml+tl", {})
        if tl.get("ok"):
            c = tl["claims"]
            print(f"{'':>9}  hpcml+tl: {c['n_claims']} claims took {c['claim_s'] * 1e3:.1f} ms "
                  f"(max {c['claim_max'] * 1e3:.1f} ms), done-counter {c['done_s'] * 1e3:.1f} ms; "
                  f"clone/split/bookkeeping {c['span_overhead']:.3f} s; rank-time not in a task "
                  f"{c['idle']:.3f} s")
            print(f"{'':>9}  hpcml+tl: journal append {c['journal_append_s']:.3f} s "
                  f"(of which fsync {c['journal_sync_s']:.3f} s), poll_stop "
                  f"{c['poll_stop_s'] * 1e3:.1f} ms, summed over ranks")
            if c.get("simulated"):
                print(f"{'':>9}  hpcml.core.simulate on the recorded spans and hpcml's estimates: "
                      f"makespan {c['simulated']:.2f} s (real {tl['search']:.2f} s)")


def _ratios(rows: list[dict]) -> None:
    """One line: hpcml's wall time over each peer's, and the fits' makespan / LB, per rep."""
    by = {(r["tool"], r["rep"]): r for r in rows if r["ok"]}
    reps = sorted({r["rep"] for r in rows})
    parts = []
    for peer in ("sklearn", "dask"):
        got = [by[("hpcml", k)]["wall"] / by[(peer, k)]["wall"] for k in reps
               if ("hpcml", k) in by and (peer, k) in by]
        if got:
            parts.append(f"hpcml/{peer} wall " + ", ".join(f"{x:.2f}" for x in got))
    got = [by[("drop-in", k)]["wall"] / by[("sklearn", k)]["wall"] for k in reps
           if ("drop-in", k) in by and ("sklearn", k) in by]
    if got:
        parts.append("drop-in/sklearn wall " + ", ".join(f"{x:.2f}" for x in got))
    got = [by[("hpcml+tl", k)]["search"] / by[("hpcml+tl", k)]["lb"] for k in reps
           if ("hpcml+tl", k) in by]
    if got:
        parts.append("makespan/LB " + ", ".join(f"{x:.3f}" for x in got))
    print(f"{'':>9}  summary: " + "; ".join(parts))


def _print_fixed(fixed: list[dict[str, float]]) -> None:
    print("\n== fixed costs (wall s of each command, one column per repetition)")
    for name in fixed[0]:
        print(f"{name:>52}  " + "  ".join(f"{f[name]:6.2f}" for f in fixed))


def _describe(spec: dict) -> str:
    p = spec["data"]["params"]
    from sklearn.model_selection import ParameterGrid

    n_cand = sum(len(ParameterGrid(m.get("grid") or {})) for m in spec["models"].values())
    return (f"{n_cand} candidates x {spec['cv']['n_splits']} folds = "
            f"{n_cand * spec['cv']['n_splits']} fits, X {p['n_samples']} x {p['n_features']}, "
            f"models {', '.join(spec['models'])}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--ranks", type=int, default=2, help="P: ranks / n_jobs / workers")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--tools", nargs="+", default=list(TOOLS), choices=list(TOOLS))
    ap.add_argument("--out", help="folder for specs, outputs, timelines (default: a temp dir)")
    ap.add_argument("--show", metavar="RESULTS_JSON", help="print the tables of an earlier run")
    ap.add_argument("--peer", choices=("sklearn", "dask", "drop-in"), help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer:
        return _peer(args.peer, args.workload, args.ranks, args.result, args.folder)
    if args.show:
        for workload, rows in json.loads(Path(args.show).read_text()).items():
            if workload == "fixed_costs":
                _print_fixed(rows)
                continue
            print_table(workload, rows, args.ranks)
            _ratios(rows)
        return 0

    import yaml

    tools = list(args.tools)
    if "dask" in tools and importlib.util.find_spec("distributed") is None:
        print("note: dask.distributed is not installed: skipping the dask peer "
              "(pip install -e '.[bench]')")
        tools.remove("dask")
    out = Path(args.out or tempfile.mkdtemp(prefix="hpcml-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    n = args.ranks
    print(f"hpcml bench_search, {dt.datetime.now():%Y-%m-%d %H:%M}; {machine()}; P = {n}; "
          f"output in {out}")
    everything = {}
    for workload in args.workloads:
        spec_path = out / f"{workload}.yaml"
        spec_path.write_text(yaml.safe_dump(WORKLOADS[workload], sort_keys=False))
        rows = []
        for rep in range(1, args.repeat + 1):
            for tool in tools:
                folder = out / workload / f"{tool}-{rep}"
                row = run_tool(tool, workload, spec_path, n, folder)
                row["rep"] = rep
                rows.append(row)
                if tool == "hpcml+tl" and row["ok"] and rep == 1:
                    _timeline_png(row["timeline"], out / f"timeline-{workload}.png", workload)
        print_table(workload, rows, n)
        _ratios(rows)
        everything[workload] = rows
        if workload == "startup":
            fixed = [fixed_costs(spec_path, n, out / workload) for _ in range(args.repeat)]
            everything["fixed_costs"] = fixed
            _print_fixed(fixed)
    (out / "results.json").write_text(json.dumps(everything, indent=1, default=repr))
    print(f"\nall measurements: {out / 'results.json'}; timelines: {out}/timeline-*.png")
    return 0


def _timeline_png(tl_json: str, png: Path, workload: str) -> None:
    from timeline import load_records, plot_timeline, summary

    data = load_records(tl_json)
    s = summary(data)
    recs = [(t["rank"], t["start"], t["end"], t["label"]) for t in data["tasks"]]
    plot_timeline(recs, png, lower=s["lb"], n_ranks=data["n_ranks"],
                  title=f"{workload}: {s['n_tasks']} tasks on {data['n_ranks']} ranks")


if __name__ == "__main__":
    raise SystemExit(main())
