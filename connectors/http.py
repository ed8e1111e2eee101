"""HTTP/JSON source client: bearer auth, explicit paginators, retries with backoff that honour Retry-After.

Plain ``requests``, testable alone; the Airflow wiring only supplies a Connection (an ``AIRFLOW_CONN_*``
value, parsed here without importing Airflow; the caller reads it wherever it is kept). Which path and
parameter names a dataset uses is data (``connectors/sources.yaml`` via ``endpoint_for``), not code branches.
"""

from __future__ import annotations

import io
import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json
import requests
import urllib3
from requests.adapters import HTTPAdapter

from connectors.chunk import SOURCE_POSITION, SourceChunk, cursor_max, positions
from connectors.errors import SourceError
from connectors.state import DEFAULT_LAG, Watermark
from schemas.contract import get_contract

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_KEY_SEP = "\x1f"  # joins (cursor, pk) into one key that sorts like the tuple
_STRING_TYPES = {pa.string(): pd.StringDtype()}


# -- retries -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a page: exponential backoff, jitter, Retry-After honoured, capped."""

    attempts: int = 5  # total tries per page, the first included
    backoff: float = 0.5  # seconds before the second try; doubles each time
    cap: float = 30.0  # no single wait is longer, Retry-After included
    jitter: float = 0.5  # fraction of each backoff drawn at random, so clients do not retry in step

    def backoff_wait(self, attempt: int, rng: random.Random) -> float:
        """Wait after failed try number ``attempt`` (1-based) when the server named no time."""
        base = min(self.cap, self.backoff * 2 ** (attempt - 1))
        return base * (1 - self.jitter) + rng.uniform(0, base * self.jitter)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or HTTP date); None if absent/unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# -- auth ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceConnection:
    """Where a source system is and the bearer token it wants (the token is never shown in repr)."""

    base_url: str | None
    token: str | None = field(default=None, repr=False)


def _airflow_base_url(conn_type: str | None, schema: str | None, host: str | None, port: Any) -> str | None:
    """An Airflow HTTP connection's base URL: the host may carry the scheme, else ``schema`` or http."""
    if not host:
        return None
    if "://" in host:
        base = host.rstrip("/")
    else:
        scheme = schema if schema in ("http", "https") else ("https" if conn_type == "https" else "http")
        base = f"{scheme}://{host}"
    return f"{base}:{port}" if port else base


def parse_airflow_connection(value: str) -> SourceConnection:
    """Base URL and token from an ``AIRFLOW_CONN_*`` value (Airflow's JSON or URI form), without Airflow."""
    value = value.strip()
    if value.startswith("{"):
        conn = json.loads(value)
        extra = conn.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra) if extra.strip() else {}
        token = conn.get("password") or extra.get("token")
        return SourceConnection(
            _airflow_base_url(conn.get("conn_type"), conn.get("schema"), conn.get("host"), conn.get("port")),
            token,
        )
    parts = urlsplit(value)
    conn_type = parts.scheme.replace("-", "_")
    schema = unquote(parts.path.lstrip("/")) or None
    host = unquote(parts.hostname) if parts.hostname else None
    token = unquote(parts.password) if parts.password else None
    return SourceConnection(_airflow_base_url(conn_type, schema, host, parts.port), token)


def resolve_connection(
    token: str | None = None,
    airflow_conn: str | None = None,
    base_url: str | None = None,
) -> SourceConnection:
    """Base URL and token: explicit arguments win over those inside an Airflow connection value."""
    from_conn = parse_airflow_connection(airflow_conn) if airflow_conn else SourceConnection(None, None)
    return SourceConnection(base_url or from_conn.base_url, token or from_conn.token or None)


# -- paginators ---------------------------------------------------------------------------------------------


