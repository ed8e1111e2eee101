"""The quarantine: rows that failed validation, kept encrypted so data stewards can fix them at the source.

One file per batch under ``<root>/<dataset>/<batch_id>.quarantine``: a plaintext header (dataset, batch,
created, row count, counts per reason code, key version: no values) followed by AES-256-GCM over a
Parquet file of the raw rows, their reason codes and source positions. The associated data binds the
ciphertext to ``dataset/batch_id/key_version``; files are written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.base import HubError, write_atomic

MAGIC = b"HUBQUAR1"
SUFFIX = ".quarantine"
NONCE_BYTES = 12
KEY_BYTES = 32
REASONS_COLUMN = "_quarantine_reasons"
POSITION_COLUMN = "_source_position"
_HEADER_LENGTH = struct.Struct(">I")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class QuarantineError(HubError):
    """A quarantine file cannot be read or written; the message names the file, never a value or key."""


@dataclass(frozen=True)
class QuarantineEntry:
    """One quarantined batch as its header describes it (no values)."""

    dataset: str
    batch_id: str
    path: Path
    created: str
    rows: int
    reasons: Mapping[str, int]
    key_version: int


def associated_data(dataset: str, batch_id: str, key_version: int) -> bytes:
    """What the ciphertext is bound to: moving it to another dataset, batch or key version fails."""
    return f"{dataset}/{batch_id}/{key_version}".encode()


def _check_name(kind: str, value: str) -> str:
    if not _SAFE_NAME.match(value):
        raise ValueError(f"{kind} must be a plain file-name token (letters, digits, '.', '_', '-')")
    return value


def _reason_texts(reasons: pd.Series) -> pd.Series:
    """Reason codes as one ';'-joined string per row (lists are joined)."""
    joined = reasons.map(lambda r: ";".join(map(str, r)) if isinstance(r, list | tuple) else str(r))
    return joined.astype("string")


def _reason_counts(joined: pd.Series) -> dict[str, int]:
    """Rows per reason code, sorted by code."""
    counts = Counter(code for text in joined for code in str(text).split(";") if code)
    return dict(sorted(counts.items()))


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    """The frame as Arrow; a column of mixed cell types (XLSX) is kept as the text of each cell."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        fixed = frame.copy()
        for name in fixed.columns:
            try:
                pa.array(fixed[name], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                fixed[name] = fixed[name].map(lambda v: None if pd.isna(v) else str(v)).astype("string")
        return pa.Table.from_pandas(fixed, preserve_index=True)


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(_arrow_table(frame), sink, compression="zstd")
    return sink.getvalue()


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The header of a quarantine file and the offset where the encrypted part starts."""
    try:
        with path.open("rb") as handle:
            start = handle.read(len(MAGIC) + _HEADER_LENGTH.size)
            if len(start) < len(MAGIC) + _HEADER_LENGTH.size or not start.startswith(MAGIC):
                raise QuarantineError(f"{path}: not a quarantine file")
            (length,) = _HEADER_LENGTH.unpack(start[len(MAGIC):])
            header = json.loads(handle.read(length).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QuarantineError(f"{path}: unreadable quarantine header ({type(exc).__name__})") from exc
    if not isinstance(header, dict) or {"dataset", "batch_id", "key_version"} - set(header):
        raise QuarantineError(f"{path}: quarantine header lacks dataset, batch_id or key_version")
    return header, len(MAGIC) + _HEADER_LENGTH.size + length


def _entry(path: Path, header: Mapping[str, Any]) -> QuarantineEntry:
    return QuarantineEntry(
        dataset=str(header["dataset"]),
        batch_id=str(header["batch_id"]),
        path=path,
        created=str(header.get("created", "")),
        rows=int(header.get("rows", 0)),
        reasons={str(k): int(v) for k, v in dict(header.get("reasons", {})).items()},
        key_version=int(header["key_version"]),
    )


class QuarantineStore:
    """Encrypted per-batch files of rows that failed validation, under one quarantine key version."""

    def __init__(self, root: Path, key: bytes, key_version: int) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the quarantine key must be {KEY_BYTES} bytes (AES-256)")
        self.root = Path(root)
        self.key_version = int(key_version)
        self._aead = AESGCM(bytes(key))

    def __repr__(self) -> str:  # never show the key
        return f"QuarantineStore(root={str(self.root)!r}, key_version={self.key_version})"

    def path_for(self, dataset: str, batch_id: str) -> Path:
        """Where a batch's quarantine file lives."""
        return self.root / _check_name("dataset", dataset) / f"{_check_name('batch_id', batch_id)}{SUFFIX}"

    def put(
        self, dataset: str, batch_id: str, rows: pd.DataFrame, reasons: pd.Series, positions: pd.Series
    ) -> QuarantineEntry:
        """Encrypt and write one batch's bad rows (raw values) with their reasons and source positions.

        Writing the same batch again replaces its file, so a re-run leaves one file per batch.
        """
        path = self.path_for(dataset, batch_id)
        if not (len(rows) == len(reasons) == len(positions)):
            raise ValueError(f"{path}: rows, reasons and positions differ in length")
        payload = rows.copy()
        payload[REASONS_COLUMN] = _reason_texts(reasons).to_numpy()
        payload[POSITION_COLUMN] = positions.astype("string").to_numpy()
        counts = _reason_counts(payload[REASONS_COLUMN])
        header = {
            "format": 1,
            "dataset": dataset,
            "batch_id": batch_id,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "rows": len(payload),
            "reasons": counts,
            "key_version": self.key_version,
            "cipher": "AES-256-GCM",
        }
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(
            nonce, _parquet_bytes(payload), associated_data(dataset, batch_id, self.key_version)
        )
        head = json.dumps(header, ensure_ascii=False, sort_keys=True).encode("utf-8")
        write_atomic(path, MAGIC + _HEADER_LENGTH.pack(len(head)) + head + nonce + sealed)
        return _entry(path, header)

    def entries(self, dataset: str | None = None) -> list[QuarantineEntry]:
        """Quarantined batches (all datasets, or one), oldest first, read from the headers only."""
        if not self.root.exists():
            return []
        folders = [self.root / _check_name("dataset", dataset)] if dataset else sorted(self.root.iterdir())
        found: list[QuarantineEntry] = []
        for folder in folders:
            if folder.is_dir():
                found.extend(_entry(p, _read_header(p)[0]) for p in sorted(folder.glob(f"*{SUFFIX}")))
        return sorted(found, key=lambda e: (e.created, e.dataset, e.batch_id))

    def _read(self, entry: QuarantineEntry | Path) -> pd.DataFrame:
        """Decrypt a batch (raw rows, reason codes, source positions); private: privacy.reveal.read_quarantine logs."""
        path = entry.path if isinstance(entry, QuarantineEntry) else Path(entry)
        header, offset = _read_header(path)
        if int(header["key_version"]) != self.key_version:
            raise QuarantineError(
                f"{path}: encrypted under quarantine key version {header['key_version']}, "
                f"this store holds version {self.key_version}"
            )
        blob = path.read_bytes()[offset:]
        nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        aad = associated_data(str(header["dataset"]), str(header["batch_id"]), self.key_version)
        try:
            plain = self._aead.decrypt(nonce, sealed, aad)
        except InvalidTag as exc:
            raise QuarantineError(
                f"{path}: cannot decrypt: wrong quarantine key for version {self.key_version}, "
                "or the file was altered"
            ) from exc
        frame = pq.read_table(pa.BufferReader(plain)).to_pandas()
        # the header is outside the authenticated data: check it against what was sealed
        if len(frame) != int(header.get("rows", -1)) or _reason_counts(frame[REASONS_COLUMN]) != dict(
            header.get("reasons", {})
        ):
            raise QuarantineError(f"{path}: the header's counts do not match the encrypted rows")
        return frame

