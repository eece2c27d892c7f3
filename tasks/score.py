"""Task: the R-Scorer judges each prompt's candidates, pairwise in both orders (stage 3)."""

from __future__ import annotations

from pathlib import Path

from data.records import read_records, write_records
from data.schema import PairScore, PointScore, ReaderMark
from tasks.common import config_of, progress_logger, stage_task  # before prefect: its env
from prefect import task  # noqa: I001
from tasks.store import drop_partial, produce, shard_file

# 2: slot bias and same-answer agreement in the meta; template markers in candidates neutralised
# 3: steering probes in the meta (filler, a copied verdict line, padding; built-in world)
# 4: the reader's verdict per candidate (reader.parquet) when scorer.reader is set
STAGE, VERSION = "score", 4
READS = ("scorer", "model")  # the config this stage reads: its cache key hashes exactly this (tasks/reads.py)
STEER_PROMPTS = 100  # prompts probed per steer: a few seconds of judging
ORACLE = "oracle"  # scorer.model: the exact scorer of the built-in world judges (data/judging.py)


@task(name="score-shard", retries=1)
def score_shard(cfg: dict, judge: dict, candidates: dict, key: str, lo: int, hi: int) -> str:
    """Judging items [lo, hi) on a Ray worker (tasks/distributed.py): its own judge replica;
    the rows go to the stage's shard checkpoint, which the merge reads."""
    f = shard_file(STAGE, key, lo, hi)
    f.parent.mkdir(parents=True, exist_ok=True)
    if not f.is_file():
        c = config_of(cfg, READS, STAGE)
        items = judge_items_of(candidates)[lo:hi]
        judge_fn, (model, tokenizer) = open_judge(c.scorer, c.model.device, judge)
        write_records(judge_fn(model, tokenizer, items, c.scorer, progress_logger(f"score {lo}-{hi}")), f)
    return str(f)


def judge_items_of(candidates: dict) -> list[dict]:
    from data.judging import judge_items

    return judge_items(read_records(Path(candidates["path"]) / "candidates.parquet"))


def open_judge(scorer_cfg, device: str, judge: dict):
    """(score function of scorer_cfg.mode, (model, tokenizer)) of a judge reference."""
    from models.scorer import load_judge, score_pairs, score_points

    # a trained judge is `<output>/judge`; a given one (scorer.model) is its own path or hub id
    where = judge.get("judge_dir") or str(Path(judge["path"]) / "judge")
    judge_fn = score_points if scorer_cfg.mode == "pointwise" else score_pairs
    return judge_fn, load_judge(where, device=device)


def build_scores(cfg_dict: dict, judge: dict, candidates: dict, out: Path, key: str = "") -> dict:
    cfg = config_of(cfg_dict, READS, STAGE)
    cands = read_records(Path(candidates["path"]) / "candidates.parquet")
    meta = judge_candidates(cfg, cfg_dict, judge, candidates, cands, out, key)
    if cfg.scorer.reader:
        meta.update(read_candidates(cfg, cands, out))
    return meta


def read_candidates(cfg, cands: list[dict], out: Path) -> dict:
    """The reader's verdict on every candidate (models/reader.py) -> reader.parquet, which
    curation joins as `supported`; with the world's facts, its agreement with the exact
    scorer's consistency (`reader/agree_consistent`, and on the correct candidates)."""
    from data.scoring import score_shapes
    from models.reader import agreement, load_reader, reader_threshold
    from models.reader import read_candidates as read

    try:
        model, tokenizer = load_reader(cfg.scorer.reader, device=cfg.model.device)
    except ValueError as err:
        raise ValueError(f"scorer.reader: {err}") from err
    threshold = reader_threshold(cfg.scorer.reader, cfg.scorer.reader_threshold)
    rows = read(model, tokenizer, cands, threshold, cfg.scorer.batch_size, progress_logger("read"))
    write_records(rows, out / "reader.parquet", ReaderMark)
    said = [r["supported"] for r in rows if r["supported"] is not None]
    meta = {"reader/supported_share": sum(said) / len(said) if said else None,
            "reader/threshold": threshold}
    if cands and all(c.get("facts") for c in cands):
        ex = [score_shapes(c["text"], c["facts"], str(c["gold"])) for c in cands]
        meta.update(agreement(rows, [e.consistent if e.parsable else None for e in ex],
                              [e.correct for e in ex]))
    return meta


def judge_candidates(cfg, cfg_dict: dict, judge: dict, candidates: dict, cands: list[dict],
                     out: Path, key: str) -> dict:
    from data.judging import judge_items, oracle_pairs, oracle_points

    items = judge_items(cands)
    if cfg.scorer.model == ORACLE:  # the exact scorer in the judge's place (ablation ceiling)
        return _write(cfg, oracle_points(items) if cfg.scorer.mode == "pointwise" else oracle_pairs(items),
                      cands, out)
    if key and cfg.runtime.ray_address:  # shards on Ray workers, merged in item order
        from tasks.distributed import map_shards, shard_bounds

        _, bounds = shard_bounds(len(items), cfg.runtime.ray_workers)
        parts = map_shards(cfg, score_shard, [dict(cfg=cfg_dict, judge=judge, candidates=candidates, key=key,
                                                   lo=lo, hi=hi) for lo, hi in bounds], "score")
        return _write(cfg, [r for f in parts for r in read_records(f)], cands, out)
    judge_fn, (model, tokenizer) = open_judge(cfg.scorer, cfg.model.device, judge)
    meta = _write(cfg, judge_fn(model, tokenizer, items, cfg.scorer, progress_logger("score")), cands, out)
    if cfg.scorer.mode == "pairwise":
        meta.update(steering(model, tokenizer, cfg, cands))
    return meta


def steering(model, tokenizer, cfg, cands: list[dict], n_prompts: int = STEER_PROMPTS) -> dict:
    """The judge's steering probes on this iteration's candidates (models.scorer.steer_rates)."""
    from models.scorer import steer_rates

    return steer_rates(model, tokenizer, cands, cfg.scorer, cfg.seed, n_prompts)


def _write(cfg, rows: list[dict], cands: list[dict], out: Path) -> dict:
    from data.curation import flip_rate
    from data.perturb import onpolicy_agreement, slot_bias

    if cfg.scorer.mode == "pointwise":
        write_records(rows, out / "pointwise_scores.parquet", PointScore)
        return {"n_rows": len(rows), "flip_rate": None}
    write_records(rows, out / "pairwise_scores.parquet", PairScore)
    meta = {"n_rows": len(rows), "flip_rate": flip_rate(rows) if rows else None,
            "slot_bias": slot_bias(rows) if rows else None}
    meta.update(onpolicy_agreement(rows, cands))
    return meta


@stage_task("score", retries=1)
def score_task(key: str, cfg: dict, judge: dict, candidates: dict) -> dict:
    ref = produce(STAGE, key, lambda out: build_scores(cfg, judge, candidates, out, key))
    drop_partial(STAGE, key)  # Ray shards, once merged
    return ref
