"""``hpcml slurm render``: golden files, quoting, refused options, request checks (no cluster)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from slurmhelpers import SPEC

from hpcml.errors import UsageError
from hpcml.slurm.render import (
    LAUNCHERS,
    check_options,
    check_request,
    count_tasks,
    parse_extra,
    render_options,
    render_sbatch,
)

GOLDEN = Path(__file__).parent / "golden"
REGEN = "HPCML_REGEN_GOLDEN"
PY = "/opt/venvs/hpcml/bin/python"
#: No cluster to check against (sinfo without a configuration fails at once).
NO_CLUSTER = {"SLURM_CONF": None}


def golden(name: str, text: str) -> None:
    """Compare ``text`` with golden/NAME; HPCML_REGEN_GOLDEN=1 rewrites the file instead."""
    path = GOLDEN / name
    if os.environ.get(REGEN) == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"missing golden file {path}; create it with {REGEN}=1 pytest {__file__}"
    expected = path.read_text()
    assert text == expected, (
        f"the rendered script differs from {path}. If the change is intended, refresh the "
        f"golden files with: {REGEN}=1 pytest {__file__}"
    )


def hpcml(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m hpcml ARGS``; ``env`` values of ``None`` remove the variable."""
    full = {**os.environ, **(env or {})}
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "hpcml", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=120)


def test_golden_defaults():
    golden("defaults.sbatch", render_sbatch("/scratch/exp/spec.yaml", "/scratch/exp/results",
                                            python=PY))


def test_golden_every_option_with_hostile_values():
    text = render_sbatch(
        "/scratch/my exp/it's \"spec\".yaml", "/scratch/my exp/out $HOME `id`\nx",
        nodes=4, ranks_per_node=16, threads_per_rank=2, time="1-12:00:00",
        job_name="grid 'search' \"rf\"", partition="compute", account="proj;rm -rf /",
        qos="normal", mem="64G", constraint="skylake|cascadelake", signal_seconds=600,
        launcher="srun-pmix", python="/opt/my venv/bin/python",
        additional_parameters={"mail_type": "END,FAIL", "exclusive": True,
                               "comment": "a b 'c'"},
    )
    golden("every-option.sbatch", text)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_golden_launchers(launcher):
    golden(f"launcher-{launcher}.sbatch", render_sbatch(
        "/s.yaml", "/out", nodes=2, ranks_per_node=4, threads_per_rank=8, python=PY,
        launcher=launcher))


def test_flags_sorted_and_quoted():
    text = render_sbatch("/s.yaml", "/o", python=PY, job_name="a b",
                         additional_parameters={"zzz": "1", "aaa": "x y"})
    flags = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    names = [f.split()[1].split("=")[0] for f in flags]
    assert names == sorted(names)
    assert "#SBATCH --job-name='a b'" in flags and "#SBATCH --aaa='x y'" in flags
    assert "#SBATCH --signal=B:USR1@300" in flags and "#SBATCH --requeue" in flags


@pytest.mark.parametrize(("time", "lead"), [("01:00:00", 300), ("20", 300), ("10", 150),
                                            ("5", 75), ("1", 15)])
def test_default_signal_comes_after_the_start(time, lead):
    """A short time limit gets a quarter of it: a lead of 300 s on 5 minutes stopped the job
    as it started, and the requeued rerun again, forever."""
    text = render_sbatch("/s.yaml", "/o", python=PY, time=time)
    assert f"#SBATCH --signal=B:USR1@{lead}" in text.splitlines()


def test_hostile_values_survive_bash(tmp_path):
    """The shell reads back exactly the spec and out paths that were rendered."""
    spec, out = "/a b/it's \"q\" $x `id`.yaml", "/o\nnew line/$(id)"
    text = render_sbatch(spec, out, python=PY)
    head = text.split("\n# One BLAS")[0]  # assignments only, nothing runs
    script = tmp_path / "vars.sh"
    script.write_text(head + '\nprintf "%s\\0%s" "$SPEC" "$OUT"\n')
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\0") == [spec, out]


def test_rendered_scripts_are_valid_bash(tmp_path):
    for launcher in LAUNCHERS:
        script = tmp_path / f"{launcher}.sbatch"
        script.write_text(render_sbatch("/s.yaml", "/o", launcher=launcher, python=PY))
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_default_python_is_this_one():
    text = render_sbatch("/s.yaml", "/o")
    assert f"PYTHON={shlex.quote(sys.executable)}" in text


