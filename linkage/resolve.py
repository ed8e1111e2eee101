"""Identity resolution over staged batches: one stable, random person_key per person.

A run links the staged batches no earlier run has linked, in one transaction:
1. re-key: after a key rotation, every person gets a link token under the active version too (the ID is
   decrypted from the index's ``linkage_id`` ciphertext in memory), so tokens of new batches find them;
2. exact pass: a record with a valid ID number joins the person of its link token; a new token is a new person;
3. probabilistic pass (Splink) for records without a usable ID: placed only when one person clearly leads,
   else the record becomes a person of its own (``new``) and stays on the data stewards' list;
4. lineage for every record; a person key that loses its last record to another person is recorded as merged.
Re-running with nothing new staged changes nothing.
"""

from __future__ import annotations

import binascii
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from linkage import probabilistic, store
from linkage.workspace import QI, SEP, BatchRef, Workspace
from privacy.keyring import Keyring
from privacy.operators import decrypt_series, encrypt_series, token_series
from privacy.policy import LINKAGE_DOMAIN, LINKAGE_ID_DOMAIN
from schemas.base import HubError
from schemas.bulk import read_arrow

log = logging.getLogger(__name__)

__all__ = ["BatchRef", "LinkResult", "LinkageError", "explain", "link", "rekey"]
_TEXT = pd.StringDtype("pyarrow")

Progress = Callable[[str], None]


class LinkageError(HubError):
    """Linkage cannot go on (a staged batch is unreadable, a key version is gone); names the batch or version."""


@dataclass
class LinkResult:
    """What a run did, in counts (no values)."""

    run_id: int | None = None
    batches: int = 0
    records: int = 0
    exact: int = 0
    probabilistic: int = 0
    new_persons: int = 0
    unplaced: int = 0
    kept: int = 0  # unkeyed records placed by an earlier run, kept where they were
    merges: int = 0
    splits: int = 0
    rekeyed: int = 0
    persons: int = 0
    model_path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The counts for the run record and the CLI."""
        return {k: v for k, v in self.__dict__.items() if k not in {"model_path", "seconds", "run_id"}} | {
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()}
        }


def survivors(merged: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Each merged key's final survivor, following chains (a -> b -> c gives a -> c); cycles stop where they close.

    A token of a merged person must lead to the survivor, or a later record would bring the merged key back.
    """
    into = dict(merged)
    out = {}
    for key in into:
        seen, current = {key}, into[key]
        while current in into and into[current] not in seen:
            seen.add(current)
            current = into[current]
        out[key] = current
    return out


def rekey(index: pd.DataFrame, keyring: Keyring) -> pd.DataFrame:
    """Index rows under the active key version for persons that have none yet (after a rotation)."""
    active = keyring.active_version
    empty = pd.DataFrame(columns=["link_token", "person_key", "key_version", "id_ciphertext"])
    older = (index["key_version"] != active).to_numpy(dtype=bool)
    if not older.any():  # the usual run: no rotation since the last one (and 1 M keys need no set)
        return empty
    have = index.loc[~older, "person_key"]
    old = index[older & ~_among(index["person_key"], have)]
    blind = old["id_ciphertext"].isna()
    if blind.any():  # index rows written before the ID ciphertext was kept: these persons cannot be re-keyed
        log.warning("%d persons have no ID ciphertext in the index and cannot be re-keyed", int(blind.sum()))
    stale = old[~blind]
    stale = stale.drop_duplicates("person_key", keep="last")
    held = set(keyring.versions)
    version = stale["id_ciphertext"].str.extract(r"^e(\d+)\.", expand=False).astype(int)
    gone = stale[~version.isin(held)]
    if len(gone):
        log.warning("%d persons have link tokens only under destroyed key versions; they cannot be re-keyed", len(gone))
    stale = stale[version.isin(held)]
    if stale.empty:
        return empty
    ids = decrypt_series(stale["id_ciphertext"].astype("string"), keyring, LINKAGE_ID_DOMAIN)
    rows = pd.DataFrame(
        {
            "link_token": token_series(ids, keyring, LINKAGE_DOMAIN).to_numpy(),
            "person_key": stale["person_key"].to_numpy(),
            "key_version": active,
            "id_ciphertext": encrypt_series(ids, keyring, LINKAGE_ID_DOMAIN).to_numpy(),
        }
    )
    return rows[~_among(rows["link_token"], index["link_token"])]  # a token the index has already stays


