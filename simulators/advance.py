"""Simulated time passes: department systems update some records, some late, and 计生 drops a new CSV.

For every HTTP and SQL dataset a fraction of records gets a plausible attribute change with a cursor time
after the current maximum; a smaller "late" fraction gets a time just before it (within ten minutes), as a
late-arriving update would. The ground truth of what changed goes to DIR/truth/changes_<n>.parquet, and
DIR/truth/conflicts.parquet is derived again from the changed sources (a 迁出 or a 停保 moves the cases).
Deterministic for a seed and the number of earlier advances.
"""

from __future__ import annotations

import io
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from schemas.base import write_atomic
from schemas.contract import Contract, packaged_contracts
from schemas.id_number import check_characters_series
from simulators.conflicts import FIELDS, conflict_counts, find_conflicts

AS_OF = pd.Timestamp("2026-11-01 00:00:00")  # the generator's fixed "now"
LATE_WINDOW_SECONDS = 600  # late updates land within ten minutes before the current maximum
CHANGED_WINDOW_SECONDS = 3600  # fresh updates spread over the hour after it
GB18030_BOM = b"\x84\x31\x95\x33"
_MOBILE_PREFIXES = np.array(["130", "131", "132", "135", "136", "137", "138", "139", "150", "151", "152",
                             "155", "156", "157", "158", "159", "170", "176", "177", "180", "181", "182",
                             "183", "185", "186", "187", "188", "189", "191", "198", "199"])  # fmt: skip
_GIVEN_NAMES = np.array(
    "子涵 欣怡 梓萱 浩宇 宇轩 雨桐 诗涵 子轩 一诺 沐阳 思远 若曦 天佑 嘉怡 铭泽 乐乐 安然".split()
    + "苏和 其其格 巴特尔".split()
)


@dataclass(frozen=True)
class AdvanceSummary:
    """What one advance did: its number, the truth file, and rows per dataset and kind."""

    number: int
    changes_path: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    csv_drop: Path | None = None
    conflicts: dict[str, int] = field(default_factory=dict)  # truth/conflicts.parquet rows per rule, after

    def total(self, kind: str | None = None) -> int:
        """Rows changed in all datasets (of one kind: changed, late or new)."""
        return sum(n for per in self.counts.values() for k, n in per.items() if kind in (None, k))


# -- plausible attribute changes, vectorised over the chosen rows -------------------------------------------

# A change gets the chosen rows, the new cursor times, a random generator and the whole frame (as donors),
# and returns new values for the columns it touches; the first column names the change in the truth file.
Change = Callable[[pd.DataFrame, pd.Series, np.random.Generator, pd.DataFrame], dict[str, pd.Series]]


def _new_phone(column: str) -> Change:
    """A fresh 11-digit mobile number."""

    def change(rows: pd.DataFrame, when: pd.Series, rng: np.random.Generator, donors: pd.DataFrame) -> dict:
        prefixes = pd.Series(rng.choice(_MOBILE_PREFIXES, len(rows)), index=rows.index, dtype="string")
        tails = pd.Series(rng.integers(0, 10**8, len(rows)), index=rows.index).astype(str).str.zfill(8)
        return {column: prefixes + tails.astype("string")}

    return change


def _moved(*columns: str) -> Change:
    """Take address-like columns from another record of the same system, as a move within the city."""

    def change(rows: pd.DataFrame, when: pd.Series, rng: np.random.Generator, donors: pd.DataFrame) -> dict:
        picks = rng.integers(0, len(donors), len(rows))
        return {c: pd.Series(donors[c].to_numpy()[picks], index=rows.index, dtype="string") for c in columns}

    return change


def _constant(column: str, value: str, dated: str | None = None) -> Change:
    """Set a status, optionally dating it (e.g. the departure date) on the update day."""

    def change(rows: pd.DataFrame, when: pd.Series, rng: np.random.Generator, donors: pd.DataFrame) -> dict:
        out = {column: pd.Series(value, index=rows.index, dtype="string")}
        if dated:
            out[dated] = when.dt.strftime("%Y-%m-%d").astype("string")
        return out

    return change


