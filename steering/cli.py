"""The steering commands of the ``workbench`` CLI (``steer``, ``sweep``); ``workbench/cli.py`` wires them.
The implementation lives in ``steering._cli``."""

from ._cli import steer, sweep_cmd

__all__ = ["steer", "sweep_cmd"]
