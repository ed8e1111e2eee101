"""Local copies of what a publish reads back from the database, so the next publish need not read it again.

A publish compares each table's new state with the (key, row_hash, community) of the rows the database holds,
and reads the identity lineage (``link_record``, 2.8 M rows at a million residents). Reading those back over
COPY costs a Python call per row (PostgreSQL sends one message per row): about 20 s at a million residents.
The publish that wrote a table knows exactly what it holds afterwards, so it keeps that as Parquet here, and
the lineage too (only rows of later link runs are read again).

A copy is used only while no publish since it was made changed its table: every hub write to a published table
goes with a ``core.publish_batch`` row of its own, in the same transaction, whose summary counts each table's
inserts, updates and deletes. A copy records the newest batch it reflects (id and start time, which a database
built anew does not repeat); it is current while that batch is still there and no later batch's summary changed
the table (``_unchanged_since``: a primary-key range of a few rows, where counting rows read every table, 1.8 s
per round at a million residents). The lineage copy records the newest link run in the same way (every change to
``link_record`` is a link run's). Anything else (another hub publishing into the same database, a downgrade, a
killed run, a database restored or rebuilt) makes the publish read the database, as before. A row changed in the
database by hand, outside any publish, is not noticed: remove this folder to make the next publish read
everything. The files hold pseudonymised keys, random person keys, hashes and community codes only (what staging
and the published tables hold too; a release table's copy adds the person key of each row, which the release tier
itself does not publish), and ``scope.json`` what the last publish read (batch ids, the last link run and
identity event, the build's fingerprint) for a scoped publish; they are 0600 in a 0700 folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from linkage import store as identity
from schemas.base import PRIVATE_FILE, fsync_dir, private_dir
from schemas.bulk import read_arrow
from schemas.unified import table

log = logging.getLogger(__name__)

_ROWS, _MARK = b"hub.rows", b"hub.mark"
LINEAGE_COLUMNS = ("dataset", "record_id", "person_key", "match_kind", "match_probability")


def _file(folder: Path, name: str) -> Path:
    return folder / f"{name}.parquet"


def _read(path: Path) -> tuple[pa.Table, str] | None:
    """A copy and the mark it was written under, or None when there is none (or it is not whole)."""
    if not path.is_file():
        return None
    try:
        data = pq.read_table(path)
        meta = data.schema.metadata or {}
        rows, mark = int(meta[_ROWS]), meta[_MARK].decode()
    except (OSError, KeyError, ValueError, pa.ArrowInvalid):
        log.warning("publish state copy %s is unreadable or from an older hub; reading the database instead", path.name)
        return None
    return (data, mark) if rows == data.num_rows else None


def _write(path: Path, data: pa.Table, mark: str) -> Path:
    """Write a copy under a temporary name (fsynced); ``commit`` renames it into place."""
    private_dir(path.parent)
    meta = {**(data.schema.metadata or {}), _ROWS: str(data.num_rows).encode(), _MARK: mark.encode()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # LZ4: keys and hashes hardly compress; zstd took 1.6 s to write and 1.0 s to read the 2.8 M-row lineage copy
    # (LZ4 0.9 s and 0.45 s, in 1.9x the space)
    pq.write_table(data.replace_schema_metadata(meta), tmp, compression="lz4")
    os.chmod(tmp, PRIVATE_FILE)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    return tmp


def _mark(number: int, started: Any) -> str:
    """``<id>@<start time>``, the time in UTC (a session's time zone does not change the mark)."""
    if isinstance(started, datetime) and started.tzinfo is not None:
        started = started.astimezone(UTC)
    return f"{number}@{started.isoformat() if isinstance(started, datetime) else started}"


def publish_mark(conn: sa.Connection) -> str:
    """The newest publish batch as ``<publish_id>@<started_at>`` ("" when there is none): what a copy written now
    reflects (inside the publish's transaction, after its own batch if it opened one)."""
    batch = table("core.publish_batch")
    row = conn.execute(
        sa.select(batch.c.publish_id, batch.c.started_at).order_by(batch.c.publish_id.desc()).limit(1)
    ).first()
    return "" if row is None else _mark(row[0], row[1])


def _unchanged_since(conn: sa.Connection, name: str, mark: str, own: int | None = None) -> bool:
    """Whether batch ``mark`` is still in the database and no later publish batch inserted, updated or deleted a
    row of table ``name`` (by each batch's summary; a batch without one counts as a change). ``own``: the batch
    the caller's transaction opened (its summary is written last; it has not written ``name`` yet)."""
    number, _, _started = mark.partition("@")
    since = int(number) if number else 0
    batch = table("core.publish_batch")
    rows = conn.execute(
        sa.select(batch.c.publish_id, batch.c.started_at, batch.c.summary)
        .where(batch.c.publish_id >= since)
        .order_by(batch.c.publish_id)
    ).all()
    if since:
        if not rows or _mark(rows[0][0], rows[0][1]) != mark:
            return False
        rows = rows[1:]
    for number_, _start, summary in rows:
        if number_ == own:
            continue
        try:
            counts = json.loads(summary)["tables"].get(name, {})
            if any(int(counts.get(k, 0)) for k in ("insert", "update", "delete")):
                return False
        except (TypeError, ValueError, KeyError, AttributeError):
            return False
    return True


class TableStates:
    """The copies of one hub's published tables; ``staged`` ones become current on ``commit``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.staged: list[tuple[Path, Path]] = []
        self.used: list[str] = []  # tables whose old state came from a copy (for logs and tests)
        # a copy is written in a thread while the publish goes on to the next table (Arrow's writer releases
        # the GIL); one at a time, so at most two tables' states are in memory
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="publish-state")
        self._pending: tuple[Future[Path], Path] | None = None
        self._held: dict[str, tuple[pa.Table, str]] = {}  # copies read with keep=True, read once
        self.opened: int | None = None  # the publish batch the merging transaction opened (``apply`` sets it)

    def _settle(self) -> None:
        """Wait for the copy being written; it joins the staged ones (its error, if any, is raised here)."""
        if self._pending is not None:
            future, path = self._pending
            self._pending = None
            self.staged.append((future.result(), path))

    def usable(self, conn: sa.Connection, t: sa.Table, columns: Sequence[str]) -> bool:
        """Whether the copy of ``t`` is current (``_unchanged_since``) and holds ``columns`` (read from its footer)."""
        path = _file(self.folder, t.fullname)
        try:
            meta = pq.read_metadata(path)
            schema = meta.schema.to_arrow_schema()
            rows, mark = int(schema.metadata[_ROWS]), schema.metadata[_MARK].decode()
        except (OSError, KeyError, ValueError, TypeError, pa.ArrowInvalid):
            return False
        return (
            rows == meta.num_rows
            and set(columns) <= set(schema.names)
            and _unchanged_since(conn, t.fullname, mark, self.opened)
        )

    def scope(self) -> dict[str, Any] | None:
        """What the last committed publish read: ``{"batches": [[dataset, batch_id], …], "link_run", "event_seq"}``."""
        try:
            data = json.loads(_file(self.folder, "scope").with_suffix(".json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and {"batches", "link_run", "event_seq"} <= set(data) else None

    def stage_scope(self, data: dict[str, Any]) -> None:
        """Record what this publish read (committed with the table copies)."""
        path = _file(self.folder, "scope").with_suffix(".json")
        private_dir(self.folder)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        self.staged.append((tmp, path))

    def old(self, conn: sa.Connection, t: sa.Table, keep: bool = False) -> pa.Table | None:
        """The copy of ``t`` if it is current (``_unchanged_since``), else None.

        ``keep``: hold the file read for the next call on the same table, which checks the table again but does
        not read the file again (the release tier reads its copies before it builds and again when it merges)."""
        found = self._held.pop(t.fullname, None) or _read(_file(self.folder, t.fullname))
        if found is None:
            return None
        if keep:
            self._held[t.fullname] = found
        data, mark = found
        if not _unchanged_since(conn, t.fullname, mark, self.opened):
            return None
        self.used.append(t.fullname)
        return data

    def stage(self, t: sa.Table, state: pa.Table, columns: Sequence[str], mark: str) -> None:
        """Keep ``columns`` of a table's state as published (as text, as the database reads them back); ``mark``:
        the newest publish batch it reflects (``publish_mark``)."""
        kept = state.select(list(columns))
        kept = kept.cast(pa.schema([(c, pa.string()) for c in kept.column_names]))
        path = _file(self.folder, t.fullname)
        self._settle()
        self._pending = (self._writer.submit(_write, path, kept, mark), path)

    def written(self) -> None:
        """Wait until every staged copy is on disk (before the transaction commits: a failed write fails it)."""
        self._settle()

    def commit(self) -> None:
        """After the publish's transaction committed: the staged copies become the current ones."""
        self._settle()
        for tmp, path in self.staged:
            os.replace(tmp, path)
        if self.staged:
            fsync_dir(self.folder)
        self.staged, self.opened = [], None

    def discard(self) -> None:
        """The transaction did not commit: forget the staged copies."""
        try:
            self._settle()
        except Exception:  # the copy is discarded with the publish, whose own error is raised
            log.warning("a publish state copy could not be written; it is discarded with the publish")
        for tmp, _ in self.staged:
            tmp.unlink(missing_ok=True)
        self.staged, self.opened = [], None


def _run_mark(conn: sa.Connection, run_id: int | None) -> str:
    """Link run ``run_id`` as ``<run_id>@<started_at>`` ("" when it is not in the database)."""
    if run_id is None:
        return ""
    run = identity.link_run
    started = conn.execute(sa.select(run.c.started_at).where(run.c.run_id == run_id)).scalar()
    return "" if started is None else _mark(run_id, started)


def read_lineage(conn: sa.Connection, folder: Path | None) -> pa.Table:
    """``link_record`` as publish reads it: the copy plus the rows of later link runs, while the run the copy was
    made after is still in the database (every change to ``link_record`` is a later run's: a record placed again
    is deleted and written anew with that run's id); the whole table from the database when there is no usable
    copy. Refreshes the copy."""
    columns = ", ".join(LINEAGE_COLUMNS)
    if folder is None:
        return read_arrow(conn, f"SELECT {columns} FROM link_record", LINEAGE_COLUMNS)
    top = conn.execute(sa.select(sa.func.max(identity.link_run.c.run_id))).scalar()
    path = _file(folder, "link_record")
    found = _read(path)
    lineage: pa.Table | None = None
    if found is not None and found[1]:
        cached, mark = found
        was = int(mark.partition("@")[0])
        if _run_mark(conn, was) == mark:
            newer = read_arrow(conn, f"SELECT {columns} FROM link_record WHERE run_id > {was}", LINEAGE_COLUMNS)
            if newer.num_rows == 0:
                return cached.cast(pa.schema([(c, pa.string()) for c in LINEAGE_COLUMNS]))
            con = duckdb.connect()
            try:
                con.register("cached", cached)
                con.register("newer", newer)
                lineage = con.sql(
                    "SELECT * FROM cached ANTI JOIN newer USING (dataset, record_id) UNION ALL SELECT * FROM newer"
                ).to_arrow_table()
            finally:
                con.close()
    if lineage is None:
        lineage = read_arrow(conn, f"SELECT {columns} FROM link_record", LINEAGE_COLUMNS)
    lineage = lineage.cast(pa.schema([(c, pa.string()) for c in LINEAGE_COLUMNS]))
    mark = _run_mark(conn, None if top is None else int(top))
    os.replace(_write(path, lineage, mark), path)
    fsync_dir(folder)
    return lineage
