"""Ingest end to end against the live simulators: leaks, resumability after SIGKILL, incremental runs, faults."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from hub.settings import Settings
from hub.staging import read_staged, staged_batches
from privacy.keyring import init_keyfile
from simulators.advance import advance
from simulators.generate import generate
from simulators.http_server import SimulatorServers, start_servers

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


def test_all_datasets_leak_scan_and_rerun(
    sim: tuple[Path, SimulatorServers],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
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
    # no plaintext ID number, name or phone from the ground truth anywhere the hub wrote, or in the logs
    people = pd.read_parquet(data / "truth" / "persons.parquet")
    needles = {v for col in ("id_number", "phone") for v in people[col].dropna().astype(str)}
    needles |= {n for n in people["name"].dropna().astype(str) if len(n) >= 3}
    haystack = [p for p in home.rglob("*") if p.is_file() and "keys" not in p.parts]
    assert any("staging" in p.parts for p in haystack) and any("quarantine" in p.parts for p in haystack)
    pattern = re.compile("|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)))
    for path in haystack:
        text = path.read_bytes().decode("utf-8", errors="ignore")
        hit = pattern.search(text)
        assert hit is None, f"plaintext personal value in {path}"
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            assert pattern.search(frame.to_csv()) is None, f"plaintext personal value in {path}"
    assert pattern.search(caplog.text) is None
    # a second run stages nothing new
    again = _ingest(home, data, *registry(), monkeypatch=monkeypatch)
    assert sum(r.staged for r in again) == 0


def test_sigkill_mid_run_then_rerun_equals_clean_run(
    sim: tuple[Path, SimulatorServers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, servers = sim
    clean = _home(tmp_path, "clean")
    _ingest(clean, data, "renshe.insurance", monkeypatch=monkeypatch)
    expected = read_staged(clean / "staging", "renshe.insurance")["record_id"]

    killed = _home(tmp_path, "killed")
    servers.set_faults("renshe", {"script": ["ok"] + ["slow"] * 50, "slow_seconds": 1.0})
    proc = subprocess.Popen(
        [sys.executable, "-c", "from hub.cli import main; main()", "ingest", "renshe.insurance"],
        env=_env(killed, data),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 90
    while time.time() < deadline and not staged_batches(killed / "staging", "renshe.insurance"):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(staged_batches(killed / "staging", "renshe.insurance"))
    assert partial >= 1
    servers.set_faults("renshe", {})
    _ingest(killed, data, "renshe.insurance", monkeypatch=monkeypatch)
    got = read_staged(killed / "staging", "renshe.insurance")["record_id"]
    assert got.is_unique
    assert sorted(got) == sorted(expected)


def test_faults_are_retried_and_incremental_after_advance(
    sim: tuple[Path, SimulatorServers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, servers = sim
    home = _home(tmp_path, "hub")
    servers.set_faults("gongan", {"script": ["429", "500", "ok", "500"], "retry_after": 1})
    first = _ingest(home, data, "gongan.hukou", monkeypatch=monkeypatch)[0]
    assert first.error is None and first.staged > 0
    stats = servers.stats("gongan")
    assert "429" in str(stats) and "500" in str(stats)
    before = len(read_staged(home / "staging", "gongan.hukou"))
    summary = advance(data, changed=0.01, late=0.002, seed=3)
    changes = pd.read_parquet(summary.changes_path)
    expected = changes[changes["dataset"] == "gongan.hukou"]["record_id"].nunique()
    time.sleep(1.1)  # let the server see the new file mtime
    second = _ingest(home, data, "gongan.hukou", monkeypatch=monkeypatch)[0]
    assert second.error is None
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
