"""Task: the R-Scorer judges each prompt's candidates, pairwise in both orders (stage 3)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from data.records import read_records, write_records
from tasks.common import config_of, progress_logger, stage_task
from tasks.store import produce

STAGE, VERSION = "score", 1


def judge_items(cands: list[dict]) -> list[dict]:
    """Group candidate rows into one judging item per prompt (candidates in cand_idx order)."""
    groups: dict = defaultdict(list)
    for c in cands:
        groups[c["prompt_id"]].append(c)
    items = []
    for pid, cs in groups.items():
        cs.sort(key=lambda c: c["cand_idx"])
        items.append({"prompt_id": pid, "question": cs[0]["question"],
                      "reference": cs[0].get("reference") or "", "gold": cs[0].get("gold"),
                      "candidates": [c["text"] for c in cs], "cand_idx": [c["cand_idx"] for c in cs]})
    return items


def build_scores(cfg_dict: dict, judge: dict, candidates: dict, out: Path) -> dict:
    from data.curation import flip_rate
    from data.perturb import onpolicy_agreement
    from models.scorer import load_judge, score_pairs, score_points

    cfg = config_of(cfg_dict)
    # a trained judge is `<output>/judge`; a given one (scorer.model) is its own path or hub id
    where = judge.get("judge_dir") or str(Path(judge["path"]) / "judge")
    model, tokenizer = load_judge(where, device=cfg.model.device)
    cands = read_records(Path(candidates["path"]) / "candidates.parquet")
    items = judge_items(cands)
    if cfg.scorer.mode == "pointwise":
        rows = score_points(model, tokenizer, items, cfg.scorer, progress_logger("score"))
        write_records(rows, out / "pointwise_scores.parquet")
        return {"n_rows": len(rows), "flip_rate": None}
    rows = score_pairs(model, tokenizer, items, cfg.scorer, progress_logger("score"))
    write_records(rows, out / "pairwise_scores.parquet")
    meta = {"n_rows": len(rows), "flip_rate": flip_rate(rows) if rows else None}
    meta.update(onpolicy_agreement(rows, cands))
    return meta


@stage_task("score", retries=1)
def score_task(key: str, cfg: dict, judge: dict, candidates: dict) -> dict:
    return produce(STAGE, key, lambda out: build_scores(cfg, judge, candidates, out))
