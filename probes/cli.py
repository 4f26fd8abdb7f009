"""The persona-vector commands of the ``workbench`` CLI (``extract-vector``, ``screen``, ``vector
export|import``); ``workbench/cli.py`` wires them. The implementation lives in ``probes._cli``."""

from ._cli import extract_vector, screen, vector_app

__all__ = ["extract_vector", "screen", "vector_app"]
