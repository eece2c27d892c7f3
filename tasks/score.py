"""Task: the R-Scorer judges each prompt's candidates, pairwise in both orders (stage 3).

The judge (pair judge, pointwise ablation, claims judge or oracle, with the reader) is opened
through models/judge.py; this task writes what it gives: pairwise_scores.parquet (or
pointwise_scores.parquet), marks.parquet (claims), reader.parquet (with scorer.reader), and its
diagnostics as the stage's meta.
"""

from __future__ import annotations

from pathlib import Path

from data.judging import judge_items
from data.records import read_records, write_records
from data.schema import (
    CANDIDATES_FILE, CandidateMark, MARKS_FILE, PAIR_SCORES_FILE, POINT_SCORES_FILE, PairScore, PointScore, READER_FILE, ReaderMark,
)
from models.judge import ORACLE, Judge, open_judge
from infra.common import progress_logger, stage_task  # before prefect: its env
from prefect import task  # noqa: I001
from infra.refs import reader_digest
from infra.store import drop_partial, produce, shard_file
from infra.distributed import map_shards, shard_bounds
from infra.reads import StageConfig

# 2: slot bias and same-answer agreement in the meta; template markers in candidates neutralised
# 3: steering probes in the meta (filler, a copied verdict line, padding; built-in world)
# 4: the reader's verdict per candidate (reader.parquet) when scorer.reader is set
# 5: scorer.mode=claims: per-candidate marks (marks.parquet) and pair rows worked out from them
STAGE, VERSION = "score", 5
READS = ("scorer", "model")  # the config this stage reads: its cache key hashes exactly this (infra/reads.py)
__all__ = ["ORACLE", "judge_for", "score_task"]


def judge_for(scorer_cfg, judge: dict, device: str, seed: int = 0) -> Judge:
    """The judge of a judge reference (flows/pipeline.py): a trained one is `<output>/judge`, a
    given one (scorer.model) its own path or hub id, the oracle none."""
    where = None if scorer_cfg.model == ORACLE else (judge.get("judge_dir") or str(Path(judge["path"]) / "judge"))
    # scorer.reader=distill: the reader distilled with the checker lives in its folder (tasks/distil.py)
    reader_at = str(Path(where) / "reader") if where and scorer_cfg.reader == "distill" else None
    return open_judge(scorer_cfg, where, device, seed, reader_at)


@task(name="score-shard", retries=1)
def score_shard(cfg: dict, judge: dict, candidates: dict, key: str, lo: int, hi: int) -> str:
    """Judging items [lo, hi) on a Ray worker (infra/distributed.py): its own judge replica;
    the pair rows go to the stage's shard checkpoint, which the merge reads."""
    f = shard_file(STAGE, key, lo, hi)
    f.parent.mkdir(parents=True, exist_ok=True)
    if not f.is_file():
        c = StageConfig(cfg, READS, STAGE)
        items = judge_items(read_records(Path(candidates["path"]) / CANDIDATES_FILE))[lo:hi]
        pairs, _, _ = judge_for(c.scorer, judge, c.model.device, c.seed).verdicts(items, progress_logger(f"score {lo}-{hi}"))
        write_records(pairs, f, PairScore)
    return str(f)


def build_scores(cfg_dict: dict, judge: dict, candidates: dict, out: Path, key: str = "") -> dict:
    cfg = StageConfig(cfg_dict, READS, STAGE)
    cands = read_records(Path(candidates["path"]) / CANDIDATES_FILE)
    pairs = None
    # pair judges on Ray workers, merged in item order; the claims judge's inputs are a few
    # dozen tokens and the oracle has no model, so they stay here
    if key and cfg.runtime.ray_address and cfg.scorer.model != ORACLE and cfg.scorer.mode == "pairwise":
        _, bounds = shard_bounds(len(judge_items(cands)), cfg.runtime.ray_workers)
        parts = map_shards(cfg, score_shard, [dict(cfg=cfg_dict, judge=judge, candidates=candidates, key=key,
                                                   lo=lo, hi=hi) for lo, hi in bounds], "score")
        pairs = [r for f in parts for r in read_records(f)]
    result = judge_for(cfg.scorer, judge, cfg.model.device, cfg.seed).judge(cands, progress_logger("score"),
                                         progress_logger("read"), pairs=pairs)
    if result.points is not None:
        write_records(result.points, out / POINT_SCORES_FILE, PointScore)
    if result.pairs is not None:
        write_records(result.pairs, out / PAIR_SCORES_FILE, PairScore)
    if result.marks is not None:
        write_records(result.marks, out / MARKS_FILE, CandidateMark)
    if result.reads is not None:
        write_records(result.reads, out / READER_FILE, ReaderMark)
    return result.diagnostics


@stage_task("score", retries=1)
def score_task(key: str, cfg: dict, judge: dict, candidates: dict) -> dict:
    ref = produce(STAGE, key, lambda out: build_scores(cfg, judge, candidates, out, key))
    drop_partial(STAGE, key)  # Ray shards, once merged
    return ref


def key_parts(cfg, judge: dict, candidates: dict) -> tuple[dict, dict]:
    """The judge and the candidates, and a given reader's content (scorer.reader: a retrained
    reader at the same path is a new input; a distilled one is inside the judge's digest)."""
    reader = reader_digest(StageConfig(cfg, READS, STAGE).scorer.reader)  # its world was checked at the run's start
    return {}, {"judge": judge["digest"], "candidates": candidates["digest"], **({"reader": reader} if reader else {})}


BUILD, TASK = build_scores, score_task  # the stage's logic, and it as a cached Prefect task (flows/runner.py)
