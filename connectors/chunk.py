"""The unit every connector yields: one batch of source rows as received, with where it came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: Column added to every frame: where each row came from ("page 3 row 17"), for error reports without values.
SOURCE_POSITION = "_source_position"


@dataclass(frozen=True)
class SourceFile:
    """A dropped file a chunk came from: its name and content hash (the ingest-once key)."""

    name: str
    sha256: str


@dataclass(frozen=True)
class SourceChunk:
    """One batch of source rows with SOURCE column names, values as received, plus progress to record.

    ``position`` is JSON text (page/cursor/offset, SQL keyset or file) that a resumed run can start from;
    ``cursor_max`` is the largest cursor value in the chunk (None for sources without a cursor).
    For file drops, ``file`` names the file and ``ends_file`` marks its last chunk, after which the caller
    records the file as ingested (or, when ``set_aside`` gives a reason, as rejected with it: a drop cut off
    mid-write whose intact lines were read).
    """

    dataset: str
    frame: pd.DataFrame
    position: str
    cursor_max: str | None
    file: SourceFile | None = None
    ends_file: bool = False
    set_aside: str | None = None  # on a cut-off drop's last chunk: why the rest of the file is set aside


    def __len__(self) -> int:
        return len(self.frame)


def cursor_max(frame: pd.DataFrame, cursor_col: str | None) -> str | None:
    """Largest cursor value in a frame; cursor values are fixed-format ISO text, so text order is time."""
    if cursor_col is None or cursor_col not in frame.columns or frame.empty:
        return None
    values = frame[cursor_col].dropna()
    return None if values.empty else str(values.max())


def positions(prefix: str, count: int, start: int = 1) -> pd.api.extensions.ExtensionArray:
    """The ``_source_position`` column: ``"<prefix> <n>"`` for n = start.., built as one column operation."""
    return labelled(prefix, pa.array(np.arange(start, start + count)))


def labelled(prefix: str, numbers: pa.Array | np.ndarray) -> pd.api.extensions.ExtensionArray:
    """``"<prefix> <value>"`` for each value (row numbers, rowids, ctids), joined in Arrow."""
    text = pa.array(numbers).cast(pa.string())
    return pd.arrays.ArrowStringArray(pc.binary_join_element_wise(prefix + " ", text, ""))