def _among(values: pd.Series, others: pd.Series) -> np.ndarray:
    """``values.isin(others)`` through Arrow's hash set (pandas' Arrow strings build a scalar per value)."""
    found = pc.is_in(pa.array(values.astype(_TEXT).array), value_set=pa.array(others.astype(_TEXT).array))
    return np.asarray(found.fill_null(False), dtype=bool)


def _read_index(conn: sa.Connection, active: int) -> pd.DataFrame:
    """The identity index; the ID ciphertexts (for re-keying) only of tokens under an older key version.

    After the first rotation's re-keying every person has an active-version token, so a run normally reads
    tokens, keys and versions only: a million ciphertexts are the larger part of the table.
    """
    ident = store.link_identity
    columns = ("link_token", "person_key", "key_version")
    if conn.dialect.name == "postgresql":  # COPY: a million rows in seconds, where fetchall builds a Row each
        table = read_arrow(conn, f"SELECT {', '.join(columns)} FROM link_identity", columns)
        table = table.set_column(2, "key_version", table.column("key_version").cast(pa.int64()))  # Arrow: 0.5 s less
        index = pd.DataFrame({c: table.column(c).to_pandas() for c in columns})
    else:
        index = store.read_table(conn, ident, list(columns))
    index["id_ciphertext"] = pd.Series(pd.NA, index=index.index, dtype=object)
    older = (index["key_version"] != active).to_numpy(dtype=bool)
    if older.any():
        rows = conn.execute(sa.select(ident.c.link_token, ident.c.id_ciphertext).where(ident.c.key_version != active))
        ciphertexts = dict(rows.all())
        index.loc[older, "id_ciphertext"] = index.loc[older, "link_token"].map(ciphertexts)
    return index


def new_keys(n: int) -> np.ndarray:
    """Random person keys: 128 bits each from the OS, derived from nothing personal, never reused."""
    raw = np.frombuffer(secrets.token_bytes(16 * n), dtype=np.uint8).reshape(n, 16)
    hexed = np.frombuffer(binascii.hexlify(raw.tobytes()), dtype="S32")
    return hexed.astype(str)


def _left(ws: Workspace, records: pd.DataFrame, households: str = "dk") -> pd.DataFrame:
    """The records to place (decoded, from the workspace), in the columns the profiles have; ``households``:
    where the 低保 households' members are looked up (``Workspace.implied_households``)."""
    left = pd.DataFrame(index=records.index)
    left["uid"] = (records["dataset"] + "|" + records["record_id"]).astype("string")
    left["person_key"] = pd.NA
    for column in ("name_s", "pinyin", "surname", "given_pinyin", "birth_date", "sex", "county", "community"):
        left[column] = records[column]
    left["phone"] = records["phone_token"]
    own = records["household_token"].astype("string")
    dibao = own.dropna()
    implied = ws.implied_households(dibao.unique(), households) if len(dibao) else pd.Series(dtype="string")
    via = own.map(implied).astype("string") if len(implied) else pd.Series(pd.NA, index=records.index, dtype="string")
    left["household"] = via.str.split(SEP).str[0].fillna(own)
    both = (own.fillna("") + SEP + via.fillna("")).str.strip(SEP)
    left["household_set"] = both.where(both != "", pd.NA)
    for column in ("name_s", "birth_date", "sex", "county", "community", "phone"):
        left[f"{column}_set"] = left[column]
    tokens = records["swap_tokens"].astype("string").str.split(SEP).explode().dropna()
    if len(tokens):
        ws.register("swaps", pd.DataFrame({"row": tokens.index, "link_token": tokens.to_numpy()}))
        found = ws.sql("SELECT s.row, t.person_key FROM swaps s JOIN tok t USING (link_token)").df()
        swaps = found.groupby("row")["person_key"].agg(lambda s: SEP.join(sorted(set(s))))
        left["swap_persons"] = swaps.reindex(left.index)
    else:
        left["swap_persons"] = pd.NA
    left["swap_person"] = left["swap_persons"].astype("string").str.split(SEP).str[0]
    return left


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    """Both Splink tables with exactly the same columns, as plain text (NULL for missing)."""
    out = df.reindex(columns=list(probabilistic.COLUMNS))
    return out.astype(object).where(out.notna(), None).reset_index(drop=True)


