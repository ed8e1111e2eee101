"""The unified community database on SQLite and PostgreSQL: publish, re-publish, incremental publish after
`hub simulate advance`, the change log, the release gate, the cross-department views against the planted
truth, and (PostgreSQL) the roles with real connections and a leak scan of every schema."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from pandas.testing import assert_frame_equal
from sqlalchemy.engine import make_url

from connectors.registry import registry
from hub.ingest_cli import run_ingest
from hub.link_cli import run_link
from hub.publish_cli import run_publish
from hub.settings import Settings
from hub.staging import batch_dir, staged_batches
from linkage import store
from privacy.keyring import init_keyfile, rotate_keyfile
from privacy.operators import fpe_series
from privacy.policy import load_policy
from privacy.report import load_truth_names, scan_database
from publish.checks import load_rules, refresh_views
from publish.consumers import CONSUMERS_FILE, load_consumers
from publish.evaluate import compare_conflicts
from publish.publisher import PublishResult, table_checksums
from publish.release import ReleaseFigure
from schemas import migrate
from schemas.migrate import prepared
from schemas.unified import published_tables, table
from simulators.advance import advance
from simulators.generate import generate
from simulators.http_server import start_servers
from simulators.population import AS_OF
from tests.conftest import _throwaway_database
from tests.leakscan import leaks, personal_values

RESIDENTS = 4000
sqlite_only = pytest.mark.parametrize("published", ["sqlite"], indirect=True)
#: source dataset -> the published table its records land in (one row per record)
RECORD_TABLES = {
    "gongan.hukou": "core.hukou_registration",
    "gongan.migrant": "core.migrant_registration",
    "minzheng.dibao": "core.dibao_membership",
    "minzheng.relief": "core.social_relief",
    "renshe.employment": "core.employment_registration",
    "renshe.insurance": "core.insurance_participation",
    "sifa.corrections": "sensitive.community_correction",
    "jisheng.births": "core.birth_registration",
}


@dataclass
class Published:
    """A hub that ingested, linked and published twice, then advanced the sources and published again."""

    dialect: str
    url: str
    sim: Path
    settings: Settings
    first: PublishResult
    release: list[ReleaseFigure]
    second: PublishResult
    checksums: tuple[dict[str, str], dict[str, str]]
    feed_after_second: int
    changes: pd.DataFrame  # the simulator's truth of what the advance changed
    third: PublishResult
    staged_after_advance: set[tuple[str, str]]  # (dataset, record_id) staged by the ingest after the advance
    lineage_first: pd.DataFrame  # the identity index's lineage when the first publish ran
    persons_first: int  # persons in the identity index then
    published_persons: pd.Series  # core.person's keys after the third publish


def _settings(home: Path, sim: Path, url: str | None, mp: pytest.MonkeyPatch) -> Settings:
    for key, value in {"HUB_HOME": str(home), "HUB_SIM_DATA": str(sim), "GX_ANALYTICS_ENABLED": "false"}.items():
        mp.setenv(key, value)
    for key in ("HUB_KEYRING_JSON", "HUB_KEYRING"):
        mp.delenv(key, raising=False)
    mp.setenv("HUB_CONSUMERS", str(_consumers(home, sim)))
    if url:
        mp.setenv("HUB_DATABASE_URL", url)
    else:
        mp.delenv("HUB_DATABASE_URL", raising=False)
    return Settings.from_env()


def _consumers(home: Path, sim: Path) -> Path:
    """A consumers file with the demo's platforms plus one scoped to the most populous generated community."""
    people = pd.read_parquet(sim / "truth" / "persons.parquet")
    busiest = people.loc[~people["is_migrant"], "community_code"].value_counts().index[0]
    path = home / "consumers.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = CONSUMERS_FILE.read_text(encoding="utf-8")
    text += f"  - {{name: one_community, label: 单社区平台, kind: platform, scope: ['{busiest}']}}\n"
    path.write_text(text, encoding="utf-8")
    return path


def _busiest(pg: Published) -> str:
    return str(load_consumers(pg.settings.consumers)[-1].scope[0])


