"""``ift serve``: workflows and models over HTTP, in this process or on Ray Serve replicas."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from ..errors import IftError

if TYPE_CHECKING:
    from ..serve import ServeConfig


def add_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve", help="serve workflows and models over HTTP (REST, SSE, OpenAI-compatible)"
    )
    serve.add_argument("paths", nargs="*", help="workflow files or folders of them (default: workflows/)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--port", type=port_number, default=8000, help="1..65535 (default 8000)")
    serve.add_argument("--api-key", help="require Authorization: Bearer KEY (or set IFT_ENGINE_API_KEY)")
    serve.add_argument("--workers", type=int, help="server processes, each with its own models (default 1)")
    on_ray = serve.add_argument_group("Ray Serve (the serve and ray extras)")
    on_ray.add_argument("--ray", action="store_true", help="serve on Ray: replicas, each with its own models")
    on_ray.add_argument("--replicas", type=int, metavar="N", help="copies of the service (default 2)")
    on_ray.add_argument("--replica-cpus", type=float, default=1.0, metavar="C", help="CPUs per replica")
    on_ray.add_argument("--ray-address", metavar="ADDR", help="cluster to join (default: start one)")
    serve.add_argument("--no-cache", action="store_true", help="neither read nor write the answer cache")
    serve.set_defaults(func=cmd_serve)


def port_number(text: str) -> int:
    """A TCP port (argparse then says which flag and value are wrong, exit 2)."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 1 to 65535")
    return int(text)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from ..serve import ServeConfig, serve
    except ImportError as exc:
        raise IftError(
            f"ift serve needs the serve extra: pip install 'ift-engine[serve]' ({exc.name} is missing)"
        ) from None
    config = ServeConfig(
        paths=args.paths or ["workflows"],
        api_key=args.api_key or os.environ.get("IFT_ENGINE_API_KEY") or None,
        cache=not args.no_cache,
    )
    if not args.ray:
        if args.replicas is not None or args.ray_address:
            raise IftError("--replicas and --ray-address belong to --ray; without it the service runs here")
        serve(config, host=args.host, port=args.port, workers=1 if args.workers is None else args.workers)
        return 0
    serve_ray(config, args)
    return 0


def serve_ray(config: ServeConfig, args: argparse.Namespace) -> None:
    from ..cluster import check_reachable, need_ray

    if args.workers is not None:
        raise IftError("--workers is for one machine; with --ray say --replicas N")
    need_ray("ray[serve]")
    from ..serve import check_port_free
    from ..serve.ray import serve_on_ray

    check_port_free(args.host, args.port)
    if args.ray_address:
        check_reachable(args.ray_address)
    replicas = 2 if args.replicas is None else args.replicas
    serve_on_ray(config, args.host, args.port, replicas, args.replica_cpus, args.ray_address)
