"""Build the published tables' new state from the staged batches and the linkage lineage, in DuckDB.

Every staged record is read once (its newest version), joined to the person linkage gave it, and shaped
into the unified model. Pseudonymised values stay as staged: nothing here decrypts. Two exceptions are
re-keyed, never revealed: format-preserving record and household numbers staged under an older key version
are moved to the active version (so one certificate keeps one published key across batches), and the
values the sensitive tier seals are sealed only after the diff (``publish.merge``), as they are randomised.

Each built table has a ``row_hash`` over its published columns (for sealed columns, over the staged
deterministic ciphertexts), so a publish can tell what changed without comparing randomised values.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from privacy.keyring import Keyring
from privacy.operators import fpe_decrypt_series, fpe_series
from privacy.policy import Policy
from schemas.contract import Contract
from schemas.duck import mode_sql

log = logging.getLogger(__name__)

# When a person's records disagree, which department's record describes them (hukou first).
DATASET_RANK = (
    "gongan.hukou",
    "gongan.migrant",
    "minzheng.relief",
    "minzheng.dibao",
    "canlian.disability",
    "renshe.employment",
    "sifa.corrections",
    "jisheng.births",
    "renshe.insurance",
)
_DUCK_TYPES = {"date": "TIMESTAMP", "datetime": "TIMESTAMP", "integer": "BIGINT", "decimal": "DOUBLE"}
#: datasets whose records live only in the sensitive tier: core's lineage must not say who has one (a community
#: platform reads core.record_lineage); the sensitive tables name the person themselves
SENSITIVE_DATASETS = ("canlian.disability", "sifa.corrections")
#: the community of a person no record places (only 人社 insurance, which carries none)
UNKNOWN_COMMUNITY = "000000000000"


@dataclass(frozen=True)
class Batch:
    """A staged batch as publish reads it: its data file and the key versions it was protected under."""

    dataset: str
    batch_id: str
    data: Path
    key_versions: Mapping[str, int] = field(default_factory=dict)


@dataclass
class Built:
    """The new state of every published table (a DuckDB query each, run when merged), plus counts."""

    tables: dict[str, str]
    records_read: int
    unlinked: dict[str, int]
    rekeyed: dict[str, int]


@dataclass
class Changes:
    """What changed since the last publish, for a scoped build (only the persons and households it touches).

    ``new_batches``: staged batches no publish has read; ``relinked``: (dataset, record_id) of lineage rows
    written by link runs since; ``event_keys``: both keys of every identity event since (a record that moved
    from one person to another names the person it left here, merged or split).
    """

    new_batches: Sequence[Batch]
    relinked: pa.Table
    event_keys: Sequence[str]


#: published tables whose rows a scoped build recomputes by household, not by person: table -> (staged dataset,
#: staged household column); their rows are built for the households in scope only
HOUSEHOLD_TABLES = {
    "core.household": ("gongan.hukou", "household_no"),
    "core.dibao_household": ("minzheng.dibao", "household_id"),
}


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _rel(dataset: str) -> str:
    return "s_" + dataset.replace(".", "_")


def row_hash_sql(columns: Sequence[str]) -> str:
    """DuckDB expression: a 64-bit hash of the row's values as 16 hex digits (NULL hashes apart from every value).

    Only compared with the same row's previous hash, so 64 bits leave a missed change at 2^-64. DuckDB's hash
    may change between its versions (pinned in pyproject): then one publish rewrites every row, once.
    """
    return f"printf('%016x', hash({', '.join(columns)}))"


def fpe_columns(contract: Contract, policy: Policy) -> dict[str, str]:
    """Staged column -> FPE key domain, for the fields the policy format-preserving encrypts."""
    out = {}
    for f in contract.fields:
        rule = policy.rule_for(contract, f)
        if rule is not None and rule.treatment.kind == "fpe" and rule.treatment.arg:
            out[rule.column or f.name] = rule.treatment.arg
    return out


class Builder:
    """One publish's DuckDB working set; ``build()`` returns every table's new state."""

    def __init__(
        self,
        contracts: Mapping[str, Contract],
        policy: Policy,
        keyring: Keyring,
        threads: int = 2,
        spill: Path | None = None,
        memory_limit: str = "1536MB",
    ) -> None:
        """``spill``: a private folder where DuckDB may spill past ``memory_limit`` (it only ever holds
        pseudonymised values, as staged); without one, nothing spills and the limit is not set."""
        self.contracts, self.policy, self.keyring = contracts, policy, keyring
        self.con = duckdb.connect()
        self.con.execute(f"SET threads TO {threads}")
        self.con.execute("SET enable_progress_bar = false")
        if spill is None:
            self.con.execute("SET temp_directory = ''")
        else:
            self.con.execute(f"SET temp_directory = {_q(str(spill))}")
            self.con.execute(f"SET memory_limit = {_q(memory_limit)}")
            self.con.execute("SET preserve_insertion_order = false")
        self.present: set[str] = set()
        self.rekeyed: dict[str, int] = {}
        self.unlinked: dict[str, int] = {}
        self.records_read = 0
        self.scoped = False  # a scoped build (``load`` with changes): rows of the persons in scope only
        self._empty: set[str] = set()

    def close(self) -> None:
        """Free the working set."""
        self.con.close()

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """Run a query in the working set."""
        return self.con.sql(query)

    # -- inputs ------------------------------------------------------------------------------------------
    def load(
        self,
        batches: Sequence[Batch],
        lineage: pa.Table,
        events: pa.Table,
        merged: pa.Table,
        changes: Changes | None = None,
    ) -> int:
        """Stage tables ``s_<dataset>`` (newest version of each record, linked ones only) and ``lin``.

        With ``changes``, a scoped build: only the records of the persons in scope are staged (``_scope``), and
        tables ``scope_persons`` and ``scope_<household table>`` hold the persons and households rebuilt."""
        self.con.register("_lin", lineage)
        self.con.register("_merged", merged)
        # a key that merged away leads to its survivor (chains followed), whatever the lineage says
        self.con.execute(
            """
            CREATE TABLE survivor AS
            WITH RECURSIVE chain(person_key, survivor, depth) AS (
                SELECT person_key, merged_into, 1 FROM _merged
                UNION ALL
                SELECT c.person_key, m.merged_into, c.depth + 1 FROM chain c JOIN _merged m ON m.person_key = c.survivor
                WHERE c.depth < 64
            )
            SELECT person_key, arg_max(survivor, depth) AS survivor FROM chain GROUP BY person_key
            """
        )
        self.con.execute(
            """
            CREATE TABLE lin AS SELECT l.dataset, l.record_id, coalesce(s.survivor, l.person_key) AS person_key,
                   l.match_kind, CAST(l.match_probability AS DOUBLE) AS match_probability
            FROM _lin l LEFT JOIN survivor s USING (person_key)
            """
        )
        self.con.register("_events", events)
        self.con.execute("CREATE TABLE events AS SELECT * FROM _events")
        total = 0
        unlinked: dict[str, int] = {}
        by_dataset: dict[str, list[tuple[int, Batch]]] = {}
        for order, batch in enumerate(batches):
            by_dataset.setdefault(batch.dataset, []).append((order, batch))
        only = ""
        if changes is not None:
            unlinked = self._scope(by_dataset, changes)
            only = "WHERE record_id IN (SELECT record_id FROM lin WHERE dataset = {dataset}) "
        for dataset, items in by_dataset.items():
            rel = _rel(dataset)
            scans = " UNION ALL BY NAME ".join(
                f"SELECT *, {order} AS _ord, {_q(b.batch_id)} AS _batch FROM read_parquet({_q(str(b.data))})"
                for order, b in items
            )
            self.con.execute(
                f"CREATE TABLE raw_{rel} AS SELECT * FROM ({scans}) {only.format(dataset=_q(dataset))}"
                "QUALIFY row_number() OVER (PARTITION BY record_id ORDER BY _ord DESC) = 1"
            )
            self.con.execute(f"ALTER TABLE raw_{rel} ADD COLUMN record_key VARCHAR")
            self.con.execute(f"UPDATE raw_{rel} SET record_key = record_id")
            self._rekey(dataset, rel, items)
            self.con.execute(
                f"CREATE TABLE {rel} AS SELECT r.*, l.person_key, l.match_kind, l.match_probability "
                f"FROM raw_{rel} r JOIN lin l ON l.dataset = {_q(dataset)} AND l.record_id = r.record_id"
            )
            read = self._count(f"raw_{rel}")
            kept = self._count(rel)
            total += read
            if read != kept and changes is None:
                unlinked[dataset] = read - kept
            self.con.execute(f"DROP TABLE raw_{rel}")
            self.present.add(dataset)
        self.con.execute("DROP TABLE lin")  # every staged record now carries its person
        self.con.unregister("_lin")
        self.unlinked = unlinked
        self.records_read = total
        return total

    def _scope(self, by_dataset: Mapping[str, Sequence[tuple[int, Batch]]], changes: Changes) -> dict[str, int]:
        """Restrict ``lin`` to the persons in scope; tables ``scope_persons`` and ``scope_<household table>``.

        In scope: the persons of every record in a new batch or relinked since, both persons of every identity
        event since, then every member of a household any version of their records names (a household's row
        sums its members, so all of them are rebuilt). Returns the staged records not linked yet, per dataset.
        """
        con = self.con
        news = [
            f"SELECT {_q(b.dataset)} AS dataset, record_id FROM read_parquet({_q(str(b.data))})"
            for b in changes.new_batches
        ]
        con.register("_relinked", changes.relinked)
        con.register("_event_keys", pa.table({"k": pa.array(list(changes.event_keys), pa.string())}))
        con.execute(
            "CREATE TABLE touched AS SELECT DISTINCT dataset, record_id FROM ("
            + " UNION ALL ".join([*news, "SELECT dataset, record_id FROM _relinked"])
            + ")"
        )
        con.execute(
            "CREATE TABLE scope_persons AS SELECT DISTINCT person_key FROM ("
            "SELECT l.person_key FROM lin l JOIN touched USING (dataset, record_id) "
            "UNION ALL SELECT k FROM _event_keys "
            "UNION ALL SELECT coalesce(s.survivor, e.k) FROM _event_keys e LEFT JOIN survivor s ON s.person_key = e.k)"
        )
        for name, (dataset, column) in HOUSEHOLD_TABLES.items():
            scope = "scope_" + name.split(".")[1]
            items = by_dataset.get(dataset, ())
            if not items:
                con.execute(f"CREATE TABLE {scope} (k VARCHAR)")
                continue
            versions = " UNION ALL ".join(
                f"SELECT record_id, CAST({column} AS VARCHAR) AS k FROM read_parquet({_q(str(b.data))})"
                for _, b in items
            )  # every version: a record that moved names its old household too
            con.execute(
                f"CREATE TABLE _hh AS SELECT DISTINCT l.person_key, v.k FROM ({versions}) v JOIN lin l "
                f"ON l.dataset = {_q(dataset)} AND l.record_id = v.record_id WHERE v.k IS NOT NULL"
            )
            con.execute(
                f"CREATE TABLE {scope} AS SELECT DISTINCT k FROM _hh "
                "WHERE person_key IN (SELECT person_key FROM scope_persons)"
            )
            con.execute(
                f"INSERT INTO scope_persons SELECT DISTINCT person_key FROM _hh WHERE k IN (SELECT k FROM {scope}) "
                "EXCEPT SELECT person_key FROM scope_persons"
            )
            con.execute("DROP TABLE _hh")
        everything = " UNION ALL ".join(
            f"SELECT {_q(b.dataset)} AS dataset, record_id FROM read_parquet({_q(str(b.data))})"
            for items in by_dataset.values()
            for _, b in items
        )
        unlinked: dict[str, int] = {}
        if everything:
            rows = con.execute(
                f"SELECT dataset, count(*) FROM (SELECT DISTINCT dataset, record_id FROM ({everything})) "
                "ANTI JOIN lin USING (dataset, record_id) GROUP BY dataset"
            ).fetchall()
            unlinked = {str(d): int(n) for d, n in rows}
        con.execute("DELETE FROM lin WHERE person_key NOT IN (SELECT person_key FROM scope_persons)")
        con.unregister("_relinked")
        con.unregister("_event_keys")
        self.scoped = True
        return unlinked

    def _count(self, rel: str) -> int:
        row = self.con.execute(f"SELECT count(*) FROM {rel}").fetchone()
        return int(row[0]) if row else 0

    def _rekey(self, dataset: str, rel: str, items: Sequence[tuple[int, Batch]]) -> None:
        """Move format-preserving values staged under an older key version to the active version."""
        columns = fpe_columns(self.contracts[dataset], self.policy)
        active = self.keyring.active_version
        for column, domain in columns.items():
            target = "record_key" if column == "record_id" else column
            stale = {b.batch_id: b.key_versions.get(domain, active) for _, b in items}
            stale = {bid: v for bid, v in stale.items() if v != active}
            if not stale:
                continue
            ids = ", ".join(_q(b) for b in stale)
            frame = self.con.execute(
                f"SELECT DISTINCT _batch, {target} AS old FROM raw_{rel} "
                f"WHERE _batch IN ({ids}) AND {target} IS NOT NULL"
            ).df()
            parts = []
            for bid, group in frame.groupby("_batch"):
                plain = fpe_decrypt_series(group["old"].astype("string"), self.keyring, domain, stale[str(bid)])
                parts.append(group.assign(new=fpe_series(plain, self.keyring, domain).to_numpy()))
            mapping = pd.concat(parts, ignore_index=True)
            self.con.register("_rekey", mapping)
            self.con.execute(
                f"UPDATE raw_{rel} SET {target} = m.new FROM _rekey m "
                f"WHERE raw_{rel}._batch = m._batch AND raw_{rel}.{target} = m.old"
            )
            self.con.unregister("_rekey")
            self.rekeyed[f"{dataset}.{column}"] = len(mapping)

    # -- outputs -----------------------------------------------------------------------------------------
    def _relation(self, dataset: str) -> str:
        """The staged relation of a dataset; empty, with the columns protect() would stage, if none was staged."""
        rel = _rel(dataset)
        if dataset not in self.present and rel not in self._empty:
            contract = self.contracts[dataset]
            columns = {"record_key": "VARCHAR", "person_key": "VARCHAR", "match_kind": "VARCHAR"}
            columns |= {"match_probability": "DOUBLE", "_ord": "INTEGER", "_batch": "VARCHAR"}
            for f in contract.fields:
                rule = self.policy.rule_for(contract, f)
                for column in rule.output_columns(f.name) if rule is not None else ():
                    columns[column] = _DUCK_TYPES.get(f.type, "VARCHAR") if column == f.name else "VARCHAR"
                if rule is not None and rule.treatment.kind == "generalise" and rule.treatment.arg == "year":
                    columns[rule.column or f.name] = "BIGINT"
            ddl = ", ".join(f"{name} {kind}" for name, kind in columns.items())
            self.con.execute(f"CREATE TABLE {rel} ({ddl})")
            self._empty.add(rel)
        return rel

    def build(self) -> Built:
        """Every published table's new state (see ``schemas.unified``)."""
        out: dict[str, str] = {}
        hukou = self._relation("gongan.hukou")
        migrant = self._relation("gongan.migrant")
        self._people()
        out["core.person"] = self._table(
            "SELECT person_key, name_masked, id_number_masked, phone_masked, sex, "
            "CAST(birth_year AS INTEGER) AS birth_year, "
            "ethnicity, residence_type, community_code, left(community_code, 6) AS county_code FROM people",
        )
        out["sensitive.person_contact"] = self._table(
            "SELECT person_key, name AS name_enc, phone AS phone_enc, community_code FROM people"
        )
        out["core.hukou_registration"] = self._table(
            f"SELECT record_key, person_key, household_no AS household_key, relation_to_head, community_code, status, "
            f"CAST(death_date AS DATE) AS death_date, CAST(updated_at AS TIMESTAMP) AS source_updated_at FROM {hukou}"
        )
        out["core.household_member"] = self._table(
            f"SELECT household_no AS household_key, person_key, relation_to_head, status, community_code FROM {hukou} "
            "QUALIFY row_number() OVER (PARTITION BY household_no, person_key ORDER BY _ord DESC, record_key) = 1"
        )
        out["core.household"] = self._table(
            f"SELECT household_no AS household_key, "
            "coalesce(arg_min(community_code, record_key) "
            "FILTER (WHERE relation_to_head = '户主' AND status = '正常'), "
            f"         {mode_sql('community_code')}) AS community_code, "
            "CAST(count(DISTINCT person_key) FILTER (WHERE status = '正常') AS INTEGER) AS member_count, "
            "arg_min(person_key, record_key) "
            "FILTER (WHERE relation_to_head = '户主' AND status = '正常') AS head_person_key "
            f"FROM {hukou} GROUP BY household_no",
            household="core.household",
        )
        out["core.migrant_registration"] = self._table(
            f"SELECT record_key, person_key, origin_area AS origin_province, community_code, "
            "CAST(registered_on AS DATE) AS registered_on, CAST(departed_on AS DATE) AS departed_on, permit_no, "
            f"CAST(updated_at AS TIMESTAMP) AS source_updated_at FROM {migrant}"
        )
        dibao = self._relation("minzheng.dibao")
        out["core.dibao_membership"] = self._table(
            "SELECT record_key, person_key, household_id AS dibao_household_key, relation_to_head, area_type, "
            "CAST(monthly_amount AS DECIMAL(10, 2)) AS monthly_amount, CAST(start_date AS DATE) AS start_date, status, "
            f"community_code, CAST(updated_at AS TIMESTAMP) AS source_updated_at FROM {dibao}"
        )
        out["core.dibao_household"] = self._table(
            f"SELECT household_id AS dibao_household_key, {mode_sql('community_code')} AS community_code, "
            f"{mode_sql('area_type')} AS area_type, "
            "CAST(count(*) FILTER (WHERE status = '在保') AS INTEGER) AS member_count, "
            "CAST(coalesce(sum(CAST(monthly_amount AS DECIMAL(10, 2))) FILTER (WHERE status = '在保'), 0) "
            "AS DECIMAL(12, 2)) "
            f"AS monthly_total FROM {dibao} GROUP BY household_id",
            household="core.dibao_household",
        )
        relief = self._relation("minzheng.relief")
        out["core.social_relief"] = self._table(
            "SELECT record_key, person_key, category, CAST(monthly_amount AS DECIMAL(10, 2)) AS monthly_amount, "
            "CAST(start_date AS DATE) AS start_date, community_code, "
            f"CAST(updated_at AS TIMESTAMP) AS source_updated_at FROM {relief}"
        )
        employment = self._relation("renshe.employment")
        out["core.employment_registration"] = self._table(
            "SELECT record_key, person_key, registration_type, CAST(registered_on AS DATE) AS registered_on, "
            "community_code, "
            f"CAST(updated_at AS TIMESTAMP) AS source_updated_at FROM {employment}"
        )
        insurance = self._relation("renshe.insurance")
        out["core.insurance_participation"] = self._table(
            "SELECT i.record_key, i.person_key, i.insurance_type, i.status, CAST(i.start_date AS DATE) AS start_date, "
            "CAST(i.monthly_benefit AS DECIMAL(10, 2)) AS monthly_benefit, p.community_code, "
            f"CAST(i.updated_at AS TIMESTAMP) AS source_updated_at FROM {insurance} i JOIN people p USING (person_key)"
        )
        births = self._relation("jisheng.births")
        out["core.birth_registration"] = self._table(
            "SELECT record_key, person_key, child_name_masked, child_id_number_masked, child_sex, "
            "CAST(child_birth_year AS INTEGER) AS child_birth_year, CAST(birth_order AS INTEGER) AS birth_order, "
            f"community_code FROM {births}"
        )
        out["sensitive.family_planning"] = self._table(
            f"SELECT record_key, person_key, family_type, community_code FROM {births}"
        )
        disability = self._relation("canlian.disability")
        out["sensitive.disability_certificate"] = self._table(
            "SELECT record_key, person_key, disability_category AS category, disability_level AS level, "
            f"CAST(issued_on AS DATE) AS issued_on, community_code FROM {disability}"
        )
        corrections = self._relation("sifa.corrections")
        out["sensitive.community_correction"] = self._table(
            "SELECT record_key, person_key, correction_type AS correction_type_enc, start_date AS start_date_enc, "
            "end_date AS end_date_enc, community_code, "
            f"CAST(updated_at AS TIMESTAMP) AS source_updated_at FROM {corrections}"
        )
        lineage = " UNION ALL ".join(
            f"SELECT {_q(d)} AS dataset, r.record_key, r.person_key, r.match_kind, r.match_probability, "
            f"{self._community(d)} "
            f"AS community_code FROM {_rel(d)} r JOIN people p USING (person_key)"
            for d in sorted(self.present)
            if d not in SENSITIVE_DATASETS
        ) or (
            "SELECT NULL::VARCHAR dataset, NULL::VARCHAR record_key, NULL::VARCHAR person_key, "
            "NULL::VARCHAR match_kind, "
            "NULL::DOUBLE match_probability, NULL::VARCHAR community_code WHERE false"
        )
        out["core.record_lineage"] = self._table(lineage)
        out["core.identity_event"] = self._table(
            "SELECT CAST(seq AS INTEGER) AS event_id, kind, person_key, survivor_key, "
            "CAST(created_at AS TIMESTAMPTZ) AS occurred_at FROM events"
        )
        return Built(out, self.records_read, dict(self.unlinked), dict(self.rekeyed))

    def _community(self, dataset: str) -> str:
        """A record's community: its own where the source gives one, else its person's."""
        own = "community_code" in self._columns(_rel(dataset))
        return "coalesce(r.community_code, p.community_code)" if own else "p.community_code"

    def _columns(self, rel: str) -> set[str]:
        return {r[0] for r in self.con.execute(f"DESCRIBE {rel}").fetchall()}

    def _table(self, query: str, household: str | None = None) -> str:
        """The query of a table's rows with their row hash (run later, when the table is merged); a household
        table of a scoped build keeps the households in scope only."""
        rel = self.con.sql(query)
        where = ""
        if household is not None and self.scoped:
            key = rel.columns[0]
            where = f" WHERE {key} IN (SELECT k FROM scope_{household.split('.')[1]})"
        return f"SELECT *, {row_hash_sql(rel.columns)} AS row_hash FROM ({query}){where}"

    def _people(self) -> None:
        """Table ``people``: one row per person, each attribute from the best-ranked record that has it."""
        parts = []
        wanted = (
            "name_masked",
            "id_number_masked",
            "phone_masked",
            "name",
            "phone",
            "sex",
            "birth_year",
            "ethnicity",
            "community_code",
        )
        for dataset in sorted(self.present):
            rel = _rel(dataset)
            have = self._columns(rel)
            rank = DATASET_RANK.index(dataset) if dataset in DATASET_RANK else len(DATASET_RANK)
            cols = ", ".join(
                f"CAST({c} AS {'BIGINT' if c == 'birth_year' else 'VARCHAR'}) AS {c}"
                if c in have
                else f"NULL::{'BIGINT' if c == 'birth_year' else 'VARCHAR'} AS {c}"
                for c in wanted
            )
            # the housing facts: a current hukou, or a migrant registration without a departure
            hukou_now = "CASE WHEN status = '正常' THEN community_code END" if dataset == "gongan.hukou" else "NULL"
            migrant_now = (
                "CASE WHEN departed_on IS NULL THEN community_code END" if dataset == "gongan.migrant" else "NULL"
            )
            parts.append(
                # one number orders a person's records: department rank, newest batch, then the record (a hash
                # of its key breaks ties): a numeric key keeps the aggregation's state small
                f"SELECT person_key, (CAST({rank} AS BIGINT) * 100000000 - _ord) * 1073741824 "
                f"+ CAST(hash(record_key) % 1073741824 AS BIGINT) AS prio, {cols}, "
                f"{hukou_now} AS hukou_community, {migrant_now} AS migrant_community FROM {rel}"
            )
        if not parts:
            self.con.execute(
                "CREATE TABLE people (person_key VARCHAR, name_masked VARCHAR, id_number_masked VARCHAR, "
                "phone_masked VARCHAR, "
                "name VARCHAR, phone VARCHAR, sex VARCHAR, birth_year BIGINT, ethnicity VARCHAR, "
                "residence_type VARCHAR, "
                "community_code VARCHAR)"
            )
            return
        self.con.execute(f"CREATE VIEW everyone AS {' UNION ALL '.join(parts)}")
        picks = ", ".join(
            f"arg_min({c}, prio) FILTER (WHERE {c} IS NOT NULL) AS {c}" for c in wanted if c != "community_code"
        )
        self.con.execute(
            f"""
            CREATE TABLE people AS
            SELECT person_key, {picks},
                   CASE WHEN count(hukou_community) > 0 THEN '户籍'
                        WHEN count(migrant_community) > 0 THEN '流动' ELSE '其他' END AS residence_type,
                   coalesce(arg_min(hukou_community, prio) FILTER (WHERE hukou_community IS NOT NULL),
                            arg_min(migrant_community, prio) FILTER (WHERE migrant_community IS NOT NULL),
                            arg_min(community_code, prio) FILTER (WHERE community_code IS NOT NULL),
                            '{UNKNOWN_COMMUNITY}') AS community_code
            FROM everyone GROUP BY person_key
            """
        )
        self.con.execute("DROP VIEW everyone")
