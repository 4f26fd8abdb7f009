"""``workbench app [RUN_DIR]``: start the Streamlit explorer on 127.0.0.1 (registered by ``workbench/cli.py``).

The explorer (``apps/explorer.py``) only reads inside its run root: ``--root`` when given, else RUN_DIR,
else ``./runs``. It binds to the loopback address only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from ._errors import MissingPackageError, WorkbenchError

HOST = "127.0.0.1"


def explorer_script() -> Path:
    """The explorer's entry script (``apps/explorer.py`` beside this package, or an installed ``apps``)."""
    here = Path(__file__).resolve().parents[1] / "apps" / "explorer.py"
    if here.exists():
        return here
    import importlib.util

    spec = importlib.util.find_spec("apps")
    if spec and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "explorer.py"
            if candidate.exists():
                return candidate
    raise WorkbenchError(f"the explorer script is missing (looked for {here}); reinstall the workbench")


def resolve_roots(run_dir: Path | None, root: Path | None) -> tuple[Path, Path | None]:
    """The run root the app may read and the directory it opens on; RUN_DIR must lie inside the root."""
    base = Path(root) if root is not None else Path(run_dir) if run_dir is not None else Path("runs")
    base = base.expanduser().resolve()
    if not base.is_dir():
        raise WorkbenchError(
            f"run directory '{base}' does not exist (make runs first, e.g. `workbench demo`)"
        )
    start = None
    if run_dir is not None:
        start = Path(run_dir).expanduser().resolve()
        if not start.is_dir():
            raise WorkbenchError(f"run directory '{start}' does not exist")
        if start != base and base not in start.parents:
            raise WorkbenchError(f"run directory '{start}' is outside the run root '{base}'")
    return base, start


def command(run_root: Path, port: int, run_dir: Path | None = None) -> list[str]:
    """The ``streamlit run`` command line: headless, loopback only, no usage statistics, no file watcher."""
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(explorer_script()),
        "--server.headless",
        "true",
        "--server.address",
        HOST,
        "--server.port",
        str(int(port)),
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--",
        "--run-root",
        str(run_root),
    ]
    if run_dir is not None:
        cmd += ["--run-dir", str(run_dir)]
    return cmd


def app(
    run_dir: Annotated[
        Path | None,
        typer.Argument(help="Run directory to open (default: ./runs). The app reads only inside it."),
    ] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8501,
    root: Annotated[
        Path | None,
        typer.Option(help="Run root the app may read (default: RUN_DIR); RUN_DIR must lie inside it."),
    ] = None,
) -> None:
    """Start the Streamlit explorer on http://127.0.0.1:PORT (vectors, steering, gates, runs, screening)."""
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise MissingPackageError("streamlit", "pip install streamlit", "the explorer app")
    if not 0 < port < 65536:
        raise WorkbenchError(f"--port must be between 1 and 65535, got {port}")
    base, start = resolve_roots(run_dir, root)
    typer.echo(f"explorer on http://{HOST}:{port} (run root {base}); stop it with Ctrl+C")
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    try:
        code = subprocess.call(command(base, port, start), env=env)
    except KeyboardInterrupt:
        code = 0
    if code:
        raise typer.Exit(code)
