"""The judge distilled from a teacher (models/distill.py), against a real HTTP teacher
(tools/fake_teacher.py: the exact scorer's verdicts) and the committed tiny judge's weights."""

from __future__ import annotations

import json
import math
import time

import pytest

from data.config import DataConfig, TeacherConfig, load_config
from data.scoring import claim_holds, format_choices
from data.shapes import generate
from models.distill import (
    ask_claims, ask_reads, claim_rows, held_out, implied, load_init, merged, p_yes, read_rows,
    train_student_checker, train_student_reader, twin_rows,
)
from models.teacher import TeacherClient, TeacherUnavailable
from tools.fake_teacher import FakeTeacher, scene_index, start_server

RECS = generate("pool", 24, DataConfig(), 0)


@pytest.fixture(scope="module")
def served():
    servers = []

    def serve(client: dict | None = None, **kw) -> TeacherClient:
        server, url = start_server(FakeTeacher(scene_index(RECS), **kw))
        servers.append(server)
        cfg = {"endpoint": url, "model": "fake", **(client or {})}
        return TeacherClient(TeacherConfig(**cfg))

    yield serve
    for s in servers:
        s.shutdown()


def cands(texts_of=lambda r: [r["response"]]) -> list[dict]:
    return [{"prompt_id": r["id"], "text": t, "question": r["question"], "reference": r["reference"]}
            for r in RECS for t in texts_of(r)]


IMAGES = {r["id"]: r["image"] for r in RECS}


def test_p_yes_reads_log_probabilities_and_falls_back_on_the_word():
    assert p_yes("yes", {"yes": math.log(0.7), " no": math.log(0.1), "No": math.log(0.2)}) == pytest.approx(0.7)
    assert p_yes("No, it is not.", None) == 0.0 and p_yes("Yes.", {}) == 1.0
    assert p_yes("I cannot tell", None) is None


def test_a_multiple_choice_read_by_letter_or_text_is_the_option():
    ch = ["red", "blue", "green"]
    assert implied("B", ch) == implied("(b) blue", ch) == implied("Blue.", ch) == "blue"
    assert implied("purple", ch) == "unclear" and implied("Unclear.", None) == "unclear"
    assert implied("2", None) == "2"


def test_the_teacher_labels_claims_with_soft_labels_and_reads_answers(served):
    client = served()
    wrong = [{**c, "text": "There is a purple star at the top left. " + c["text"]} for c in cands()]
    claims = ask_claims(client, claim_rows(cands() + wrong, IMAGES))
    star = [c for c in claims if "purple star" in c["claim"]]
    assert star and all(c["p_yes"] == pytest.approx(0.1) and not c["holds"] for c in star)
    assert all(c["p_yes"] == pytest.approx(0.9) for c in claims if c not in star)  # gold sentences hold
    reads = ask_reads(client, read_rows(cands(), IMAGES))
    assert len(reads) == len(RECS) and all(r["implied"] == r["answer"] for r in reads)


def test_multiple_choice_candidates_are_read_as_option_texts(served):
    client = served()
    mc = []
    for r in RECS[:6]:
        ch = sorted({r["answer"], "7", "purple"})
        letter = "ABC"[ch.index(r["answer"])]
        mc.append({"prompt_id": r["id"], "text": f"{r['rationale']} Answer: ({letter}).", "choices": ch,
                   "question": format_choices(r["question"], ch), "reference": r["reference"]})
    reads = ask_reads(client, read_rows(mc, IMAGES))
    assert [(r["answer"], r["implied"]) for r in reads] == [(r["answer"], r["answer"]) for r in RECS[:6]]


def test_a_teacher_that_fails_at_first_is_retried_with_backoff(served):
    client = served(fail_first=2, client={"retries": 3})
    t0 = time.time()
    assert len(ask_reads(client, read_rows(cands()[:1], IMAGES))) == 1
    assert time.time() - t0 >= 1.4  # 0.5 s, then 1 s


