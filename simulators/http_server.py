"""The simulated 公安 (cursor pages) and 人社 (offset pages) REST servers over DIR/http/<dataset>.parquet.

Each dataset is read once, sorted by (cursor, primary key) and every row serialised to JSON with Arrow
compute; a page is a binary search plus a gather of pre-built rows, so no Python runs per record on the
request path. A dataset is re-read when its parquet file changes, so ``advance`` shows through a running
server: a watcher (looking every half second) re-reads it and serialises its rows, or the first request
re-reads it and pages are serialised on demand until the rows are. ``GET /_admin/stats`` says whether
every dataset is ``current``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import random
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.base import write_atomic
from schemas.contract import Contract, packaged_contracts

log = logging.getLogger(__name__)

SYSTEMS = ("gongan", "renshe")
FAULT_KINDS = ("429", "500", "slow", "truncate")
SCRIPT_STEPS = (*FAULT_KINDS, "ok")
CURSOR_PAGE_DEFAULT, OFFSET_PAGE_DEFAULT, PAGE_MAX = 1000, 500, 5000
SERVE_FILE = "serve.json"
WATCH_SECONDS = 0.5  # how often the watcher looks for changed dataset files
# Source systems keep local (China Standard) time; an aware ``updated_since`` is converted to it.
SOURCE_TZ = timezone(timedelta(hours=8))
# Separator joining a composite primary key into one sortable key (sorts below every printable character).
_KEY_SEP = "\x1f"
_LARGE = pa.large_string()


def _lit(text: str) -> pa.Scalar:
    """A large_string scalar for Arrow element-wise joins."""
    return pa.scalar(text, _LARGE)


def dataset_path(dataset: str) -> str:
    """The HTTP path a dataset is served at: /api/v1/<name> on 公安, /rs/<name> on 人社."""
    department, name = dataset.split(".", 1)
    return f"/api/v1/{name}" if department == "gongan" else f"/rs/{name}"


def http_contracts(system: str) -> list[Contract]:
    """The contracts one department server serves (公安: cursor pages, 人社: offset pages)."""
    interface = "http_cursor" if system == "gongan" else "http_offset"
    return sorted(
        (c for c in packaged_contracts().values() if c.interface == interface and c.department == system),
        key=lambda c: c.dataset,
    )


# -- one dataset, sorted and pre-serialised ---------------------------------------------------------------


def _json_value(column: pa.Array) -> pa.Array:
    """Each cell as a JSON string literal (or null), escaped in Arrow so no Python runs per value."""
    text = pc.cast(column, _LARGE)
    if pc.any(pc.match_substring(text, "\\")).as_py():
        text = pc.replace_substring(text, "\\", "\\\\")
    if pc.any(pc.match_substring(text, '"')).as_py():
        text = pc.replace_substring(text, '"', '\\"')
    if pc.any(pc.match_substring_regex(text, "[\\x00-\\x1f]")).as_py():
        for code in range(0x20):
            if pc.any(pc.match_substring(text, chr(code))).as_py():
                text = pc.replace_substring(text, chr(code), f"\\u{code:04x}")
    quoted = pc.binary_join_element_wise(_lit('"'), text, _lit('"'), _lit(""))
    return pc.fill_null(quoted, _lit("null")) if quoted.null_count else quoted


def _json_rows(table: pa.Table) -> pa.LargeStringArray:
    """One ``{...},`` JSON object per row (keys = column names), built column-wise in Arrow."""
    pieces: list[Any] = []
    for i, name in enumerate(table.column_names):
        key = json.dumps(name, ensure_ascii=False)
        pieces += [_lit(("{" if i == 0 else ",") + key + ":"), _json_value(table[name].combine_chunks())]
    pieces.append(_lit("},"))
    rows = pc.binary_join_element_wise(*pieces, _lit(""))
    assert isinstance(rows, pa.LargeStringArray)
    return rows


def _key_strings(table: pa.Table, columns: tuple[str, ...]) -> np.ndarray:
    """A column (or a composite key joined by a control separator) as a numpy unicode array, nulls as ''."""
    parts = [pc.fill_null(pc.cast(table[c], _LARGE), "").combine_chunks() for c in columns]
    joined = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, _lit(_KEY_SEP))
    values = np.asarray(joined.to_numpy(zero_copy_only=False), dtype=object)
    return values.astype(str) if len(values) else np.array([], dtype="<U1")


class DatasetSnapshot:
    """One version of a dataset file: sort keys in (cursor, pk) order, and its rows for serving.

    Pages are serialised from the Arrow table on demand until ``prepare`` (run in the background after
    a load) has turned every row into JSON once; from then on a page is a gather of pre-built rows.
    Either way the bytes are identical, and a reload costs only the read and the sort.
    """

    def __init__(self, stamp: tuple[int, int, int], table: pa.Table, cursor: np.ndarray, key: np.ndarray) -> None:
        self.stamp = stamp
        self.order = np.lexsort((key, cursor)).astype(np.int64)  # file positions in (cursor, pk) order
        self.cursor = cursor[self.order]  # sorted cursor values
        self.key = key[self.order]  # primary key, sorted within equal cursor values
        self._table: pa.Table | None = table
        self._rows: pa.LargeStringArray | None = None  # one JSON object plus ',' per row, file order
        self._preparing = threading.Lock()  # the background pass and the watcher may both ask

    @property
    def size(self) -> int:
        """Rows in this version."""
        return len(self.order)

    @property
    def prepared(self) -> bool:
        """Whether every row is already serialised."""
        return self._rows is not None

    def prepare(self) -> None:
        """Serialise every row once, then drop the table (pages read ``_rows`` from now on); a second caller
        waits for the first."""
        with self._preparing:
            if self._table is not None and self._rows is None:
                self._rows = _json_rows(self._table)
                self._table = None

    def start_at(self, since: str | None) -> int:
        """Sorted position of the first row whose cursor is at or after ``since`` (inclusive)."""
        return 0 if since is None else int(np.searchsorted(self.cursor, since, side="left"))

    def start_after(self, cursor: str, key: str) -> int:
        """Sorted position of the first row strictly after (cursor, key)."""
        lo = int(np.searchsorted(self.cursor, cursor, side="left"))
        hi = int(np.searchsorted(self.cursor, cursor, side="right"))
        return lo + int(np.searchsorted(self.key[lo:hi], key, side="right"))

    def page_json(self, start: int, stop: int) -> bytes:
        """Rows ``start:stop`` of the sorted order as the inside of a JSON array (comma separated)."""
        if stop <= start:
            return b""
        positions = pa.array(self.order[start:stop])
        table = self._table  # read before _rows: prepare() sets _rows before it clears _table
        rows = self._rows
        if rows is not None:
            taken = rows.take(positions)
        else:
            assert table is not None
            taken = _json_rows(table.take(positions))
        offsets = np.frombuffer(taken.buffers()[1], dtype=np.int64)
        data = taken.buffers()[2]
        assert data is not None
        first, last = int(offsets[taken.offset]), int(offsets[taken.offset + len(taken)])
        return memoryview(data)[first : last - 1].tobytes()  # drop the trailing comma


def load_snapshot(path: Path, contract: Contract) -> DatasetSnapshot:
    """Read a dataset parquet and sort it by (cursor, pk); rows are serialised later (``prepare``)."""
    st = path.stat()
    table = pq.read_table(path)
    assert contract.cursor is not None
    missing = [c for c in (contract.cursor, *contract.primary_key) if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: column(s) {missing} of contract {contract.dataset} are missing")
    table = table.combine_chunks()
    return DatasetSnapshot(
        (st.st_mtime_ns, st.st_size, st.st_ino),
        table,
        _key_strings(table, (contract.cursor,)),
        _key_strings(table, contract.primary_key),
    )


class DatasetFeed:
    """A dataset file as served: the current snapshot, re-read when its mtime, size or inode changes.

    The first load serialises every row before the server starts, so a first full pass is fast; a
    reload (after ``advance``) serves pages on demand at once and serialises in the background. The
    servers' watcher (``refresh``) does the reload as soon as the file changes, as a department's own
    system indexes its data when it changes, not when the hub first asks.
    """

    def __init__(self, contract: Contract, path: Path) -> None:
        self.contract = contract
        self.path = path
        self._lock = threading.Lock()
        self._snapshot = load_snapshot(path, contract)
        self._snapshot.prepare()
        self._unreadable: tuple[int, int, int] | None = None  # a file version the watcher could not read

    def _reload(self) -> DatasetSnapshot:
        """Read and sort now; serialise every row in a background thread (pages work meanwhile)."""
        snapshot = load_snapshot(self.path, self.contract)
        name = f"sim-prepare-{self.contract.dataset}"
        threading.Thread(target=snapshot.prepare, name=name, daemon=True).start()
        return snapshot

    def snapshot(self) -> DatasetSnapshot:
        """The current version; a changed file is re-read once, concurrent requests wait for it."""
        current = self._snapshot
        stamp = self._stamp()
        if stamp is None or stamp == current.stamp:  # removed or mid-replace: keep serving the last good version
            return current
        with self._lock:
            stamp = self._stamp()
            if stamp is not None and stamp != self._snapshot.stamp:
                try:
                    self._snapshot = self._reload()
                except (OSError, ValueError, pa.ArrowException) as exc:
                    # A half-written file (a writer that does not replace atomically): retry next request.
                    reason = type(exc).__name__
                    log.warning("%s: cannot re-read (%s); serving the previous version", self.path, reason)
            return self._snapshot

    def _stamp(self) -> tuple[int, int, int] | None:
        """The file's (mtime, size, inode) now, or None while it is missing."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    @property
    def current(self) -> bool:
        """Whether the version served is the file as it is now, with every row serialised."""
        stamp = self._stamp()
        snapshot = self._snapshot
        return (stamp is None or stamp == snapshot.stamp) and snapshot.prepared

    def refresh(self) -> None:
        """Re-read a changed file and serialise its rows now (the watcher's call); a file that cannot be read
        is tried once per change, and keeps being tried by requests."""
        stamp = self._stamp()
        if stamp is None or stamp == self._snapshot.stamp or stamp == self._unreadable:
            self._snapshot.prepare()
            return
        snapshot = self.snapshot()
        if snapshot.stamp != stamp:
            self._unreadable = stamp
        snapshot.prepare()


