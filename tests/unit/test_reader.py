"""The reader (models/reader.py): the committed one reads what rationales imply; training with
TRL saves a reader that loads; agreement is counted on parsable candidates only."""

import json

import pytest

from data.config import DataConfig
from data.reading import reader_records
from data.shapes import generate
from models.builtin import BUILTIN_JUDGE, BUILTIN_READER, reader_path
from models.reader import (
    UNCLEAR, agreement, load_reader, read_answers, read_candidates,
    reader_threshold, train_reader,
)


@pytest.fixture(scope="module")
def reader():
    return load_reader("builtin", device="cpu")


def _exists_yes():
    return next(r for r in generate("eval", 40, DataConfig(), 0)
                if json.loads(r["facts"])["query"]["family"] == "exists" and r["answer"] == "yes")


def test_the_committed_reader_supports_gold_and_not_a_contradiction(reader):
    model, tok = reader
    rec = _exists_yes()  # e.g. 'There is a yellow square at the top center.' -> yes
    obj = rec["question"].removeprefix("Is there a ").removesuffix("?")
    denied = f"{rec['rationale']} There is no {obj}."
    cands = [
        {"prompt_id": "p", "cand_idx": 0, "question": rec["question"], "rationale": rec["rationale"], "answer": "yes"},
        {"prompt_id": "p", "cand_idx": 1, "question": rec["question"], "rationale": rec["rationale"], "answer": "no"},
        {"prompt_id": "p", "cand_idx": 2, "question": rec["question"], "rationale": denied, "answer": "no"},
        {"prompt_id": "p", "cand_idx": 3, "question": rec["question"], "rationale": "", "answer": None},
    ]
    threshold = reader_threshold("builtin")
    rows = read_candidates(model, tok, cands, threshold)
    assert [r["supported"] for r in rows] == [True, False, False, None]
    assert rows[0]["read"] == "yes" and rows[0]["confidence"] >= threshold and rows[3]["read"] is None
    # the contradiction: read as 'unclear', or as its answer but below the threshold
    assert rows[2]["read"] == UNCLEAR or rows[2]["confidence"] < threshold
    # a threshold above the reader's confidence makes the gold one unsupported too
    rows = read_candidates(model, tok, cands[:1], threshold=1.01)
    assert rows[0]["read"] == "yes" and rows[0]["supported"] is False


def test_multiple_choice_candidates_are_read_against_their_options(reader):
    """On a multiple-choice candidate the read goes through the options (`match_choice`: a
    letter or a text names an option) before it is compared with the answer; letters
    themselves are covered where they are parsed (tests/unit/test_scoring.py)."""
    model, tok = reader
    rec = _exists_yes()
    cand = {"prompt_id": "p", "cand_idx": 0, "question": rec["question"], "rationale": rec["rationale"]}
    read, _ = read_answers(model, tok, [rec["question"]], [rec["rationale"]])
    assert read == ["yes"]
    # the same read against options where 'yes' is the text of (A) and of (B)
    rows = read_candidates(model, tok, [{**cand, "answer": "yes", "choices": ["yes", "no"]}])
    assert rows[0]["read"] == "yes" and rows[0]["supported"] is True
    rows = read_candidates(model, tok, [{**cand, "answer": "no", "choices": ["no", "yes"]}])
    assert rows[0]["read"] == "yes" and rows[0]["supported"] is False


def test_the_committed_reader_reads_held_out_gold_rationales(reader):
    model, tok = reader
    recs = generate("eval", 100, DataConfig(), 0)
    read, conf = read_answers(model, tok, [r["question"] for r in recs], [r["rationale"] for r in recs])
    assert sum(a == r["answer"] for a, r in zip(read, recs)) >= 95
    assert all(0.0 < p <= 1.0 for p in conf)


def test_train_reader_learns_and_saves_a_reader_that_loads(tmp_path):
    model, tok = load_reader(str(BUILTIN_JUDGE), device="cpu")  # the judge: same tokenizer
    recs = reader_records(generate("scorer", 100, DataConfig(), 0), seed=0)
    out = tmp_path / "reader"
    seen = []
    fit = train_reader(model, tok, recs, out, steps=30, batch_size=16,
                       progress=lambda step, total, logs=None: seen.append((logs or {}).get("loss")))
    losses = [x for x in seen if x is not None]
    assert fit["steps"] == 30 and fit["records"] == len(recs)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5  # it learned something
    again, tok2 = load_reader(str(out), device="cpu")
    read, _ = read_answers(again, tok2, ["How many red objects are there?"], ["There are no red objects."])
    assert len(read) == 1


def test_agreement_counts_parsable_candidates_and_the_correct_ones_apart():
    rows = [{"supported": s} for s in (True, True, False, None)]
    m = agreement(rows, [True, False, False, True], [True, True, False, True])
    assert m["reader/agree_consistent"] == pytest.approx(2 / 3)
    assert m["reader/agree_consistent_correct"] == pytest.approx(1 / 2)
    assert agreement([], []) == {}


def test_builtin_names_the_committed_folder():
    assert reader_path("builtin") == str(BUILTIN_READER)
    assert reader_path("org/some-reader") == "org/some-reader"
    with pytest.raises(ValueError, match="/no/such"):
        load_reader("/no/such/reader", device="cpu")


def test_the_bootstrap_trains_measures_and_writes_its_manifest(tmp_path):
    from tools.reader_bootstrap import main

    out = tmp_path / "reader"
    assert main(["--out", str(out), "--steps", "10", "--records", "40", "--n-heldout", "40",
                 "--threshold", "0.6"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["threshold"] == 0.6 and m["fit"]["steps"] == 10 and m["train_records"] == 160
    assert 0.0 <= m["metrics"]["reader/heldout_read_accuracy"] <= 1.0
    assert not (out / "_trainer").exists()
    assert reader_threshold(str(out)) == 0.6 and reader_threshold(str(out), 0.2) == 0.2


def test_the_bootstrap_chooses_its_threshold_on_held_out_candidates(tmp_path):
    from data.records import write_records
    from data.shapes import format_response
    from tools.reader_bootstrap import THRESHOLDS, main

    cands = []
    for r in generate("eval", 20, DataConfig(), 0):
        for k, answer in enumerate((r["answer"], "unclear-answer")):  # consistent, then not
            cands.append({"prompt_id": r["id"], "cand_idx": k, "question": r["question"],
                          "rationale": r["rationale"], "answer": answer, "gold": r["answer"],
                          "text": format_response(r["rationale"], answer), "facts": r["facts"]})
    write_records(cands, tmp_path / "held.parquet")
    out = tmp_path / "reader"
    assert main(["--out", str(out), "--init", str(BUILTIN_READER), "--steps", "2", "--records", "8",
                 "--n-heldout", "8", "--heldout-candidates", str(tmp_path / "held.parquet")]) == 0
    m = json.loads((out / "manifest.json").read_text())
    by_t = m["metrics"]["reader/agree_consistent_by_threshold"]
    assert m["threshold"] in THRESHOLDS and set(by_t) == {str(t) for t in THRESHOLDS}
    assert by_t[str(m["threshold"])] == max(by_t.values())
    assert m["metrics"]["reader/agree_consistent"] >= 0.9  # the committed reader, barely moved
    # what the guard reads (infra/refs.py), and the reader it continued from
    assert m["world"] == "shapes"
    assert m["init_manifest"] == json.loads((BUILTIN_READER / "manifest.json").read_text())
