"""scikit-learn's search tests against hpcml's drop-ins, on every rank.

``mpiexec -n P python tests/sklearn_suite/run_suite.py [pytest args]`` runs the installed
scikit-learn's ``test_search.py`` and ``test_successive_halving.py`` (see
``sklearn_plugin.py``) with rank 0's report. ``HPCML_SUITE_REFERENCE=1`` runs them against
scikit-learn's own classes instead, with the same configuration.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "mpi")]

from run_pytest import main  # noqa: E402
from sklearn_plugin import SUITES  # noqa: E402

if __name__ == "__main__":
    import sklearn

    package = str(Path(sklearn.__file__).parent)
    args = ["-c", str(HERE / "pytest.ini"), "--rootdir", package, "--confcutdir", package,
            "-p", "sklearn_plugin", "--pyargs", *SUITES, *sys.argv[1:]]
    sys.exit(main(args))
