"""Joining or starting a Ray cluster, shared by batch runs (``ift run --executor ray``) and the
service (``ift serve --ray``). Ray itself is an optional extra and imported only here, late."""

from __future__ import annotations

import os
import socket

from .errors import IftError

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
        raise IftError(
            f"--ray-address {address!r}: give HOST:PORT of the cluster's head (or ray://HOST:PORT)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or type(exc).__name__
        raise IftError(
            f"cannot reach Ray at {address} within {timeout:g} s ({reason}); check --ray-address, or "
            "leave it out to start a local Ray"
        ) from None


def need_ray(what: str) -> None:
    """A one-line error naming the extra when Ray (or Ray Serve) is not installed."""
    try:
        import ray  # noqa: F401

        if what == "ray[serve]":
            import ray.serve  # noqa: F401
    except ImportError as exc:
        extra = "serve,ray" if what == "ray[serve]" else "ray"
        raise IftError(
            f"this needs {what}: pip install 'ift-engine[{extra}]' ({exc.name} is missing)"
        ) from None


def start_ray(address: str | None) -> bool:
    """Join the cluster at ``address`` (or start a local one); True if this call started Ray,
    so the caller shuts it down again. Engine settings travel to the workers' environment."""
    import ray

    if ray.is_initialized():
        return False
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    except Exception as exc:  # noqa: BLE001 - Ray raises several kinds; all mean "no cluster"
        raise IftError(f"cannot start Ray at {address or 'a local Ray instance'}: {exc}") from None
    return True
