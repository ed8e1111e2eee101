"""Dirty data on purpose: the faults real department exports carry, injected at documented rates.

Each function takes clean column values and a seeded generator, dirties a random subset with
column operations, and returns the new values plus a bit mask of the kinds injected per record
(``KINDS``), which the generator writes to ``truth/records.parquet``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from simulators import names as nm
from simulators.population import as_text, digit_bytes, padded, text_from_bytes, years_of

# Every kind a record can carry, in the order they are listed in truth/records.parquet.
KINDS: tuple[str, ...] = (
    "missing_id",
    "bad_check",
    "legacy15",
    "fullwidth",
    "space",
    "lower_x",
    "traditional",
    "homophone",
    "name_space",
    "date_format",
    "excel_serial",
    "phone_format",
    "duplicate",
    "drift",
    "truncated",
)
BIT: dict[str, int] = {kind: 1 << i for i, kind in enumerate(KINDS)}

DATE_STYLES = ("compact", "iso", "slash", "cn")  # 20170505, 2017-05-05, 2017/5/5, 2017年5月5日
_EXCEL_EPOCH = np.datetime64("1899-12-30", "D")  # serial 1 = 1900-01-01 with Excel's leap-year bug


@dataclass(frozen=True)
class DirtyRates:
    """Per-record probability of each dirty kind, drawn independently for every source dataset.

    ID kinds (missing_id … space) exclude each other; ``lower_x`` applies to numbers ending in X,
    ``legacy15`` only to people born 1900-1999, ``excel_serial`` only to XLSX date cells. The last
    three fields act on files: the share of CSV drops with a BOM, how many drops are corrupted, and
    whether the births drops grow an undeclared column (schema drift).
    """

    missing_id: float = 0.004
    bad_check: float = 0.003
    legacy15: float = 0.01
    fullwidth: float = 0.01
    space: float = 0.01
    lower_x: float = 0.3
    traditional: float = 0.02
    homophone: float = 0.008
    name_space: float = 0.005
    date_format: float = 0.05
    excel_serial: float = 0.4
    phone_format: float = 0.02
    duplicate: float = 0.01
    bom_drop: float = 0.5
    corrupt_drops: int = 1
    drift: bool = True

    def __post_init__(self) -> None:
        """Reject rates outside [0, 1] and exclusive ID rates summing past 1."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("float", float) and not 0.0 <= value <= 1.0:
                raise ValueError(f"dirty rate {f.name} must lie in [0, 1]")
        if self.missing_id + self.bad_check + self.legacy15 + self.fullwidth + self.space > 1.0:
            raise ValueError("the exclusive ID dirty rates add up to more than 1")
        if not 0 <= self.corrupt_drops <= 6:
            raise ValueError("corrupt_drops must lie in 0..6 (one of 7 drops stays intact)")

    def as_dict(self) -> dict[str, float | int | bool]:
        """The rates as plain JSON values (for the manifest)."""
        return asdict(self)

    @classmethod
    def clean(cls) -> DirtyRates:
        """No dirt at all: every value exactly as the truth has it."""
        zero = {f.name: 0.0 for f in fields(cls) if f.type in ("float", float)}
        return cls(**zero, corrupt_drops=0, drift=False)


DEFAULT_RATES = DirtyRates()


def kinds_text(marks: np.ndarray) -> pd.Series:
    """Comma-separated kind names for each bit mask ("" when clean)."""
    uniq, inverse = np.unique(marks, return_inverse=True)
    labels = [",".join(k for k in KINDS if int(m) & BIT[k]) for m in uniq]
    return pd.Series(np.asarray(labels, dtype=object)[inverse], dtype="string")


def _exclusive(n: int, rates: list[float], rng: np.random.Generator) -> np.ndarray:
    """For each record, which of the mutually exclusive kinds it gets (index), or -1 for none."""
    u = rng.random(n)
    edges = np.cumsum(rates)
    choice = np.searchsorted(edges, u, side="right")
    return np.where(choice < len(rates), choice, -1)


