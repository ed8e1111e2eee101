"""Local copies of what a publish reads back from the database, so the next publish need not read it again.

A publish compares each table's new state with the (key, row_hash, community) of the rows the database holds,
and reads the identity lineage (``link_record``, 2.8 M rows at a million residents). Reading those back over
COPY costs a Python call per row (PostgreSQL sends one message per row): about 20 s at a million residents.
The publish that wrote a table knows exactly what it holds afterwards, so it keeps that as Parquet here, and
the lineage too (only rows of later link runs are read again).

A copy is used only while it provably matches the database: the table's row count and its largest
``publish_id`` (every row a publish writes carries its id, so any insert or update moves it, and a delete
moves the count), read inside the publish's transaction; the lineage's row count after its newer rows are
merged in. Anything else (another hub publishing into the same database, a downgrade, a killed run) makes the
publish read the database, as before. The files hold pseudonymised keys, random person keys, hashes and
community codes only (what staging and the published tables hold too; a release table's copy adds the person key
of each row, which the release tier itself does not publish), and ``scope.json`` what the last publish
read (batch ids, the last link run and identity event, the build's fingerprint) for a scoped publish; they are
0600 in a 0700 folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from schemas.base import PRIVATE_FILE, fsync_dir, private_dir
from schemas.bulk import qualified, read_arrow

log = logging.getLogger(__name__)

_ROWS, _TOP = b"hub.rows", b"hub.top"
LINEAGE_COLUMNS = ("dataset", "record_id", "person_key", "match_kind", "match_probability")


def _file(folder: Path, name: str) -> Path:
    return folder / f"{name}.parquet"


def _read(path: Path) -> tuple[pa.Table, int, int | None] | None:
    """A copy with the row count and top value it was written for, or None when there is none."""
    if not path.is_file():
        return None
    try:
        data = pq.read_table(path)
        meta = data.schema.metadata or {}
        rows, top = int(meta[_ROWS]), meta[_TOP].decode()
    except (OSError, KeyError, ValueError, pa.ArrowInvalid):
        log.warning("publish state copy %s is unreadable; reading the database instead", path.name)
        return None
    return data, rows, int(top) if top else None


def _write(path: Path, data: pa.Table, rows: int, top: int | None) -> Path:
    """Write a copy under a temporary name (fsynced); ``commit`` renames it into place."""
    private_dir(path.parent)
    meta = {**(data.schema.metadata or {}), _ROWS: str(rows).encode(), _TOP: ("" if top is None else str(top)).encode()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # LZ4: keys and hashes hardly compress; zstd took 1.6 s to write and 1.0 s to read the 2.8 M-row lineage copy
    # (LZ4 0.9 s and 0.45 s, in 1.9x the space)
    pq.write_table(data.replace_schema_metadata(meta), tmp, compression="lz4")
    os.chmod(tmp, PRIVATE_FILE)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    return tmp


def _count_and_top(conn: sa.Connection, t: sa.Table) -> tuple[int, int | None]:
    """A published table's row count and largest publish_id: what a kept copy must match."""
    count, top = conn.execute(sa.text(f"SELECT count(*), max(publish_id) FROM {qualified(conn, t)}")).one()
    return int(count), None if top is None else int(top)


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
        self._held: dict[str, tuple[pa.Table, int, int | None]] = {}  # copies read with keep=True, read once

    def _settle(self) -> None:
        """Wait for the copy being written; it joins the staged ones (its error, if any, is raised here)."""
        if self._pending is not None:
            future, path = self._pending
            self._pending = None
            self.staged.append((future.result(), path))

    def usable(self, conn: sa.Connection, t: sa.Table, columns: Sequence[str]) -> bool:
        """Whether the copy of ``t`` matches the table now and holds ``columns`` (its file's footer only)."""
        path = _file(self.folder, t.fullname)
        try:
            meta = pq.read_metadata(path)
            schema = meta.schema.to_arrow_schema()
            rows, top = int(schema.metadata[_ROWS]), schema.metadata[_TOP].decode()
        except (OSError, KeyError, ValueError, TypeError, pa.ArrowInvalid):
            return False
        count, now = _count_and_top(conn, t)
        return (
            rows == count == meta.num_rows
            and (top or None) == (None if now is None else str(now))
            and set(columns) <= set(schema.names)
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

    def old(self, conn: sa.Connection, t: sa.Table, keep: bool = False) -> tuple[pa.Table | None, int, int | None]:
        """(the copy if it matches the table now, else None; the table's row count; its largest publish_id).

        ``keep``: hold the file read for the next call on the same table, which checks the table again but does
        not read the file again (the release tier reads its copies before it builds and again when it merges)."""
        count, top = _count_and_top(conn, t)
        found = self._held.pop(t.fullname, None) or _read(_file(self.folder, t.fullname))
        if found is None:
            return None, count, top
        if keep:
            self._held[t.fullname] = found
        data, rows, was = found
        if rows != count or was != top or data.num_rows != count:
            return None, count, top
        self.used.append(t.fullname)
        return data, count, top

    def stage(self, t: sa.Table, state: pa.Table, columns: Sequence[str], top: int | None) -> None:
        """Keep ``columns`` of a table's state as published (as text, as the database reads them back)."""
        kept = state.select(list(columns))
        kept = kept.cast(pa.schema([(c, pa.string()) for c in kept.column_names]))
        path = _file(self.folder, t.fullname)
        self._settle()
        self._pending = (self._writer.submit(_write, path, kept, kept.num_rows, top), path)

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
        self.staged = []

    def discard(self) -> None:
        """The transaction did not commit: forget the staged copies."""
        try:
            self._settle()
        except Exception:  # the copy is discarded with the publish, whose own error is raised
            log.warning("a publish state copy could not be written; it is discarded with the publish")
        for tmp, _ in self.staged:
            tmp.unlink(missing_ok=True)
        self.staged = []


def read_lineage(conn: sa.Connection, folder: Path | None) -> pa.Table:
    """``link_record`` as publish reads it: the copy plus the rows of later link runs, checked by row count;
    the whole table from the database when there is no usable copy. Refreshes the copy."""
    columns = ", ".join(LINEAGE_COLUMNS)
    if folder is None:
        return read_arrow(conn, f"SELECT {columns} FROM link_record", LINEAGE_COLUMNS)
    count, top = conn.execute(sa.text("SELECT count(*), max(run_id) FROM link_record")).one()
    count, top = int(count), None if top is None else int(top)
    path = _file(folder, "link_record")
    found = _read(path)
    lineage: pa.Table | None = None
    was = found[2] if found is not None else None
    if found is not None and was is not None and top is not None and was <= top:
        cached = found[0]
        newer = read_arrow(conn, f"SELECT {columns} FROM link_record WHERE run_id > {int(was)}", LINEAGE_COLUMNS)
        if newer.num_rows == 0:
            merged = cached
        else:
            con = duckdb.connect()
            try:
                con.register("cached", cached)
                con.register("newer", newer)
                merged = con.sql(
                    "SELECT * FROM cached ANTI JOIN newer USING (dataset, record_id) UNION ALL SELECT * FROM newer"
                ).to_arrow_table()
            finally:
                con.close()
        if merged.num_rows == count:
            lineage = merged.cast(pa.schema([(c, pa.string()) for c in LINEAGE_COLUMNS]))
            if newer.num_rows == 0:
                return lineage
    if lineage is None:
        lineage = read_arrow(conn, f"SELECT {columns} FROM link_record", LINEAGE_COLUMNS)
        lineage = lineage.cast(pa.schema([(c, pa.string()) for c in LINEAGE_COLUMNS]))
    os.replace(_write(path, lineage, lineage.num_rows, top), path)
    fsync_dir(folder)
    return lineage
