"""``python -m hpcml``: the command line (see ``hpcml --help``)."""

from hpcml.run.signals import catch_early

catch_early()  # a stop signal from now on is a clean stop (exit 75), not a death

from hpcml.cli import main  # noqa: E402

raise SystemExit(main())
