"""Task: train a tiny R-Scorer on the world's perturbation pairs (stage 3, scorer.model=train)."""

from __future__ import annotations

from pathlib import Path

from data.records import read_records
from tasks.common import config_of, progress_logger, stage_task
from tasks.store import produce, write_json

STAGE, VERSION = "scorer", 2
READS = ("scorer", "model.base")  # the config this stage reads: its cache key hashes exactly this (tasks/reads.py)


def build_scorer(cfg_dict: dict, base: dict, world: dict, out: Path) -> dict:
    from data import perturb, perturb_text
    from models.judge_training import new_tiny_judge, train_and_save, training_records

    cfg = config_of(cfg_dict, READS, STAGE)
    model, tokenizer = new_tiny_judge(cfg, base["path"])  # shares the world's tokenizer (the base model's)
    train = training_records(cfg, read_records(Path(world["path"]) / "scorer.parquet"))
    # agreement with the labels on held-out (eval split) perturbation candidates: the exact
    # scorer's on the built-in world, the by-construction ones on data without facts
    n = cfg.scorer.n_heldout
    ev = read_records(Path(world["path"]) / "eval.parquet")[:n]
    items = perturb.candidate_items if perturb_text.has_facts(ev) else perturb_text.candidate_items
    held = items(ev, cfg.seed) if n else []
    metrics = train_and_save(model, tokenizer, cfg, train, held, out / "judge", progress_logger("scorer"))
    write_json(out / "metrics.json", metrics)
    return {"metrics": metrics}


@stage_task("scorer", retries=1)
def scorer_task(key: str, cfg: dict, base: dict, world: dict) -> dict:
    return produce(STAGE, key, lambda out: build_scorer(cfg, base, world, out))
