"""Task: build the dataset splits of a run as parquet records: the built-in shapes world, or
your tables (`data.world=files`), validated row by row (bad rows -> `rejected_rows.parquet`)."""

from __future__ import annotations

from pathlib import Path

from data.records import write_records
from data.shapes import generate
from data.validate import DataError, Limits, check_share
from tasks.common import config_of, log, stage_task
from tasks.store import state_dir

STAGE, VERSION = "world", 1
SPLITS = ("rationale", "pool", "eval", "scorer")
REJECTED = "rejected_rows.parquet"
REJECT_COLUMNS = ("split", "file", "row", "id", "field", "reason")


def source_files(cfg_dict: dict) -> dict[str, str]:
    """The input digest of the world stage: the tables and image folder of data.world=files."""
    from data.files import source_digest

    cfg = config_of(cfg_dict)
    if cfg.data.world != "files":
        return {}
    f = cfg.data.files
    return {"files": source_digest([p for p in (f.rationale, f.pool, f.eval, f.scorer) if p], f.image_dir)}


def _write_rejected(rows: list[dict], path: Path) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(rows, columns=list(REJECT_COLUMNS)).astype({"id": object}).to_parquet(tmp, index=False)
    tmp.replace(path)


def load_files(cfg_dict: dict, report: Path) -> tuple[dict[str, list[dict]], list[dict]]:
    """Every split of data.world=files, validated; raises DataError (after writing `report`)
    when a split's share of bad rows is above data.max_reject_frac."""
    from data.files import load_split

    cfg = config_of(cfg_dict)
    d, f = cfg.data, cfg.data.files
    limits = Limits(max_image_bytes=f.max_image_bytes, max_image_pixels=f.max_image_pixels)
    caps = {"rationale": d.n_rationale, "pool": d.n_pool, "eval": d.n_eval, "scorer": cfg.scorer.n_train_items}
    need = {"rationale": cfg.rationale_sft.source == "dataset", "scorer": cfg.scorer.model == "train"}
    splits, rejected, failures = {}, [], []
    for split in SPLITS:
        path = getattr(f, split) or (f.rationale if split == "scorer" else None)
        rows, bad, n = load_split(path, split, f.columns, f.image_dir, need.get(split, False), limits)
        rejected += bad
        try:
            check_share(n, bad, d.max_reject_frac, f"data.files.{split} ({path})", str(report))
        except DataError as e:
            failures.append(str(e))
        splits[split] = rows[:caps[split]]
        log()(f"[world] {split}: {len(rows)} of {n} rows valid, {len({b['row'] for b in bad})} rejected")
    if failures:
        _write_rejected(rejected, report)
        raise DataError(" | ".join(failures))
    return splits, rejected


def failed_report(key: str) -> Path:
    """Where the rejected rows of a world stage that stopped on too many bad rows are kept."""
    return state_dir() / "rejected" / f"{key}-{REJECTED}"


def build_world(cfg_dict: dict, out: Path, key: str = "") -> dict:
    """Write `<split>.parquet` for every split and `rejected_rows.parquet`; returns the counts."""
    cfg = config_of(cfg_dict)
    d = cfg.data
    if d.world == "files":
        splits, rejected = load_files(cfg_dict, failed_report(key or "world"))
    else:
        sizes = {"rationale": d.n_rationale, "pool": d.n_pool, "eval": d.n_eval,
                 "scorer": cfg.scorer.n_train_items}
        splits = {s: generate(s, sizes[s], d, cfg.seed) for s in SPLITS}
        rejected = []
    counts = {s: write_records(splits[s], out / f"{s}.parquet") for s in SPLITS}
    _write_rejected(rejected, out / REJECTED)
    by_split = {s: len({r["row"] for r in rejected if r["split"] == s}) for s in SPLITS}
    log()(f"[world] {counts}; rejected rows {by_split}")
    return {"counts": counts, "rejected": by_split}


@stage_task("world")
def world_task(key: str, cfg: dict) -> dict:
    from tasks.store import produce

    return produce(STAGE, key, lambda out: build_world(cfg, out, key))
