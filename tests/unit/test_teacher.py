"""Teacher rationale source: the filter on hand-written replies, and the client end to end
against a real local server (tools/serve.py) serving the committed tiny LLaVA."""

from __future__ import annotations

import pytest

from data.config import DataConfig, TeacherConfig
from data.scoring import normalize_answer, parse_response
from data.shapes import generate
from models.teacher import (
    TeacherClient, TeacherError, describe_images, filter_rationales, synthesize_rationales,
)


def test_filter_keeps_only_replies_whose_answer_is_gold():
    recs = [{"id": f"q{i}", "answer": a} for i, a in enumerate(["2", "red", "yes", "no", "1"])]
    replies = [
        ("There are two red objects.\nAnswer: 2.", None),  # kept
        ("The circle is blue. Answer: blue.", None),       # answer_mismatch
        ("I think so, yes.", None),                        # unparsable: no 'Answer:'
        ("Answer: no.", None),                             # empty_rationale
        (None, "http://x unreachable"),                    # request_failed
    ]
    kept, dropped = filter_rationales(recs, replies)
    assert [r["id"] for r in kept] == ["q0"]
    assert kept[0]["rationale"] == "There are two red objects."
    assert kept[0]["response"] == "There are two red objects. Answer: 2."
    assert [(d["id"], d["reason"]) for d in dropped] == [
        ("q1", "answer_mismatch"), ("q2", "unparsable"), ("q3", "empty_rationale"),
        ("q4", "request_failed")]
    assert dropped[3]["raw"] == "http://x unreachable"  # the error is kept for audit
    with pytest.raises(ValueError, match="2 teacher replies for 5 records"):
        filter_rationales(recs, replies[:2])


def test_client_needs_endpoint_and_model():
    with pytest.raises(ValueError, match="teacher.endpoint"):
        TeacherClient(TeacherConfig(model="m"))


def test_unreachable_endpoint_is_one_dropped_row_not_a_crash():
    client = TeacherClient(TeacherConfig(endpoint="http://127.0.0.1:9/v1", model="m", retries=1,
                                         timeout_s=2))
    with pytest.raises(TeacherError, match="unreachable"):
        client.chat([{"role": "user", "content": "hi"}])
    recs = generate("rationale", 2, DataConfig())
    kept, dropped = synthesize_rationales(client, recs)
    assert kept == [] and [d["reason"] for d in dropped] == ["request_failed"] * 2


@pytest.fixture(scope="module")
def served(base_model):
    from models.loading import load_lvlm
    from tools.serve import start_server

    model, processor = load_lvlm(base_model, device="cpu")
    server = start_server(model, processor, "tiny-llava")
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", model, processor
    server.shutdown()


def test_real_server_round_trip(served):
    url, model, processor = served
    client = TeacherClient(TeacherConfig(endpoint=url, model="tiny-llava", max_tokens=24))
    recs = generate("rationale", 6, DataConfig())
    replies = client.map([[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]])
    assert replies[0][0] is None and "HTTP 400" in replies[0][1]  # a bad image is the client's error
    kept, dropped = synthesize_rationales(client, recs)
    assert len(kept) + len(dropped) == len(recs)
    # every decision matches an independent parse of what the real model replied
    for row in dropped:
        assert row["reason"] in {"unparsable", "empty_rationale", "answer_mismatch"}
        p = parse_response(row["raw"])
        gold = next(r["answer"] for r in recs if r["id"] == row["id"])
        assert not (p.ok and p.rationale and p.answer == normalize_answer(gold))
    for row in kept:
        assert row["response"].endswith(f"Answer: {row['answer']}.")
    described, failed = describe_images(client, recs[:2])
    assert len(described) + len(failed) == 2
    assert all(r["reference"] for r in described)


def test_the_cache_asks_nothing_twice_and_a_changed_request_asks_again(served, tmp_path):
    url, model, processor = served
    cfg = TeacherConfig(endpoint=url, model="tiny-llava", max_tokens=16)
    recs = generate("rationale", 4, DataConfig())
    first = TeacherClient(cfg, cache_dir=tmp_path / "cache")
    kept1, dropped1 = synthesize_rationales(first, recs)
    assert (first.hits, first.misses) == (0, 4)
    again = TeacherClient(cfg, cache_dir=tmp_path / "cache")
    kept2, dropped2 = synthesize_rationales(again, recs)
    assert (again.hits, again.misses) == (4, 0) and (kept2, dropped2) == (kept1, dropped1)
    # a new question, a longer reply budget or another image is a new request
    changed = [dict(recs[0], question=recs[0]["question"] + " Really?"), dict(recs[1], image=recs[2]["image"])]
    third = TeacherClient(cfg, cache_dir=tmp_path / "cache")
    synthesize_rationales(third, changed)
    assert (third.hits, third.misses) == (0, 2)
    longer = TeacherClient(TeacherConfig(endpoint=url, model="tiny-llava", max_tokens=17), cache_dir=tmp_path / "cache")
    synthesize_rationales(longer, recs[:1])
    assert longer.misses == 1
    # the server is gone: the cached replies still come back, the others fail as rows
    offline = TeacherClient(TeacherConfig(endpoint="http://127.0.0.1:9/v1", model="tiny-llava", max_tokens=16,
                                          retries=0, timeout_s=2), cache_dir=tmp_path / "cache")
    assert synthesize_rationales(offline, recs) == (kept1, dropped1) and offline.hits == 4
