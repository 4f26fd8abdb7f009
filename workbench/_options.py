"""Checks of numeric options and arguments: one-line errors naming the option and its accepted range.

``name`` is what the user typed: ``--batch-size`` on the command line, ``batch_size`` in the Python API or
a config file. Every check runs before any work, so a bad value costs nothing.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from ._errors import WorkbenchError


def _show(value: Any) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{float(value):g}"
    return repr(value) if isinstance(value, str) else str(value)


def check_int(value: Any, name: str, minimum: int = 1, note: str = "") -> int:
    """``value`` as an int, refused unless it is an integer ``>= minimum``; ``note`` explains a special value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise WorkbenchError(f"{name} must be an integer >= {minimum}{note}, got {_show(value)}")
    return int(value)


def check_number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    note: str = "",
) -> float:
    """``value`` as a finite float within the bounds (``above``: strictly greater), else one line naming ``name``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (
            (minimum is None or value >= minimum)
            and (maximum is None or value <= maximum)
            and (above is None or value > above)
        )
    if not ok:
        low = f"({above:g}" if above is not None else f"[{minimum:g}" if minimum is not None else ""
        high = f"{maximum:g}]" if maximum is not None else ""
        if low and high:
            rng = f" in {low}, {high}"
        elif low:
            rng = f" > {above:g}" if above is not None else f" >= {minimum:g}"
        elif high:
            rng = f" <= {maximum:g}"
        else:
            rng = ""
        raise WorkbenchError(f"{name} must be a finite number{rng}{note}, got {_show(value)}")
    return float(value)


def check_finite(values: Iterable[Any], name: str) -> None:
    """Refuse NaN and infinite values (a coefficient must be a real number)."""
    for v in values:
        check_number(v, name)


def check_finite_tensor(values: Any, name: str) -> None:
    """Refuse a tensor of coefficients holding NaN or infinite values (or complex / boolean ones)."""
    import torch

    if values.is_complex() or values.dtype == torch.bool:
        raise WorkbenchError(f"{name} must hold real numbers, got a {values.dtype} tensor")
    bad = ~torch.isfinite(values.detach())
    if bool(bad.any()):
        flat = bad.flatten().nonzero()[0].item()
        raise WorkbenchError(
            f"{name} must hold finite numbers, got {values.flatten()[flat].item():g} at index {flat}"
        )


def check_file_out(path: Any, name: str = "--out") -> None:
    """Refuse an existing directory where a file is to be written (before any work is done)."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        raise WorkbenchError(f"{name} '{p}' is a directory; give the path of a file to write")


def printable(text: str) -> str:
    """``text`` safe for a terminal: every non-printable character except the newline escaped (``\\x1b``).

    Model output and prompts may hold escape sequences (colours, cursor moves, window titles, hyperlinks),
    carriage returns that overwrite a line, or bidirectional overrides; printed raw they act on the terminal.
    """
    if text.isprintable():
        return text
    return "".join(
        ch if ch == "\n" or ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )
