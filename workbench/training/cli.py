"""The training command of the ``workbench`` CLI (``train``); ``workbench/cli.py`` wires it. The
implementation lives in ``workbench.training._cli``."""

from ._cli import train

__all__ = ["train"]
