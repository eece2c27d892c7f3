"""The generic local-files dataset adapter: JSONL, parquet or CSV tables with images as bytes,
Hugging Face image dicts, or paths into an image folder; a column mapping names our fields.

`load_split` reads one table, maps its columns, validates every row (data.validate) and
returns the records in the schema every stage reads (the shapes world's schema: id, split,
family, question, answer, rationale, response, short_response, reference, facts, choices,
image bytes) together with the rejected rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from data.scoring import format_choices
from data.shapes import format_response
from data.validate import DataError, Limits, validate_rows

FIELDS = ("id", "image", "question", "answer", "rationale", "reference", "choices", "family", "facts")
REQUIRED = ("id", "image", "question", "answer")
SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


def read_table(path: Path) -> tuple[list[dict], list[str]]:
    """Raw rows of a table file and its column names. A JSONL line that does not parse becomes
    a row `{"_error": ...}` (rejected by validation, not fatal); an unreadable file is fatal."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unknown table format {suffix!r}; expected one of {SUFFIXES}")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if suffix in (".jsonl", ".json"):  # by hand: pandas would turn "007" ids into 7
            rows, cols = [], {}
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError(f"a JSON {type(row).__name__}, not an object")
                except ValueError as e:
                    row = {"_error": f"line {n + 1} is not a JSON object ({str(e)[:60]})"}
                rows.append(row)
                cols.update(dict.fromkeys(k for k in row if k != "_error"))
            return rows, list(cols)
        if suffix == ".csv":  # every cell as text: ids and answers keep their spelling
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            df = pd.read_parquet(path)
            df = df.astype(object).where(pd.notna(df), None)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot read the table ({type(e).__name__}: {str(e)[:120]})") from e
    return df.to_dict(orient="records"), [str(c) for c in df.columns]


def map_columns(rows: list[dict], columns: list[str], mapping: dict[str, str], path: Path) -> list[dict]:
    """Rename the file's columns to our fields; a required or explicitly mapped column that the
    file lacks is a config error naming the field, the column and the file."""
    unknown = sorted(set(mapping) - set(FIELDS))
    if unknown:
        raise DataError(f"data.files.columns: unknown field(s) {unknown}; fields are {list(FIELDS)}")
    src = {f: mapping.get(f, f) for f in FIELDS}
    for f in FIELDS:
        if src[f] not in columns and (f in REQUIRED or f in mapping) and columns:
            raise DataError(f"{path}: column {src[f]!r} for field {f!r} not found "
                            f"(columns: {columns[:12]}); set data.files.columns.{f}")
    return [r if r.get("_error") else {f: r.get(src[f]) for f in FIELDS} for r in rows]


def load_split(path: str | Path, split: str, mapping: dict[str, str], image_dir: str | Path | None,
               need_rationale: bool, limits: Limits, append_choices: bool = True
               ) -> tuple[list[dict], list[dict], int]:
    """(records, rejected rows, rows read) of one split's table. Image paths resolve against
    `image_dir`, else the table's own folder, and may not leave it (unless
    `limits.allow_outside_image_dir`)."""
    path = Path(path)
    raw, columns = read_table(path)
    rows = map_columns(raw, columns, mapping, path)
    folder = Path(image_dir) if image_dir else path.parent
    out, bad = to_records(rows, split, str(path), folder, need_rationale, limits, append_choices)
    return out, bad, len(raw)


def to_records(rows: list[dict], split: str, file: str, image_dir: Path | None, need_rationale: bool,
               limits: Limits, append_choices: bool = True) -> tuple[list[dict], list[dict]]:
    """Rows in our field names -> (records every stage reads, rejected rows). A multiple-choice
    row (with `choices`) gets its options appended to the question when `append_choices`, and
    its gold answer as the option's text (a gold letter is resolved by data.validate). Each
    record keeps its row in the file as `_row` for later row checks (data.validate.check_lengths);
    the world stage drops it before writing."""
    good, bad = validate_rows(rows, split=split, file=file, image_dir=image_dir,
                              need_rationale=need_rationale, limits=limits)
    out = []
    for r in good:
        rationale = r.get("rationale")
        question = r["question"]
        if r.get("choices") and append_choices:
            question = format_choices(question, r["choices"])
        out.append({
            "id": r["id"], "split": split, "family": r.get("family") or "all",
            "question": question, "answer": r["answer"], "rationale": rationale,
            "response": format_response(rationale, r["answer"]) if rationale else None,
            "short_response": format_response("", r["answer"]), "reference": r.get("reference"),
            "facts": r.get("facts"), "choices": r.get("choices"), "image": r["image"], "_row": r["row"],
        })
    return out, bad


def source_digest(paths: list[str | Path], image_dir: str | Path | None, list_images: bool = True) -> str:
    """What the world stage's key depends on: each table's bytes, and the image folder's listing
    (names, sizes, modification times; hashing every image up front would cost a full read).
    `list_images=False`: the tables alone (a single-file dataset holds its images)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        h.update(str(p.resolve()).encode())
        h.update(hashlib.sha256(p.read_bytes()).digest() if p.is_file() else b"missing")
    folders = {Path(image_dir)} if image_dir else {Path(p).parent for p in paths}
    for folder in folders if list_images else ():
        if folder.is_dir():
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    st = f.stat()
                    h.update(f"{f.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]

