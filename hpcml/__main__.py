"""``python -m hpcml``: the command line (see ``hpcml --help``)."""

from hpcml.cli import main

raise SystemExit(main())
