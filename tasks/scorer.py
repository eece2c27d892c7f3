"""Task: train a tiny R-Scorer on the world's records (stage 3, scorer.model=train): a pair judge
on perturbation pairs, or (scorer.mode=claims) a claim checker on labelled claims."""

from __future__ import annotations

from pathlib import Path

from data.records import read_records
from data.schema import EVAL_FILE, METRICS_FILE, SCORER_FILE
from infra.common import progress_logger, stage_task
from infra.store import produce, write_json
from infra.reads import StageConfig
from data import perturb, perturb_text
from models.judge_training import new_tiny_judge, train_and_save, training_records
from data.claims import claim_records
from models.claims import checker_accuracy, save_checker, train_checker

STAGE, VERSION = "scorer", 3  # 3: scorer.mode=claims trains a claim checker
READS = ("scorer", "model.base")  # the config this stage reads: its cache key hashes exactly this (infra/reads.py)


def build_scorer(cfg_dict: dict, base: dict, world: dict, out: Path, key: str = "") -> dict:
    cfg = StageConfig(cfg_dict, READS, STAGE)
    model, tokenizer = new_tiny_judge(cfg, base["path"])  # shares the world's tokenizer (the base model's)
    if cfg.scorer.mode == "claims":
        return build_checker(cfg, model, tokenizer, world, out)
    train = training_records(cfg, read_records(Path(world["path"]) / SCORER_FILE))
    # agreement with the labels on held-out (eval split) perturbation candidates: the exact
    # scorer's on the built-in world, the by-construction ones on data without facts
    n = cfg.scorer.n_heldout
    ev = read_records(Path(world["path"]) / EVAL_FILE)[:n]
    items = perturb.candidate_items if perturb_text.has_facts(ev) else perturb_text.candidate_items
    held = items(ev, cfg.seed) if n else []
    metrics = train_and_save(model, tokenizer, cfg, train, held, out / "judge", progress_logger("scorer"))
    write_json(out / METRICS_FILE, metrics)
    return {"metrics": metrics}


def build_checker(cfg, model, tokenizer, world: dict, out: Path) -> dict:
    """A claim checker trained on the scorer split's labelled claims (data/claims.py), measured
    on the eval split's; it needs scene facts to label claims (the built-in world)."""
    recs = read_records(Path(world["path"]) / SCORER_FILE)[: cfg.scorer.n_train_items]
    if not all(r.get("facts") for r in recs):
        raise ValueError("scorer.model=train with scorer.mode=claims labels claims from scene facts, which "
                         "this world has not: give a trained checker (scorer.model=<folder or hub id>)")
    train = claim_records(recs, cfg.seed)  # (true, false) pairs: balanced by construction
    select = cfg.scorer.evidence == "overlap"
    metrics = train_checker(model, tokenizer, train, steps=cfg.scorer.train_steps,
                            learning_rate=cfg.scorer.learning_rate, batch_size=cfg.scorer.train_batch_size,
                            max_length=cfg.scorer.max_length, lm_loss_weight=cfg.scorer.lm_loss_weight,
                            seed=cfg.seed, progress=progress_logger("scorer"), select=select)
    held = read_records(Path(world["path"]) / EVAL_FILE)[: cfg.scorer.n_heldout]
    if held:
        metrics.update(checker_accuracy(model, tokenizer, claim_records(held, cfg.seed), cfg.scorer.max_length,
                                        select=select))
    save_checker(model, tokenizer, out / "judge", cfg.scorer.max_length, cfg.scorer.evidence, "shapes")
    write_json(out / METRICS_FILE, metrics)
    return {"metrics": metrics}


@stage_task("scorer", retries=1)
def scorer_task(key: str, cfg: dict, base: dict, world: dict) -> dict:
    return produce(STAGE, key, lambda out: build_scorer(cfg, base, world, out))


BUILD, TASK = build_scorer, scorer_task  # the stage's logic, and it as a cached Prefect task (flows/runner.py)
