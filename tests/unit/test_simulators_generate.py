"""generate(): the DIR layout, byte-identical reruns, every format read back, and the ground truth."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import load_workbook

from schemas.contract import packaged_contracts
from schemas.id_number import is_valid, normalise_series
from simulators.dirty import KINDS, DirtyRates
from simulators.generate import DRIFT_COLUMN, HTTP_DATASETS, XLSX_SHEET, generate
from simulators.writers import GB18030_BOM

CONTRACTS = packaged_contracts()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    generate(out, residents=4000, seed=11)
    return out


@pytest.fixture(scope="module")
def manifest(sim: Path) -> dict:
    return json.loads((sim / "manifest.json").read_text(encoding="utf-8"))


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _csv_text(path: Path) -> str:
    text = path.read_bytes().decode("gb18030")
    return text.removeprefix("\ufeff")


def _read_drop(path: Path) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(_csv_text(path)), dtype="string", keep_default_na=False, na_values=[""])


def _read_xlsx(path: Path) -> tuple[list[str], list[tuple]]:
    sheet = load_workbook(path, read_only=True)[XLSX_SHEET]
    rows = list(sheet.iter_rows(values_only=True))
    return [str(c) for c in rows[0]], rows[1:]


def _sources(sim: Path, manifest: dict) -> dict[str, pd.DataFrame]:
    """Every dataset read back through its own format (intact CSV rows only)."""
    out: dict[str, pd.DataFrame] = {}
    corrupt = {c["file"] for c in manifest["corrupted"]}
    for dataset, meta in manifest["datasets"].items():
        loc = meta["location"]
        if meta["system"] == "http":
            out[dataset] = pd.read_parquet(sim / loc["path"])
        elif meta["system"] == "sql":
            con = sqlite3.connect(loc["url"].removeprefix("sqlite:///"))
            out[dataset] = pd.read_sql(f'SELECT * FROM "{loc["table"]}"', con, dtype="string")
            con.close()
        elif meta["system"] == "csv":
            frames = [
                _read_drop(sim / loc["dir"] / f) for f in loc["files"] if f"{loc['dir']}/{f}" not in corrupt
            ]
            out[dataset] = pd.concat(frames, ignore_index=True)
        else:
            parts = []
            for f in loc["files"]:
                header, rows = _read_xlsx(sim / loc["dir"] / f)
                parts.append(pd.DataFrame(rows, columns=header, dtype=object))
            out[dataset] = pd.concat(parts, ignore_index=True)
    return out


def test_layout_and_manifest(sim: Path, manifest: dict) -> None:
    assert manifest["seed"] == 11 and manifest["residents"] == 4000
    assert manifest["as_of"] == "2026-11-01T00:00:00"
    assert set(manifest["datasets"]) == set(CONTRACTS)
    assert manifest["dirty_rates"]["duplicate"] == DirtyRates().duplicate
    for dataset in HTTP_DATASETS:
        assert (sim / "http" / f"{dataset}.parquet").is_file()
    assert (sim / "sql" / "sifa.sqlite").is_file() and (sim / "sql" / "minzheng.sqlite").is_file()
    drops = sorted((sim / "drops" / "jisheng").glob("births_*.csv"))
    assert [p.name for p in drops] == [f"births_202610{d}.csv" for d in range(25, 32)]
    assert len(list((sim / "exports" / "canlian").glob("disability_*.xlsx"))) == 3
    assert (sim / "truth" / "persons.parquet").is_file() and (sim / "truth" / "records.parquet").is_file()
    dibao = manifest["datasets"]["minzheng.dibao"]["location"]
    assert dibao == {
        "url": f"sqlite:///{(sim / 'sql' / 'minzheng.sqlite').resolve()}",
        "schema": None,
        "table": "dibao_member",
    }


def test_same_seed_byte_identical_other_seed_different(tmp_path: Path) -> None:
    first = tmp_path / "a"
    calls: list[tuple[str, int, int]] = []
    generate(first, residents=2000, seed=5, progress=lambda s, d, t: calls.append((s, d, t)))
    before = _hashes(first)
    generate(first, residents=2000, seed=5)
    assert _hashes(first) == before
    generate(tmp_path / "b", residents=2000, seed=6)
    other = _hashes(tmp_path / "b")
    assert set(other) == set(before)
    assert all(other[name] != digest for name, digest in before.items())
    assert [d for _s, d, _t in calls] == sorted(d for _s, d, _t in calls)
    assert calls[-1][1] == calls[-1][2] == len(calls) - 1


def test_every_dataset_has_its_contract_columns_in_every_format(sim: Path, manifest: dict) -> None:
    for dataset, meta in manifest["datasets"].items():
        names = list(CONTRACTS[dataset].source_names)
        loc = meta["location"]
        if meta["system"] == "http":
            frame = pd.read_parquet(sim / loc["path"])
            assert list(frame.columns) == names, dataset
            assert all(str(t) == "string" for t in frame.dtypes), dataset
        elif meta["system"] == "sql":
            con = sqlite3.connect(loc["url"].removeprefix("sqlite:///"))
            cols = [r[1] for r in con.execute(f'PRAGMA table_info("{loc["table"]}")')]
            types = {r[2] for r in con.execute(f'PRAGMA table_info("{loc["table"]}")')}
            indexes = [r[1] for r in con.execute(f'PRAGMA index_list("{loc["table"]}")')]
            con.close()
            assert cols == names and types == {"TEXT"}, dataset
            assert f"ix_{loc['table']}_cursor" in indexes
        elif meta["system"] == "csv":
            drifted = set(manifest["drift"][dataset]["files"])
            corrupt = {c["file"] for c in manifest["corrupted"]}
            for f in loc["files"]:
                path = sim / loc["dir"] / f
                if f"{loc['dir']}/{f}" in corrupt:
                    continue
                header = list(_read_drop(path).columns)
                assert header == names + ([DRIFT_COLUMN] if f in drifted else []), f
        else:
            for f in loc["files"]:
                header, _rows = _read_xlsx(sim / loc["dir"] / f)
                assert header == names, f
        assert meta["rows"] >= 0


def test_http_rows_sorted_by_cursor_then_key(sim: Path) -> None:
    for dataset in HTTP_DATASETS:
        contract = CONTRACTS[dataset]
        frame = pd.read_parquet(sim / "http" / f"{dataset}.parquet")
        cursor = frame[contract.cursor]
        assert cursor.str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d").all()
        assert (cursor < "2026-11-01T00:00:00").all()
        keys = list(zip(cursor, frame[contract.primary_key[0]], strict=True))
        assert keys == sorted(keys)
        assert frame[contract.primary_key[0]].is_unique


def test_sql_cursor_is_text_timestamp(sim: Path, manifest: dict) -> None:
    con = sqlite3.connect(sim / "sql" / "minzheng.sqlite")
    stamps = [r[0] for r in con.execute("SELECT updated_at FROM dibao_member")]
    con.close()
    assert stamps and all(len(s) == 19 and s[10] == " " for s in stamps)


def test_truth_traces_every_source_record_to_a_person(sim: Path, manifest: dict) -> None:
    persons = pd.read_parquet(sim / "truth" / "persons.parquet")
    records = pd.read_parquet(sim / "truth" / "records.parquet")
    assert list(records.columns) == ["dataset", "record_id", "person_id", "dirty"]
    assert not records.duplicated(["dataset", "record_id"]).any()
    assert records["person_id"].isin(persons["person_id"]).all()
    for dataset, frame in _sources(sim, manifest).items():
        pk = CONTRACTS[dataset].primary_key[0]
        truth_ids = set(records.loc[records["dataset"] == dataset, "record_id"])
        source_ids = set(frame[pk].astype(str))
        assert source_ids <= truth_ids, dataset
        if manifest["datasets"][dataset]["system"] != "csv":  # a corrupted drop loses rows on purpose
            assert source_ids == truth_ids, dataset
        assert len(frame) == manifest["datasets"][dataset]["rows"] or dataset == "jisheng.births"


def test_clean_ids_match_truth_and_bad_ones_fail(sim: Path, manifest: dict) -> None:
    persons = pd.read_parquet(sim / "truth" / "persons.parquet").set_index("person_id")
    records = pd.read_parquet(sim / "truth" / "records.parquet")
    assert persons["id_number"].map(is_valid).all()
    sources = _sources(sim, manifest)
    seen = {"bad_check": 0, "missing_id": 0}
    for dataset, frame in sources.items():
        contract = CONTRACTS[dataset]
        id_col = next(f.source for f in contract.fields if f.unified == "person.id_number")
        pk = contract.primary_key[0]
        truth = records[records["dataset"] == dataset].set_index("record_id")
        rows = frame.drop_duplicates(pk).set_index(frame.drop_duplicates(pk)[pk].astype(str))
        kinds = truth.loc[rows.index, "dirty"].fillna("")
        value = normalise_series(rows[id_col].astype("string"))
        expected = persons.loc[truth.loc[rows.index, "person_id"], "id_number"].to_numpy()
        id_kinds = kinds.str.contains("missing_id|bad_check")
        assert (value[~id_kinds.to_numpy()].to_numpy() == expected[~id_kinds.to_numpy()]).all(), dataset
        for kind in seen:
            hit = kinds.str.split(",").map(lambda ks, k=kind: k in ks).to_numpy()
            seen[kind] += int(hit.sum())
            assert not any(is_valid(v) for v in value[hit].fillna("")), (dataset, kind)
            if kind == "missing_id":
                assert value[hit].isna().all()
    assert seen["bad_check"] > 0 and seen["missing_id"] > 0


def test_dirty_kinds_are_recorded(sim: Path) -> None:
    records = pd.read_parquet(sim / "truth" / "records.parquet")
    kinds = set(",".join(records["dirty"]).split(",")) - {""}
    assert kinds == set(KINDS)  # every kind shows up at the default rates
    assert 0.8 < (records["dirty"] == "").mean() < 0.95


def test_every_date_style_appears(sim: Path, manifest: dict) -> None:
    sources = _sources(sim, manifest)
    text = pd.concat(
        [
            sources["gongan.hukou"]["csrq"],
            sources["sifa.corrections"]["qsrq"],
            sources["minzheng.relief"]["birth_date"],
            sources["renshe.insurance"]["startDate"],
        ]
    )
    assert text.str.fullmatch(r"\d{8}").any()
    assert text.str.fullmatch(r"\d{4}-\d\d-\d\d").any()
    assert text.str.fullmatch(r"\d{4}/\d{1,2}/\d{1,2}").any()
    assert text.str.fullmatch(r"\d{4}年\d{1,2}月\d{1,2}日").any()


def test_xlsx_has_serial_and_text_dates_and_fixed_zip_times(sim: Path, manifest: dict) -> None:
    loc = manifest["datasets"]["canlian.disability"]["location"]
    kinds: set[type] = set()
    for f in loc["files"]:
        path = sim / loc["dir"] / f
        header, rows = _read_xlsx(path)
        col = header.index("发证日期")
        kinds |= {type(r[col]) for r in rows}
        with zipfile.ZipFile(path) as zf:
            assert {i.date_time for i in zf.infolist()} == {(2026, 11, 1, 0, 0, 0)}
            core = zf.read("docProps/core.xml").decode()
            assert "2026-11-01T00:00:00Z" in core
    assert {int, str} <= kinds


def test_csv_drops_bom_drift_and_corruption(sim: Path, manifest: dict) -> None:
    loc = manifest["datasets"]["jisheng.births"]["location"]
    assert loc["encoding"] == "gb18030"
    heads = [(sim / loc["dir"] / f).read_bytes()[:4] for f in loc["files"]]
    assert GB18030_BOM == b"\x84\x31\x95\x33"
    assert any(h == GB18030_BOM for h in heads) and any(h != GB18030_BOM for h in heads)
    drift = manifest["drift"]["jisheng.births"]
    assert drift["columns"] == [DRIFT_COLUMN] and 0 < len(drift["files"]) < len(loc["files"])
    (bad,) = manifest["corrupted"]
    raw = (sim / bad["file"]).read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("gb18030")
    lines = raw.decode("gb18030", errors="replace").removeprefix("\ufeff").split("\r\n")
    assert 0 < bad["intact_rows"] < bad["rows"]
    assert all("\ufffd" not in line for line in lines[: bad["intact_rows"] + 1])


def test_clean_rates_give_clean_sources(tmp_path: Path) -> None:
    generate(tmp_path, residents=1500, seed=2, rates=DirtyRates.clean())
    records = pd.read_parquet(tmp_path / "truth" / "records.parquet")
    assert (records["dirty"] == "").all()
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["corrupted"] == [] and manifest["drift"] == {}
    hukou = pd.read_parquet(tmp_path / "http" / "gongan.hukou.parquet")
    assert hukou["gmsfhm"].map(is_valid).all()
