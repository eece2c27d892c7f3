"""Task: candidate search of iteration t on its slice of the calibration pool (stage 2)."""

from __future__ import annotations

from pathlib import Path

from data.records import read_records, write_records, as_image
from data.schema import CANDIDATES_FILE, Candidate, GREEDY_FILE, Greedy, POOL_FILE
from infra.common import load_policy, log, progress_logger, stage_task  # before prefect: its env
from prefect import task  # noqa: I001
from infra.store import drop_partial, produce, shard_file, sharded
from models.search import search_candidates
from data.headroom import headroom, warning
from models.generation import generate_greedy
from infra.distributed import map_shards, shard_bounds
from infra.reads import StageConfig

# 2: the greedy responses to the same prompts (greedy.parquet) and the headroom metrics
STAGE, VERSION = "search", 2
READS = ("search", "model", "iterate.prompts_per_iteration")  # the config this stage reads: its cache key hashes exactly this (infra/reads.py)


def pool_slice(n_pool: int, per_iteration: int, iteration: int) -> tuple[int, int]:
    """Iteration t (1-based) takes pool rows [(t-1)P, tP), wrapping around the pool."""
    start = ((iteration - 1) * per_iteration) % max(n_pool, 1)
    return start, start + per_iteration


def search_seed(cfg, iteration: int) -> int:
    """The search's seed of iteration t (one stream per prompt is drawn from it)."""
    return cfg.seed * 1000 + iteration


def _prompts(cfg, world: dict, iteration: int) -> tuple[list[dict], list[dict]]:
    """Iteration t's pool rows and the search items made from them."""
    pool = read_records(Path(world["path"]) / POOL_FILE)
    lo, hi = pool_slice(len(pool), cfg.iterate.prompts_per_iteration, iteration)
    rows = [pool[i % len(pool)] for i in range(lo, hi)]
    items = [{"prompt_id": r["id"], "image": as_image(r["image"], r["id"]), "question": r["question"],
              **({"choices": list(r["choices"])} if r.get("choices") is not None else {})}
             for r in rows]
    return rows, items


@task(name="search-shard", retries=1)
def search_shard(cfg: dict, base: dict, chain: list[dict], world: dict, iteration: int, key: str,
                 lo: int, hi: int) -> str:
    """Items [lo, hi) of iteration t's search, on a Ray worker (infra/distributed.py): its own
    policy replica; the records go to the stage's shard checkpoint, which the merge reads."""
    f = shard_file(STAGE, key, lo, hi)
    f.parent.mkdir(parents=True, exist_ok=True)
    if not f.is_file():  # a retried or resumed shard that finished is not searched again
        c = StageConfig(cfg, READS, STAGE)
        _, items = _prompts(c, world, iteration)
        model, processor = load_policy(c, base, chain)
        write_records(search_candidates(model, processor, items[lo:hi], c.search, seed=search_seed(c, iteration),
                                        progress=progress_logger(f"search {lo}-{hi}")), f)
    return str(f)


def build_search(cfg_dict: dict, base: dict, chain: list[dict], world: dict, iteration: int,
                 out: Path, key: str = "") -> dict:
    cfg = StageConfig(cfg_dict, READS, STAGE)
    rows, items = _prompts(cfg, world, iteration)
    seed = search_seed(cfg, iteration)
    shard_size = cfg.search.shard_size
    if key and cfg.runtime.ray_address:  # the shards on Ray workers; merged below, as checkpoints

        shard_size, bounds = shard_bounds(len(items), cfg.runtime.ray_workers)
        map_shards(cfg, search_shard, [dict(cfg=cfg_dict, base=base, chain=chain, world=world, iteration=iteration,
                                            key=key, lo=lo, hi=hi) for lo, hi in bounds], "search")
    policy: list = []

    def search(part: list[dict], progress=None) -> list[dict]:
        if not policy:  # loaded on first need: a search whose shards are all done loads no model
            policy.append(load_policy(cfg, base, chain))
        model, processor = policy[0]
        return search_candidates(model, processor, part, cfg.search, seed=seed, progress=progress)

    # shards are checkpointed: a kill late in the search resumes from the last finished shard
    # (the random streams are per prompt, so sharding does not change the candidates)
    cands = (sharded(STAGE, key, items, shard_size, search, progress_logger("search")) if key
             else search(items, progress_logger("search")))
    by_id = {r["id"]: r for r in rows}
    options = any(r.get("choices") is not None for r in rows)  # a multiple-choice dataset
    for c in cands:  # gold, the options and the judge's reference travel with each candidate
        src = by_id[c["prompt_id"]]
        c.update(gold=src["answer"], question=src["question"], reference=src.get("reference"),
                 facts=src.get("facts"), family=src.get("family"))
        if options:
            c["choices"] = list(src["choices"]) if src.get("choices") is not None else None
    n = write_records(cands, out / CANDIDATES_FILE, Candidate)
    return {"n_candidates": n, "n_prompts": len(rows), "headroom": _headroom(cfg, policy, base, chain, rows,
                                                                              items, cands, out)}


def _headroom(cfg, policy: list, base: dict, chain: list[dict], rows: list[dict], items: list[dict],
              cands: list[dict], out: Path) -> dict[str, float]:
    """The policy's greedy response to each prompt (greedy.parquet) and what best-of-N adds
    over it (data/headroom.py), logged with a warning when that is nothing."""
    if not policy:
        policy.append(load_policy(cfg, base, chain))
    model, processor = policy[0]
    s = cfg.search
    texts = generate_greedy(model, processor, [it["image"] for it in items], [it["question"] for it in items],
                            max_new_tokens=s.max_sentences * s.max_sentence_tokens, batch_size=s.batch_size)
    write_records([{"prompt_id": it["prompt_id"], "text": t} for it, t in zip(items, texts)], out / GREEDY_FILE, Greedy)
    metrics = headroom(cands, {it["prompt_id"]: t for it, t in zip(items, texts)}, {r["id"]: r for r in rows})
    say = log()
    say("[search] headroom " + " ".join(f"{k.split('/')[1]}={v:.3f}" for k, v in metrics.items()))
    if warning(metrics):
        say(f"[search] WARNING {warning(metrics)}")
    return metrics


@stage_task("search", retries=1)
def search_task(key: str, cfg: dict, base: dict, chain: list[dict], world: dict, iteration: int) -> dict:
    ref = produce(STAGE, key, lambda out: build_search(cfg, base, chain, world, iteration, out, key))
    drop_partial(STAGE, key)
    return ref


BUILD, TASK = build_search, search_task  # the stage's logic, and it as a cached Prefect task (flows/runner.py)
