"""Subcommands of the ``airway`` command line.

Each module here defines ``register(subparsers)``, which adds one or more
subcommands whose handler is stored as ``func`` (taking the parsed namespace and
returning an exit status). ``core.cli`` discovers the modules, so a new command
is one new file.
"""
