"""``python -m backend.cli``: the ``damnit`` command."""

import sys

from backend.cli import main

sys.exit(main())
