"""Subcommands of ``bmdgan``.

Each module here is one subcommand, named after the module with ``_`` read as ``-``. A module defines
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``, and imports heavy packages
(torch, SimpleITK, matplotlib...) inside ``run`` only, so that ``bmdgan --help`` stays fast.
"""
