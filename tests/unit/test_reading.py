"""Reader training records: labels are what each rationale implies, edits cover the policy's
failure modes, and the records are deterministic."""

import json
import random

from data.config import DataConfig
from data.reading import EDITS, UNCLEAR, candidate_records, edit, reader_records
from data.scoring import implied_answer, split_sentences
from data.shapes import generate

CFG = DataConfig()


def test_gold_rationales_imply_their_answer_and_edits_are_labelled_by_what_they_imply():
    recs = generate("scorer", 60, CFG, 0)
    out = reader_records(recs, seed=0, edits_per_record=3)
    assert len(out) == 60 * 4
    by_id = {r["id"]: r for r in recs}
    for r in out:
        facts = by_id[r["id"]]["facts"]
        assert r["implied"] == (implied_answer(r["rationale"], facts) or UNCLEAR)
    golds = [r for r in out if r["kind"] == "gold"]
    assert all(r["implied"] == by_id[r["id"]]["answer"] for r in golds)
    edited = [r for r in out if r["kind"] == "edited"]
    # the edits change what is implied often, and often to nothing at all
    assert sum(r["implied"] == UNCLEAR for r in edited) >= len(edited) // 10
    assert sum(r["implied"] != by_id[r["id"]]["answer"] for r in edited) >= len(edited) // 4
    assert reader_records(recs, seed=0) == out
    assert reader_records(recs, seed=1) != out


def test_a_mention_and_its_denial_imply_nothing():
    rec = next(r for r in generate("scorer", 40, CFG, 0)
               if json.loads(r["facts"])["query"]["family"] == "exists" and r["answer"] == "yes")
    f = json.loads(rec["facts"])
    sents = edit([rec["rationale"]], f["query"], f["grid"], "add_denial", random.Random(0))
    text = " ".join(sents)
    assert "There is no" in text and implied_answer(text, f) is None


def test_each_edit_runs_on_every_family():
    for rec in generate("scorer", 10, CFG, 0):
        f = json.loads(rec["facts"])
        for kind in EDITS:
            assert edit([rec["rationale"]], f["query"], f["grid"], kind, random.Random(1))


def test_policy_candidates_become_records_labelled_the_same_way():
    rec = generate("scorer", 1, CFG, 0)[0]
    c = {"question": rec["question"], "rationale": rec["rationale"], "facts": rec["facts"]}
    (r,) = candidate_records([c, {**c, "facts": None}])
    assert r["implied"] == rec["answer"] and r["kind"] == "policy"


def test_retarget_aims_the_closing_sentence_at_an_object_the_question_does_not_ask_about():
    seen = set()
    for rec in generate("scorer", 80, CFG, 0):
        f = json.loads(rec["facts"])
        q = f["query"]
        if q["family"] not in ("left_right", "count_color", "count_shape"):
            continue
        sents = split_sentences(rec["rationale"])
        out = edit(sents, q, f["grid"], "retarget", random.Random(rec["id"]))
        assert out[:-1] == sents[:-1] and out[-1] != sents[-1]  # only the closing sentence
        if q["family"] == "left_right":  # "The red square is left of the green circle."
            pair = {tuple(q["a"]), tuple(q["b"])}
            words = out[-1].rstrip(".").split(" ")
            assert {(words[1], words[2]), (words[-2], words[-1])} != pair
        elif q["family"] == "count_color":  # "That makes 2 red objects." -> another colour
            assert q["color"] not in out[-1]
        seen.add(q["family"])
    assert seen == {"left_right", "count_color", "count_shape"}
