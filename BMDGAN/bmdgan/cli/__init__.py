"""The ``bmdgan`` command line: one subcommand per module in :mod:`bmdgan.cli.commands`."""