_PROFILE_SCHEMA = pa.schema([(c, pa.string()) for c in probabilistic.COLUMNS])


def _profiles(table: pa.Table) -> pa.Table:
    """``Workspace.profiles`` as the right Splink table: ``_frame``'s columns and text, kept in Arrow."""
    return table.select(list(probabilistic.COLUMNS)).cast(_PROFILE_SCHEMA)


def _prepare(ws: Workspace, index: pd.DataFrame, keyring: Keyring) -> None:
    """Tables ``tok`` (every token -> person) and ``minted`` (new tokens' index rows, keys minted), view ``keyed``.

    The new tokens stay in DuckDB; only when some are under an older key version do they pass through Python
    to be re-tokenised (``_canonical_keys``).
    """
    known = pa.Table.from_pandas(index[["link_token", "person_key"]].astype(_TEXT), preserve_index=False)
    ws.con.register("known_tokens", known)
    ws.sql(
        "CREATE TABLE newt AS SELECT link_token, any_value(id_ciphertext) AS id_ciphertext, "
        "CAST(regexp_extract(link_token, '^t(\\d+)\\.', 1) AS BIGINT) AS key_version FROM rec "
        "WHERE link_token IS NOT NULL AND link_token NOT IN (SELECT link_token FROM known_tokens) GROUP BY link_token"
    )
    count = ws.scalar("SELECT count(*) FROM newt")
    older = ws.scalar(f"SELECT count(*) FROM newt WHERE key_version <> {int(keyring.active_version)}")
    if not older:
        # 128 bits of SHA-256 over a fresh OS-random salt and a counter: random keys, derived from nothing
        # personal, made inside DuckDB; the salt is never stored, so no key can be recomputed
        salt = secrets.token_hex(16)
        ws.sql(
            f"CREATE TABLE minted AS SELECT *, left(sha256('{salt}' || CAST(row_number() OVER () AS VARCHAR)), 32) "
            "AS person_key FROM newt"
        )
    else:  # staged before a rotation, linked after: one ID under two versions must be one person
        found = ws.sql("SELECT * FROM newt").to_arrow_table()
        at = np.flatnonzero(pc.not_equal(found["key_version"], keyring.active_version).to_numpy(zero_copy_only=False))
        keys, extra = _canonical_keys(found, at, new_keys(count), index, keyring)
        minted = found.append_column("person_key", pa.array(keys, pa.string()))
        minted = pa.concat_tables([minted, extra.select(minted.column_names).cast(minted.schema)])
        ws.register("minted", minted)
    ws.sql(
        "CREATE TABLE tok AS SELECT link_token, person_key FROM known_tokens "
        "UNION ALL SELECT link_token, person_key FROM minted"
    )
    ws.con.unregister("known_tokens")
    ws.sql("CREATE VIEW keyed AS SELECT r.*, t.person_key FROM rec r JOIN tok t USING (link_token)")


def _canonical_keys(
    found: pa.Table, older: np.ndarray, keys: np.ndarray, index: pd.DataFrame, keyring: Keyring
) -> tuple[np.ndarray, pa.Table]:
    """Keys for new tokens where some are under an older key version: each is re-tokenised under the active
    version (the ID decrypted in memory), so a person known, or new, under either version gets one key.

    Returns the keys in ``found``'s order and the active-version index rows to add for the older tokens.
    """
    frame = found.to_pandas()
    frame["key"] = keys
    old = frame.iloc[older]
    held = old["id_ciphertext"].notna() & old["id_ciphertext"].str.extract(r"^e(\d+)\.", expand=False).astype(
        "Int64"
    ).isin(list(keyring.versions)).fillna(False)
    old = old[held.to_numpy(dtype=bool)]
    ids = decrypt_series(old["id_ciphertext"].astype("string"), keyring, LINKAGE_ID_DOMAIN)
    canon = token_series(ids, keyring, LINKAGE_DOMAIN).to_numpy()
    person_of = dict(zip(index["link_token"], index["person_key"], strict=True))
    person_of |= {t: k for t, k in zip(frame["link_token"], frame["key"], strict=True) if t not in person_of}
    missing = ~_among(pd.Series(canon), pd.Series(list(person_of)))
    for c, k in zip(canon, old["key"], strict=True):  # two older tokens of one ID: the first one's key
        person_of.setdefault(c, k)
    frame.loc[old.index, "key"] = [person_of[c] for c in canon]
    extra = pd.DataFrame(
        {
            "link_token": canon[missing],
            "id_ciphertext": encrypt_series(ids, keyring, LINKAGE_ID_DOMAIN).to_numpy()[missing],
            "person_key": frame.loc[old.index, "key"].to_numpy()[missing],
            "key_version": keyring.active_version,
        }
    ).drop_duplicates("link_token")
    return frame["key"].to_numpy(), pa.Table.from_pandas(extra, preserve_index=False)


