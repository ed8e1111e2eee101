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

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from linkage import probabilistic, store
from linkage.names import comparison_forms
from privacy.keyring import Keyring
from privacy.operators import decrypt_series, encrypt_series, token_series
from privacy.policy import LINKAGE_DOMAIN, LINKAGE_ID_DOMAIN, LINKAGE_QI_DOMAIN
from schemas.base import HubError

log = logging.getLogger(__name__)

LINK_FIELDS = (
    "link_token", "id_status", "id_ciphertext", "swap_tokens", "phone_token", "household_token",
    "qi_name", "qi_birth_date", "qi_sex", "qi_county", "qi_community",
)  # fmt: skip
KEYED = ("valid", "certificate")
_TEXT = pd.StringDtype("pyarrow")

Progress = Callable[[str], None]


class LinkageError(HubError):
    """Linkage cannot go on (a staged batch is unreadable, a key version is gone); names the batch or version."""


@dataclass(frozen=True)
class BatchRef:
    """A staged batch as linkage sees it: where its Parquet files are and what its content hash is."""

    dataset: str
    batch_id: str
    content_hash: str
    folder: Path


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


def _text(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper={pa.string(): _TEXT, pa.large_string(): _TEXT}.get)


def read_batches(batches: Sequence[BatchRef]) -> pd.DataFrame:
    """record_id and the linkage fields of each batch, later batches winning for a record seen twice."""
    frames = []
    for _order, ref in enumerate(batches):
        try:
            data = _text(pq.read_table(ref.folder / "data.parquet", columns=["record_id"]))
            link = _text(pq.read_table(ref.folder / "linkage.parquet"))
        except (OSError, pa.ArrowInvalid) as exc:
            raise LinkageError(f"{ref.dataset} batch {ref.batch_id}: cannot read its staged files ({exc})") from exc
        for name in LINK_FIELDS:
            if name not in link.columns:  # staged before the field existed
                link[name] = pd.Series(pd.NA, index=link.index, dtype=_TEXT)
        link["id_status"] = link["id_status"].fillna(
            pd.Series(np.where(link["link_token"].notna(), "valid", "missing"), index=link.index, dtype=_TEXT)
        )
        frame = pd.concat([data.reset_index(drop=True), link[list(LINK_FIELDS)].reset_index(drop=True)], axis=1)
        frame.insert(0, "dataset", ref.dataset)
        frame.insert(2, "batch_id", ref.batch_id)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["dataset", "record_id", "batch_id", *LINK_FIELDS])
    records = pd.concat(frames, ignore_index=True)
    return records.drop_duplicates(["dataset", "record_id"], keep="last").reset_index(drop=True)


def _token_version(tokens: pd.Series) -> pd.Series:
    return tokens.str.extract(r"^t(\d+)\.", expand=False).astype("Int64")


def rekey(index: pd.DataFrame, keyring: Keyring) -> pd.DataFrame:
    """Index rows under the active key version for persons that have none yet (after a rotation)."""
    active = keyring.active_version
    empty = pd.DataFrame(columns=["link_token", "person_key", "key_version", "id_ciphertext"])
    if index.empty:
        return empty
    have = set(index.loc[index["key_version"] == active, "person_key"])
    stale = index[(index["key_version"] != active) & index["id_ciphertext"].notna() & ~index["person_key"].isin(have)]
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
    return pd.DataFrame(
        {
            "link_token": token_series(ids, keyring, LINKAGE_DOMAIN).to_numpy(),
            "person_key": stale["person_key"].to_numpy(),
            "key_version": active,
            "id_ciphertext": encrypt_series(ids, keyring, LINKAGE_ID_DOMAIN).to_numpy(),
        }
    )


def _new_keys(n: int) -> list[str]:
    """Random person keys: 128 bits from the OS, derived from nothing personal, never reused."""
    return [uuid.uuid4().hex for _ in range(n)]


def _decrypt_qi(frame: pd.DataFrame, keyring: Keyring) -> pd.DataFrame:
    """The quasi-identifiers in memory, with the comparison forms of the name; nothing of it is written."""
    out = pd.DataFrame(index=frame.index)
    for name in ("qi_name", "qi_birth_date", "qi_sex", "qi_county", "qi_community"):
        out[name.removeprefix("qi_")] = decrypt_series(frame[name].astype("string"), keyring, LINKAGE_QI_DOMAIN)
    forms = comparison_forms(out["name"])
    return pd.concat([out.drop(columns=["name"]), forms], axis=1)


