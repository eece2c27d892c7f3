"""The vLLM search backend: its requests, results and prompts on CPU; the backend itself on a GPU.

vLLM does not install on the project's CPU machines, so on CPU these tests check what the backend
hands vLLM (plain data built from the same masks as the transformers backend) and that the
config refuses the backend without the package; `test_vllm_backend_matches_the_transformers_records`
runs the real engine where vLLM and a GPU exist (marker `gpu`).

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/test_search_vllm.py
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from pydantic import ValidationError

from data.config import DataConfig, SearchConfig
from data.shapes import corpus, generate, load_image
from models.encode import encode_prompts
from models.factory import build_tiny_llava, build_tiny_qwen2vl, train_tokenizer
from models.beam import Row, row_seed, vocab_masks
from models.search import search_candidates
from models.search_vllm import BAN_BIAS, _VLLMRows, request_specs, row_result

HAS_VLLM = importlib.util.find_spec("vllm") is not None
CFG = SearchConfig(beams=2, per_beam=2, n_candidates=3, max_sentences=3, max_sentence_tokens=8)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(corpus(DataConfig(), n=300))


@pytest.fixture(scope="module", params=["llava", "qwen2vl"])
def model(request, tokenizer):
    build = build_tiny_llava if request.param == "llava" else build_tiny_qwen2vl
    return build(tokenizer, seed=0)


@pytest.fixture(scope="module")
def items():
    return [{"prompt_id": r["id"], "image": load_image(r["image"]), "question": r["question"]}
            for r in generate("pool", 2, DataConfig())]


def test_prompt_is_the_transformers_prompt_with_one_image_placeholder(model, items):
    m, processor = model
    for it in items:
        hf = encode_prompts(processor, [it["image"]], [it["question"]])["input_ids"][0].tolist()
        ours = _VLLMRows(None, processor, CFG, vocab_masks(m, processor)).prompt(it)
        assert ours["image"] is it["image"]
        # the processor expands the placeholder to the model's image tokens; vLLM does that itself
        image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
        assert hf.count(image_id) > 1
        collapsed = [t for k, t in enumerate(hf) if not (t == image_id and k and hf[k - 1] == t)]
        assert ours["prompt_token_ids"] == collapsed


def test_requests_carry_the_beam_the_row_seed_and_the_search_masks(model, items):
    m, processor = model
    vocab = vocab_masks(m, processor)
    state = _VLLMRows(None, processor, CFG, vocab).prompt(items[0])
    rows = [Row(state, [], row_seed(0, "p", 0, 0, 0)), Row(state, [9, 7], row_seed(0, "p", 1, 0, 1))]
    beam = request_specs(rows, CFG, 8, True, vocab)
    assert beam[0]["prompt_token_ids"] == state["prompt_token_ids"]
    assert beam[1]["prompt_token_ids"] == state["prompt_token_ids"] + [9, 7]
    assert [s["sampling"]["seed"] for s in beam] == [r.seed for r in rows]
    s = beam[1]["sampling"]
    assert (s["temperature"], s["top_p"], s["max_tokens"], s["logprobs"]) == (CFG.temperature, CFG.top_p, 8, 0)
    # beam mode stops at a sentence boundary or EOS, exactly where the transformers backend does
    assert set(s["stop_token_ids"]) == set(vocab.stop.nonzero().flatten().tolist())
    dot = processor.tokenizer.convert_tokens_to_ids(".")
    assert dot in s["stop_token_ids"]
    # sampling mode: whole responses, EOS only
    whole = request_specs(rows, CFG, 64, False, vocab)[0]["sampling"]
    assert set(whole["stop_token_ids"]) == set(vocab.eos.nonzero().flatten().tolist())
    assert dot not in whole["stop_token_ids"]
    # special tokens (the image placeholder among them) are banned, EOS is not
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert state["prompt_token_ids"].count(image_id) == 1
    assert s["logit_bias"][image_id] == BAN_BIAS
    assert not set(s["logit_bias"]) & set(whole["stop_token_ids"])


def test_row_result_reads_tokens_log_prob_and_eos(model):
    m, processor = model
    eos = vocab_masks(m, processor).eos
    eos_id = int(eos.nonzero()[0])
    assert row_result((9, 7, eos_id), -3.5, eos) == ([9, 7, eos_id], -3.5, True)
    assert row_result([9, 7], -1.25, eos) == ([9, 7], -1.25, False)
    assert row_result([], 0.0, eos) == ([], 0.0, False)
    with pytest.raises(ValueError, match="logprobs=0"):
        row_result([9], None, eos)


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_config_refuses_vllm_backend_without_the_package():
    with pytest.raises(ValidationError, match="pip install vllm"):
        SearchConfig(backend="vllm")


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_VLLM and torch.cuda.is_available()), reason="needs vllm and a GPU")
def test_vllm_backend_matches_the_transformers_records(tokenizer, items):
    m, processor = build_tiny_llava(tokenizer, seed=0)
    m = m.to("cuda")
    hf = search_candidates(m, processor, items, CFG, seed=0)
    cfg = CFG.model_copy(update={"backend": "vllm", "vllm_gpu_memory_utilization": 0.2})
    vl = search_candidates(m, processor, items, cfg, seed=0)
    assert vl and list(vl[0]) == list(hf[0])
    for it in items:
        mine = [r for r in vl if r["prompt_id"] == it["prompt_id"]]
        assert 1 <= len(mine) <= CFG.n_candidates
        assert [r["cand_idx"] for r in mine] == list(range(len(mine)))
        assert all(torch.isfinite(torch.tensor(r["sum_logprob"])) for r in mine)