def link(
    batches: Sequence[BatchRef],
    engine: sa.Engine,
    keyring: Keyring,
    run_dir: Path,
    options: probabilistic.ModelSettings | None = None,
    progress: Progress | None = None,
) -> LinkResult:
    """Link every staged batch not yet linked; see the module docstring. ``run_dir`` receives the model."""
    options = options or probabilistic.ModelSettings()
    say = progress or (lambda _stage: None)
    result = LinkResult()
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.seconds[stage] = result.seconds.get(stage, 0.0) + now - clock
        clock = now
        log.info("link %s done in %.2fs: %s", stage, result.seconds[stage], result.summary())

    store.create(engine)
    with engine.connect() as conn:
        done = store.read_table(conn, store.link_batch)
        index = _read_index(conn, keyring.active_version)
        merged = conn.execute(
            sa.select(store.link_person.c.person_key, store.link_person.c.merged_into).where(
                store.link_person.c.merged_into.is_not(None)
            )
        ).all()
        index["person_key"] = index["person_key"].map(survivors(merged)).fillna(index["person_key"])
        known_persons = conn.execute(sa.select(sa.func.count()).select_from(store.link_person)).scalar_one()
        newest_model = store.newest_model(conn)
        linked_before = conn.execute(sa.select(sa.func.count()).select_from(store.link_record)).scalar_one()
    seen = set(zip(done["dataset"], done["batch_id"], done["content_hash"], strict=True)) if len(done) else set()
    fresh = [b for b in batches if (b.dataset, b.batch_id, b.content_hash) not in seen]
    say("re-keying the identity index")
    rekeyed = rekey(index, keyring)
    result.rekeyed = len(rekeyed)
    lap("rekey")
    if not fresh and rekeyed.empty:
        result.persons = int(known_persons)
        return result
    with Workspace() as ws:
        say(f"reading {len(batches)} staged batches ({len(fresh)} new)")
        ws.load(batches, {(b.dataset, b.batch_id) for b in fresh})
        if linked_before:
            # the earlier lineage of the persons the new records belong to is all a run compares with (where
            # a record was, whether the person it leaves keeps others); most of the lineage: read it whole
            fresh_records = ws.sql("SELECT DISTINCT dataset, record_id FROM rec WHERE fresh").to_arrow_table()
            with engine.connect() as conn:
                if fresh_records.num_rows * 5 < linked_before:
                    prev = store.lineage_of_persons(conn, fresh_records)
                else:
                    prev = store.read_table(conn, store.link_record, list(store.LINEAGE))
        if linked_before and len(prev):
            ws.register("prev", prev)
        else:
            ws.sql(
                "CREATE TABLE prev (dataset VARCHAR, record_id VARCHAR, person_key VARCHAR, match_kind VARCHAR, "
                "match_probability DOUBLE)"
            )
        lap("read")

        say("exact pass on link tokens")
        _prepare(ws, pd.concat([index, rekeyed], ignore_index=True), keyring)
        exact = ws.sql(
            "SELECT r.dataset, r.record_id, r.batch_id, t.person_key, 'exact' AS match_kind, "
            "1.0::DOUBLE AS match_probability, r.id_status FROM rec r JOIN tok t USING (link_token) WHERE r.fresh"
        ).to_arrow_table()
        lap("exact")

        previous = Path(newest_model) if newest_model else None
        placed_rows = _probabilistic(ws, keyring, run_dir, options, say, result, previous)
        lap("probabilistic")
        say("merges and lineage")
        ws.register("placed", placed_rows)
        ws.register("exact_rows", exact)
        ws.sql("CREATE TABLE assigned AS SELECT * FROM exact_rows UNION ALL BY NAME SELECT * FROM placed")
        events = ws.sql(
            """
            WITH moved AS (
                SELECT a.dataset, a.record_id, p.person_key AS old_key, a.person_key AS new_key
                FROM assigned a JOIN prev p USING (dataset, record_id) WHERE p.person_key <> a.person_key
            ), still AS (
                SELECT person_key FROM prev p
                WHERE NOT EXISTS (SELECT 1 FROM moved m WHERE m.dataset = p.dataset AND m.record_id = p.record_id)
                UNION SELECT person_key FROM assigned
            ), merged AS (
                SELECT old_key, min(new_key) AS survivor FROM moved WHERE old_key NOT IN (SELECT person_key FROM still)
                GROUP BY old_key HAVING count(DISTINCT new_key) = 1
            )
            SELECT old_key AS person_key, survivor AS survivor_key, 'merge' AS kind,
                   'its records now belong to this person (ID number fixed or record placed)' AS reason
            FROM merged
            UNION ALL
            SELECT DISTINCT new_key AS person_key, old_key AS survivor_key, 'split' AS kind,
                   'records of the surviving person now belong to this one' AS reason
            FROM moved WHERE old_key NOT IN (SELECT old_key FROM merged)
            """
        ).df()
        result.splits = int(events["kind"].eq("split").sum())
        result.merges = int(events["kind"].eq("merge").sum())
        replaced = ws.sql("SELECT a.dataset, a.record_id FROM assigned a JOIN prev p USING (dataset, record_id)").df()
        new_person_keys = ws.sql(
            "SELECT person_key FROM minted UNION SELECT person_key FROM placed WHERE match_kind = 'new' "
            "EXCEPT SELECT person_key FROM prev"
        ).df()["person_key"]
        lineage = ws.sql("SELECT * FROM assigned").to_arrow_table()
        minted = ws.sql("SELECT link_token, person_key, key_version, id_ciphertext FROM minted").to_arrow_table()
        result.exact = ws.scalar("SELECT count(*) FROM assigned WHERE match_kind = 'exact'")
        result.records, result.batches = lineage.num_rows, len(fresh)
        result.new_persons = len(new_person_keys)
    lap("decide")

    say("writing the identity index and lineage")
    with engine.begin() as conn:
        run_id = store.start_run(conn)
        result.run_id = run_id
        # a first run writes into empty tables: their keys are built after the COPY (one sort, not a B-tree
        # insert per row; 4.8 M rows at a million residents)
        store.write_rows(
            conn,
            store.link_person,
            pd.DataFrame({"person_key": new_person_keys.to_numpy(), "created_run": run_id}),
            empty=known_persons == 0,
        )
        store.write_rows(conn, store.link_identity, rekeyed)
        store.write_arrow(conn, store.link_identity, minted, empty=index.empty and rekeyed.empty)
        store.delete_keys(conn, store.link_record, replaced)
        store.write_arrow(
            conn,
            store.link_record,
            lineage.append_column("run_id", pa.array([run_id] * lineage.num_rows, pa.int64())),
            empty=linked_before == 0,
        )
        if len(events):
            store.write_rows(conn, store.link_event, events.assign(run_id=run_id, created_at=store.now()))
            merges = events[events["kind"].eq("merge")]
            for old, survivor in zip(merges["person_key"], merges["survivor_key"], strict=True):
                conn.execute(
                    sa.update(store.link_person)
                    .where(store.link_person.c.person_key == old)
                    .values(merged_into=survivor)
                )
        store.write_rows(
            conn,
            store.link_batch,
            pd.DataFrame(
                [(b.dataset, b.batch_id, b.content_hash, run_id) for b in fresh],
                columns=["dataset", "batch_id", "content_hash", "run_id"],
            ),
        )
        result.persons = int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(store.link_person)
                .where(store.link_person.c.merged_into.is_(None))
            ).scalar_one()
        )
        if result.model_path is not None:
            final = result.model_path.with_name(f"model-run-{run_id}.json")
            result.model_path.replace(final)
            result.model_path = final
        lap("write")
        store.finish_run(conn, run_id, str(result.model_path) if result.model_path else None, result.summary())
    return result


