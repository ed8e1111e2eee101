"""Conform a raw source batch to its contract: hub names, hub types, normalised values, issues by reason code.

Every rule is chosen by the contract field's type, pattern, allowed values and value map, so one contract
drives all datasets. Issues name the row (index label), the field and a reason code, never the value.
A required field that fails, or a cross-field check that fails, is a row issue (the row is quarantined);
an optional field that fails is set to missing and only counted (``field_problems``), so the record goes on.
Low-cardinality columns (dates, codes, names, amounts) are parsed once per distinct value; the rest use
column operations.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any

import numpy as np
import pandas as pd

from schemas import id_number
from schemas.contract import Contract, ContractField

STRING = pd.StringDtype()

# Reason codes (the `reason` column of Conformed.issues); none of them carries a value.
REQUIRED_MISSING = "required_missing"
COLUMN_MISSING = "column_missing"
ID_NUMBER_INVALID = "id_number_invalid"
DATE_UNPARSEABLE = "date_unparseable"
DATETIME_UNPARSEABLE = "datetime_unparseable"
PHONE_INVALID = "phone_invalid"
CODE_NOT_ALLOWED = "code_not_allowed"
INTEGER_INVALID = "integer_invalid"
DECIMAL_INVALID = "decimal_invalid"
COMMUNITY_CODE_INVALID = "community_code_invalid"
AREA_CODE_INVALID = "area_code_invalid"
PATTERN_MISMATCH = "pattern_mismatch"
ID_NUMBER_NUMERIC_CELL = "id_number_numeric_cell"
DATE_YEAR_ONLY = "date_year_only"
ID_NUMBER_SEX_MISMATCH = "id_number_sex_mismatch"
ID_NUMBER_BIRTH_DATE_MISMATCH = "id_number_birth_date_mismatch"
EMBEDDED_ID_NUMBER_MISMATCH = "embedded_id_number_mismatch"
REASONS = (
    REQUIRED_MISSING,
    COLUMN_MISSING,
    ID_NUMBER_INVALID,
    DATE_UNPARSEABLE,
    DATETIME_UNPARSEABLE,
    PHONE_INVALID,
    CODE_NOT_ALLOWED,
    INTEGER_INVALID,
    DECIMAL_INVALID,
    COMMUNITY_CODE_INVALID,
    AREA_CODE_INVALID,
    PATTERN_MISMATCH,
    ID_NUMBER_NUMERIC_CELL,
    DATE_YEAR_ONLY,
    ID_NUMBER_SEX_MISMATCH,
    ID_NUMBER_BIRTH_DATE_MISMATCH,
    EMBEDDED_ID_NUMBER_MISMATCH,
)
# Reasons that put the whole record in doubt, so they quarantine it even on an optional field: a numeric
# ID cell may already be another person's number, and a cross-field mismatch says the record disagrees
# with itself.
RECORD_REASONS = frozenset(
    {ID_NUMBER_NUMERIC_CELL, ID_NUMBER_SEX_MISMATCH, ID_NUMBER_BIRTH_DATE_MISMATCH, EMBEDDED_ID_NUMBER_MISMATCH}
)

# Excel's 1900 date system: serial 1 is 1900-01-01 and 60 is the phantom 1900-02-29, so day 0 is 1899-12-30.
EXCEL_EPOCH = pd.Timestamp("1899-12-30")
# Serials accepted as dates, from XLSX numeric cells only: 1900-03-01 (after the phantom leap day) to
# 2099-12-31. A plausible year is a year, never a serial (1990 is not 1905-06-12): nobody alive was born,
# and nothing was issued, in 1905. Written text is never a serial, and any four digits there are a year.
EXCEL_SERIAL_MIN = 61
EXCEL_SERIAL_MAX = 73050
YEAR_MIN = 1900
YEAR_MAX = 2099
DATE_DTYPE = "datetime64[us]"

# Separated dates: 2017年5月5日, 2017/5/5, 2017-05-05, 2017.5.5.
_SEPARATED_DATE = r"(?P<y>[0-9]{4})[年/.\-](?P<m>[0-9]{1,2})[月/.\-](?P<d>[0-9]{1,2})日?"
# A time of day after a date (openpyxl datetimes, SQL timestamps): ignored for date fields.
_TIME_TAIL = r"(?:[T ]+[0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)$"
_ZONE_TAIL = r"(?:Z|[+-][0-9]{2}:?[0-9]{2})$"
CHINA = "Asia/Shanghai"
_COMPACT_DATE = r"(?P<cy>[0-9]{4})(?P<cm>[0-9]{2})(?P<cd>[0-9]{2})"
_YEAR = r"(?P<year>[0-9]{4})"
_DATE_FORMS = re.compile(rf"^(?:{_SEPARATED_DATE}|{_COMPACT_DATE}|{_YEAR})$")
# Literal characters, not \u escapes, so pandas keeps these regexes on the fast pyarrow (RE2) path.
_HAN = f"[{chr(0x3400)}-{chr(0x4DBF)}{chr(0x4E00)}-{chr(0x9FFF)}{chr(0xF900)}-{chr(0xFAFF)}]"
# NFKC leaves printable ASCII and the CJK unified ideographs (base block and extension A) unchanged.
_NFKC_CHANGEABLE = f"[^ -~{chr(0x3400)}-{chr(0x4DBF)}{chr(0x4E00)}-{chr(0x9FFF)}]"
_SPACES = r"[ \t\r\n\f\v]+"  # spelt out: for \s pandas falls back to Python's re
# Minority-name separators (中点, bullet, katakana middle dot, full stops) all become the middle dot.
_NAME_SEPARATORS = f"[.{chr(0x2022)}{chr(0x2027)}{chr(0x2219)}{chr(0x22C5)}{chr(0x30FB)}{chr(0xFF0E)}{chr(0xFF65)}]"
NAME_SEPARATOR = chr(0x00B7)
# Written with a country code: a mobile keeps its 11 digits, a landline gets back its trunk 0.
_PHONE_PREFIX = r"^(?:00)?86(1[0-9]{10})$"
_LANDLINE_PREFIX = r"^(?:00)?86([2-9][0-9]{8,10})$"
_MOBILE = r"1[0-9]{10}"
# A landline: 0, a 2- or 3-digit area code (10, 2x, 470 …), then 7 or 8 digits not starting 0 or 1.
_LANDLINE = r"0[1-9][0-9]{1,2}[2-9][0-9]{6,7}"
ID_SHAPE = r"^[0-9]{17}[0-9X]$"
# A contract pattern starting like this declares a value that embeds an ID number in its first 18 characters.
EMBEDDED_ID_PREFIX = ID_SHAPE.removesuffix("$")
COMMUNITY_CODE_SHAPE = r"^[0-9]{12}$"
AREA_CODE_SHAPE = r"^[0-9]{6}$"
PHONE_SHAPE = rf"^(?:{_MOBILE}|{_LANDLINE})$"


@dataclass(frozen=True)
class Conformed:
    """A conformed batch: typed data under hub names, per-row issues (no values) and schema drift found.

    ``field_problems`` counts optional values set to missing because they failed, as ``{"field:reason": n}``.
    """

    data: pd.DataFrame
    issues: pd.DataFrame
    unknown_columns: tuple[str, ...]
    missing_columns: tuple[str, ...]
    dataset: str
    field_problems: dict[str, int] = field(default_factory=dict)

    def issue_counts(self) -> dict[str, int]:
        """Issues per ``reason:field``, for logs and summaries."""
        if self.issues.empty:
            return {}
        keys = self.issues["reason"].astype(str) + ":" + self.issues["field"].astype(str)
        return {str(k): int(v) for k, v in keys.value_counts().sort_index().items()}


# --- text helpers -------------------------------------------------------------------------------


def _cell_text(value: Any) -> str | None:
    """One source cell as text: numbers without a spurious '.0', dates in ISO form, blanks as missing."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else str(pd.Timestamp(value).isoformat(sep=" "))
    return str(value)


