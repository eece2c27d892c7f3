"""Rationale SFT (models/sft.py): LoRA-only updates, loss falls, both architectures, data errors.

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/test_sft.py
"""

from __future__ import annotations

import copy
import math
import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from peft import get_peft_model
from transformers import set_seed
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from data.config import DataConfig, RationaleSFTConfig
from data.shapes import corpus, generate
from models.factory import build_tiny_llava, build_tiny_qwen2vl, train_tokenizer
from models.policy import BASE_INFO_FILE, peft_lora_config
from models.sft import sft_dataset, train_rationale_sft


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for these tests, restored after.

    On a shared 2-core machine two OpenMP threads thrash as soon as other processes run: one
    SFT step of the tiny LLaVA took 8.7 s with 2 threads against 0.3 s with 1 (load ~8).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(corpus(DataConfig(), n=500))


@pytest.fixture(scope="module")
def records():
    return generate("rationale", 32, DataConfig())


def base_name(name: str) -> str:
    """Name of a parameter before PEFT wrapped its layer ("q_proj.base_layer.weight" -> "q_proj.weight")."""
    return name.replace(".base_layer.", ".")


def test_dataset_is_prompt_completion_with_plain_question(records):
    ds = sft_dataset(records, max_examples=4)
    assert len(ds) == 4 and set(ds.column_names) == {"images", "prompt", "completion"}
    row = ds[0]
    assert [m["role"] for m in row["prompt"]] == ["user"]
    texts = [b["text"] for b in row["prompt"][0]["content"] if b["type"] == "text"]
    assert texts == [records[0]["question"]]  # the plain question, no instruction to reason
    assert row["completion"][0]["content"][0]["text"] == records[0]["response"]
    assert row["images"][0].size == (64, 64)


@pytest.mark.parametrize("builder", [build_tiny_llava, build_tiny_qwen2vl])
def test_loss_is_on_the_response_only(tokenizer, records, builder):
    """TRL's VLM collator on our rows: the labelled tokens are exactly response + end of turn."""
    _, processor = builder(tokenizer, seed=0)
    collate = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    batch = collate([dict(r) for r in sft_dataset(records, max_examples=3)])
    tok = processor.tokenizer
    for i, r in enumerate(records[:3]):
        labelled = batch["labels"][i][batch["labels"][i] != -100]
        assert tok.decode(labelled).strip() == r["response"] + tok.eos_token


def test_dataset_names_the_bad_record(records):
    bad = [dict(records[0]), {k: v for k, v in records[1].items() if k != "response"}]
    with pytest.raises(ValueError, match=r"record 1 .*\['response'\]"):
        sft_dataset(bad)
    with pytest.raises(ValueError, match="at least one"):
        sft_dataset([])


def test_two_steps_change_every_lora_parameter_and_nothing_else(tokenizer, records, tmp_path):
    model, processor = build_tiny_llava(tokenizer, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = RationaleSFTConfig(max_steps=2, batch_size=8, learning_rate=1e-3)
    # TRL seeds, then wraps the model with PEFT: the same seed gives the initial LoRA weights
    set_seed(0)
    initial = get_peft_model(copy.deepcopy(model), peft_lora_config(model, cfg.lora))
    init_lora = {n.removeprefix("base_model.model."): p.detach().clone()
                 for n, p in initial.named_parameters() if "lora_" in n}
    steps = []
    metrics = train_rationale_sft(model, processor, records, cfg, tmp_path / "a", seed=0,
                                  progress=lambda s, t, logs: steps.append((s, t)), merge=False)
    after = dict(model.named_parameters())
    lora = {n: p for n, p in after.items() if "lora_" in n}
    assert lora and set(lora) == set(init_lora)
    assert all(".language_model." in n for n in lora)  # "all-linear" = language model only
    assert sum(p.numel() for p in lora.values()) == metrics["trainable_params"]
    for n, p in lora.items():
        assert not torch.equal(p, init_lora[n]), f"{n} did not change"
    for n, p in after.items():
        if "lora_" not in n:
            assert torch.equal(p, before[base_name(n)]), f"{n} changed"
    assert metrics["steps"] == 2 and (2, 2) in steps
    files = set(os.listdir(tmp_path / "a"))
    assert {"adapter_config.json", "adapter_model.safetensors", BASE_INFO_FILE} <= files
    assert json.loads((tmp_path / "a" / BASE_INFO_FILE).read_text())["model_type"] == "llava"


def test_loss_falls_on_gold_rationales(tokenizer, records, tmp_path):
    model, processor = build_tiny_llava(tokenizer, seed=0)
    cfg = RationaleSFTConfig(max_steps=40, batch_size=8, learning_rate=2e-3)
    m = train_rationale_sft(model, processor, records, cfg, tmp_path / "a", seed=0)
    assert m["steps"] == 40 and m["examples"] == 32
    assert m["loss_tail"] < m["loss_first"] - 1.0, m
    # merged: a plain model again, no LoRA layer and no TRL forward patch left behind
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert "forward" not in vars(model) and not model.training


def test_one_step_on_tiny_qwen2vl(tokenizer, records, tmp_path):
    model, processor = build_tiny_qwen2vl(tokenizer, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = RationaleSFTConfig(max_steps=1, batch_size=4, learning_rate=1e-3)
    m = train_rationale_sft(model, processor, records[:8], cfg, tmp_path / "q", seed=0, merge=False)
    assert m["steps"] == 1 and m["loss_first"] > 0
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b.values())  # zero-initialised
    for n, p in model.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, before[base_name(n)]), f"{n} changed"
    info = json.loads((tmp_path / "q" / BASE_INFO_FILE).read_text())
    assert info["model_type"] == "qwen2_vl"