#: the name ciphertexts' form tokens, kept in the run folder between runs (``Workspace.name_forms``)
NAME_FORMS = "name-forms.parquet"
_PLACED_COLUMNS = ["dataset", "record_id", "batch_id", "person_key", "match_kind", "match_probability", "id_status"]


def _probabilistic(
    ws: Workspace,
    keyring: Keyring,
    run_dir: Path,
    options: probabilistic.ModelSettings,
    say: Progress,
    result: LinkResult,
    previous_model: Path | None = None,
) -> pd.DataFrame:
    """Lineage rows for the fresh records without a link token: kept, placed by Splink, or new persons."""
    todo = ws.sql(
        "SELECT r.dataset, r.record_id, r.batch_id, r.id_status, p.person_key AS prev_key, p.match_kind AS prev_kind, "
        "p.match_probability AS prev_probability FROM rec r LEFT JOIN prev p USING (dataset, record_id) "
        "WHERE r.fresh AND r.link_token IS NULL ORDER BY r.dataset, r.record_id"
    ).df()
    out = pd.DataFrame({c: todo[c] for c in ("dataset", "record_id", "batch_id", "id_status")})
    out["person_key"] = pd.Series(pd.NA, index=todo.index, dtype="string")
    out["match_kind"] = pd.Series(pd.NA, index=todo.index, dtype="string")
    out["match_probability"] = np.nan
    # a placement by Splink stands; a record that had an ID number and lost it is placed again
    stay = todo["prev_kind"].eq("probabilistic").to_numpy()
    out.loc[stay, "person_key"] = todo.loc[stay, "prev_key"]
    out.loc[stay, "match_kind"] = todo.loc[stay, "prev_kind"]
    out.loc[stay, "match_probability"] = todo.loc[stay, "prev_probability"]
    result.kept = int(stay.sum())
    place = ~stay
    if place.any():
        say(f"probabilistic pass for {int(place.sum())} records without a usable ID number")
        targets = todo.loc[place, ["dataset", "record_id"]]
        reuse = previous_model if len(targets) < options.reuse_below else None
        decided, model_path = _place(ws, targets, keyring, run_dir, options, reuse)
        result.model_path = model_path
        uids = (todo.loc[place, "dataset"] + "|" + todo.loc[place, "record_id"]).to_numpy()
        decided = decided.set_index("uid").reindex(uids)
        decided["placed"] = decided["placed"].fillna(False).astype(bool)
        placed = decided["placed"].to_numpy(dtype=bool)
        rows = todo.index[place]
        out.loc[rows[placed], "person_key"] = decided["person_key"].to_numpy()[placed]
        out.loc[rows[placed], "match_kind"] = "probabilistic"
        out.loc[rows[placed], "match_probability"] = decided["match_probability"].to_numpy()[placed]
        unplaced = rows[~placed]
        again = todo.loc[unplaced, "prev_kind"].eq("new").to_numpy()  # an unplaced record keeps its own key
        keys = pd.Series(new_keys(len(unplaced)), index=unplaced, dtype="string")
        keys[again] = todo.loc[unplaced[again], "prev_key"].astype("string")
        out.loc[unplaced, "person_key"] = keys
        out.loc[unplaced, "match_kind"] = "new"
        result.probabilistic = int(placed.sum())
        result.unplaced = len(unplaced)
    return out[_PLACED_COLUMNS].astype({c: _TEXT for c in _PLACED_COLUMNS if c != "match_probability"})


