"""Entry point for several processes: ``torchrun --nproc_per_node N -m workbench.training._launch CONFIG``.

Takes the same options as ``workbench train`` (``--set``, ``--out``, ``--resume``, ``--overwrite``) plus
``--stop-after N``. Every process runs this module; ``accelerate`` reads the launcher's environment.
"""

from __future__ import annotations

import argparse
import logging
import sys

from workbench._errors import WorkbenchError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.training._launch", description=__doc__)
    parser.add_argument("config", help="training config YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value override")
    parser.add_argument("--out", "-o", default=None, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--stop-after", type=int, default=None, help="stop (with a checkpoint) after N steps")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ._loop import train

    try:
        run_dir = train(
            args.config,
            args.out,
            overrides=args.overrides,
            resume=args.resume,
            overwrite=args.overwrite,
            stop_after=args.stop_after,
            progress=not args.quiet,
        )
    except WorkbenchError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    finally:
        _close_process_group()
    sys.stdout.write(f"run directory: {run_dir}\n")
    return 0


def _close_process_group() -> None:
    """Tear the process group down before the interpreter exits: a gloo group left to interpreter
    finalisation can abort the process ("terminate called without an active exception", exit -6) after
    the run has finished."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