# -- faults and stats -------------------------------------------------------------------------------------


class FaultPlan:
    """Which fault the next data request gets: a script first, then random rates, else none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.configure({})

    def configure(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the plan from a /_admin/faults body; raises ValueError naming the bad member."""
        if not isinstance(spec, Mapping):
            raise ValueError("the fault spec must be a JSON object")
        unknown = set(spec) - {"script", "rates", "seed", "retry_after", "slow_seconds"}
        if unknown:
            raise ValueError(f"unknown fault setting(s): {sorted(unknown)}")
        script = spec.get("script", [])
        if not isinstance(script, list) or any(str(s) not in SCRIPT_STEPS for s in script):
            raise ValueError(f"script must be a list of {list(SCRIPT_STEPS)}")
        rates = spec.get("rates", {})
        if not isinstance(rates, Mapping) or any(str(k) not in FAULT_KINDS for k in rates):
            raise ValueError(f"rates must map some of {list(FAULT_KINDS)} to probabilities")
        try:
            probabilities = {str(k): float(v) for k, v in rates.items()}
            seed = int(spec.get("seed", 0))
            retry_after = int(spec.get("retry_after", 1))
            slow_seconds = float(spec.get("slow_seconds", 2.0))
        except (TypeError, ValueError) as exc:
            raise ValueError("rates, seed, retry_after and slow_seconds must be numbers") from exc
        if any(p < 0 for p in probabilities.values()) or sum(probabilities.values()) > 1:
            raise ValueError("rates must be non-negative and sum to at most 1")
        if retry_after < 0 or slow_seconds < 0:
            raise ValueError("retry_after and slow_seconds must be non-negative")
        with self._lock:
            self._script: deque[str] = deque(str(s) for s in script)
            self._rates = [(k, probabilities.get(k, 0.0)) for k in FAULT_KINDS]
            self._rng = random.Random(seed)
            self.retry_after = retry_after
            self.slow_seconds = slow_seconds
            return self.describe()

    def describe(self) -> dict[str, Any]:
        """The plan as JSON-ready data (what is left of the script, the rates)."""
        return {
            "script": list(self._script),
            "rates": {k: p for k, p in self._rates if p},
            "retry_after": self.retry_after,
            "slow_seconds": self.slow_seconds,
        }

    def draw(self) -> str | None:
        """The fault for the next data request, or None to answer normally."""
        with self._lock:
            if self._script:
                step = self._script.popleft()
                return None if step == "ok" else step
            if not any(p for _, p in self._rates):
                return None
            u = self._rng.random()
            for kind, p in self._rates:
                if u < p:
                    return kind
                u -= p
            return None