def _profiles(keyed: pd.DataFrame, keyring: Keyring) -> pd.DataFrame:
    """One row per person and name variant, with every value the person has shown as ';'-joined sets."""
    import duckdb

    qi = _decrypt_qi(keyed, keyring)
    src = pd.concat(
        [keyed[["person_key", "phone_token", "household_token"]].reset_index(drop=True), qi.reset_index(drop=True)],
        axis=1,
    )
    con = duckdb.connect()
    con.register("src", src)
    sets = ", ".join(
        f"string_agg(DISTINCT {c}, '{probabilistic.SEP}' ORDER BY {c}) AS {alias}_set, mode({c}) AS {alias}"
        for c, alias in (
            ("birth_date", "birth_date"), ("sex", "sex"), ("county", "county"), ("community", "community"),
            ("phone_token", "phone"), ("household_token", "household"),
        )
    )  # fmt: skip
    profiles = con.execute(
        f"""
        WITH person AS (
            SELECT person_key, {sets}, string_agg(DISTINCT name_s, '{probabilistic.SEP}' ORDER BY name_s) AS name_s_set
            FROM src GROUP BY person_key
        ), names AS (
            SELECT DISTINCT person_key, name_s, pinyin, surname, given_pinyin FROM src WHERE name_s IS NOT NULL
        )
        SELECT names.*, person.* EXCLUDE (person_key) FROM names JOIN person USING (person_key)
        ORDER BY person_key, name_s
        """
    ).df()
    con.close()
    profiles["uid"] = "p" + pd.Series(np.arange(len(profiles)), dtype="string")
    profiles["swap_person"] = pd.NA
    profiles["swap_persons"] = pd.NA
    return profiles


def _implied_households(records: pd.DataFrame, person_of: pd.Series) -> pd.Series:
    """For a 低保 household token: the hukou household tokens of its keyed members (';'-joined)."""
    with_person = records.assign(person_key=person_of).dropna(subset=["person_key", "household_token"])
    dibao = with_person[with_person["household_token"].notna() & with_person["dataset"].eq("minzheng.dibao")]
    hukou = with_person[with_person["dataset"].eq("gongan.hukou")][["person_key", "household_token"]]
    joined = dibao[["household_token", "person_key"]].merge(hukou, on="person_key", suffixes=("", "_hukou"))
    if joined.empty:
        return pd.Series(dtype="string")
    return joined.groupby("household_token")["household_token_hukou"].agg(
        lambda s: probabilistic.SEP.join(sorted(set(s)))
    )