def _ingest_and_link(settings: Settings, sim: Path) -> set[tuple[str, str]]:
    """Ingest and link; returns the (dataset, record_id) of every record this ingest staged."""
    before = {(m.dataset, m.batch_id) for m in staged_batches(settings.home / "staging")}
    with start_servers(sim):
        results = run_ingest(list(registry()), settings)
    assert all(r.error is None for r in results), [r.error for r in results]
    run_link(settings)
    staged = set()
    for m in staged_batches(settings.home / "staging"):
        if (m.dataset, m.batch_id) not in before and m.dataset in RECORD_TABLES:
            frame = pd.read_parquet(batch_dir(settings.home / "staging", m.dataset, m.batch_id) / "data.parquet")
            staged |= {(m.dataset, rid) for rid in frame["record_id"]}
    return staged


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def published(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    dialect = request.param
    base = tmp_path_factory.mktemp(f"publish-{dialect}")
    sim, home = base / "sim", base / "hub"
    generate(sim, residents=RESIDENTS, seed=11)
    init_keyfile(home / "keys" / "demo-keyring.json")
    databases: Generator[str, None, None] | None = None
    if dialect == "postgresql":
        databases = _throwaway_database(request.getfixturevalue("pg_admin_url"))
    url = next(databases) if databases else None
    try:
        with pytest.MonkeyPatch.context() as mp:
            settings = _settings(home, sim, url, mp)
            _ingest_and_link(settings, sim)
            first, release = run_publish(settings)
            assert release is not None
            engine = settings.engine()
            with engine.connect() as conn:
                lineage = store.read_table(conn, store.link_record, ["dataset", "record_id", "person_key"])
                merged = store.read_table(conn, store.link_person, ["person_key", "merged_into"])
            before = table_checksums(engine)
            feed = _count(engine, "core.change_log")
            second, _ = run_publish(settings)
            after = table_checksums(engine)
            feed_after = _count(engine, "core.change_log")
            summary = advance(sim, changed=0.02, late=0.0, seed=3)
            staged_after = _ingest_and_link(settings, sim)
            third, _ = run_publish(settings)
            engine.dispose()
            assert feed_after == feed
            yield Published(
                dialect,
                str(engine.url.render_as_string(hide_password=False)),
                sim,
                settings,
                first,
                release[2],
                second,
                (before, after),
                feed_after,
                pd.read_parquet(summary.changes_path),
                third,
                staged_after,
                lineage,
                int(merged["merged_into"].isna().sum()),
                _frame(engine, sa.select(table("core.person").c.person_key))["person_key"],
            )
    finally:
        if databases:
            databases.close()


def _count(engine: sa.Engine, name: str) -> int:
    with engine.connect() as raw:
        conn = prepared(raw)
        return int(conn.execute(sa.select(sa.func.count()).select_from(table(name))).scalar_one())


def _frame(engine: sa.Engine, query: sa.Select[tuple[object, ...]] | str) -> pd.DataFrame:
    with engine.connect() as raw:
        conn = prepared(raw)
        result = conn.exec_driver_sql(query) if isinstance(query, str) else conn.execute(query)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def test_the_first_publish_holds_every_linked_record_and_person(published: Published) -> None:
    lineage = published.lineage_first
    rows = {t.table: t.rows for t in published.first.tables}
    assert rows["core.person"] == published.persons_first > RESIDENTS * 0.9
    for dataset, name in RECORD_TABLES.items():
        linked = int(lineage["dataset"].eq(dataset).sum())
        assert rows[name] == linked > 0, name
    # core's lineage leaves out the datasets whose records are sensitive (who has a disability or corrections
    # record is not for a community platform to read)
    sensitive = lineage["dataset"].isin(["canlian.disability", "sifa.corrections"])
    assert rows["core.record_lineage"] == int((~sensitive).sum()) and sensitive.sum() > 0
    # a load into empty tables logs one 'load' row per table, not one per row
    assert published.first.publish_id == 1 and published.first.changes == sum(1 for t in _unified() if rows[t.fullname])
    # the published persons are the linkage's keys (no token, no other identifier)
    assert set(published.published_persons) <= set(lineage["person_key"]) | set(published.lineage_first["person_key"])


def _unified() -> list[sa.Table]:
    return [
        t
        for t in published_tables()
        if t.schema != "release" and t.name not in ("change_log", "publish_batch", "consumer_scope")
    ]


def test_publishing_the_same_batches_again_changes_nothing(published: Published) -> None:
    before, after = published.checksums
    assert before == after
    assert published.second.publish_id is None and published.second.changes == 0
    assert {t.rows for t in published.second.tables} == {t.rows for t in published.first.tables}


def test_an_incremental_publish_logs_exactly_the_changed_records(published: Published) -> None:
    engine = published.settings.engine()
    third = published.third
    assert third.publish_id is not None
    log = _frame(
        engine, sa.select(table("core.change_log")).where(table("core.change_log").c.publish_id == third.publish_id)
    )
    changed = published.changes
    assert len(changed) > 50
    lineage = _frame(engine, "SELECT dataset, record_key, person_key FROM " + _name(published, "core.record_lineage"))
    touched = lineage.merge(changed.rename(columns={"record_id": "record_key"}), on=["dataset", "record_key"])
    touched_persons = set(touched["person_key"])
    for dataset, name in RECORD_TABLES.items():
        truth = set(changed.loc[changed["dataset"].eq(dataset), "record_id"])
        if name == "core.insurance_participation":  # its community is its person's: a move changes the row
            mine = lineage["dataset"].eq(dataset) & lineage["person_key"].isin(touched_persons)
            truth |= set(lineage.loc[mine, "record_key"])
        staged = {rid for d, rid in published.staged_after_advance if d == dataset}
        logged = set(log.loc[log["table_name"].eq(name), "row_key"])
        # every logged record was changed by the advance, and every changed record the ingest staged is logged
        assert logged <= truth, f"{name}: {len(logged - truth)} unchanged records in the change log"
        if dataset != "jisheng.births":  # a births drop restates rows unchanged as well as new ones
            assert truth & staged <= logged, f"{name}: {len((truth & staged) - logged)} changes not logged"
        assert logged or not truth & staged
    persons = set(log.loc[log["table_name"].eq("core.person"), "row_key"])
    assert persons <= touched_persons, "a person row changed though none of its records did"
    inserted_or_updated = log[log["operation"].isin(["insert", "update"])]
    assert len(inserted_or_updated) == sum(t.inserted + t.updated for t in third.tables if not t.loaded)
    assert sum(t.changes for t in third.tables) == len(log) > 0
    engine.dispose()


def _name(published: Published, qualified_name: str) -> str:
    return qualified_name.split(".", 1)[1] if published.dialect == "sqlite" else qualified_name


def test_every_release_table_meets_k_and_l(published: Published) -> None:
    policy = load_policy()
    assert {f.table for f in published.release} == {
        "release.resident",
        "release.disability",
        "release.social_assistance",
    }
    for figure in published.release:
        assert figure.k_min is not None and figure.k_min >= policy.threshold_k, figure
        if figure.sensitive:
            assert figure.l_min is not None and figure.l_min >= policy.threshold_l, figure
        assert figure.groups > 0 and figure.persons > figure.suppressed, figure
    resident = next(f for f in published.release if f.table == "release.resident")
    assert resident.suppressed < 0.05 * resident.persons  # few residents sit in groups under k
    engine = published.settings.engine()
    release = _frame(engine, "SELECT consumer, person_token, age_band FROM " + _name(published, "release.resident"))
    engine.dispose()
    consumers = set(release["consumer"])
    assert consumers == {"stats_bureau", "disabled_federation"}
    tokens = [set(release.loc[release["consumer"].eq(c), "person_token"]) for c in sorted(consumers)]
    assert not tokens[0] & tokens[1]  # a token domain per consumer: the two extracts share no token
    assert release["age_band"].str.fullmatch(r"[0-9]{2}-[0-9]{2}|85\+").all()


def test_the_cross_department_views_find_the_planted_conflicts(published: Published) -> None:
    engine = published.settings.engine()
    params, rules = load_rules()
    with engine.begin() as raw:  # the checks as of the simulator's date, as its truth was computed
        refresh_views(migrate.prepared(raw), {**params, "current_year": AS_OF.year}, rules)
    figures = compare_conflicts(engine, published.sim / "truth" / "conflicts.parquet")
    engine.dispose()
    assert {f.rule_id for f in figures} == {r.id for r in load_rules()[1]}
    for f in figures:
        # records quarantined for a bad ID number (about 1 %) cannot be published, so a case can be missed
        assert f.planted > 0 and f.recall >= 0.85 and f.precision >= 0.85, f


@sqlite_only
def test_publishing_logs_and_prints_no_personal_value(
    published: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every_log: pytest.LogCaptureFixture
) -> None:
    from click.testing import CliRunner

    from hub.cli import cli

    home = tmp_path / "hub"
    shutil.copytree(published.settings.home, home)
    settings = _settings(home, published.sim, None, monkeypatch)
    engine = settings.engine()
    migrate.downgrade(engine, "0001")  # an empty published model over the same identity index
    engine.dispose()
    result = CliRunner().invoke(cli, ["publish"])
    assert result.exit_code == 0, result.output
    assert "publish 1" in result.output and "release.disability" in result.output
    assert "scoped publish" not in result.output  # the tables were empty: a whole build
    again = CliRunner().invoke(cli, ["publish"])
    assert again.exit_code == 0, again.output
    assert "records read 0 (of the persons changed since the last publish: a scoped publish)" in again.output
    assert sum(1 for r in every_log.records if r.levelno <= 20) > 0, "INFO/DEBUG records were captured"
    values = personal_values(published.sim / "truth")
    assert leaks(home, values, [every_log.text, result.output]) == {}


@sqlite_only
def test_after_a_key_rotation_numbers_are_published_under_the_new_key(
    published: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches staged under v1 and v2 publish one household number per household: the active version's."""
    home, sim = tmp_path / "hub", tmp_path / "sim"
    shutil.copytree(published.settings.home, home)
    shutil.copytree(published.sim, sim)
    settings = _settings(home, sim, None, monkeypatch)
    rotate_keyfile(settings.keyring)
    advance(sim, changed=0.01, late=0.0, seed=9)
    _ingest_and_link(settings, sim)
    result, _ = run_publish(settings)
    assert result.rekeyed.get("gongan.hukou.household_no", 0) > 1000  # the v1 batch's numbers moved to v2
    keyring = settings.load_keyring()
    assert keyring.active_version == 2
    source = pd.read_parquet(sim / "http" / "gongan.hukou.parquet", columns=["rkid", "hh"])
    source = source[source["hh"].astype(str).str.fullmatch(r"[0-9]{9}")].drop_duplicates("rkid")
    engine = settings.engine()
    published_rows = _frame(engine, "SELECT record_key, household_key FROM hukou_registration")
    engine.dispose()
    both = published_rows.merge(source, left_on="record_key", right_on="rkid")
    expected = fpe_series(both["hh"].astype("string"), keyring, "household", version=2)
    assert len(both) > RESIDENTS * 0.5
    assert (both["household_key"].to_numpy() == expected.to_numpy()).mean() > 0.99


# -- PostgreSQL: the roles, with real connections ----------------------------------------------------------


def _as(published: Published, role: str) -> sa.Engine:
    """An engine that logs in as ``role`` (the test server trusts local connections)."""
    return sa.create_engine(make_url(published.url).set(username=role, password=None))


def _rows(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(sql).scalar_one())


def _refused(engine: sa.Engine, sql: str) -> bool:
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(sql).fetchall()
    except sa.exc.ProgrammingError as exc:
        return "permission denied" in str(exc.orig)
    return False


@pytest.fixture
def pg(published: Published) -> Published:
    """The PostgreSQL hub (the tests using it are parametrised to it alone: SQLite has no roles)."""
    assert published.dialect == "postgresql"
    return published


postgresql_only = pytest.mark.parametrize("published", ["postgresql"], indirect=True)


@postgresql_only
def test_a_community_platform_reads_only_its_communities(pg: Published) -> None:
    owner = sa.create_engine(pg.url)
    total = _rows(owner, "SELECT count(*) FROM core.person")
    inside = _rows(owner, "SELECT count(*) FROM core.person WHERE left(community_code, 6) = '150702'")
    community = _busiest(pg)
    one = _rows(owner, f"SELECT count(*) FROM core.hukou_registration WHERE community_code = '{community}'")
    owner.dispose()
    assert total > inside > 0 and one > 0
    hailar, single = _as(pg, "hub_platform_hailar"), _as(pg, "hub_platform_one_community")
    try:
        assert _rows(hailar, "SELECT count(*) FROM core.person") == inside
        assert _rows(hailar, "SELECT count(*) FROM core.person WHERE left(community_code, 6) <> '150702'") == 0
        assert _rows(single, "SELECT count(*) FROM core.hukou_registration") == one
        assert _rows(single, f"SELECT count(*) FROM core.change_log WHERE community_code <> '{community}'") == 0
        assert _rows(single, "SELECT count(*) FROM core.change_log") > 0
        assert _refused(hailar, "SELECT count(*) FROM sensitive.disability_certificate")
        assert _refused(hailar, "SELECT count(*) FROM release.resident")
        assert _refused(hailar, "SELECT count(*) FROM core.cross_check")
        # nor does the feed or the lineage say who has a sensitive record
        assert _rows(hailar, "SELECT count(*) FROM core.change_log WHERE left(table_name, 10) = 'sensitive.'") == 0
        assert _rows(hailar, "SELECT count(*) FROM core.change_log WHERE table_name = 'core.person'") > 0
        for dataset in ("canlian.disability", "sifa.corrections"):
            assert _rows(hailar, f"SELECT count(*) FROM core.record_lineage WHERE dataset = '{dataset}'") == 0
    finally:
        hailar.dispose()
        single.dispose()


@postgresql_only
def test_each_role_reads_only_its_tiers(pg: Published) -> None:
    front, back, officer, justice, stats = (
        _as(pg, r)
        for r in ("hub_front_desk", "hub_back_office", "hub_privacy_officer", "hub_justice", "hub_statistics")
    )
    try:
        assert _rows(front, "SELECT count(*) FROM core.person") > RESIDENTS * 0.9
        for table_name in ("sensitive.disability_certificate", "sensitive.family_planning", "sensitive.person_contact"):
            assert _refused(front, f"SELECT count(*) FROM {table_name}")
            assert _rows(back, f"SELECT count(*) FROM {table_name}") > 0
        corrections = "SELECT count(*) FROM sensitive.community_correction"
        assert _rows(justice, corrections) > 0
        assert _refused(back, corrections) and _refused(front, corrections) and _refused(officer, corrections)
        assert _rows(back, "SELECT count(*) FROM core.cross_check") > 0
        assert _rows(stats, "SELECT count(*) FROM release.resident") > 0
        for table_name in ("core.person", "sensitive.disability_certificate", "core.change_log"):
            assert _refused(stats, f"SELECT count(*) FROM {table_name}")
        assert _rows(officer, "SELECT count(*) FROM release.disability") > 0
    finally:
        for engine in (front, back, officer, justice, stats):
            engine.dispose()


@postgresql_only
def test_an_authorised_back_office_operator_reads_corrections(pg: Published) -> None:
    owner = sa.create_engine(pg.url, isolation_level="AUTOCOMMIT")
    login = f"bo_{uuid.uuid4().hex[:10]}"
    with owner.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {login} LOGIN IN ROLE hub_back_office")
    operator = _as(pg, login)
    try:
        # the operator acts as the back office (SET ROLE, as the service does): no corrections yet
        assert _refused(operator, "SELECT count(*) FROM sensitive.community_correction")
        with owner.connect() as conn:
            conn.exec_driver_sql(f"GRANT hub_corrections_reader TO {login}")
        assert _rows(operator, "SELECT count(*) FROM sensitive.community_correction") > 0
    finally:
        operator.dispose()
        with owner.connect() as conn:
            conn.exec_driver_sql(f"DROP ROLE {login}")
        owner.dispose()


@postgresql_only
def test_no_plaintext_personal_value_anywhere_in_the_published_database(pg: Published) -> None:
    names = load_truth_names(pg.sim / "truth")
    assert len(names) > RESIDENTS / 2
    scan = scan_database(pg.url, load_policy(), names)
    scanned = scan.tables
    assert scanned >= len(published_tables()) and scan.columns > 50
    assert scan.clean, [f"{f.table}.{f.column}: {f.kind} x{f.values}" for f in scan.findings]
    # the privacy officer's report measures the release tier per consumer's extract, as the gate did
    release = {r["table"]: r for r in scan.reidentification if r["tier"] == "release"}
    assert set(release) == {"release.resident", "release.disability", "release.social_assistance"}
    assert all(r["passes"] and r["k_min"] >= 5 for r in release.values())
    assert release["release.disability"]["l_min"] >= 2 and release["release.resident"]["l_min"] is None


def test_a_publish_reading_everything_back_finds_nothing_the_kept_state_missed(published: Published) -> None:
    """`hub publish` diffs against copies of what it left in the database, and after the first builds only the
    persons changed since; a full build reading the database finds the same: neither hid a change."""
    from hub.publish_cli import migrated_engine, staged_for_publish
    from privacy.policy import load_policy
    from publish.publisher import publish
    from schemas.contract import packaged_contracts

    settings = published.settings
    # the publishes after the first were scoped: built for the persons changed since the last one only
    assert published.second.scoped and published.third.scoped and not published.first.scoped
    assert published.second.records_read == 0 < published.third.records_read < published.first.records_read / 5
    kept = sorted(p.name for p in (settings.home / "runs" / "publish" / "state").glob("*.parquet"))
    assert "link_record.parquet" in kept and "core.person.parquet" in kept
    engine = migrated_engine(settings)
    try:
        again = publish(
            engine, staged_for_publish(settings), settings.load_keyring(), load_policy(), packaged_contracts()
        )
    finally:
        engine.dispose()
    assert again.publish_id is None and again.changes == 0


@postgresql_only
def test_a_publish_leaves_planner_statistics_on_the_tables_it_loaded(pg: Published) -> None:
    # without them the worklist's conflict views and row-level security plan nested loops over every row
    loaded = {t.table for t in pg.first.tables if t.loaded} | {f"release.{n}" for n in ("resident", "disability")}
    analysed = {
        f"{schema}.{name}"
        for schema, name in _frame(
            sa.create_engine(pg.url),
            "SELECT schemaname, relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL",
        ).itertuples(index=False)
    }
    assert "core.person" in loaded and "core.record_lineage" in loaded
    assert loaded - analysed == set()


def test_a_changed_build_fingerprint_makes_the_next_publish_full(published: Published, tmp_path: Path) -> None:
    """Rules changed since the last publish (code, contracts, policy) must reach every row, not only the persons
    changed since: under another fingerprint the publish builds everything, and finds nothing to change."""
    import json

    from hub.publish_cli import migrated_engine, staged_for_publish
    from privacy.policy import load_policy
    from publish.publisher import publish
    from schemas.contract import packaged_contracts

    settings = published.settings
    state = tmp_path / "state"
    shutil.copytree(settings.home / "runs" / "publish" / "state", state)
    scope = json.loads((state / "scope.json").read_text())
    (state / "scope.json").write_text(json.dumps(scope | {"fingerprint": "0" * 64}))
    engine = migrated_engine(settings)
    try:
        batches, keyring, policy = staged_for_publish(settings), settings.load_keyring(), load_policy()
        full = publish(engine, batches, keyring, policy, packaged_contracts(), state=state)
        again = publish(engine, batches, keyring, policy, packaged_contracts(), state=state)
    finally:
        engine.dispose()
    assert not full.scoped and full.records_read > published.third.records_read
    assert full.publish_id is None and full.changes == 0
    assert again.scoped and again.records_read == 0 and again.changes == 0


def test_a_scoped_release_rebuilds_only_the_persons_whose_released_rows_changed(
    published: Published, tmp_path: Path
) -> None:
    """The release tier computes each consumer's tokens only for the persons whose released rows differ from its
    kept copy; what it leaves in the database is what a release building every person's tokens finds."""
    from datetime import UTC, datetime

    from publish.release import build_release, publish_release
    from publish.state_cache import TableStates

    settings = published.settings
    state = tmp_path / "state"
    shutil.copytree(settings.home / "runs" / "publish" / "state", state)
    keyring, policy, consumers = settings.load_keyring(), load_policy(), load_consumers(settings.consumers)
    now = datetime.now(UTC).year
    names = ("release.resident", "release.disability", "release.social_assistance")
    engine = settings.engine()
    try:
        with engine.connect() as raw:
            conn = prepared(raw)
            kept = {n: TableStates(state).old(conn, table(n)) for n in names}
        # a new year moves every fifth birth year into the next age band (and some groups across k)
        con, part, _, scoped = build_release(engine, consumers, keyring, policy, now + 1, kept)
        scope = set(con.sql("SELECT person_key FROM scope_persons").to_arrow_table().column(0).to_pylist())
        con.close()
        con, full, _, whole = build_release(engine, consumers, keyring, policy, now + 1)
        con.close()
        assert scoped and not whole
        released = set(full["release.resident"].column("person_key").to_pylist())
        assert 0 < len(scope & released) < len(released) / 2
        for name in names:
            new, old = full[name].to_pandas(), kept[name].to_pandas()  # type: ignore[union-attr]
            ordered = ["consumer", "person_token", "row_hash"]
            inside = new[new["person_key"].isin(scope)].sort_values(ordered, ignore_index=True)
            # the scoped state is exactly the full state's rows of the persons in scope ...
            assert_frame_equal(part[name].to_pandas().sort_values(ordered, ignore_index=True), inside)
            # ... and the kept rows of everyone else are the full state's rows of them
            columns = kept[name].column_names  # type: ignore[union-attr]
            outside = new.loc[~new["person_key"].isin(scope), columns].astype(str)
            rest = old.loc[~old["person_key"].isin(scope), columns].astype(str)
            assert len(rest) > 0
            assert_frame_equal(
                rest.sort_values(ordered, ignore_index=True), outside.sort_values(ordered, ignore_index=True)
            )
        merged, changes, _ = publish_release(engine, consumers, keyring, policy, now + 1, state=state)
        assert merged is not None and sum(c.changes for c in changes) > 0
        again, unchanged, _ = publish_release(engine, consumers, keyring, policy, now + 1)  # reads the database back
        assert again is None and sum(c.changes for c in unchanged) == 0
    finally:  # the module's hub gets this year's release back (its kept copies no longer match: a full one)
        publish_release(engine, consumers, keyring, policy, now, state=settings.home / "runs" / "publish" / "state")
        engine.dispose()


def test_a_publish_by_another_hub_makes_the_kept_copies_of_the_tables_it_changed_stale(
    published: Published, tmp_path: Path
) -> None:
    """The kept copies are used while no publish since changed their tables: another hub (no kept state) that
    publishes without the 司法 batches deletes their rows; this hub's next publish must not trust its copy of
    those tables (it would find nothing to restore), builds whole, and puts every row back."""
    from hub.publish_cli import migrated_engine, staged_for_publish
    from publish.publisher import publish
    from publish.state_cache import TableStates
    from schemas.contract import packaged_contracts

    settings = published.settings
    state = tmp_path / "state"
    shutil.copytree(settings.home / "runs" / "publish" / "state", state)
    corrections = table("sensitive.community_correction")
    query = sa.select(corrections.c.record_key, corrections.c.row_hash).order_by(corrections.c.record_key)
    engine = migrated_engine(settings)
    try:
        batches, keyring, policy, contracts = (
            staged_for_publish(settings),
            settings.load_keyring(),
            load_policy(),
            (packaged_contracts()),
        )
        before = _frame(engine, query)
        others = [b for b in batches if b.dataset != "sifa.corrections"]
        other = publish(engine, others, keyring, policy, contracts)  # another hub: reads the database back
        deleted = {t.table: t.deleted for t in other.tables}
        assert deleted["sensitive.community_correction"] == len(before) > 0
        with engine.connect() as raw:
            conn = prepared(raw)
            stale = TableStates(state)
            assert stale.old(conn, corrections) is None and not stale.usable(conn, corrections, ["row_hash"])
            # a table that publish did not change keeps its copy
            assert stale.old(conn, table("core.hukou_registration")) is not None
        ours = publish(engine, batches, keyring, policy, contracts, state=state)
        restored = {t.table: t.inserted for t in ours.tables}
        assert not ours.scoped and restored["sensitive.community_correction"] == len(before)
        assert_frame_equal(_frame(engine, query), before)
        again = publish(engine, batches, keyring, policy, contracts, state=state)
        assert again.scoped and again.publish_id is None and again.changes == 0
    finally:
        engine.dispose()