def test_schema_is_the_signature():
    opts = render_options()
    assert opts["nodes"] == 1 and opts["launcher"] == "srun-pmi2"
    assert "spec" not in opts and "out" not in opts
    with pytest.raises(UsageError, match=r"unknown option\(s\): nodez.*Valid options are: .*"
                       r"account \(default: None\).*nodes \(default: 1\)"):
        check_options({"nodez": 2})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"time": "2 hours"}, "not a Slurm time"),
        ({"nodes": 0}, "nodes: expected a positive integer"),
        ({"launcher": "mpirun"}, "choose one of srun-pmi2, srun-pmix, mpiexec"),
        ({"additional_parameters": {"ntasks-per-node": 3}}, "--ranks-per-node"),
        ({"additional_parameters": {"time": "5"}}, "set it with its own option"),
        ({"additional_parameters": {"bad key": "x"}}, "not an option name"),
        ({"signal_seconds": -1}, "signal_seconds"),
        ({"time": "5", "signal_seconds": 300}, r"300 s is not less than the time limit '5'"),
        ({"time": "0"}, "give a wall time of a second or more"),
        ({"job_name": "two\nlines"}, "cannot hold a line break"),
    ],
)
def test_bad_requests_refused(kwargs, message):
    with pytest.raises(UsageError, match=message):
        render_sbatch("/s.yaml", "/o", python=PY, **kwargs)


def test_parse_extra():
    assert parse_extra(["mail-type=END", "--exclusive", "x=a=b"]) == {
        "mail-type": "END", "exclusive": True, "x": "a=b"}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_extra(["=5"])


def test_check_request_against_spec_and_cluster(tmp_path):
    from hpcml.spec.schema import load_spec

    (tmp_path / "spec.yaml").write_text(SPEC)
    n = count_tasks(load_spec(tmp_path / "spec.yaml"))
    assert n == 5 * 3
    assert check_request(n, 1, 8, 1) == []
    warns = check_request(n, 2, 16, 1)
    assert warns and "32 ranks for 15 fit tasks" in warns[0] and "--ranks-per-node 7" in warns[0]
    assert check_request(n, 1, 2, 4, cluster=(8, 1)) == []
    with pytest.raises(UsageError, match="at most 8 CPUs"):
        check_request(n, 1, 4, 4, cluster=(8, 1))
    with pytest.raises(UsageError, match="has 1 node"):
        check_request(n, 2, 1, 1, cluster=(8, 1))


# -- the command line ---------------------------------------------------------------------


def _normalise(text: str, root: Path) -> str:
    """Replace the (quoted) absolute paths under ``root`` by placeholders."""
    for name, tag in (("spec.yaml", "@SPEC@"), ("my results", "@OUT@")):
        text = text.replace(shlex.quote(str(root / name)), tag)
    return text


def test_cli_render_golden_in_hostile_folder(hostile):
    """Relative paths become absolute and quoted; the script matches the golden file."""
    proc = hpcml("slurm", "render", "spec.yaml", "--out", "my results", "--ranks-per-node", "2",
                 "--time", "10", "--python", PY, "--extra", "mail-type=END", cwd=hostile,
                 env=NO_CLUSTER)
    assert proc.returncode == 0, proc.stderr
    assert shlex.quote(str(hostile / "spec.yaml")) in proc.stdout
    golden("cli-render.sbatch", _normalise(proc.stdout, hostile))


def test_cli_unknown_option_lists_valid_ones(hostile):
    proc = hpcml("slurm", "render", "spec.yaml", "--out", "o", "--nodez", "2", cwd=hostile)
    assert proc.returncode == 2
    assert "unknown option(s): --nodez" in proc.stderr
    assert "Valid options: --account, --constraint, --extra" in proc.stderr
    proc = hpcml("submit", "spec.yaml", "--rank-per-node", "2", cwd=hostile)
    assert proc.returncode == 2 and "--ranks-per-node" in proc.stderr


def test_cli_warns_when_fewer_tasks_than_ranks(hostile):
    proc = hpcml("slurm", "render", "spec.yaml", "--out", "o", "--nodes", "2",
                 "--ranks-per-node", "16", cwd=hostile,
                 env=NO_CLUSTER)
    assert proc.returncode == 0, proc.stderr
    assert "hpcml: warning: 32 ranks for 15 fit tasks" in proc.stderr
    assert proc.stdout.startswith("#!/bin/bash")


def test_cli_bad_spec_is_refused_before_rendering(hostile):
    (hostile / "bad.yaml").write_text(SPEC.replace("max_depth", "max_depht"))
    proc = hpcml("slurm", "render", "bad.yaml", "--out", "o", cwd=hostile)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "max_depht" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_submit_without_sbatch(hostile, tmp_path):
    """No sbatch on PATH: a clear error, nothing printed on stdout."""
    env = {"PATH": str(tmp_path)}  # no Slurm commands here
    proc = hpcml("slurm", "submit", "spec.yaml", "--out", "o", cwd=hostile, env=env)
    assert proc.returncode == 2
    assert "sbatch not found" in proc.stderr and proc.stdout == ""
