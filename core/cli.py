"""The ``airway`` command line: a thin dispatcher over ``core.commands``.

Errors of the project's family print one line (what is wrong and how to fix
it) and exit with status 2; ``--debug`` shows the traceback instead. A reader
that closes the pipe early (``airway models --json | head -1``) ends the
command quietly with status 141 (128 + SIGPIPE, as other Unix tools).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

import core
import core.commands
from core.errors import AirwayError, Cancelled


def build_parser(prog: str = "airway") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Airway Studio command line: pulmonary airway segmentation, evaluation and training.",
    )
    parser.add_argument("--version", action="version", version=f"Airway Studio {core.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(core.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"core.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "airway") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or "--debug" in argv
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at interpreter exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except Cancelled as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 130
    except AirwayError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if debug:
            raise
        print(f"{prog}: error: out of memory. Close other programs, or crop/downsample the volume.", file=sys.stderr)
        return 2


def _silence_stdout() -> None:
    """The reader is gone: point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
        pass


def entry() -> None:  # console script `airway`
    sys.exit(main())


if __name__ == "__main__":
    entry()
