"""Row validation for user datasets: every bad row is named (row, id, field, reason), never fatal
on its own; too many bad rows stop the run before any model work.

A row reaches `validate_rows` already mapped to our field names (id, image, question, answer,
rationale, reference, choices, family, facts). Images arrive as bytes, as a Hugging Face image
dict `{"bytes": ..., "path": ...}`, or as a path (relative paths resolve against the image
folder). A valid row comes out with its image as the file's own bytes, its id and answer as
text.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from data.scoring import choice_index

TEXT_FIELDS = ("rationale", "reference", "family", "facts")


class DataError(ValueError):
    """Too many bad rows (or an unreadable file): the run stops before any model work."""


@dataclass(frozen=True)
class Limits:
    max_image_bytes: int = 64 << 20
    max_image_pixels: int = 40_000_000
    min_image_side: int = 1


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _image_bytes(value: Any, image_dir: Path | None) -> tuple[bytes | None, str | None]:
    """(bytes, None) or (None, reason) for an image given as bytes, HF dict or path."""
    if isinstance(value, dict):  # Hugging Face `Image` feature as stored in parquet
        value = value.get("bytes") or value.get("path")
    if _missing(value):
        return None, "missing"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), None
    if not isinstance(value, str):
        return None, f"wrong type {type(value).__name__} (expected bytes or a path)"
    p = Path(value)
    if not p.is_absolute() and image_dir is not None:
        p = image_dir / p
    if not p.is_file():
        return None, f"file not found: {str(p)!r}"
    try:
        return p.read_bytes(), None
    except OSError as e:
        return None, f"unreadable file {str(p)!r}: {e.strerror or e}"


def check_image(data: bytes, limits: Limits) -> str | None:
    """None if `data` decodes to an image within the limits, else the reason."""
    if len(data) == 0:
        return "empty file (0 bytes)"
    if len(data) > limits.max_image_bytes:
        return f"file too large: {len(data)} bytes (limit {limits.max_image_bytes})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                w, h = im.size
                if min(w, h) < limits.min_image_side:
                    return f"zero-size image {w}x{h}"
                if w * h > limits.max_image_pixels:
                    return f"image too large: {w}x{h} (limit {limits.max_image_pixels} pixels)"
                im.load()  # decodes: truncated or corrupt data fails here
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return "image too large (decompression bomb guard)"
    except Exception as e:  # noqa: BLE001 - PIL raises many types for bad bytes
        return f"not a readable image ({type(e).__name__}: {str(e)[:80]})"
    return None


def _text(v: Any, field: str, required: bool) -> tuple[str | None, str | None]:
    if _missing(v):
        blank = isinstance(v, str)
        return None, (("empty" if blank else "missing") if required else None)
    if isinstance(v, bool) or not isinstance(v, str):
        return None, f"wrong type {type(v).__name__} (expected text)"
    return v.strip(), None


def validate_rows(rows: Sequence[dict], *, split: str, file: str, image_dir: Path | None = None,
                  need_rationale: bool = False, limits: Limits = Limits()) -> tuple[list[dict], list[dict]]:
    """Split mapped rows into (valid rows, rejections).

    A rejection is `{"split", "file", "row", "id", "field", "reason"}`: one per bad field, so a
    row with two faults appears twice; the row itself is dropped once. `row` is the 0-based
    position in the file. A repeated id rejects the later row.
    """
    good: list[dict] = []
    bad: list[dict] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(rows):
        faults: list[tuple[str, str]] = []
        if raw.get("_error"):  # the reader could not parse this line at all
            faults.append(("row", raw["_error"]))
            rid = None
        else:
            rid = raw.get("id")
            if _missing(rid):
                faults.append(("id", "missing"))
                rid = None
            elif isinstance(rid, bool) or not isinstance(rid, (str, int)):
                faults.append(("id", f"wrong type {type(rid).__name__} (expected text or integer)"))
                rid = None
            else:
                rid = str(rid).strip()
                if rid in seen:
                    faults.append(("id", f"duplicate of row {seen[rid]}"))
                else:
                    seen[rid] = i
            question, why = _text(raw.get("question"), "question", True)
            if why:
                faults.append(("question", why))
            answer = raw.get("answer")
            if _missing(answer):
                faults.append(("answer", "empty" if isinstance(answer, str) else "missing"))
            elif isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
                faults.append(("answer", f"wrong type {type(answer).__name__} (expected text or number)"))
            texts = {}
            for f in TEXT_FIELDS:
                texts[f], why = _text(raw.get(f), f, f == "rationale" and need_rationale)
                if why:
                    faults.append((f, why))
            choices = raw.get("choices")
            if choices is not None and not _missing(choices):
                if isinstance(choices, str):  # CSV cells: a JSON list, e.g. ["red", "blue"]
                    try:
                        choices = json.loads(choices)
                    except ValueError:
                        choices = None
                choices = list(choices) if isinstance(choices, (list, tuple)) or hasattr(
                    choices, "tolist") else None
                if not choices or not all(isinstance(c, str) for c in choices):
                    faults.append(("choices", "wrong type (expected a list of text options)"))
                elif not _missing(answer) and isinstance(answer, (str, int, float)):
                    k = choice_index(str(answer), choices)  # gold by letter or text -> its option
                    if k is None:
                        faults.append(("answer", f"{str(answer)[:40]!r} is none of the choices {choices[:6]}"))
                    else:
                        answer = choices[k]
            else:
                choices = None
            data, why = _image_bytes(raw.get("image"), image_dir)
            why = why or check_image(data, limits)
            if why:
                faults.append(("image", why))
        if faults:
            bad += [{"split": split, "file": file, "row": i, "id": rid, "field": f, "reason": r}
                    for f, r in faults]
            continue
        good.append({"id": rid, "question": question, "answer": str(answer).strip(), "image": data,
                     "choices": choices, **texts})
    return good, bad


def check_share(n_rows: int, rejected: list[dict], max_frac: float, where: str, report: str) -> None:
    """Raise DataError naming the file and the first reasons when too many rows are bad."""
    n_bad = len({r["row"] for r in rejected})
    if n_rows == 0:
        raise DataError(f"{where}: no rows")
    if n_bad / n_rows > max_frac:
        first = "; ".join(f"row {r['row']} (id {r['id']!r}) {r['field']}: {r['reason']}" for r in rejected[:3])
        raise DataError(f"{where}: {n_bad} of {n_rows} rows rejected ({n_bad / n_rows:.1%}, above "
                        f"data.max_reject_frac={max_frac:.0%}); first: {first}; all reasons in {report}")