class ServerStats:
    """Counts of requests, rows and faults served, for tests and demos."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._datasets: Counter[str] = Counter()
        self._rows: Counter[str] = Counter()

    def count(self, what: str, dataset: str | None = None, rows: int = 0, fault: str | None = None) -> None:
        """Record one request outcome."""
        with self._lock:
            self._counts[what] += 1
            if dataset is not None:
                self._datasets[dataset] += 1
                self._rows[dataset] += rows
            if fault is not None:
                self._faults[fault] += 1

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-ready data."""
        with self._lock:
            return {
                "requests": sum(self._datasets.values()),
                "rows": sum(self._rows.values()),
                "faults": {k: self._faults[k] for k in FAULT_KINDS},
                "datasets": {d: {"requests": n, "rows": self._rows[d]} for d, n in sorted(self._datasets.items())},
                "unauthorized": self._counts["unauthorized"],
                "bad_request": self._counts["bad_request"],
                "not_found": self._counts["not_found"],
                "admin": self._counts["admin"],
            }


# -- request parameters -----------------------------------------------------------------------------------


class BadRequest(ValueError):
    """A request parameter the server refuses (answered 400 with the message)."""


def parse_since(value: str, param: str) -> str:
    """An ISO datetime parameter as the sortable 'YYYY-MM-DDTHH:MM:SS[.ffffff]' the cursor column uses."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise BadRequest(f"{param} must be an ISO datetime like 2026-10-01T08:00:00") from exc
    if when.tzinfo is not None:
        when = when.astimezone(SOURCE_TZ).replace(tzinfo=None)
    return when.isoformat(timespec="seconds" if when.microsecond == 0 else "microseconds")


def parse_int(value: str | None, param: str, default: int, low: int, high: int | None) -> int:
    """A bounded integer parameter, or BadRequest naming it."""
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise BadRequest(f"{param} must be an integer") from exc
    if number < low or (high is not None and number > high):
        raise BadRequest(f"{param} must be between {low} and {high}" if high else f"{param} must be >= {low}")
    return number


def encode_cursor(cursor: str, key: str) -> str:
    """The opaque page cursor: urlsafe base64 of the JSON pair [cursor value, primary key]."""
    raw = json.dumps([cursor, key], ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(token: str) -> tuple[str, str]:
    """The (cursor value, primary key) inside a page cursor, or BadRequest."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        pair = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("cursor is not a cursor this server issued") from exc
    if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
        raise BadRequest("cursor is not a cursor this server issued")
    return pair[0], pair[1]


