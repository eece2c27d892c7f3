"""The Hugging Face datasets adapter (`data.world=hf`): a dataset by hub id (read from the local
cache when offline) or by local path (a `save_to_disk` folder, a folder of data files, or one
parquet / JSON / JSONL / CSV file), its rows mapped to our fields (`data.hf.mapping`), then
validated like local tables (data/files.py).

Mappings (`data.hf.mapping`):
- `aokvqa` (A-OKVQA: question_id, image, question, choices, correct_choice_idx, rationales):
  a multiple-choice question with its options; gold = the correct option's text; rationale =
  the first of its human rationales. Rows without a correct choice (the test split) are
  rejected rows.
- `scienceqa` (ScienceQA: image, question, choices, answer (index), hint, solution): the hint
  as context before the question; gold = the correct option's text; rationale = the solution.
  Text-only rows (no image) are skipped and counted: the pipeline is for images.
- `columns`: any dataset; `data.files.columns` maps our fields to its columns, as for files.

Images are read undecoded (`datasets.Image(decode=False)`: the file's own bytes), so what the
stages see is what the dataset holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from data.files import FIELDS, map_columns, to_records
from data.validate import DataError, Limits

MAPPINGS = ("aokvqa", "scienceqa", "columns")
BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
FILE_SPLIT = "train"  # the one split of a single-file dataset, whatever split is asked for


def single_file(ref: str | None) -> bool:
    """Whether `data.hf.dataset` names one data file (not a folder or a hub id)."""
    return bool(ref) and Path(ref).expanduser().is_file()


def open_split(ref: str, split: str, name: str | None = None) -> Any:
    """One split of a dataset as a `datasets.Dataset`, images undecoded.

    A single file has no splits: it holds all rows, and every split name reads it (the world
    stage then gives our splits consecutive rows of it, as for two of ours on one split).

    Raises:
        DataError: naming `data.hf.dataset` for a dataset that cannot be opened, and the
            available splits for a missing one.
    """
    import datasets

    p = Path(ref).expanduser()
    try:
        if p.is_file():
            builder = BUILDERS.get(p.suffix.lower())
            if builder is None:
                raise DataError(f"data.hf.dataset: {ref!r} is a file of unknown format {p.suffix!r}; "
                                f"a single file must be one of {sorted(BUILDERS)}")
            d = datasets.load_dataset(builder, data_files={FILE_SPLIT: str(p)}, split=FILE_SPLIT)
        elif p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file()):
            d = datasets.load_from_disk(str(p))  # a save_to_disk folder
            if isinstance(d, datasets.DatasetDict):
                if split not in d:
                    raise DataError(f"data.hf: {ref!r} has no split {split!r} (splits: {sorted(d)})")
                d = d[split]
        else:  # a hub id (from the cache when offline) or a folder of parquet/JSON/CSV files
            d = datasets.load_dataset(ref, name, split=split)
    except DataError:
        raise
    except ValueError as e:
        if "split" in str(e).lower():
            raise DataError(f"data.hf: {ref!r} has no split {split!r} ({str(e)[:160]})") from e
        raise DataError(f"data.hf.dataset: cannot open {ref!r} ({type(e).__name__}: {str(e)[:160]})") from e
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds (offline, not found, ...)
        raise DataError(f"data.hf.dataset: cannot open {ref!r} ({type(e).__name__}: {str(e)[:160]}); "
                        "offline, a hub id must already be in the local Hugging Face cache") from e
    for col, feature in d.features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            d = d.cast_column(col, datasets.Image(decode=False))
    return d


def _aokvqa(row: dict, idx: int, split: str) -> dict | None:
    choices, k = row.get("choices"), row.get("correct_choice_idx")
    rationales = row.get("rationales") or []
    answer = choices[k] if isinstance(k, int) and isinstance(choices, list) and 0 <= k < len(choices) else None
    return {"id": row.get("question_id"), "image": row.get("image"), "question": row.get("question"),
            "choices": choices, "answer": answer, "rationale": rationales[0] if rationales else None}


def _scienceqa(row: dict, idx: int, split: str) -> dict | None:
    if not row.get("image"):
        return None  # text-only: skipped, counted
    choices, k = row.get("choices"), row.get("answer")
    answer = choices[k] if isinstance(k, int) and isinstance(choices, list) and 0 <= k < len(choices) else None
    hint = (row.get("hint") or "").strip()
    question = row.get("question")
    if hint and isinstance(question, str):
        question = f"Context: {hint}\n{question}"
    solution = " ".join(str(row.get("solution") or "").split()) or None
    return {"id": f"{split}-{idx:06d}", "image": row.get("image"), "question": question, "choices": choices,
            "answer": answer, "rationale": solution, "family": row.get("subject") or None}


MAPPERS: dict[str, Callable[[dict, int, str], dict | None]] = {"aokvqa": _aokvqa, "scienceqa": _scienceqa}


def load_hf_split(ref: str, hf_split: str, split: str, mapping: str, columns: dict[str, str],
                  need_rationale: bool, limits: Limits, start: int = 0, limit: int | None = None,
                  name: str | None = None, append_choices: bool = True
                  ) -> tuple[list[dict], list[dict], int, int]:
    """(records, rejected rows, rows read, rows skipped) of rows [start, start + limit) of one split.

    `split` is our split (rationale, pool, eval, scorer), `hf_split` the dataset's (train, ...);
    two of ours may share one of the dataset's at different offsets.
    """
    if mapping not in MAPPINGS:
        raise DataError(f"data.hf.mapping: {mapping!r}; use one of {MAPPINGS}")
    d = open_split(ref, hf_split, name)
    stop = len(d) if limit is None else min(len(d), start + limit)
    part = d.select(range(min(start, len(d)), stop))
    where = f"{ref}[{hf_split}]"
    raw = part.to_list()
    if mapping == "columns":
        rows = map_columns(raw, list(d.column_names), columns, Path(where))
        skipped = 0
    else:
        mapped = [MAPPERS[mapping](r, start + i, hf_split) for i, r in enumerate(raw)]
        rows = [r for r in mapped if r is not None]
        skipped = len(mapped) - len(rows)
        rows = [{f: r.get(f) for f in FIELDS} for r in rows]
    out, bad = to_records(rows, split, where, None, need_rationale, limits, append_choices)
    return out, bad, len(rows), skipped
