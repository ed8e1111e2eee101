"""The HTTP connector against the real simulated 公安/人社 servers on 127.0.0.1: pages, faults, increments."""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from connectors.chunk import SOURCE_POSITION
from connectors.errors import SourceError
from connectors.http import (
    CursorPaginator,
    HttpEndpoint,
    HttpSource,
    RetryPolicy,
    parse_airflow_connection,
    resolve_connection,
    retry_after_seconds,
)
from connectors.state import StateStore
from schemas.contract import get_contract
from simulators.advance import advance
from simulators.generate import generate
from simulators.http_server import SimulatorServers, start_servers

RESIDENTS = 500
FAST = RetryPolicy(attempts=4, backoff=0.01, cap=5.0)


def _no_wait(seconds: float) -> None:
    """Retries in these tests wait for nothing: ``stats.waited`` (or a list's ``append``) shows the waits."""


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One simulator data folder for the module; tests that change data work on a copy."""
    folder = tmp_path_factory.mktemp("sim") / "data"
    generate(folder, residents=RESIDENTS, seed=11)
    return folder


@pytest.fixture(scope="module")
def sim(generated: Path) -> Iterator[SimulatorServers]:
    """Both department servers over the unchanged folder; faults are cleared after each test."""
    with start_servers(generated) as servers:
        yield servers


@pytest.fixture(autouse=True)
def _no_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "sim" in request.fixturenames:
        servers = request.getfixturevalue("sim")
        for system in ("gongan", "renshe"):
            servers.set_faults(system, {})


def _copy(generated: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(generated, tmp_path / "data"))


def _rows(folder: Path, dataset: str) -> int:
    return int(json.loads((folder / "manifest.json").read_text())["datasets"][dataset]["rows"])


def _frame(folder: Path, dataset: str) -> pd.DataFrame:
    return pd.read_parquet(folder / "http" / f"{dataset}.parquet")


def _write(folder: Path, dataset: str, frame: pd.DataFrame) -> None:
    """Replace a dataset file atomically (new inode), as the simulator's ``advance`` does."""
    tmp = folder / "http" / f".{dataset}.tmp"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, folder / "http" / f"{dataset}.parquet")


def _source(servers: SimulatorServers, dataset: str, **options: object) -> HttpSource:
    system = dataset.split(".")[0]
    options.setdefault("retry", FAST)
    options.setdefault("sleep", _no_wait)
    return HttpSource(dataset, servers.urls[system], token=servers.tokens[system], **options)  # type: ignore[arg-type]


def _read_all(source: HttpSource, **kwargs: object) -> pd.DataFrame:
    frames = [c.frame for c in source.read(**kwargs)]  # type: ignore[arg-type]
    return pd.concat(frames, ignore_index=True)