def _single(query: dict[str, list[str]], allowed: tuple[str, ...]) -> dict[str, str]:
    """Query parameters with one value each; unknown or repeated ones are refused by name."""
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown parameter(s) {unknown}; this endpoint takes {list(allowed)}")
    repeated = sorted(k for k, v in query.items() if len(v) > 1)
    if repeated:
        raise BadRequest(f"parameter(s) {repeated} given more than once")
    return {k: v[0] for k, v in query.items()}


def _since(params: dict[str, str], name: str) -> str | None:
    """The inclusive lower bound named ``name``, normalised, or None when absent."""
    return parse_since(params[name], name) if name in params else None


def cursor_page(snap: DatasetSnapshot, query: dict[str, list[str]]) -> tuple[bytes, int]:
    """公安 page: ``{"items": [...], "next_cursor": ...}`` and its row count."""
    params = _single(query, ("updated_since", "cursor", "page_size"))
    size = parse_int(params.get("page_size"), "page_size", CURSOR_PAGE_DEFAULT, 1, PAGE_MAX)
    start = snap.start_at(_since(params, "updated_since"))
    if "cursor" in params:
        start = max(start, snap.start_after(*decode_cursor(params["cursor"])))
    stop = min(start + size, snap.size)
    more = stop < snap.size and stop > start
    next_cursor = encode_cursor(str(snap.cursor[stop - 1]), str(snap.key[stop - 1])) if more else None
    tail = b'],"next_cursor":' + json.dumps(next_cursor).encode() + b"}"
    return b'{"items":[' + snap.page_json(start, stop) + tail, stop - start


