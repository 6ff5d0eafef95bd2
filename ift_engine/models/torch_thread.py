"""Every PyTorch operation of the engine runs on one thread for the life of the process.

PyTorch's CPU kernels run on an OpenMP team that belongs to the thread that first used it. Driven
from any other thread, a model got about one core's worth of speed on the 2-core development
machines (measured on an AMD EPYC: batch-16 generation 28% slower from a second thread; on an
Intel Xeon a node of the runner ran 1.7x slower), and setting the thread count there does not
help. So model loading, generation, scoring, classification and training are handed to one
long-lived thread, whatever thread asks; calls from that thread itself run directly. This also
serialises the models' calls, as a lock per model did before.

A small daemon thread rather than ``ThreadPoolExecutor(1)``: the executor's thread is joined at
interpreter exit, so a Ctrl-C during a long generation would wait for it to finish.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
_thread: threading.Thread | None = None
_start = threading.Lock()


def _work() -> None:
    while True:
        future, job = _jobs.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(job())
        except BaseException as exc:  # handed to the caller
            future.set_exception(exc)


def run_on_torch_thread(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``function(*args, **kwargs)`` on the torch thread, waiting for its result."""
    global _thread
    if threading.current_thread() is _thread:
        return function(*args, **kwargs)
    with _start:
        if _thread is None:
            _thread = threading.Thread(target=_work, name="ift-torch", daemon=True)
            _thread.start()
    future: Future[R] = Future()
    _jobs.put((future, functools.partial(function, *args, **kwargs)))
    return future.result()


def on_torch_thread(function: Callable[P, R]) -> Callable[P, R]:
    """Decorate a function (or method) so that it always runs on the torch thread."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return run_on_torch_thread(function, *args, **kwargs)

    return wrapper
