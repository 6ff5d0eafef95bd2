"""The terminal streams every ``ift`` command writes to: results on ``out``, progress and
messages on ``err``."""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
