"""``python -m hpcml``: the command line (see ``hpcml --help``)."""

from .cli import main

raise SystemExit(main())