class _Edits:
    """Replacement values for some rows of a text column, applied in one Arrow pass at the end."""

    def __init__(self, base: pd.Series) -> None:
        """Start from the clean column."""
        self.base = base
        self.rows: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def set(self, rows: np.ndarray, values: pd.Series | np.ndarray) -> None:
        """Replace these rows (ascending or not) with these values."""
        if len(rows):
            self.rows.append(np.asarray(rows, dtype=np.int64))
            self.values.append(np.asarray(values, dtype=object))

    def result(self) -> pd.Series:
        """The column with every replacement applied."""
        if not self.rows:
            return self.base
        rows = np.concatenate(self.rows)
        values = np.concatenate(self.values)
        order = np.argsort(rows, kind="stable")
        mask = np.zeros(len(self.base), dtype=bool)
        mask[rows] = True
        base = pa.array(self.base.array)
        if isinstance(base, pa.ChunkedArray):
            base = base.combine_chunks()
        replacements = pa.array(
            [None if v is None or v is pd.NA else v for v in values[order]], pa.large_string()
        )
        return as_text(pc.replace_with_mask(base.cast(pa.large_string()), pa.array(mask), replacements))


# --- identity numbers ---------------------------------------------------------------------------

_FULLWIDTH = str.maketrans("0123456789Xx", "０１２３４５６７８９Ｘｘ")


def transpose_adjacent(numbers: pd.Series, rng: np.random.Generator) -> pd.Series:
    """Swap two different adjacent digits among the first 17: the MOD 11-2 check then always fails.

    The weights of neighbouring positions differ (mod 11), so a swap of unequal digits changes the
    weighted sum by a non-multiple of 11.
    """
    if numbers.empty:
        return numbers
    raw = np.frombuffer("".join(numbers.tolist()).encode("ascii"), dtype=np.uint8).reshape(-1, 18).copy()
    body = raw[:, :17]
    differs = body[:, :-1] != body[:, 1:]
    score = rng.random(differs.shape) * differs
    pos = score.argmax(axis=1)
    ok = differs[np.arange(len(pos)), pos]
    rows = np.flatnonzero(ok)
    left, right = body[rows, pos[rows]].copy(), body[rows, pos[rows] + 1].copy()
    body[rows, pos[rows]], body[rows, pos[rows] + 1] = right, left
    text = raw.view("S18").ravel().astype(str)
    return pd.Series(text, index=numbers.index, dtype="string").where(
        pd.Series(ok, index=numbers.index), numbers
    )


def dirty_ids(
    ids: pd.Series, birth: np.ndarray, rng: np.random.Generator, rates: DirtyRates
) -> tuple[pd.Series, np.ndarray]:
    """Dirty clean 18-digit numbers: missing, bad check, legacy 15, full-width, stray spaces, lower-case x."""
    clean = ids.reset_index(drop=True).astype("string")
    n = len(clean)
    edits = _Edits(clean)
    marks = np.zeros(n, dtype=np.int64)
    kinds = ["missing_id", "bad_check", "legacy15", "fullwidth", "space"]
    choice = _exclusive(n, [getattr(rates, k) for k in kinds], rng)
    year = years_of(birth.astype("datetime64[D]"))
    # Legacy 15-digit numbers only ever existed for people born in the 1900s.
    choice[(choice == 2) & ((year < 1900) | (year > 1999))] = -1
    choice[clean.isna().to_numpy()] = -1
    ends_x = clean.str.endswith("X").fillna(False).to_numpy(dtype=bool)
    lower = (choice == -1) & ends_x & (rng.random(n) < rates.lower_x)

    def subset(k: int) -> tuple[np.ndarray, pd.Series]:
        """Rows given ID kind k, and their clean values."""
        rows = np.flatnonzero(choice == k)
        return rows, clean.iloc[rows].reset_index(drop=True)

    rows, sel = subset(1)
    edits.set(rows, transpose_adjacent(sel, rng))
    rows, sel = subset(2)
    edits.set(rows, sel.str.slice(0, 6) + sel.str.slice(8, 17))
    rows, sel = subset(3)
    edits.set(rows, sel.str.translate(_FULLWIDTH))
    rows, sel = subset(4)
    where = rng.integers(0, 4, len(rows))
    edits.set(
        rows,
        np.select(
            [where == 0, where == 1, where == 2],
            [
                (" " + sel).to_numpy(dtype=object),
                (sel + "  ").to_numpy(dtype=object),
                (sel.str.slice(0, 6) + " " + sel.str.slice(6)).to_numpy(dtype=object),
            ],
            (sel.str.slice(0, 6) + " " + sel.str.slice(6, 14) + " " + sel.str.slice(14)).to_numpy(
                dtype=object
            ),
        ),
    )
    rows = np.flatnonzero(choice == 0)
    edits.set(rows, np.full(len(rows), None, dtype=object))
    for k, kind in enumerate(kinds):
        marks[choice == k] |= BIT[kind]
    rows = np.flatnonzero(lower)
    edits.set(rows, clean.iloc[rows].str.slice(0, 17) + "x")
    marks[lower] |= BIT["lower_x"]
    return edits.result(), marks