def test_a_slow_teacher_stops_the_stage_with_one_line_and_cached_answers_are_kept(served, tmp_path):
    fast = served()
    fast.cache_dir = tmp_path
    rows = claim_rows(cands(), IMAGES)
    ask_claims(fast, rows[:10])
    slow = served(delay=0.5, client={"timeout_s": 0.1, "retries": 1})
    slow.cache_dir = tmp_path
    with pytest.raises(TeacherUnavailable) as err:
        ask_claims(slow, rows)
    msg = str(err.value)
    assert "\n" not in msg and f"{len(rows) - 10} of {len(rows)} claim requests failed" in msg
    assert "re-run to ask only the rest" in msg and slow.hits == 10


def test_held_out_prompts_are_a_tenth_and_stable():
    ids = [f"pool-{i:06d}" for i in range(2000)]
    share = sum(map(held_out, ids)) / len(ids)
    assert 0.07 < share < 0.13 and [held_out(i) for i in ids[:50]] == [held_out(i) for i in ids[:50]]


def test_students_learn_from_the_teacher_and_are_saved_for_their_world(served, tmp_path):
    client = served()
    made_up = lambda r: [r["response"], "There is a purple star at the top left. " + r["response"]]  # noqa: E731
    cs = cands(made_up)
    claims = ask_claims(client, claim_rows(cs, IMAGES))
    reads = ask_reads(client, read_rows(cs, IMAGES))
    cfg = load_config("configs/builtin.yaml", ["scorer.train_steps=30", "scorer.reader_train_steps=5",
                                               "scorer.train_batch_size=8", "model.device=cpu"])
    m = train_student_checker(cfg, claims, tmp_path / "judge", "hf")
    assert m["claims/train_steps"] == 30 and 0.0 <= m["distill/checker_agree_teacher"] <= 1.0
    info = json.loads((tmp_path / "judge" / "src_judge.json").read_text())
    assert (info["mode"], info["world"]) == ("claims", "hf")
    r = train_student_reader(cfg, reads, tmp_path / "judge" / "reader", "hf")
    man = json.loads((tmp_path / "judge" / "reader" / "manifest.json").read_text())
    assert man["world"] == "hf" and 0.0 <= man["threshold"] <= 1.0 and "distill/reader_loss" in r
    assert not (tmp_path / "judge" / "reader" / "_trainer").exists()


def test_lora_on_the_init_trains_adapters_only_and_merges_back_to_the_plain_model():
    model, _ = load_init("builtin", "cpu", lora_r=4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    plain = merged(model)
    assert not any("lora_" in n for n, _ in plain.named_parameters())


def test_a_claims_twin_changes_one_word_and_often_its_truth(served):
    """Twins of the gold rationales' claims: one word replaced by one that another claim has
    between the same neighbours; the teacher labels them, and many of them are false."""
    rows = claim_rows(cands(), {r["id"]: r["image"] for r in RECS})
    twins = twin_rows(rows, seed=0)
    assert len(twins) > len(rows) // 2 and twin_rows(rows, seed=0) == twins  # deterministic
    by = {(r["id"], r["claim"]) for r in rows}
    facts = {r["id"]: r["facts"] for r in RECS}
    for t in twins:
        assert (t["id"], t["claim"]) not in by and t["reference"] == next(r["reference"] for r in rows if r["id"] == t["id"])
        assert any(sum(a != b for a, b in zip(t["claim"].split(), r["claim"].split())) == 1
                   for r in rows if r["id"] == t["id"] and len(r["claim"].split()) == len(t["claim"].split()))
    assert all(claim_holds(r["claim"], facts[r["id"]]) for r in rows)  # gold: true
    assert sum(not claim_holds(t["claim"], facts[t["id"]]) for t in twins) > len(twins) // 2
    labelled = ask_claims(served(), twins)
    assert len(labelled) == len(twins) and sum(c["holds"] for c in labelled) < len(twins) // 2
