"""The leak scan the tests share: plaintext personal values from the simulators' truth, wherever the hub wrote.

Values are looked for as written and in the forms dirty sources use (full-width digits, lower-case x,
separators inside numbers), in files as UTF-8 and GB18030, inside gzip and zip containers, and in Parquet
read back as a table.
"""

from __future__ import annotations

import gzip
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

_RUNS = (re.compile(r"[0-9X]+"), re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+"))  # digit and Han runs
_SEPARATED = re.compile(r"(?<=[0-9])[ \-](?=[0-9X])")  # 138-1234-5678, 1381234 5678


def personal_values(truth: Path) -> frozenset[str]:
    """Plaintext the hub must never write or log, from the simulator's ground truth (truth/persons.parquet).

    ID numbers (upper case, and the legacy 15-digit form of those born in the 1900s), phone numbers, and names
    of three characters or more in simplified and traditional characters (two-character names are also
    ordinary words and would match by chance).
    """
    from opencc import OpenCC

    people = pd.read_parquet(truth / "persons.parquet")
    ids = set(people["id_number"].dropna().astype(str).str.upper())
    values = ids | {i[:6] + i[8:17] for i in ids if len(i) == 18 and i[6:8] == "19"}
    values |= set(people["phone"].dropna().astype(str))
    names = {n for n in people["name"].dropna().astype(str) if len(n) >= 3}
    to_traditional = OpenCC("s2t")
    values |= names | {to_traditional.convert(n) for n in names}
    return frozenset(values)


def find_value(text: str, values: frozenset[str]) -> str | None:
    """The first of ``values`` in ``text``, also as full-width digits, lower-case x or with separators."""
    text = _SEPARATED.sub("", unicodedata.normalize("NFKC", text).upper())
    lengths = sorted({len(v) for v in values})
    for runs in _RUNS:
        for run in runs.findall(text):
            for n in lengths:
                for i in range(len(run) - n + 1):
                    if run[i : i + n] in values:
                        return run[i : i + n]
    return None


def _texts(raw: bytes) -> Iterator[str]:
    """What a file can hold as text: UTF-8, GB18030, and inside gzip and zip (xlsx) containers."""
    yield raw.decode("utf-8", errors="ignore")
    yield raw.decode("gb18030", errors="ignore")
    if raw[:2] == b"\x1f\x8b":
        yield from _texts(gzip.decompress(raw))
    if raw[:4] == b"PK\x03\x04":
        import io

        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            for member in archive.namelist():
                yield from _texts(archive.read(member))


def leaks(home: Path, values: frozenset[str], outputs: Iterable[str] = ()) -> dict[str, str]:
    """Where a personal value shows in plaintext: every file under ``home`` but its keys, and ``outputs``.

    Parquet is also read as a table, since its pages may be compressed or dictionary-encoded.
    """
    found: dict[str, str] = {}
    for path in sorted(p for p in home.rglob("*") if p.is_file() and "keys" not in p.relative_to(home).parts):
        raw = path.read_bytes()
        texts = list(_texts(raw))
        if raw[:4] == b"PAR1":
            texts.append(pq.read_table(path).to_pandas().to_csv())
        for text in texts:
            hit = find_value(text, values)
            if hit is not None:
                found[str(path.relative_to(home))] = hit
                break
    for i, text in enumerate(outputs):
        hit = find_value(text, values)
        if hit is not None:
            found[f"output {i}"] = hit
    return found
