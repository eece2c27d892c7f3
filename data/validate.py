"""Row validation for user datasets: every bad row is named (row, id, field, reason), never fatal
on its own; too many bad rows stop the run before any model work.

A row reaches `validate_rows` already mapped to our field names (id, image, question, answer,
rationale, reference, choices, family, facts). Images arrive as bytes, as a Hugging Face image
dict `{"bytes": ..., "path": ...}`, or as a path (relative paths resolve against the image
folder, which a path may not leave). A valid row comes out with its image as the file's own
bytes, its id and answer as text: a number written as 2.0 (a float column, JSON, a CSV cell)
becomes "2", which is what a model writes and what `data.scoring` compares.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import numbers
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

from data.scoring import choice_index, normalize_answer

TEXT_FIELDS = ("rationale", "reference", "family", "facts")
_INTEGRAL_TEXT = re.compile(r"[+-]?\d+\.0+")  # "2.0", "-3.00": a float's spelling of an integer
_ANSWER_TAG = re.compile(r"answer\s*:", re.IGNORECASE)


class DataError(ValueError):
    """Too many bad rows (or an unreadable file): the run stops before any model work."""


@dataclass(frozen=True)
class Limits:
    max_image_bytes: int = 64 << 20
    max_image_pixels: int = 40_000_000
    min_image_side: int = 1
    allow_outside_image_dir: bool = False  # image paths may leave the image folder


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def canonical_number(v: Any) -> tuple[str | None, str | None]:
    """(text, None) or (None, reason) for an answer or id given as a number or text.

    An integral float is the integer ("2.0" -> "2": pandas makes an int column float when one
    cell is empty, and `normalize_answer("2.0")` is "2 0", which no `Answer: 2.` matches);
    other floats keep their decimal form; infinities and NaN (JSON's `Infinity`, a float column,
    its CSV text "inf") are no answer. Other text stays as written.
    """
    if isinstance(v, str):
        t = v.strip()
        if t.lower().lstrip("+-") in ("inf", "infinity", "nan"):  # a float column written as text
            return None, f"not a finite number ({t})"
        return (str(int(t.split(".")[0])) if _INTEGRAL_TEXT.fullmatch(t) else t), None
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return str(int(v)), None
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        f = float(v)
        if math.isnan(f):
            return None, "missing"
        if math.isinf(f):
            return None, f"not a finite number ({v})"
        return (str(int(f)) if f.is_integer() else str(v)), None
    return None, f"wrong type {type(v).__name__} (expected text or number)"


def _inside(p: Path, folder: Path) -> bool:
    """Whether `p`, symlinks followed, lies in `folder`."""
    try:
        return p.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _image_bytes(value: Any, image_dir: Path | None, allow_outside: bool = False) -> tuple[bytes | None, str | None]:
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
    if image_dir is not None and not allow_outside and not _inside(p, image_dir):
        return None, (f"path {value!r} leaves the image folder {str(image_dir)!r} "
                      "(set data.files.allow_outside_image_dir=true to allow it)")
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


def split_answer_tail(rationale: str) -> tuple[str, str | None]:
    """(rationale, stated answer) of a rationale that already ends with `Answer: x.`, else
    (rationale, None): the record appends `Answer: <gold>.` itself, and twice is a response
    no model should learn. The tail is the last `Answer:` when it starts a sentence and runs
    to the end on one line."""
    tags = list(_ANSWER_TAG.finditer(rationale))
    if not tags:
        return rationale, None
    m = tags[-1]
    before, after = rationale[:m.start()].rstrip(" \t"), rationale[m.end():]
    if (before and before[-1] not in ".!?\n") or "\n" in after.strip():
        return rationale, None
    return before.strip(), after.strip().rstrip(".").strip()


def _id(v: Any) -> tuple[str | None, str | None]:
    if _missing(v):
        return None, "missing"
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():  # an int column with a hole
        return str(int(v)), None
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        return None, f"wrong type {type(v).__name__} (expected text or integer)"
    return str(v).strip(), None


def validate_rows(rows: Sequence[dict], *, split: str, file: str, image_dir: Path | None = None,
                  need_rationale: bool = False, limits: Limits = Limits()) -> tuple[list[dict], list[dict]]:
    """Split mapped rows into (valid rows, rejections).

    A rejection is `{"split", "file", "row", "id", "field", "reason"}`: one per bad field, so a
    row with two faults appears twice; the row itself is dropped once. `row` is the 0-based
    position in the file (kept as `row` in each valid row too). A repeated id rejects the
    later row. A rationale ending in `Answer: x.` loses that tail (rejected when x is not the
    gold answer; missing when nothing else is left).
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
            rid, why = _id(raw.get("id"))
            if why:
                faults.append(("id", why))
            elif rid in seen:
                faults.append(("id", f"duplicate of row {seen[rid]}"))
            else:
                seen[rid] = i
            question, why = _text(raw.get("question"), "question", True)
            if why:
                faults.append(("question", why))
            answer = raw.get("answer")
            if _missing(answer):
                faults.append(("answer", "empty" if isinstance(answer, str) else "missing"))
                answer = None
            else:
                answer, why = canonical_number(answer)
                if why:
                    faults.append(("answer", why))
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
                elif answer is not None:
                    k = choice_index(answer, choices)  # gold by letter or text -> its option
                    if k is None:
                        faults.append(("answer", f"{answer[:40]!r} is none of the choices {choices[:6]}"))
                        answer = None
                    else:
                        answer = choices[k]
            else:
                choices = None
            if texts["rationale"]:
                texts["rationale"], why = _rationale(texts["rationale"], answer, choices, need_rationale)
                if why:
                    faults.append(("rationale", why))
            data, why = _image_bytes(raw.get("image"), image_dir, limits.allow_outside_image_dir)
            why = why or check_image(data, limits)
            if why:
                faults.append(("image", why))
        if faults:
            bad += [{"split": split, "file": file, "row": i, "id": rid, "field": f, "reason": r}
                    for f, r in faults]
            continue
        good.append({"row": i, "id": rid, "question": question, "answer": answer, "image": data,
                     "choices": choices, **texts})
    return good, bad


