"""Every fit of a search failing: one line, no refit, the scores and the journal kept."""

from __future__ import annotations

import pytest
from faultkit import one_error_line, run, spec

from hpcml.errors import RunError
from hpcml.run.experiment import run_experiment

FAILING = """\
  picky: {estimator: factories:PickyLogistic, grid: {C: [2.0, 3.0]}}
"""


@pytest.mark.timeout(60)
def test_every_fit_failing_is_one_line_and_keeps_the_scores(tmp_path):
    s = spec(tmp_path / "s.yaml", FAILING)
    proc = run(["run", "-n", "2", str(s), "--out", "out", "--no-progress"], tmp_path)
    assert proc.returncode == 2, proc.stderr  # ValueError from the params: the spec's cause
    one_error_line(proc, "models.picky: All the 4 fits failed", "2 with ValueError: C=2.0",
                   "nothing was refit", "--force")
    out = tmp_path / "out"
    assert (out / "cv_results.csv").exists() and list((out / "journal").glob("*.jsonl"))
    assert not (out / "best_model.joblib").exists() and not (out / "run.json").exists()


def test_every_fit_timing_out_is_a_run_error(tmp_path):
    s = spec(tmp_path / "s.yaml", "  m: {estimator: faultmodels:Majority, "
             "params: {delay: 5}, grid: {C: [1]}}\n")
    with pytest.raises(RunError, match=r"All the 2 fits failed \(2 with TimeoutError"):
        run_experiment(s, tmp_path / "out", progress=False, fit_timeout=0.3)
    assert (tmp_path / "out" / "cv_results.csv").exists()