def as_text(values: pd.Series) -> pd.Series:
    """Any source column as a nullable string column (same index), without changing the text itself."""
    if isinstance(values.dtype, pd.StringDtype):
        return values.astype(STRING)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.dt.strftime("%Y-%m-%d %H:%M:%S").astype(STRING)
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_integer_dtype(values.dtype):
        return values.astype(STRING)
    if pd.api.types.is_float_dtype(values.dtype):
        numbers = values.astype("Float64")
        whole = (numbers.round() == numbers).fillna(False).astype(bool)
        out = pd.Series(pd.NA, index=values.index, dtype=STRING)
        out[whole] = numbers[whole].astype("Int64").astype(STRING)
        fraction = ~whole & numbers.notna().to_numpy()
        out[fraction] = numbers[fraction].astype(float).map(repr).astype(STRING)
        return out
    # object columns (XLSX cells, JSON mixtures): convert each distinct value once
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    texts = pd.array([_cell_text(v) for v in uniques], dtype=STRING)
    return pd.Series(texts.take(codes, allow_fill=True), index=values.index, name=values.name)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def numeric_cells(values: pd.Series) -> np.ndarray:
    """Which cells hold a number rather than text (XLSX numeric cells, JSON numbers); missing ones do not."""
    dtype, cells = values.dtype, pd.api.types.is_object_dtype(values.dtype)
    if pd.api.types.is_bool_dtype(dtype) or not (pd.api.types.is_numeric_dtype(dtype) or cells):
        return np.zeros(len(values), dtype=bool)
    present = values.notna().to_numpy(dtype=bool)
    if not cells:
        return present
    # object columns only (XLSX cells, JSON mixtures): typed cell by cell, as as_text reads them
    typed = np.fromiter((_is_number(v) for v in values.to_numpy()), dtype=bool, count=len(values))
    return typed & present