def test_train_lm_head_trains_the_head_too_and_merges_it(tokenizer, records, tmp_path):
    model, processor = build_tiny_llava(tokenizer, seed=0)
    head_before = model.lm_head.weight.detach().clone()
    layer_before = {n: p.detach().clone() for n, p in model.named_parameters()
                    if ".vision_tower." in n}
    cfg = RationaleSFTConfig(max_steps=2, batch_size=8, learning_rate=1e-3)
    cfg.lora.train_lm_head = True
    assert peft_lora_config(model, cfg.lora).modules_to_save == ["lm_head"]
    metrics = train_rationale_sft(model, processor, records, cfg, tmp_path / "h", seed=0)
    assert metrics["trainable_params"] > model.lm_head.weight.numel()  # LoRA + the full head
    # merged in place: the trained head is the model's own head now, the vision tower untouched
    assert not torch.equal(model.lm_head.weight, head_before)
    for n, p in model.named_parameters():
        if n in layer_before:
            assert torch.equal(p, layer_before[n]), f"{n} changed"
    from models.policy import build_policy, check_adapter_fits

    check_adapter_fits(build_tiny_llava(tokenizer, seed=0)[0], tmp_path / "h")
    base_dir = tmp_path / "base"
    fresh, proc = build_tiny_llava(tokenizer, seed=0)
    from models.loading import save_lvlm

    save_lvlm(fresh, proc, base_dir)
    rebuilt, _ = build_policy(str(base_dir), [str(tmp_path / "h")], device="cpu")
    assert torch.allclose(rebuilt.lm_head.weight, model.lm_head.weight, atol=1e-6)  # pi_t from base + chain



def test_a_killed_training_resumes_from_its_checkpoint_to_the_same_adapter(tokenizer, records, tmp_path):
    from safetensors.torch import load_file

    cfg = RationaleSFTConfig(max_steps=6, batch_size=8, learning_rate=1e-3, save_steps=2)

    def kill_at_step_5(step, total, logs):  # stands in for SIGKILL, after checkpoint-4 is saved
        if step == 5:
            raise KeyboardInterrupt

    def train(out, ckpt, progress=None):
        model, processor = build_tiny_llava(tokenizer, seed=0)
        return train_rationale_sft(model, processor, records, cfg, out, seed=0, progress=progress,
                                   checkpoint_dir=ckpt)
    whole = train(tmp_path / "whole", None)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "killed", tmp_path / "ckpt", kill_at_step_5)
    assert [d for d in os.listdir(tmp_path / "ckpt") if d.startswith("checkpoint-")] == ["checkpoint-4"]
    steps = []
    resumed = train(tmp_path / "resumed", tmp_path / "ckpt", lambda s, t, logs: steps.append(s))
    assert resumed["steps"] == whole["steps"] == 6 and steps[0] == 5  # went on from step 4
    a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(b[k], a[k]), k  # bit for bit: the store digests must agree


def test_the_schedule_warms_up_then_follows_its_curve(tokenizer, records, tmp_path):
    model, processor = build_tiny_llava(tokenizer, seed=0)
    cfg = RationaleSFTConfig(max_steps=8, batch_size=4, learning_rate=1e-3, lr_scheduler="cosine",
                             warmup_ratio=0.25)
    seen: list[float] = []
    train_rationale_sft(model, processor, records, cfg, tmp_path / "c", seed=0,
                        progress=lambda step, total, logs: seen.extend([logs["learning_rate"]] if "learning_rate" in logs else []))
    # the rate each step trained at: 2 warm-up steps (0.25 x 8) from 0, the peak, then cosine
    # over the 6 left: 1e-3 x (1 + cos(pi k / 6)) / 2 for k = 1..5
    assert seen[:3] == pytest.approx([0.0, 5e-4, 1e-3])
    assert seen[3:] == pytest.approx([0.5e-3 * (1 + math.cos(math.pi * k / 6)) for k in range(1, 6)])
    # the default stays the old one: linear decay, no warm-up
    assert RationaleSFTConfig().lr_scheduler == "linear" and RationaleSFTConfig().warmup_ratio == 0.0
