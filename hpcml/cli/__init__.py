"""The ``hpcml`` command: one module per command, shared helpers in :mod:`hpcml.cli.common`."""

from hpcml.cli.main import build_parser, main

__all__ = ["main", "build_parser"]
