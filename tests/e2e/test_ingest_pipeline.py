"""Ingest end to end against the live simulators: leaks, resumability after SIGKILL, incremental runs, faults."""

from __future__ import annotations

import gzip
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from connectors.http import HttpSource
from hub.settings import Settings
from hub.staging import read_staged, staged_batches
from privacy.keyring import init_keyfile
from simulators.advance import advance
from simulators.generate import generate
from simulators.http_server import SimulatorServers, start_servers
from tests.leakscan import find_value, leaks, personal_values

RESIDENTS = 1500


def _env(home: Path, sim: Path) -> dict[str, str]:
    return {**os.environ, "HUB_HOME": str(home), "HUB_SIM_DATA": str(sim), "GX_ANALYTICS_ENABLED": "false"}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[tuple[Path, SimulatorServers]]:
    data = tmp_path / "sim"
    generate(data, residents=RESIDENTS, seed=11)
    with start_servers(data) as servers:
        yield data, servers


def _home(tmp_path: Path, name: str) -> Path:
    home = tmp_path / name
    home.mkdir()
    init_keyfile(home / "keys" / "demo-keyring.json")
    return home


def _ingest(home: Path, sim: Path, *datasets: str, monkeypatch: pytest.MonkeyPatch) -> list:  # type: ignore[type-arg]
    from hub.ingest_cli import run_ingest

    for key, value in _env(home, sim).items():
        monkeypatch.setenv(key, value)
    return run_ingest(list(datasets), Settings.from_env())


# -- what the hub's HTTP connectors did ------------------------------------------------------------------------


@dataclass
class HttpSpy:
    """Every HttpSource the hub opened, and each wait it asked for (recorded, never slept)."""

    sources: list[HttpSource] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def of(self, dataset: str) -> list[HttpSource]:
        return [s for s in self.sources if s.dataset == dataset]


@pytest.fixture
def http_spy(monkeypatch: pytest.MonkeyPatch) -> HttpSpy:
    """hub.ingest looks ``connectors.http.HttpSource`` up per dataset: swap in one that records itself."""
    import connectors.http

    spy = HttpSpy()

    class Recorded(HttpSource):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("sleep", spy.waits.append)
            super().__init__(*args, **kwargs)
            spy.sources.append(self)

    monkeypatch.setattr(connectors.http, "HttpSource", Recorded)
    return spy


# -- the leak scan ---------------------------------------------------------------------------------------------

def test_the_leak_scan_finds_planted_values(tmp_path: Path, every_log: pytest.LogCaptureFixture) -> None:
    """The scan below is only worth something if it finds a value wherever and however it was written."""
    truth = tmp_path / "truth"
    truth.mkdir()
    people = {"id_number": ["11010519491231002X"], "phone": ["13812345678"], "name": ["欧阳娜娜"]}
    pd.DataFrame(people).to_parquet(truth / "persons.parquet")
    values = personal_values(truth)
    home = tmp_path / "home"
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "k.json").write_text("11010519491231002X")  # keys are not scanned
    (home / "clean.txt").write_text("batch 0193 rows 1381234567 11010519491231002 欧阳娜")  # near misses
    assert leaks(home, values) == {}
    planted = {
        "plain.log": b"id=11010519491231002X",
        "fullwidth.json": '{"gmsfhm": "１１０１０５１９４９１２３１００２ｘ"}'.encode(),
        "legacy.txt": b"sfzh 110105491231002",
        "dashes.txt": b"tel 138-1234 5678",
        "gb18030.csv": "姓名\n欧阳娜娜\n".encode("gb18030"),
        "traditional.txt": "歐陽娜娜".encode(),
        "page.gz": gzip.compress(b"13812345678"),
    }
    for name, data in planted.items():
        (home / name).write_bytes(data)
    pd.DataFrame({"phone": ["13812345678"] * 50}).to_parquet(home / "rows.parquet", compression="snappy")
    pd.DataFrame({"name": ["欧阳娜娜"]}).to_excel(home / "export.xlsx", index=False)
    assert leaks(home, values) == {
        "plain.log": "11010519491231002X",
        "fullwidth.json": "11010519491231002X",
        "legacy.txt": "110105491231002",
        "dashes.txt": "13812345678",
        "gb18030.csv": "欧阳娜娜",
        "traditional.txt": "歐陽娜娜",
        "page.gz": "13812345678",
        "rows.parquet": "13812345678",
        "export.xlsx": "欧阳娜娜",
    }
    # log records at every level, from the hub's loggers and from libraries that set their own level
    logging.getLogger("hub.ingest").debug("read 13812345678")
    logging.getLogger("urllib3.connectionpool").debug('"GET /api/v1/hukou?xm=欧阳娜娜 HTTP/1.1" 200')
    assert find_value(every_log.text, values) is not None
    assert [find_value(r.getMessage(), values) for r in every_log.records] == ["13812345678", "欧阳娜娜"]


