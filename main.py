"""Airway Studio entry point.

``python main.py`` opens the GUI; ``python main.py <subcommand> ...`` runs the
same subcommands as ``airway``. A frozen build relaunches its own executable
this way for background work (training, batch segmentation).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import multiprocessing

    # a frozen build re-executes itself for DataLoader workers and DDP ranks
    multiprocessing.freeze_support()
    argv = list(sys.argv[1:] if argv is None else argv)
    from core.cli import build_parser

    first = next((a for a in argv if not a.startswith("-")), None)
    if first is not None:
        sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        if first in sub:
            from core.cli import main as cli_main

            return cli_main(argv, prog="airway")
    from app.__main__ import main as gui_main

    return gui_main(argv)


if __name__ == "__main__":
    sys.exit(main())
