"""The linkage run's working set in an in-memory DuckDB: staged records, the token index, decrypted profiles.

Staged Parquet is scanned where it lies (each batch's data and linkage files joined by position, as a view),
so a million residents' 2.8 M records are read column by column as queries need them, not held in memory.
Quasi-identifiers are decrypted once per distinct ciphertext (AES-SIV is deterministic) into mapping tables of
this in-memory database; nothing decrypted is written anywhere. Profiles are built only for the persons that
share a blocking key with a record to place, plus a random sample for training.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from linkage.names import comparison_forms
from privacy.keyring import Keyring
from privacy.operators import decrypt_series, token_series
from privacy.policy import LINKAGE_NAME_DOMAIN, LINKAGE_QI_DOMAIN
from schemas.base import write_atomic
from schemas.duck import mode_sql

log = logging.getLogger(__name__)

SEP = ";"
QI = ("qi_name", "qi_birth_date", "qi_sex", "qi_county", "qi_community")
_TEXT = pd.StringDtype("pyarrow")
_FORMS_VERSION = b"hub.key_version"  # the key version a name-form copy's tokens are under


@dataclass(frozen=True)
class BatchRef:
    """A staged batch as linkage sees it: where its Parquet files are and what its content hash is."""

    dataset: str
    batch_id: str
    content_hash: str
    folder: Path


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def scan_sql(batches: Sequence[BatchRef], fresh: set[tuple[str, str]]) -> str:
    """One SELECT over every batch: dataset, record_id, batch_id, order, row in the batch, fresh, and the linkage
    fields."""
    parts = []
    for order, ref in enumerate(batches):
        data, link = _quote(str(ref.folder / "data.parquet")), _quote(str(ref.folder / "linkage.parquet"))
        is_fresh = "true" if (ref.dataset, ref.batch_id) in fresh else "false"
        parts.append(
            f"SELECT {_quote(ref.dataset)} AS dataset, d.record_id, {_quote(ref.batch_id)} AS batch_id, "
            f"{order} AS ord, d.file_row_number AS _row, {is_fresh} AS fresh, l.* "
            f"FROM read_parquet({data}, file_row_number = true) d POSITIONAL JOIN read_parquet({link}) l"
        )
    return " UNION ALL BY NAME ".join(parts)


class Workspace:
    """An in-memory DuckDB holding one run's records; close it when done."""

    def __init__(self, threads: int = 2) -> None:
        self.con = duckdb.connect()
        self.con.execute(f"SET threads TO {threads}")
        self.con.execute("SET enable_progress_bar = false")
        self.con.execute("SET temp_directory = ''")  # never spill: decrypted values must not reach a disk

    def close(self) -> None:
        """Free the in-memory database (and every decrypted value in it)."""
        self.con.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """Run a query in the workspace."""
        return self.con.sql(query)

    def scalar(self, query: str) -> int:
        """The single number a query returns."""
        rows = self.con.execute(query).fetchall()
        row = rows[0] if rows else None
        return int(row[0]) if row and row[0] is not None else 0

    def load(self, batches: Sequence[BatchRef], fresh: set[tuple[str, str]]) -> int:
        """View ``rec``: every staged record once (its newest version), with the linkage fields; returns the count.

        ``rec`` is a view over the staged Parquet, not a table: each query reads only the columns it needs, and
        a day's run does not copy every record's ciphertexts into memory (materialising them with a window over
        2.8 M records took 14 s at a million residents). The older versions of a record staged more than once (an
        update, or a row a drop repeats) are listed by position in the small table ``_older``; the view leaves them
        out.
        """
        if not batches:
            self.con.execute(
                "CREATE TABLE rec (dataset VARCHAR, record_id VARCHAR, batch_id VARCHAR, ord INTEGER, fresh BOOLEAN, "
                "link_token VARCHAR, id_status VARCHAR, id_ciphertext VARCHAR, swap_tokens VARCHAR, "
                "phone_token VARCHAR, household_token VARCHAR, qi_name VARCHAR, qi_birth_date VARCHAR, "
                "qi_sex VARCHAR, qi_county VARCHAR, qi_community VARCHAR)"
            )
            return 0
        self.con.execute(f"CREATE VIEW scan AS {scan_sql(batches, fresh)}")
        names = {r[0] for r in self.con.execute("DESCRIBE scan").fetchall()}
        missing = [
            f"NULL::VARCHAR AS {c}"
            for c in ("id_status", "id_ciphertext", "swap_tokens", "phone_token", "household_token", "qi_community")
            if c not in names
        ]  # batches staged before these fields existed
        extra = (", " + ", ".join(missing)) if missing else ""
        position = "(ord::BIGINT << 32) + _row"  # staging order, then the row's place in its batch
        # the positions of the older versions: each query filters on two integer columns, not on the record keys
        self.con.execute(
            f"CREATE TABLE _older AS WITH dup AS (SELECT dataset, record_id, max({position}) AS newest FROM scan "
            "GROUP BY dataset, record_id HAVING count(*) > 1) "
            f"SELECT {position} AS pos FROM scan s JOIN dup d USING (dataset, record_id) WHERE {position} <> d.newest"
        )
        self.con.execute(
            f"""
            CREATE VIEW rec AS
            SELECT * EXCLUDE (id_status, _row),
                   coalesce(id_status, CASE WHEN link_token IS NULL THEN 'missing' ELSE 'valid' END) AS id_status
            FROM (SELECT *{extra} FROM scan) s
            WHERE {position} NOT IN (SELECT pos FROM _older)
            """
        )
        return self.scalar("SELECT count(*) FROM scan") - self.scalar("SELECT count(*) FROM _older")

    def register(self, name: str, frame: pd.DataFrame | pa.Table) -> None:
        """Make a frame a table of the workspace (copied, so the frame may go)."""
        self.con.register(f"_{name}_src", frame)
        self.con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _{name}_src")
        self.con.unregister(f"_{name}_src")

    def decrypt_maps(
        self, keyring: Keyring, where: str, columns: Sequence[str] = QI, source: str = "rec"
    ) -> pd.DataFrame | None:
        """Tables ``m_<field>`` (ciphertext -> plaintext) for the records of ``source`` that ``where`` selects;
        names get their forms. Returns the name table (ciphertext, name and its forms) when names were asked."""
        names = None
        for column in columns:
            distinct = self.con.execute(
                f"SELECT DISTINCT {column} AS ct FROM {source} WHERE {where} AND {column} IS NOT NULL"
            ).df()
            cts = distinct["ct"].astype("string")
            version = cts.str.extract(r"^e(\d+)\.", expand=False).astype("Int64")
            held = version.isin(list(keyring.versions)).fillna(False).to_numpy(dtype=bool)
            if not held.all():  # under a destroyed version: crypto-shredded, compared as missing
                log.warning("%s: %d distinct values are under destroyed key versions", column, int((~held).sum()))
            plain = pd.Series(pd.NA, index=cts.index, dtype="string")
            if held.any():
                plain[held] = decrypt_series(cts[held], keyring, LINKAGE_QI_DOMAIN)
            table = pd.DataFrame({"ct": distinct["ct"].astype(_TEXT), "v": plain.astype(_TEXT).to_numpy()})
            if column == "qi_name":
                forms = comparison_forms(table["v"]).astype(_TEXT)
                table = names = pd.concat([table, forms.reset_index(drop=True)], axis=1)
            self.register(f"m_{column.removeprefix('qi_')}", table)
        return names

    def name_forms(self, keyring: Keyring, path: Path, names: pd.DataFrame | None = None, source: str = "rec") -> int:
        """Table ``nx``: every staged name ciphertext with keyed tokens of its simplified name and pinyin, which
        block and count names as the decrypted forms would (one token per form under the active key version).

        Kept between runs in ``path`` (private Parquet: ciphertexts and tokens, nothing decrypted), so a day's run
        decrypts only the names staged since; ``names`` (``decrypt_maps``' name table of every record) fills it
        without decrypting again. A copy under another key version is rebuilt. ``source``: the records whose names
        it must cover. Returns the names decrypted."""
        version = str(keyring.active_version).encode()
        kept = None
        if names is None and path.is_file():
            try:
                found = pq.read_table(path)
                if (found.schema.metadata or {}).get(_FORMS_VERSION) == version:
                    kept = found
            except (OSError, pa.ArrowInvalid):
                log.warning("%s is unreadable; the names are decrypted again", path.name)
        if kept is not None:
            self.con.register("_nx_kept", kept)
            missing = f"SELECT qi_name FROM {source} WHERE qi_name IS NOT NULL EXCEPT SELECT ct FROM _nx_kept"
            self.decrypt_maps(keyring, f"qi_name IN ({missing})", ("qi_name",), source)
            self.con.unregister("_nx_kept")
            names = self.con.sql("SELECT ct, name_s, pinyin FROM m_name").df()
        elif names is None:
            names = self.decrypt_maps(keyring, "true", ("qi_name",), source)
        assert names is not None
        added = pa.table(
            {
                "ct": pa.array(names["ct"].astype("string").to_numpy(), pa.string()),
                "name_t": pa.array(token_series(names["name_s"], keyring, LINKAGE_NAME_DOMAIN), pa.string()),
                "pinyin_t": pa.array(token_series(names["pinyin"], keyring, LINKAGE_NAME_DOMAIN), pa.string()),
            }
        )
        every = added if kept is None else pa.concat_tables([kept.replace_schema_metadata(None), added])
        if kept is None or added.num_rows:
            buffer = pa.BufferOutputStream()
            pq.write_table(every.replace_schema_metadata({_FORMS_VERSION: version}), buffer, compression="lz4")
            write_atomic(path, buffer.getvalue().to_pybytes())
        self.register("nx", every)
        return added.num_rows

    def decoded(self, source: str) -> str:
        """A SELECT adding the decrypted fields to ``source`` (a table or subquery with the qi_ columns)."""
        return f"""
            SELECT s.*, n.name_s, n.pinyin, n.surname, n.given_pinyin,
                   b.v AS birth_date, x.v AS sex, c.v AS county, m.v AS community
            FROM {source} s
            LEFT JOIN m_name n ON n.ct = s.qi_name
            LEFT JOIN m_birth_date b ON b.ct = s.qi_birth_date
            LEFT JOIN m_sex x ON x.ct = s.qi_sex
            LEFT JOIN m_county c ON c.ct = s.qi_county
            LEFT JOIN m_community m ON m.ct = s.qi_community
        """

    def decode_keyed(self, persons: str | None = None) -> None:
        """Table ``dk``: every keyed record's person and decrypted fields, once (profiles and blocking read it);
        only the records of the ``persons`` query's persons when given."""
        source = f"(SELECT * FROM keyed WHERE person_key IN ({persons}))" if persons else "keyed"
        self.con.execute(
            "CREATE OR REPLACE TABLE dk AS SELECT person_key, link_token, dataset, record_id, name_s, pinyin, surname, "
            "given_pinyin, "
            "birth_date, sex, county, community, phone_token, household_token "
            f"FROM ({self.decoded(source)})"
        )

    def keep_keyed(self) -> None:
        """Make ``keyed`` a table of the columns blocking, counting and profiles read: one scan of the staged
        Parquet and one token join, where a day's run would query the view seven times (0.7 s each at a million
        residents)."""
        self.con.execute(
            "CREATE OR REPLACE TABLE kb AS SELECT person_key, link_token, dataset, record_id, qi_name, qi_birth_date, "
            "qi_sex, qi_county, qi_community, phone_token, household_token FROM keyed"
        )
        self.con.execute("CREATE OR REPLACE VIEW keyed AS SELECT * FROM kb")

    def drop_keyed(self) -> None:
        """Drop the view ``keyed`` once its records are decoded into ``dk`` (everything after reads ``dk``)."""
        self.con.execute("DROP VIEW IF EXISTS keyed")
        self.con.execute("DROP TABLE IF EXISTS kb")

    def profiles(self, persons: str) -> pa.Table:
        """One row per person (of the ``persons`` query) and name variant, every value seen as ';'-joined sets.
        Arrow, not pandas: Splink reads it as it is (at 2.2 M residents, 1.6 M rows of short strings)."""
        agg = ", ".join(
            f"string_agg(DISTINCT {c}, '{SEP}' ORDER BY {c}) AS {a}_set, {mode_sql(c)} AS {a}"
            for c, a in (
                ("birth_date", "birth_date"), ("sex", "sex"), ("county", "county"), ("community", "community"),
                ("phone_token", "phone"), ("household_token", "household"),
            )
        )  # fmt: skip
        return self.con.sql(
            f"""
            WITH src AS (SELECT * FROM dk WHERE person_key IN ({persons})),
            person AS (
                SELECT person_key, {agg}, string_agg(DISTINCT name_s, '{SEP}' ORDER BY name_s) AS name_s_set,
                       min(link_token) AS first_token
                FROM src GROUP BY person_key
            ),
            names AS (
                SELECT DISTINCT person_key, name_s, pinyin, surname, given_pinyin FROM src WHERE name_s IS NOT NULL
            )
            SELECT 'p' || row_number() OVER (ORDER BY first_token, name_s) AS uid, names.*,
                   person.* EXCLUDE (person_key, first_token), NULL::VARCHAR AS swap_person,
                   NULL::VARCHAR AS swap_persons
            FROM names JOIN person USING (person_key)
            ORDER BY first_token, name_s
            """
        ).to_arrow_table()

    def name_frequencies_of(self, names: pd.Series, keyring: Keyring) -> pd.DataFrame:
        """``name_frequencies`` of ``names`` only, counted over every keyed record by form token (``nx``): the same
        figures without decoding every record."""
        wanted = names.dropna().drop_duplicates().astype("string")
        self.register(
            "tf_wanted",
            pd.DataFrame(
                {"name_s": wanted.astype(_TEXT), "t": token_series(wanted, keyring, LINKAGE_NAME_DOMAIN).astype(_TEXT)}
            ),
        )
        return self.con.execute(
            """
            WITH names AS (
                SELECT DISTINCT k.person_key, n.name_t FROM keyed k JOIN nx n ON n.ct = k.qi_name
                WHERE n.name_t IS NOT NULL
            ), tf AS (SELECT name_t, count(*)::DOUBLE / sum(count(*)) OVER () AS tf_name_s FROM names GROUP BY name_t)
            SELECT w.name_s, tf.tf_name_s FROM tf_wanted w JOIN tf ON tf.name_t = w.t
            """
        ).df()

    def name_frequencies(self) -> pd.DataFrame:
        """Term frequencies of the names over every known person (Splink's tf table for ``name_s``)."""
        return self.con.execute(
            """
            WITH names AS (SELECT DISTINCT person_key, name_s FROM dk)
            SELECT name_s, count(*)::DOUBLE / sum(count(*)) OVER () AS tf_name_s FROM names
            WHERE name_s IS NOT NULL GROUP BY name_s
            """
        ).df()

    def candidates(self, left: pd.DataFrame, keyring: Keyring | None = None) -> str:
        """A query of the persons sharing any blocking key with the ``left`` records (registered as ``lk``).

        Over ``dk`` (every keyed record decoded); with ``keyring``, over the keyed records as staged instead: names
        by their form tokens (``nx``), the other fields through the small decrypted maps, so that only the
        candidates' records need decoding. Both find the same persons."""
        keys = left[["name_s", "pinyin", "birth_date", "sex", "county", "phone", "household_set", "swap_persons"]]
        self.register("lk", keys)
        split = f"SELECT unnest(string_split(household_set, '{SEP}')) FROM lk"
        swaps = f"SELECT unnest(string_split(swap_persons, '{SEP}')) FROM lk"
        if keyring is None:
            return f"""
                SELECT person_key FROM dk WHERE name_s IN (SELECT name_s FROM lk) OR pinyin IN (SELECT pinyin FROM lk)
                UNION SELECT person_key FROM dk
                  WHERE (birth_date, sex, county) IN (SELECT (birth_date, sex, county) FROM lk)
                UNION SELECT person_key FROM dk WHERE phone_token IN (SELECT phone FROM lk)
                UNION SELECT person_key FROM dk WHERE household_token IN ({split})
                UNION {swaps}
            """
        for form in ("name_s", "pinyin"):
            values = keys[form].dropna().drop_duplicates().astype("string")
            self.register(f"lk_{form}", pd.DataFrame({"t": token_series(values, keyring, LINKAGE_NAME_DOMAIN)}))
        self.con.execute(
            "CREATE OR REPLACE TABLE cand AS SELECT DISTINCT person_key FROM ("
            "SELECT k.person_key, k.qi_name, k.phone_token, k.household_token, b.v AS birth_date, x.v AS sex, "
            "c.v AS county FROM keyed k LEFT JOIN m_birth_date b ON b.ct = k.qi_birth_date "
            "LEFT JOIN m_sex x ON x.ct = k.qi_sex LEFT JOIN m_county c ON c.ct = k.qi_county) "
            "WHERE qi_name IN (SELECT ct FROM nx WHERE name_t IN (SELECT t FROM lk_name_s) "
            "OR pinyin_t IN (SELECT t FROM lk_pinyin)) "
            "OR (birth_date, sex, county) IN (SELECT (birth_date, sex, county) FROM lk) "
            f"OR phone_token IN (SELECT phone FROM lk) OR household_token IN ({split}) "
            f"UNION {swaps}"
        )
        return "SELECT person_key FROM cand"

    def implied_households(self, tokens: Iterable[str], source: str = "dk") -> pd.Series:
        """For 低保 household tokens: the hukou household tokens of their keyed members (';'-joined). ``source``:
        ``dk``, or ``keyed`` when the records are not all decoded (tokens only are read)."""
        wanted = pd.DataFrame({"t": pd.Series(list(tokens), dtype=_TEXT)})
        self.register("wanted_households", wanted)
        frame = self.con.execute(
            f"""
            SELECT d.household_token AS dibao, string_agg(DISTINCT h.household_token, '{SEP}') AS hukou
            FROM {source} d JOIN {source} h USING (person_key)
            WHERE d.dataset = 'minzheng.dibao' AND h.dataset = 'gongan.hukou'
              AND d.household_token IN (SELECT t FROM wanted_households) AND h.household_token IS NOT NULL
            GROUP BY 1
            """
        ).df()
        return frame.set_index("dibao")["hukou"]
