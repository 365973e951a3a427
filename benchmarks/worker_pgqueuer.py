"""Runs one PgQueuer worker as `pgq run app_pgqueuer:create --batch-size N` does (uvloop when installed).

Through PgQueuer's documented `pgqueuer.run` API, because `pgq run` 1.6.0 fails at start with the
installed Typer (its --log-level option arrives as a str).
"""

from __future__ import annotations

import asyncio
import logging
import sys

import pgqueuer


def main() -> None:
    batch_size = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    logging.basicConfig(level=logging.WARNING)
    coro = pgqueuer.run("app_pgqueuer:create", batch_size=batch_size)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    main()
