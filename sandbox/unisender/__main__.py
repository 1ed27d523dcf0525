"""Run the Unisender emulator: `python -m sandbox.unisender --host 127.0.0.1 --port 8102`."""

from __future__ import annotations

import argparse
import logging

from werkzeug.serving import run_simple

from sandbox.unisender.app import create_app


def main() -> None:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.unisender", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8102)
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    app = create_app()
    # Threaded: a `hang` or latency fault must stall only its own request, and several sync
    # workers (plus the control API) talk to the emulator at once, as with the real service.
    run_simple(options.host, options.port, app, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
