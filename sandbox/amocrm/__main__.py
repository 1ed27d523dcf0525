"""`python -m sandbox.amocrm --host 127.0.0.1 --port 8101`."""

from __future__ import annotations

import argparse
import logging

from werkzeug.serving import run_simple

from sandbox.amocrm.app import create_app
from sandbox.amocrm.config import SandboxConfig


def main(argv: list[str] | None = None) -> None:
    """Parse arguments (overriding the environment) and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.amocrm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--client-id")
    parser.add_argument("--client-secret")
    parser.add_argument("--redirect-uri")
    parser.add_argument("--disable-hook-url")
    parser.add_argument("--token-ttl", type=int)
    parser.add_argument("--rate-limit", type=int)
    parser.add_argument("--latency-ms", type=int)
    args = parser.parse_args(argv)
    config = SandboxConfig.from_env(
        client_id=args.client_id,
        client_secret=args.client_secret,
        redirect_uri=args.redirect_uri,
        disable_hook_url=args.disable_hook_url,
        token_ttl=args.token_ttl,
        rate_limit=args.rate_limit,
        latency_ms=args.latency_ms,
    )
    logging.basicConfig(level=logging.INFO)
    # Threaded: webhook delivery runs inside a control request, and the receiver may call back
    # into this API before answering (a single-threaded server would deadlock); concurrent
    # workers also need to be served in parallel for the rate limit to mean anything.
    run_simple(args.host, args.port, create_app(config), threaded=True)


if __name__ == "__main__":
    main()
