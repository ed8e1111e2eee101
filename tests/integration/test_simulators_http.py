"""The simulated 公安 and 人社 REST servers, through real HTTP on 127.0.0.1 with ``requests``."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from schemas.contract import packaged_contracts
from simulators.advance import advance
from simulators.generate import generate
from simulators.http_server import SimulatorServers, load_snapshot, start_servers

# -- fixtures ---------------------------------------------------------------------------------------------

RESIDENTS = 500


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "sim"
    generate(out, residents=RESIDENTS, seed=1)
    return out


def _copy(sim_dir: Path, to: Path) -> Path:
    """A copy of the generated folder for tests that rewrite files (no SQL is touched through it)."""
    shutil.copytree(sim_dir, to, ignore=shutil.ignore_patterns("serve.json"))
    return to


def _rows(sim_dir: Path, dataset: str) -> int:
    return len(pd.read_parquet(sim_dir / "http" / f"{dataset}.parquet"))


@pytest.fixture(scope="module")
def servers(sim_dir: Path) -> Iterator[SimulatorServers]:
    with start_servers(sim_dir) as running:
        yield running


class _SystemToken(requests.auth.AuthBase):
    """Each system's own bearer token, chosen by the URL a request goes to."""

    def __init__(self, servers: SimulatorServers) -> None:
        self.by_url = {url: servers.tokens[system] for system, url in servers.urls.items()}

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = next(t for url, t in self.by_url.items() if str(request.url).startswith(url))
        request.headers["Authorization"] = f"Bearer {token}"
        return request


@pytest.fixture
def session(servers: SimulatorServers) -> Iterator[requests.Session]:
    servers.set_faults("gongan", {})
    servers.set_faults("renshe", {})
    with requests.Session() as s:
        s.auth = _SystemToken(servers)
        yield s


def test_each_system_has_its_own_token(servers: SimulatorServers) -> None:
    gongan, renshe = servers.tokens["gongan"], servers.tokens["renshe"]
    assert gongan != renshe
    mixed = requests.get(
        servers.urls["renshe"] + "/rs/employment", headers={"Authorization": f"Bearer {gongan}"}, timeout=5
    )
    assert mixed.status_code == 401
    own = requests.get(
        servers.urls["renshe"] + "/rs/employment", headers={"Authorization": f"Bearer {renshe}"}, timeout=5
    )
    assert own.status_code == 200


def _expected(sim_dir: Path, dataset: str, cursor: str, pk: str) -> pd.DataFrame:
    frame = pd.read_parquet(sim_dir / "http" / f"{dataset}.parquet")
    return frame.sort_values([cursor, pk], kind="stable").reset_index(drop=True)


def _all_cursor_pages(session: requests.Session, url: str, page_size: int, **params: str) -> tuple[list[dict], int]:
    items: list[dict] = []
    pages = 0
    query: dict[str, str | int] = {"page_size": page_size, **params}
    while True:
        r = session.get(url, params=query, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        pages += 1
        if body["next_cursor"] is None:
            return items, pages
        query["cursor"] = body["next_cursor"]


# -- auth and errors --------------------------------------------------------------------------------------


def test_requests_without_the_bearer_token_get_401(servers: SimulatorServers) -> None:
    for url in (servers.urls["gongan"] + "/api/v1/hukou", servers.urls["renshe"] + "/rs/employment"):
        r = requests.get(url, timeout=5)
        assert r.status_code == 401
        assert "error" in r.json()
        r = requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=5)
        assert r.status_code == 401
    r = requests.post(servers.urls["gongan"] + "/_admin/faults", json={"script": ["500"]}, timeout=5)
    assert r.status_code == 401
    assert servers.stats("gongan")["unauthorized"] >= 3


