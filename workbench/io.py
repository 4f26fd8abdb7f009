"""File writes and reads every package shares: atomic writes (temporary file, then a rename over the target),
JSONL appends, and readers of user-supplied files with one-line errors naming the file.

The implementation lives in ``workbench._io``; this module is its public face for ``probes``, ``steering``,
``gating``, ``apps`` and ``benchmarks`` (a package imports only another package's public names).
"""

from ._io import (
    WriteError,
    append_jsonl,
    append_jsonl_rows,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_regular_file,
    load_yaml_value,
    one_line,
    parse_json,
    parse_yaml,
    read_text,
)

__all__ = [
    "WriteError",
    "append_jsonl",
    "append_jsonl_rows",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_regular_file",
    "load_yaml_value",
    "one_line",
    "parse_json",
    "parse_yaml",
    "read_text",
]
