"""The service on Ray Serve: ``ift serve --ray [--replicas N]``, or as a deployment of your own.

Each replica is a Ray actor that builds the same app ``ift serve`` runs (its own workflows,
model workers and answer cache) and Ray Serve's proxy spreads requests over the replicas, so
the HTTP API is unchanged. To deploy it yourself::

    serve run ift_engine.serve.ray:build_app paths=workflows replicas=2

(``build_app`` takes Ray Serve's application arguments: ``paths`` a comma-separated list,
``replicas``, ``cpus`` per replica, ``api_key``, ``cache``.) Replicas need ift_engine, the plugins
and the model files at the same paths; relative paths are taken from the driver's folder.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from typing import Any

from ray import serve
from ray.serve import Application

from ..errors import IftError
from .app import ServeConfig, create_app

#: Requests one replica takes at once. Ray Serve's default (5) would starve continuous batching:
#: a replica's workers batch everything waiting, so it should see every request it can hold.
MAX_ONGOING_REQUESTS = 256


class IftReplica:
    """One copy of the service: builds the app when the replica starts, in the driver's folder."""

    def __init__(self, config: dict[str, Any], cwd: str) -> None:
        os.chdir(cwd)
        self.config = ServeConfig(**config)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.config)


REPLICA = serve.deployment(name="ift", max_ongoing_requests=MAX_ONGOING_REQUESTS)(serve.ingress()(IftReplica))


def deployment(config: ServeConfig, replicas: int = 2, cpus: float = 1.0) -> Application:
    """The service as a Ray Serve application of ``replicas`` copies, ``cpus`` CPUs each."""
    if not 1 <= replicas <= 256:
        raise IftError(f"--replicas must be between 1 and 256, not {replicas}")
    if not 0 < cpus <= 1024:
        raise IftError(f"--replica-cpus must be above 0, not {cpus:g}")
    options = REPLICA.options(num_replicas=replicas, ray_actor_options={"num_cpus": cpus})
    return options.bind(dataclasses.asdict(config), os.getcwd())


def build_app(args: dict[str, str]) -> Application:
    """Ray Serve's application builder, for ``serve run ift_engine.serve.ray:build_app``."""
    config = ServeConfig(
        paths=args.get("paths", "workflows").split(","),
        api_key=args.get("api_key") or os.environ.get("IFT_ENGINE_API_KEY") or None,
        cache=args.get("cache", "true").lower() not in ("0", "false", "no"),
    )
    create_app(config)  # the workflows are checked here, before any replica starts
    return deployment(config, int(args.get("replicas", "2")), float(args.get("cpus", "1")))


def serve_on_ray(
    config: ServeConfig,
    host: str,
    port: int,
    replicas: int,
    cpus: float = 1.0,
    address: str | None = None,
) -> None:
    """Serve on Ray until SIGTERM or Ctrl-C, then take the application down again."""
    from ..cluster import start_ray

    app = deployment(config, replicas, cpus)
    create_app(config)  # check the workflows once, here, before the replicas start
    started = start_ray(address)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name="ift", route_prefix="/")
        print(f"ift serve: {replicas} replica(s) on Ray, listening on http://{host}:{port}", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        if started:
            import ray

            ray.shutdown()