def test_bad_parameters_get_400_naming_the_parameter(servers: SimulatorServers, session: requests.Session) -> None:
    gongan, renshe = servers.urls["gongan"], servers.urls["renshe"]
    cases = [
        (gongan + "/api/v1/hukou", {"cursor": "not-a-cursor!"}, "cursor"),
        (gongan + "/api/v1/hukou", {"page_size": "5001"}, "page_size"),
        (gongan + "/api/v1/hukou", {"page_size": "ten"}, "page_size"),
        (gongan + "/api/v1/hukou", {"updated_since": "yesterday"}, "updated_since"),
        (gongan + "/api/v1/hukou", {"modifiedSince": "2026-10-01T00:00:00"}, "modifiedSince"),
        (renshe + "/rs/insurance", {"offset": "-1"}, "offset"),
        (renshe + "/rs/insurance", {"limit": "0"}, "limit"),
    ]
    for url, params, name in cases:
        r = session.get(url, params=params, timeout=5)
        assert r.status_code == 400, (url, params)
        assert name in r.json()["error"]
    assert session.get(gongan + "/api/v1/nothing", timeout=5).status_code == 404
    assert session.get(renshe + "/api/v1/hukou", timeout=5).status_code == 404


def test_serve_json_is_private_and_names_both_servers(servers: SimulatorServers, sim_dir: Path) -> None:
    path = sim_dir / "serve.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {**servers.urls, "tokens": servers.tokens}
    assert all(token not in repr(servers) for token in servers.tokens.values())


# -- paging -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset,pk", [("hukou", "rkid"), ("migrant", "djid")])
def test_cursor_pages_return_every_row_once_in_order(
    servers: SimulatorServers, session: requests.Session, sim_dir: Path, dataset: str, pk: str
) -> None:
    expected = _expected(sim_dir, f"gongan.{dataset}", "gxsj", pk)
    items, pages = _all_cursor_pages(session, servers.urls["gongan"] + f"/api/v1/{dataset}", 37)
    assert pages == -(-len(expected) // 37)
    got = pd.DataFrame(items).astype("string")
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got, expected.astype("string"))


def test_default_page_size_and_one_page_when_everything_fits(
    sim_dir: Path, servers: SimulatorServers, session: requests.Session
) -> None:
    rows = _rows(sim_dir, "gongan.hukou")
    assert rows < 1000  # the default page size
    body = session.get(servers.urls["gongan"] + "/api/v1/hukou", timeout=5).json()
    assert len(body["items"]) == rows and body["next_cursor"] is None


