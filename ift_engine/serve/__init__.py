"""``ift serve``: workflows and models as an HTTP service (needs the ``serve`` extra)."""

from __future__ import annotations

import json
import os
import signal
import sys

from .app import ServeConfig, create_app

CONFIG_VARIABLE = "IFT_ENGINE_SERVE_CONFIG"


def app_from_environment() -> object:
    """The app for the config in ``$IFT_ENGINE_SERVE_CONFIG`` (uvicorn's factory, one per worker)."""
    return create_app(ServeConfig(**json.loads(os.environ[CONFIG_VARIABLE])))


def check_port_free(host: str, port: int) -> None:
    """A port another program holds is a one-line error before any model loads."""
    import socket

    from ..errors import IftError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise IftError(f"--host {host}: cannot resolve it ({exc.strerror or exc})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise IftError(
                f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); choose another port"
            ) from None


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the service with uvicorn until SIGTERM or Ctrl-C (in-flight requests finish first)."""
    import dataclasses

    import uvicorn

    from ..errors import IftError

    if not 1 <= workers <= 64:
        raise IftError(f"--workers must be between 1 and 64, not {workers}")
    check_port_free(host, port)
    # uvicorn drains, then raises the SIGTERM it caught again: this handler makes that a clean
    # exit (status 0), as a service manager expects of a stop it asked for.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    common = {"host": host, "port": port, "timeout_graceful_shutdown": 60, "log_level": "info"}
    if workers == 1:
        uvicorn.run(create_app(config), **common)  # type: ignore[arg-type]
        return
    create_app(config)  # check the workflows once, here, before the workers start
    # uvicorn starts each worker process from an import string: the environment it inherits is
    # how the config reaches it. Set for the server's lifetime only.
    os.environ[CONFIG_VARIABLE] = json.dumps(dataclasses.asdict(config))
    try:
        uvicorn.run("ift_engine.serve:app_from_environment", factory=True, workers=workers, **common)  # type: ignore[arg-type]
    finally:
        os.environ.pop(CONFIG_VARIABLE, None)


__all__ = ["ServeConfig", "create_app", "serve"]