def _dated(column: str) -> Change:
    """Set a date (departure, end of registration) to the update day."""

    def change(rows: pd.DataFrame, when: pd.Series, rng: np.random.Generator, donors: pd.DataFrame) -> dict:
        return {column: when.dt.strftime("%Y-%m-%d").astype("string")}

    return change


def _swap(
    column: str, mapping: dict[str, str], dated: str | None = None, cleared: str | None = None
) -> Change:
    """Move a code to its counterpart (就业<->失业, 在保<->停保); unknown codes go to the first target."""
    fallback = next(iter(mapping.values()))

    def change(rows: pd.DataFrame, when: pd.Series, rng: np.random.Generator, donors: pd.DataFrame) -> dict:
        new = rows[column].map(mapping).fillna(fallback).astype("string")
        out = {column: new}
        if dated:
            out[dated] = when.dt.strftime("%Y-%m-%d").astype("string")
        if cleared:
            out[cleared] = pd.Series(pd.NA, index=rows.index, dtype="string")
        return out

    return change


def _uprated(column: str, low: float = 1.02, high: float = 1.08) -> Change:
    """Raise an amount by a few percent (yearly uprating); unreadable amounts become a plain figure."""

    def change(rows: pd.DataFrame, when: pd.Series, rng: np.random.Generator, donors: pd.DataFrame) -> dict:
        amount = pd.to_numeric(rows[column].astype("string").str.replace(r"[^0-9.]", "", regex=True),
                               errors="coerce")  # fmt: skip
        factor = rng.uniform(low, high, len(rows))
        new = (amount.fillna(800.0).to_numpy(dtype=float) * factor).round(2)
        return {column: pd.Series(new, index=rows.index).map("{:.2f}".format).astype("string")}

    return change


def _extended(column: str, months: int) -> Change:
    """Push an end date out (a corrections term extended); unreadable dates restart from the update day."""

    def change(rows: pd.DataFrame, when: pd.Series, rng: np.random.Generator, donors: pd.DataFrame) -> dict:
        old = pd.to_datetime(rows[column], errors="coerce", format="mixed")
        base = old.where(old.notna(), when.dt.normalize())
        new = base + pd.DateOffset(months=months)
        return {column: new.dt.strftime("%Y-%m-%d").astype("string")}

    return change


#: Per dataset, the plausible changes a record may get (one each, chosen at random).
CHANGES: dict[str, tuple[Change, ...]] = {
    "gongan.hukou": (_new_phone("lxdh"), _moved("hjdz", "sqdm"), _constant("zt", "迁出")),
    "gongan.migrant": (_dated("lkrq"), _new_phone("lxdh"), _moved("xzdz", "sqdm")),
    "renshe.employment": (
        _swap("regType", {"就业": "失业", "失业": "就业"}, dated="regDate", cleared="employer"),
        _new_phone("mobile"),
        _moved("employer"),
    ),
    "renshe.insurance": (
        _swap(
            "status",
            {"参保缴费": "暂停缴费", "暂停缴费": "参保缴费", "终止参保": "参保缴费", "领取待遇": "领取待遇"},
        ),
        _uprated("monthlyBenefit"),
    ),
    "sifa.corrections": (_extended("jsrq", 3), _moved("sqdm")),
    "minzheng.dibao": (
        _uprated("monthly_amount", 1.0, 1.15),
        _swap("status", {"在保": "停保", "停保": "在保"}),
    ),
    "minzheng.relief": (_uprated("monthly_amount"), _moved("community_code")),
}


@dataclass
class _Mutation:
    """The rows chosen in one dataset, their new values, and the truth rows describing them."""

    frame: pd.DataFrame  # chosen rows only, all columns, already changed
    columns: list[str]  # columns any change touched, cursor included
    truth: pd.DataFrame  # dataset, record_id, kind, field


def _rng(seed: int, number: int, name: str) -> np.random.Generator:
    """An independent, reproducible stream per seed, advance number and dataset."""
    return np.random.default_rng([seed, number, zlib.crc32(name.encode())])