def _shifted(moment: str, **delta: float) -> str:
    return (pd.Timestamp(moment) + pd.Timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%S")


@pytest.mark.parametrize("dataset", ["gongan.hukou", "renshe.insurance"])
def test_pagination_reads_every_row_exactly_once(
    sim: SimulatorServers, generated: Path, dataset: str
) -> None:
    contract = get_contract(dataset)
    rows = _rows(generated, dataset)
    source = _source(sim, dataset, page_size=37, pages_per_chunk=3)
    chunks = list(source.read())
    frame = pd.concat([c.frame for c in chunks], ignore_index=True)
    pk = contract.primary_key[0]
    assert len(frame) == rows and frame[pk].is_unique
    assert set(frame[pk]) == set(_frame(generated, dataset)[pk])
    overlap = source.endpoint.paginator.overlap  # offset pages overlap to notice a shifting set
    assert source.stats.requests == 1 + -(-(rows - 37) // (37 - overlap)) and source.stats.resyncs == 0
    assert set(contract.source_names) <= set(frame.columns)
    assert all(str(dtype) == "string" for dtype in frame.dtypes)
    # source order is (cursor, pk); each row says which page it came from
    assert frame[[contract.cursor, pk]].apply(tuple, axis=1).is_monotonic_increasing
    assert frame[SOURCE_POSITION].iloc[0] == "page 1 row 1"
    assert frame[SOURCE_POSITION].iloc[37] == f"page 2 row {overlap + 1}"
    assert chunks[-1].cursor_max == frame[contract.cursor].max()
    assert json.loads(chunks[-1].position)["next"] is None
    assert json.loads(chunks[0].position)["page"] == 3


def test_429_is_retried_and_retry_after_is_honoured(sim: SimulatorServers, generated: Path) -> None:
    sim.set_faults("gongan", {"script": ["429", "429"], "retry_after": 3})
    waits: list[float] = []
    source = _source(sim, "gongan.hukou", sleep=waits.append)
    frame = _read_all(source)
    assert len(frame) == _rows(generated, "gongan.hukou")
    assert source.stats.retries == {"HTTP 429": 2}
    assert waits == [3.0, 3.0]  # the server's Retry-After, not the 10 ms backoff
    assert source.stats.waited == pytest.approx(6.0)
    assert sim.stats("gongan")["faults"]["429"] == 2


def test_retry_after_is_capped(sim: SimulatorServers) -> None:
    sim.set_faults("gongan", {"script": ["429"], "retry_after": 3600})
    waits: list[float] = []
    _read_all(_source(sim, "gongan.migrant", sleep=waits.append))
    assert waits == [FAST.cap]


def test_500_is_retried_with_backoff_and_succeeds(sim: SimulatorServers, generated: Path) -> None:
    sim.set_faults("renshe", {"script": ["500", "500"]})
    waits: list[float] = []
    source = _source(sim, "renshe.insurance", page_size=100, sleep=waits.append)
    frame = _read_all(source)
    assert len(frame) == _rows(generated, "renshe.insurance") and frame["insuredId"].is_unique
    assert source.stats.retries == {"HTTP 500": 2}
    # exponential: 10 ms then 20 ms, each jittered down by up to half
    assert len(waits) == 2 and 0.005 <= waits[0] <= 0.01 and 0.01 <= waits[1] <= 0.02
    assert source.stats.waited == pytest.approx(sum(waits))


def test_truncated_page_is_retried(sim: SimulatorServers, generated: Path) -> None:
    sim.set_faults("gongan", {"script": ["ok", "truncate"]})
    source = _source(sim, "gongan.hukou", page_size=200)
    frame = _read_all(source)
    assert len(frame) == _rows(generated, "gongan.hukou") and frame["rkid"].is_unique
    assert source.stats.retries == {"truncated JSON": 1}


def test_persistent_truncation_fails_naming_dataset_and_page(sim: SimulatorServers) -> None:
    sim.set_faults("gongan", {"script": ["ok", "truncate", "truncate", "truncate", "truncate"]})
    source = _source(sim, "gongan.hukou", page_size=200)
    with pytest.raises(SourceError) as caught:
        _read_all(source)
    message = str(caught.value)
    assert message.startswith("gongan.hukou page 2 (cursor=")
    assert message.endswith("truncated JSON after 4 attempts")
    assert sim.tokens["gongan"] not in message


def test_random_faults_still_read_every_row(sim: SimulatorServers, generated: Path) -> None:
    before = sum(sim.stats("renshe")["faults"].values())
    sim.set_faults(
        "renshe", {"rates": {"429": 0.1, "500": 0.1, "truncate": 0.1}, "seed": 3, "retry_after": 0}
    )
    source = _source(sim, "renshe.insurance", page_size=40, retry=RetryPolicy(attempts=8, backoff=0.005))
    frame = _read_all(source)
    assert len(frame) == _rows(generated, "renshe.insurance") and frame["insuredId"].is_unique
    served = sum(sim.stats("renshe")["faults"].values()) - before
    assert sum(source.stats.retries.values()) == served > 0


def test_slow_answer_times_out_and_is_retried(
    sim: SimulatorServers, generated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held, release = threading.Event(), threading.Event()

    def hold(_seconds: float) -> None:  # the server holds the page until the client has given up on it
        held.set()
        release.wait(timeout=60)

    monkeypatch.setattr(sim.server("renshe"), "sleep", hold)
    sim.set_faults("renshe", {"script": ["slow"]})
    source = _source(sim, "renshe.employment", timeout=(2.0, 0.3))
    try:
        assert len(_read_all(source)) == _rows(generated, "renshe.employment")
    finally:
        release.set()
    assert held.is_set() and source.stats.retries == {"timeout": 1}


def test_wrong_token_fails_at_once_without_showing_it(sim: SimulatorServers) -> None:
    source = HttpSource("gongan.hukou", sim.urls["gongan"], token="not-the-token", retry=FAST)
    with pytest.raises(
        SourceError, match=r"gongan\.hukou page 1 .*HTTP 401 \(check the bearer token\)"
    ) as caught:
        _read_all(source)
    assert "not-the-token" not in str(caught.value)
    assert source.stats.requests == 1


def test_token_from_airflow_connection_json_and_uri(sim: SimulatorServers, generated: Path) -> None:
    rows = _rows(generated, "gongan.migrant")
    host, port = sim.urls["gongan"].removeprefix("http://").split(":")
    conn = json.dumps({"conn_type": "http", "host": host, "port": int(port), "password": sim.tokens["gongan"]})
    source = HttpSource("gongan.migrant", airflow_conn=conn, retry=FAST)
    assert source.base_url == sim.urls["gongan"]
    assert len(_read_all(source)) == rows
    uri = f"http://hub:{sim.tokens['gongan']}@{host}:{port}"
    assert len(_read_all(HttpSource("gongan.migrant", airflow_conn=uri, retry=FAST))) == rows
    with pytest.raises(SourceError, match="no bearer token"):
        HttpSource("gongan.migrant", sim.urls["gongan"], retry=FAST)


def test_connection_parsing_and_retry_after_forms() -> None:
    parsed = parse_airflow_connection(
        '{"conn_type": "http", "host": "https://rs.example", "password": "t%x"}'
    )
    assert parsed.base_url == "https://rs.example" and parsed.token == "t%x"
    parsed = parse_airflow_connection("http://user:a%2Fb@10.0.0.5:8080/https")
    assert parsed.base_url == "https://10.0.0.5:8080" and parsed.token == "a/b"
    assert "t%x" not in repr(resolve_connection(token="t%x", base_url="http://h"))
    assert resolve_connection(token="mine", airflow_conn="http://u:theirs@h:1").token == "mine"
    now = datetime(2026, 11, 1, tzinfo=UTC)
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=3), usegmt=True), now) == 3.0
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    assert RetryPolicy(backoff=1, cap=4, jitter=0).backoff_wait(5, random.Random(0)) == 4