def _left(unkeyed: pd.DataFrame, keyring: Keyring, index: pd.Series, implied: pd.Series) -> pd.DataFrame:
    """The records to place, in the columns the profiles have."""
    qi = _decrypt_qi(unkeyed, keyring)
    left = pd.DataFrame(index=unkeyed.index)
    left["uid"] = (unkeyed["dataset"] + "|" + unkeyed["record_id"]).astype("string")
    left["person_key"] = pd.NA
    for column in ("name_s", "pinyin", "surname", "given_pinyin", "birth_date", "sex", "county", "community"):
        left[column] = qi[column]
    left["phone"] = unkeyed["phone_token"]
    own = unkeyed["household_token"]
    via = own.map(implied) if len(implied) else pd.Series(pd.NA, index=unkeyed.index)
    left["household"] = via.str.split(probabilistic.SEP).str[0].fillna(own)
    left["household_set"] = (own.fillna("") + probabilistic.SEP + via.fillna("")).str.strip(probabilistic.SEP)
    left["household_set"] = left["household_set"].replace("", pd.NA)
    for column in ("name_s", "birth_date", "sex", "county", "community", "phone"):
        left[f"{column}_set"] = left[column]
    tokens = unkeyed["swap_tokens"].str.split(probabilistic.SEP).explode().dropna()
    persons = tokens.map(index).dropna()
    swaps = persons.groupby(level=0).agg(lambda s: probabilistic.SEP.join(sorted(set(s))))
    left["swap_persons"] = swaps.reindex(left.index)
    left["swap_person"] = left["swap_persons"].str.split(probabilistic.SEP).str[0]
    return left


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    """Both Splink tables with exactly the same columns, as plain text (NULL for missing)."""
    out = df.reindex(columns=list(probabilistic.COLUMNS))
    return out.astype(object).where(out.notna(), None).reset_index(drop=True)


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

    store.create(engine)
    with engine.connect() as conn:
        done = store.read_table(conn, store.link_batch)
        index = store.read_table(conn, store.link_identity)
        lineage = store.read_table(conn, store.link_record)
        known_persons = conn.execute(sa.select(sa.func.count()).select_from(store.link_person)).scalar_one()
    seen = set(zip(done["dataset"], done["batch_id"], done["content_hash"], strict=True)) if len(done) else set()
    fresh = [b for b in batches if (b.dataset, b.batch_id, b.content_hash) not in seen]
    say("re-keying the identity index")
    rekeyed = rekey(index, keyring)
    result.rekeyed = len(rekeyed)
    lap("rekey")
    if not fresh and rekeyed.empty:
        result.persons = int(known_persons)
        return result
    say(f"reading {len(fresh)} staged batches")
    everything = read_batches(batches)
    fresh_ids = {(b.dataset, b.batch_id) for b in fresh}
    is_new = pd.Series(
        [k in fresh_ids for k in zip(everything["dataset"], everything["batch_id"], strict=True)],
        index=everything.index,
    )
    lap("read")

    # -- exact pass ---------------------------------------------------------------------------------------
    say("exact pass on link tokens")
    index = pd.concat([index, rekeyed], ignore_index=True)
    person_of_token = (
        index.drop_duplicates("link_token", keep="last").set_index("link_token")["person_key"].astype("string")
    )
    keyed = everything["link_token"].notna()
    person = everything["link_token"].astype("string").map(person_of_token).astype("string")
    unknown = everything.loc[keyed & person.isna()].drop_duplicates("link_token")
    new_tokens = unknown["link_token"]
    minted = pd.Series(_new_keys(len(new_tokens)), index=new_tokens.to_numpy(), dtype="string")
    person = person.fillna(everything["link_token"].astype("string").map(minted).astype("string"))
    new_index = pd.DataFrame(
        {
            "link_token": new_tokens.to_numpy(),
            "person_key": minted.to_numpy(),
            "key_version": _token_version(new_tokens).to_numpy(),
            "id_ciphertext": unknown["id_ciphertext"].to_numpy(),
        }
    )
    person_of_token = pd.concat([person_of_token, minted])
    lap("exact")

    # -- probabilistic pass ----------------------------------------------------------------------------------
    run_records = everything[is_new.to_numpy()]
    assigned = pd.DataFrame(
        {
            "dataset": run_records["dataset"],
            "record_id": run_records["record_id"],
            "batch_id": run_records["batch_id"],
            "person_key": person[is_new.to_numpy()],
            "match_kind": pd.Series("exact", index=run_records.index, dtype=object).where(keyed[is_new.to_numpy()]),
            "match_probability": np.where(keyed[is_new.to_numpy()], 1.0, np.nan),
            "id_status": run_records["id_status"],
        }
    )
    previous = lineage.set_index(["dataset", "record_id"]) if len(lineage) else None
    to_place = assigned["match_kind"].isna()
    if previous is not None and to_place.any():
        before = previous.reindex(pd.MultiIndex.from_frame(assigned.loc[to_place, ["dataset", "record_id"]]))
        stay = before["match_kind"].isin(["exact", "probabilistic"]).to_numpy()
        kept_rows = assigned.index[to_place][stay]
        assigned.loc[kept_rows, "person_key"] = before["person_key"].to_numpy()[stay]
        assigned.loc[kept_rows, "match_kind"] = before["match_kind"].to_numpy()[stay]
        assigned.loc[kept_rows, "match_probability"] = before["match_probability"].to_numpy()[stay]
        result.kept = int(stay.sum())
        to_place = assigned["match_kind"].isna()
    model_path: Path | None = None
    if to_place.any():
        say(f"probabilistic pass for {int(to_place.sum())} records without a usable ID number")
        decided, model_path = _place(
            everything, keyed, person, run_records.loc[to_place.to_numpy()], person_of_token, keyring, run_dir, options
        )
        lap("probabilistic")
        placed = decided["placed"].to_numpy(dtype=bool)
        rows = assigned.index[to_place]
        assigned.loc[rows[placed], "person_key"] = decided["person_key"].to_numpy()[placed]
        assigned.loc[rows[placed], "match_kind"] = "probabilistic"
        assigned.loc[rows, "match_probability"] = decided["match_probability"].to_numpy()
        fresh_keys = pd.Series(_new_keys(int((~placed).sum())), dtype="string")
        assigned.loc[rows[~placed], "person_key"] = fresh_keys.to_numpy()
        assigned.loc[rows[~placed], "match_kind"] = "new"
        assigned.loc[rows[~placed], "match_probability"] = np.nan  # not placed: no probability to record
        result.probabilistic = int(placed.sum())
        result.unplaced = int((~placed).sum())
        if previous is not None:  # an unplaced record keeps the key it was given before
            before = previous.reindex(pd.MultiIndex.from_frame(assigned.loc[rows[~placed], ["dataset", "record_id"]]))
            again = before["match_kind"].eq("new").to_numpy()
            assigned.loc[rows[~placed][again], "person_key"] = before["person_key"].to_numpy()[again]
    result.exact = int(assigned["match_kind"].eq("exact").sum())

    # -- merges: a key that lost its last record to another person -------------------------------------------
    events = _merges(assigned, lineage)
    result.merges = len(events)
    new_person_keys = sorted(
        set(minted)
        | set(assigned.loc[assigned["match_kind"].eq("new"), "person_key"]) - set(lineage.get("person_key", []))
    )
    result.new_persons = len(new_person_keys)
    result.batches, result.records = len(fresh), len(assigned)
    lap("decide")

    say("writing the identity index and lineage")
    with engine.begin() as conn:
        run_id = store.start_run(conn)
        result.run_id = run_id
        store.write_rows(conn, store.link_person, pd.DataFrame({"person_key": new_person_keys, "created_run": run_id}))
        store.write_rows(conn, store.link_identity, pd.concat([rekeyed, new_index], ignore_index=True))
        if len(lineage):  # only records linked before have a row to replace
            seen_before = pd.MultiIndex.from_frame(lineage[["dataset", "record_id"]])
            again = pd.MultiIndex.from_frame(assigned[["dataset", "record_id"]]).isin(seen_before)
            store.delete_keys(conn, store.link_record, assigned.loc[again, ["dataset", "record_id"]])
        store.write_rows(conn, store.link_record, assigned.assign(run_id=run_id))
        if len(events):
            store.write_rows(conn, store.link_event, events.assign(run_id=run_id, created_at=store.now()))
            for old, survivor in zip(events["person_key"], events["survivor_key"], strict=True):
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
        if model_path is not None:
            final = model_path.with_name(f"model-run-{run_id}.json")
            model_path.replace(final)
            model_path = final
        result.model_path = model_path
        lap("write")
        store.finish_run(conn, run_id, str(model_path) if model_path else None, result.summary())
    return result


