"""Batching across requests: requests that arrive together share one model call.

A ``Batcher`` owns a queue. Its loop takes the first waiting request, waits up to ``max_wait``
seconds for company (up to ``max_batch`` in all), and runs the whole batch with one call of its
function on the service's model thread; while a batch runs, the next one gathers. For a
workflow the function is ``Runner.run_batch``, so every node of the workflow sends the prompts
of all the batch's requests to its model in one call. A request cancelled while it waits (its
client went away) is dropped before its batch runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchStats:
    """What the metrics report: batch sizes formed and requests waiting."""

    on_batch: Callable[[int], None] = lambda size: None
    on_depth: Callable[[int], None] = lambda depth: None


@dataclass
class Batcher(Generic[T, R]):
    run: Callable[[list[T]], list[R]]
    executor: Executor
    max_batch: int = 16
    max_wait: float = 0.01
    stats: BatchStats = field(default_factory=BatchStats)
    _queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
    _task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """The result of ``item``, computed in a batch with the requests around it."""
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        self.stats.on_depth(self._queue.qsize())
        return await future

    async def _gather(self) -> list[tuple[T, asyncio.Future[R]]]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            else:
                batch.append(self._queue.get_nowait())
        self.stats.on_depth(self._queue.qsize())
        return [(item, future) for item, future in batch if not future.done()]  # drop cancelled ones

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            self.stats.on_batch(len(batch))
            try:
                results = await loop.run_in_executor(self.executor, self.run, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