def test_updated_since_is_inclusive_and_combines_with_the_cursor(
    servers: SimulatorServers, session: requests.Session, sim_dir: Path
) -> None:
    expected = _expected(sim_dir, "gongan.hukou", "gxsj", "rkid")
    since = expected["gxsj"].iloc[len(expected) // 2]
    want = expected[expected["gxsj"] >= since]
    url = servers.urls["gongan"] + "/api/v1/hukou"
    for form in (since, since.replace("T", " "), since + "+08:00"):
        items, _ = _all_cursor_pages(session, url, 20, updated_since=form)
        assert [i["rkid"] for i in items] == want["rkid"].tolist()
    assert session.get(url, params={"updated_since": "2099-01-01T00:00:00"}, timeout=5).json() == {
        "items": [],
        "next_cursor": None,
    }


def test_cursor_pages_stay_stable_when_rows_before_the_cursor_change(
    servers: SimulatorServers, session: requests.Session, sim_dir: Path
) -> None:
    """A cursor holds the last (gxsj, pk), not a position: rewrites between pages skip or repeat nothing."""
    url = servers.urls["gongan"] + "/api/v1/hukou"
    first = session.get(url, params={"page_size": 100}, timeout=5).json()
    rest_before, _ = _all_cursor_pages(session, url, 100, cursor=first["next_cursor"])
    path = sim_dir / "http" / "gongan.hukou.parquet"
    frame = pd.read_parquet(path)
    frame = frame[~frame["rkid"].isin([i["rkid"] for i in first["items"][:10]])]  # rows already read vanish
    original = path.read_bytes()
    try:
        frame.to_parquet(path.with_suffix(".tmp"), index=False)
        os.replace(path.with_suffix(".tmp"), path)
        rest_after, _ = _all_cursor_pages(session, url, 100, cursor=first["next_cursor"])
    finally:
        path.with_suffix(".tmp").write_bytes(original)
        os.replace(path.with_suffix(".tmp"), path)
    assert len(rest_before) > 100
    assert [i["rkid"] for i in rest_after] == [i["rkid"] for i in rest_before]


@pytest.mark.parametrize("dataset,pk", [("employment", "recordNo"), ("insurance", "insuredId")])
def test_offset_pages_cover_every_row_once_with_total(
    servers: SimulatorServers, session: requests.Session, sim_dir: Path, dataset: str, pk: str
) -> None:
    expected = _expected(sim_dir, f"renshe.{dataset}", "lastModified", pk)
    url = servers.urls["renshe"] + f"/rs/{dataset}"
    rows: list[dict] = []
    offset = 0
    while True:
        body = session.get(url, params={"offset": offset, "limit": 70}, timeout=5).json()
        assert body["total"] == len(expected) and body["offset"] == offset and body["limit"] == 70
        if not body["rows"]:
            break
        rows += body["rows"]
        offset += len(body["rows"])
    pd.testing.assert_frame_equal(pd.DataFrame(rows).astype("string"), expected.astype("string"))
    default = session.get(url, timeout=5).json()
    assert default["limit"] == 500 and len(default["rows"]) == min(500, len(expected))


def test_modified_since_filters_and_counts(servers: SimulatorServers, session: requests.Session, sim_dir: Path) -> None:
    expected = _expected(sim_dir, "renshe.insurance", "lastModified", "insuredId")
    since = expected["lastModified"].iloc[200]
    want = expected[expected["lastModified"] >= since]
    params = {"modifiedSince": since, "offset": 5, "limit": 1000}
    body = session.get(servers.urls["renshe"] + "/rs/insurance", params=params, timeout=5).json()
    assert body["total"] == len(want)
    assert [r["insuredId"] for r in body["rows"]] == want["insuredId"].tolist()[5:]


def test_values_with_quotes_backslashes_and_control_characters_round_trip(sim_dir: Path, tmp_path: Path) -> None:
    folder = _copy(sim_dir, tmp_path / "sim")
    path = folder / "http" / "gongan.hukou.parquet"
    frame = pd.read_parquet(path)
    odd = ['海拉尔区"胜利"街\\3号', "新巴尔虎\t左旗\n阿木古郎镇", "满洲里\x01市\x1f", None, "鄂温克旗 ＃7"]
    frame["hjdz"] = pd.Series([odd[i % len(odd)] for i in range(len(frame))], dtype="string")
    frame.to_parquet(path, index=False)
    expected = _expected(folder, "gongan.hukou", "gxsj", "rkid")
    with start_servers(folder) as running:
        headers = {"Authorization": f"Bearer {running.tokens['gongan']}"}
        url = running.urls["gongan"] + "/api/v1/hukou"
        items = requests.get(url, params={"page_size": 5000}, headers=headers, timeout=5).json()["items"]
    addresses = [i["hjdz"] for i in items]
    assert addresses == expected["hjdz"].astype(object).where(expected["hjdz"].notna(), None).tolist()
    assert set(addresses) == set(odd)


# -- faults and stats ---------------------------------------------------------------------------------------


def test_scripted_faults_in_order_then_normal(
    servers: SimulatorServers, session: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(servers.server("gongan"), "sleep", slept.append)  # the slow fault's wait, recorded
    base = servers.urls["gongan"]
    before = servers.stats("gongan")
    r = session.post(
        base + "/_admin/faults",
        json={"script": ["429", "500", "truncate", "ok", "slow"], "retry_after": 3, "slow_seconds": 0.5},
        timeout=5,
    )
    assert r.status_code == 200
    url = base + "/api/v1/hukou"
    r = session.get(url, timeout=5)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert session.get(url, timeout=5).status_code == 500
    r = session.get(url, params={"page_size": 50}, timeout=5)
    assert r.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        r.json()
    assert 0 < len(r.content) < len(session.get(url, params={"page_size": 50}, timeout=5).content)
    assert slept == []
    r = session.get(url, params={"page_size": 50}, timeout=5)
    assert r.status_code == 200 and len(r.json()["items"]) == 50
    assert slept == [0.5]  # held for slow_seconds before answering
    assert session.get(url, timeout=5).status_code == 200  # script used up
    after = servers.stats("gongan")
    assert {k: after["faults"][k] - before["faults"][k] for k in after["faults"]} == {
        "429": 1, "500": 1, "slow": 1, "truncate": 1
    }  # fmt: skip
    assert after["requests"] - before["requests"] == 6
    rows = after["datasets"]["gongan.hukou"]["rows"] - before["datasets"]["gongan.hukou"]["rows"]
    assert rows == 150 + min(1000, _rows(servers.data_dir, "gongan.hukou"))


def test_faults_apply_to_renshe_and_clear_with_empty_body(servers: SimulatorServers, session: requests.Session) -> None:
    base = servers.urls["renshe"]
    session.post(base + "/_admin/faults", json={"script": ["500", "500"]}, timeout=5)
    assert session.get(base + "/rs/employment", timeout=5).status_code == 500
    session.post(base + "/_admin/faults", json={}, timeout=5)
    assert session.get(base + "/rs/employment", timeout=5).status_code == 200
    bad = session.post(base + "/_admin/faults", json={"script": ["boom"]}, timeout=5)
    assert bad.status_code == 400 and "script" in bad.json()["error"]


def test_random_fault_rates_are_deterministic_for_a_seed(servers: SimulatorServers, session: requests.Session) -> None:
    base = servers.urls["gongan"]
    spec = {"rates": {"429": 0.2, "500": 0.2, "truncate": 0.1}, "seed": 7, "retry_after": 0}

    def run(seed: int) -> list[str]:
        session.post(base + "/_admin/faults", json={**spec, "seed": seed}, timeout=5)
        seen = []
        for _ in range(40):
            r = session.get(base + "/api/v1/migrant", params={"page_size": 20}, timeout=5)
            try:
                r.json()
                seen.append(str(r.status_code))
            except requests.JSONDecodeError:
                seen.append("truncated")
        return seen

    first = run(7)
    assert run(7) == first
    assert {"429", "500", "truncated", "200"} <= set(first)
    assert run(8) != first
    assert servers.stats("gongan")["faults"]["429"] >= first.count("429") * 2


def test_stats_count_requests_rows_and_refusals(servers: SimulatorServers, session: requests.Session) -> None:
    base = servers.urls["renshe"]
    before = session.get(base + "/_admin/stats", timeout=5).json()
    session.get(base + "/rs/insurance", params={"limit": 10}, timeout=5)
    session.get(base + "/rs/insurance", params={"limit": "x"}, timeout=5)
    requests.get(base + "/rs/insurance", timeout=5)
    after = session.get(base + "/_admin/stats", timeout=5).json()
    assert after["requests"] - before["requests"] == 2
    assert after["rows"] - before["rows"] == 10
    assert after["bad_request"] - before["bad_request"] == 1
    assert after["unauthorized"] - before["unauthorized"] == 1


# -- reload -------------------------------------------------------------------------------------------------


def test_a_running_server_shows_records_changed_by_advance(tmp_path: Path) -> None:
    folder = tmp_path / "sim"
    generate(folder, residents=RESIDENTS, seed=2)
    with start_servers(folder) as running, requests.Session() as s:
        s.auth = _SystemToken(running)
        url = running.urls["gongan"] + "/api/v1/hukou"
        before, _ = _all_cursor_pages(s, url, 100)
        top = max(i["gxsj"] for i in before)
        employment_top = pd.read_parquet(folder / "http" / "renshe.employment.parquet")["lastModified"].max()
        summary = advance(folder, changed=0.05, late=0.02, seed=3)
        changes = pd.read_parquet(summary.changes_path)
        hukou = changes[changes["dataset"] == "gongan.hukou"]
        fresh, _ = _all_cursor_pages(s, url, 100, updated_since=top)
        fresh_ids = {i["rkid"] for i in fresh}
        assert set(hukou.loc[hukou["kind"] == "changed", "record_id"]) <= fresh_ids
        late_since = (pd.Timestamp(top) - pd.Timedelta(minutes=10)).isoformat()
        with_lag, _ = _all_cursor_pages(s, url, 100, updated_since=late_since)
        assert set(hukou["record_id"]) <= {i["rkid"] for i in with_lag}
        after = {i["rkid"]: i for i in _all_cursor_pages(s, url, 100)[0]}
        old = {i["rkid"]: i for i in before}
        for rid in hukou["record_id"]:
            assert after[rid] != old[rid]
        since = {"modifiedSince": employment_top}
        offsets = s.get(running.urls["renshe"] + "/rs/employment", params=since, timeout=5).json()
        assert offsets["total"] >= summary.counts["renshe.employment"]["changed"]
    assert not (folder / "serve.json").exists()


def test_a_changed_file_is_re_read_and_serialised_before_any_request_asks(sim_dir: Path, tmp_path: Path) -> None:
    """The watcher re-reads a dataset soon after advance rewrites it: stats say ``current`` again, and the
    feed holds the new file's version with every row serialised, while no data request was made."""
    folder = _copy(sim_dir, tmp_path / "sim")
    with start_servers(folder) as running, requests.Session() as s:
        s.auth = _SystemToken(running)
        stats_url = running.urls["gongan"] + "/_admin/stats"
        assert s.get(stats_url, timeout=5).json()["current"] is True
        path = folder / "http" / "gongan.hukou.parquet"
        before = path.stat()
        advance(folder, changed=0.05, late=0.02, seed=3)
        after = path.stat()
        assert (after.st_mtime_ns, after.st_ino) != (before.st_mtime_ns, before.st_ino)
        deadline = time.monotonic() + 60
        while not s.get(stats_url, timeout=5).json()["current"]:
            assert time.monotonic() < deadline, "the watcher did not re-read the changed files within 60 s"
        # current: the feed serves the file as advance left it, every row serialised (no request re-read it)
        assert running.server("gongan").feeds["/api/v1/hukou"].current
        assert running.stats("gongan")["requests"] == 0


def test_a_port_in_use_is_refused_and_no_serve_json_is_written(sim_dir: Path, tmp_path: Path) -> None:
    """A given port is bound as given: one the OS handed to a listening socket of ours is refused."""
    folder = _copy(sim_dir, tmp_path / "sim")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as caught:
            start_servers(folder, port=port)
    assert caught.value.errno == errno.EADDRINUSE
    assert not (folder / "serve.json").exists()


def test_a_folder_without_http_data_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        start_servers(tmp_path)


def test_a_half_written_file_keeps_the_last_good_version_and_empty_data_pages_cleanly(
    sim_dir: Path, tmp_path: Path
) -> None:
    folder = _copy(sim_dir, tmp_path / "sim")
    path = folder / "http" / "gongan.hukou.parquet"
    good = pd.read_parquet(path)
    with start_servers(folder) as running, requests.Session() as s:
        s.auth = _SystemToken(running)
        url = running.urls["gongan"] + "/api/v1/hukou"
        path.write_bytes(b"PAR1 half a file")  # a writer that does not replace atomically
        body = s.get(url, timeout=5).json()
        assert len(body["items"]) == len(good)
        good.iloc[:0].to_parquet(path, index=False)
        assert s.get(url, timeout=5).json() == {"items": [], "next_cursor": None}
        renshe = folder / "http" / "renshe.employment.parquet"
        pd.read_parquet(renshe).iloc[:0].to_parquet(renshe, index=False)
        body = s.get(running.urls["renshe"] + "/rs/employment", timeout=5).json()
        assert body == {"total": 0, "offset": 0, "limit": 500, "rows": []}


def test_pages_are_the_same_bytes_before_and_after_rows_are_pre_serialised(sim_dir: Path) -> None:
    contract = packaged_contracts()["gongan.hukou"]
    snapshot = load_snapshot(sim_dir / "http" / "gongan.hukou.parquet", contract)
    assert not snapshot.prepared
    pages = [snapshot.page_json(a, a + 41) for a in range(0, snapshot.size, 41)]
    snapshot.prepare()
    assert snapshot.prepared
    assert [snapshot.page_json(a, a + 41) for a in range(0, snapshot.size, 41)] == pages
    rows = json.loads(b"[" + b",".join(pages) + b"]")
    assert [r["rkid"] for r in rows] == _expected(sim_dir, "gongan.hukou", "gxsj", "rkid")["rkid"].tolist()
