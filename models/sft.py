"""Stage 1 of SRC (docs/method.md section 1): rationale fine-tuning with LoRA and TRL's SFTTrainer.

The model learns to answer the *plain* question (no instruction to reason) with
`<rationale sentences> Answer: <answer>.`. Each record becomes a conversational
prompt-completion example, so TRL puts the loss on the assistant's tokens only:

    {"images": [PIL image],
     "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
     "completion": [{"role": "assistant", "content": [{"type": "text", "text": response}]}]}

Arithmetic at the defaults (RationaleSFTConfig): 300 steps x 16 examples = 4,800 examples seen.
The built-in world's config trains 1,500 steps x 16 = 24,000 examples, 1.2 passes over its
20,000 rationale records: shorter stage 1s leave rationales and answers disagreeing (held-out
consistency 27.5 at 300 steps on 4,000 records, 80.3 at 1,500 on 20,000).

The adapter is saved to `out_dir` and then merged into `model` (see `models.policy`), so on
return `model` is pi_0' = base + rationale adapter and `out_dir` is the stage's product.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/test_sft.py
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel
from transformers.processing_utils import ProcessorMixin
from trl import SFTConfig, SFTTrainer

from data.config import RationaleSFTConfig
from data.records import as_image, require_fields
from models.chat import build_messages
from models.policy import (
    Progress,
    finish_adapter,
    lora_trainer,
    per_device_batch,
    run_trainer,
    trainer_defaults,
)

SFT_FIELDS = ("image", "question", "response")


def sft_dataset(records: Sequence[dict[str, Any]], max_examples: int = 0) -> Dataset:
    """TRL prompt-completion dataset from records with `image`, `question`, `response`.

    Raises:
        ValueError: no records, or a record lacks a field (named with its index).
    """
    rows = list(records[:max_examples] if max_examples else records)
    if not rows:
        raise ValueError("rationale SFT needs at least one record, got none")
    out = []
    for i, r in enumerate(rows):
        where = f"SFT record {i} (id {r.get('id', '?')!r})"
        require_fields(r, SFT_FIELDS, where)
        out.append(
            {
                "images": [as_image(r["image"], where)],
                "prompt": build_messages(str(r["question"])),
                "completion": [build_messages(str(r["question"]), str(r["response"]))[-1]],
            }
        )
    return Dataset.from_list(out)


def train_rationale_sft(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    records: Sequence[dict[str, Any]],
    cfg: RationaleSFTConfig,
    out_dir: str | Path,
    seed: int,
    progress: Progress | None = None,
    *,
    gradient_checkpointing: bool = False,
    disable_tqdm: bool = True,
    merge: bool = True,
    checkpoint_dir: str | Path | None = None,
) -> dict[str, Any]:
    """LoRA SFT of `model` on gold rationale responses; adapter saved to `out_dir`.

    Args:
        model: the base policy (no adapter attached); merged in place on return (see `merge`).
        processor: its processor (tokenizer with a chat template, image processor).
        records: dicts with `image` (bytes or PIL), `question`, `response`.
        cfg: learning rate, steps, batch size, example cap, LoRA shape.
        out_dir: receives `adapter_config.json`, the adapter weights and `base_model.json`.
        seed: seeds LoRA init, shuffling and dropout.
        progress: called as `progress(step, total, logs)` at every logged step.
        gradient_checkpointing: `ModelConfig.gradient_checkpointing` (off: TRL's default is on).
        disable_tqdm: hide the Trainer's progress bar.
        merge: merge the adapter into `model` after saving it (the pipeline always does).
        checkpoint_dir: with `cfg.save_steps > 0`, the Trainer checkpoints there every
            `save_steps` steps, and a call with the same folder resumes from the last one.

    Returns:
        `loss_first`, `loss_last` (single logged steps), `loss_tail` (mean of the last 10% of
        steps), `steps`, `seconds`, `examples`, `trainable_params`.
    """
    dataset = sft_dataset(records, cfg.max_examples)
    out = Path(out_dir)
    args = SFTConfig(
        output_dir=str(checkpoint_dir or out),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=per_device_batch(cfg.batch_size, "rationale_sft.batch_size"),
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=round(cfg.warmup_ratio * cfg.max_steps),
        completion_only_loss=True,  # loss on the response, never on the question
        **trainer_defaults(model, seed, gradient_checkpointing, disable_tqdm, checkpoint_dir,
                           cfg.save_steps),
    )
    trainer = lora_trainer(SFTTrainer, model, args, dataset, processor, cfg.lora, progress)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    seconds, logs = run_trainer(trainer)
    finish_adapter(trainer.model, model, out, merge=merge)
    losses = [float(e["loss"]) for e in logs]
    tail = losses[-max(1, len(losses) // 10):] if losses else [float("nan")]
    return {
        "loss_first": losses[0] if losses else float("nan"),
        "loss_last": losses[-1] if losses else float("nan"),
        "loss_tail": sum(tail) / len(tail),
        "steps": int(trainer.state.global_step),
        "seconds": seconds,
        "examples": len(dataset),
        "trainable_params": trainable,
    }
