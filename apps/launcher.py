"""``workbench app [RUN_DIR]``: start the Streamlit explorer on 127.0.0.1 (registered by ``workbench/cli.py``).

The explorer (``apps/explorer.py``) only reads inside its run root: ``--root`` when given, else RUN_DIR,
else ``./runs`` (which may not exist yet: the app then opens on the empty root with a hint on making runs).
It binds to the loopback address only, loads only the models allowed on its command line (``--model``,
plus the embedded default model, ``random:`` and model folders inside the root), and runs offline unless started
with ``--allow-network``.

The command replaces itself with the Streamlit server (``os.execve``): the process id printed by the
shell is the server's, so ``kill PID`` (SIGTERM), SIGHUP and Ctrl+C all stop the server, and no child
process is left behind.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from workbench import DEFAULT_MODEL, MissingPackageError, WorkbenchError

HOST = "127.0.0.1"
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
DEFAULT_ROOT = Path("runs")
MAKE_RUNS_HINT = "make some with `make demo` or `workbench demo` (they write into runs/)"


def explorer_script() -> Path:
    """The explorer's entry script (``apps/explorer.py``, beside this module)."""
    here = Path(__file__).resolve().parent / "explorer.py"
    if here.exists():
        return here
    raise WorkbenchError(f"the explorer script is missing (looked for {here}); reinstall the workbench")


def resolve_roots(run_dir: Path | None, root: Path | None) -> tuple[Path, Path | None]:
    """The run root the app may read and the directory it opens on; RUN_DIR must lie inside the root.

    A RUN_DIR or ``--root`` that does not exist is an error; the default ``./runs`` may be missing (the
    app opens on it empty and says how to make runs).
    """
    base = Path(root) if root is not None else Path(run_dir) if run_dir is not None else DEFAULT_ROOT
    base = base.expanduser().resolve()
    if not base.is_dir() and (root is not None or run_dir is not None):
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


def command(
    run_root: Path,
    port: int,
    run_dir: Path | None = None,
    *,
    models: Sequence[str] = (),
    allow_network: bool = False,
) -> list[str]:
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
    for spec in models:
        cmd += ["--model", str(spec)]
    if allow_network:
        cmd.append("--allow-network")
    return cmd


def environment(allow_network: bool = False, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: no usage statistics and, unless ``allow_network``, the Hugging Face
    libraries offline (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``)."""
    env = {**(os.environ if base is None else base), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    if not allow_network:
        env.update({name: "1" for name in OFFLINE_ENV})
    return env


def _exec(cmd: list[str], env: dict[str, str]) -> None:
    """Become the Streamlit server (same process id: signals sent to this process reach the server)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(cmd[0], cmd, env)
    except OSError as exc:
        raise WorkbenchError(f"could not start the explorer ({cmd[0]}): {exc}") from exc


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
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help=f"A model spec the app may load besides {DEFAULT_MODEL}, random:<shape> and model folders "
            "inside the run root (a hub id, a folder elsewhere); repeat for several.",
        ),
    ] = None,
    allow_network: Annotated[
        bool,
        typer.Option("--allow-network", help="Let the app download models from the hub (default: offline)."),
    ] = False,
) -> None:
    """Start the Streamlit explorer on http://127.0.0.1:PORT (vectors, steering, gates, runs, screening)."""
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise MissingPackageError("streamlit", "pip install streamlit", "the explorer app")
    if not 0 < port < 65536:
        raise WorkbenchError(f"--port must be between 1 and 65535, got {port}")
    models = [m.strip() for m in (model or []) if m and m.strip()]
    base, start = resolve_roots(run_dir, root)
    typer.echo(
        f"explorer on http://{HOST}:{port} (run root {base}); stop it with Ctrl+C or kill {os.getpid()}"
    )
    if not base.is_dir():
        typer.echo(f"no runs yet: {base} does not exist; {MAKE_RUNS_HINT}")
    if not allow_network:
        typer.echo("offline: models load from local files only (--allow-network to download)")
    _exec(command(base, port, start, models=models, allow_network=allow_network), environment(allow_network))
