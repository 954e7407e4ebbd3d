"""Runs pgmig's offline migration once, in its own process, for the benchmark (see methods.pgmig).

Exits 3 when pgmig's offline API cannot be imported (it is still being written), so the benchmark can
report "unavailable" rather than "failed".
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

UNAVAILABLE_EXIT = 3


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source-port", type=int, required=True)
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--password-env", required=True)
    return parser.parse_args()


def main() -> None:
    args = parse()
    try:
        from migration_core.offline import OfflineOptions, run_offline
        from migration_core.servers import ServerConfig
    except Exception as exc:  # noqa: BLE001 - half-written code may fail in any way; all mean "not available"
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(UNAVAILABLE_EXIT)

    def server(name: str, port: int) -> ServerConfig:
        return ServerConfig(name=name, host="127.0.0.1", port=port, user="postgres",
                            password_env=args.password_env, sslmode="disable")

    asyncio.run(run_offline(server("source", args.source_port), server("target", args.target_port),
                            databases=[args.database],
                            options=OfflineOptions(method="restore", parallel=args.jobs, overwrite=True),
                            workdir=args.workdir))


if __name__ == "__main__":
    main()
