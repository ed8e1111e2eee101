"""The lookup's hot path on the event loop: a small pool of psycopg async connections, no worker threads.

A lookup is three statements in one transaction: who is asking and whom the ID's token names (one statement,
as the service's login), SET LOCAL ROLE, and the person as the consumer's role sees them. Run through
SQLAlchemy in a worker thread, each request paid a thread hop and the ORM layer's bookkeeping on a 2-core
machine where the GIL is the bottleneck; here it is three awaits on a connection taken from a queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from service.records import PERSON_COLUMNS

AUTH_AND_INDEX = (
    "SELECT name, role, key_hash, revoked_at, (SELECT person_key FROM service.lookup_index WHERE lookup_token = %s) "
    "FROM service.api_consumer WHERE key_id = %s"
)
ACT_AS = "SELECT set_config('role', %s, true)"
PERSON = f"SELECT {', '.join(PERSON_COLUMNS)} FROM core.person WHERE person_key = %s"


class ConnectionPool:
    """Up to ``size`` async connections, made on demand, handed out one request at a time."""

    def __init__(self, dsn: str, size: int = 20) -> None:
        self.dsn, self.size = dsn, size
        self._idle: asyncio.Queue[psycopg.AsyncConnection[dict[str, Any]]] = asyncio.Queue()
        self._made = 0
        self._all: set[psycopg.AsyncConnection[dict[str, Any]]] = set()

    async def _take(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self._idle.empty() and self._made < self.size:
            self._made += 1
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, row_factory=dict_row)
            except BaseException:
                self._made -= 1
                raise
            self._all.add(conn)
            return conn
        return await self._idle.get()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """A connection inside a transaction (committed on success, rolled back on error), in pipeline mode
        (statements are sent without waiting; a fetch waits); a broken connection is dropped and replaced."""
        conn = await self._take()
        try:  # pipelined: BEGIN goes with the first statement, COMMIT with nothing to wait for after the last
            async with conn.pipeline(), conn.transaction():
                yield conn
        except BaseException:
            if conn.closed or conn.broken:
                self._all.discard(conn)
                self._made -= 1
            else:
                self._idle.put_nowait(conn)
            raise
        self._idle.put_nowait(conn)

    async def close(self) -> None:
        """Close every connection."""
        for conn in list(self._all):
            await conn.close()
        self._all.clear()