def _read_while_records_move(
    folder: Path, chunk_index: int, rows: list[int]
) -> tuple[pd.DataFrame, pd.DataFrame, HttpSource]:
    """Read 人社 insurance in 100-row pages; after two, records of chunk ``chunk_index`` move to the end."""
    dataset = "renshe.insurance"
    original = _frame(folder, dataset)
    with start_servers(folder) as servers:
        source = _source(servers, dataset, page_size=100, pages_per_chunk=1)
        reader = source.read()
        chunks = [next(reader), next(reader)]
        frame = original.copy()
        moved = frame["insuredId"].isin(chunks[chunk_index].frame["insuredId"].iloc[rows])
        frame.loc[moved, "lastModified"] = _shifted(str(frame["lastModified"].max()), minutes=1)
        frame.loc[moved, "status"] = "终止参保"
        _write(folder, dataset, frame)
        chunks += list(reader)
    return original, pd.concat([c.frame for c in chunks], ignore_index=True), source


def test_offset_paging_survives_records_changing_mid_read(generated: Path, tmp_path: Path) -> None:
    # records already read change (move to the end): every later offset shifts down by three
    original, read, source = _read_while_records_move(_copy(generated, tmp_path), 0, [5, 50, 90])
    assert set(read["insuredId"]) == set(original["insuredId"])  # nothing skipped
    assert len(read) == len(original) + 3  # the three changed records once more, as their new version
    assert (read.loc[read.duplicated("insuredId", keep="first"), "status"] == "终止参保").all()
    assert source.stats.resyncs == 0  # three shifted rows fit inside the overlap


def test_offset_paging_backs_up_when_the_shift_exceeds_the_overlap(generated: Path, tmp_path: Path) -> None:
    original, read, source = _read_while_records_move(_copy(generated, tmp_path), 1, list(range(40)))
    assert set(read["insuredId"]) == set(original["insuredId"])
    assert len(read) == len(original) + 40 and source.stats.resyncs == 1


def test_offset_pages_must_be_larger_than_the_overlap(sim: SimulatorServers) -> None:
    with pytest.raises(SourceError, match="offset pages need more than 32 rows"):
        list(_source(sim, "renshe.insurance", page_size=20).read())


