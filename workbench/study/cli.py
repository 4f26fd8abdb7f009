"""The ``workbench study`` command group (public face for ``workbench/cli.py``)."""

from ._cli import study_app

__all__ = ["study_app"]
