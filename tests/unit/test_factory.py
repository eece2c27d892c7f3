"""Tiny LVLM factory: tokenizer, chat templates, build / save / load, generation, LoRA targets.

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/test_factory.py
"""

from __future__ import annotations

import os
import re

import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from models.chat import build_messages, render_prompt
from models.factory import (
    build_tiny_llava,
    build_tiny_qwen2vl,
    count_parameters,
    language_model_lora_targets,
    train_tokenizer,
)
from models.loading import load_lvlm, save_lvlm

COLORS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle"]
PLACES = ["top left", "top right", "bottom left", "bottom right", "center"]
QUESTION = "How many red objects are there?"
ANSWER = "There is a red circle at the top left. That makes 1 red objects. Answer: 1."
BUILDERS = {"llava": build_tiny_llava, "qwen2vl": build_tiny_qwen2vl}
# 64 px / patch 8 = 8x8 patches. LLaVA: 64 + CLS - CLS ("default" strategy drops it) = 64.
# Qwen2-VL: 8x8 patches merged 2x2 = 16.
IMAGE_TOKENS = {"llava": 64, "qwen2vl": 16}


def shapes_corpus() -> list[str]:
    texts = []
    for i, color in enumerate(COLORS):
        texts.append(f"How many {color} objects are there?")
        for j, shape in enumerate(SHAPES):
            place = PLACES[(i + j) % len(PLACES)]
            n = 1 + (i + j) % 4
            texts.append(
                f"There is a {color} {shape} at the {place}. "
                f"That makes {n} {color} objects. Answer: {n}."
            )
    return texts * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(shapes_corpus())


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def built(request, tokenizer):
    model, processor = BUILDERS[request.param](tokenizer, seed=0)
    return request.param, model, processor


@pytest.fixture(scope="module")
def image() -> Image.Image:
    img = Image.new("RGB", (64, 64), (255, 255, 255))
    img.paste((255, 0, 0), (4, 4, 20, 20))
    return img


def test_tokenizer_round_trip_and_special_tokens(tokenizer):
    text = "There is a blue triangle at the center. Answer: 3. Ünïcode!"
    ids = tokenizer(text).input_ids
    assert tokenizer.decode(ids) == text  # byte-level: unseen characters survive
    assert len(tokenizer) <= 400
    assert tokenizer.bos_token_id not in ids  # BOS comes from the chat template only
    for name, token in [("pad", "<pad>"), ("bos", "<s>"), ("eos", "</s>"), ("unk", "<unk>")]:
        assert getattr(tokenizer, f"{name}_token") == token
    image_ids = tokenizer("a<image>b").input_ids
    assert tokenizer.convert_tokens_to_ids("<image>") in image_ids  # never split
    assert tokenizer.decode(image_ids, skip_special_tokens=True) == "ab"
    assert tokenizer.padding_side == "left"


def test_llava_template_text(tokenizer):
    rendered = tokenizer.apply_chat_template(build_messages("Q?", "A."), tokenize=False)
    assert rendered == "<s>USER: <image>\nQ? ASSISTANT: A.</s>"
    with_system = tokenizer.apply_chat_template(build_messages("Q?", system="S."), tokenize=False)
    assert with_system == "<s>S. USER: <image>\nQ? "


@pytest.mark.parametrize("system", [None, "Answer briefly."])
@pytest.mark.parametrize("string_content", [False, True])
def test_chat_prefix_property(built, system, string_content):
    _, _, processor = built
    messages = build_messages(QUESTION, ANSWER, system=system)
    if string_content:  # plain strings instead of blocks (no image)
        messages = [
            {
                "role": m["role"],
                "content": " ".join(b["text"] for b in m["content"] if b["type"] == "text"),
            }
            for m in messages
        ]
    tok = processor.tokenizer
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages, tokenize=False)
    assert full.startswith(prompt) and ANSWER in full[len(prompt) :]
    assert full.endswith((tok.eos_token, tok.eos_token + "\n"))
    # also at token level, which is what TRL's completion mask relies on
    p_ids = tok(prompt, add_special_tokens=False).input_ids
    f_ids = tok(full, add_special_tokens=False).input_ids
    assert f_ids[: len(p_ids)] == p_ids
    if not string_content and system is None:
        assert prompt == render_prompt(processor, QUESTION)


def test_parameter_count(built):
    name, model, _ = built
    n = count_parameters(model)
    assert 500_000 <= n <= 2_000_000, (name, n)


def test_processor_forward_generate_save_load(built, image, tmp_path):
    name, model, processor = built
    prompt = render_prompt(processor, QUESTION)
    batch = processor(
        images=[image, image], text=[prompt, prompt + " x"], return_tensors="pt", padding=True
    )
    assert (batch.input_ids == processor.image_token_id).sum(1).tolist() == [IMAGE_TOKENS[name]] * 2
    assert batch.attention_mask[1].all() and not batch.attention_mask[0].all()  # left padding
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch.input_ids.shape and torch.isfinite(logits).all()

    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape[1] <= batch.input_ids.shape[1] + 4
    assert isinstance(processor.batch_decode(out[:, batch.input_ids.shape[1] :])[0], str)

    save_lvlm(model, processor, tmp_path / name)
    loaded, loaded_proc = load_lvlm(str(tmp_path / name), dtype="float32", device="cpu")
    assert type(loaded) is type(model)
    assert loaded_proc.tokenizer.padding_side == "left"
    assert loaded_proc.chat_template == processor.chat_template
    batch2 = loaded_proc(
        images=[image, image], text=[prompt, prompt + " x"], return_tensors="pt", padding=True
    )
    for key in batch:
        assert torch.equal(batch[key], batch2[key]), key
    with torch.no_grad():
        assert torch.equal(loaded(**batch2).logits, logits)
    out2 = loaded.generate(**batch2, max_new_tokens=4, do_sample=False)
    assert torch.equal(out, out2)


def test_same_seed_same_weights(tokenizer):
    a, _ = build_tiny_llava(tokenizer, seed=3)
    b, _ = build_tiny_llava(tokenizer, seed=3)
    c, _ = build_tiny_llava(tokenizer, seed=4)
    wa, wb, wc = (m.lm_head.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_load_missing_path_names_it(tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(ValueError, match=re.escape(missing)):
        load_lvlm(missing)


def test_load_uncached_hub_id_offline_is_clear():
    with pytest.raises(ValueError, match="nobody-here/no-such-model.*HF_HUB_OFFLINE"):
        load_lvlm("nobody-here/no-such-model")


def test_lora_targets_only_language_model(built):
    from peft import LoraConfig, get_peft_model

    name, _, _ = built
    model, _ = BUILDERS[name](train_tokenizer(shapes_corpus()), seed=0)  # peft mutates it
    pattern = language_model_lora_targets(model)
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    expected = {
        n for n in linears if "language_model" in n and n.rsplit(".", 1)[-1].endswith("proj")
    }
    assert len(expected) == 4 * 7  # 4 layers x (q, k, v, o, gate, up, down)

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=pattern))
    adapted = {
        n.removeprefix("base_model.model.").removesuffix(".lora_A")
        for n, _ in peft_model.named_modules()
        if n.endswith(".lora_A")
    }
    assert adapted == expected
    assert not any(("vision" in n or "visual" in n or "projector" in n) for n in adapted)
