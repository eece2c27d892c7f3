"""pi_t = base + merged chain of adapters (models/policy.py): rebuilt exactly; misfits refused.

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/test_policy.py
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from peft import get_peft_model

from data.config import DataConfig, DPOConfig, LoraConfig, RationaleSFTConfig
from data.shapes import corpus, generate, load_image
from models.chat import render_prompt
from models.dpo import train_dpo
from models.factory import (
    TinyLlavaSpec,
    build_tiny_llava,
    build_tiny_qwen2vl,
    train_tokenizer,
)
from models.loading import load_lvlm, save_lvlm
from models.policy import build_policy, check_adapter_fits, finish_adapter, peft_lora_config
from models.sft import train_rationale_sft


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread (see tests/unit/test_sft.py: two threads thrash on a loaded 2-core box)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(corpus(DataConfig(), n=500))


@pytest.fixture(scope="module")
def records():
    return generate("rationale", 16, DataConfig())


@pytest.fixture(scope="module")
def chain(tokenizer, records, tmp_path_factory):
    """Base saved to disk; then, in memory, SFT (adapter a1, merged) and one DPO iteration (a2)."""
    root = tmp_path_factory.mktemp("policy")
    save_lvlm(*build_tiny_llava(tokenizer, seed=0), root / "base")
    model, processor = load_lvlm(str(root / "base"), device="cpu")
    sft = RationaleSFTConfig(max_steps=3, batch_size=4, learning_rate=5e-3)
    train_rationale_sft(model, processor, records, sft, root / "a1", seed=0)
    pairs = [{"prompt_id": r["id"], "question": r["question"], "image": r["image"],
              "chosen": r["response"], "rejected": r["short_response"], "weight": 0.8}
             for r in records]
    dpo = DPOConfig(max_steps=3, batch_size=4, learning_rate=5e-3)
    train_dpo(model, processor, pairs, dpo, root / "a2", seed=1)
    return model, processor, root


def logits(model, processor, records):
    texts = [render_prompt(processor, r["question"]) + " " + r["response"] for r in records[:4]]
    images = [load_image(r["image"]) for r in records[:4]]
    batch = processor(images=images, text=texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def test_build_policy_reproduces_the_trained_model(chain, records):
    trained, processor, root = chain
    base, a1, a2 = str(root / "base"), str(root / "a1"), str(root / "a2")
    rebuilt, rebuilt_processor = build_policy(base, [a1, a2], device="cpu")
    assert not any("lora_" in n for n, _ in rebuilt.named_parameters()) and not rebuilt.training
    expected = logits(trained, processor, records)
    torch.testing.assert_close(logits(rebuilt, rebuilt_processor, records), expected,
                               rtol=1e-5, atol=1e-5)
    # each adapter matters, and the order is the chain's
    for shorter in ([], [a1]):
        partial, _ = build_policy(base, shorter, device="cpu")
        assert (logits(partial, processor, records) - expected).abs().max() > 1e-3


def test_check_adapter_fits_accepts_its_own_adapters(chain):
    trained, _, root = chain
    base, _ = load_lvlm(str(root / "base"), device="cpu")
    check_adapter_fits(base, root / "a1")
    check_adapter_fits(trained, root / "a2")


def _untrained_adapter(model, path):
    """Zero-B LoRA saved like a training stage would save it (no training needed for the check)."""
    peft_model = get_peft_model(model, peft_lora_config(model, LoraConfig(r=4, alpha=8)))
    return finish_adapter(peft_model, model, path)


def test_adapter_of_another_architecture_is_refused(tokenizer, chain, tmp_path):
    _, _, root = chain
    llava, _ = load_lvlm(str(root / "base"), device="cpu")
    qwen, _ = build_tiny_qwen2vl(tokenizer, seed=0)
    adapter = _untrained_adapter(qwen, tmp_path / "qwen")
    with pytest.raises(ValueError, match="'qwen2_vl' model .*not on this 'llava' model"):
        check_adapter_fits(llava, adapter)
    with pytest.raises(ValueError, match="qwen2_vl"):
        build_policy(str(root / "base"), [str(adapter)], device="cpu")


def test_adapter_of_another_size_is_refused(tokenizer, chain, tmp_path):
    _, _, root = chain
    llava, _ = load_lvlm(str(root / "base"), device="cpu")
    small, _ = build_tiny_llava(tokenizer, TinyLlavaSpec(hidden_size=64, intermediate_size=192))
    adapter = _untrained_adapter(small, tmp_path / "small")
    with pytest.raises(ValueError, match=r"does not fit .*shape \(4, 64\), the model needs \(4, 128\)"):
        check_adapter_fits(llava, adapter)


def test_adapter_with_unknown_modules_or_no_adapter_is_refused(chain, tmp_path):
    _, _, root = chain
    llava, _ = load_lvlm(str(root / "base"), device="cpu")
    bad = tmp_path / "renamed"
    shutil.copytree(root / "a1", bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    config["target_modules"] = ["nonexistent_proj"]
    (bad / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="match no linear layer"):
        check_adapter_fits(llava, bad)
    with pytest.raises(ValueError, match="adapter_config.json"):
        check_adapter_fits(llava, tmp_path)


def test_a_pickled_adapter_is_not_read(chain, tmp_path):
    _, _, root = chain
    llava, _ = load_lvlm(str(root / "base"), device="cpu")
    pickled = tmp_path / "pickled"
    shutil.copytree(root / "a1", pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")  # any bytes: never opened
    with pytest.raises(ValueError, match="adapter_model.bin is not read: convert it to safetensors"):
        check_adapter_fits(llava, pickled)


def test_an_adapter_folder_holds_no_path_of_this_checkout(tmp_path):
    """The adapter's folder is hashed into every later key: the committed base is recorded
    relative to the project, and PEFT's model card (with the absolute path) is not kept."""
    import json

    from models.builtin import BUILTIN_BASE, resolve_base

    base, _ = load_lvlm(resolve_base("builtin"), device="cpu")
    out = _untrained_adapter(base, tmp_path / "a")
    assert not (out / "README.md").exists()
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "models/builtin/base"
    assert json.loads((out / "base_model.json").read_text())["base"] == "models/builtin/base"
    assert str(BUILTIN_BASE.parent) not in "".join(f.read_text() for f in out.glob("*.json"))
    check_adapter_fits(base, out)  # and it still loads as the adapter it is
