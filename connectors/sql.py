"""SQL source client: streams a department table in keyset order from a watermark, with SQLAlchemy.

Rows come ordered by (cursor, primary key) through a server-side cursor on PostgreSQL, so memory stays flat;
each chunk's position is the keyset of its last row, from which a resumed read continues.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from connectors.chunk import SOURCE_POSITION, SourceChunk, cursor_max, labelled, positions
from connectors.errors import SourceError
from connectors.state import DEFAULT_LAG, Watermark
from schemas.contract import get_contract

_ROW_LOCATOR = "_hub_row_locator"
_DRIVERS = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg", "sqlite": "sqlite"}


def sqlalchemy_url_from_airflow(value: str) -> URL:
    """A SQLAlchemy URL from an ``AIRFLOW_CONN_*`` value (JSON or URI form), without importing Airflow."""
    value = value.strip()
    if value.startswith("{"):
        conn = json.loads(value)
        conn_type = str(conn.get("conn_type", "")).replace("-", "_")
        if conn_type == "sqlite":
            return make_url(f"sqlite:///{conn.get('host') or conn.get('schema') or ''}")
        return URL.create(
            _DRIVERS.get(conn_type, conn_type),
            username=conn.get("login"),
            password=conn.get("password"),
            host=conn.get("host"),
            port=conn.get("port"),
            database=conn.get("schema"),  # Airflow keeps the database name in "schema"
        )
    parts = urlsplit(value)
    scheme = parts.scheme.replace("-", "_")
    if scheme == "sqlite":
        return make_url("sqlite:///" + unquote(parts.netloc) + unquote(parts.path))
    return URL.create(
        _DRIVERS.get(scheme, scheme),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        host=parts.hostname,
        port=parts.port,
        database=unquote(parts.path.lstrip("/")) or None,
    )


def _text_array(values: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """A text column as a pandas ``string`` array built by Arrow; values that are not text are stringified."""
    try:
        return pd.arrays.ArrowStringArray(pa.array(values, type=pa.string()))
    except (pa.ArrowTypeError, pa.ArrowInvalid):  # SQLite lets a TEXT column hold numbers
        return pd.array(values, dtype="string")


class SqlSource:
    """Reads one department table (or view) into ``SourceChunk``s, incrementally on its cursor column."""

    def __init__(
        self,
        dataset: str,
        url: str | URL | sa.Engine | None = None,
        *,
        table: str | None = None,
        schema: str | None = None,
        airflow_conn: str | None = None,
        cursor_col: str | None = None,
        pk_cols: Sequence[str] | None = None,
        chunk_rows: int = 50_000,
        lag: timedelta = DEFAULT_LAG,
    ) -> None:
        contract = get_contract(dataset) if table is None or cursor_col is None or pk_cols is None else None
        self.dataset = dataset
        self.table_name = table or (contract.table if contract else None) or ""
        self.schema = schema
        cursor = cursor_col or (contract.cursor if contract else None)
        self.pk_cols = tuple(pk_cols or (contract.primary_key if contract else ()))
        if not self.table_name or not cursor or not self.pk_cols:
            raise SourceError(dataset, "", "a SQL source needs a table, a cursor column and a primary key")
        self.cursor_col: str = cursor
        if url is None and airflow_conn:
            url = sqlalchemy_url_from_airflow(airflow_conn)
        if url is None:
            raise SourceError(dataset, "", "no database URL (argument or Airflow connection)")
        self._own_engine = not isinstance(url, sa.Engine)
        self.engine = url if isinstance(url, sa.Engine) else sa.create_engine(url)
        self.chunk_rows = chunk_rows
        self.lag = lag
        self._table: sa.Table | None = None

    def close(self) -> None:
        """Release pooled connections if this source created the engine."""
        if self._own_engine:
            self.engine.dispose()

    def __enter__(self) -> SqlSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_location(cls, dataset: str, location: Mapping[str, Any], **options: Any) -> SqlSource:
        """Build from a manifest location ``{url, schema, table}``."""
        return cls(
            dataset, location["url"], table=location["table"], schema=location.get("schema"), **options
        )

    @property
    def table(self) -> sa.Table:
        """The source table as reflected now, so columns added at the source (drift) are read too."""
        if self._table is None:
            try:
                self._table = sa.Table(
                    self.table_name, sa.MetaData(), schema=self.schema, autoload_with=self.engine
                )
            except sa.exc.NoSuchTableError as exc:
                raise SourceError(self.dataset, self._qualified, "table not found") from exc
            missing = [c for c in (self.cursor_col, *self.pk_cols) if c not in self._table.c]
            if missing:
                raise SourceError(self.dataset, self._qualified, f"missing key columns {missing}")
        return self._table

    @property
    def _qualified(self) -> str:
        return f"{self.schema}.{self.table_name}" if self.schema else self.table_name

    def _locator(self) -> tuple[sa.ColumnElement[Any] | None, str]:
        """A physical row locator for ``_source_position`` (SQLite rowid, PostgreSQL ctid); none on views."""
        inspector = sa.inspect(self.engine)
        if self.table_name in inspector.get_view_names(schema=self.schema):
            return None, "row"
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            return sa.literal_column(f'"{self.table_name}".rowid').label(_ROW_LOCATOR), "rowid"
        if dialect == "postgresql":
            return sa.literal_column(f'"{self.table_name}".ctid::text').label(_ROW_LOCATOR), "ctid"
        return None, "row"

    def query(self, since: str | None = None, after: Sequence[Any] | None = None) -> sa.Select[Any]:
        """Rows in (cursor, pk) order: from ``since`` inclusive, or strictly after the keyset ``after``."""
        table = self.table
        cursor = table.c[self.cursor_col]
        pks = [table.c[c] for c in self.pk_cols]
        locator, _ = self._locator()
        stmt = sa.select(*table.c, *([locator] if locator is not None else [])).order_by(cursor, *pks)
        if after is not None:
            at, *pk_values = after
            if len(pk_values) != len(pks):
                raise SourceError(
                    self.dataset, self._qualified, "resume keyset does not match the primary key"
                )
            pk_after = pks[0] > pk_values[0] if len(pks) == 1 else sa.tuple_(*pks) > sa.tuple_(*pk_values)
            stmt = stmt.where(sa.or_(cursor > at, sa.and_(cursor == at, pk_after)))
        elif since is not None:
            stmt = stmt.where(cursor >= since)
        return stmt

    def read(
        self,
        watermark: Watermark | None = None,
        since: str | None = None,
        after: Sequence[Any] | None = None,
    ) -> Iterator[SourceChunk]:
        """Stream rows changed since ``watermark - lag`` (or ``since``, or after a resume keyset)."""
        if since is None and after is None and watermark is not None:
            since = watermark.since(self.lag)
        stmt = self.query(since, after)
        _, locator_kind = self._locator()
        prefix = f"{self.table_name} {locator_kind}"
        text = {c.name for c in self.table.c if isinstance(c.type, sa.String)}
        ordinal = 0
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=self.chunk_rows).execute(stmt)
            keys = list(result.keys())
            for rows in result.partitions():
                grid = np.empty((len(rows), len(keys)), dtype=object)
                grid[:] = [tuple(r) for r in rows]
                columns = {k: grid[:, i] for i, k in enumerate(keys)}
                locator = columns.pop(_ROW_LOCATOR, None)
                frame = pd.DataFrame(
                    {k: _text_array(v) if k in text else pd.array(v) for k, v in columns.items()}
                )
                if locator is not None:
                    frame[SOURCE_POSITION] = labelled(prefix, locator)
                else:
                    frame[SOURCE_POSITION] = positions(prefix, len(frame), ordinal + 1)
                ordinal += len(frame)
                last = frame.iloc[-1]
                position = json.dumps(
                    {
                        "table": self._qualified,
                        "after": [str(last[self.cursor_col]), *(str(last[c]) for c in self.pk_cols)],
                    },
                    ensure_ascii=False,
                )
                yield SourceChunk(self.dataset, frame, position, cursor_max(frame, self.cursor_col))
