"""Weighted LoRA DPO (models/dpo.py): equal to TRL's loss at weight 1, scales per pair, LoRA-only.

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/test_dpo.py
"""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from peft import get_peft_model
from transformers import set_seed
from trl import DPOConfig as TRLDPOConfig
from trl import DPOTrainer

from data.config import DataConfig, DPOConfig, LoraConfig
from data.shapes import corpus, generate
from models.dpo import WeightedDPOTrainer, dpo_dataset, train_dpo, weighted_dpo_loss
from models.factory import build_tiny_llava, train_tokenizer
from models.policy import peft_lora_config


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
def pairs():
    """Gold rationale (chosen) against a bare, often wrong short answer (rejected)."""
    recs = generate("rationale", 16, DataConfig())
    return [
        {"prompt_id": r["id"], "question": r["question"], "image": r["image"],
         "chosen": r["response"], "rejected": f"Answer: {'no' if r['answer'] == 'yes' else 'yes'}.",
         "weight": 0.5 + 0.1 * (i % 5)}
        for i, r in enumerate(recs)
    ]


# --------------------------------------------------------------------------- the loss by hand


def test_weighted_loss_by_hand():
    """beta 1, chosen log-ratios (1, 0), rejected (0, 2): delta = (1, -2);
    sigmoid l = (log(1 + e^-1), log(1 + e^2)) = (0.31326, 2.12693).
    w = (2, 0): sigmoid term = (2 * 0.31326 + 0) / 2 = 0.31326;
    sft term, chosen nll sums (3, 5) over lengths (2, 3): (2 * 3 + 0 * 5) / (2 + 3) = 1.2;
    loss weights (1, 0.5): 0.31326 + 0.5 * 1.2 = 0.91326.
    """
    args = {
        "beta": 1.0,
        "chosen_logratios": torch.tensor([1.0, 0.0]),
        "rejected_logratios": torch.tensor([0.0, 2.0]),
        "chosen_nll": torch.tensor([3.0, 5.0]),
        "lengths": (torch.tensor([2.0, 3.0]), torch.tensor([4.0, 4.0])),
        "weight": torch.tensor([2.0, 0.0]),
    }
    l0 = math.log1p(math.exp(-1))
    got = weighted_dpo_loss(["sigmoid", "sft"], [1.0, 0.5], **args)
    assert got.item() == pytest.approx(l0 + 0.5 * 1.2, abs=1e-6)
    assert weighted_dpo_loss(["sigmoid"], [1.0], **args).item() == pytest.approx(l0, abs=1e-6)
    with pytest.raises(ValueError, match="'aot'"):
        weighted_dpo_loss(["aot"], [1.0], **args)


# --------------------------------------------------------------------------- against TRL itself


@pytest.fixture(scope="module")
def trainers(tokenizer, pairs, tmp_path_factory):
    """TRL's DPOTrainer and ours on two copies of one model, with the same non-zero LoRA weights
    (so that policy != reference and the per-pair losses differ)."""
    model, processor = build_tiny_llava(tokenizer, seed=0)
    out = []
    for cls, with_w in ((DPOTrainer, False), (WeightedDPOTrainer, True)):
        args = TRLDPOConfig(
            output_dir=str(tmp_path_factory.mktemp("dpo")), per_device_train_batch_size=2,
            max_steps=1, beta=0.1, report_to=[], save_strategy="no", use_cpu=True,
            bf16=False, activation_checkpointing=False,
        )
        trainer = cls(model=copy.deepcopy(model), args=args, processing_class=processor,
                      train_dataset=dpo_dataset(pairs[:4], with_weights=with_w),
                      peft_config=peft_lora_config(model, LoraConfig(r=4, alpha=8)))
        gen = torch.Generator().manual_seed(1)
        for name, p in sorted(trainer.model.named_parameters()):
            if "lora_" in name:
                p.data.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        trainer.model.eval()
        out.append(trainer)
    return out


def losses(trainer, examples, weights=None, loss_types=("sigmoid",), loss_weights=None):
    trainer.loss_types = list(loss_types)
    trainer.loss_weights = list(loss_weights or [1.0] * len(loss_types))
    rows = [{k: v for k, v in e.items() if k != "weight"} for e in examples]
    if weights is not None:
        rows = [{**r, "weight": w} for r, w in zip(rows, weights, strict=True)]
    batch = trainer.data_collator(rows)
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item(), batch