# --- names --------------------------------------------------------------------------------------


@cache
def _s2t() -> Callable[[str], str]:
    """OpenCC's simplified-to-traditional converter, loaded once."""
    from opencc import OpenCC  # slow to load; only when traditional variants are wanted

    converter: Callable[[str], str] = OpenCC("s2t").convert
    return converter


def _homophone_variant(name: str) -> str:
    """Replace the last character that has a same-sounding neighbour (a pinyin-input slip)."""
    for i in range(len(name) - 1, -1, -1):
        alt = nm.HOMOPHONES.get(name[i])
        if alt:
            return name[:i] + alt + name[i + 1 :]
    return name


def _map_unique(values: pd.Series, func: Callable[[str], str]) -> pd.Series:
    """Apply a per-value function once per distinct value (names repeat a lot)."""
    uniq = values.dropna().unique()
    mapping = {v: func(v) for v in uniq}
    return values.map(mapping).astype("string")


def dirty_names(
    names: pd.Series, rng: np.random.Generator, rates: DirtyRates
) -> tuple[pd.Series, np.ndarray]:
    """Traditional-character variants, homophone typos and stray spaces in names."""
    clean = names.reset_index(drop=True).astype("string")
    n = len(clean)
    edits = _Edits(clean)
    marks = np.zeros(n, dtype=np.int64)
    choice = _exclusive(n, [rates.traditional, rates.homophone, rates.name_space], rng)
    choice[clean.isna().to_numpy()] = -1
    for k, kind in enumerate(("traditional", "homophone", "name_space")):
        rows = np.flatnonzero(choice == k)
        if not len(rows):
            continue
        before = clean.iloc[rows].reset_index(drop=True)
        if kind == "traditional":
            after = _map_unique(before, _s2t())
        elif kind == "homophone":
            after = _map_unique(before, _homophone_variant)
        else:
            after = (before.str.slice(0, 1) + " " + before.str.slice(1)).where(
                pd.Series(rng.random(len(rows)) < 0.6), before + " "
            )
        values = after.to_numpy(dtype=object)
        changed = values != before.to_numpy(dtype=object)
        edits.set(rows, values)
        marks[rows[changed]] |= BIT[kind]
    return edits.result(), marks


# --- phones -------------------------------------------------------------------------------------


def dirty_phones(
    phones: pd.Series, rng: np.random.Generator, rates: DirtyRates
) -> tuple[pd.Series, np.ndarray]:
    """Mobile numbers written with separators or a country code (138 1234 5678, +86 13812345678)."""
    clean = phones.reset_index(drop=True).astype("string")
    marks = np.zeros(len(clean), dtype=np.int64)
    rows = np.flatnonzero((rng.random(len(clean)) < rates.phone_format) & clean.notna().to_numpy())
    if not len(rows):
        return clean, marks
    edits = _Edits(clean)
    sel = clean.iloc[rows].reset_index(drop=True)
    style = rng.integers(0, 3, len(rows))
    a, b, c = sel.str.slice(0, 3), sel.str.slice(3, 7), sel.str.slice(7)
    edits.set(
        rows,
        np.select(
            [style == 0, style == 1],
            [(a + " " + b + " " + c).to_numpy(dtype=object), ("+86 " + sel).to_numpy(dtype=object)],
            (a + "-" + b + "-" + c).to_numpy(dtype=object),
        ),
    )
    marks[rows] |= BIT["phone_format"]
    return edits.result(), marks


