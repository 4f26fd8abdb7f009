"""The gate command of the ``workbench`` CLI (``gate``); ``workbench/cli.py`` wires it. The implementation
lives in ``gating._cli``."""

from ._cli import gate

__all__ = ["gate"]