def fraction_of(fraction: float, rows: int) -> int:
    """How many of ``rows`` a fraction means; at least one when the fraction is positive."""
    return 0 if fraction <= 0 or rows == 0 else min(rows, max(1, round(fraction * rows)))


def record_ids(frame: pd.DataFrame, contract: Contract) -> pd.Series:
    """The record id the truth files use: the primary key (joined with '|' when composite)."""
    keys = [frame[k].astype("string") for k in contract.primary_key]
    return keys[0] if len(keys) == 1 else keys[0].str.cat(keys[1:], sep="|")


def mutate(
    frame: pd.DataFrame, contract: Contract, changed: float, late: float, rng: np.random.Generator, sep: str
) -> _Mutation:
    """Choose changed and late rows, apply one plausible change each, and move their cursor times."""
    assert contract.cursor is not None
    n_changed, n_late = fraction_of(changed, len(frame)), fraction_of(late, len(frame))
    n_late = min(n_late, len(frame) - n_changed)
    picked = rng.permutation(len(frame))[: n_changed + n_late]
    rows = frame.iloc[picked].copy()
    kinds = np.array(["changed"] * n_changed + ["late"] * n_late, dtype=object)
    top = pd.to_datetime(frame[contract.cursor], errors="coerce", format="mixed").max()
    if pd.isna(top):
        raise ValueError(f"{contract.dataset}: cursor column '{contract.cursor}' has no readable time")
    offsets = np.where(
        kinds == "changed",
        rng.integers(1, CHANGED_WINDOW_SECONDS + 1, len(rows)),
        -rng.integers(1, LATE_WINDOW_SECONDS + 1, len(rows)),
    )
    when = pd.Series(top + pd.to_timedelta(offsets, unit="s"), index=rows.index)
    menu = CHANGES[contract.dataset]
    choice = rng.integers(0, len(menu), len(rows))
    touched: list[str] = []
    fields = np.empty(len(rows), dtype=object)
    for i, change in enumerate(menu):
        chosen = choice == i
        if not chosen.any():
            continue
        new = change(rows[chosen], when[chosen], rng, frame)
        for column, values in new.items():
            rows[column] = rows[column].astype("string")
            rows.loc[values.index, column] = values
            if column not in touched:
                touched.append(column)
        fields[chosen] = next(iter(new))
    rows[contract.cursor] = when.dt.strftime(f"%Y-%m-%d{sep}%H:%M:%S").astype("string")
    truth = pd.DataFrame(
        {
            "dataset": contract.dataset,
            "record_id": record_ids(rows, contract).to_numpy(),
            "kind": kinds,
            "field": fields,
        }
    ).astype("string")
    return _Mutation(rows, [*touched, contract.cursor], truth)


# -- writing: HTTP parquet, SQL tables, the CSV drop, truth --------------------------------------------------


def _advance_http(
    path: Path, contract: Contract, changed: float, late: float, rng: np.random.Generator
) -> pd.DataFrame:
    """Change records in one HTTP dataset's parquet and rewrite it atomically."""
    frame = pd.read_parquet(path)
    mutation = mutate(frame, contract, changed, late, rng, sep="T")
    for column in mutation.columns:
        frame[column] = frame[column].astype("string")
        frame.loc[mutation.frame.index, column] = mutation.frame[column]
    write_atomic(path, frame.to_parquet(index=False))
    return mutation.truth


def sql_location(data_dir: Path, manifest: dict[str, Any], contract: Contract) -> dict[str, Any]:
    """Where an SQL dataset lives: the manifest's location, or the SQLite file of the spec's layout."""
    default = data_dir / "sql" / f"{contract.department}.sqlite"
    location = dict((manifest.get("datasets", {}).get(contract.dataset) or {}).get("location") or {})
    location.setdefault("url", f"sqlite:///{default.resolve()}")
    location.setdefault("schema", None)
    location.setdefault("table", contract.table)
    url = make_url(location["url"])
    # A moved folder keeps working: a SQLite path that no longer exists falls back to DIR/sql/.
    gone = url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists()
    if gone and default.exists():
        location["url"] = f"sqlite:///{default.resolve()}"
    return location


