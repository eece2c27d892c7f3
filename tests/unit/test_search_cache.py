"""The KV-cache search backend (models/search_cache.py) against the reference path that
re-runs every prefix through `generate` (`search.kv_cache=false`).

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/test_search_cache.py
"""

from __future__ import annotations

import os
from collections import defaultdict

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from data.config import DataConfig, SearchConfig, load_config
from data.shapes import corpus, generate
from models.beam import Row, vocab_masks
from models.factory import build_tiny_llava, build_tiny_qwen2vl, train_tokenizer
from models.search import search_candidates
from models.search_cache import CachedRows
from tests.unit.test_search import as_items, one_thread  # noqa: F401  (one_thread: autouse)
from tools.tiny_archs import build_tiny_llava_next, build_tiny_qwen2_5_vl

CFG = SearchConfig(beams=2, per_beam=2, n_candidates=3, max_sentences=3, max_sentence_tokens=8,
                   batch_size=64)
BUILDERS = {"llava": build_tiny_llava, "llava_next": build_tiny_llava_next,
            "qwen2_vl": build_tiny_qwen2vl, "qwen2_5_vl": build_tiny_qwen2_5_vl}


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(corpus(DataConfig(), n=300))


def texts_by_prompt(records: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for r in records:
        out[r["prompt_id"]].append(r["text"])
    return out


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_a_cached_step_gives_the_logits_of_the_full_forward(arch, tokenizer):
    """Prefill, then one sentence step through the cache: the child's next-token logits equal
    those of one forward over prompt + response with the model's own positions (for Qwen2-VL,
    the multimodal rope index computed by `get_rope_index` over the whole sequence)."""
    model, processor = BUILDERS[arch](tokenizer)
    model.eval()
    item = as_items(generate("eval", 1, DataConfig(), 3))[0]
    backend = CachedRows(model, processor, CFG, vocab_masks(model, processor))
    with torch.inference_mode():
        prompt = backend.prompt(item)
        (tokens, _, _, child), = backend([Row(prompt, [], seed=7)], sentence=False, budget=6)
        (more, _, _, grandchild), = backend([Row(prompt, tokens, seed=8, state=child)], sentence=False, budget=3)
        from models.encode import encode_prompts

        enc = encode_prompts(processor, [item["image"]], [item["question"]])
        seq = torch.tensor([tokens + more])
        full = {**enc, "input_ids": torch.cat([enc["input_ids"], seq], 1),
                "attention_mask": torch.ones(1, enc["input_ids"].shape[1] + seq.shape[1], dtype=torch.long)}
        if "mm_token_type_ids" in enc:
            full["mm_token_type_ids"] = torch.cat([enc["mm_token_type_ids"], torch.zeros_like(seq)], 1)
        for m in model.modules():  # a fresh rope index for the whole sequence
            if hasattr(m, "rope_deltas"):
                m.rope_deltas = None
        logits = model(**full).logits[0].float()
    n_prompt = enc["input_ids"].shape[1]
    assert len(tokens) == 6 and len(more) == 3 and child.length == 6 and grandchild.length == 9
    torch.testing.assert_close(child.logits, logits[n_prompt + 5], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grandchild.logits, logits[-1], atol=1e-4, rtol=1e-4)
    assert grandchild.pos - prompt.pos == 9


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_cached_and_reference_paths_give_the_same_candidates(arch, tokenizer):
    model, processor = BUILDERS[arch](tokenizer)
    items = as_items(generate("eval", 4, DataConfig(), 0))
    ref = search_candidates(model, processor, items, CFG.model_copy(update={"kv_cache": False}), seed=0)
    new = search_candidates(model, processor, items, CFG, seed=0)
    assert [(r["prompt_id"], r["text"]) for r in new] == [(r["prompt_id"], r["text"]) for r in ref]
    for a, b in zip(new, ref):
        assert a["sum_logprob"] == pytest.approx(b["sum_logprob"], abs=1e-3)


def test_the_built_in_policy_finds_the_same_candidates_on_200_prompts():
    """The committed base policy, the built-in config's search: at least 95% of the candidate
    texts are identical. A difference can only come from float noise (the cached path sums
    attention over a different padding layout), which flips a draw when a uniform lands within
    ~1e-6 of a token's cdf edge and then changes that beam's later sentences."""
    from models.builtin import resolve_base
    from models.policy import build_policy

    cfg = load_config("configs/builtin.yaml", [])
    model, processor = build_policy(resolve_base(cfg.model.base), [], device="cpu")
    items = as_items(generate("pool", 200, cfg.data, cfg.seed))
    ref = texts_by_prompt(search_candidates(model, processor, items, cfg.search.model_copy(
        update={"kv_cache": False}), seed=0))
    new = texts_by_prompt(search_candidates(model, processor, items, cfg.search, seed=0))
    assert set(new) == set(ref) == {it["prompt_id"] for it in items}
    same = sum(len(set(new[p]) & set(ref[p])) for p in ref)
    total = sum(len(ref[p]) for p in ref)
    assert total >= 200 and same / total >= 0.95, (same, total)


def test_a_step_decodes_every_row_of_every_question_in_one_batch(tokenizer):
    """6 questions join at once: their first step's B*K rows go through each forward together
    (one prefill per question, never one per row), and the batch shrinks as rows end."""
    model, processor = build_tiny_llava(tokenizer)
    sizes: list[int] = []
    original = model.forward

    def counting(*args, **kwargs):
        sizes.append(kwargs["input_ids"].shape[0] if "input_ids" in kwargs else args[0].shape[0])
        return original(*args, **kwargs)

    model.forward = counting
    many = as_items(generate("pool", 6, DataConfig()))
    search_candidates(model, processor, many, CFG.model_copy(update={"max_sentence_tokens": 4,
                                                                     "n_candidates": 2}), seed=0)
    first_step = len(many) * CFG.beams * CFG.per_beam
    assert sizes[:6] == [1] * 6  # the prefills
    assert sizes[6] == first_step and max(sizes) == first_step
