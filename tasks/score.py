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
    meta.update(exact_agreement(rows, cands))
    return meta


def exact_agreement(rows: list[dict], cands: list[dict]) -> dict:
    """Where candidates carry scene facts (the built-in world): how often the judge's pairwise
    preference on this iteration's own candidates matches the exact scorer's (`judge/onpolicy_*`)."""
    from data.perturb import agreement
    from data.scoring import score_shapes

    if not rows or any(c.get("facts") is None for c in cands):
        return {}
    q = {(c["prompt_id"], c["cand_idx"]): score_shapes(c["text"], c["facts"], c["gold"]).quality
         for c in cands}
    items = [{"prompt_id": it["prompt_id"], "cand_idx": it["cand_idx"],
              "qualities": [q[(it["prompt_id"], k)] for k in it["cand_idx"]]}
             for it in judge_items(cands)]
    a = agreement(rows, items)
    return {"onpolicy_agreement": a["judge/agreement"],
            "onpolicy_decisive_pairs": a["judge/n_decisive_pairs"]}


@stage_task("score", retries=1)
def score_task(key: str, cfg: dict, judge: dict, candidates: dict) -> dict:
    return produce(STAGE, key, lambda out: build_scores(cfg, judge, candidates, out))