def _advance_sql(
    location: dict[str, Any], contract: Contract, changed: float, late: float, rng: np.random.Generator,
    url_override: str | None,
) -> pd.DataFrame:  # fmt: skip
    """Change records in one SQL table in place, in one transaction."""
    url = url_override or location["url"]
    columns = list(contract.source_names)
    table = sa.table(location["table"], *(sa.column(c) for c in columns), schema=location.get("schema"))
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            pk = [table.c[k] for k in contract.primary_key]
            rows = conn.execute(sa.select(*(table.c[c] for c in columns)).order_by(*pk)).all()
            frame = pd.DataFrame.from_records(rows, columns=columns).astype("string")
            mutation = mutate(frame, contract, changed, late, rng, sep=" ")
            if len(mutation.frame):
                set_cols = [c for c in mutation.columns if c not in contract.primary_key]
                keys = contract.primary_key
                statement = (
                    sa.update(table)
                    .where(*(table.c[k] == sa.bindparam(f"k_{i}") for i, k in enumerate(keys)))
                    .values({c: sa.bindparam(f"v_{i}") for i, c in enumerate(set_cols)})
                )
                values = mutation.frame.astype(object).where(mutation.frame.notna(), None)
                params = [
                    {**{f"k_{i}": r[k] for i, k in enumerate(contract.primary_key)},
                     **{f"v_{i}": r[c] for i, c in enumerate(set_cols)}}
                    for r in values.to_dict("records")
                ]  # fmt: skip
                conn.execute(statement, params)
    finally:
        engine.dispose()
    return mutation.truth


def read_drops(folder: Path, columns: tuple[str, ...] = ("记录编号",)) -> tuple[pd.DataFrame, list[str]]:
    """Every readable births drop (GB18030, BOM or not) as text, and the newest drop's header.

    Corrupt drops are skipped; a column only later drops carry (schema drift) is '' in earlier rows.
    """
    frames = []
    for path in sorted(folder.glob("births_*.csv")):
        data = path.read_bytes()
        for bom in (GB18030_BOM, b"\xef\xbb\xbf"):
            data = data.removeprefix(bom)
        try:
            text = data.decode("gb18030")
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        except (UnicodeDecodeError, pd.errors.ParserError):
            continue  # the deliberately corrupted drop
        if "\x00" in text or frame.empty or not set(columns) <= set(frame.columns):
            continue
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(columns)), list(columns)
    # A record restated in a later drop supersedes the earlier one.
    merged = pd.concat(frames, ignore_index=True).fillna("")
    return merged.drop_duplicates(subset=[columns[0]], keep="last"), list(frames[-1].columns)


def _next_ids(existing: pd.Series, n: int) -> list[str]:
    """Record ids continuing the highest existing one (same prefix and width)."""
    match = re.match(r"^(.*?)(\d+)$", str(existing.max())) if len(existing) else None
    prefix, digits = (match.group(1), match.group(2)) if match else ("BR", "00000000")
    start = int(digits) + 1
    return [f"{prefix}{number:0{len(digits)}d}" for number in range(start, start + n)]


def _child_ids(drops: pd.DataFrame, rng: np.random.Generator) -> pd.Series:
    """Newly issued ID numbers for babies: county of the community, birth date, sequence by sex, check."""
    born = pd.to_datetime(drops["出生日期"], errors="coerce", format="mixed").fillna(AS_OF)
    male = drops["婴儿性别"].isin(["1", "男"]).to_numpy()
    seq = rng.integers(0, 500, len(drops)) * 2 + np.where(male, 1, 0)
    county = drops["社区代码"].str.slice(0, 6).where(drops["社区代码"].str.fullmatch(r"\d{6,}"), "150702")
    bodies = county + born.dt.strftime("%Y%m%d") + pd.Series(seq, index=drops.index).astype(str).str.zfill(3)
    return (bodies + check_characters_series(bodies.astype(str))).astype(str)


