"""Task: confidence-weighted preference curation (stage 4)."""

from __future__ import annotations

from pathlib import Path

from data.records import read_records, write_records
from data.schema import (
    CANDIDATES_FILE, CANDIDATE_SCORES_FILE, CandidateScore, MARKS_FILE, METRICS_FILE, PAIRS_FILE,
    PAIR_SCORES_FILE, POINT_SCORES_FILE, PreferencePair, READER_FILE,
)
from infra.common import log, stage_task
from infra.store import produce, write_json
from infra.reads import StageConfig
from data.curation import curate
from data.claims import WEIGHTS, decided_by
from data.judging import pair_quality

# 2: the reader's `supported` joined from the score stage
# 3: scorer.mode=claims: each pair says which mark decided it (`decided_by`); its factual mark
#    joined for curation.require_factual_chosen
# 4: the built-in world: the exact quality of the chosen and rejected sides (`curate/exact/*`)
STAGE, VERSION = "curate", 4
READS = ("curation",)  # the config this stage reads: its cache key hashes exactly this (infra/reads.py)


def build_pairs(cfg_dict: dict, candidates: dict, scores: dict, out: Path, key: str = "") -> dict:
    cfg = StageConfig(cfg_dict, READS, STAGE)
    cands = read_records(Path(candidates["path"]) / CANDIDATES_FILE)
    reader_file = Path(scores["path"]) / READER_FILE
    if reader_file.exists():  # scorer.reader: which candidates' rationales imply their answers
        said = {(r["prompt_id"], int(r["cand_idx"])): r["supported"] for r in read_records(reader_file)}
        for c in cands:
            c["supported"] = said.get((c["prompt_id"], int(c["cand_idx"])))
    marks_file = Path(scores["path"]) / MARKS_FILE
    marks = read_records(marks_file) if marks_file.exists() else []  # scorer.mode=claims
    factual = {(m["prompt_id"], int(m["cand_idx"])): m["factual"] >= 0.5 for m in marks}
    for c in cands:
        c["factual"] = factual.get((c["prompt_id"], int(c["cand_idx"])))
    pair_file = Path(scores["path"]) / PAIR_SCORES_FILE
    point_file = Path(scores["path"]) / POINT_SCORES_FILE
    kwargs = {}
    if cfg.curation.preference != "answer_only":
        if pair_file.exists():
            kwargs["pair_rows"] = read_records(pair_file)
        else:
            kwargs["point_rows"] = read_records(point_file)
    result = curate(cands, kwargs.pop("pair_rows", None), cfg.curation,
                    point_rows=kwargs.get("point_rows"), prompt_fields=("question", "gold"))
    metrics = result.metrics()
    if marks:  # scorer.mode=claims: which of correct, consistent, factual decided each pair
        metrics.update(add_decisions(result.pairs, marks))
    metrics.update(pair_quality(result.pairs, cands))  # {} without scene facts
    write_records(result.pairs, out / PAIRS_FILE, PreferencePair)
    write_records(result.scores, out / CANDIDATE_SCORES_FILE, CandidateScore)
    write_json(out / METRICS_FILE, {"metrics": metrics, "dropped": result.dropped})
    log()(f"[curate] kept {result.kept}/{result.n_prompts}, dropped {result.dropped}")
    return {"metrics": metrics, "dropped": result.dropped}


def add_decisions(pairs: list[dict], marks: list[dict]) -> dict[str, float]:
    """Sets each pair's `decided_by` (data/claims.py) and counts them: `curate/decided_by/<mark>`."""
    at = {(m["prompt_id"], int(m["cand_idx"])): m for m in marks}
    for p in pairs:
        p["decided_by"] = decided_by(at[(p["prompt_id"], p["chosen_idx"])], at[(p["prompt_id"], p["rejected_idx"])])
    return {f"curate/decided_by/{k}": float(sum(p["decided_by"] == k for p in pairs))
            for k in WEIGHTS} | {"curate/decided_by/none": float(sum(p["decided_by"] is None for p in pairs))}


@stage_task("curate")
def curate_task(key: str, cfg: dict, candidates: dict, scores: dict) -> dict:
    return produce(STAGE, key, lambda out: build_pairs(cfg, candidates, scores, out))


BUILD, TASK = build_pairs, curate_task  # the stage's logic, and it as a cached Prefect task (flows/runner.py)
