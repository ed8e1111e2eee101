"""File-drop clients: CSV (encoding detected, GB18030 aware) and XLSX (openpyxl read-only), in name order.

Each file is ingested once, keyed by the sha256 of its content. A file that cannot be read cleanly
(undecodable bytes, binary garbage, ragged rows, missing header) is set aside whole with its reason, and
the other files go on: a department fixes a drop by sending a new one, never by us guessing half of it.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import re
import shutil
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from connectors.chunk import SOURCE_POSITION, SourceChunk, SourceFile, labelled
from connectors.state import StateStore
from schemas.contract import get_contract

log = logging.getLogger(__name__)

GB18030_BOM = b"\x84\x31\x95\x33"
#: Encodings charset-normalizer may settle on when neither UTF-8 nor GB18030 decodes (traditional script).
FALLBACK_ENCODINGS = ("big5", "big5hkscs", "cp950")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class RejectFile(ValueError):
    """A file cannot be ingested; the reason names lines or columns, never values."""


class UndecodableBytes(RejectFile):
    """Bytes no candidate encoding decodes; ``offset`` is where the first bad byte is (for salvaging lines)."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.offset = offset


@dataclass(frozen=True)
class RejectedFile:
    """A file set aside whole, with why."""

    name: str
    sha256: str
    reason: str


def _line_of(data: bytes, offset: int) -> int:
    """1-based line number of a byte offset, for reasons that must not quote the bytes."""
    return data.count(b"\n", 0, offset) + 1


def decode_text(data: bytes, preferred: str = "gb18030") -> tuple[str, str]:
    """Decode a text drop strictly: BOM, else UTF-8, else the preferred (GB18030), else charset-normalizer.

    Returns (text, encoding used); raises ``RejectFile`` naming the line of the first undecodable byte.
    """
    if data.startswith(codecs.BOM_UTF8):
        candidates = ["utf-8-sig"]
    elif data.startswith(GB18030_BOM):
        candidates = ["gb18030"]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ["utf-16"]
    else:
        candidates = list(dict.fromkeys(["utf-8", preferred, "gb18030"]))
    failure: UnicodeDecodeError | None = None
    for encoding in candidates:
        try:
            return data.decode(encoding).removeprefix("\ufeff"), encoding
        except UnicodeDecodeError as exc:
            failure = exc  # the last candidate (GB18030 for an unmarked file) locates the bad bytes
    if b"\x00" not in data:
        from charset_normalizer import from_bytes

        best = from_bytes(data, cp_isolation=list(FALLBACK_ENCODINGS)).best()
        if best is not None and best.encoding in FALLBACK_ENCODINGS:
            return str(best), best.encoding
    assert failure is not None
    tried = " or ".join(c.upper() for c in candidates)
    raise UndecodableBytes(f"undecodable bytes at line {_line_of(data, failure.start)} (not {tried})", failure.start)


