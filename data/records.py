"""Records on disk: parquet files of dicts, images as PNG bytes.

Every stage reads and writes its records through these two functions, so the on-disk format
(parquet, pyarrow) is decided in one place and never involves pickle; `as_image` and
`require_fields` read a record back for SFT, DPO, search and evaluation.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from PIL import Image
from data.schema import column_problem


def write_records(rows: Sequence[dict], path: str | Path, kind: type | None = None) -> int:
    """Write rows to parquet through a temporary name; returns the row count. With `kind` (a
    record TypedDict of data/schema.py), every row must have its columns.

    Raises:
        TypeError: a row that is not a `kind` record (a stage wrote what the next does not read).
    """
    path = Path(path)
    if kind is not None:
        first: dict[frozenset, int] = {}  # each distinct set of columns, at its first row
        for i, row in enumerate(rows):
            first.setdefault(frozenset(row), i)
        for cols, i in first.items():
            problem = column_problem(cols, kind)
            if problem:
                raise TypeError(f"{path.name} row {i} is not a {kind.__name__} record: {problem}")
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(list(rows)).to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return len(rows)


def read_records(path: str | Path) -> list[dict]:
    """Rows of a parquet file as dicts (NaN of missing optional values becomes None; a list
    column, such as a multiple-choice row's `choices`, comes back as Python lists, not the
    numpy arrays pyarrow gives, whose truth value is ambiguous)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"records file {str(path)!r} does not exist")
    df = pd.read_parquet(path)
    df = df.astype(object).where(pd.notna(df), None)
    rows = df.to_dict(orient="records")
    lists = [c for c in df.columns if any(isinstance(v, np.ndarray) for v in df[c])]
    for r in rows:
        for c in lists:
            if isinstance(r[c], np.ndarray):
                r[c] = r[c].tolist()
    return rows


def as_image(value: Any, where: str) -> Image.Image:
    """A record's image as RGB PIL: PNG/JPEG bytes (the stores' format) or a PIL image."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(value))).convert("RGB")
    raise ValueError(f"{where}: image must be bytes or a PIL image, got {type(value).__name__}")


def require_fields(record: dict[str, Any], fields: Sequence[str], where: str) -> None:
    missing = [f for f in fields if record.get(f) is None]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