def _place(
    ws: Workspace,
    targets: pd.DataFrame,
    keyring: Keyring,
    run_dir: Path,
    options: probabilistic.ModelSettings,
    reuse: Path | None = None,
) -> tuple[pd.DataFrame, Path]:
    """Train on this data (or take the ``reuse`` model, an earlier run's), predict for ``targets`` (dataset,
    record_id), decide; one row per scored uid."""
    clock = [time.perf_counter()]

    def step(name: str, rows: int) -> None:
        now = time.perf_counter()
        log.info("probabilistic pass: %s, %d rows, %.2fs", name, rows, now - clock[0])
        clock[0] = now

    forms = run_dir / NAME_FORMS
    ws.register("targets", targets.astype(_TEXT))
    targeted = "(SELECT r.* FROM rec r JOIN targets USING (dataset, record_id) WHERE r.fresh)"
    model = _reused(reuse)
    if model is not None:  # a day's few records: only their candidates' records are decoded
        ws.keep_keyed()
        step("keyed records kept", ws.scalar("SELECT count(*) FROM kb"))
        fields = [c for c in QI if c != "qi_name"]
        both = f"(SELECT {', '.join(fields)} FROM kb UNION ALL SELECT {', '.join(fields)} FROM {targeted})"
        ws.decrypt_maps(keyring, "true", fields, source=both)
        decrypted = ws.name_forms(keyring, forms, source="kb")
        step("decrypted distinct quasi-identifiers but names; names staged since the last run", decrypted)
        ws.decrypt_maps(keyring, "true", ["qi_name"], source=targeted)
        left = _left(ws, ws.sql(ws.decoded(targeted)).df(), households="keyed")
        step("records to place", len(left))
        persons = ws.scalar("SELECT count(DISTINCT person_key) FROM keyed")
        model["probability_two_random_records_match"] = 1.0 / max(persons, 2)
        step("persons counted", persons)
        candidates = ws.candidates(left, keyring)
        step("candidates blocked", ws.scalar(f"SELECT count(*) FROM ({candidates})"))
        both = (
            f"(SELECT qi_name FROM {targeted} UNION ALL SELECT qi_name FROM keyed WHERE person_key IN ({candidates}))"
        )
        ws.decrypt_maps(keyring, "true", ["qi_name"], source=both)
        step("names decrypted", ws.scalar("SELECT count(*) FROM m_name"))
        ws.decode_keyed(candidates)
        step("candidates decoded", ws.scalar("SELECT count(*) FROM dk"))
        right = _profiles(ws.profiles(candidates))
        name_tf = ws.name_frequencies_of(pd.concat([left["name_s"], right.column("name_s").to_pandas()]), keyring)
        step("name frequencies", len(name_tf))
    else:
        ws.name_forms(keyring, forms, names=ws.decrypt_maps(keyring, "true"))
        ws.decode_keyed()
        step("decrypted distinct quasi-identifiers", ws.scalar("SELECT count(*) FROM m_name"))
        left = _left(ws, ws.sql(ws.decoded(targeted)).df())
        persons = ws.scalar("SELECT count(DISTINCT person_key) FROM dk")
        name_tf = ws.name_frequencies()
        model = _train(ws, left, persons, options, name_tf, step)
        right = _profiles(ws.profiles(ws.candidates(left)))
    ws.drop_keyed()
    step("candidate profiles", len(right))
    decided, pairs = probabilistic.place(_frame(left), right, model, options, name_tf)
    step("scored pairs", pairs)
    path = probabilistic.save_model(model, run_dir / f"model-{uuid.uuid4().hex[:8]}.json", options)
    return decided, path


