"""``python -m bmdgan`` is the same as the ``bmdgan`` command."""

import sys

from .cli.main import main

sys.exit(main())
