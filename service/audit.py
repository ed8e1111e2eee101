"""Every request in the hub's chained audit log, durable before the answer goes out, at hundreds per second.

``privacy.audit_log.append_audit`` writes one entry per fsync and database transaction (≈ 12 ms here), which
would cap the service near 80 requests/s. ``AuditWriter`` keeps that log's format, chain, lock and both
heads, but group-commits: one thread takes every event queued since its last write, chains them, writes
them with one fsync and moves both heads once. A request waits until its own entry is down, so an answer is
never sent for a request the log does not hold. Reveals still go through ``privacy.reveal``, which takes
the same file lock, so both write one chain.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from privacy import audit_log as chain
from privacy.keyring import Keyring
from schemas.base import HubError, write_atomic

log = logging.getLogger(__name__)

_STOP = object()
_NATIVE = (str, int, float, bool, type(None))  # values JSON stores as they are


class AuditUnavailable(HubError):
    """The audit log could not take a request's entry; the request is refused rather than served unlogged."""


def append_many(path: Path, events: Sequence[Mapping[str, Any]], engine: sa.Engine, keyring: Keyring) -> list[dict]:
    """Append ``events`` to the chained log at ``path`` in one write: the same entries, heads and refusals as
    ``append_audit`` called once per event, with one fsync and one head move for all of them."""
    with chain._locked(path):
        last = chain._last_entry(path)
        if last is not None and last.get("chain_key_version") != keyring.active_version:
            chain._reseal_locked(path, engine, keyring)  # the first entry under a new key vouches for the old
            last = chain._last_entry(path)
        with engine.begin() as conn:  # the database head commits only after the lines and the head file are down
            tail = (int(last["seq"]), str(last["hash"])) if last else (0, chain.GENESIS_HASH)
            for where, head in (("head file", chain._file_head(path)), ("hub database", _db_head(conn, path.name))):
                if (head or (0, chain.GENESIS_HASH)) != tail:
                    raise chain.AuditLogError(f"{path}: the log and its {where} head disagree; run verify-log")
            version, (seq, prev) = keyring.active_version, tail
            entries, lines = [], []
            for event in events:
                entry: dict[str, Any] = {"timestamp": datetime.now(UTC).isoformat(timespec="microseconds"), **event}
                entry |= {"seq": seq + 1, "prev_hash": prev, "chain_key_version": version}
                if not all(isinstance(v, _NATIVE) for v in entry.values()):  # MAC exactly what is stored
                    entry = json.loads(json.dumps(entry, ensure_ascii=False, default=str))
                entry["hash"] = chain.entry_mac(entry, keyring, version)
                seq, prev = entry["seq"], entry["hash"]
                entries.append(entry)
                lines.append(json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n")
            chain._move_db_head(conn, path, tail, entries[-1])
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write("".join(lines))
                fh.flush()
                os.fsync(fh.fileno())
            write_atomic(chain._head_path(path), json.dumps({"seq": seq, "hash": prev}) + "\n")
    return entries


def _db_head(conn: sa.Connection, name: str) -> tuple[int, str] | None:
    """The database head of a log (the table exists: migration 0001 made it; no inspection per batch)."""
    row = conn.exec_driver_sql("SELECT seq, hash FROM audit_head WHERE log = %s", (name,)).first()
    return None if row is None else (int(row.seq), str(row.hash))


class AuditWriter:
    """A thread that group-commits audit events; ``record`` returns once the event's entry is durable."""

    def __init__(self, log_path: Path, engine: sa.Engine, keyring: Keyring, max_batch: int = 1000) -> None:
        self.log_path, self.engine, self.keyring, self.max_batch = Path(log_path), engine, keyring, max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.batches, self.entries, self.seconds = 0, 0, 0.0  # what the writer did (counts, time writing)
        self._thread = threading.Thread(target=self._run, name="hub-audit-writer", daemon=True)
        self._thread.start()

    def submit(self, event: Mapping[str, Any]) -> Future[dict[str, Any]]:
        """Queue one event; the future holds its stored entry once it is durable (or AuditLogError)."""
        done: Future[dict[str, Any]] = Future()
        self._queue.put((dict(event), done))
        return done

    def record(self, event: Mapping[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Queue one event and wait for its stored entry; AuditUnavailable when it could not be written."""
        try:
            return self.submit(event).result(timeout=timeout)
        except chain.AuditLogError as exc:
            raise AuditUnavailable(f"audit log unavailable: {exc}") from None
        except TimeoutError:
            raise AuditUnavailable("audit log did not take the entry in time") from None

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join()
        if self.batches:
            log.info(
                "audit writer: %d entries in %d writes, %.1f ms per write",
                self.entries, self.batches, 1000 * self.seconds / self.batches,
            )  # fmt: skip

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                batch = [b for b in batch if b is not _STOP]
            if not batch:
                continue
            started = time.perf_counter()
            try:
                entries = append_many(self.log_path, [e for e, _ in batch], self.engine, self.keyring)
            except Exception as exc:  # every waiting request learns it; none is answered unlogged
                log.error("audit log write failed (%s); %d requests refused", type(exc).__name__, len(batch))
                for _, done in batch:
                    done.set_exception(exc if isinstance(exc, chain.AuditLogError) else chain.AuditLogError(str(exc)))
                continue
            self.batches, self.entries = self.batches + 1, self.entries + len(batch)
            self.seconds += time.perf_counter() - started
            for (_, done), entry in zip(batch, entries, strict=True):
                done.set_result(entry)
