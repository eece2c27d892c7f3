"""Stage 5 of SRC (docs/method.md section 6): LoRA DPO on curated pairs, each pair's loss weighted.

Inputs are the pair records of `data.curation.curate` (`prompt_id, chosen, rejected, weight,
question, image, ...`). Each becomes a TRL vision preference example:

    {"images": [PIL image], "prompt": build_messages(question),
     "chosen": [assistant message], "rejected": [assistant message], "weight": w}

Reference model: TRL trains a fresh LoRA (`peft_config`) and gets the reference by disabling
the adapter. The previous iteration's adapter was merged into the weights (`models.policy`),
so the reference is exactly pi_{t-1}, the policy at the start of this iteration. A caller that
passes `ref_model` (`dpo.reference=initial`: pi_0) gets TRL's reference pass on that model
instead, with no gradient.

Per-pair weights. TRL 1.16 has no per-example weight (its `use_weighting` is WPO: weights from
the policy's own token probabilities, not ours). `WeightedDPOTrainer` is the smallest subclass
that adds one: it keeps the `weight` column (signature columns), collates it beside TRL's batch
(`PairWeightCollator`), and overrides `DPOTrainer._compute_loss` for batches that carry weights
(batches without weights go to TRL's own `_compute_loss` unchanged). For B pairs with weights
w_i and TRL's loss-type weights lambda_k (`loss_weights`, default 1):

    per-pair terms (sigmoid, hinge, ipo, sigmoid_norm):  L_k   = (1/B) sum_i w_i l_k(i)
    sft (TRL: a token mean over the batch's chosen
         tokens, not a mean of per-pair terms):          L_sft = sum_i w_i sum_t nll(i,t) / sum_i n_i
    total:                                               L     = sum_k lambda_k L_k

so every term a pair contributes is scaled by its weight, and all w_i = 1 gives TRL's loss
exactly (tested against `DPOTrainer` on the same batch). The mean is over pairs, not divided by
sum w: a batch of low-confidence pairs takes a smaller step, which is the point of the weight.
Worked example, sigmoid only, two pairs, w = (2, 0): L = (2 l(0) + 0 l(1)) / 2 = l(0).
Reward metrics (`rewards/margins`, `rewards/accuracies`, ...) stay unweighted means, as in TRL.

Arithmetic at the defaults (DPOConfig): 100 steps x 8 pairs = 800 pairs seen per iteration,
1.6 passes over 500 prompts at a 100% keep rate; each step runs 2 forwards (policy and
reference) over 2 x 8 sequences.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/unit/test_dpo.py
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel
from transformers.processing_utils import ProcessorMixin
from trl import DPOConfig as TRLDPOConfig
from trl import DPOTrainer

from data.config import DPOConfig
from models.chat import build_messages
from models.policy import (
    Progress,
    finish_adapter,
    lora_trainer,
    per_device_batch,
    run_trainer,
    trainer_defaults,
)
from data.records import as_image, require_fields
from data.schema import PreferencePair

WEIGHTED_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "sigmoid_norm", "sft")
DPO_FIELDS = ("image", "question", "chosen", "rejected")
METRIC_KEYS = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")


@dataclass
class PairWeightCollator:
    """Collate with TRL's collator, carrying each example's `weight` as a float tensor.

    >>> c = PairWeightCollator(lambda ex: {"n": len(ex)})
    >>> c([{"weight": 0.5}, {"weight": 1.0}])
    {'n': 2, 'weight': tensor([0.5000, 1.0000])}
    """

    inner: Callable[[list[dict[str, Any]]], dict[str, Any]]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if "weight" not in examples[0]:
            return self.inner(examples)
        weights = torch.tensor([float(e["weight"]) for e in examples], dtype=torch.float32)
        batch = self.inner([{k: v for k, v in e.items() if k != "weight"} for e in examples])
        batch["weight"] = weights
        return batch


def weighted_dpo_loss(
    loss_types: Sequence[str],
    loss_weights: Sequence[float],
    beta: float,
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    chosen_nll: torch.Tensor,
    lengths: tuple[torch.Tensor, torch.Tensor],
    weight: torch.Tensor,
) -> torch.Tensor:
    """The weighted loss of the module docstring, from per-pair quantities (pure function).

    Args:
        chosen_logratios, rejected_logratios: (B,) log pi(y|x) - log pi_ref(y|x), summed over tokens.
        chosen_nll: (B,) summed negative log-likelihood of each chosen completion (policy).
        lengths: (B,) completion token counts of chosen and rejected.
        weight: (B,) per-pair weights.
    """
    delta = chosen_logratios - rejected_logratios
    chosen_len, rejected_len = (n.clamp(min=1.0) for n in lengths)
    loss = chosen_logratios.new_zeros(())
    for loss_type, lam in zip(loss_types, loss_weights, strict=True):
        if loss_type == "sft":
            term = (weight * chosen_nll).sum() / lengths[0].sum().clamp(min=1.0)
        else:
            if loss_type == "sigmoid":
                per_pair = -F.logsigmoid(beta * delta)
            elif loss_type == "hinge":
                per_pair = torch.relu(1 - beta * delta)
            elif loss_type == "ipo":  # TRL's length-normalised IPO
                norm = chosen_logratios / chosen_len - rejected_logratios / rejected_len
                per_pair = (norm - 1 / (2 * beta)) ** 2
            elif loss_type == "sigmoid_norm":
                norm = chosen_logratios / chosen_len - rejected_logratios / rejected_len
                per_pair = -F.logsigmoid(beta * norm)
            else:
                raise ValueError(
                    f"loss_type {loss_type!r} has no per-pair weighting; use one of {WEIGHTED_LOSS_TYPES}"
                )
            term = (weight * per_pair).mean()
        loss = loss + lam * term
    return loss


class WeightedDPOTrainer(DPOTrainer):
    """`DPOTrainer` whose loss multiplies each pair's terms by the pair's `weight` column."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.data_collator = PairWeightCollator(self.data_collator)
        if "weight" in (self.train_dataset.column_names or []):
            bad = [t for t in self.loss_types if t not in WEIGHTED_LOSS_TYPES]
            if bad:
                raise ValueError(f"loss types {bad} have no per-pair weighting; use {WEIGHTED_LOSS_TYPES}")
            a = self.args
            if a.ld_alpha is not None or a.f_divergence_type != "reverse_kl" or a.use_weighting:
                raise ValueError("pair weights support plain DPO only (no ld_alpha, f-divergence or WPO)")
            if self.aux_loss_enabled:
                raise ValueError("pair weights do not support MoE auxiliary losses")

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if "weight" not in self._signature_columns:  # else Trainer drops the column
            self._signature_columns = [*self._signature_columns, "weight"]

    def _compute_loss(self, model, inputs, return_outputs):
        """TRL's policy and reference passes (same calls, same fused LM head), then the weighted
        loss. TRL 1.16 combines the per-pair losses inside this one method, with no hook, hence
        the override; equality with TRL at weight 1 is tested for every supported loss type."""
        if "weight" not in inputs:
            return super()._compute_loss(model, inputs, return_outputs)
        if return_outputs:
            raise NotImplementedError("return_outputs is not supported with pair weights")
        mode = "train" if self.model.training else "eval"
        inputs = dict(inputs)
        weight = inputs.pop("weight").to(torch.float32)
        completion_mask = inputs["completion_mask"]
        skip = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}
        model_kwargs = {k: v for k, v in inputs.items() if k not in skip}
        model_kwargs["use_cache"] = False
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        shift_mask = completion_mask[..., 1:]
        per_token = outputs.log_probs[:, -shift_mask.size(1):]  # zero where the label is -100
        chosen_logps, rejected_logps = per_token.sum(dim=1).chunk(2, dim=0)
        if "ref_chosen_logps" in inputs:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:  # TRL's reference pass: adapter disabled (or the ref model), no grad
            ref_chosen, ref_rejected = self.compute_ref_log_probs(
                self.model if self.ref_model is None else self.ref_model, inputs
            )
        chosen_lr = chosen_logps - ref_chosen
        rejected_lr = rejected_logps - ref_rejected
        lengths = tuple(n.to(per_token.dtype) for n in completion_mask.sum(dim=1).chunk(2, dim=0))
        loss = weighted_dpo_loss(
            self.loss_types, self.loss_weights, self.beta, chosen_lr, rejected_lr,
            -chosen_logps, lengths, weight.to(per_token.dtype),
        )
        self._log_pair_metrics(mode, chosen_lr, rejected_lr, chosen_logps, rejected_logps, weight)
        return loss

    def _log_pair_metrics(self, mode, chosen_lr, rejected_lr, chosen_logps, rejected_logps, weight):
        """The reward and log-prob metrics TRL logs, under TRL's names, plus `weight/mean`."""
        gather = self.accelerator.gather_for_metrics
        chosen_r, rejected_r = self.beta * chosen_lr.detach(), self.beta * rejected_lr.detach()
        m = self._metrics[mode]
        m["rewards/chosen"].append(gather(chosen_r).mean().item())
        m["rewards/rejected"].append(gather(rejected_r).mean().item())
        m["rewards/accuracies"].append(gather((chosen_r > rejected_r).float()).mean().item())
        m["rewards/margins"].append(gather(chosen_r - rejected_r).mean().item())
        m["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        m["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
        m["weight/mean"].append(gather(weight).mean().item())


def dpo_dataset(pairs: Sequence[PreferencePair], with_weights: bool) -> Dataset:
    """TRL vision preference dataset from curated pair records.

    Raises:
        ValueError: no pairs, a missing field, or a weight that is not a finite number >= 0
            (named with the pair's index and prompt_id).
    """
    if not pairs:
        raise ValueError("DPO needs at least one preference pair, got none")
    rows = []
    for i, p in enumerate(pairs):
        where = f"pair {i} (prompt_id {p.get('prompt_id', '?')!r})"
        require_fields(p, DPO_FIELDS + (("weight",) if with_weights else ()), where)
        q = str(p["question"])
        row = {
            "images": [as_image(p["image"], where)],
            "prompt": build_messages(q),
            "chosen": [build_messages(q, str(p["chosen"]))[-1]],
            "rejected": [build_messages(q, str(p["rejected"]))[-1]],
        }
        if with_weights:
            w = p["weight"]
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ValueError(f"{where}: weight must be a finite number >= 0, got {w!r}")
            row["weight"] = float(w)
        rows.append(row)
    return Dataset.from_list(rows)


def train_dpo(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    pairs: Sequence[PreferencePair],
    cfg: DPOConfig,
    out_dir: str | Path,
    seed: int,
    progress: Progress | None = None,
    *,
    gradient_checkpointing: bool = False,
    disable_tqdm: bool = True,
    merge: bool = True,
    checkpoint_dir: str | Path | None = None,
    ref_model: PreTrainedModel | None = None,
) -> dict[str, Any]:
    """One SRC iteration of (weighted) LoRA DPO on pi_{t-1}; the adapter is saved to `out_dir`.

    Args:
        model: pi_{t-1} with every earlier adapter merged (no adapter attached); merged in
            place with the new adapter on return, so it is then pi_t (see `merge`).
        processor: its processor.
        pairs: curated pair records (`question`, `image`, `chosen`, `rejected`, `weight`).
        cfg: beta, loss types and weights, `use_pair_weights`, steps, batch size, LoRA shape.
        out_dir: receives the adapter and `base_model.json`.
        seed: seeds LoRA init and shuffling.
        progress: called as `progress(step, total, logs)` at every logged step.
        gradient_checkpointing: `ModelConfig.gradient_checkpointing` (off: TRL's default is on).
        disable_tqdm: hide the Trainer's progress bar.
        merge: merge the adapter into `model` after saving it (the pipeline always does).
        checkpoint_dir: with `cfg.save_steps > 0`, the Trainer checkpoints there every
            `save_steps` steps, and a call with the same folder resumes from the last one.
        ref_model: the reference policy, if not `model` itself (None: the adapter switched
            off, i.e. pi_{t-1}); same architecture and processor as `model`.

    Returns:
        For each of `loss`, `rewards/margins`, `rewards/accuracies`, `rewards/chosen`,
        `rewards/rejected`: the last step's value under the key and the mean over steps under
        `<key>_mean`; plus `steps`, `seconds`, `pairs`, `weight_mean`, `trainable_params`.

    Raises:
        ValueError: bad pairs, or pair weights with a loss type that cannot be weighted.
    """
    if cfg.use_pair_weights:
        bad = [t for t in cfg.loss_type if t not in WEIGHTED_LOSS_TYPES]
        if bad:  # fail before any compute
            raise ValueError(
                f"dpo.loss_type {bad} cannot be weighted per pair; use {list(WEIGHTED_LOSS_TYPES)} "
                "or set dpo.use_pair_weights=false"
            )
    dataset = dpo_dataset(pairs, with_weights=cfg.use_pair_weights)
    out = Path(out_dir)
    args = TRLDPOConfig(
        output_dir=str(checkpoint_dir or out),
        max_steps=cfg.steps_for(len(dataset)),
        per_device_train_batch_size=per_device_batch(cfg.batch_size, "dpo.batch_size"),
        learning_rate=cfg.learning_rate,
        beta=cfg.beta,
        loss_type=list(cfg.loss_type),
        loss_weights=list(cfg.loss_weights) if cfg.loss_weights is not None else None,
        **trainer_defaults(model, seed, gradient_checkpointing, disable_tqdm, checkpoint_dir,
                           cfg.save_steps),
    )
    extra = {"ref_model": ref_model} if ref_model is not None else {}
    trainer = lora_trainer(WeightedDPOTrainer, model, args, dataset, processor, cfg.lora, progress, **extra)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    seconds, logs = run_trainer(trainer)
    finish_adapter(trainer.model, model, out, merge=merge)
    metrics: dict[str, Any] = {}
    for key in METRIC_KEYS:
        values = [float(e[key]) for e in logs if key in e]
        metrics[key] = values[-1] if values else float("nan")
        metrics[f"{key}_mean"] = sum(values) / len(values) if values else float("nan")
    weights = dataset["weight"] if cfg.use_pair_weights else [1.0] * len(dataset)
    metrics.update(
        steps=int(trainer.state.global_step),
        seconds=seconds,
        pairs=len(dataset),
        weight_mean=sum(weights) / len(weights),
        trainable_params=trainable,
    )
    return metrics