def _reused(path: Path | None) -> dict[str, Any] | None:
    """An earlier run's saved model (its prior is set for today's persons by the caller), or None (train)."""
    if path is None or not path.is_file():
        return None
    try:
        model, _ = probabilistic.load_model(path)
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("the saved model %s cannot be read; training a new one", path.name)
        return None
    log.info("probabilistic pass: scoring with the model of an earlier run (%s)", path.name)
    return model


def _train(
    ws: Workspace,
    left: pd.DataFrame,
    persons: int,
    options: probabilistic.ModelSettings,
    name_tf: pd.DataFrame,
    step: Callable[[str, int], None],
) -> dict[str, Any]:
    """Splink's own training on this run's data: u by sampling, m by EM (see docs/linkage.md)."""
    sample = min(options.train_persons, persons)
    # the same persons every run over the same data (keys are random, tokens are not): reproducible training
    ws.sql(
        f"CREATE TABLE trainees AS SELECT person_key FROM tok GROUP BY person_key "
        f"ORDER BY hash(min(link_token) || '{options.seed}') LIMIT {sample}"
    )
    step("name frequencies", len(name_tf))
    train_right = _profiles(ws.profiles("SELECT person_key FROM trainees"))
    step("training profiles", len(train_right))
    known = ws.sql(
        f"SELECT * FROM dk WHERE person_key IN (SELECT person_key FROM trainees) "
        f"ORDER BY hash(dataset || '|' || record_id || '{options.seed}') LIMIT {options.em_sample}"
    ).df()
    trainer = _left(ws, known.assign(swap_tokens=pd.NA))
    trainer["uid"] = "k|" + pd.Series(np.arange(len(trainer)), dtype="string").to_numpy()
    step("training records", len(trainer))
    model = probabilistic.train(
        _frame(pd.concat([left, trainer], ignore_index=True)), train_right, persons, options, name_tf
    )
    step("trained (u sampling, EM)", len(trainer) + len(left))
    return model


