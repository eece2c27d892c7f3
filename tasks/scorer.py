"""Task: train the built-in R-Scorer on perturbation pairs (stage 3), or take a given one."""

from __future__ import annotations

from pathlib import Path

from data.records import read_records
from tasks.common import config_of, progress_logger, stage_task
from tasks.store import produce, write_json

STAGE, VERSION = "scorer", 1


def build_scorer(cfg_dict: dict, base: dict, world: dict, out: Path) -> dict:
    from transformers import AutoTokenizer

    from data.perturb import candidate_items, pair_records, point_records
    from models.scorer import agreement, build_tiny_judge, save_judge, score_pairs, train_judge

    cfg = config_of(cfg_dict)
    # the built-in judge shares the world's tokenizer (the base model's)
    tokenizer = AutoTokenizer.from_pretrained(base["path"])
    model = build_tiny_judge(tokenizer, seed=cfg.seed)
    records = read_records(Path(world["path"]) / "scorer.parquet")
    train = pair_records(records, cfg.seed)
    if cfg.scorer.mode == "pointwise":
        train += point_records(records, cfg.seed)
    metrics = train_judge(model, tokenizer, train, cfg.scorer, progress_logger("scorer"), seed=cfg.seed)
    # agreement with the exact scorer on held-out (eval split) perturbation candidates
    n = cfg.scorer.n_heldout
    if n:
        held = candidate_items(read_records(Path(world["path"]) / "eval.parquet")[:n], cfg.seed)
        metrics.update(agreement(score_pairs(model, tokenizer, held, cfg.scorer), held))
    save_judge(model, tokenizer, out / "judge")
    write_json(out / "metrics.json", metrics)
    return {"metrics": metrics}


@stage_task("scorer", retries=1)
def scorer_task(key: str, cfg: dict, base: dict, world: dict) -> dict:
    return produce(STAGE, key, lambda out: build_scorer(cfg, base, world, out))
