"""`hpcml run` refuses bad input with one line on stderr, exit status 2 and nothing written.

Each case runs ``python -m hpcml run -n 2`` in a subprocess: a mistake in the YAML structure or
a path is caught before any rank starts, one that needs imports (an estimator, a grid key, a
scorer) by the ranks, collectively. The subprocesses start together, so the module takes about as long as the
slowest of them rather than their sum (on a machine with spare cores). Most cases pay for
importing scikit-learn (about 2 s of CPU each), so keep their number small: the checks
themselves are covered in test_spec.py and test_data.py.
"""

import os
import subprocess
import sys

import pytest

GOOD_DATA = "data: {generator: sklearn.datasets.make_classification, params: {n_samples: 40}}\n"
GOOD_MODEL = "models:\n  rf:\n    estimator: sklearn.tree.DecisionTreeClassifier\n"
GOOD_SPEC = GOOD_DATA + GOOD_MODEL + "    grid: {max_depth: [null, 2]}\n"

# name: (spec text, text the error line must contain)
BAD_SPECS = {
    "malformed_yaml": (
        GOOD_DATA + "models:\n  rf: {estimator: sklearn.tree.DecisionTreeClassifier\n"
        "scoring: accuracy\n",
        "malformed YAML at line 4",
    ),
    "unknown_top_level_key": (GOOD_SPEC + "scorng: [accuracy]\n", "scorng: unknown key"),
    "unknown_estimator": (
        GOOD_DATA + "models:\n  rf:\n    estimator: sklearn.tree.RandomTreeClassifier\n",
        "models.rf.estimator:",
    ),
    "bad_grid_key": (
        GOOD_DATA + GOOD_MODEL + "    grid: {max_depht: [1, 2]}\n",
        "models.rf.grid.max_depht: not a parameter",
    ),
    "unknown_scorer": (GOOD_SPEC + "scoring: [roc_aux]\n", "scoring[0]: unknown scorer 'roc_aux'"),
    "missing_data_file": (
        "data: {path: nowhere/train.csv, target: y}\n" + GOOD_MODEL,
        "data.path: data file not found",
    ),
}

LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCALNRANKS", "SLURM_", "HPCML_")


def clean_env():
    """This environment without any MPI launcher's or Slurm's variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}


class Run:
    """A ``python -m hpcml`` subprocess started now, waited for on first use."""

    def __init__(self, args, cwd):
        self.cwd = cwd
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpcml", *args], cwd=cwd, env=clean_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self._out = None

    def result(self):
        if self._out is None:
            try:
                stdout, stderr = self.proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
                raise
            self._out = (self.proc.returncode, stdout, stderr)
        return self._out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    started = {}
    for name, (text, _) in BAD_SPECS.items():
        d = tmp_path_factory.mktemp(name)
        (d / "spec.yaml").write_text(text)
        # Two ranks: the launcher catches structure and paths; what needs imports (estimators,
        # grids, scorers) is caught by the ranks, which must still give one line and exit 2.
        started[name] = Run(["run", "spec.yaml", "--out", "out", "-n", "2"], d)

    d = tmp_path_factory.mktemp("out_is_a_file")
    (d / "spec.yaml").write_text(GOOD_SPEC)
    (d / "out").write_text("not a folder\n")
    started["out_is_a_file"] = Run(["run", "spec.yaml", "--out", "out"], d)

    d = tmp_path_factory.mktemp("missing_spec")
    started["missing_spec"] = Run(["run", "nope.yaml", "--out", "out"], d)

    d = tmp_path_factory.mktemp("finished_run")
    (d / "spec.yaml").write_text(GOOD_SPEC)
    (d / "out").mkdir()
    (d / "out" / "run.json").write_text('{"spec_hash": "abc"}\n')
    (d / "out" / "cv_results.csv").write_text("model,params\nrf,{}\n")
    started["finished_run"] = Run(["run", "spec.yaml", "--out", "out", "-n", "1"], d)
    yield started
    for run in started.values():
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.communicate()


def assert_one_line_usage_error(run, *expected):
    status, stdout, stderr = run.result()
    assert "Traceback" not in stdout + stderr, stderr
    assert status == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert stderr.endswith("\n")
    line = lines[0]
    assert line.startswith("hpcml: error: "), line
    for text in expected:
        assert text in line, line
    return line


@pytest.mark.parametrize("name", list(BAD_SPECS))
def test_bad_spec_is_one_line_exit_2(runs, name):
    _, expected = BAD_SPECS[name]
    line = assert_one_line_usage_error(runs[name], expected)
    assert "spec.yaml" in line  # names the file
    assert not (runs[name].cwd / "out").exists()


def test_missing_spec_file(runs):
    assert_one_line_usage_error(runs["missing_spec"], "spec file not found", "nope.yaml")
    assert not (runs["missing_spec"].cwd / "out").exists()


def test_out_is_a_file(runs):
    run = runs["out_is_a_file"]
    assert_one_line_usage_error(run, "--out out", "is a file")
    assert (run.cwd / "out").read_text() == "not a folder\n"


def test_finished_run_is_not_overwritten_without_force(runs):
    run = runs["finished_run"]
    before = {p.name: (p.read_text(), p.stat().st_mtime_ns) for p in (run.cwd / "out").iterdir()}
    line = assert_one_line_usage_error(run, "--out out", "run.json", "--force")
    after = {p.name: (p.read_text(), p.stat().st_mtime_ns) for p in (run.cwd / "out").iterdir()}
    assert after == before
    assert sorted(after) == ["cv_results.csv", "run.json"]
    assert line.count("hpcml: error:") == 1


def help_text(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "hpcml", *args, "--help"], capture_output=True, text=True,
        timeout=120, env=clean_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_top_level_help_mentions_mpiexec():
    text = help_text()
    assert "run" in text and "info" in text
    assert "mpiexec" in text


def test_top_level_help_exits_0():
    text = help_text()
    assert text.startswith("usage: hpcml")
    assert "run" in text and "info" in text


def test_run_help_mentions_mpiexec():
    text = help_text("run")
    assert text.startswith("usage: hpcml run")
    assert "mpiexec" in text
    for option in ("--out", "--threads-per-rank", "--force", "-n"):
        assert option in text


def test_version():
    proc = subprocess.run(
        [sys.executable, "-m", "hpcml", "--version"], capture_output=True, text=True, timeout=120,
        env=clean_env(),
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("hpcml ")


def test_usage_error_from_argparse_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "hpcml", "run"], capture_output=True, text=True, timeout=120,
        env=clean_env(),
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "SPEC" in proc.stderr