def offset_page(snap: DatasetSnapshot, query: dict[str, list[str]]) -> tuple[bytes, int]:
    """人社 page: ``{"total", "offset", "limit", "rows": [...]}`` and its row count."""
    params = _single(query, ("modifiedSince", "offset", "limit"))
    offset = parse_int(params.get("offset"), "offset", 0, 0, None)
    limit = parse_int(params.get("limit"), "limit", OFFSET_PAGE_DEFAULT, 1, PAGE_MAX)
    first = snap.start_at(_since(params, "modifiedSince"))
    total = snap.size - first
    start = min(first + offset, snap.size)
    stop = min(start + limit, snap.size)
    head = f'{{"total":{total},"offset":{offset},"limit":{limit},"rows":['.encode()
    return head + snap.page_json(start, stop) + b"]}", stop - start


# -- the HTTP servers -------------------------------------------------------------------------------------


class DepartmentServer(ThreadingHTTPServer):
    """One department's REST server: its datasets by path, its bearer token, faults and stats."""

    daemon_threads = True

    def __init__(self, system: str, feeds: dict[str, DatasetFeed], token: str, address: tuple[str, int]) -> None:
        self.system = system
        self.feeds = feeds  # HTTP path -> dataset
        self.token = token
        self.faults = FaultPlan()
        self.stats = ServerStats()
        self.sleep: Callable[[float], None] = time.sleep  # how a "slow" fault waits; tests put an event here
        self.page: Callable[[DatasetSnapshot, dict[str, list[str]]], tuple[bytes, int]] = (
            cursor_page if system == "gongan" else offset_page
        )
        super().__init__(address, SourceRequestHandler)

    @property
    def current(self) -> bool:
        """Whether every dataset served is its file as it is now, with its rows serialised."""
        return all(feed.current for feed in self.feeds.values())

    @property
    def url(self) -> str:
        """Base URL clients use."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is normal for a source system; stay quiet about it."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class SourceRequestHandler(BaseHTTPRequestHandler):
    """Routes data and admin requests; answers JSON with Content-Length on keep-alive connections."""

    server: DepartmentServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out without waiting for the client's ACK
    timeout = 120  # idle keep-alive connections are closed eventually

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request access log (query strings carry cursors)."""

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps({"error": message}, ensure_ascii=False).encode(), headers)

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        expected = self.server.token.encode()
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected):
            return True
        self.server.stats.count("unauthorized")
        self._error(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        return False

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:
        """A data page or the admin stats."""
        url = urlsplit(self.path)
        if not self._authorised():
            return
        if url.path == "/_admin/stats":
            self.server.stats.count("admin")
            status = {**self.server.stats.snapshot(), "current": self.server.current}
            self._send(HTTPStatus.OK, json.dumps(status).encode())
            return
        feed = self.server.feeds.get(url.path.rstrip("/"))
        if feed is None:
            self.server.stats.count("not_found")
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint; try {sorted(self.server.feeds)}")
            return
        self._data_page(feed, parse_qs(url.query, keep_blank_values=True))

    def do_POST(self) -> None:
        """Set or clear the fault plan."""
        url = urlsplit(self.path)
        body = self._read_body()
        if not self._authorised():
            return
        if url.path != "/_admin/faults":
            self.server.stats.count("not_found")
            self._error(HTTPStatus.NOT_FOUND, "only /_admin/faults accepts POST")
            return
        self.server.stats.count("admin")
        try:
            spec = json.loads(body or b"{}")
            plan = self.server.faults.configure(spec)
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
            return
        self._send(HTTPStatus.OK, json.dumps({"faults": plan}).encode())

    def _data_page(self, feed: DatasetFeed, query: dict[str, list[str]]) -> None:
        dataset = feed.contract.dataset
        fault = self.server.faults.draw()
        if fault == "429":
            self.server.stats.count("fault", dataset, fault=fault)
            retry = str(self.server.faults.retry_after)
            self._error(HTTPStatus.TOO_MANY_REQUESTS, "rate limit exceeded", {"Retry-After": retry})
            return
        if fault == "500":
            self.server.stats.count("fault", dataset, fault=fault)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error in the source system")
            return
        if fault == "slow":
            self.server.sleep(self.server.faults.slow_seconds)
        try:
            body, rows = self.server.page(feed.snapshot(), query)
        except BadRequest as exc:
            self.server.stats.count("bad_request", dataset, fault=fault)
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
            return
        if fault == "truncate":
            body = body[: max(1, len(body) // 2)]
        self.server.stats.count("ok", dataset, rows=rows, fault=fault)
        self._send(HTTPStatus.OK, body)


# -- starting and stopping both ---------------------------------------------------------------------------


class SimulatorServers:
    """The two running department servers; a context manager that stops them and removes serve.json."""

    def __init__(self, data_dir: Path, servers: dict[str, DepartmentServer]) -> None:
        self.data_dir = data_dir
        self.tokens: dict[str, str] = {name: s.token for name, s in servers.items()}  # one credential per system
        self._servers = servers
        self._threads = [
            threading.Thread(target=s.serve_forever, name=f"sim-{name}", daemon=True) for name, s in servers.items()
        ]
        for thread in self._threads:
            thread.start()
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="sim-watch", daemon=True)
        self._watcher.start()
        self.urls: dict[str, str] = {name: s.url for name, s in servers.items()}
        self.serve_file = data_dir / SERVE_FILE
        # mode 0600: the file holds the bearer tokens
        write_atomic(self.serve_file, json.dumps({**self.urls, "tokens": self.tokens}, indent=2) + "\n")

    def __repr__(self) -> str:
        return f"SimulatorServers(urls={self.urls!r}, data_dir='{self.data_dir}')"  # never a token

    def _watch(self) -> None:
        """Re-read each dataset file soon after it changes (``DatasetFeed.refresh``), until the servers stop."""
        while not self._stopping.wait(WATCH_SECONDS):
            for server in self._servers.values():
                for feed in server.feeds.values():
                    try:
                        feed.refresh()
                    except Exception as exc:  # a watcher that dies would leave reloads to requests again
                        reason = type(exc).__name__
                        log.warning("%s: re-reading failed (%s); requests will try again", feed.path, reason)

    def server(self, system: str) -> DepartmentServer:
        """The server of one department ('gongan' or 'renshe')."""
        if system not in self._servers:
            raise KeyError(f"unknown system '{system}'; known: {list(self._servers)}")
        return self._servers[system]

    def set_faults(self, system: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Same as POST /_admin/faults on that server."""
        return self.server(system).faults.configure(spec)

    def stats(self, system: str) -> dict[str, Any]:
        """Same as GET /_admin/stats on that server."""
        return self.server(system).stats.snapshot()

    def stop(self) -> None:
        """Stop both servers and the watcher, and remove serve.json if it is still ours."""
        self._stopping.set()
        self._watcher.join(timeout=30)
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        try:
            if json.loads(self.serve_file.read_text()).get("tokens") == self.tokens:
                self.serve_file.unlink()
        except (FileNotFoundError, ValueError):
            pass

    def __enter__(self) -> SimulatorServers:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_servers(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    renshe_port: int = 0,
    token: str | Mapping[str, str] | None = None,
) -> SimulatorServers:
    """Load DIR/http/*.parquet and serve 公安 on ``port`` and 人社 on ``renshe_port`` (0: a free port each).

    Each system has its own bearer token: random unless given (one string for both, or one per system).
    Writes DIR/serve.json (mode 0600) with both URLs and the tokens. A port in use raises OSError.
    """
    data_dir = Path(data_dir)
    given = {s: token for s in SYSTEMS} if isinstance(token, str) else dict(token or {})
    tokens = {s: given.get(s) or secrets.token_urlsafe(24) for s in SYSTEMS}
    ports = {"gongan": port, "renshe": renshe_port}
    servers: dict[str, DepartmentServer] = {}
    try:
        for system in SYSTEMS:
            feeds = {}
            for contract in http_contracts(system):
                path = data_dir / "http" / f"{contract.dataset}.parquet"
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: missing; is {data_dir} a generated simulator folder?")
                feeds[dataset_path(contract.dataset)] = DatasetFeed(contract, path)
            try:
                servers[system] = DepartmentServer(system, feeds, tokens[system], (host, ports[system]))
            except OSError as exc:
                raise OSError(exc.errno, f"{system} cannot listen on {host}:{ports[system]}: {exc.strerror}") from exc
    except BaseException:
        for server in servers.values():
            server.server_close()
        raise
    return SimulatorServers(data_dir, servers)
