"""``python -m kvsessions``: the same as the ``kvsessions`` command."""

import sys

from .cli import main

sys.exit(main())
