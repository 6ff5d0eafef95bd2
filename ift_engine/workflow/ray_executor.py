"""Batch runs on a Ray cluster (the optional ``ift-engine[ray]`` extra).

Each worker is a Ray actor that builds the workflow and loads its models once, then runs whole
batches with the same ``Runner`` as the local executor, so results and output rows are the
same. The driver keeps one batch in flight per actor and reads the inputs lazily, so a file of
any size streams through. Actors rather than Ray Data: a batch run is an ordered stream of small
batches with per-item error rows, which a pool of stateful actors expresses directly.

Workers need ift_engine, the plugins the workflow uses, and the model files at the same paths
(relative paths are taken from the driver's working directory).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..cluster import check_reachable, need_ray, start_ray
from ..errors import IftError, WorkflowError
from .batch import Item, run_items
from .runner import Runner, RunResult

#: Builds a workflow's runner in a worker process: picklable (a module-level function, or a
#: ``functools.partial`` of one), so Ray ships it by name.
RunnerFactory = Callable[[], Runner]


class BatchWorker:
    """Runs batches in a Ray worker process; the workflow and its models load once."""

    def __init__(self, make_runner: RunnerFactory, cwd: str) -> None:
        self.make_runner, self.cwd = make_runner, cwd

    def ready(self) -> None:
        """Build the workflow and load its models (a method, not ``__init__``, so that an error
        reaches the driver as the engine's own exception)."""
        os.chdir(self.cwd)
        self.runner = self.make_runner()
        self.runner.load_models()

    def run(self, batch: list[Item]) -> list[RunResult]:
        return run_items(self.runner, batch)


class RayExecutor:
    """Runs batches on Ray actors: one per CPU of the cluster unless ``workers`` says.
    ``make_runner`` builds the workflow's runner in each actor."""

    def __init__(
        self,
        make_runner: RunnerFactory,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_worker: float = 1.0,
    ) -> None:
        need_ray("ray")
        if workers is not None and workers < 1:
            raise WorkflowError(f"--workers must be at least 1, not {workers} (leave it out for one per CPU)")
        if address is not None:
            check_reachable(address)  # when the command starts, not after the output is opened
        self.make_runner = make_runner
        self.address = address
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker

    def map_batches(self, batches: Iterable[list[Item]]) -> Iterator[list[RunResult]]:
        import ray

        started = start_ray(self.address)
        actors: list[Any] = []
        try:
            cpus = ray.cluster_resources().get("CPU", 1.0)
            count = self.workers or max(1, int(cpus // self.cpus_per_worker))
            worker = ray.remote(num_cpus=self.cpus_per_worker)(BatchWorker)
            actors = [worker.remote(self.make_runner, os.getcwd()) for _ in range(count)]
            _get([actor.ready.remote() for actor in actors])
            yield from self._stream(actors, iter(batches))
        finally:
            for actor in actors:  # free their CPUs for the next run on a shared cluster
                ray.kill(actor)
            if started:
                ray.shutdown()

    @staticmethod
    def _stream(actors: list[Any], batches: Iterator[list[Item]]) -> Iterator[list[RunResult]]:
        import ray

        idle, in_flight = list(actors), {}
        while True:
            while idle:
                batch = next(batches, None)
                if batch is None:
                    break
                actor = idle.pop()
                in_flight[actor.run.remote(batch)] = actor
            if not in_flight:
                return
            [ready], _ = ray.wait(list(in_flight), num_returns=1)
            idle.append(in_flight.pop(ready))
            yield _get(ready)


def _get(refs: Any) -> Any:
    """``ray.get``, with the engine's own errors raised as themselves (one clear line)."""
    import ray

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, IftError):  # e.g. a worker cannot load a model
            raise WorkflowError(str(exc.cause)) from None
        raise
