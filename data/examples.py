"""Example datasets in the formats users bring: a JSONL folder with images (`data.world=files`),
an A-OKVQA-shaped and a ScienceQA-shaped `save_to_disk` folder (`data.world=hf`). Each writer
returns the `src run` overrides that read it.

    python -m data.examples jsonl /tmp/mine [--bad-rows]   # then: src run ... <printed overrides>
    python -m data.examples aokvqa /tmp/aokvqa

The questions, images, answers and rationales come from the shapes world (so the tiny built-in
model has something to learn), but the files carry none of its scene facts: every stage sees
them exactly as it sees your data. The tests run the whole pipeline on them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data.config import DataConfig
from data.shapes import answers_of, generate

SPLITS = ("train", "validation")


def example_rows(split: str, n: int, seed: int = 0) -> list[dict]:
    return generate("rationale" if split == "train" else "eval", n, DataConfig(), seed)


def choices_for(r: dict) -> list[str]:
    """Four options for a shapes question: the gold and three others of its family's answers
    (yes/no questions get two), in an order that depends on the row only."""
    pool = [a for a in answers_of(r["family"]) if a != r["answer"]]
    k = int(r["id"].split("-")[-1])
    opts = pool[: 3] + [r["answer"]] if len(pool) >= 3 else pool + [r["answer"]]
    shift = k % len(opts)
    return opts[shift:] + opts[:shift]


# rows a user's export may hold (appended to eval.jsonl with --bad-rows): what each becomes
BAD_ROWS = [
    {"qid": "bad-path", "img": "../outside.png", "question": "What color is the circle?", "answer": "red",
     "why": "There is a red circle at the top left."},       # image leaves the folder: rejected
    {"qid": "bad-question", "img": None, "question": "", "answer": "2", "why": None},  # empty: rejected
    {"qid": "bad-rationale", "img": None, "question": "What color is the square?", "answer": "blue",
     "why": "There is a red square at the top left. Answer: red."},  # says another answer: rejected
]


def write_jsonl(root: Path, n_train: int = 120, n_eval: int = 24, bad_rows: bool = False) -> list[str]:
    """`root/{rationale,pool,eval}.jsonl` + `root/images/`; returns the `src run` overrides.
    Column names are the user's own (`qid`, `img`, `why`), mapped by data.files.columns.
    Counting answers are written as JSON numbers (`2.0`, as a float column exports them);
    `bad_rows` appends `BAD_ROWS` to the eval table."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    over = ["data.world=files", f"data.files.image_dir={root / 'images'}",
            "data.files.columns={id: qid, image: img, rationale: why}"]
    train, ev = example_rows("train", n_train), example_rows("validation", n_eval)
    half = n_train // 2
    for name, rows in (("rationale", train[:half]), ("pool", train[half:]), ("eval", ev)):
        lines = []
        for r in rows:
            img = f"{r['id']}.png"
            (root / "images" / img).write_bytes(r["image"])
            answer = float(r["answer"]) if r["answer"].isdigit() else r["answer"]
            lines.append(json.dumps({"qid": r["id"], "img": img, "question": r["question"],
                                     "answer": answer, "why": r["rationale"]}))
        if name == "eval" and bad_rows:
            first = f"{rows[0]['id']}.png"
            (root / "outside.png").write_bytes(rows[0]["image"])  # there, but outside images/
            lines += [json.dumps({**b, "img": b["img"] or first}) for b in BAD_ROWS]
        (root / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
        over.append(f"data.files.{name}={root / f'{name}.jsonl'}")
    return over


def _save(root: Path, rows: dict[str, dict], features) -> Path:
    import datasets

    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict(rows[s], features=features) for s in rows})
    dd.save_to_disk(str(root))
    return root


def write_aokvqa(root: Path, n_train: int = 120, n_eval: int = 24) -> list[str]:
    """An A-OKVQA-shaped dataset (question_id, image, question, choices, correct_choice_idx,
    direct_answers, rationales); returns the `src run` overrides."""
    import datasets

    out = {}
    for split, n in zip(SPLITS, (n_train, n_eval)):
        rs = example_rows(split, n)
        ch = [choices_for(r) for r in rs]
        out[split] = {"question_id": [r["id"] for r in rs],
                      "image": [{"bytes": r["image"], "path": None} for r in rs],
                      "question": [r["question"] for r in rs], "choices": ch,
                      "correct_choice_idx": [c.index(r["answer"]) for c, r in zip(ch, rs)],
                      "direct_answers": [[r["answer"]] * 10 for r in rs],
                      "rationales": [[r["rationale"], r["reference"]] for r in rs]}
    feats = datasets.Features({"question_id": datasets.Value("string"), "image": datasets.Image(),
                               "question": datasets.Value("string"),
                               "choices": datasets.Sequence(datasets.Value("string")),
                               "correct_choice_idx": datasets.Value("int64"),
                               "direct_answers": datasets.Sequence(datasets.Value("string")),
                               "rationales": datasets.Sequence(datasets.Value("string"))})
    _save(root, out, feats)
    return ["data.world=hf", f"data.hf.dataset={root}", "data.hf.mapping=aokvqa"]


def write_scienceqa(root: Path, n_train: int = 130, n_eval: int = 26, text_only_every: int = 13) -> list[str]:
    """A ScienceQA-shaped dataset (image or None, question, choices, answer index, hint,
    solution, subject); every `text_only_every`-th row has no image (skipped and counted)."""
    import datasets

    out = {}
    for split, n in zip(SPLITS, (n_train, n_eval)):
        rs = example_rows(split, n)
        ch = [choices_for(r) for r in rs]
        out[split] = {"image": [None if k % text_only_every == 0 else {"bytes": r["image"], "path": None}
                                for k, r in enumerate(rs)],
                      "question": [r["question"] for r in rs], "choices": ch,
                      "answer": [c.index(r["answer"]) for c, r in zip(ch, rs)],
                      "hint": ["" for _ in rs], "solution": [r["rationale"] for r in rs],
                      "subject": [r["family"] for r in rs]}
    feats = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                               "choices": datasets.Sequence(datasets.Value("string")),
                               "answer": datasets.Value("int64"), "hint": datasets.Value("string"),
                               "solution": datasets.Value("string"), "subject": datasets.Value("string")})
    _save(root, out, feats)
    return ["data.world=hf", f"data.hf.dataset={root}", "data.hf.mapping=scienceqa"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("jsonl", "aokvqa", "scienceqa"))
    ap.add_argument("out", type=Path)
    ap.add_argument("--n-train", type=int, default=2000, help="training rows (jsonl: half rationale, half pool)")
    ap.add_argument("--n-eval", type=int, default=300, help="held-out rows")
    ap.add_argument("--bad-rows", action="store_true", help="jsonl: append a few bad rows to eval.jsonl")
    a = ap.parse_args(argv)
    if a.kind == "jsonl":
        over = write_jsonl(a.out, a.n_train, a.n_eval, a.bad_rows)
    else:
        over = {"aokvqa": write_aokvqa, "scienceqa": write_scienceqa}[a.kind](a.out, a.n_train, a.n_eval)
    print(" ".join(f"'{o}'" if " " in o else o for o in over))
    return 0


if __name__ == "__main__":
    sys.exit(main())
