"""The release tier: generalised microdata for statistics and sharing outside the platform.

Built from the published core and sensitive tables: ages in 5-year bands, the county instead of the
community (the whole city where a county's group would be too small), no masked or sealed values, and a
person token per consumer (its own key domain, so two consumers' extracts cannot be joined). Groups of the
quasi-identifiers smaller than k, or with fewer than l distinct values of a sensitive column, are suppressed;
then the gate checks k and l on what is left and refuses the release if either fails. The quasi-identifiers,
sensitive columns, k and l come from the privacy policy (``reidentification``), the consumers from the
consumers file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from privacy.keyring import Keyring
from privacy.operators import token_series
from privacy.policy import Policy
from publish.build import row_hash_sql
from publish.consumers import Consumer
from publish.publisher import RELEASE_KEPT, TableChange, apply
from publish.state_cache import TableStates
from schemas.base import HubError
from schemas.bulk import qualified, read_arrow
from schemas.migrate import prepared
from schemas.unified import table

TOP_BAND = 85  # everyone 85 or older shares one band: the oldest are few and easy to single out
CITY = "150700"  # 呼伦贝尔市: where a county-level group is too small, the row is released at city level


class ReleaseRefused(HubError):
    """A release table would not meet k-anonymity or l-diversity; nothing of the release was written."""


@dataclass(frozen=True)
class ReleaseFigure:
    """What the gate measured on one release table (the privacy report shows these)."""

    table: str
    quasi_identifiers: tuple[str, ...]
    sensitive: tuple[str, ...]
    persons: int
    suppressed: int
    groups: int
    k_min: int | None
    l_min: int | None
    threshold_k: int
    threshold_l: int

    @property
    def passes(self) -> bool:
        """k and (where the table has sensitive columns) distinct l hold."""
        k_ok = self.k_min is None or self.k_min >= self.threshold_k
        l_ok = not self.sensitive or self.l_min is None or self.l_min >= self.threshold_l
        return k_ok and l_ok

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the verdict."""
        return asdict(self) | {"passes": self.passes}


#: release table -> the SQL (over the published tables) of its un-generalised rows, one per person and value
_SOURCES = {
    "resident": "SELECT p.person_key, p.birth_year, p.sex, p.county_code, p.residence_type FROM person p",
    "disability": (
        "SELECT DISTINCT p.person_key, p.birth_year, p.sex, p.county_code, d.category "
        "FROM disability_certificate d JOIN person p USING (person_key)"
    ),
    "social_assistance": (
        "SELECT DISTINCT p.person_key, p.birth_year, p.sex, p.county_code, '低保' AS programme "
        "FROM dibao_membership m JOIN person p USING (person_key) WHERE m.status = '在保' "
        "UNION SELECT DISTINCT p.person_key, p.birth_year, p.sex, p.county_code, r.category AS programme "
        "FROM social_relief r JOIN person p USING (person_key)"
    ),
}
_READ = {
    "person": ("core.person", ("person_key", "birth_year", "sex", "county_code", "residence_type")),
    "disability_certificate": ("sensitive.disability_certificate", ("person_key", "category")),
    "dibao_membership": ("core.dibao_membership", ("person_key", "status")),
    "social_relief": ("core.social_relief", ("person_key", "category")),
}


def age_band_sql(year: int) -> str:
    """DuckDB expression: the 5-year age band of ``birth_year`` in ``year`` ('00-04' … '80-84', '85+')."""
    lo = f"least(CAST(floor(({year} - birth_year) / 5) AS INTEGER) * 5, {TOP_BAND})"
    return (
        f"CASE WHEN {year} - birth_year >= {TOP_BAND} THEN '{TOP_BAND}+' "
        f"ELSE lpad(CAST({lo} AS VARCHAR), 2, '0') || '-' || lpad(CAST({lo} + 4 AS VARCHAR), 2, '0') END"
    )


def suppress(
    source: str, qi: Sequence[str], sensitive: Sequence[str], k: int, l_div: int, failing: bool = False
) -> str:
    """SQL of ``source``'s rows whose QI group has at least k persons and l distinct values of each sensitive column
    (``failing``: every other row, those with a missing quasi-identifier too)."""
    group = ", ".join(qi)
    l_cols = "".join(f", count(DISTINCT {c}) AS l_{c}" for c in sensitive)
    l_cond = "".join(f" AND g.l_{c} >= {l_div}" for c in sensitive)
    passing = (
        f"SELECT {group} FROM (SELECT {group}, count(DISTINCT person_key) AS n{l_cols} FROM {source} "
        f"GROUP BY {group}) g WHERE g.n >= {k}{l_cond}"
    )
    return f"SELECT s.* FROM {source} s {'ANTI' if failing else 'SEMI'} JOIN ({passing}) p USING ({group})"