def _incremental(servers: SimulatorServers, store: StateStore, dataset: str) -> tuple[pd.DataFrame, int]:
    """One incremental run as the pipeline does it: read from the watermark, drop re-reads, advance."""
    contract = get_contract(dataset)
    assert contract.cursor is not None
    source = _source(servers, dataset, page_size=64)
    job = store.begin(dataset, contract.cursor, contract.primary_key, lag=source.lag)
    fresh = [job.accept(chunk) for chunk in source.read(since=job.since)]
    job.commit()  # the staged rows would be durably written before this
    return pd.concat(fresh, ignore_index=True), job.rows_read


@pytest.mark.parametrize("dataset", ["gongan.hukou", "renshe.insurance"])
def test_incremental_runs_see_exactly_what_advance_changed(
    generated: Path, tmp_path: Path, dataset: str
) -> None:
    folder = _copy(generated, tmp_path)
    pk = get_contract(dataset).primary_key[0]
    store = StateStore(f"sqlite:///{tmp_path / 'hub.db'}")
    with start_servers(folder) as servers:
        first, _ = _incremental(servers, store, dataset)
        assert len(first) == _rows(folder, dataset)
        again, reread = _incremental(servers, store, dataset)
        assert reread > 0 and again.empty  # the lag window is read again, and all of it was seen
        summary = advance(folder, changed=0.05, late=0.02, seed=5)
        changes = pd.read_parquet(summary.changes_path)
        changes = changes[changes["dataset"] == dataset]
        assert set(changes["kind"]) == {"changed", "late"}
        third, _ = _incremental(servers, store, dataset)
        assert sorted(third[pk]) == sorted(changes["record_id"])  # late updates inside the lag included
        fourth, _ = _incremental(servers, store, dataset)
        assert fourth.empty


@pytest.mark.parametrize(("dataset", "field"), [("gongan.migrant", "lxdh"), ("renshe.employment", "mobile")])
def test_late_update_inside_the_lag_comes_through_and_older_ones_do_not(
    generated: Path, tmp_path: Path, dataset: str, field: str
) -> None:
    folder = _copy(generated, tmp_path)
    contract = get_contract(dataset)
    cursor, pk = contract.cursor, contract.primary_key[0]
    assert cursor is not None
    store = StateStore(f"sqlite:///{tmp_path / 'hub.db'}")
    with start_servers(folder) as servers:
        _incremental(servers, store, dataset)
        frame = _frame(folder, dataset)
        top = str(frame[cursor].max())
        ordered = frame.sort_values(cursor)[pk].tolist()
        changed, late, too_late = ordered[0], ordered[1], ordered[2]
        frame.loc[frame[pk] == changed, [field, cursor]] = ["changed", _shifted(top, minutes=1)]
        frame.loc[frame[pk] == late, cursor] = _shifted(top, minutes=-4)
        frame.loc[frame[pk] == too_late, cursor] = _shifted(top, minutes=-30)
        _write(folder, dataset, frame)
        third, _ = _incremental(servers, store, dataset)
        assert sorted(third[pk]) == sorted([changed, late])
        assert third.loc[third[pk] == changed, field].item() == "changed"
        assert _incremental(servers, store, dataset)[0].empty
    mark = store.watermark(dataset)
    assert mark is not None and mark.cursor == _shifted(top, minutes=1)
    assert mark.since() == _shifted(top, minutes=-9)


class _CutBodyHandler(BaseHTTPRequestHandler):
    """Answers the first request with a body shorter than its Content-Length, then a proper empty page."""

    answered = 0

    def do_GET(self) -> None:
        type(self).answered += 1
        body = json.dumps({"items": [{"rkid": "RK1", "gxsj": "2026-10-31T00:00:00"}], "next_cursor": None})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body.encode())))
        self.end_headers()
        self.wfile.write(body.encode()[: 10 if type(self).answered == 1 else None])

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def test_body_cut_short_by_the_connection_is_retried() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CutBodyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        endpoint = HttpEndpoint("gongan", "/api/v1/hukou", CursorPaginator(), 10)
        with HttpSource(
            "gongan.hukou", f"http://{host!s}:{port}", token="t", endpoint=endpoint, retry=FAST, sleep=_no_wait
        ) as src:
            frame = _read_all(src)
        assert frame["rkid"].tolist() == ["RK1"]
        assert src.stats.retries == {"truncated body": 1}
    finally:
        server.shutdown()
        server.server_close()
