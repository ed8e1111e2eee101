"""Hulunbuir address codes (GB/T 2260), current and historical, with the era rule for ID numbers.

The era facts (which code was in force in which year) come from python-stdnum's ``cn/loc``
database, so the hub and the reference checker agree on what a valid birth place is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from stdnum import numdb


@dataclass(frozen=True)
class County:
    """A county-level unit of Hulunbuir with its current and pre-2001 address codes."""

    code: str
    name: str
    historical_code: str | None
    urban: bool


# The 14 county-level units (DOMAIN.md). Historical codes are those of 呼伦贝尔盟 before 2001.
COUNTIES: tuple[County, ...] = (
    County("150702", "海拉尔区", "152101", True),
    County("150703", "扎赉诺尔区", None, True),
    County("150721", "阿荣旗", "152122", False),
    County("150722", "莫力达瓦达斡尔族自治旗", "152123", False),
    County("150723", "鄂伦春自治旗", "152127", False),
    County("150724", "鄂温克族自治旗", "152128", False),
    County("150725", "陈巴尔虎旗", "152131", False),
    County("150726", "新巴尔虎左旗", "152130", False),
    County("150727", "新巴尔虎右旗", "152129", False),
    County("150781", "满洲里市", "152102", True),
    County("150782", "牙克石市", "152104", True),
    County("150783", "扎兰屯市", "152103", True),
    County("150784", "额尔古纳市", "152106", True),
    County("150785", "根河市", "152105", True),
)
CITY_CODE = "150700"
LEAGUE_CODE = "152100"
HULUNBUIR_PREFIXES = ("1507", "1521")


def code_spans(code: str) -> list[tuple[int | None, int | None, str]]:
    """(first year, last year, name) spans for an address code in stdnum's database."""
    return list(_spans(code))


@cache
def _spans(code: str) -> tuple[tuple[int | None, int | None, str], ...]:
    """code_spans, looked up once per code: stdnum's tree walk costs ~0.1 ms, and a batch asks per (code, year)."""
    info: dict[str, str] = {}
    for _part, props in numdb.get("cn/loc").info(code):
        info.update(props)
    spans: list[tuple[int | None, int | None, str]] = []
    for county in info.get("county", "").split(","):
        if not county:
            continue
        if not county.startswith("["):
            spans.append((None, None, county))
            continue
        startend, name = county[1:].split("]")
        start, end = startend.split("-")
        spans.append((int(start) if start else None, int(end) if end else None, name))
    return tuple(spans)


@cache
def code_valid_in(code: str, year: int) -> bool:
    """True when the 6-digit address code was in force in that year (the stdnum era rule)."""
    for start, end, _name in _spans(code):
        if (start is None or year >= start) and (end is None or year <= end):
            return True
    return False


@cache
def area_name(code: str) -> str | None:
    """The (latest) name of an address code, or None when unknown."""
    spans = code_spans(code)
    return spans[-1][2] if spans else None


@cache
def province_of(code: str) -> str:
    """The province-level code (first two digits padded) of an address code."""
    return code[:2] + "0000"


@cache
def all_area_codes() -> tuple[str, ...]:
    """Every county-level code stdnum knows, in order: the pool migrants' origins are drawn from."""
    db = numdb.get("cn/loc")
    codes: list[str] = []
    # numdb entries are (length, low, high, properties, children); ranges are single codes here.
    for _len, prov, _high, _props, children in db.prefixes:
        for _clen, county, _chigh, _cprops, _sub in children:
            codes.append(prov + county)
    return tuple(c for c in codes if len(c) == 6 and not c.endswith("00"))