def measure(
    con: duckdb.DuckDBPyConnection, rel: str, qi: Sequence[str], sensitive: Sequence[str]
) -> tuple[int | None, int | None, int]:
    """(k_min, l_min, groups) of a relation over its quasi-identifiers."""
    group = ", ".join(qi)
    l_expr = ", ".join(f"count(DISTINCT {c})" for c in sensitive)
    l_part = f", least({l_expr})" if sensitive else ", NULL"
    row = con.execute(
        f"SELECT min(n), min(l), count(*) FROM (SELECT count(DISTINCT person_key) AS n{l_part} AS l "
        f"FROM {rel} GROUP BY {group})"
    ).fetchall()[0]
    return (None if row[0] is None else int(row[0])), (None if row[1] is None else int(row[1])), int(row[2])


def build_release(
    engine: sa.Engine,
    consumers: Sequence[Consumer],
    keyring: Keyring,
    policy: Policy,
    year: int,
    kept: Mapping[str, pa.Table | None] | None = None,
) -> tuple[duckdb.DuckDBPyConnection, dict[str, pa.Table], list[ReleaseFigure], bool]:
    """The release tables' new state (one row set per release consumer), the gate's figures, and whether the
    state is scoped.

    Suppression is a property of a whole group, so it is computed over everyone every time. Each consumer's
    token is not: with ``kept`` (each release table's kept copy, ``publish.state_cache``) under the same key
    version and consumers, the new state holds only the rows of the persons whose released rows differ from the
    kept ones (a content hash without the token), and table ``scope_persons`` names them (``apply``'s scoped
    merge). The new state carries ``publisher.RELEASE_KEPT`` besides the table's columns, for the next copy.
    """
    con = duckdb.connect()
    con.execute("SET temp_directory = ''")
    with engine.connect() as raw:
        conn = prepared(raw)
        for name, (published, columns) in _READ.items():
            data = read_arrow(conn, f"SELECT {', '.join(columns)} FROM {qualified(conn, table(published))}", columns)
            con.register(f"_{name}", data)
            casts = ", ".join(f"CAST({c} AS INTEGER) AS {c}" if c == "birth_year" else c for c in columns)
            con.execute(f"CREATE TABLE {name} AS SELECT {casts} FROM _{name}")
            con.unregister(f"_{name}")
    readers = [c for c in consumers if c.kind == "release"]
    figures: list[ReleaseFigure] = []
    for name, source in _SOURCES.items():
        qi = [c for c in policy.sets_for(name)[0] if c != "consumer"]  # each consumer's extract holds every row
        sensitive = policy.sensitive_columns.get(name, ())
        extra = [c for c in qi if c not in ("age_band", "sex", "county_code")]
        con.execute(
            f"CREATE TABLE g_{name} AS SELECT person_key, {age_band_sql(year)} AS age_band, sex, county_code"
            f"{''.join(', ' + c for c in extra)}{''.join(', ' + c for c in sensitive)} "
            f"FROM ({source}) WHERE birth_year IS NOT NULL AND sex IS NOT NULL"
        )
        k, l_div = policy.threshold_k, policy.threshold_l
        # local recoding: rows of groups too small at county level try again at city level, then are suppressed
        con.execute(f"CREATE TABLE r_{name} AS {suppress(f'g_{name}', qi, sensitive, k, l_div)}")
        con.execute(
            f"CREATE TABLE c_{name} AS SELECT * REPLACE ('{CITY}' AS county_code) "
            f"FROM ({suppress(f'g_{name}', qi, sensitive, k, l_div, failing=True)})"
        )
        con.execute(f"INSERT INTO r_{name} {suppress(f'c_{name}', qi, sensitive, k, l_div)}")
        persons = _scalar(con, f"SELECT count(DISTINCT person_key) FROM g_{name}")
        released = _scalar(con, f"SELECT count(DISTINCT person_key) FROM r_{name}")
        k_min, l_min, groups = measure(con, f"r_{name}", qi, sensitive)
        figures.append(
            ReleaseFigure(
                f"release.{name}",
                tuple(qi),
                tuple(sensitive),
                persons,
                persons - released,
                groups,
                k_min,
                l_min,
                policy.threshold_k,
                policy.threshold_l,
            )
        )
        # the released rows without the consumer's token, each with the hash the kept copy compares
        content = _content_columns(name)
        con.execute(
            f"CREATE TABLE n_{name} AS SELECT DISTINCT person_key, {', '.join(content)}, "
            f"{row_hash_sql(content)} AS content_hash FROM r_{name}"
        )
    scoped = kept is not None and all(_comparable(kept.get(f"release.{n}"), readers, keyring) for n in _SOURCES)
    if scoped:
        assert kept is not None
        differ = []
        for name in _SOURCES:
            con.register(f"_kept_{name}", kept[f"release.{name}"])
            pairs = f"SELECT DISTINCT person_key, content_hash FROM _kept_{name}"
            differ.append(
                f"(SELECT person_key, content_hash FROM n_{name} EXCEPT {pairs}) "
                f"UNION ALL ({pairs} EXCEPT SELECT person_key, content_hash FROM n_{name})"
            )
        con.execute(
            "CREATE TABLE scope_persons AS SELECT DISTINCT person_key FROM ("
            + " UNION ALL ".join(f"SELECT person_key FROM ({d})" for d in differ)
            + ")"
        )
        for name in _SOURCES:
            con.unregister(f"_kept_{name}")
    # each release consumer's token of every released person in scope (its own key domain), once per person
    within = " WHERE person_key IN (SELECT person_key FROM scope_persons)" if scoped else ""
    released_keys = con.sql(
        "SELECT DISTINCT person_key FROM ("
        + " UNION ALL ".join(f"SELECT person_key FROM n_{n}" for n in _SOURCES)
        + f"){within}"
    ).to_arrow_table()
    keys = released_keys.column("person_key").to_pandas().astype("string")
    tokens = [
        pa.table(
            {
                "person_key": released_keys.column("person_key"),
                "consumer": pa.array([c.name] * released_keys.num_rows, pa.string()),
                "person_token": pa.array(token_series(keys, keyring, c.token_domain).to_numpy(), pa.string()),
            }
        )
        for c in readers
    ]
    empty = pa.schema([("person_key", pa.string()), ("consumer", pa.string()), ("person_token", pa.string())])
    con.register("_tokens", pa.concat_tables(tokens) if tokens else empty.empty_table())
    tables: dict[str, pa.Table] = {}
    for name in _SOURCES:
        wanted = _wanted(name)
        tables[f"release.{name}"] = con.sql(
            f"SELECT {', '.join(wanted)}, {row_hash_sql(wanted)} AS row_hash, {', '.join(RELEASE_KEPT)} "
            f"FROM (SELECT n.*, t.consumer, t.person_token FROM n_{name} n JOIN _tokens t USING (person_key))"
        ).to_arrow_table()
    con.unregister("_tokens")
    return con, tables, figures, scoped


