"""Candidate search: sentence-level beam search and sampling on the tiny LLaVA and Qwen2-VL.

Random weights give garbage text but real structure (dedup, ordering, log-probs, batching,
determinism); a tiny LLaVA overfitted in a few seconds on gold `exists` responses gives
parsable `... Answer: yes.` candidates for the answer-confidence checks.

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/test_search.py
"""

from __future__ import annotations

import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from data.config import DataConfig, SearchConfig
from data.scoring import split_sentences
from data.shapes import corpus, format_response, generate, load_image
from models.chat import render_prompt
from models.encode import completion_text, encode_examples
from models.factory import TinyLlavaSpec, build_tiny_llava, build_tiny_qwen2vl, train_tokenizer
from models.search import (
    RowSampler,
    answer_confidence,
    normalize_text,
    search_candidates,
)
from tools.search_bench import benchmark_search

CFG = SearchConfig(beams=2, per_beam=2, n_candidates=3, max_sentences=3,
                   max_sentence_tokens=8, batch_size=64)
FIELDS = ["prompt_id", "cand_idx", "text", "rationale", "answer", "sum_logprob",
          "mean_logprob", "n_tokens", "answer_confidence"]
SMALL = TinyLlavaSpec(num_layers=2, vision_layers=1, hidden_size=64, intermediate_size=128,
                      num_heads=2, num_kv_heads=1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP
    # spin-waiting made each forward ~50x slower whenever another process was busy.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(corpus(DataConfig(), n=300))


def as_items(records: list[dict]) -> list[dict]:
    return [{"prompt_id": r["id"], "image": load_image(r["image"]), "question": r["question"]}
            for r in records]


@pytest.fixture(scope="module")
def items():
    return as_items(generate("pool", 3, DataConfig()))


@pytest.fixture(scope="module", params=["llava", "qwen2vl"])
def model(request, tokenizer):
    build = build_tiny_llava if request.param == "llava" else build_tiny_qwen2vl
    return build(tokenizer, seed=0)


@pytest.fixture(scope="module")
def beam_records(model, items):
    return search_candidates(*model, items, CFG, seed=0)


@pytest.fixture(scope="module")
def tuned(tokenizer):
    """A small LLaVA overfitted on 8 gold `exists` responses: `<mentions> Answer: yes/no.`"""
    recs = generate("rationale", 8, DataConfig(families=["exists"]))
    model, processor = build_tiny_llava(tokenizer, SMALL, seed=0)
    batch = encode_examples(processor, [load_image(r["image"]) for r in recs],
                            [r["question"] for r in recs], [r["response"] for r in recs])
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(40):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1.0
    return model.eval(), processor, as_items(recs[:4])


def check_records(records: list[dict], items: list[dict], n: int) -> None:
    ids = [it["prompt_id"] for it in items]
    assert [r["prompt_id"] for r in records] == sorted(
        (r["prompt_id"] for r in records), key=ids.index)  # items order
    assert {r["prompt_id"] for r in records} == set(ids)
    for pid in ids:
        mine = [r for r in records if r["prompt_id"] == pid]
        assert 1 <= len(mine) <= n
        assert [r["cand_idx"] for r in mine] == list(range(len(mine)))
        keys = [normalize_text(r["text"]) for r in mine]
        assert len(set(keys)) == len(keys), keys  # distinct
        means = [r["mean_logprob"] for r in mine]
        assert means == sorted(means, reverse=True)  # best first
    for r in records:
        assert list(r) == FIELDS
        assert math.isfinite(r["sum_logprob"]) and r["sum_logprob"] <= 0
        assert r["n_tokens"] >= 1
        assert r["mean_logprob"] == pytest.approx(r["sum_logprob"] / r["n_tokens"])
        if r["answer"] is None:
            assert r["answer_confidence"] is None
        else:
            assert 0.0 <= r["answer_confidence"] <= 1.0
            assert "answer:" in r["text"].lower()


def test_beam_records_are_distinct_ranked_and_finite(beam_records, items):
    check_records(beam_records, items, CFG.n_candidates)


def test_sampling_mode(model, items):
    cfg = CFG.model_copy(update={"mode": "sample", "max_sentence_tokens": 4})
    records = search_candidates(*model, items[:2], cfg, seed=0)
    check_records(records, items[:2], cfg.n_candidates)


def test_same_seed_same_candidates_whatever_the_batch(model, items, beam_records):
    # batch_size 4 = the B*K rows of one question's first step: one generate call per
    # question and step instead of one per step; the random streams are per row.
    small = search_candidates(*model, items[1:][::-1], CFG.model_copy(update={"batch_size": 4}),
                              seed=0)
    by_id = {}
    for r in small:
        by_id.setdefault(r["prompt_id"], []).append(r["text"])
    for pid, texts in by_id.items():
        assert texts == [r["text"] for r in beam_records if r["prompt_id"] == pid]
    other = search_candidates(*model, items[1:2], CFG, seed=1)
    assert [r["text"] for r in other] != by_id[items[1]["prompt_id"]]


def test_one_generate_call_per_step_for_all_questions(tokenizer):
    """The reference path (`search.kv_cache=false`): one `generate` call per sentence step."""
    model, processor = build_tiny_llava(tokenizer, SMALL, seed=0)
    calls = []
    original = model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    model.generate = counting
    many = as_items(generate("pool", 6, DataConfig()))
    cfg = CFG.model_copy(update={"max_sentence_tokens": 4, "kv_cache": False})
    done = []
    search_candidates(model, processor, many, cfg, seed=0, progress=lambda d, t: done.append((d, t)))
    # every step holds all live beams of all 6 questions: at most one call per sentence step,
    # where a per-question loop would need at least 6
    assert len(calls) <= cfg.max_sentences < len(many)
    assert calls[0] == len(many) * cfg.beams * cfg.per_beam
    assert done[-1] == (6, 6) and [d for d, _ in done] == sorted(d for d, _ in done)


def test_row_sampler_respects_top_p_temperature_and_banned_tokens():
    scores = torch.log(torch.tensor([[0.6, 0.3, 0.1, 0.0001]] * 200))
    u = torch.rand(200, 1, generator=torch.Generator().manual_seed(0))
    banned = torch.tensor([False, False, False, True])

    def draw(**kw):
        cfg = SearchConfig(**kw)
        out = RowSampler(u, 5, cfg, banned)(torch.zeros(200, 5, dtype=torch.long), scores)
        assert (out == 0).sum(1).eq(1).all()  # exactly one finite token per row
        return out.argmax(1)

    assert draw(top_p=0.5).eq(0).all()  # the nucleus holds only the 0.6 token
    assert set(draw(top_p=0.85).tolist()) == {0, 1}
    assert set(draw().tolist()) <= {0, 1, 2}  # token 3 is banned
    assert draw(temperature=0.01).eq(0).all()
    freq = draw(temperature=1.0).bincount(minlength=4).float() / 200
    assert freq[0] == pytest.approx(0.6, abs=0.1)


def test_tuned_model_finishes_beams_at_the_answer(tuned):
    model, processor, items = tuned
    cfg = CFG.model_copy(update={"max_sentences": 4, "max_sentence_tokens": 12})
    records = search_candidates(model, processor, items, cfg, seed=0)
    check_records(records, items, cfg.n_candidates)
    parsable = [r for r in records if r["answer"] is not None]
    assert parsable, [r["text"] for r in records]
    for r in parsable:  # nothing after the sentence that holds the answer
        assert "answer:" in split_sentences(r["text"])[-1].lower()
        assert r["answer_confidence"] > 0


@pytest.mark.parametrize("arch", ["llava", "qwen2vl"])
def test_answer_confidence_by_hand(arch, tokenizer, items):
    build = build_tiny_llava if arch == "llava" else build_tiny_qwen2vl
    model, processor = build(tokenizer, seed=1)
    image, question = items[0]["image"], items[0]["question"]
    rationale, answer = "There is a red circle at the top left.", "1"
    got = answer_confidence(model, processor, [image, image], [question, question],
                            [rationale, rationale], [answer, None], batch_size=2)
    assert math.isnan(got[1])
    # by hand: the model reads prompt + completion once; the answer tokens are those after
    # "... Answer:" up to the answer's end; sum their log-probs
    prompt = render_prompt(processor, question)
    comp = completion_text(processor, format_response(rationale, answer))
    cut = comp.index("Answer:") + len("Answer:")

    def enc(text: str) -> dict:
        return processor(images=[image], text=[text], return_tensors="pt")

    full, before = enc(prompt + comp), enc(prompt + comp[:cut])
    through = enc(prompt + comp[:cut] + " " + answer)["input_ids"][0]
    ids, start, upto = full["input_ids"][0], before["input_ids"].shape[1], len(through)
    assert torch.equal(ids[:start], before["input_ids"][0]) and torch.equal(ids[:upto], through)
    with torch.no_grad():
        logp = torch.log_softmax(model(**full).logits[0].float(), -1)
    hand = sum(logp[t - 1, ids[t]].item() for t in range(start, upto))
    assert upto > start and got[0] == pytest.approx(math.exp(hand), rel=1e-4)
    assert 0.0 < got[0] < 1.0


def test_benchmark_reports_every_way(tokenizer, items):
    model, processor = build_tiny_llava(tokenizer, SMALL, seed=0)
    cfg = CFG.model_copy(update={"max_sentences": 2, "max_sentence_tokens": 4})
    report = benchmark_search(model, processor, items[:3], cfg)
    assert report["same_candidates"] and report["same_as_reference"] == 1.0
    for name in ("batched", "reference", "per_question_search", "batched_sample", "per_question_sample"):
        stats = report[name]
        assert stats["candidates"] >= 3 and 0 < stats["forward_share"] <= 1 and stats["tokens_per_s"] > 0
        assert stats["prefill_share"] <= stats["forward_share"]
        assert report[f"speedup_vs_{name}"] > 0 if name != "batched" else True
    # the cached search prefills each prompt once; the reference re-runs prefixes every step
    assert 0 < 3 * report["batched"]["prefill_tokens"] < report["reference"]["prefill_tokens"]


def test_duplicate_prompt_ids_are_refused(model, items):
    with pytest.raises(ValueError, match="occurs more than once"):
        search_candidates(*model, [items[0], items[0]], CFG, seed=0)