def nfkc(text: pd.Series) -> pd.Series:
    """NFKC only where it can change something: values with characters beyond ASCII and CJK ideographs."""
    changeable = _matches(text, _NFKC_CHANGEABLE)
    if not changeable.any():
        return text
    out = text.copy()
    out[changeable] = [unicodedata.normalize("NFKC", v) for v in text[changeable]]
    return out


def clean_text(text: pd.Series) -> pd.Series:
    """NFKC (full-width to half-width), trimmed; blank becomes missing."""
    out = nfkc(text).str.strip()
    return out.mask(out == "")


# A rule maps a source column to (conformed column, reason code per row or NA). A missing source
# value always yields a missing conformed value and no reason, so "required_missing" can be derived.
Rule = Callable[[pd.Series, ContractField], tuple[pd.Series, pd.Series]]
DistinctRule = Callable[[pd.Series], tuple[pd.Series, pd.Series]]


def _distinct(values: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """Codes per row and the distinct source values (cells as given, positional index)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return codes, pd.Series(uniques, dtype=values.dtype).reset_index(drop=True)


def _spread(codes: np.ndarray, values: pd.Series, *columns: pd.Series) -> tuple[pd.Series, ...]:
    """Per-distinct results back onto every row of ``values``."""
    return tuple(
        pd.Series(column.array.take(codes, allow_fill=True), index=values.index, name=values.name)
        for column in columns
    )


def _per_distinct(values: pd.Series, rule: DistinctRule) -> tuple[pd.Series, pd.Series]:
    """Run a rule once per distinct source value (its cleaned text); spread value and reason to each row."""
    codes, uniques = _distinct(values)
    conformed, reasons = _spread(codes, values, *rule(clean_text(as_text(uniques))))
    return conformed, reasons


# --- one rule per field type ----------------------------------------------------------------------


def _no_issue(index: pd.Index) -> pd.Series:
    return pd.Series(pd.NA, index=index, dtype=STRING)


def _reason_where(mask: pd.Series, reason: str) -> pd.Series:
    """A reason column: ``reason`` where mask is true, NA elsewhere."""
    out = pd.Series(pd.NA, index=mask.index, dtype=STRING)
    out[mask.fillna(False).astype(bool)] = reason
    return out


def _matches(text: pd.Series, pattern: str) -> pd.Series:
    """Plain bool: the text matches the regex (missing counts as not matching)."""
    return text.str.contains(pattern, regex=True).fillna(False).astype(bool)


def _text_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    """string and address: NFKC and trimmed; a contract pattern flags (and keeps) non-matching text."""
    text = clean_text(as_text(values))
    if cf.pattern:
        return text, _reason_where(text.notna() & ~_matches(text, cf.pattern), PATTERN_MISMATCH)
    return text, _no_issue(values.index)


def _id_number_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    """ID numbers: full-width, spaces, hyphens, lower-case x and 15 digits fixed; invalid ones kept and flagged.

    A numeric cell is never read: as a float it keeps 15 significant digits, and the printed number can be
    another person's valid ID. It is dropped and flagged ``id_number_numeric_cell``.
    """
    numeric = pd.Series(numeric_cells(values), index=values.index)
    text = as_text(values)
    if numeric.any():
        text = text.mask(numeric)
    # normalise_series leaves canonical numbers as they are: give it only the others (a few per cent)
    dirty = text.notna() & ~_matches(text, ID_SHAPE)
    numbers = text.copy()
    if dirty.any():
        numbers[dirty] = id_number.normalise_series(text[dirty])
    invalid = numbers.notna() & ~id_number.valid_series(numbers)
    reasons = _reason_where(invalid, ID_NUMBER_INVALID)
    if numeric.any():
        reasons = reasons.mask(numeric, ID_NUMBER_NUMERIC_CELL)
    return numbers, reasons


@cache
def _t2s() -> Any:
    from opencc import OpenCC  # loaded only when names are conformed

    return OpenCC("t2s")


# Traditional characters a legal name may hold as they are: surnames and name characters the 通用规范汉字表
# (2013) keeps as standard characters of their own (於 甯 昇 陞 甦 氾 吒 釐), or whose simplified form
# depends on the person (乾 干/乾, 徵 征/徵, 鍾 钟/锺, 餘 余/馀, 鉅 巨/钜, 麴 曲/麹). OpenCC would change them all.
NAME_CHARACTERS_KEPT = frozenset("於甯昇陞甦氾吒釐乾徵鍾餘鉅麴")


@cache
def _t2s_character(character: str) -> str:
    """OpenCC's simplified form of one character (its first candidate)."""
    return str(_t2s().convert(character))


def simplified(names: pd.Series) -> pd.Series:
    """Traditional to simplified, character by character, except characters a legal name keeps as written."""
    present = names.dropna()
    if present.empty:
        return names
    table = {
        ord(c): s
        for c in set("".join(present.unique().tolist()))
        if c >= "\u3400" and c not in NAME_CHARACTERS_KEPT and (s := _t2s_character(c)) != c
    }
    if not table:
        return names
    has_traditional = _matches(names, "[" + re.escape("".join(sorted(map(chr, table)))) + "]")
    out = names.copy()
    out[has_traditional] = names[has_traditional].str.translate(table)
    return out


def _name_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    """Names: Chinese names lose inner spaces and take one separator (·), others keep single spaces;
    traditional characters become simplified where that cannot change a legal name."""

    def rule(text: pd.Series) -> tuple[pd.Series, pd.Series]:
        squeezed = text.str.replace(_SPACES, " ", regex=True)
        chinese = squeezed.str.replace(" ", "", regex=False).str.replace(_NAME_SEPARATORS, NAME_SEPARATOR, regex=True)
        names = squeezed.where(~_matches(text, _HAN), chinese)
        return simplified(names), _no_issue(text.index)

    return _per_distinct(values, rule)


def _phone_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    """Digits only, a +86/0086 country prefix dropped; a mainland mobile or a landline with its area code."""
    text = clean_text(as_text(values))
    digits = text.str.replace(r"[^0-9]", "", regex=True).str.replace(_PHONE_PREFIX, r"\1", regex=True)
    digits = digits.str.replace(_LANDLINE_PREFIX, r"0\1", regex=True)
    digits = digits.mask(digits == "")
    return digits, _reason_where(text.notna() & ~_matches(digits, PHONE_SHAPE), PHONE_INVALID)


def _code_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    """Coded values: mapped through the contract's value_map, then checked against its allowed values."""
    value_map = {unicodedata.normalize("NFKC", k).strip(): v for k, v in cf.value_map.items()}
    allowed = list(cf.allowed or ())  # the contract loader insists a code field lists its values

    def rule(text: pd.Series) -> tuple[pd.Series, pd.Series]:
        codes = (text.replace(value_map) if value_map else text).astype(STRING)
        return codes, _reason_where(codes.notna() & ~codes.isin(allowed), CODE_NOT_ALLOWED)

    return _per_distinct(values, rule)


def _shape_rule(shape: str, reason: str) -> Rule:
    """Fixed-width digit codes (community, area): spaces dropped, shape and any pattern checked, text kept."""

    def rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
        def check(text: pd.Series) -> tuple[pd.Series, pd.Series]:
            codes = text.str.replace(_SPACES, "", regex=True)
            ok = _matches(codes, shape) & (_matches(codes, cf.pattern) if cf.pattern else True)
            return codes, _reason_where(codes.notna() & ~ok, reason)

        return _per_distinct(values, check)

    return rule


def _numbers(text: pd.Series) -> pd.Series:
    """Amount text as numbers: thousands separators, currency signs and a trailing 元 ignored."""
    cleaned = text.str.replace(r"[, \t¥]|元$", "", regex=True)
    return pd.to_numeric(cleaned, errors="coerce").astype("Float64")


def _integer_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype("Int64"), _no_issue(values.index)

    def rule(text: pd.Series) -> tuple[pd.Series, pd.Series]:
        numbers = _numbers(text)
        whole = numbers.where(numbers.round() == numbers)
        return whole.astype("Int64"), _reason_where(text.notna() & whole.isna(), INTEGER_INVALID)

    return _per_distinct(values, rule)


def _decimal_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("Float64"), _no_issue(values.index)

    def rule(text: pd.Series) -> tuple[pd.Series, pd.Series]:
        numbers = _numbers(text)
        return numbers, _reason_where(text.notna() & numbers.isna(), DECIMAL_INVALID)

    return _per_distinct(values, rule)


def _date_text(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Written dates as dates (NaT elsewhere), and which values are a four-digit year only."""
    dateonly = text.str.replace(_TIME_TAIL, "", regex=True).str.replace(_SPACES, "", regex=True)
    parts = dateonly.str.extract(_DATE_FORMS)
    ymd = pd.DataFrame(
        {
            "year": pd.to_numeric(parts["y"].fillna(parts["cy"]), errors="coerce"),
            "month": pd.to_numeric(parts["m"].fillna(parts["cm"]), errors="coerce"),
            "day": pd.to_numeric(parts["d"].fillna(parts["cd"]), errors="coerce"),
        }
    ).astype("float64")
    out = pd.Series(pd.NaT, index=text.index, dtype=DATE_DTYPE)
    dated = ymd.notna().all(axis=1)
    if dated.any():
        out[dated] = pd.to_datetime(ymd[dated], errors="coerce").astype(DATE_DTYPE)
    return out, parts["year"].notna().astype(bool)


def parse_dates(text: pd.Series) -> pd.Series:
    """Written dates (2017年5月5日, 20170505, 2017/5/5, 2017-05-05, 2017.5.5), else NaT; never an Excel serial."""
    return _date_text(text)[0]


def excel_serial_dates(numbers: pd.Series) -> pd.Series:
    """Excel serial numbers (1900 system, a fraction is the time of day) as dates; NaT outside the range."""
    serial = pd.to_numeric(numbers, errors="coerce").astype("float64")
    out = pd.Series(pd.NaT, index=numbers.index, dtype=DATE_DTYPE)
    counted = (serial >= EXCEL_SERIAL_MIN) & (serial <= EXCEL_SERIAL_MAX)
    if counted.any():
        days = np.floor(serial[counted].to_numpy(dtype=float)).astype("int64")
        out[counted] = (EXCEL_EPOCH + pd.to_timedelta(days, unit="D")).astype(DATE_DTYPE)
    return out


def _naive(values: pd.Series) -> pd.Series:
    """Zone-aware stamps as China wall time (the zone the sources keep), naive like the rest."""
    if getattr(values.dt, "tz", None) is not None:
        return values.dt.tz_convert(CHINA).dt.tz_localize(None)
    return values


def _date_rule(values: pd.Series, cf: ContractField, serials: bool = False) -> tuple[pd.Series, pd.Series]:
    """Dates in every written form; with ``serials`` (an XLSX source) a numeric cell may be an Excel serial.

    A year is a year: the contract's date fields hold full dates, so it is ``date_year_only``.
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return _naive(values).dt.floor("D").astype(DATE_DTYPE), _no_issue(values.index)
    codes, uniques = _distinct(values)
    text = clean_text(as_text(uniques))
    dates, year_only = _date_text(text)
    if serials:
        numeric = pd.Series(numeric_cells(uniques), index=text.index)
        year = pd.to_numeric(text.where(year_only), errors="coerce")
        year_only &= ~numeric | year.between(YEAR_MIN, YEAR_MAX).fillna(False).astype(bool)
        serial = numeric & dates.isna() & ~year_only
        if serial.any():
            dates = dates.where(~serial, excel_serial_dates(text.where(serial)))
    reasons = _reason_where(text.notna() & dates.isna() & ~year_only, DATE_UNPARSEABLE)
    reasons = reasons.mask(year_only, DATE_YEAR_ONLY)
    spread_dates, spread_reasons = _spread(codes, values, dates, reasons)
    return spread_dates, spread_reasons


def parse_datetimes(text: pd.Series) -> pd.Series:
    """ISO date-times with 'T' or a space (a bare date is midnight); an offset becomes China wall time."""
    out = pd.Series(pd.NaT, index=text.index, dtype=DATE_DTYPE)
    zoned = _matches(text, _ZONE_TAIL)
    plain = ~zoned & text.notna()
    if plain.any():
        out[plain] = pd.to_datetime(text[plain], format="ISO8601", errors="coerce").astype(DATE_DTYPE)
    if zoned.any():
        stamps = pd.to_datetime(text[zoned], format="ISO8601", errors="coerce", utc=True)
        out[zoned] = stamps.dt.tz_convert(CHINA).dt.tz_localize(None).astype(DATE_DTYPE)
    return out


def _datetime_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return _naive(values).astype(DATE_DTYPE), _no_issue(values.index)
    text = clean_text(as_text(values))
    stamps = parse_datetimes(text)
    return stamps, _reason_where(text.notna() & stamps.isna(), DATETIME_UNPARSEABLE)


RULES: dict[str, Rule] = {
    "string": _text_rule,
    "address": _text_rule,
    "id_number": _id_number_rule,
    "name": _name_rule,
    "phone": _phone_rule,
    "code": _code_rule,
    "community_code": _shape_rule(COMMUNITY_CODE_SHAPE, COMMUNITY_CODE_INVALID),
    "area_code": _shape_rule(AREA_CODE_SHAPE, AREA_CODE_INVALID),
    "integer": _integer_rule,
    "decimal": _decimal_rule,
    "date": _date_rule,
    "datetime": _datetime_rule,
}
EMPTY_DTYPES = {"integer": "Int64", "decimal": "Float64", "date": DATE_DTYPE, "datetime": DATE_DTYPE}


# --- the stage ------------------------------------------------------------------------------------


def _header_key(name: object) -> str:
    """Header text compared loosely: NFKC, no BOM, trimmed (CSV headers arrive dirty too)."""
    return unicodedata.normalize("NFKC", str(name)).replace("\ufeff", "").strip()


def _issue_frame(index: pd.Index, parts: list[tuple[str, pd.Series]]) -> pd.DataFrame:
    """One issues table (row label, field, reason) from each field's reason column."""
    rows: list[np.ndarray] = []
    fields: list[np.ndarray] = []
    reasons: list[np.ndarray] = []
    for field_name, reason in parts:
        flagged = reason.notna().to_numpy()
        rows.append(index.to_numpy()[flagged])
        fields.append(np.full(int(flagged.sum()), field_name, dtype=object))
        reasons.append(reason.to_numpy(dtype=object, na_value=None)[flagged])
    return pd.DataFrame(
        {
            "row": pd.Index(np.concatenate(rows) if rows else [], dtype=index.dtype),
            "field": pd.array(np.concatenate(fields) if fields else [], dtype=STRING),
            "reason": pd.array(np.concatenate(reasons) if reasons else [], dtype=STRING),
        }
    )


def _rule_for(cf: ContractField, contract: Contract) -> Rule:
    """The field type's rule; dates read Excel serials only where the source is an XLSX export."""
    if cf.type == "date":
        return partial(_date_rule, serials=contract.interface == "xlsx")
    return RULES[cf.type]


def _soften(
    name: str, conformed: pd.Series, reason: pd.Series, problems: dict[str, int]
) -> tuple[pd.Series, pd.Series]:
    """An optional field: a failed value becomes missing and is counted, unless it puts the record in doubt."""
    soft = reason.notna() & ~reason.isin(RECORD_REASONS).fillna(False).astype(bool)
    if not soft.any():
        return conformed, reason
    for why, n in reason[soft].value_counts().items():
        key = f"{name}:{why}"
        problems[key] = problems.get(key, 0) + int(n)
    return conformed.mask(soft), reason.mask(soft)


def _in_table(contract: Contract, table: str, ftype: str, column_suffix: str) -> ContractField | None:
    """The field of a unified table with this type whose unified column is ``column_suffix`` or ends in it."""
    return next(
        (
            f
            for f in contract.fields
            if f.unified_table == table
            and f.type == ftype
            and (f.unified_column == column_suffix or f.unified_column.endswith("_" + column_suffix))
        ),
        None,
    )


def _cross_checks(
    contract: Contract, columns: dict[str, pd.Series], reasons: dict[str, pd.Series]
) -> list[tuple[str, pd.Series]]:
    """Reasons where fields disagree with the ID number: its sex and birth date, and an embedded ID.

    An ID number is paired with the sex and birth-date fields of its own unified table (person.sex for
    person.id_number, child_sex for birth_registration.child_id_number). A string field whose contract
    pattern starts with the ID shape (the 残联 certificate number) must embed the record's person ID number.
    Only valid numbers are compared: an invalid one already has its reason.
    """
    found: list[tuple[str, pd.Series]] = []
    for idf in (f for f in contract.fields if f.type == "id_number" and f.name in columns):
        ids = columns[idf.name]
        valid = (ids.notna() & reasons[idf.name].isna()).astype(bool)
        if not valid.any():
            continue
        sex_field = _in_table(contract, idf.unified_table, "code", "sex")
        if sex_field is not None:
            sex = columns[sex_field.name]
            compared = valid & sex.notna() & reasons[sex_field.name].isna()
            differs = (id_number.sex_series(ids.where(valid)) != sex).fillna(False).astype(bool)
            found.append((sex_field.name, _reason_where(compared & differs, ID_NUMBER_SEX_MISMATCH)))
        birth_field = _in_table(contract, idf.unified_table, "date", "birth_date")
        if birth_field is not None:
            births = columns[birth_field.name]
            encoded = pd.to_datetime(ids.where(valid).str.slice(6, 14), format="%Y%m%d", errors="coerce")
            compared = valid & births.notna()
            differs = (encoded.astype(DATE_DTYPE) != births.astype(DATE_DTYPE)).fillna(False).astype(bool)
            found.append((birth_field.name, _reason_where(compared & differs, ID_NUMBER_BIRTH_DATE_MISMATCH)))
    person = contract.by_unified("person.id_number")
    for cf in contract.fields:
        if person is None or cf.type != "string" or not (cf.pattern or "").startswith(EMBEDDED_ID_PREFIX):
            continue
        text, ids = columns[cf.name], columns[person.name]
        compared = text.notna() & reasons[cf.name].isna() & ids.notna() & reasons[person.name].isna()
        differs = (text.str.slice(0, 18) != ids).fillna(False).astype(bool)
        found.append((cf.name, _reason_where(compared & differs, EMBEDDED_ID_NUMBER_MISMATCH)))
    return found


def conform(raw: pd.DataFrame, contract: Contract) -> Conformed:
    """Rename a raw batch to hub names, type and normalise every contract field, and report issues by row.

    Columns starting with '_' pass through; source columns the contract does not name are dropped and
    listed in ``unknown_columns``; contract columns absent from the batch are added as missing values and
    listed in ``missing_columns`` (a required one also gives every row the issue ``column_missing``).
    An optional field that fails is set to missing and counted in ``field_problems``; cross-field checks
    (sex and birth date against the ID number, an embedded ID number) add row issues.
    """
    if not raw.index.is_unique:
        raise ValueError(f"{contract.dataset}: duplicate index labels: issues could not name rows")
    by_header = {_header_key(c): c for c in raw.columns}
    sources = {f.source for f in contract.fields}
    unknown = tuple(
        str(c) for c in raw.columns if not str(c).startswith("_") and _header_key(c) not in sources
    )
    columns: dict[str, pd.Series] = {}
    reasons: dict[str, pd.Series] = {}
    problems: dict[str, int] = {}
    missing: list[str] = []
    for cf in contract.fields:
        column = by_header.get(cf.source)
        if column is None:
            missing.append(cf.name)
            empty = pd.array([None] * len(raw), dtype=EMPTY_DTYPES.get(cf.type, STRING))
            columns[cf.name] = pd.Series(empty, index=raw.index, name=cf.name)
            fill = COLUMN_MISSING if cf.required else pd.NA
            reasons[cf.name] = pd.Series(fill, index=raw.index, dtype=STRING)
            continue
        conformed, reason = _rule_for(cf, contract)(raw[column], cf)
        if cf.required:
            # a rule leaves a value missing without a reason only where the source cell was blank
            reason = reason.mask(reason.isna() & conformed.isna(), REQUIRED_MISSING)
        else:
            conformed, reason = _soften(cf.name, conformed, reason, problems)
        columns[cf.name] = conformed.rename(cf.name)
        reasons[cf.name] = reason
    parts = [*reasons.items(), *_cross_checks(contract, columns, reasons)]
    for name in raw.columns:
        if str(name).startswith("_"):
            columns[str(name)] = raw[name]
    return Conformed(
        data=pd.DataFrame(columns, index=raw.index),
        issues=_issue_frame(raw.index, parts),
        unknown_columns=unknown,
        missing_columns=tuple(missing),
        dataset=contract.dataset,
        field_problems=dict(sorted(problems.items())),
    )