class Paginator(Protocol):
    """Names the member holding a page's rows and turns the other members into the next page's parameters.

    ``overlap`` > 0 means pages are re-read with that many rows of overlap, so a set that shifts while
    it is paged (offset paging) is noticed and re-synchronised on the (cursor, pk) order.
    """

    @property
    def rows_key(self) -> str: ...

    @property
    def overlap(self) -> int: ...

    def first(self, since: str | None, page_size: int) -> dict[str, Any]: ...

    def next(self, params: dict[str, Any], meta: Mapping[str, Any], rows: int) -> dict[str, Any] | None: ...

    def describe(self, params: Mapping[str, Any]) -> str: ...

    def back_up(self, params: dict[str, Any]) -> dict[str, Any] | None: ...


class PageShapeError(ValueError):
    """A complete JSON answer without the members a page needs (a protocol error, not worth a retry)."""


def _require(meta: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """A response member of the expected JSON type, or PageShapeError naming the member (not its value)."""
    if key not in meta or not isinstance(meta[key], kind):
        raise PageShapeError(f"response has no valid '{key}' member")
    return meta[key]


@dataclass(frozen=True)
class CursorPaginator:
    """公安 style: ``updated_since``/``cursor``/``page_size`` in, ``items``/``next_cursor`` out."""

    since_param: str = "updated_since"
    cursor_param: str = "cursor"
    size_param: str = "page_size"
    rows_key: str = "items"
    next_key: str = "next_cursor"
    overlap: int = 0  # the server's cursor already pins the (cursor, pk) position

    def first(self, since: str | None, page_size: int) -> dict[str, Any]:
        params: dict[str, Any] = {self.size_param: page_size}
        if since is not None:
            params[self.since_param] = since
        return params

    def next(self, params: dict[str, Any], meta: Mapping[str, Any], rows: int) -> dict[str, Any] | None:
        cursor = _require(meta, self.next_key, (str, type(None)))
        return None if cursor is None or rows == 0 else {**params, self.cursor_param: cursor}

    def describe(self, params: Mapping[str, Any]) -> str:
        return f"cursor={params.get(self.cursor_param, '')}"

    def back_up(self, params: dict[str, Any]) -> dict[str, Any] | None:
        return None


@dataclass(frozen=True)
class OffsetPaginator:
    """人社 style: ``modifiedSince``/``offset``/``limit`` in, ``total``/``offset``/``limit``/``rows`` out."""

    since_param: str = "modifiedSince"
    offset_param: str = "offset"
    limit_param: str = "limit"
    rows_key: str = "rows"
    total_key: str = "total"
    # rows each page re-reads from the previous one: records changing mid-read shift offsets down
    overlap: int = 16

    def first(self, since: str | None, page_size: int) -> dict[str, Any]:
        if page_size <= 2 * self.overlap:
            raise ValueError(f"offset pages need more than {2 * self.overlap} rows (the overlap twice)")
        params: dict[str, Any] = {self.offset_param: 0, self.limit_param: page_size}
        if since is not None:
            params[self.since_param] = since
        return params

    def next(self, params: dict[str, Any], meta: Mapping[str, Any], rows: int) -> dict[str, Any] | None:
        total = _require(meta, self.total_key, int)
        offset = int(params[self.offset_param])
        if rows == 0 or offset + rows >= total:
            return None
        return {**params, self.offset_param: max(offset + 1, offset + rows - self.overlap)}

    def describe(self, params: Mapping[str, Any]) -> str:
        return f"offset={params.get(self.offset_param, 0)}"

    def back_up(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """The page before, when this one started past every row already read (the set shifted down)."""
        offset = int(params[self.offset_param])
        if offset == 0:
            return None
        step = int(params[self.limit_param]) - 2 * self.overlap
        return {**params, self.offset_param: max(0, offset - step)}


@dataclass(frozen=True)
class HttpEndpoint:
    """Where a dataset lives on its department's server and how it pages."""

    system: str  # which server (manifest / serve.json key)
    path: str
    paginator: Paginator
    page_size: int


#: Paging styles by the name the source registry uses.
PAGINATORS: dict[str, Paginator] = {"cursor": CursorPaginator(), "offset": OffsetPaginator()}


def endpoint_for(dataset: str) -> HttpEndpoint:
    """A registered HTTP dataset's endpoint, built from the source registry (its one declaration)."""
    from connectors.registry import registry

    decl = registry().get(dataset)
    if decl is None or decl.kind != "http" or not decl.path or not decl.paging:
        raise SourceError(dataset, "", "no HTTP endpoint is registered for this dataset")
    return HttpEndpoint(decl.system, decl.path, PAGINATORS[decl.paging], decl.page_size)


# -- the client ---------------------------------------------------------------------------------------------


@dataclass
class HttpStats:
    """What a read cost: requests sent, retries and why, seconds spent waiting."""

    requests: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    waited: float = 0.0
    rows: int = 0
    resyncs: int = 0  # offset pages re-read because the set shifted while it was paged


class _Retryable(Exception):
    """A failure worth another try; ``wait`` is the server's Retry-After, if it named one."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


class HttpSource:
    """Reads one HTTP dataset page by page into ``SourceChunk``s, incrementally from a watermark."""

    def __init__(
        self,
        dataset: str,
        base_url: str | None = None,
        *,
        token: str | None = None,
        airflow_conn: str | None = None,
        endpoint: HttpEndpoint | None = None,
        page_size: int | None = None,
        pages_per_chunk: int = 4,
        lag: timedelta = DEFAULT_LAG,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (5.0, 60.0),
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
        cursor_col: str | None = None,
        pk_cols: tuple[str, ...] | None = None,
    ) -> None:
        self.dataset = dataset
        self.endpoint = endpoint or endpoint_for(dataset)
        conn = resolve_connection(token=token, airflow_conn=airflow_conn, base_url=base_url)
        if not conn.base_url:
            raise SourceError(dataset, "", "no base URL (argument or Airflow connection host)")
        if not conn.token:
            raise SourceError(dataset, "", "no bearer token (HUB_SOURCE_<SYSTEM>_TOKEN or the Airflow connection)")
        self.base_url = conn.base_url.rstrip("/")
        self.page_size = page_size or self.endpoint.page_size
        self.pages_per_chunk = max(1, pages_per_chunk)
        self.lag = lag
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.session = session or _session(conn.token)
        if session is not None:
            self.session.headers["Authorization"] = f"Bearer {conn.token}"
        self.stats = HttpStats()
        self._sleep = sleep
        self._rng = random.Random(seed)
        cursor, pk, names = _contract_key(dataset)
        self.cursor_col = cursor_col if cursor_col is not None else cursor
        self.pk_cols = tuple(pk_cols) if pk_cols is not None else pk
        self.text_columns = names
        self._own_session = session is None

    def close(self) -> None:
        """Close the connection pool if this source opened it."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> HttpSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, watermark: Watermark | None = None, since: str | None = None) -> Iterator[SourceChunk]:
        """Every page changed since ``watermark - lag`` (or since ``since``; all when neither), in order."""
        if since is None and watermark is not None:
            since = watermark.since(self.lag)
        pager = self.endpoint.paginator
        try:
            params: dict[str, Any] | None = pager.first(since, self.page_size)
        except ValueError as exc:
            raise SourceError(self.dataset, "", str(exc)) from exc
        page = 0
        pending: list[pd.DataFrame] = []
        last_key: str | None = None  # (cursor, pk) of the last row read, as one sortable key
        while params is not None:
            page += 1
            meta, frame = self._fetch(params, page)
            where = f"page {page} ({pager.describe(params)})"
            try:
                next_params = pager.next(params, meta, len(frame))
            except PageShapeError as exc:
                raise SourceError(self.dataset, where, str(exc)) from exc
            frame[SOURCE_POSITION] = positions(f"page {page} row", len(frame))
            keys = self._order_keys(frame)
            if keys is not None and last_key is not None and len(frame):
                newer = (keys > last_key).to_numpy(dtype=bool)
                earlier = pager.back_up(params) if pager.overlap and newer[0] else None
                if earlier is not None:  # no overlap with what was read: rows may have been skipped
                    self.stats.resyncs += 1
                    params = earlier
                    continue
                frame, keys = frame[newer], keys[newer]
            if keys is not None and len(frame):
                last_key = str(keys.iloc[-1])
            self.stats.rows += len(frame)
            pending.append(frame)
            if len(pending) >= self.pages_per_chunk or next_params is None:
                yield self._chunk(pending, page, next_params)
                pending = []
            params = next_params

    def _order_keys(self, frame: pd.DataFrame) -> pd.Series | None:
        """Each row's (cursor, pk) as one text key in the servers' order; None without a cursor and pk."""
        if not self.cursor_col or not self.pk_cols or frame.empty:
            return None
        if any(c not in frame.columns for c in (self.cursor_col, *self.pk_cols)):
            return None
        key = frame[self.cursor_col].fillna("")
        for col in self.pk_cols:
            key = key + _KEY_SEP + frame[col].fillna("")
        return key

    def _chunk(
        self, frames: list[pd.DataFrame], page: int, next_params: Mapping[str, Any] | None
    ) -> SourceChunk:
        """Join pages into one chunk; its position is the last page read and the next page's parameters."""
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        position = json.dumps({"page": page, "next": next_params}, ensure_ascii=False)
        return SourceChunk(self.dataset, frame, position, cursor_max(frame, self.cursor_col))

    def _fetch(self, params: Mapping[str, Any], page: int) -> tuple[dict[str, Any], pd.DataFrame]:
        """One page as parsed JSON, retried on throttling, server errors, broken connections, cut bodies."""
        url = self.base_url + self.endpoint.path
        where = f"page {page} ({self.endpoint.paginator.describe(params)})"
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return self._try(url, params, where)
            except _Retryable as failure:
                self.stats.retries[failure.reason] = self.stats.retries.get(failure.reason, 0) + 1
                if attempt == self.retry.attempts:
                    raise SourceError(
                        self.dataset, where, f"{failure.reason} after {attempt} attempts"
                    ) from failure
                wait = (
                    min(self.retry.cap, failure.wait)
                    if failure.wait is not None
                    else self.retry.backoff_wait(attempt, self._rng)
                )
                log.warning(
                    "%s %s: %s (attempt %d of %d), retrying in %.2fs",
                    self.dataset,
                    where,
                    failure.reason,
                    attempt,
                    self.retry.attempts,
                    wait,
                )
                self.stats.waited += wait
                self._sleep(wait)
            except requests.RequestException as exc:
                raise SourceError(self.dataset, where, f"request failed: {type(exc).__name__}") from exc
        raise AssertionError("unreachable: the loop returns or raises")

    def _try(self, url: str, params: Mapping[str, Any], where: str) -> tuple[dict[str, Any], pd.DataFrame]:
        """Send one request; raise ``_Retryable`` for what another try may fix, ``SourceError`` otherwise."""
        self.stats.requests += 1
        try:
            response = self.session.get(url, params=params, timeout=self.timeout, stream=True)
        except requests.Timeout as exc:
            raise _Retryable("timeout") from exc
        except requests.ConnectionError as exc:
            raise _Retryable("connection error") from exc
        with response:
            if response.status_code in RETRY_STATUSES:
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                raise _Retryable(f"HTTP {response.status_code}", wait)
            if response.status_code != 200:
                raise SourceError(self.dataset, where, _refusal(response))
            try:
                # one read of the whole body: requests' .content would gather it in 10 KiB pieces
                content = response.raw.read(decode_content=True)
            except urllib3.exceptions.ReadTimeoutError as exc:
                raise _Retryable("timeout") from exc
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError) as exc:
                raise _Retryable("truncated body") from exc
        try:
            return parse_page(content, self.endpoint.paginator.rows_key, self.text_columns)
        except PageShapeError as exc:
            raise SourceError(self.dataset, where, str(exc)) from exc
        except ValueError as exc:
            raise _Retryable("truncated JSON") from exc


def parse_page(
    content: bytes, rows_key: str, text_columns: Sequence[str] = ()
) -> tuple[dict[str, Any], pd.DataFrame]:
    """A JSON page as (its other top-level members, its rows as a frame of ``string`` columns).

    Arrow parses the usual all-text page in C (``text_columns`` are read as text, not guessed as
    timestamps); anything else (numbers, nesting, pretty-printed JSON) goes through ``json``.
    A body neither can parse raises ValueError: a cut or garbled answer.
    """
    try:
        options = pa_json.ReadOptions(use_threads=False, block_size=len(content) + 1)
        as_text = pa.struct([(name, pa.string()) for name in text_columns])
        parsing = pa_json.ParseOptions(
            explicit_schema=pa.schema([(rows_key, pa.list_(as_text))]), unexpected_field_behavior="infer"
        )
        table = pa_json.read_json(io.BytesIO(content), read_options=options, parse_options=parsing)
        frame = _arrow_rows(table, rows_key)
        if frame is not None:
            meta = {n: table.column(n)[0].as_py() for n in table.column_names if n != rows_key}
            return meta, frame
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    body = json.loads(content)
    if not isinstance(body, dict):
        raise PageShapeError("response is not a JSON object")
    rows = _require(body, rows_key, list)
    if not all(isinstance(row, dict) for row in rows):
        raise PageShapeError(f"'{rows_key}' holds something other than objects")
    return {k: v for k, v in body.items() if k != rows_key}, rows_frame(rows)


def _arrow_rows(table: pa.Table, rows_key: str) -> pd.DataFrame | None:
    """The rows member of an Arrow-parsed page when every value is text or null, else None."""
    if table.num_rows != 1 or rows_key not in table.column_names:
        return None
    rows = table.column(rows_key).combine_chunks()
    if not pa.types.is_list(rows.type):
        return None
    items = rows.flatten()
    if pa.types.is_null(items.type):  # an empty page
        return pd.DataFrame()
    if not pa.types.is_struct(items.type):
        return None
    fields = [items.type.field(i) for i in range(items.type.num_fields)]
    if not all(pa.types.is_string(f.type) or pa.types.is_null(f.type) for f in fields):
        return None
    columns = {f.name: items.field(i).cast(pa.string()) for i, f in enumerate(fields)}
    return pa.table(columns).to_pandas(types_mapper=_STRING_TYPES.get)


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """JSON rows as a frame of pandas ``string`` columns; keys missing from some rows (drift) become nulls."""
    names = list(rows[0]) if rows else []
    names += sorted(set().union(*rows) - set(names))  # keys that only some rows carry, e.g. a new column
    try:
        # Arrow builds text columns in C; the pandas fallback copes with values that are not text
        table = pa.Table.from_pylist(rows, schema=pa.schema([(n, pa.string()) for n in names]))
        return table.to_pandas(types_mapper=_STRING_TYPES.get)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.DataFrame.from_records(rows, columns=names).astype("string")


def _contract_key(dataset: str) -> tuple[str | None, tuple[str, ...], tuple[str, ...]]:
    """Cursor column, primary key and source field names of a dataset's contract (none without one)."""
    try:
        contract = get_contract(dataset)
    except KeyError:
        return None, (), ()
    return contract.cursor, contract.primary_key, contract.source_names


def _refusal(response: requests.Response) -> str:
    """A non-retryable answer, with the server's own error text (it carries no record values)."""
    try:
        detail = response.json().get("error", "")
    except ValueError:
        detail = ""
    hint = " (check the bearer token)" if response.status_code in (401, 403) else ""
    return f"HTTP {response.status_code}{hint}" + (f": {str(detail)[:200]}" if detail else "")


def _session(token: str) -> requests.Session:
    """A keep-alive session; ``HttpSource`` does the retries itself so it can count and log them."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=0, pool_connections=2, pool_maxsize=2)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})
    return session