def check_header(header: Sequence[Any], key_columns: Sequence[str]) -> list[str]:
    """Header names as text; a missing primary key, blank or repeated names reject the file."""
    names = ["" if h is None else str(h).strip() for h in header]
    missing = [k for k in key_columns if k not in names]
    if missing:  # the first line is data, or the header is not this dataset's
        raise RejectFile(f"missing header: no primary key column {missing}")
    blank = [i + 1 for i, n in enumerate(names) if not n]
    if blank:
        raise RejectFile(f"header has blank column names at columns {blank[:5]}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RejectFile(f"header repeats columns {repeated[:5]}")
    return names


def _refuse_ragged(widths: np.ndarray, expected: int, lines: np.ndarray) -> None:
    """Reject a drop whose rows do not all have the header's number of fields, naming the first such line."""
    ragged = np.flatnonzero(widths != expected)
    if ragged.size:
        first = ragged[0]
        raise RejectFile(
            f"ragged rows: {ragged.size} row(s) do not have {expected} fields, first at line "
            f"{lines[first]} ({widths[first]} fields)"
        )


def parse_csv(
    data: bytes, name: str, key_columns: Sequence[str], encoding: str | None = None
) -> pd.DataFrame:
    """A whole CSV drop as text columns plus ``_source_position``; ``RejectFile`` if any of it is broken."""
    if not data.strip():
        raise RejectFile("empty file")
    text, used = decode_text(data, encoding or "gb18030")
    control = _CONTROL.search(text)
    if control:
        line = text.count("\n", 0, control.start()) + 1
        raise RejectFile(f"binary content (control characters) at line {line}")
    fast = _parse_plain_csv(text, name, key_columns)
    if fast is not None:
        log.debug("%s decoded as %s (pyarrow.csv)", name, used)
        return fast
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        numbered = [(reader.line_num, record) for record in reader if record]
    except csv.Error as exc:
        raise RejectFile(f"malformed CSV at line {reader.line_num}: {exc}") from exc
    if not numbered:
        raise RejectFile("empty file")
    header = check_header(numbered[0][1], key_columns)
    body = numbered[1:]
    widths = np.fromiter((len(r) for _, r in body), dtype=np.int64, count=len(body))
    _refuse_ragged(widths, len(header), np.fromiter((line for line, _ in body), dtype=np.int64, count=len(body)))
    frame = pd.DataFrame([r for _, r in body], columns=header, dtype="string")
    frame = frame.mask(frame == "")  # an empty CSV field is a missing value
    lines = np.fromiter((line for line, _ in body), dtype=np.int64, count=len(body))
    frame[SOURCE_POSITION] = labelled(f"{name} line", lines)
    log.debug("%s decoded as %s", name, used)
    return frame


# Line breaks str.splitlines knows but the csv module does not: their presence sends a drop down the csv path.
_OTHER_BREAKS = ("\x85", "\u2028", "\u2029")


def _parse_plain_csv(text: str, name: str, key_columns: Sequence[str]) -> pd.DataFrame | None:
    """A drop without any quoting, parsed by pyarrow.csv in C; None when the text needs the csv module.

    Without quotes every non-empty line is one record, so line numbers, widths and the header check are
    worked out on the lines (as the csv module would see them) before Arrow parses the body as text columns.
    """
    if '"' in text or any(mark in text for mark in _OTHER_BREAKS):
        return None
    import pyarrow as pa
    import pyarrow.csv as pacsv

    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lengths = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
    present = np.flatnonzero(lengths)
    if not present.size:
        raise RejectFile("empty file")
    header = check_header(lines[present[0]].split(","), key_columns)
    body = present[1:]
    widths = np.fromiter((lines[i].count(",") + 1 for i in body), dtype=np.int64, count=len(body))
    _refuse_ragged(widths, len(header), body + 1)
    names = [f"c{i}" for i in range(len(header))]
    if body.size:
        content = "\n".join(lines[int(body[0]) :]).encode("utf-8")
        table = pacsv.read_csv(
            io.BytesIO(content),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
            parse_options=pacsv.ParseOptions(quote_char=False, newlines_in_values=False, ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True, null_values=[""]
            ),
        )
        if table.num_rows != body.size:
            return None  # Arrow saw the lines otherwise than counted: let the csv module decide
        columns = {h: pd.array(table.column(c), dtype="string") for h, c in zip(header, names, strict=True)}
    else:
        columns = {h: pd.array([], dtype="string") for h in header}
    frame = pd.DataFrame(columns)
    frame[SOURCE_POSITION] = labelled(f"{name} line", body + 1)
    return frame


def parse_xlsx(data: bytes, name: str, key_columns: Sequence[str], sheet: str | None = None) -> pd.DataFrame:
    """A whole XLSX export (first sheet or ``sheet``), cells as Excel typed them, with positions."""
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise RejectFile(f"not a readable XLSX workbook ({type(exc).__name__})") from exc
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise RejectFile(f"no sheet named {sheet!r}")
        cells = book[sheet] if sheet is not None else book.worksheets[0]
        try:
            rows = list(cells.iter_rows(values_only=True))
        except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
            raise RejectFile(f"unreadable sheet data ({type(exc).__name__})") from exc
    finally:
        book.close()
    if not rows:
        raise RejectFile("empty sheet")
    raw_header = list(rows[0])
    while raw_header and raw_header[-1] is None:
        raw_header.pop()
    header = check_header(raw_header, key_columns)
    if len(rows) == 1:
        return pd.DataFrame(columns=[*header, SOURCE_POSITION])
    width = max(len(r) for r in rows[1:])
    grid = pd.DataFrame(rows[1:], columns=range(width), dtype=object)
    grid.index = pd.RangeIndex(2, len(grid) + 2)  # Excel row numbers: the header is row 1
    filled = grid.notna()
    if width > len(header):
        extra = filled.iloc[:, len(header) :].any(axis=1)
        if extra.any():
            raise RejectFile(
                f"ragged rows: {int(extra.sum())} row(s) have values beyond the {len(header)} header cells, "
                f"first at row {int(extra.idxmax())}"
            )
    if width < len(header):  # read-only mode trims trailing empty cells: a column empty in every row is absent
        grid = grid.reindex(columns=range(len(header)))
        filled = grid.notna()
    grid = grid.loc[filled.any(axis=1), : len(header) - 1]  # blank rows are Excel padding, not records
    frame = grid.set_axis(header, axis=1)
    frame[SOURCE_POSITION] = labelled(f"{name} row", frame.index.to_numpy())
    return frame.reset_index(drop=True)


def _contract_value(dataset: str, attr: str) -> Any:
    """An attribute of a dataset's contract, or None for a dataset without one."""
    try:
        return getattr(get_contract(dataset), attr)
    except KeyError:
        return None


class FileDropSource:
    """Reads one dataset's drop folder in name order, each file once, rejecting broken ones whole.

    The parser follows the file suffix: ``.csv`` (encoding detected) or ``.xlsx`` (openpyxl read-only).
    """

    default_pattern = "*"

    def __init__(
        self,
        dataset: str,
        directory: str | Path,
        pattern: str | None = None,
        *,
        state: StateStore | None = None,
        rejected_dir: str | Path | None = None,
        chunk_rows: int = 100_000,
        key_columns: Sequence[str] | None = None,
        encoding: str | None = None,
        sheet: str | None = None,
        caller_records_cut_files: bool = False,
    ) -> None:
        """``caller_records_cut_files``: a cut-off drop's last chunk carries ``set_aside`` and the caller
        records the file as rejected once its rows are staged (a caller that reads ahead of what it has
        staged must; otherwise the source records it when the caller asks for the next chunk)."""
        self.dataset = dataset
        self.caller_records_cut_files = caller_records_cut_files
        self.directory = Path(directory)
        self.pattern = pattern or self.default_pattern
        self.state = state
        self.rejected_dir = Path(rejected_dir) if rejected_dir else None
        self.chunk_rows = chunk_rows
        keys = key_columns if key_columns is not None else _contract_value(dataset, "primary_key")
        self.key_columns: tuple[str, ...] = tuple(keys or ())
        self.encoding = encoding or _contract_value(dataset, "encoding")
        self.sheet = sheet
        self.rejected: list[RejectedFile] = []
        self.skipped: list[SourceFile] = []

    @classmethod
    def from_location(
        cls, dataset: str, location: str | Mapping[str, Any], root: str | Path | None = None, **options: Any
    ) -> FileDropSource:
        """Build from a manifest location: a folder, a glob, or ``{"dir", "pattern", "sheet", "encoding"}``.

        A relative folder is taken under ``root`` (the simulator data folder, say).
        """
        if isinstance(location, Mapping):
            for key in ("pattern", "sheet", "encoding"):
                if location.get(key):
                    options.setdefault(key, location[key])
            location = str(location.get("dir") or location.get("path"))
        path = Path(location)
        if root is not None and not path.is_absolute():
            path = Path(root) / path
        if any(ch in path.name for ch in "*?["):
            return cls(dataset, path.parent, pattern=path.name, **options)
        return cls(dataset, path, **options)

    def files(self) -> list[Path]:
        """The drop's files in name order (dates in names make this arrival order)."""
        return sorted((p for p in self.directory.glob(self.pattern) if p.is_file()), key=lambda p: p.name)

    def read(self) -> Iterator[SourceChunk]:
        """Chunks of every new, readable file; the last chunk of a file has ``ends_file`` set."""
        seen_now: set[str] = set()
        for path in self.files():
            data = path.read_bytes()
            source = SourceFile(path.name, hashlib.sha256(data).hexdigest())
            known = self.state is not None and self.state.file_known(self.dataset, source.sha256)
            if source.sha256 in seen_now or known:
                self.skipped.append(source)
                continue
            seen_now.add(source.sha256)
            partial: str | None = None
            try:
                frame = self.parse(data, path.name)
            except UndecodableBytes as exc:
                # a drop cut off mid-write: the whole lines before the bad bytes are good rows
                cut = data.rfind(b"\n", 0, exc.offset) + 1
                try:
                    frame = self.parse(data[:cut], path.name) if cut else None
                except RejectFile:
                    frame = None
                if frame is None or frame.empty:
                    self._reject(path, source, str(exc))
                    continue
                last = _line_of(data, cut)
                partial = f"{exc}; the {len(frame)} rows before line {last} were ingested, the rest is set aside"
            except RejectFile as exc:
                self._reject(path, source, str(exc))
                continue
            yield from self._chunks(frame, source, partial if self.caller_records_cut_files else None)
            if partial is not None:  # recorded after the rows are staged: the file is known, with why
                self._reject(path, source, partial, record=not self.caller_records_cut_files)

    def parse(self, data: bytes, name: str) -> pd.DataFrame:
        """The whole file as one frame with ``_source_position``; ``RejectFile`` if any of it is broken."""
        suffix = Path(name).suffix.lower()
        if suffix in (".csv", ".txt"):
            return parse_csv(data, name, self.key_columns, self.encoding)
        if suffix in (".xlsx", ".xlsm"):
            return parse_xlsx(data, name, self.key_columns, self.sheet)
        raise RejectFile(f"unsupported file type '{suffix}'")

    def _chunks(self, frame: pd.DataFrame, source: SourceFile, set_aside: str | None = None) -> Iterator[SourceChunk]:
        starts = range(0, max(len(frame), 1), self.chunk_rows)
        for i, start in enumerate(starts):
            part = frame.iloc[start : start + self.chunk_rows]
            position = json.dumps(
                {"file": source.name, "sha256": source.sha256, "rows": [start, start + len(part)]},
                ensure_ascii=False,
            )
            last = i == len(starts) - 1
            yield SourceChunk(
                self.dataset, part, position, None, source, ends_file=last, set_aside=set_aside if last else None
            )

    def _reject(self, path: Path, source: SourceFile, reason: str, record: bool = True) -> None:
        """Set a file aside whole: remember why, record it in the state, move it if a folder is given."""
        log.warning("%s: file %s set aside: %s", self.dataset, source.name, reason)
        self.rejected.append(RejectedFile(source.name, source.sha256, reason))
        if self.state is not None and record:
            self.state.record_file(self.dataset, source.sha256, source.name, "rejected", reason)
        if self.rejected_dir is not None:
            self.rejected_dir.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), self.rejected_dir / path.name)
            (self.rejected_dir / f"{path.name}.reason.txt").write_text(reason + "\n", encoding="utf-8")


class CsvSource(FileDropSource):
    """CSV drops (计生 births): encoding detected per file, values kept as text exactly as written."""

    default_pattern = "*.csv"


class XlsxSource(FileDropSource):
    """XLSX exports (残联): numbers, serial dates and datetimes kept as typed; conform converts them."""

    default_pattern = "*.xlsx"
