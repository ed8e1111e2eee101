"""Identity resolution on a generated population: quality against truth, stable keys, re-runs, incremental
runs, key rotation, and no plaintext anywhere linkage writes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from connectors.registry import registry
from hub.ingest_cli import run_ingest
from hub.link_cli import run_link
from hub.settings import Settings
from linkage import store
from linkage.evaluate import evaluate
from privacy.keyring import init_keyfile, rotate_keyfile
from simulators.advance import advance
from simulators.generate import generate
from simulators.http_server import start_servers
from tests.leakscan import leaks, personal_values

RESIDENTS = 4000


@dataclass(frozen=True)
class Linked:
    """A hub that ingested and linked the generated sources once (copy it before changing it)."""

    home: Path
    sim: Path


def _settings(home: Path, sim: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in {"HUB_HOME": str(home), "HUB_SIM_DATA": str(sim), "GX_ANALYTICS_ENABLED": "false"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HUB_DATABASE_URL", raising=False)
    monkeypatch.delenv("HUB_KEYRING_JSON", raising=False)
    monkeypatch.delenv("HUB_KEYRING", raising=False)
    return Settings.from_env()


@pytest.fixture(scope="module")
def linked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Linked]:
    base = tmp_path_factory.mktemp("linkage")
    sim, home = base / "sim", base / "hub"
    generate(sim, residents=RESIDENTS, seed=7)
    init_keyfile(home / "keys" / "demo-keyring.json")
    with pytest.MonkeyPatch.context() as mp, start_servers(sim):
        settings = _settings(home, sim, mp)
        results = run_ingest(list(registry()), settings)
        assert all(r.error is None for r in results), [r.error for r in results]
        assert sum(r.unkeyed for r in results) > 20
        result = run_link(settings)
        assert result.run_id == 1 and result.probabilistic > 0
    yield Linked(home, sim)


def _copy(linked: Linked, tmp_path: Path) -> Path:
    home = tmp_path / "hub"
    shutil.copytree(linked.home, home)
    return home


def _lineage(settings: Settings) -> pd.DataFrame:
    engine = settings.engine()
    with engine.connect() as conn:
        frame = store.read_table(conn, store.link_record)
    engine.dispose()
    return frame.set_index(["dataset", "record_id"]).sort_index()


def _counts(settings: Settings) -> dict[str, int]:
    engine = settings.engine()
    with engine.connect() as conn:
        counts = {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in store.metadata.sorted_tables
        }
    engine.dispose()
    return counts


def test_quality_against_the_truth(linked: Linked, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(linked.home, linked.sim, monkeypatch)
    engine = settings.engine()
    report = evaluate(engine, linked.sim / "truth" / "records.parquet", settings.load_keyring())
    engine.dispose()
    assert report.overall.precision >= 0.999, report.lines()
    assert report.overall.recall >= 0.99, report.lines()
    assert report.unkeyed["placed"] > 0
    assert report.unkeyed["precision"] >= 0.995, report.lines()
    assert report.unkeyed["recall"] >= 0.75, report.lines()
    # exact matching alone would leave every unkeyed record's pairs out: the Splink pass must add some
    assert report.by_kind["probabilistic"].correct_pairs > 0


def test_person_keys_are_random_and_linking_again_changes_nothing(
    linked: Linked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _copy(linked, tmp_path)
    settings = _settings(home, linked.sim, monkeypatch)
    before, counts = _lineage(settings), _counts(settings)
    again = run_link(settings)
    assert again.run_id is None and again.records == 0
    assert _lineage(settings).equals(before) and _counts(settings) == counts
    keys = before["person_key"]
    assert keys.str.fullmatch(r"[0-9a-f]{32}").all()
    # a second hub linking the same staged data issues other keys: nothing personal derives them
    other = tmp_path / "other"
    shutil.copytree(linked.home, other)
    (other / "hub.db").unlink()
    other_settings = _settings(other, linked.sim, monkeypatch)
    assert run_link(other_settings).run_id == 1
    elsewhere = _lineage(other_settings)
    assert len(elsewhere) == len(before)
    assert not set(elsewhere["person_key"]) & set(keys)


def test_an_incremental_run_keeps_every_key(linked: Linked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _copy(linked, tmp_path)
    sim = tmp_path / "sim"
    shutil.copytree(linked.sim, sim)
    settings = _settings(home, sim, monkeypatch)
    before = _lineage(settings)
    summary = advance(sim, changed=0.02, late=0.005, seed=5)
    with start_servers(sim):
        results = run_ingest(list(registry()), settings)
    assert all(r.error is None for r in results)
    result = run_link(settings)
    assert result.records > 0 and result.batches > 0
    after = _lineage(settings)
    common = before.index.intersection(after.index)
    changed = after.loc[common, "person_key"] != before.loc[common, "person_key"]
    engine = settings.engine()
    with engine.connect() as conn:
        events = store.read_table(conn, store.link_event)
    engine.dispose()
    merged = set(zip(events["person_key"], events["survivor_key"], strict=True))
    moved = set(
        zip(
            before.loc[common[changed.to_numpy()], "person_key"],
            after.loc[common[changed.to_numpy()], "person_key"],
            strict=True,
        )
    )
    assert moved <= merged, "a person key changed without a recorded merge"
    assert result.records == sum(r.staged for r in results) > 0  # every newly staged record, once
    touched = pd.read_parquet(summary.changes_path)
    updated = touched[touched["dataset"].eq("gongan.hukou")]["record_id"]
    assert after.loc["gongan.hukou"].loc[updated[updated.isin(before.loc["gongan.hukou"].index)]].shape[0] > 0
    assert run_link(settings).run_id is None  # and once more: nothing


def test_key_rotation_keeps_every_person(linked: Linked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _copy(linked, tmp_path)
    settings = _settings(home, linked.sim, monkeypatch)
    before = _lineage(settings)
    persons = _counts(settings)["link_person"]
    rotate_keyfile(settings.keyring)
    # re-ingest everything under the new key version: fresh staging, fresh watermarks and file records
    shutil.rmtree(home / "staging")
    engine = settings.engine()
    with engine.begin() as conn:
        for table in ("ingest_watermark", "ingest_boundary_key", "ingest_file"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    engine.dispose()
    with start_servers(linked.sim):
        results = run_ingest(list(registry()), settings)
    assert all(r.error is None for r in results)
    result = run_link(settings)
    assert result.rekeyed >= persons * 0.95  # every person with a valid ID gets a token under version 2
    assert result.new_persons == 0
    after = _lineage(settings)
    # the 残联 certificate number is FPE'd under the key version, so its staged id changes with the key:
    # those records are compared by the persons they name; every other record by its id
    keyed_ids = before.index.get_level_values("dataset") == "canlian.disability"
    plain = before[~keyed_ids]
    assert (after.loc[plain.index, "person_key"] == plain["person_key"]).all()
    relinked = after[after["run_id"] == result.run_id]
    fpe = relinked.loc[["canlian.disability"]]
    assert len(fpe) == keyed_ids.sum()
    assert set(fpe["person_key"]) == set(before[keyed_ids]["person_key"])
    assert _counts(settings)["link_person"] == persons


def test_nothing_linkage_writes_or_logs_holds_a_plaintext_value(
    linked: Linked,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    every_log: pytest.LogCaptureFixture,
) -> None:
    from click.testing import CliRunner

    from hub.cli import cli

    values = personal_values(linked.sim / "truth")
    assert leaks(linked.home, values) == {}
    assert list((linked.home / "runs" / "link").glob("model-run-*.json")), "the model is saved with the run"
    # link again from scratch with every log level captured, then explain a placed record
    home = _copy(linked, tmp_path)
    settings = _settings(home, linked.sim, monkeypatch)
    engine = settings.engine()
    with engine.begin() as conn:
        for table in reversed(store.metadata.sorted_tables):
            conn.execute(sa.text(f"DROP TABLE {table.name}"))
    engine.dispose()
    runner = CliRunner()
    linked_again = runner.invoke(cli, ["link"])
    assert linked_again.exit_code == 0, linked_again.output
    placed = _lineage(settings).query("match_kind == 'probabilistic'").index[0]
    explained = runner.invoke(cli, ["link", "explain", placed[1], "--dataset", placed[0]])
    assert explained.exit_code == 0, explained.output
    assert "Final score" in explained.output and "*" in explained.output
    unplaced = runner.invoke(cli, ["link", "unplaced"])
    assert unplaced.exit_code == 0
    assert sum(1 for r in every_log.records if r.levelno <= 20) > 0, "INFO/DEBUG records were captured"
    outputs = [every_log.text, linked_again.output, explained.output, unplaced.output]
    assert leaks(home, values, outputs) == {}


def test_a_rotation_between_staging_and_linking_keeps_one_person_per_id(
    linked: Linked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches staged under key v1 and v2, linked together for the first time: one ID is still one person;
    then v1 is destroyed and a later run with records to place still works."""
    from privacy.keyring import destroy_key_version

    home = _copy(linked, tmp_path)
    sim = tmp_path / "sim"
    shutil.copytree(linked.sim, sim)
    settings = _settings(home, sim, monkeypatch)
    before = _lineage(settings)
    engine = settings.engine()
    with engine.begin() as conn:
        for table in reversed(store.metadata.sorted_tables):  # as if no link run had happened yet
            conn.execute(sa.text(f"DROP TABLE {table.name}"))
        conn.execute(sa.text("DELETE FROM ingest_watermark WHERE dataset = 'gongan.hukou'"))
        conn.execute(sa.text("DELETE FROM ingest_boundary_key WHERE dataset = 'gongan.hukou'"))
    engine.dispose()
    rotate_keyfile(settings.keyring)
    shutil.rmtree(home / "staging" / "gongan.hukou")  # re-staged under v2; the other datasets stay under v1
    with start_servers(sim):
        assert run_ingest(["gongan.hukou"], settings)[0].error is None
    first = run_link(settings)
    assert first.run_id == 1
    after = _lineage(settings)
    # the same partition of ID-keyed records into persons as the single-version run (keys themselves are new)
    pairs = before[["person_key", "match_kind"]].join(after[["person_key", "match_kind"]], rsuffix="_now")
    assert len(pairs) == len(before)
    pairs = pairs[pairs["match_kind"].eq("exact") & pairs["match_kind_now"].eq("exact")]
    assert len(pairs) > 0.98 * len(before)
    assert pairs.groupby("person_key")["person_key_now"].nunique().max() == 1
    assert pairs.groupby("person_key_now")["person_key"].nunique().max() == 1
    assert run_link(settings).run_id is None  # and the next run neither fails nor changes anything
    # destroy v1: the v1 batches' values are crypto-shredded, linkage goes on
    rotate_keyfile(settings.keyring)
    destroy_key_version(settings.keyring, 1)
    advance(sim, changed=0.02, late=0.0, seed=9)
    with start_servers(sim):
        assert all(r.error is None for r in run_ingest(list(registry()), settings))
    later = run_link(settings)
    assert later.run_id is not None and later.records > 0


