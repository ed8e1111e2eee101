"""CSV and XLSX drop clients on real files: encodings, broken files set aside whole, ingest once by hash."""

from __future__ import annotations

import codecs
import csv
import io
import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import Workbook

from connectors.chunk import SOURCE_POSITION, SourceChunk
from connectors.files import GB18030_BOM, CsvSource, FileDropSource, RejectFile, XlsxSource, decode_text
from connectors.state import StateStore
from schemas.conform import conform
from schemas.contract import get_contract
from simulators.advance import advance
from simulators.generate import generate

BIRTHS = "jisheng.births"
DISABILITY = "canlian.disability"


def _births_csv(rows: int, start: int = 0) -> str:
    """A births drop as text (synthetic, no real people): header = contract source names."""
    contract = get_contract(BIRTHS)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(contract.source_names)
    for i in range(start, start + rows):
        values = {f.source: f"{f.label}{i}" for f in contract.fields}
        values.update({"记录编号": f"JS{i:08d}", "婴儿性别": "女", "孩次": "01", "婴儿身份证号": ""})
        writer.writerow([values[name] for name in contract.source_names])
    return out.getvalue()


def _drop(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _names(chunks: list[SourceChunk], last_only: bool = False) -> list[str]:
    """File names of the chunks (of each file's last chunk with ``last_only``)."""
    return [c.file.name for c in chunks if c.file is not None and (c.ends_file or not last_only)]


def _frames(chunks: list[SourceChunk]) -> dict[str, pd.DataFrame]:
    """Rows per file name, checking each file's last chunk is marked."""
    by_file: dict[str, list[pd.DataFrame]] = {}
    for chunk in chunks:
        assert chunk.file is not None
        by_file.setdefault(chunk.file.name, []).append(chunk.frame)
    assert _names(chunks, last_only=True) == list(by_file)
    return {name: pd.concat(frames) for name, frames in by_file.items()}


def test_encodings_are_detected_and_broken_files_set_aside_whole(tmp_path: Path) -> None:
    text = _births_csv(3)
    _drop(tmp_path, "births_20261020.csv", GB18030_BOM + text.encode("gb18030"))
    _drop(tmp_path, "births_20261021.csv", text.encode("gb18030"))
    _drop(tmp_path, "births_20261022.csv", text.encode("utf-8"))
    _drop(tmp_path, "births_20261023.csv", codecs.BOM_UTF8 + _births_csv(2, start=10).encode("utf-8"))
    good = _births_csv(40, start=100).encode("gb18030")
    cut = good.index("母亲姓名120".encode("gb18030")) + 1  # inside a two-byte character
    _drop(tmp_path, "births_20261024.csv", good[:cut] + b"\xff\x80\x7f\xfe\x81\x30" * 8)
    _drop(tmp_path, "births_20261025.csv", text.encode("gb18030") + b"\x00\x01\x02binary\x00\r\n")
    _drop(tmp_path, "births_20261026.csv", (text + "JS99,only,three\r\n").encode("gb18030"))
    _drop(tmp_path, "births_20261027.csv", text.split("\r\n", 1)[1].encode("gb18030"))  # no header line
    _drop(tmp_path, "notes.txt", b"not a drop")
    state = StateStore(f"sqlite:///{tmp_path / 'hub.db'}")

    source = CsvSource(BIRTHS, tmp_path, state=state, chunk_rows=2)
    frames = _frames(list(source.read()))

    # a drop cut off mid-write gives its whole lines before the bad bytes (rows 100-119), and is set aside
    assert list(frames) == [f"births_202610{d}.csv" for d in (20, 21, 22, 23, 24)]
    cut = frames.pop("births_20261024.csv")
    assert cut["记录编号"].tolist() == [f"JS{n:08d}" for n in range(100, 120)]
    assert cut[SOURCE_POSITION].tolist()[-1] == "births_20261024.csv line 21"
    for name, frame in frames.items():
        assert list(frame.columns) == [*get_contract(BIRTHS).source_names, SOURCE_POSITION]
        assert frame["母亲姓名"].str.startswith("母亲姓名").all(), name  # decoded, BOM gone from the header
    first = frames["births_20261020.csv"]
    assert first["孩次"].tolist() == ["01"] * 3  # text as written: leading zero kept
    assert first["婴儿身份证号"].isna().all()  # an empty field is a missing value
    assert first[SOURCE_POSITION].tolist() == [f"births_20261020.csv line {n}" for n in (2, 3, 4)]
    assert all(str(t) == "string" for t in first.dtypes)

    reasons = {r.name: r.reason for r in source.rejected}
    assert reasons == {
        "births_20261024.csv": "undecodable bytes at line 22 (not UTF-8 or GB18030); "
        "the 20 rows before line 22 were ingested, the rest is set aside",
        "births_20261025.csv": "binary content (control characters) at line 5",
        "births_20261026.csv": "ragged rows: 1 row(s) do not have 10 fields, first at line 5 (3 fields)",
        "births_20261027.csv": "missing header: no primary key column ['记录编号']",
    }
    recorded = {f.file_name: (f.status, f.reason) for f in state.files(BIRTHS)}
    assert recorded == {name: ("rejected", reason) for name, reason in reasons.items()}


def test_a_file_is_ingested_once_by_content(tmp_path: Path) -> None:
    drops = tmp_path / "drops"
    drops.mkdir()
    state = StateStore(f"sqlite:///{tmp_path / 'hub.db'}")
    _drop(drops, "births_20261020.csv", _births_csv(3).encode("gb18030"))
    _drop(drops, "births_20261020_resent.csv", _births_csv(3).encode("gb18030"))  # same bytes, new name

    source = CsvSource.from_location(BIRTHS, str(drops / "births_*.csv"), state=state)
    chunks = list(source.read())
    assert _names(chunks) == ["births_20261020.csv"]
    assert [s.name for s in source.skipped] == ["births_20261020_resent.csv"]
    for chunk in chunks:  # the caller records a file only after staging it durably
        assert chunk.file is not None and chunk.ends_file
        state.record_file(BIRTHS, chunk.file.sha256, chunk.file.name, "ingested")

    _drop(drops, "births_20261021.csv", _births_csv(2, start=50).encode("gb18030"))
    again = list(CsvSource(BIRTHS, drops, state=state).read())
    assert _names(again) == ["births_20261021.csv"]
    assert again[0].frame["记录编号"].tolist() == ["JS00000050", "JS00000051"]
    assert again[0].file is not None and not state.file_ingested(BIRTHS, again[0].file.sha256)


def test_rejected_file_can_be_moved_aside(tmp_path: Path) -> None:
    drops, aside = tmp_path / "drops", tmp_path / "rejected"
    drops.mkdir()
    _drop(drops, "births_20261020.csv", b"\x89PNG\r\n\x1a\n\x00\x00garbage")
    source = CsvSource(BIRTHS, drops, rejected_dir=aside)
    assert list(source.read()) == []
    assert not (drops / "births_20261020.csv").exists()
    assert (aside / "births_20261020.csv").exists()
    assert "binary content" in (aside / "births_20261020.csv.reason.txt").read_text(encoding="utf-8")


def test_decode_text_prefers_boms_then_utf8_then_gb18030() -> None:
    assert decode_text(GB18030_BOM + "出生".encode("gb18030")) == ("出生", "gb18030")
    assert decode_text(codecs.BOM_UTF8 + "出生".encode()) == ("出生", "utf-8-sig")
    assert decode_text("出生".encode()) == ("出生", "utf-8")
    assert decode_text("出生".encode("gb18030")) == ("出生", "gb18030")
    assert decode_text("𠀀".encode("gb18030")) == ("𠀀", "gb18030")  # four-byte GB18030 sequence
    with pytest.raises(RejectFile, match="undecodable bytes at line 2"):
        decode_text("a\n出".encode("gb18030")[:-1] + b"\x00")


def _workbook(path: Path, rows: list[list[object]], header: list[str] | None = None) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "残疾人证"
    sheet.append(header or list(get_contract(DISABILITY).source_names))
    for row in rows:
        sheet.append(row)
    book.save(path)


def _disability_row(i: int, issued: object, born: object) -> list[object]:
    """A synthetic 残疾人证 row in contract order; dates as the export typed them."""
    return [
        f"1507021990{i:08d}11",
        f"1507021990{i:08d}",
        f"姓名{i}",
        "男",
        born,
        "肢体残疾",
        "二级",
        issued,
        "150702001001",
        None,
    ]


def test_xlsx_keeps_serial_dates_and_datetimes_as_typed(tmp_path: Path) -> None:
    _workbook(
        tmp_path / "disability_20261031.xlsx",
        [
            _disability_row(1, 45123, 32874.0),
            _disability_row(2, datetime(2021, 3, 4), "1990-01-02"),
            _disability_row(3, "2020年5月5日", 33000),
            [None] * 10,  # Excel padding rows are skipped
        ],
    )
    _workbook(tmp_path / "disability_20261101.xlsx", [_disability_row(4, 45000, 33000)])
    (tmp_path / "disability_20261102.xlsx").write_bytes(b"PK\x03\x04 not really a zip")
    _workbook(tmp_path / "disability_20261103.xlsx", [[*_disability_row(5, 45000, 33000), "extra"]])
    repeated = [*get_contract(DISABILITY).source_names[:-1], "姓名"]
    _workbook(tmp_path / "disability_20261104.xlsx", [_disability_row(6, 45000, 33000)], header=repeated)

    source = XlsxSource(DISABILITY, tmp_path)
    frames = _frames(list(source.read()))
    assert list(frames) == ["disability_20261031.xlsx", "disability_20261101.xlsx"]
    frame = frames["disability_20261031.xlsx"]
    assert frame["发证日期"].tolist() == [45123, datetime(2021, 3, 4), "2020年5月5日"]
    assert frame["出生日期"].tolist() == [32874.0, "1990-01-02", 33000]
    assert frame["联系电话"].isna().all()
    assert frame[SOURCE_POSITION].tolist() == [f"disability_20261031.xlsx row {n}" for n in (2, 3, 4)]
    assert {r.name: r.reason for r in source.rejected} == {
        "disability_20261102.xlsx": "not a readable XLSX workbook (BadZipFile)",
        "disability_20261103.xlsx": (
            "ragged rows: 1 row(s) have values beyond the 10 header cells, first at row 2"
        ),
        "disability_20261104.xlsx": "header repeats columns ['姓名']",
    }


def test_xlsx_cells_reach_conform_typed(tmp_path: Path) -> None:
    """A numeric ID cell is refused, a numeric year is a year, only a numeric cell is an Excel serial."""
    number = "152101199001051238"
    cells = [  # ID number, birth date, issue date: the rest of each row is clean
        (float(number), datetime(1990, 1, 5), 45000),
        (number, 1990, 45000),
        (number, 32878, "45000"),
    ]
    rows = [[number + "42", i, "甲", "男", b, "肢体残疾", "二级", d, "150702001001", None] for i, b, d in cells]
    _workbook(tmp_path / "disability_20261031.xlsx", rows)
    frame = pd.concat([c.frame for c in XlsxSource(DISABILITY, tmp_path).read()], ignore_index=True)
    out = conform(frame, get_contract(DISABILITY))
    issues = {(int(r), f, why) for r, f, why in out.issues.itertuples(index=False)}
    assert issues == {
        (0, "id_number", "id_number_numeric_cell"),
        (1, "birth_date", "date_year_only"),
        (2, "issued_on", "date_unparseable"),
    }
    assert pd.isna(out.data["id_number"][0]) and out.data["id_number"][1] == number
    assert out.data["birth_date"][2] == pd.Timestamp("1990-01-05")  # serial 32878 from a numeric cell
    assert out.data["issued_on"][0] == pd.Timestamp("2023-03-15")  # serial 45000


def test_xlsx_named_sheet_and_empty_export(tmp_path: Path) -> None:
    _workbook(tmp_path / "disability_20261031.xlsx", [])
    source = XlsxSource(DISABILITY, tmp_path, sheet="残疾人证")
    chunks = list(source.read())
    assert len(chunks) == 1 and chunks[0].ends_file and chunks[0].frame.empty
    missing = XlsxSource(DISABILITY, tmp_path, sheet="Sheet9")
    assert list(missing.read()) == []
    assert missing.rejected[0].reason == "no sheet named 'Sheet9'"


def test_simulated_drops_and_exports(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    generate(folder, residents=500, seed=5)
    manifest = json.loads((folder / "manifest.json").read_text())
    state = StateStore(f"sqlite:///{tmp_path / 'hub.db'}")

    births = FileDropSource.from_location(
        BIRTHS, manifest["datasets"][BIRTHS]["location"], root=folder, pattern="births_*.csv", state=state
    )
    chunks = list(births.read())
    corrupted = {Path(c["file"]).name: c["rows"] for c in manifest["corrupted"] if c["dataset"] == BIRTHS}
    assert corrupted and {r.name for r in births.rejected} == set(corrupted)
    assert all(r.reason.startswith("undecodable bytes at line") for r in births.rejected)
    listed = manifest["datasets"][BIRTHS]["location"]["files"]
    assert _names(chunks, last_only=True) == listed  # a cut-off drop still gives its intact rows
    intact = {Path(c["file"]).name: c["intact_rows"] for c in manifest["corrupted"] if c["dataset"] == BIRTHS}
    lost = sum(corrupted[name] - intact[name] for name in corrupted)
    assert sum(len(c) for c in chunks) == manifest["datasets"][BIRTHS]["rows"] - lost
    for chunk in chunks:
        assert chunk.file is not None
        state.record_file(BIRTHS, chunk.file.sha256, chunk.file.name, "ingested")

    advance(folder, seed=4)  # 计生 drops one new file
    again = list(FileDropSource(BIRTHS, folder / "drops" / "jisheng", "births_*.csv", state=state).read())
    assert _names(again) == ["births_20261101.csv"]

    exports = FileDropSource.from_location(
        DISABILITY, manifest["datasets"][DISABILITY]["location"], root=folder
    )
    frame = pd.concat([c.frame for c in exports.read()], ignore_index=True)
    assert len(frame) == manifest["datasets"][DISABILITY]["rows"] and not exports.rejected
    kinds = {type(v).__name__ for v in pd.concat([frame["出生日期"], frame["发证日期"]])}
    assert {"int", "str"} <= kinds  # Excel serial numbers stay numbers; conform converts them
