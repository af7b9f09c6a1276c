"""``python -m crysk``: the ``crysk`` command."""

import sys

from .cli import main

sys.exit(main())
