"""Task: the R-Scorer judges each prompt's candidates, pairwise in both orders (stage 3)."""

from __future__ import annotations

from pathlib import Path

from data.records import read_records, write_records
from tasks.common import config_of, progress_logger, stage_task
from tasks.store import produce

STAGE, VERSION = "score", 1
ORACLE = "oracle"  # scorer.model: the exact scorer of the built-in world judges (data/judging.py)


def build_scores(cfg_dict: dict, judge: dict, candidates: dict, out: Path) -> dict:
    from data.judging import judge_items, oracle_pairs, oracle_points
    from models.scorer import load_judge, score_pairs, score_points

    cfg = config_of(cfg_dict)
    cands = read_records(Path(candidates["path"]) / "candidates.parquet")
    items = judge_items(cands)
    if cfg.scorer.model == ORACLE:  # the exact scorer in the judge's place (ablation ceiling)
        return _write(cfg, oracle_points(items) if cfg.scorer.mode == "pointwise" else oracle_pairs(items),
                      cands, out)
    # a trained judge is `<output>/judge`; a given one (scorer.model) is its own path or hub id
    where = judge.get("judge_dir") or str(Path(judge["path"]) / "judge")
    model, tokenizer = load_judge(where, device=cfg.model.device)
    judge_fn = score_points if cfg.scorer.mode == "pointwise" else score_pairs
    return _write(cfg, judge_fn(model, tokenizer, items, cfg.scorer, progress_logger("score")), cands, out)


def _write(cfg, rows: list[dict], cands: list[dict], out: Path) -> dict:
    from data.curation import flip_rate
    from data.perturb import onpolicy_agreement

    if cfg.scorer.mode == "pointwise":
        write_records(rows, out / "pointwise_scores.parquet")
        return {"n_rows": len(rows), "flip_rate": None}
    write_records(rows, out / "pairwise_scores.parquet")
    meta = {"n_rows": len(rows), "flip_rate": flip_rate(rows) if rows else None}
    meta.update(onpolicy_agreement(rows, cands))
    return meta


@stage_task("score", retries=1)
def score_task(key: str, cfg: dict, judge: dict, candidates: dict) -> dict:
    return produce(STAGE, key, lambda out: build_scores(cfg, judge, candidates, out))
