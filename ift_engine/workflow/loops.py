"""Where a run's bookkeeping happens: one thread that takes the model workers' answers in turn.

A run never waits on a model. It submits prompts to the models' workers; each answer comes back
as a function ``post``-ed to the run's loop, which runs them one at a time on one thread: the
calling thread for ``ift run`` and batch runs (``LocalLoop``), the service's event loop for
requests (``AsyncioLoop``). So a run's state needs no locks, and the model threads spend no time
on parsing, caching or templates.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import queue
import time
from collections.abc import Callable
from typing import Protocol

Job = Callable[[], object]  # what it returns is ignored


class Loop(Protocol):
    def post(self, job: Job) -> None:
        """Run ``job`` on the loop's thread, soon (safe from any thread)."""
        ...

    def later(self, seconds: float, job: Job) -> Callable[[], None]:
        """Run ``job`` on the loop's thread after ``seconds`` (called from the loop's thread);
        the function returned calls it off."""
        ...


class LocalLoop:
    """A loop run by the calling thread until its run is done (``run_until``)."""

    def __init__(self) -> None:
        self._posted: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Job]] = []
        self._order = itertools.count()

    def post(self, job: Job) -> None:
        self._posted.put(job)

    def later(self, seconds: float, job: Job) -> Callable[[], None]:
        timer = [job]
        heapq.heappush(self._timers, (time.monotonic() + seconds, next(self._order), lambda: timer[0]()))
        return lambda: timer.__setitem__(0, lambda: None)

    def run_until(self, done: Callable[[], bool]) -> None:
        while not done():
            wait = None
            if self._timers:
                wait = max(0.0, self._timers[0][0] - time.monotonic())
            try:
                self._posted.get(timeout=wait)()
            except queue.Empty:
                pass
            while self._timers and self._timers[0][0] <= time.monotonic():
                heapq.heappop(self._timers)[2]()


class AsyncioLoop:
    """A run's loop on a running asyncio event loop (the service's)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def post(self, job: Job) -> None:
        self.loop.call_soon_threadsafe(job)

    def later(self, seconds: float, job: Job) -> Callable[[], None]:
        return self.loop.call_later(seconds, job).cancel
