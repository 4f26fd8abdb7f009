"""User-facing errors: one line that names the file, line, key or value at fault."""

from __future__ import annotations


class WorkbenchError(Exception):
    """An error caused by user input (a spec, a file, a flag).

    The CLI prints ``error: <message>`` on one line and exits non-zero; ``--debug`` shows the traceback.
    """


class MissingPackageError(WorkbenchError):
    """A needed optional package is not installed; the message carries the install command."""

    def __init__(self, package: str, install: str, purpose: str = ""):
        why = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"package '{package}' is not installed{why}; install it with: {install}")
        self.package = package
        self.install = install