@pytest.mark.parametrize(
    "loss_types,loss_weights",
    [(["sigmoid", "sft"], [1.0, 0.5]), (["sigmoid"], None), (["hinge"], None), (["ipo"], None),
     (["sigmoid_norm"], None), (["sft"], None)],
)
def test_weights_of_one_give_trl_loss(trainers, loss_types, loss_weights):
    trl_trainer, ours = trainers
    examples = [trl_trainer.train_dataset[i] for i in range(4)]
    expected, _ = losses(trl_trainer, examples, None, loss_types, loss_weights)
    got, batch = losses(ours, examples, [1.0] * 4, loss_types, loss_weights)
    assert "weight" in batch
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert expected > 0


def test_weights_scale_each_pair(trainers):
    """TRL's loss on each pair alone gives l(0), l(1) (sigmoid) and S_i / n_i (sft: summed nll over
    the chosen tokens / their count). Weighted, on the two-pair batch:
    sigmoid, w = (2, 0): (2 l(0) + 0) / 2 = l(0); w = (0.25, 1.5): (0.25 l(0) + 1.5 l(1)) / 2;
    sft, w = (2, 0): 2 S_0 / (n_0 + n_1).
    """
    trl_trainer, ours = trainers
    ex = [trl_trainer.train_dataset[i] for i in range(2)]
    single = [losses(trl_trainer, [e])[0] for e in ex]
    assert abs(single[0] - single[1]) > 1e-3  # the test would be blind otherwise
    got, _ = losses(ours, ex, [2.0, 0.0])
    assert got == pytest.approx(single[0], rel=1e-5)
    got, _ = losses(ours, ex, [0.25, 1.5])
    assert got == pytest.approx((0.25 * single[0] + 1.5 * single[1]) / 2, rel=1e-5)
    sft_mean, n = [], []
    for e in ex:
        value, batch = losses(trl_trainer, [e], loss_types=("sft",))
        sft_mean.append(value)
        n.append(batch["completion_mask"][0].sum().item())  # row 0 = the chosen completion
    got, _ = losses(ours, ex, [2.0, 0.0], loss_types=("sft",))
    assert got == pytest.approx(2 * sft_mean[0] * n[0] / (n[0] + n[1]), rel=1e-5)


# --------------------------------------------------------------------------- training


