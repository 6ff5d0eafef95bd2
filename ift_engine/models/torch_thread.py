"""Training, dry runs and GGUF conversion run their PyTorch work on one long-lived thread.

PyTorch's CPU kernels run on an OpenMP team that belongs to the calling thread; a thread that
lives only for one call pays for a new team each time (a node thread of the old runner ran a
model 1.7x slower on an Intel Xeon). So this work goes to one thread that lives as long as the
process, whatever thread asks; calls from that thread itself run directly. Loaded models do
not come here: each has a long-lived worker of its own (``worker.py``; measured on a 2-core AMD
EPYC: batch-16 generation on a worker thread within 5% of the main thread).

A small daemon thread rather than ``ThreadPoolExecutor(1)``: the executor's thread is joined at
interpreter exit, so a Ctrl-C during a long job would wait for it to finish.
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