def _rationale(text: str, gold: str | None, choices: list[str] | None,
               required: bool) -> tuple[str | None, str | None]:
    """The rationale without an `Answer: x.` tail, or the reason it is rejected."""
    body, stated = split_answer_tail(text)
    if stated is None:
        return text, None
    if gold is not None:
        said = canonical_number(stated)[0] or stated  # "2.0" states 2
        same = (choice_index(said, choices) == choices.index(gold) if choices
                else normalize_answer(said) == normalize_answer(gold))
        if not same:
            return None, f"ends with 'Answer: {stated[:40]}', but the gold answer is {gold[:40]!r}"
    if not body:
        return None, ("missing (it only states the answer)" if required else None)
    return body, None


def check_lengths(records: Sequence[dict], count_tokens: Callable[[list[str]], list[int]], image_tokens: int,
                  max_len: int, split: str, file: str) -> tuple[list[dict], list[dict]]:
    """(records that fit the model's context, rejections of those that do not).

    A record needs its question, the image and prompt tokens (`image_tokens`, measured on the
    model's own processor) and its gold response (rationale and answer, or the short answer)
    within `max_len`: a row that cannot fit would fail later as an out-of-memory or position
    error deep in training. `count_tokens` maps texts to their token counts in one batch, so
    this module needs no model. The field is "rationale" when the question with the short
    answer would fit, else "question"; `row` is the record's `_row` (its row in the file).
    """
    if not records:
        return [], []
    q = count_tokens([r["question"] for r in records])
    short = count_tokens([r["short_response"] for r in records])
    full = count_tokens([r.get("response") or r["short_response"] for r in records])
    good, bad = [], []
    for i, r in enumerate(records):
        total = image_tokens + q[i] + full[i]
        if total <= max_len:
            good.append(r)
            continue
        field = "rationale" if r.get("rationale") and image_tokens + q[i] + short[i] <= max_len else "question"
        what = "rationale and answer" if r.get("rationale") else "answer"
        bad.append({"split": split, "file": file, "row": r.get("_row", i), "id": r["id"], "field": field,
                    "reason": f"too long for the model: {total} tokens (question {q[i]}, {what} {full[i]}, "
                              f"image and prompt {image_tokens}) above its context of {max_len} tokens"})
    return good, bad


def _leak_pairs(records: Sequence[dict]) -> list[tuple[str, str]]:
    return [(hashlib.sha256(r["image"]).hexdigest(), " ".join(str(r["question"]).split()).lower())
            for r in records]


def find_leaks(held_out: Sequence[dict], train: Sequence[dict]) -> list[str]:
    """Ids of the `held_out` records that also appear in `train`: the same id, or the same image
    (its bytes' sha256) with the same question (blanks and case aside). A held-out question
    the model was trained on inflates its score."""
    ids, pairs = {str(r["id"]) for r in train}, set(_leak_pairs(train))
    return [str(r["id"]) for r, pair in zip(held_out, _leak_pairs(held_out))
            if str(r["id"]) in ids or pair in pairs]


def check_share(n_rows: int, rejected: list[dict], max_frac: float, where: str, report: str) -> None:
    """Raise DataError (one line) naming the file, the share, the limit and up to three distinct
    first reasons (a fault repeated on every row is shown once) when too many rows are bad."""
    n_bad = len({r["row"] for r in rejected})
    if n_rows == 0:
        raise DataError(f"{where}: no rows")
    if n_bad / n_rows > max_frac:
        shown: dict[tuple[str, str], dict] = {}
        for r in rejected:
            shown.setdefault((r["field"], r["reason"]), r)
            if len(shown) == 3:
                break
        first = "; ".join(f"row {r['row']} (id {r['id']!r}) {r['field']}: {r['reason']}" for r in shown.values())
        raise DataError(f"{where}: {n_bad} of {n_rows} rows rejected ({n_bad / n_rows:.1%}, above "
                        f"data.max_reject_frac={max_frac:g}); first: {first}; all reasons in {report}")
