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
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import IftError, WorkflowError
from .batch import Item, run_items
from .runner import RunResult

if TYPE_CHECKING:
    from .workflow import Workflow

#: Environment variables the workers need to see the same plugins, caches and hub settings.
FORWARDED_ENV = ("IFT_ENGINE_", "HF_", "TRANSFORMERS_")
#: Seconds to reach a cluster's head before giving up (Ray itself would wait for ever).
CONNECT_TIMEOUT = 10.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Refuse, within ``timeout`` seconds, a ``HOST:PORT`` (or ``ray://HOST:PORT``) address
    that accepts no connection. ``auto`` and ``local`` are Ray's own and left to it."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise WorkflowError(
            f"--ray-address {address!r}: give HOST:PORT of the cluster's head (or ray://HOST:PORT)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or type(exc).__name__
        raise WorkflowError(
            f"cannot reach Ray at {address} within {timeout:g} s ({reason}); check --ray-address, or "
            "leave it out to start a local Ray"
        ) from None


class BatchWorker:
    """Runs batches in a Ray worker process; the workflow and its models load once."""

    def __init__(self, spec: dict[str, Any], source: str, cwd: str, cache: str | None) -> None:
        self.args = (spec, source, cwd, cache)

    def ready(self) -> None:
        """Build the workflow and load its models (a method, not ``__init__``, so that an error
        reaches the driver as the engine's own exception)."""
        spec, source, cwd, cache = self.args
        os.chdir(cwd)
        from .workflow import Workflow

        self.runner = Workflow.from_dict(spec, source=source).runner(cache or False)
        self.runner.load_models()

    def run(self, batch: list[Item]) -> list[RunResult]:
        return run_items(self.runner, batch)


class RayExecutor:
    """Runs batches on Ray actors: one per CPU of the cluster unless ``workers`` says."""

    def __init__(
        self,
        workflow: Workflow,
        address: str | None = None,
        workers: int | None = None,
        cache: Path | None = None,
        cpus_per_worker: float = 1.0,
    ) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise WorkflowError("the ray executor needs Ray: pip install 'ift-engine[ray]'") from None
        if workers is not None and workers < 1:
            raise WorkflowError(f"--workers must be at least 1, not {workers} (leave it out for one per CPU)")
        if address is not None:
            check_reachable(address)  # when the command starts, not after the output is opened
        self.spec = workflow.to_dict()
        self.source = workflow.source
        self.address = address
        self.workers = workers
        self.cache = str(cache) if cache else None
        self.cpus_per_worker = cpus_per_worker

    def _start(self) -> bool:
        import ray

        if ray.is_initialized():
            return False
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
        try:
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": env},
            )
        except Exception as exc:  # noqa: BLE001 - Ray raises several kinds; all mean "no cluster"
            where = self.address or "a local Ray instance"
            raise WorkflowError(f"cannot start Ray at {where}: {exc}") from None
        return True

    def map_batches(self, batches: Iterable[list[Item]]) -> Iterator[list[RunResult]]:
        import ray

        started = self._start()
        actors: list[Any] = []
        try:
            cpus = ray.cluster_resources().get("CPU", 1.0)
            count = self.workers or max(1, int(cpus // self.cpus_per_worker))
            worker = ray.remote(num_cpus=self.cpus_per_worker)(BatchWorker)
            actors = [worker.remote(self.spec, self.source, os.getcwd(), self.cache) for _ in range(count)]
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
