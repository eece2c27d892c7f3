"""Records on disk: parquet files of dicts, images as PNG bytes.

Every stage reads and writes its records through these two functions, so the on-disk format
(parquet, pyarrow) is decided in one place and never involves pickle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd


def write_records(rows: Sequence[dict], path: str | Path) -> int:
    """Write rows to parquet through a temporary name; returns the row count."""
    path = Path(path)
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
