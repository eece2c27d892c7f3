"""Task: candidate search of iteration t on its slice of the calibration pool (stage 2)."""

from __future__ import annotations

from pathlib import Path

from data.records import read_records, write_records
from tasks.common import config_of, load_policy, progress_logger, stage_task
from tasks.store import drop_partial, produce, sharded

STAGE, VERSION = "search", 1


def pool_slice(n_pool: int, per_iteration: int, iteration: int) -> tuple[int, int]:
    """Iteration t (1-based) takes pool rows [(t-1)P, tP), wrapping around the pool."""
    start = ((iteration - 1) * per_iteration) % max(n_pool, 1)
    return start, start + per_iteration


def build_search(cfg_dict: dict, base: dict, chain: list[dict], world: dict, iteration: int,
                 out: Path, key: str = "") -> dict:
    from models.search import search_candidates
    from models.sft import as_image

    cfg = config_of(cfg_dict)
    model, processor = load_policy(cfg, base, chain)
    pool = read_records(Path(world["path"]) / "pool.parquet")
    lo, hi = pool_slice(len(pool), cfg.iterate.prompts_per_iteration, iteration)
    rows = [pool[i % len(pool)] for i in range(lo, hi)]
    items = [{"prompt_id": r["id"], "image": as_image(r["image"], r["id"]), "question": r["question"],
              **({"choices": list(r["choices"])} if r.get("choices") is not None else {})}
             for r in rows]
    seed = cfg.seed * 1000 + iteration
    # shards are checkpointed: a kill late in the search resumes from the last finished shard
    # (the random streams are per prompt, so sharding does not change the candidates)
    cands = sharded(STAGE, key, items, cfg.search.shard_size,
                    lambda part, progress: search_candidates(model, processor, part, cfg.search, seed=seed,
                                                             progress=progress),
                    progress_logger("search")) if key else search_candidates(
        model, processor, items, cfg.search, seed=seed, progress=progress_logger("search"))
    by_id = {r["id"]: r for r in rows}
    for c in cands:  # gold and the judge's reference travel with each candidate
        src = by_id[c["prompt_id"]]
        c.update(gold=src["answer"], question=src["question"], reference=src.get("reference"),
                 facts=src.get("facts"), family=src.get("family"))
    n = write_records(cands, out / "candidates.parquet")
    return {"n_candidates": n, "n_prompts": len(rows)}


@stage_task("search", retries=1)
def search_task(key: str, cfg: dict, base: dict, chain: list[dict], world: dict, iteration: int) -> dict:
    ref = produce(STAGE, key, lambda out: build_search(cfg, base, chain, world, iteration, out, key))
    drop_partial(STAGE, key)
    return ref
