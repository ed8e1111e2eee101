"""Writers for the simulated systems' storage: Parquet, SQLite, PostgreSQL, GB18030 CSV drops, XLSX.

Every writer is deterministic: the same frame gives the same bytes (fixed row order, no wall-clock
timestamps in Parquet metadata, SQLite pages, zip entries or XLSX document properties).
"""

from __future__ import annotations

import io
import re
import sqlite3
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import make_url

# A fixed instant for zip entries and document properties (byte-identical output).
FIXED_TIME = datetime(2026, 11, 1, 0, 0, 0)
GB18030_BOM = "\ufeff".encode("gb18030")  # b"\x84\x31\x95\x33"


@dataclass(frozen=True)
class SqlTable:
    """One source table: its name, its rows (contract source columns, text), key and cursor columns."""

    name: str
    frame: pd.DataFrame
    primary_key: tuple[str, ...]
    cursor: str | None


def write_parquet(frame: pd.DataFrame | pa.Table, path: Path) -> None:
    """Write a frame (or Arrow table) as Parquet (zstd) without the pandas index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path, compression="zstd")


def _rows(frame: pd.DataFrame) -> Iterator[tuple[object, ...]]:
    """Rows as plain Python tuples with None for missing values."""
    columns = [frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in frame.columns]
    return zip(*columns, strict=True)


def _ddl_columns(table: SqlTable, quote: str) -> str:
    """Column definitions (all TEXT) and the primary key, for CREATE TABLE."""
    cols = [
        f"{quote}{c}{quote} TEXT" + (" NOT NULL" if c in table.primary_key else "")
        for c in table.frame.columns
    ]
    pk = ", ".join(f"{quote}{c}{quote}" for c in table.primary_key)
    return ", ".join([*cols, f"PRIMARY KEY ({pk})"])


def write_sqlite(path: Path, tables: list[SqlTable]) -> str:
    """Write the tables into a fresh SQLite file (replacing any old one); returns its SQLAlchemy URL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        for table in tables:
            cols = ", ".join(f'"{c}"' for c in table.frame.columns)
            marks = ", ".join("?" for _ in table.frame.columns)
            con.execute(f'CREATE TABLE "{table.name}" ({_ddl_columns(table, chr(34))})')
            con.executemany(f'INSERT INTO "{table.name}" ({cols}) VALUES ({marks})', _rows(table.frame))
            if table.cursor:
                keys = ", ".join(f'"{c}"' for c in (table.cursor, *table.primary_key))
                con.execute(f'CREATE INDEX "ix_{table.name}_cursor" ON "{table.name}" ({keys})')
        con.commit()
    finally:
        con.close()
    return f"sqlite:///{path.resolve()}"


def postgres_url(url: str) -> sa.URL:
    """The URL with the psycopg (3) driver; only PostgreSQL is accepted for --sql-url."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError("sql_url must be a PostgreSQL URL (postgresql+psycopg://...)")
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def public_url(url: str) -> str:
    """The URL without its password, fit for a manifest or a log line."""
    return make_url(url).set(password=None).render_as_string(hide_password=False)


def write_postgres(url: str, schema: str, tables: list[SqlTable]) -> None:
    """Replace the tables in ``schema`` and load them with COPY (indexes built after the load)."""
    engine = sa.create_engine(postgres_url(url))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            for table in tables:
                qualified = f'"{schema}"."{table.name}"'
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {qualified}")
                conn.exec_driver_sql(f"CREATE TABLE {qualified} ({_ddl_columns(table, chr(34))})")
                cols = ", ".join(f'"{c}"' for c in table.frame.columns)
                # CSV text: unquoted empty fields load as NULL, which is how missing values are written.
                body = table.frame.to_csv(index=False, header=False, na_rep="", lineterminator="\n")
                driver = conn.connection.driver_connection
                assert driver is not None
                with (
                    driver.cursor() as cur,
                    cur.copy(f"COPY {qualified} ({cols}) FROM STDIN (FORMAT csv)") as copy,
                ):
                    copy.write(body)
                if table.cursor:
                    keys = ", ".join(f'"{c}"' for c in (table.cursor, *table.primary_key))
                    conn.exec_driver_sql(f'CREATE INDEX "ix_{table.name}_cursor" ON {qualified} ({keys})')
    finally:
        engine.dispose()


@dataclass(frozen=True)
class DropResult:
    """What was written for one CSV drop: rows in the file and rows readable before any corruption."""

    rows: int
    intact_rows: int
    bom: bool
    corrupted: bool


def write_csv_drop(
    path: Path,
    frame: pd.DataFrame,
    bom: bool,
    corrupt: np.random.Generator | None = None,
    encoding: str = "gb18030",
) -> DropResult:
    """Write a GB18030 CSV drop (CRLF, optional BOM); ``corrupt`` cuts it mid-character, adds garbage."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = frame.to_csv(index=False, na_rep="", lineterminator="\r\n")
    data = (("\ufeff" + text) if bom else text).encode(encoding)
    intact = len(frame)
    if corrupt is not None and len(frame) >= 2:
        lines = text.split("\r\n")
        # Cut inside the first multi-byte character of a row in the second half of the file.
        k = int(corrupt.integers(len(frame) // 2 + 1, len(frame) + 1))
        line = lines[k]
        j = next((i for i, ch in enumerate(line) if ord(ch) > 127), 0)
        offset = len(GB18030_BOM if bom else b"") + len("\r\n".join(lines[:k]).encode(encoding)) + 2
        offset += len(line[:j].encode(encoding)) + 1
        data = data[:offset] + corrupt.bytes(40) + b"\x00\xff\xfe\x00"
        intact = k - 1
    path.write_bytes(data)
    return DropResult(rows=len(frame), intact_rows=intact, bom=bom, corrupted=intact < len(frame))


def fix_zip_times(data: bytes) -> bytes:
    """Rewrite a zip (XLSX) with fixed entry timestamps and fixed document-property times."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    stamp = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                body = re.sub(
                    rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)",
                    rb"\g<1>" + stamp.encode() + rb"\g<2>",
                    body,
                )
            entry = zipfile.ZipInfo(info.filename, date_time=FIXED_TIME.timetuple()[:6])
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, body)
    return out.getvalue()


def write_xlsx(path: Path, frame: pd.DataFrame, sheet: str) -> None:
    """Write one sheet (header row = columns) with openpyxl's streaming writer, byte-identically."""
    from openpyxl import Workbook  # heavy; only the XLSX exports need it

    path.parent.mkdir(parents=True, exist_ok=True)
    book = Workbook(write_only=True)
    book.properties.created = FIXED_TIME
    book.properties.modified = FIXED_TIME
    book.properties.creator = "残联业务系统"
    ws = book.create_sheet(sheet)
    ws.append(list(frame.columns))
    for row in _rows(frame):
        ws.append(list(row))
    buffer = io.BytesIO()
    book.save(buffer)
    path.write_bytes(fix_zip_times(buffer.getvalue()))