def _wanted(name: str) -> list[str]:
    """A release table's columns as published, without its bookkeeping (row hash, publish id)."""
    return [c.name for c in table(f"release.{name}").c if c.name not in ("row_hash", "publish_id")]


def _content_columns(name: str) -> list[str]:
    """A release row's columns that are the same for every consumer (all but the consumer and its token)."""
    return [c for c in _wanted(name) if c not in ("consumer", "person_token")]


def _comparable(kept: pa.Table | None, readers: Sequence[Consumer], keyring: Keyring) -> bool:
    """Whether a kept release copy can stand for the rows it does not rebuild: it carries persons and content
    hashes, and holds tokens of exactly these consumers under the active key version (a rotation or a new
    consumer changes every row)."""
    if kept is None or not set(RELEASE_KEPT) <= set(kept.column_names):
        return False
    consumers = set(pc.unique(kept.column("consumer")).to_pylist())
    if consumers != {c.name for c in readers}:
        return False
    prefix = f"t{keyring.active_version}."
    return bool(pc.all(pc.starts_with(kept.column("person_token"), prefix)).as_py())


def _scalar(con: duckdb.DuckDBPyConnection, query: str) -> int:
    rows = con.execute(query).fetchall()  # fetched to the end: the connection runs the next query at once
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def gate(figures: Sequence[ReleaseFigure]) -> None:
    """Refuse the release when any table fails k-anonymity or distinct l-diversity."""
    failing = [f for f in figures if not f.passes]
    if failing:
        detail = "; ".join(
            f"{f.table}: k={f.k_min} (needs {f.threshold_k})"
            + (f", l={f.l_min} (needs {f.threshold_l})" if f.sensitive else "")
            for f in failing
        )
        raise ReleaseRefused(f"release refused: {detail}")


def publish_release(
    engine: sa.Engine,
    consumers: Sequence[Consumer],
    keyring: Keyring,
    policy: Policy,
    year: int,
    progress: Callable[[str], None] | None = None,
    state: Path | None = None,
) -> tuple[int | None, list[TableChange], list[ReleaseFigure]]:
    """Build, gate and publish the release tier (its own transaction and publish batch). ``state``: the
    publish's private folder of kept table states (``publish.state_cache``), so the old release rows are not
    read back from the database."""
    say = progress or (lambda _stage: None)
    states = TableStates(state) if state is not None else None
    kept: dict[str, pa.Table | None] | None = None
    if states is not None:
        say("reading the release tier's kept state")
        with engine.connect() as raw:
            conn = prepared(raw)
            kept = {f"release.{n}": states.old(conn, table(f"release.{n}"), keep=True) for n in _SOURCES}
    say("building the release tier")
    con, tables, figures, scoped = build_release(engine, consumers, keyring, policy, year, kept)
    del kept
    try:
        gate(figures)
        publish_id, changes = apply(
            engine, con, tables, keyring, policy, None, 0, say, states, scoped=tables if scoped else ()
        )
    finally:
        con.close()
    return publish_id, changes, figures
