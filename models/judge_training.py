"""Training a tiny R-Scorer on the scorer split (`scorer.model=train` in the pipeline, and the
committed judge's bootstrap, models/judge_bootstrap.py): records, training, saving with the
prompt style it must be scored with (`src_judge.json`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from data.config import SRCConfig
from data.perturb import agreement, pair_records, point_records
from models.builtin import JUDGE_INFO, resolve_base
from models.scorer import build_tiny_judge, save_judge, score_pairs, train_judge


def new_tiny_judge(cfg: SRCConfig, tokenizer_from: str | None = None) -> tuple[torch.nn.Module, object]:
    """A randomly initialised tiny judge (seeded) over the base model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from or resolve_base(cfg.model.base))
    return build_tiny_judge(tokenizer, seed=cfg.seed), tokenizer


def train_and_save(model: torch.nn.Module, tokenizer: object, cfg: SRCConfig,
                   train_records: list[dict], held: list[dict], out: Path,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Train the judge on labelled records, measure it on `held` items, save it to `out`
    with `src_judge.json` (the prompt style it must be scored with). Returns the metrics."""
    metrics = train_judge(model, tokenizer, train_records, cfg.scorer, progress, seed=cfg.seed)
    if held:
        metrics.update(agreement(score_pairs(model, tokenizer, held, cfg.scorer), held))
    save_judge(model, tokenizer, out)
    info = {"template": cfg.scorer.template, "use_gold_answer": cfg.scorer.use_gold_answer,
            "mode": cfg.scorer.mode, "max_length": cfg.scorer.max_length}
    (Path(out) / JUDGE_INFO).write_text(json.dumps(info, indent=1))
    return metrics


def training_records(cfg: SRCConfig, records: list[dict], flaw_pairs: int = 2) -> list[dict]:
    """Labelled pairs (and, in pointwise mode, pointwise items) of the scorer split;
    `flaw_pairs` flaw-vs-flaw pairs per record. Records with scene facts (the built-in world)
    get data/perturb.py's exactly checked flaws; others (your own data) data/perturb_text.py's
    flaws that hold by construction.

    Raises:
        ValueError: no record has a gold rationale to perturb.
    """
    from data import perturb_text

    if perturb_text.has_facts(records):
        pairs, points = pair_records, point_records
    else:
        pairs, points = perturb_text.pair_records, perturb_text.point_records
    train = pairs(records, cfg.seed, flaw_pairs=flaw_pairs)
    if cfg.scorer.mode == "pointwise":
        train += points(records, cfg.seed)
    if not train:
        raise ValueError(f"scorer.model=train: none of the {len(records)} scorer-split records has a gold "
                         "rationale to make training pairs from; give rationales, or set scorer.model to "
                         "a trained judge (builtin, a path or a hub id)")
    return train