# --- dates --------------------------------------------------------------------------------------


def _date_parts(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Year, month and day numbers of datetime64[D] values."""
    year = years_of(days)
    month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    return year, month, day


def _sep(n: int, text: str) -> np.ndarray:
    """A literal separator repeated as an (n, len) byte matrix."""
    return np.tile(np.frombuffer(text.encode("ascii"), dtype=np.uint8), (n, 1))


def format_dates(values: np.ndarray, style: str) -> pd.Series:
    """Dates as text in one of DATE_STYLES (NaT stays missing), built column-wise."""
    days = np.asarray(values).astype("datetime64[D]")
    missing = np.isnat(days)
    year, month, day = _date_parts(np.where(missing, np.datetime64("2000-01-01", "D"), days))
    n = len(days)
    if style == "compact":
        text = text_from_bytes(np.hstack([digit_bytes(year, 4), digit_bytes(month, 2), digit_bytes(day, 2)]))
    elif style == "iso":
        text = text_from_bytes(
            np.hstack(
                [digit_bytes(year, 4), _sep(n, "-"), digit_bytes(month, 2), _sep(n, "-"), digit_bytes(day, 2)]
            )
        )
    elif style == "slash":
        text = padded(year) + "/" + padded(month) + "/" + padded(day)
    elif style == "cn":
        text = padded(year) + "年" + padded(month) + "月" + padded(day) + "日"
    else:
        raise ValueError(f"unknown date style {style!r}")
    return text.where(pd.Series(~missing))


def source_dates(values: np.ndarray, style: str, other_style: np.ndarray) -> pd.Series:
    """Dates in the source's own style, except rows whose ``other_style`` index (0-2) picks another."""
    out = format_dates(values, style)
    if not (other_style >= 0).any():
        return out
    edits = _Edits(out)
    others = [s for s in DATE_STYLES if s != style]
    for k, alt in enumerate(others):
        rows = np.flatnonzero(other_style == k)
        edits.set(rows, format_dates(np.asarray(values)[rows], alt).to_numpy(dtype=object, na_value=None))
    return edits.result()


def format_times(values: np.ndarray, separator: str = "T") -> pd.Series:
    """Date-times as 'YYYY-MM-DD<separator>HH:MM:SS' (whole seconds; NaT stays missing)."""
    seconds = np.asarray(values).astype("datetime64[s]")
    missing = np.isnat(seconds)
    seconds = np.where(missing, np.datetime64("2000-01-01T00:00:00", "s"), seconds)
    days = seconds.astype("datetime64[D]")
    year, month, day = _date_parts(days)
    clock = (seconds - days.astype("datetime64[s]")).astype(np.int64)
    n = len(seconds)
    text = text_from_bytes(
        np.hstack(
            [
                digit_bytes(year, 4),
                _sep(n, "-"),
                digit_bytes(month, 2),
                _sep(n, "-"),
                digit_bytes(day, 2),
                _sep(n, separator),
                digit_bytes(clock // 3600, 2),
                _sep(n, ":"),
                digit_bytes(clock // 60 % 60, 2),
                _sep(n, ":"),
                digit_bytes(clock % 60, 2),
            ]
        )
    )
    return text.where(pd.Series(~missing))


def excel_serials(values: np.ndarray) -> np.ndarray:
    """Excel's day serial numbers for dates (what a date cell stores without its number format)."""
    return (np.asarray(values).astype("datetime64[D]") - _EXCEL_EPOCH).astype(np.int64)


def duplicate_positions(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Which records get a duplicate (sorted positions)."""
    return np.flatnonzero(rng.random(n) < rate)
