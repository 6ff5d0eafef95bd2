"""``python -m ift_engine.cli``: the ``ift`` command."""

from . import run

run()