def _place(
    everything: pd.DataFrame,
    keyed: pd.Series,
    person: pd.Series,
    unkeyed: pd.DataFrame,
    person_of_token: pd.Series,
    keyring: Keyring,
    run_dir: Path,
    options: probabilistic.ModelSettings,
) -> tuple[pd.DataFrame, Path]:
    """Train on this data, predict for ``unkeyed``, decide; return decisions (in unkeyed's order) and the model."""
    known = everything[keyed.to_numpy()].assign(person_key=person[keyed.to_numpy()].to_numpy())
    profiles = _profiles(known, keyring)
    implied = _implied_households(everything, person)
    left = _left(unkeyed, keyring, person_of_token, implied)
    sample = known.sample(min(options.em_sample, len(known)), random_state=options.seed)
    trainer = _left(sample.assign(swap_tokens=pd.NA), keyring, person_of_token, implied)
    trainer["uid"] = "k|" + pd.Series(np.arange(len(trainer)), dtype="string").to_numpy()
    persons = int(profiles["person_key"].nunique())
    right = _frame(profiles)
    model = probabilistic.train(_frame(pd.concat([left, trainer], ignore_index=True)), right, persons, options)
    pairs = probabilistic.predict(_frame(left), right, model)
    decided = probabilistic.decide(pairs, options).set_index("uid").reindex(left["uid"].to_numpy())
    decided["placed"] = decided["placed"].fillna(False).astype(bool)
    path = probabilistic.save_model(model, run_dir / f"model-{uuid.uuid4().hex[:8]}.json", options)
    return decided.reset_index(), path


