"""Generate the simulated department systems' data (DIR) from a seeded population, with ground truth.

``generate`` builds the population and its service facts, renders every source dataset the way its
department would send it (its own codes, date style and dirt), writes each through its real
interface's storage (Parquet for the REST servers, SQLite/PostgreSQL, GB18030 CSV drops, XLSX
exports), and writes ``truth/`` and ``manifest.json``. The layout is docs/simulators.md's.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from schemas.contract import Contract, ContractField, packaged_contracts
from simulators.conflicts import FIELDS, conflict_counts, find_conflicts, plant_conflicts
from simulators.dirty import (
    BIT,
    DEFAULT_RATES,
    DirtyRates,
    dirty_ids,
    dirty_names,
    dirty_phones,
    duplicate_positions,
    excel_serials,
    format_times,
    kinds_text,
    source_dates,
)
from simulators.population import (
    AS_OF,
    TRUTH_COLUMNS,
    build_population,
    build_services,
    cursor_times,
    padded,
    stage_rng,
    years_of,
)
from simulators.writers import (
    SqlTable,
    public_url,
    write_csv_drop,
    write_parquet,
    write_postgres,
    write_sqlite,
    write_xlsx,
)

Progress = Callable[[str, int, int], None]

HTTP_DATASETS = ("gongan.hukou", "gongan.migrant", "renshe.employment", "renshe.insurance")
SQL_DATASETS = {"sifa": ("sifa.corrections",), "minzheng": ("minzheng.dibao", "minzheng.relief")}
CSV_DATASET = "jisheng.births"
XLSX_DATASET = "canlian.disability"
DATASETS = (
    *HTTP_DATASETS,
    "sifa.corrections",
    "minzheng.dibao",
    "minzheng.relief",
    CSV_DATASET,
    XLSX_DATASET,
)
HTTP_ENDPOINTS = {
    "gongan.hukou": ("gongan", "/api/v1/hukou"),
    "gongan.migrant": ("gongan", "/api/v1/migrant"),
    "renshe.employment": ("renshe", "/rs/employment"),
    "renshe.insurance": ("renshe", "/rs/insurance"),
}
DRIFT_COLUMN = "父亲联系电话"  # undeclared in the births contract: schema drift
DROP_DAYS = 7
XLSX_SHEET = "残疾人证"
XLSX_EXPORTS = (date(2026, 8, 31), date(2026, 9, 30), date(2026, 10, 31))
_OUTPUTS = ("http", "sql", "drops", "exports", "truth", "manifest.json")

_MF = {"1": "男", "2": "女"}


@dataclass(frozen=True)
class SourceStyle:
    """How one department writes its records: date style, code labels and cursor format."""

    date_style: str  # one of dirty.DATE_STYLES
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # hub field -> canonical -> source text
    cursor_separator: str = "T"  # 'YYYY-MM-DDTHH:MM:SS' for REST, a space for SQL tables


SQL_TIME = " "
SOURCE_STYLES: dict[str, SourceStyle] = {
    "gongan.hukou": SourceStyle("compact"),
    "gongan.migrant": SourceStyle("compact"),
    "renshe.employment": SourceStyle("iso", {"sex": {"1": "M", "2": "F"}}),
    "renshe.insurance": SourceStyle("iso"),
    "sifa.corrections": SourceStyle("cn", {"sex": _MF}, SQL_TIME),
    "minzheng.dibao": SourceStyle("iso", {}, SQL_TIME),
    "minzheng.relief": SourceStyle("slash", {}, SQL_TIME),
    "jisheng.births": SourceStyle("slash", {"child_sex": _MF}),
    "canlian.disability": SourceStyle(
        "iso", {"sex": _MF, "disability_level": {"1": "一级", "2": "二级", "3": "三级", "4": "四级"}}
    ),
}


@dataclass(frozen=True)
class GenerateSummary:
    """What ``generate`` wrote: source rows per dataset, truth sizes and timings per stage."""

    out: Path
    seed: int
    residents: int
    rows: dict[str, int]
    truth_records: int
    seconds: float
    stage_seconds: dict[str, float]
    conflicts: dict[str, int] = field(default_factory=dict)  # truth/conflicts.parquet rows per rule


@dataclass
class Rendered:
    """One dataset as its source holds it, with the person and dirt behind each row."""

    frame: pd.DataFrame
    person: np.ndarray
    marks: np.ndarray
    copy_of: np.ndarray  # for exact file duplicates: row position of the original, else -1


def _field_values(f: ContractField, facts: pd.DataFrame, people: pd.DataFrame, idx: np.ndarray) -> pd.Series:
    """A field's clean values: from the facts by hub name, else from the person's attributes."""
    if f.name in facts.columns:
        return facts[f.name].reset_index(drop=True)
    attr = f.unified.split(".", 1)[1] if f.unified.startswith("person.") else f.name
    if attr not in people.columns:
        raise KeyError(f"no synthetic value for field '{f.source}'")
    return people[attr].iloc[idx].reset_index(drop=True)


def _money_text(values: pd.Series) -> pd.Series:
    """Amounts as fixed two-decimal text ("735.00"); missing stays missing."""
    numbers = values.to_numpy(dtype=float, na_value=np.nan)
    missing = np.isnan(numbers)
    cents = np.round(np.where(missing, 0.0, numbers) * 100).astype(np.int64)
    return (padded(cents // 100) + "." + padded(cents % 100, 2)).where(pd.Series(~missing))


def render(
    contract: Contract,
    facts: pd.DataFrame,
    people: pd.DataFrame,
    rng: np.random.Generator,
    rates: DirtyRates,
    system: str,
) -> Rendered:
    """Render clean facts into source rows (contract source names), injecting dirt; no duplicates yet."""
    style = SOURCE_STYLES[contract.dataset]
    n = len(facts)
    idx = facts["person"].to_numpy()
    marks = np.zeros(n, dtype=np.int64)
    alt = np.where(rng.random(n) < rates.date_format, rng.integers(0, 3, n), -1)
    excel = (rng.random(n) < rates.excel_serial) if system == "xlsx" else np.zeros(n, dtype=bool)
    alt[excel] = -1
    has_date = np.zeros(n, dtype=bool)
    columns: dict[str, pd.Series] = {}
    for f in contract.fields:
        values = _field_values(f, facts, people, idx)
        if f.type == "date":
            days = values.to_numpy(dtype="datetime64[D]")
            has_date |= ~np.isnat(days)
            text = source_dates(days, style.date_style, alt)
            if system == "xlsx":
                cells = text.astype(object).to_numpy(copy=True)
                serial = excel & ~np.isnat(days)
                cells[serial] = excel_serials(days[serial]).tolist()
                columns[f.source] = pd.Series(cells, dtype=object)
                continue
            columns[f.source] = text
        elif f.type == "datetime":
            columns[f.source] = format_times(values.to_numpy(dtype="datetime64[s]"), style.cursor_separator)
        elif f.type == "decimal":
            columns[f.source] = _money_text(values)
        elif f.type == "integer":
            columns[f.source] = padded(values.to_numpy(dtype=np.int64))
        else:
            text = values.astype("string")
            if f.name in style.labels:
                text = text.map(style.labels[f.name]).astype("string")
            columns[f.source] = text
        if f.unified == "person.id_number":
            birth = people["birth_date"].to_numpy(dtype="datetime64[D]")[idx]
            columns[f.source], m = dirty_ids(columns[f.source], birth, rng, rates)
            marks |= m
        elif f.unified == "person.name":
            columns[f.source], m = dirty_names(columns[f.source], rng, rates)
            marks |= m
        elif f.unified == "person.phone":
            columns[f.source], m = dirty_phones(columns[f.source], rng, rates)
            marks |= m
    marks[(alt >= 0) & has_date] |= BIT["date_format"]
    marks[excel & has_date] |= BIT["excel_serial"]
    frame = pd.DataFrame(columns)
    return Rendered(frame, idx.copy(), marks, np.full(n, -1))


def _next_ids(existing: pd.Series, k: int) -> pd.Series:
    """k new record numbers continuing a ``PREFIX + zero-padded number`` sequence."""
    if k == 0 or existing.empty:
        return pd.Series([], dtype="string")
    first = str(existing.iloc[0])
    prefix = first.rstrip("0123456789")
    digits = pc.utf8_slice_codeunits(pa.array(existing.array), len(prefix)).cast(pa.int64())
    start = int(pc.max(digits).as_py()) + 1
    return prefix + padded(start + np.arange(k), len(first) - len(prefix))


def order_by(frame: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """Row positions that sort the frame by the given text columns (Arrow sort, missing last)."""
    table = pa.table({k: pa.array(frame[k].array).cast(pa.large_string()) for k in keys})
    return pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]).to_numpy()


def with_second_records(
    facts: pd.DataFrame, rate: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray]:
    """Register ~rate of the records twice: same person and facts, a new record id and update time.

    Returns the facts in (updated_at, record_id) order, the order servers and tables present, and
    a flag per row for the second records.
    """
    pos = duplicate_positions(len(facts), rate, rng)
    copies = facts.iloc[pos].copy()
    copies["record_id"] = _next_ids(facts["record_id"], len(pos)).to_numpy()
    copies["updated_at"] = cursor_times(len(pos), rng)
    both = pd.concat([facts, copies], ignore_index=True)
    second = np.concatenate([np.zeros(len(facts), dtype=bool), np.ones(len(pos), dtype=bool)])
    keys = pa.table(
        {
            "t": pa.array(both["updated_at"].to_numpy(dtype="datetime64[s]").astype(np.int64)),
            "id": pa.array(both["record_id"].array).cast(pa.large_string()),
        }
    )
    order = pc.sort_indices(keys, sort_keys=[("t", "ascending"), ("id", "ascending")]).to_numpy()
    return both.iloc[order].reset_index(drop=True), second[order]


def with_exact_copies(r: Rendered, rate: float, rng: np.random.Generator) -> Rendered:
    """Repeat ~rate of the rows verbatim, as file exports do; the copies go after the originals."""
    pos = duplicate_positions(len(r.frame), rate, rng)
    if not len(pos):
        return r
    marks = r.marks.copy()
    marks[pos] |= BIT["duplicate"]
    return Rendered(
        pd.concat([r.frame, r.frame.iloc[pos]], ignore_index=True),
        np.concatenate([r.person, r.person[pos]]),
        np.concatenate([marks, marks[pos]]),
        np.concatenate([r.copy_of, pos]),
    )


def conflict_view(contract: Contract, facts: pd.DataFrame, people: pd.DataFrame) -> pd.DataFrame:
    """The clean values the conflict rules read (conflicts.FIELDS), with the true person of each record."""
    idx = facts["person"].to_numpy()
    view = {
        "record_id": facts["record_id"].reset_index(drop=True).astype("string"),
        "person_id": people["person_id"].iloc[idx].reset_index(drop=True).astype("string"),
    }
    for name in FIELDS[contract.dataset]:
        values = _field_values(contract.field(name), facts, people, idx)
        if values.dtype.kind == "M":
            values = values.dt.strftime("%Y-%m-%d")
        view[name] = values.astype("string")
    return pd.DataFrame(view)


def _truth_records(dataset: str, contract: Contract, r: Rendered, people: pd.DataFrame) -> pd.DataFrame:
    """One truth row per distinct source record: who it is and which dirt it carries."""
    keep = r.copy_of < 0
    return pd.DataFrame(
        {
            "dataset": pd.Series(dataset, index=range(int(keep.sum())), dtype="string"),
            "record_id": r.frame[contract.primary_key[0]][keep].reset_index(drop=True).astype("string"),
            "person_id": people["person_id"].iloc[r.person[keep]].reset_index(drop=True),
            "dirty": kinds_text(r.marks[keep]),
        }
    )


def _write_births(
    r: Rendered,
    facts: pd.DataFrame,
    contract: Contract,
    out: Path,
    rates: DirtyRates,
    rng: np.random.Generator,
) -> tuple[dict[str, object], Rendered, dict[str, object], list[dict[str, object]]]:
    """Spread births records over 7 daily GB18030 drops; later drops grow the drift column; one is cut."""
    days = [AS_OF.date() - timedelta(days=DROP_DAYS - i) for i in range(DROP_DAYS)]
    n = len(facts)
    child_birth = facts["child_birth_date"].to_numpy(dtype="datetime64[D]")
    drop = rng.integers(0, DROP_DAYS, n)
    # A child cannot be registered before it is born: push such records to a later drop.
    first_possible = np.searchsorted(np.array(days, dtype="datetime64[D]"), child_birth, side="left")
    drop = np.maximum(drop, np.minimum(first_possible, DROP_DAYS - 1))
    # Rows [0, n) are the originals in facts order; exact copies after them go into their original's drop.
    row_drop = np.concatenate([drop, drop[r.copy_of[n:]]])
    father_phone = facts["father_phone"].reset_index(drop=True)
    phone_of_row = np.where(r.copy_of >= 0, r.copy_of, np.arange(len(r.frame)))
    drift_from = DROP_DAYS - 3 if rates.drift else DROP_DAYS
    bom = rng.random(DROP_DAYS) < rates.bom_drop
    sizes = np.bincount(row_drop, minlength=DROP_DAYS)
    candidates = [i for i in range(DROP_DAYS - 1) if sizes[i] >= 2]
    n_corrupt = min(rates.corrupt_drops, len(candidates))
    corrupt = set(rng.choice(candidates, n_corrupt, replace=False).tolist()) if n_corrupt else set()
    files: list[str] = []
    corrupted: list[dict[str, object]] = []
    marks = r.marks.copy()
    pk = contract.primary_key[0]
    for i, day in enumerate(days):
        rows = np.flatnonzero(row_drop == i)
        # Record-number order; a duplicate follows its original (stable sort keeps originals first).
        rows = rows[order_by(r.frame.iloc[rows], [pk])]
        frame = r.frame.iloc[rows].reset_index(drop=True)
        if i >= drift_from:
            frame[DRIFT_COLUMN] = father_phone.iloc[phone_of_row[rows]].reset_index(drop=True)
            marks[rows] |= BIT["drift"]
        name = f"births_{day:%Y%m%d}.csv"
        result = write_csv_drop(
            out / "drops" / "jisheng" / name, frame, bool(bom[i]), rng if i in corrupt else None
        )
        if result.corrupted:
            lost = rows[result.intact_rows :]
            marks[lost] |= BIT["truncated"]
            corrupted.append(
                {
                    "dataset": CSV_DATASET,
                    "file": f"drops/jisheng/{name}",
                    "kind": "truncated mid-character, binary garbage appended",
                    "intact_rows": result.intact_rows,
                    "rows": result.rows,
                }
            )
        files.append(name)
    # A truncated copy marks its original too: the truth row stands for both.
    for row in np.flatnonzero((r.copy_of >= 0) & (marks & BIT["truncated"] > 0)):
        marks[r.copy_of[row]] |= BIT["truncated"]
    drift: dict[str, object] = {"columns": [DRIFT_COLUMN], "files": files[drift_from:]} if rates.drift else {}
    location: dict[str, object] = {
        "dir": "drops/jisheng",
        "encoding": contract.encoding or "gb18030",
        "files": files,
    }
    return location, Rendered(r.frame, r.person, marks, r.copy_of), drift, corrupted


def _write_disability(r: Rendered, facts: pd.DataFrame, out: Path) -> dict[str, object]:
    """Monthly XLSX exports: the first holds everything issued before it, the next ones what came after."""
    issued = facts["issued_on"].to_numpy(dtype="datetime64[D]")
    n = len(facts)
    cut = np.array(XLSX_EXPORTS, dtype="datetime64[D]")
    export = np.minimum(np.searchsorted(cut, issued, side="left"), len(cut) - 1)
    row_export = np.concatenate([export, export[r.copy_of[n:]]]) if len(r.frame) > n else export
    files = []
    for i, day in enumerate(XLSX_EXPORTS):
        rows = np.flatnonzero(row_export == i)
        rows = rows[order_by(r.frame.iloc[rows], ["残疾人证号"])]
        name = f"disability_{day:%Y%m%d}.xlsx"
        write_xlsx(out / "exports" / "canlian" / name, r.frame.iloc[rows].reset_index(drop=True), XLSX_SHEET)
        files.append(name)
    return {"dir": "exports/canlian", "sheet": XLSX_SHEET, "files": files}


def _clear(out: Path) -> None:
    """Remove what an earlier run wrote (never anything else in DIR), so reruns are byte-identical."""
    for name in _OUTPUTS:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _truth_persons(people: pd.DataFrame) -> pa.Table:
    """The truth persons table with calendar dates (date32) for birth and death."""
    table = pa.Table.from_pandas(people.loc[:, list(TRUTH_COLUMNS)], preserve_index=False)
    for col in ("birth_date", "death_date"):
        days = pa.array(people[col].to_numpy(dtype="datetime64[D]"))
        table = table.set_column(table.schema.get_field_index(col), col, days)
    return table


def generate(
    out: Path,
    residents: int = 20_000,
    seed: int = 1,
    sql_url: str | None = None,
    rates: DirtyRates | None = None,
    progress: Progress | None = None,
) -> GenerateSummary:
    """Write DIR (sim_layout.md): the nine source datasets, truth/ and manifest.json; deterministic per seed.

    ``progress(stage, done, total)`` is called before each stage with the number of stages done,
    and once at the end with done == total.
    """
    rates = rates or DEFAULT_RATES
    out = Path(out)
    contracts = packaged_contracts()
    stages = ["population", "services", *DATASETS, "truth"]
    timings: dict[str, float] = {}
    started = time.perf_counter()
    clock, current = started, ""

    def step(stage: str) -> None:
        """Close the running stage's timing, report progress, start the next stage."""
        nonlocal clock, current
        now = time.perf_counter()
        if current:
            timings[current] = now - clock
        clock, current = now, stage
        if progress:
            progress(stage, len(timings), len(stages))

    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    step("population")
    people = build_population(residents, seed)
    step("services")
    facts = plant_conflicts(people, build_services(people, seed), seed)
    views: dict[str, pd.DataFrame] = {}

    rendered: dict[str, Rendered] = {}
    datasets_meta: dict[str, dict[str, object]] = {}
    truth_parts: list[pd.DataFrame] = []
    drift: dict[str, object] = {}
    corrupted: list[dict[str, object]] = []
    sql_frames: dict[str, list[SqlTable]] = {}
    for dataset in DATASETS:
        step(dataset)
        contract = contracts[dataset]
        rng = stage_rng(seed, f"render:{dataset}")
        system = {"http_cursor": "http", "http_offset": "http"}.get(contract.interface, contract.interface)
        if system in ("http", "sql"):
            source_facts, second = with_second_records(facts[dataset], rates.duplicate, rng)
            if dataset in FIELDS:
                views[dataset] = conflict_view(contract, source_facts, people)
            r = render(contract, source_facts, people, rng, rates, system)
            r.marks[second] |= BIT["duplicate"]
        else:
            if dataset in FIELDS:
                views[dataset] = conflict_view(contract, facts[dataset], people)
            r = with_exact_copies(
                render(contract, facts[dataset], people, rng, rates, system), rates.duplicate, rng
            )
        location: dict[str, object]
        if system == "http":
            write_parquet(r.frame, out / "http" / f"{dataset}.parquet")
            server, endpoint = HTTP_ENDPOINTS[dataset]
            location = {"path": f"http/{dataset}.parquet", "server": server, "endpoint": endpoint}
        elif system == "sql":
            schema = contract.department
            assert contract.table is not None
            sql_frames.setdefault(schema, []).append(
                SqlTable(contract.table, r.frame, contract.primary_key, contract.cursor)
            )
            if sql_url:
                location = {"url": public_url(sql_url), "schema": schema, "table": contract.table}
            else:
                db = (out / "sql" / f"{schema}.sqlite").resolve()
                location = {"url": f"sqlite:///{db}", "schema": None, "table": contract.table}
            if dataset == SQL_DATASETS[schema][-1]:
                if sql_url:
                    write_postgres(sql_url, schema, sql_frames[schema])
                else:
                    write_sqlite(out / "sql" / f"{schema}.sqlite", sql_frames[schema])
        elif system == "csv":
            location, r, drift_info, corrupted = _write_births(r, facts[dataset], contract, out, rates, rng)
            if drift_info:
                drift[dataset] = drift_info
        else:
            location = _write_disability(r, facts[dataset], out)
        rendered[dataset] = r
        datasets_meta[dataset] = {"system": system, "rows": len(r.frame), "location": location}
        truth_parts.append(_truth_records(dataset, contract, r, people))

    step("truth")
    (out / "truth").mkdir(parents=True, exist_ok=True)
    write_parquet(_truth_persons(people), out / "truth" / "persons.parquet")
    records = pd.concat(truth_parts, ignore_index=True)
    write_parquet(records, out / "truth" / "records.parquet")
    birth_years = pd.Series(years_of(people["birth_date"].to_numpy(dtype="datetime64[D]")), index=people["person_id"])
    conflicts = find_conflicts(views, birth_years)
    write_parquet(conflicts, out / "truth" / "conflicts.parquet")
    manifest = {
        "seed": seed,
        "residents": residents,
        "as_of": AS_OF.isoformat(),
        "dirty_rates": rates.as_dict(),
        "datasets": datasets_meta,
        "drift": drift,
        "corrupted": corrupted,
    }
    (out / "manifest.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    step("done")
    return GenerateSummary(
        out=out,
        seed=seed,
        residents=residents,
        rows={d: int(m["rows"]) for d, m in datasets_meta.items()},  # type: ignore[call-overload]
        truth_records=len(records),
        seconds=time.perf_counter() - started,
        stage_seconds=timings,
        conflicts=conflict_counts(conflicts),
    )