def test_a_days_run_scores_exactly_what_decoding_every_record_scores(
    linked: Linked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run with few records to place (the saved model) decodes only their candidates' records, blocking and
    counting names by the form tokens kept since the first run; Splink gets the same tables, and scores the same."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hub.link_cli import staged_refs
    from linkage import probabilistic, resolve
    from linkage.workspace import Workspace

    home = _copy(linked, tmp_path)
    sim = tmp_path / "sim"
    shutil.copytree(linked.sim, sim)
    settings = _settings(home, sim, monkeypatch)
    advance(sim, changed=0.03, late=0.01, seed=9)
    with start_servers(sim):
        assert all(r.error is None for r in run_ingest(list(registry()), settings))
    # the first run (training: every name decoded) kept every name's form tokens; forget 200 of them
    forms = home / "runs" / "link" / resolve.NAME_FORMS
    first = pq.read_table(forms)
    pq.write_table(first.slice(200).replace_schema_metadata(first.schema.metadata), forms)
    forgotten = first.slice(0, 200).to_pandas().set_index("ct")
    keyring, engine = settings.load_keyring(), settings.engine()
    with engine.connect() as conn:
        done = store.read_table(conn, store.link_batch)
        index = resolve._read_index(conn, keyring.active_version)
        model = Path(str(store.newest_model(conn)))
    engine.dispose()
    seen = set(zip(done["dataset"], done["batch_id"], strict=True))
    batches = staged_refs(settings)
    captured: dict[str, Any] = {}
    scored = probabilistic.place

    def capture(left: pd.DataFrame, right: pd.DataFrame, *args: Any, **kwargs: Any) -> tuple[pd.DataFrame, int]:
        decided, pairs = scored(left, right, *args, **kwargs)
        captured.update(left=left, right=right, model=args[0], tf=args[2], decided=decided, pairs=pairs)
        return decided, pairs

    monkeypatch.setattr(probabilistic, "place", capture)
    with Workspace() as ws:
        ws.load(batches, {(b.dataset, b.batch_id) for b in batches if (b.dataset, b.batch_id) not in seen})
        resolve._prepare(ws, index, keyring)
        targets = ws.sql("SELECT dataset, record_id FROM rec WHERE fresh AND link_token IS NULL").df()
        assert 0 < len(targets) < probabilistic.ModelSettings().reuse_below
        # the whole way: every keyed record decoded (as a training run does)
        ws.register("targets", targets)
        ws.decrypt_maps(keyring, "true")
        ws.decode_keyed()
        left = resolve._left(ws, ws.sql(ws.decoded("(SELECT * FROM rec JOIN targets USING (dataset, record_id))")).df())
        right = resolve._profiles(ws.profiles(ws.candidates(left)))
        tf = ws.name_frequencies()
        resolve._place(ws, targets, keyring, home / "runs" / "link", probabilistic.ModelSettings(), model)

    def rows(frame: pd.DataFrame | pa.Table) -> pd.DataFrame:
        frame = frame.to_pandas() if isinstance(frame, pa.Table) else frame
        return frame.astype(str).sort_values(list(frame.columns), ignore_index=True)

    assert len(captured["right"]) > len(targets)
    pd.testing.assert_frame_equal(rows(captured["left"]), rows(resolve._frame(left)))
    pd.testing.assert_frame_equal(rows(captured["right"]), rows(right))
    named = tf[tf["name_s"].isin(pd.concat([left["name_s"], right.column("name_s").to_pandas()]))]
    pd.testing.assert_frame_equal(rows(captured["tf"]), rows(named))
    whole, pairs = scored(resolve._frame(left), right, captured["model"], probabilistic.ModelSettings(), tf)
    assert pairs > len(targets) and captured["pairs"] == pairs
    assert whole["uid"].is_unique and set(whole["uid"]) <= set(left["uid"]) and whole["placed"].any()
    # the same decisions; the shares are sums in parallel, so their last digits may differ between two runs
    day, every = (f.sort_values("uid", ignore_index=True) for f in (captured["decided"], whole))
    pd.testing.assert_frame_equal(day, every, check_exact=False, rtol=1e-12)
    # the forgotten names of keyed records were decrypted again and kept, with the same tokens
    again = pq.read_table(forms).to_pandas().set_index("ct")
    back = forgotten.index.intersection(again.index)
    assert len(back) > 100 and len(again) == len(first) - 200 + len(back)
    pd.testing.assert_frame_equal(again.loc[back].sort_index(), forgotten.loc[back].sort_index())