def test_two_steps_change_every_lora_parameter_and_nothing_else(tokenizer, pairs, tmp_path):
    model, processor = build_tiny_llava(tokenizer, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = DPOConfig(max_steps=2, batch_size=4, learning_rate=1e-3)
    set_seed(0)  # TRL seeds, then adds the LoRA layers: same initial LoRA weights
    initial = get_peft_model(copy.deepcopy(model), peft_lora_config(model, cfg.lora))
    init_lora = {n.removeprefix("base_model.model."): p.detach().clone()
                 for n, p in initial.named_parameters() if "lora_" in n}
    logs = []
    m = train_dpo(model, processor, pairs, cfg, tmp_path / "a", seed=0,
                  progress=lambda s, t, d: logs.append(d), merge=False)
    # step 1: the adapter is zero, so the policy is its own reference: rewards exactly 0
    assert logs[0]["rewards/chosen"] == 0.0 and logs[0]["rewards/rejected"] == 0.0
    assert 0.5 <= logs[0]["weight/mean"] <= 0.9  # the batch's mean pair weight is logged
    after = dict(model.named_parameters())
    lora = {n: p for n, p in after.items() if "lora_" in n}
    assert lora and set(lora) == set(init_lora)
    for n, p in lora.items():
        assert not torch.equal(p, init_lora[n]), f"{n} did not change"
    for n, p in after.items():
        if "lora_" not in n:
            assert torch.equal(p, before[n.replace(".base_layer.", ".")]), f"{n} changed"
    assert m["steps"] == 2 and m["pairs"] == 16
    for key in ("loss", "rewards/margins", "rewards/accuracies", "loss_mean", "seconds"):
        assert math.isfinite(m[key]), key
    assert os.path.isfile(tmp_path / "a" / "adapter_model.safetensors")


def test_a_reference_model_is_what_the_rewards_are_measured_against(tokenizer, pairs, tmp_path):
    """`ref_model` (dpo.reference=initial): with a copy of the policy the first step is the
    default's, rewards exactly 0; with another model the same first batch has the log-ratios
    of policy against that model, and the reference itself is never trained."""
    cfg = DPOConfig(max_steps=1, batch_size=4, learning_rate=1e-3)
    runs = {}
    for name in ("none", "copy", "other"):
        model, processor = build_tiny_llava(tokenizer, seed=0)
        ref = {"none": None, "copy": copy.deepcopy(model),
               "other": build_tiny_llava(tokenizer, seed=1)[0]}[name]
        ref_before = None if ref is None else {n: p.detach().clone() for n, p in ref.named_parameters()}
        logs = []
        train_dpo(model, processor, pairs, cfg, tmp_path / name, seed=0,
                  progress=lambda s, t, d: logs.append(d), merge=False, ref_model=ref)
        runs[name] = logs[0]
        if ref is not None:
            for n, p in ref.named_parameters():
                assert torch.equal(p, ref_before[n]), f"reference parameter {n} changed"
    for key in ("rewards/chosen", "rewards/rejected"):
        assert runs["none"][key] == 0.0 and runs["copy"][key] == 0.0, key
        assert abs(runs["other"][key]) > 1e-3, key  # another model: another reference
    assert runs["copy"]["loss"] == pytest.approx(runs["none"]["loss"], rel=1e-5)


def test_unweighted_mode_is_stock_trl(tokenizer, pairs, tmp_path):
    model, processor = build_tiny_llava(tokenizer, seed=0)
    cfg = DPOConfig(max_steps=1, batch_size=4, use_pair_weights=False, loss_type=["sigmoid"])
    logs = []
    m = train_dpo(model, processor, pairs, cfg, tmp_path / "a", seed=0,
                  progress=lambda s, t, d: logs.append(d))
    assert m["steps"] == 1 and m["weight_mean"] == 1.0
    assert "weight/mean" not in logs[0] and "entropy" in logs[0]  # TRL's own metrics
    assert not any("lora_" in n for n, _ in model.named_parameters())  # merged


def test_bad_inputs_fail_before_training(tokenizer, pairs, tmp_path):
    bad = [dict(pairs[0]), {**pairs[1], "weight": -0.5}]
    with pytest.raises(ValueError, match=r"pair 1 .*weight"):
        dpo_dataset(bad, with_weights=True)
    dpo_dataset(bad, with_weights=False)  # weights ignored when not used
    with pytest.raises(ValueError, match="at least one"):
        dpo_dataset([], with_weights=True)
    with pytest.raises(ValueError, match="'aot'"):
        train_dpo(None, None, pairs, DPOConfig(loss_type=["aot"]), tmp_path, seed=0)


def test_a_killed_dpo_resumes_from_its_checkpoint_to_the_same_adapter(tokenizer, pairs, tmp_path):
    from safetensors.torch import load_file

    cfg = DPOConfig(max_steps=4, batch_size=4, learning_rate=1e-3, save_steps=2)

    def kill_at_step_3(step, total, logs):  # stands in for SIGKILL, after checkpoint-2 is saved
        if step == 3:
            raise KeyboardInterrupt

    def train(out, ckpt, progress=None):
        model, processor = build_tiny_llava(tokenizer, seed=0)
        return train_dpo(model, processor, pairs, cfg, out, seed=0, progress=progress, checkpoint_dir=ckpt)
    whole = train(tmp_path / "whole", None)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "killed", tmp_path / "ckpt", kill_at_step_3)
    # a checkpoint cut short by the kill (no trainer_state.json) is dropped, not loaded
    (tmp_path / "ckpt" / "checkpoint-3").mkdir()
    (tmp_path / "ckpt" / "checkpoint-3" / "adapter_model.safetensors").write_bytes(b"half")
    steps = []
    resumed = train(tmp_path / "resumed", tmp_path / "ckpt", lambda s, t, d: steps.append(s))
    assert resumed["steps"] == whole["steps"] == 4 and steps[0] == 3
    a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["loss_mean"] == pytest.approx(whole["loss_mean"])  # the log history is restored