@dataclass
class Explanation:
    """Why a record belongs where it is: the match kind, and for Splink's pass the weight of each comparison."""

    dataset: str
    record_id: str
    person_key: str
    match_kind: str
    match_probability: float | None
    candidate: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    record_masked: dict[str, str] = field(default_factory=dict)
    candidate_masked: dict[str, str] = field(default_factory=dict)


def _masked(row: pd.Series) -> dict[str, str]:
    """What may be shown of a compared row: the name's first character, birth year, sex, county."""
    name = row.get("name_s")
    birth = row.get("birth_date")
    return {
        "name": (str(name)[0] + "*" * (len(str(name)) - 1)) if isinstance(name, str) and name else "-",
        "birth": (str(birth)[:4] + "-**-**") if isinstance(birth, str) and birth else "-",
        "sex": str(row.get("sex") or "-"),
        "county": str(row.get("county") or "-"),
    }


def explain(
    record_id: str, dataset: str | None, batches: Sequence[BatchRef], engine: sa.Engine, keyring: Keyring
) -> Explanation:
    """Re-score one staged record against its candidates with the newest saved model; values come back masked."""
    store.create(engine)
    with engine.connect() as conn:
        query = sa.select(store.link_record).where(store.link_record.c.record_id == record_id)
        if dataset:
            query = query.where(store.link_record.c.dataset == dataset)
        found = conn.execute(query).mappings().all()
        model_path = store.newest_model(conn)
        index = store.read_table(conn, store.link_identity, ["link_token", "person_key"])
    if not found:
        raise LinkageError(f"record {record_id} is not in the lineage; has `hub link` run since it was staged?")
    if len(found) > 1:
        raise LinkageError(f"record id {record_id} is in several datasets; name one with --dataset")
    row = found[0]
    out = Explanation(row["dataset"], record_id, row["person_key"], row["match_kind"], row["match_probability"])
    if model_path is None:
        return out
    model, _options = probabilistic.load_model(Path(model_path))
    with Workspace() as ws:
        ws.load(batches, set())
        ws.register("tok", index.astype(_TEXT))
        # an exactly matched record is compared with the other records of its person, not with itself
        where = f"(dataset = {_sql_text(row['dataset'])} AND record_id = {_sql_text(record_id)})"
        ws.sql(
            f"CREATE TABLE keyed AS SELECT r.*, t.person_key FROM rec r JOIN tok t USING (link_token) WHERE NOT {where}"
        )
        ws.decrypt_maps(keyring, "true")
        ws.decode_keyed()
        target = ws.sql(ws.decoded(f"(SELECT * FROM rec WHERE {where})")).df()
        left = _left(ws, target.assign(link_token=pd.NA))
        right = _profiles(ws.profiles(ws.candidates(left)))
        pairs = probabilistic.predict(_frame(left), right, model, ws.name_frequencies(), retain=True)
    if pairs.empty:
        return out
    best = pairs.sort_values("match_weight", ascending=False).head(1)
    best.attrs["linker"] = pairs.attrs["linker"]
    out.rows = probabilistic.waterfall(best)
    first = best.iloc[0]
    side = "r" if first.get("source_dataset_l") == probabilistic.LEFT else "l"
    other = "l" if side == "r" else "r"
    out.candidate = str(first[f"person_key_{side}"])

    def pick(suffix: str) -> pd.Series:
        return pd.Series({c: first.get(f"{c}_{suffix}") for c in ("name_s", "birth_date", "sex", "county")})

    out.record_masked = _masked(pick(other))
    out.candidate_masked = _masked(pick(side))
    return out


def _sql_text(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"
