"""The lookup's hot path on the event loop: a small pool of psycopg async connections, no worker threads.

A lookup is one statement, ``service.lookup(token, key_id)`` (migration 0004): it reads who is asking and
whom the ID's token names as the service's login, sets the consumer's role for the rest of the statement's
transaction, and reads the person under it, so row-level security decides. Run through SQLAlchemy in a worker
thread, each request paid a thread hop, five round trips and the ORM layer's bookkeeping on a 2-core machine
where the server's GIL is the bottleneck; here it is one await. A database made before the function existed
gets the same three statements in one transaction instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from service.records import PERSON_COLUMNS

LOOKUP = "SELECT name, role, key_hash, revoked_at, person FROM service.lookup(%s, %s)"
HAS_LOOKUP = "SELECT to_regprocedure('service.lookup(text, text)') IS NOT NULL AS present"
AUTH_AND_INDEX = (
    "SELECT name, role, key_hash, revoked_at, "
    "(SELECT person_key FROM service.lookup_index WHERE lookup_token = %s LIMIT 1) "
    "FROM service.api_consumer WHERE key_id = %s"
)
ACT_AS = "SELECT set_config('role', %s, true)"
PERSON = f"SELECT {', '.join(PERSON_COLUMNS)} FROM core.person WHERE person_key = %s"


class ConnectionPool:
    """Up to ``size`` async connections (autocommit: one statement is one transaction), made on demand."""

    def __init__(self, dsn: str, size: int = 20) -> None:
        self.dsn, self.size = dsn, size
        self._idle: asyncio.Queue[psycopg.AsyncConnection[dict[str, Any]]] = asyncio.Queue()
        self._made = 0
        self._all: set[psycopg.AsyncConnection[dict[str, Any]]] = set()

    async def _take(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self._idle.empty() and self._made < self.size:
            self._made += 1
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, row_factory=dict_row, autocommit=True)
            except BaseException:
                self._made -= 1
                raise
            self._all.add(conn)
            return conn
        return await self._idle.get()

    def _give_back(self, conn: psycopg.AsyncConnection[dict[str, Any]]) -> None:
        if conn.closed or conn.broken:  # replaced on the next demand
            self._all.discard(conn)
            self._made -= 1
        else:
            self._idle.put_nowait(conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """A connection for one request; each statement is its own transaction."""
        conn = await self._take()
        try:
            yield conn
        finally:
            self._give_back(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """A connection inside one transaction (committed on success, rolled back on error)."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def has_lookup(self) -> bool:
        """Whether the database has ``service.lookup`` (one statement per lookup)."""
        async with self.connection() as conn:
            row = await (await conn.execute(HAS_LOOKUP)).fetchone()
        return bool(row and row["present"])

    async def close(self) -> None:
        """Close every connection."""
        for conn in list(self._all):
            await conn.close()
        self._all.clear()
