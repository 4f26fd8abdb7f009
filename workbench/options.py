"""Checks of numeric options and arguments, shared by every command and public function: each raises a
one-line ``WorkbenchError`` naming the option (as the user typed it) and its accepted range, before any work.

The implementation lives in ``workbench._options``; this module is its public face for the other packages.
"""

from ._options import check_file_out, check_finite, check_finite_tensor, check_int, check_number, printable

__all__ = ["check_file_out", "check_finite", "check_finite_tensor", "check_int", "check_number", "printable"]