def _new_births(
    persons: pd.DataFrame, records: pd.DataFrame, n: int, day: pd.Timestamp, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Births of the new drop's day to women of child-bearing age, plus their truth rows."""
    born = pd.to_datetime(persons["birth_date"], errors="coerce", format="mixed")
    age = (day - born).dt.days / 365.25
    female = persons["sex"].astype("string").isin(["2", "女"])
    alive = persons["status"].astype("string").fillna("正常") == "正常"
    mothers = persons[(female & alive & age.between(20, 45)).to_numpy()]
    n = min(n, len(mothers))
    if n == 0:
        return pd.DataFrame(), pd.DataFrame()
    mothers = mothers.iloc[np.sort(rng.choice(len(mothers), n, replace=False))]
    sex = rng.choice(np.array(["男", "女"]), n)
    named = rng.random(n) < 0.5
    given = rng.choice(_GIVEN_NAMES, n)
    child_names = [f"{m[0]}{g}" if ok else "" for m, g, ok in zip(mothers["name"].astype(str), given, named,
                                                                  strict=True)]  # fmt: skip
    births = pd.DataFrame(
        {
            "记录编号": _next_ids(records["record_id"].astype(str), n),
            "母亲身份证号": mothers["id_number"].astype(str).to_numpy(),
            "母亲姓名": mothers["name"].astype(str).to_numpy(),
            "婴儿姓名": child_names,
            "婴儿身份证号": "",
            "婴儿性别": sex,
            "出生日期": (day - pd.to_timedelta(rng.integers(1, 4, n), unit="D")).strftime("%Y-%m-%d"),
            "孩次": rng.choice(np.array(["1", "1", "2", "3"]), n),
            "家庭类别": rng.choice(np.array(["普通家庭"] * 6 + ["独生子女家庭"]), n),
            "社区代码": mothers["community_code"].astype(str).to_numpy(),
        }
    )
    truth = pd.DataFrame(
        {
            "dataset": "jisheng.births",
            "record_id": births["记录编号"],
            "person_id": mothers["person_id"].astype(str).to_numpy(),
            "dirty": "",
        }
    )
    return births, truth


def _restated_births(
    drops: pd.DataFrame, n: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray]:
    """Some earlier births restated with what was learnt since: the baby's name, ID number, or family type."""
    rows = drops.iloc[np.sort(rng.choice(len(drops), min(n, len(drops)), replace=False))].copy()
    no_name = rows["婴儿姓名"].str.strip() == ""
    no_id = ~no_name & (rows["婴儿身份证号"].str.strip() == "")
    other = ~no_name & ~no_id
    given = pd.Series(rng.choice(_GIVEN_NAMES, len(rows)), index=rows.index)
    rows.loc[no_name, "婴儿姓名"] = rows.loc[no_name, "母亲姓名"].str.slice(0, 1) + given[no_name]
    if no_id.any():
        rows.loc[no_id, "婴儿身份证号"] = _child_ids(rows[no_id], rng)
    family = rows.loc[other, "家庭类别"]
    rows.loc[other, "家庭类别"] = family.map({"普通家庭": "独生子女家庭"}).fillna("普通家庭")
    fields = np.select([no_name.to_numpy(), no_id.to_numpy()], ["婴儿姓名", "婴儿身份证号"], "家庭类别")
    return rows, fields


def _advance_births(
    data_dir: Path, contract: Contract, changed: float, rng: np.random.Generator
) -> tuple[Path | None, pd.DataFrame]:
    """Write the next daily births drop: restated changed records plus the day's new births."""
    folder = data_dir / "drops" / "jisheng"
    drops, header = read_drops(folder, contract.source_names)
    truth_dir = data_dir / "truth"
    has_truth = (truth_dir / "persons.parquet").is_file() and (truth_dir / "records.parquet").is_file()
    records = pd.read_parquet(truth_dir / "records.parquet") if has_truth else pd.DataFrame()
    if has_truth:
        births_ids = records.loc[records["dataset"] == contract.dataset, "record_id"].astype(str)
        drops = drops[drops["记录编号"].isin(births_ids)]  # rows of a garbled drop that happened to decode
    if drops.empty:
        return None, pd.DataFrame()
    names = [p.name for p in folder.glob("births_*.csv")]
    last = max(pd.Timestamp(m.group(1)) for n in names if (m := re.search(r"(\d{8})", n)))
    day = last + pd.Timedelta(days=1)
    restated, fields = _restated_births(drops, fraction_of(changed, len(drops)), rng)
    new = pd.DataFrame()
    if has_truth:
        persons = pd.read_parquet(truth_dir / "persons.parquet")
        daily = max(1, len(drops) // len(names))  # about one day's births, as in each earlier drop
        new, new_truth = _new_births(persons, pd.DataFrame({"record_id": births_ids}), daily, day, rng)
        if len(new_truth):
            kinds = {c: t for c, t in records.dtypes.items() if c in new_truth.columns}
            merged = pd.concat([records, new_truth.astype(kinds)], ignore_index=True)
            write_atomic(truth_dir / "records.parquet", merged.to_parquet(index=False))
    drop = pd.concat([restated, new], ignore_index=True).reindex(columns=header).fillna("")
    path = folder / f"births_{day:%Y%m%d}.csv"
    payload = drop.to_csv(index=False, lineterminator="\r\n").encode("gb18030")
    write_atomic(path, payload)
    truth = pd.concat(
        [
            pd.DataFrame({"dataset": contract.dataset, "record_id": restated["记录编号"].to_numpy(),
                          "kind": "changed", "field": fields}),
            pd.DataFrame({"dataset": contract.dataset, "record_id": new.get("记录编号", pd.Series(dtype=str)),
                          "kind": "new", "field": ""}),
        ],
        ignore_index=True,
    ).astype("string")  # fmt: skip
    return path, truth


def _read_sql_columns(location: dict[str, Any], columns: list[str], url_override: str | None) -> pd.DataFrame:
    """Some columns of one SQL table, as text."""
    table = sa.table(location["table"], *(sa.column(c) for c in columns), schema=location.get("schema"))
    engine = sa.create_engine(url_override or location["url"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(*(table.c[c] for c in columns))).all()
    finally:
        engine.dispose()
    return pd.DataFrame.from_records(rows, columns=columns).astype("string")


def rewrite_conflicts(data_dir: Path, manifest: dict[str, Any], sql_url: str | None = None) -> dict[str, int] | None:
    """Derive DIR/truth/conflicts.parquet again from the sources as they are now; None without truth files.

    The fields the rules read carry no dirt (only their date format may vary, and a departure date only
    counts as set or not), so the source text gives the same answer as the clean facts; the true person
    of each record comes from truth/records.parquet.
    """
    truth_dir = data_dir / "truth"
    if not ((truth_dir / "persons.parquet").is_file() and (truth_dir / "records.parquet").is_file()):
        return None
    records = pd.read_parquet(truth_dir / "records.parquet", columns=["dataset", "record_id", "person_id"])
    records = records.astype("string").drop_duplicates(["dataset", "record_id"])
    contracts = packaged_contracts()
    views: dict[str, pd.DataFrame] = {}
    for dataset, names in FIELDS.items():
        contract = contracts[dataset]
        mine = records[(records["dataset"] == dataset).to_numpy(dtype=bool)]
        if dataset == "jisheng.births":  # the rule reads only who the mother is
            views[dataset] = mine[["record_id", "person_id"]].reset_index(drop=True)
            continue
        sources = [contract.field(name).source for name in ("record_id", *names)]
        if contract.interface in ("http_cursor", "http_offset"):
            frame = pd.read_parquet(data_dir / "http" / f"{dataset}.parquet", columns=sources).astype("string")
        else:
            frame = _read_sql_columns(sql_location(data_dir, manifest, contract), sources, sql_url)
        frame.columns = pd.Index(["record_id", *names])
        person = pd.Series(mine["person_id"].to_numpy(), index=mine["record_id"].to_numpy())
        frame["person_id"] = frame["record_id"].map(person).astype("string")
        views[dataset] = frame.dropna(subset=["person_id"]).reset_index(drop=True)
    persons = pd.read_parquet(truth_dir / "persons.parquet", columns=["person_id", "birth_date"])
    born = pd.to_datetime(persons["birth_date"], errors="coerce").dt.year
    years = pd.Series(born.to_numpy(), index=persons["person_id"].astype("string").to_numpy())
    conflicts = find_conflicts(views, years)
    write_atomic(truth_dir / "conflicts.parquet", conflicts.to_parquet(index=False))
    return conflict_counts(conflicts)


def read_manifest(data_dir: Path) -> dict[str, Any]:
    """DIR/manifest.json, or a FileNotFoundError naming the folder that is not a generated one."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {data_dir} is not a generated simulator folder")
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return manifest


def _next_number(truth_dir: Path) -> int:
    """The number of this advance: one more than the highest changes_<n>.parquet so far."""
    names = (re.fullmatch(r"changes_(\d+)\.parquet", p.name) for p in truth_dir.glob("changes_*.parquet"))
    numbers = [int(m.group(1)) for m in names if m]
    return max(numbers, default=0) + 1


def advance(
    data_dir: Path, changed: float = 0.01, late: float = 0.002, seed: int = 1, *, sql_url: str | None = None
) -> AdvanceSummary:
    """Let simulated time pass once over DIR: update HTTP parquet files and SQL tables, drop a new births CSV.

    ``sql_url`` overrides the manifest's PostgreSQL URL (which is stored without its password).
    """
    data_dir = Path(data_dir)
    if not (0 <= changed <= 1 and 0 <= late <= 1 and changed + late <= 1):
        raise ValueError("changed and late are fractions between 0 and 1 whose sum is at most 1")
    manifest = read_manifest(data_dir)
    truth_dir = data_dir / "truth"
    truth_dir.mkdir(exist_ok=True)
    number = _next_number(truth_dir)
    parts: list[pd.DataFrame] = []
    csv_drop: Path | None = None
    for dataset, contract in sorted(packaged_contracts().items()):
        rng = _rng(seed, number, dataset)
        if contract.interface in ("http_cursor", "http_offset"):
            path = data_dir / "http" / f"{dataset}.parquet"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; {data_dir} is not a complete simulator folder")
            parts.append(_advance_http(path, contract, changed, late, rng))
        elif contract.interface == "sql":
            location = sql_location(data_dir, manifest, contract)
            parts.append(_advance_sql(location, contract, changed, late, rng, sql_url))
        elif dataset == "jisheng.births":
            csv_drop, births = _advance_births(data_dir, contract, changed, rng)
            parts.append(births)
    changes = pd.concat([p for p in parts if len(p)], ignore_index=True).astype("string")
    conflicts = rewrite_conflicts(data_dir, manifest, sql_url)
    changes_path = truth_dir / f"changes_{number}.parquet"
    write_atomic(changes_path, changes.to_parquet(index=False))
    counts = {
        str(d): {str(k): int(n) for k, n in group.value_counts().items()}
        for d, group in changes.groupby("dataset", sort=True)["kind"]
    }
    manifest.setdefault("advances", []).append(
        {"number": number, "seed": seed, "changed": changed, "late": late,
         "changes": str(changes_path.relative_to(data_dir)),
         "csv_drop": str(csv_drop.relative_to(data_dir)) if csv_drop else None}
    )  # fmt: skip
    births = (manifest.get("datasets", {}).get("jisheng.births") or {}).get("location")
    if csv_drop and isinstance(births, dict) and isinstance(births.get("files"), list):
        births["files"] = sorted({*births["files"], csv_drop.name})  # readers that list files see the drop
    text = json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    write_atomic(data_dir / "manifest.json", text)
    return AdvanceSummary(number, changes_path, counts, csv_drop, conflicts or {})
