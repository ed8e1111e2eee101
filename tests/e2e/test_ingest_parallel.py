"""The parallel ingest runner stages exactly what a serial run stages: same batches, same content hashes.

Worker processes stage datasets side by side and the chunks of one dataset side by side; batches are
committed in source order. Small batches (400 rows) make the larger datasets several batches each, so chunks
of one dataset really are in two workers at once.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from hub.settings import Settings
from hub.staging import staged_batches
from privacy.keyring import init_keyfile
from simulators.advance import advance
from simulators.generate import generate
from simulators.http_server import SimulatorServers, start_servers

RESIDENTS = 1200
BATCH_ROWS = 400


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "sim"
    generate(data, residents=RESIDENTS, seed=5)
    servers: SimulatorServers
    with start_servers(data) as servers:
        del servers
        yield data


def _homes(tmp_path: Path, names: list[str]) -> dict[str, Path]:
    """Hub homes sharing one keyring (the same keys give the same tokens and ciphertexts)."""
    key = tmp_path / "keyring.json"
    init_keyfile(key)
    homes = {}
    for name in names:
        home = tmp_path / name
        (home / "keys").mkdir(parents=True, mode=0o700)
        shutil.copy(key, home / "keys" / "demo-keyring.json")
        os.chmod(home / "keys" / "demo-keyring.json", 0o600)
        homes[name] = home
    return homes


def _ingest(home: Path, sim: Path, workers: int) -> list:  # type: ignore[type-arg]
    from connectors.registry import registry
    from hub.ingest_cli import run_ingest

    settings = Settings.from_env({**os.environ, "HUB_HOME": str(home), "HUB_SIM_DATA": str(sim)})
    results = run_ingest(list(registry()), settings, workers=workers)
    assert [r.error for r in results if r.error] == []
    return results


def _staged(home: Path) -> dict[tuple[str, str], str]:
    return {(m.dataset, m.batch_id): m.content_hash for m in staged_batches(home / "staging")}


def _watermarks(home: Path) -> dict[str, str]:
    engine = sa.create_engine(f"sqlite:///{home / 'hub.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT dataset, cursor_value FROM ingest_watermark")).all()
            files = conn.execute(sa.text("SELECT sha256, status FROM ingest_file")).all()
    finally:
        engine.dispose()
    return {str(d): str(c) for d, c in rows} | {str(s): str(st) for s, st in files}


def test_parallel_ingest_stages_what_a_serial_run_stages(
    sim: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hub.ingest

    monkeypatch.setattr(hub.ingest, "BATCH_ROWS", BATCH_ROWS)
    homes = _homes(tmp_path, ["serial", "parallel"])
    serial = _ingest(homes["serial"], sim, workers=1)
    parallel = _ingest(homes["parallel"], sim, workers=2)
    first = _staged(homes["serial"])
    assert _staged(homes["parallel"]) == first
    per_dataset: dict[str, int] = {}
    for dataset, _batch in first:
        per_dataset[dataset] = per_dataset.get(dataset, 0) + 1
    assert max(per_dataset.values()) >= 3, per_dataset  # some dataset's chunks were staged side by side
    counts = [(r.dataset, r.rows_read, r.staged, r.quarantined, r.unkeyed, sorted(r.batches)) for r in serial]
    assert [(r.dataset, r.rows_read, r.staged, r.quarantined, r.unkeyed, sorted(r.batches)) for r in parallel] == counts
    assert _watermarks(homes["parallel"]) == _watermarks(homes["serial"])

    # a day's changes, then both again: the incremental runs agree too
    advance(sim, changed=0.05, late=0.01, seed=9)
    _ingest(homes["serial"], sim, workers=1)
    _ingest(homes["parallel"], sim, workers=2)
    second = _staged(homes["serial"])
    assert len(second) > len(first)
    assert _staged(homes["parallel"]) == second
    assert _watermarks(homes["parallel"]) == _watermarks(homes["serial"])