def _merges(assigned: pd.DataFrame, lineage: pd.DataFrame) -> pd.DataFrame:
    """Keys whose every record moved to one other key in this run: merged into that key."""
    columns = ["person_key", "survivor_key", "kind", "reason"]
    if lineage.empty:
        return pd.DataFrame(columns=columns)
    moved = assigned.merge(
        lineage[["dataset", "record_id", "person_key"]], on=["dataset", "record_id"], suffixes=("", "_old")
    )
    moved = moved[moved["person_key_old"] != moved["person_key"]]
    if moved.empty:
        return pd.DataFrame(columns=columns)
    remaining = lineage[
        ~lineage.set_index(["dataset", "record_id"]).index.isin(moved.set_index(["dataset", "record_id"]).index)
    ]
    still_used = set(remaining["person_key"])
    gone = moved[~moved["person_key_old"].isin(still_used)]
    targets = gone.groupby("person_key_old")["person_key"].agg(lambda s: sorted(set(s)))
    rows = [
        (old, survivors[0], "merge", "its records now belong to this person (ID number fixed or record placed)")
        for old, survivors in targets.items()
        if len(survivors) == 1
    ]
    return pd.DataFrame(rows, columns=columns)


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
    """Re-score one staged record against its best candidates with the newest saved model."""
    store.create(engine)
    with engine.connect() as conn:
        query = sa.select(store.link_record).where(store.link_record.c.record_id == record_id)
        if dataset:
            query = query.where(store.link_record.c.dataset == dataset)
        found = conn.execute(query).mappings().all()
        model_path = conn.execute(
            sa.select(store.link_run.c.model_path)
            .where(store.link_run.c.model_path.is_not(None))
            .order_by(store.link_run.c.run_id.desc())
            .limit(1)
        ).scalar_one_or_none()
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
    everything = read_batches(
        [b for b in batches if b.dataset == row["dataset"]] + [b for b in batches if b.dataset != row["dataset"]]
    )
    person_of_token = index.drop_duplicates("link_token").set_index("link_token")["person_key"].astype("string")
    person = everything["link_token"].astype("string").map(person_of_token).astype("string")
    keyed = everything["link_token"].notna() & person.notna()
    target = everything[(everything["dataset"] == row["dataset"]) & (everything["record_id"] == record_id)]
    known = everything[keyed.to_numpy()].assign(person_key=person[keyed.to_numpy()].to_numpy())
    if row["match_kind"] == "exact":  # compare with the other records of its person, not with itself
        known = known[~((known["dataset"] == row["dataset"]) & (known["record_id"] == record_id))]
    left = _left(target.assign(link_token=pd.NA), keyring, person_of_token, _implied_households(everything, person))
    profiles = _profiles(known, keyring)
    pairs = probabilistic.predict(_frame(left), _frame(profiles), model, retain=True)
    if pairs.empty:
        return out
    best = pairs.sort_values("match_weight", ascending=False).head(1)
    linker = pairs.attrs["linker"]
    best.attrs["linker"] = linker
    out.rows = probabilistic.waterfall(best)
    first = best.iloc[0]
    side = "r" if first.get("source_dataset_l") == probabilistic.LEFT else "l"
    other = "l" if side == "r" else "r"
    out.candidate = str(first[f"person_key_{side}"])
    pick = lambda s: pd.Series({c: first.get(f"{c}_{s}") for c in ("name_s", "birth_date", "sex", "county")})  # noqa: E731
    out.record_masked = _masked(pick(other))
    out.candidate_masked = _masked(pick(side))
    return out
