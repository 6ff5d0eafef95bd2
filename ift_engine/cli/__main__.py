"""``python -m ift_engine.cli``: the ``ift`` command."""

import sys

from . import main

sys.exit(main())
