"""Every benchmark in turn (`make bench`); each records its own section of BENCHMARKS.md.

    .venv/bin/python -m bench.run_all [--quick] [--large]

`--quick` shortens every run (for checking the scripts, not for figures); `--large` adds the
100k-contact full sync (minutes).
"""

from __future__ import annotations

import argparse
import sys

from bench import burst, fullsync, ingest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--large", action="store_true", help="also the 100k full sync")
    args = parser.parse_args(argv)
    failures = 0
    ingest_args = ["--seconds", "3"] if args.quick else []
    fullsync_args = ["--contacts", "2000"] if args.quick else []
    if args.large:
        fullsync_args += ["--large", "100000"]
    burst_args = ["--events", "2000"] if args.quick else []
    for name, run, argv_ in (
        ("ingest", ingest.main, ingest_args),
        ("fullsync", fullsync.main, fullsync_args),
        ("burst", burst.main, burst_args),
    ):
        print(f"=== bench.{name} {' '.join(argv_)}", flush=True)
        code = run(argv_)
        failures += code != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
