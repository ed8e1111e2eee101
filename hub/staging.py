"""Pseudonymised staging: one folder per batch with Parquet files and a manifest, written atomically.

A batch folder appears only complete (written under a hidden temporary name, fsynced, then renamed), so
a killed run leaves either a whole batch or a hidden temp folder, which is never read as a batch and is
removed at the next start. Batch ids are derived from the batch content, so a re-run that reads the same
rows finds its batch already staged instead of staging it twice. Files are 0600 and folders 0700.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.base import PRIVATE_FILE, fsync_dir, private_dir, write_atomic

MANIFEST = "manifest.json"
_TEMP_MARK = ".tmp-"


@dataclass(frozen=True)
class StageManifest:
    """What a staged batch holds; carries counts, versions and hashes, never values."""

    dataset: str
    batch_id: str
    cursor_from: str | None
    cursor_to: str | None
    source_positions: str
    rows_in: int
    staged: int
    quarantined: int
    duplicates_skipped: int
    contract_version: int
    key_versions: dict[str, int]
    dropped_columns: list[str]
    content_hash: str
    files: dict[str, str] = field(default_factory=dict)
    unkeyed: int = 0  # rows staged without a usable ID number (also in quarantine), for linkage
    staged_at: int | None = None  # time.time_ns() when staged: linkage reads batches in this order
    field_problems: dict[str, int] = field(default_factory=dict)  # optional values set missing, by field:reason
    watermark_after: dict[str, Any] | None = None  # the state this batch commits (see hub.ingest.roll_forward)


def batch_id_for(dataset: str, raw: pd.DataFrame, start: str | None) -> str:
    """A content-derived id: the same rows read from the same starting point get the same id."""
    digest = hashlib.sha256()
    digest.update(dataset.encode())
    digest.update(str(start).encode())
    digest.update(pd.util.hash_pandas_object(raw, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:20]


def _write_parquet(frame: pd.DataFrame, path: Path) -> str:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path, compression="zstd")
    os.chmod(path, PRIVATE_FILE)
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
        return hashlib.file_digest(handle, "sha256").hexdigest()


def batch_dir(root: Path, dataset: str, batch_id: str) -> Path:
    """Where a batch lives under the staging root."""
    return root / dataset / batch_id


def is_staged(root: Path, dataset: str, batch_id: str) -> bool:
    """True when the batch folder exists with its manifest (only complete batches do)."""
    return (batch_dir(root, dataset, batch_id) / MANIFEST).is_file()


def _is_batch_folder(path: Path) -> bool:
    """Batch folders are named by their id; hidden names are temp folders of a write in progress or killed."""
    return not path.name.startswith(".")


def batch_manifest_paths(root: Path, dataset: str | None = None) -> list[Path]:
    """Manifest files of every complete batch (one dataset, or all), in folder order; temp folders never count."""
    pattern = f"{dataset}/*/{MANIFEST}" if dataset else f"*/*/{MANIFEST}"
    return [p for p in sorted(root.glob(pattern)) if _is_batch_folder(p.parent)]


def remove_stale_temp(root: Path, dataset: str) -> list[Path]:
    """Delete temp folders a killed run left behind for ``dataset`` (call before that dataset's run starts)."""
    folder = root / dataset
    stale = [p for p in folder.glob(f".*{_TEMP_MARK}*") if p.is_dir()] if folder.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def write_batch(
    root: Path,
    manifest: dict[str, Any],
    data: pd.DataFrame,
    linkage: pd.DataFrame,
) -> StageManifest:
    """Write data and linkage Parquet plus the manifest, then rename the folder into place."""
    dataset, bid = manifest["dataset"], manifest["batch_id"]
    final = batch_dir(root, dataset, bid)
    if (final / MANIFEST).is_file():
        return read_manifest(final)
    return commit_batch(root, dataset, bid, prepare_batch(root, manifest, data, linkage))


def prepare_batch(root: Path, manifest: dict[str, Any], data: pd.DataFrame, linkage: pd.DataFrame) -> Path:
    """Write a batch completely under its hidden temporary name (fsynced); ``commit_batch`` makes it a batch.

    Split from the rename so a worker process can write while the run that owns the watermark decides, in
    source order, which batches become visible.
    """
    dataset, bid = manifest["dataset"], manifest["batch_id"]
    final = batch_dir(root, dataset, bid)
    tmp = final.with_name(f".{bid}{_TEMP_MARK}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    private_dir(tmp.parent)
    tmp.mkdir(mode=0o700)
    files = {
        "data.parquet": _write_parquet(data, tmp / "data.parquet"),
        "linkage.parquet": _write_parquet(linkage, tmp / "linkage.parquet"),
    }
    content = hashlib.sha256("".join(files[k] for k in sorted(files)).encode()).hexdigest()
    staged = StageManifest(**{**manifest, "content_hash": content, "files": files})
    write_atomic(tmp / MANIFEST, json.dumps(asdict(staged), ensure_ascii=False, indent=2, sort_keys=True))
    fsync_dir(tmp)
    return tmp


def commit_batch(root: Path, dataset: str, batch_id: str, tmp: Path) -> StageManifest:
    """Rename a prepared batch folder into place (the commit point); an already staged batch wins."""
    final = batch_dir(root, dataset, batch_id)
    if (final / MANIFEST).is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        return read_manifest(final)
    if final.exists():  # a folder without manifest is debris of a killed run
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return read_manifest(final)


def discard_batch(tmp: Path) -> None:
    """Remove a prepared batch folder that will not be committed (a run stopped before its turn)."""
    shutil.rmtree(tmp, ignore_errors=True)


def read_manifest(folder: Path) -> StageManifest:
    """Load a batch manifest."""
    return StageManifest(**json.loads((folder / MANIFEST).read_text(encoding="utf-8")))


def staged_batches(root: Path, dataset: str | None = None) -> list[StageManifest]:
    """Manifests of every complete batch, optionally for one dataset, in folder order."""
    return [read_manifest(p.parent) for p in batch_manifest_paths(root, dataset)]


def read_staged(root: Path, dataset: str, part: str = "data") -> pd.DataFrame:
    """All staged rows of a dataset (``part`` is "data" or "linkage"), for tests and the link stage."""
    frames = [
        pd.read_parquet(batch_dir(root, dataset, m.batch_id) / f"{part}.parquet") for m in staged_batches(root, dataset)
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