def test_all_datasets_leak_scan_and_rerun(
    sim: tuple[Path, SimulatorServers],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    every_log: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from connectors.registry import registry

    data, _servers = sim
    home = _home(tmp_path, "hub")
    results = _ingest(home, data, *registry(), monkeypatch=monkeypatch)
    assert all(r.error is None for r in results), [r.error for r in results]
    by = {r.dataset: r for r in results}
    assert "父亲联系电话" in by["jisheng.births"].dropped_columns
    assert len(by["jisheng.births"].rejected_files) == 1
    assert any("id_number" in k for k in by["gongan.hukou"].quarantine_reasons)
    assert sum(r.staged for r in results) > RESIDENTS
    # a second run stages nothing new
    again = _ingest(home, data, *registry(), monkeypatch=monkeypatch)
    assert sum(r.staged for r in again) == 0
    # no plaintext ID number, name or phone from the ground truth anywhere the hub wrote, printed or logged
    written = [p.relative_to(home).parts[0] for p in home.rglob("*") if p.is_file()]
    assert {"staging", "quarantine"} <= set(written)
    assert any(r.levelno < logging.WARNING for r in every_log.records)  # INFO and DEBUG are captured too
    printed = capsys.readouterr()
    assert "gongan.hukou" in printed.out  # the progress display is captured
    found = leaks(home, personal_values(data / "truth"), [every_log.text, printed.out, printed.err])
    assert found == {}, f"plaintext personal values: {found}"


PAGE_ROWS = 500
# `hub ingest` in a child process with every log level on stderr, and 500-row pages staged one batch each so
# that 人社 insurance (about 2,100 rows) is several batches and a kill can land between them.
_CLI_AT_DEBUG = f"""
import dataclasses, logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
import hub.ingest
from connectors.registry import registry
from hub.cli import main
assert hub.ingest.BATCH_ROWS > {PAGE_ROWS}
hub.ingest.BATCH_ROWS = {PAGE_ROWS}
registry()["renshe.insurance"] = dataclasses.replace(registry()["renshe.insurance"], page_size={PAGE_ROWS})
main()
"""


def test_sigkill_mid_run_then_rerun_equals_clean_run(
    sim: tuple[Path, SimulatorServers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, servers = sim
    clean = _home(tmp_path, "clean")
    _ingest(clean, data, "renshe.insurance", monkeypatch=monkeypatch)
    expected = read_staged(clean / "staging", "renshe.insurance")["record_id"]
    assert len(expected) > 3 * PAGE_ROWS

    # two pages are answered, the third is held until the child is dead: the kill lands mid-run, every time
    held, release = threading.Event(), threading.Event()

    def hold(_seconds: float) -> None:
        held.set()
        release.wait(timeout=120)

    servers.server("renshe").sleep = hold
    servers.set_faults("renshe", {"script": ["ok", "ok"] + ["slow"] * 50})
    killed = _home(tmp_path, "killed")
    with open(tmp_path / "out.txt", "wb") as out, open(tmp_path / "err.txt", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CLI_AT_DEBUG, "ingest", "renshe.insurance"],
            env=_env(killed, data), stdout=out, stderr=err,
        )  # fmt: skip
        try:
            assert held.wait(timeout=120), "the child never asked for its third page"
            # the stages run in worker processes while the source is read on: wait for the two batches
            # read before the held page to be committed (a serial run has committed them already)
            deadline = time.monotonic() + 120
            while len(staged_batches(killed / "staging", "renshe.insurance")) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            release.set()
    assert proc.returncode == -signal.SIGKILL
    assert len(staged_batches(killed / "staging", "renshe.insurance")) == 2
    # what the child printed and logged at every level holds no personal value either
    printed = [(tmp_path / name).read_text(encoding="utf-8", errors="replace") for name in ("out.txt", "err.txt")]
    assert "DEBUG " in printed[1] and "renshe.insurance" in "".join(printed)
    assert leaks(killed, personal_values(data / "truth"), printed) == {}
    servers.set_faults("renshe", {})
    _ingest(killed, data, "renshe.insurance", monkeypatch=monkeypatch)
    got = read_staged(killed / "staging", "renshe.insurance")["record_id"]
    assert got.is_unique
    assert sorted(got) == sorted(expected)


def test_faults_are_retried_and_incremental_after_advance(
    sim: tuple[Path, SimulatorServers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_spy: HttpSpy
) -> None:
    data, servers = sim
    home = _home(tmp_path, "hub")
    servers.set_faults("gongan", {"script": ["429", "500", "ok", "500"], "retry_after": 7})
    first = _ingest(home, data, "gongan.hukou", monkeypatch=monkeypatch)[0]
    assert first.error is None and first.staged > 0
    [source] = http_spy.of("gongan.hukou")
    assert source.stats.retries == {"HTTP 429": 1, "HTTP 500": 1}
    assert source.stats.requests == 3  # the page fits in one request; two of them were refused
    assert http_spy.waits[0] == 7.0  # the server's Retry-After, not the backoff
    backoff = source.retry.backoff * 2  # after the second failed try, jittered down by up to `jitter`
    assert backoff * (1 - source.retry.jitter) <= http_spy.waits[1] <= backoff
    assert source.stats.waited == pytest.approx(sum(http_spy.waits))
    assert servers.stats("gongan")["faults"] == {"429": 1, "500": 1, "slow": 0, "truncate": 0}
    before = len(read_staged(home / "staging", "gongan.hukou"))
    summary = advance(data, changed=0.01, late=0.002, seed=3)
    changes = pd.read_parquet(summary.changes_path)
    expected = changes[changes["dataset"] == "gongan.hukou"]["record_id"].nunique()
    # advance replaces the file (a new inode), so the running server reads it again at once
    second = _ingest(home, data, "gongan.hukou", monkeypatch=monkeypatch)[0]
    assert second.error is None
    assert http_spy.of("gongan.hukou")[1].stats.retries == {"HTTP 500": 1}  # the script's last step
    assert second.staged + second.quarantined == expected
    assert len(read_staged(home / "staging", "gongan.hukou")) == before + second.staged


def test_truncated_page_fails_with_dataset_and_page(
    sim: tuple[Path, SimulatorServers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, servers = sim
    home = _home(tmp_path, "hub")
    servers.set_faults("gongan", {"script": ["truncate"] * 10})
    result = _ingest(home, data, "gongan.migrant", monkeypatch=monkeypatch)[0]
    assert result.error is not None
    assert "gongan.migrant" in result.error and "page 1" in result.error and "truncated" in result.error
    assert result.staged == 0 and not staged_batches(home / "staging", "gongan.migrant")


def test_quarantine_list_and_show_are_audited(
    sim: tuple[Path, SimulatorServers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from hub.cli import cli
    from privacy.audit_log import read_entries, verify_log

    data, _servers = sim
    home = _home(tmp_path, "hub")
    _ingest(home, data, "gongan.hukou", monkeypatch=monkeypatch)
    runner = CliRunner()
    listed = runner.invoke(cli, ["quarantine", "list"])
    assert listed.exit_code == 0, listed.output
    batch = listed.output.split("\t")[1]
    assert "gongan.hukou" in listed.output and "id_number" in listed.output
    refused = runner.invoke(cli, ["quarantine", "show", batch])
    assert refused.exit_code != 0 and "--reason" in refused.output
    blank = runner.invoke(cli, ["quarantine", "show", batch, "--reason", "  ", "--operator", "steward1"])
    assert blank.exit_code != 0 and "reason" in blank.output and "gmsfhm" not in blank.output
    shown = runner.invoke(cli, ["quarantine", "show", batch, "--reason", "fix ID numbers", "--operator", "steward1"])
    assert shown.exit_code == 0, shown.output
    assert "gmsfhm" in shown.output  # the raw source columns, decrypted for the steward
    log = home / "audit" / "reveal.log"
    entries = read_entries(log)
    assert [e["outcome"].split(":")[0] for e in entries] == ["refused", "refused", "shown"]
    assert entries[-1]["action"] == "quarantine_show" and entries[-1]["operator"] == "steward1"
    settings = Settings.from_env()
    assert verify_log(log, settings.engine(), settings.load_keyring()).ok
