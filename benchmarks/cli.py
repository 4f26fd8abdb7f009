"""The ``workbench bench`` command (a typer-compatible function); ``workbench/cli.py`` wires it. The
implementation lives in ``benchmarks._cli``."""

from ._cli import bench

__all__ = ["bench"]
