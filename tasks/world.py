"""Task: build the dataset splits of a run as parquet records: the built-in shapes world, your
tables (`data.world=files`) or a Hugging Face dataset (`data.world=hf`), validated row by row
(bad rows -> `rejected_rows.parquet`)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from data.records import write_records
from data.shapes import generate
from data.validate import DataError, Limits, check_share
from tasks.common import config_of, log, stage_task
from tasks.store import state_dir

# 2: multiple-choice rows list their options in the question, gold as the option text
STAGE, VERSION = "world", 2
SPLITS = ("rationale", "pool", "eval", "scorer")
REJECTED = "rejected_rows.parquet"
REJECT_COLUMNS = ("split", "file", "row", "id", "field", "reason")


def source_files(cfg_dict: dict) -> dict[str, str]:
    """The input digest of the world stage: the tables and image folder of data.world=files."""
    from data.files import source_digest

    cfg = config_of(cfg_dict)
    if cfg.data.world == "hf":  # a local dataset folder by its listing; a hub id by name
        h = cfg.data.hf
        folder = Path(h.dataset).expanduser()
        return {"hf": source_digest([], folder) if folder.is_dir() else f"hub:{h.dataset}:{h.name or ''}"}
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


def _split_sources(cfg) -> dict[str, tuple[str, Callable[..., tuple]]]:
    """Our split -> (where, loader(need_rationale, limits) -> (records, rejected, rows read, skipped))."""
    d, f = cfg.data, cfg.data.files
    if d.world == "files":
        from data.files import load_split

        def table(s: str, path: str) -> Callable[..., tuple]:
            return lambda need, limits: (*load_split(path, s, f.columns, f.image_dir, need, limits,
                                                     f.append_choices), 0)
        paths = {s: getattr(f, s) or (f.rationale if s == "scorer" else None) for s in SPLITS}
        return {s: (f"data.files.{s} ({path})", table(s, path)) for s, path in paths.items()}
    from data.hf import load_hf_split

    h = d.hf
    caps = {"rationale": d.n_rationale, "pool": d.n_pool, "eval": d.n_eval}
    hf_split = {"rationale": h.rationale_split, "pool": h.pool_split, "eval": h.eval_split}
    start, used = {}, {}
    for s in ("rationale", "pool", "eval"):  # two of ours on one of theirs: consecutive row ranges
        start[s] = used.get(hf_split[s], 0)
        used[hf_split[s]] = start[s] + caps[s]
    start["scorer"], hf_split["scorer"], caps["scorer"] = 0, h.rationale_split, cfg.scorer.n_train_items

    def loader(s):
        return lambda need, limits: load_hf_split(h.dataset, hf_split[s], s, h.mapping, f.columns, need, limits,
                                                  start[s], caps[s], h.name, f.append_choices)
    return {s: (f"data.hf {h.dataset}[{hf_split[s]}]", loader(s)) for s in SPLITS}


def load_files(cfg_dict: dict, report: Path) -> tuple[dict[str, list[dict]], list[dict], dict[str, int]]:
    """Every split of data.world=files or hf, validated; raises DataError (after writing
    `report`) when a split's share of bad rows is above data.max_reject_frac. Also returns the
    rows skipped by design per split (ScienceQA's text-only rows)."""
    cfg = config_of(cfg_dict)
    d, f = cfg.data, cfg.data.files
    limits = Limits(max_image_bytes=f.max_image_bytes, max_image_pixels=f.max_image_pixels)
    caps = {"rationale": d.n_rationale, "pool": d.n_pool, "eval": d.n_eval, "scorer": cfg.scorer.n_train_items}
    need = {"rationale": cfg.rationale_sft.source == "dataset", "scorer": cfg.scorer.model == "train"}
    splits, rejected, failures, skipped = {}, [], [], {}
    for split, (where, load) in _split_sources(cfg).items():
        rows, bad, n, skipped[split] = load(need.get(split, False), limits)
        rejected += bad
        try:
            check_share(n, bad, d.max_reject_frac, where, str(report))
        except DataError as e:
            failures.append(str(e))
        splits[split] = rows[:caps[split]]
        extra = f", {skipped[split]} skipped (text-only)" if skipped[split] else ""
        log()(f"[world] {split}: {len(rows)} of {n} rows valid, {len({b['row'] for b in bad})} rejected{extra}")
    if failures:
        _write_rejected(rejected, report)
        raise DataError(" | ".join(failures))
    return splits, rejected, skipped


def failed_report(key: str) -> Path:
    """Where the rejected rows of a world stage that stopped on too many bad rows are kept."""
    return state_dir() / "rejected" / f"{key}-{REJECTED}"


def build_world(cfg_dict: dict, out: Path, key: str = "") -> dict:
    """Write `<split>.parquet` for every split and `rejected_rows.parquet`; returns the counts."""
    cfg = config_of(cfg_dict)
    d = cfg.data
    skipped: dict[str, int] = {}
    if d.world in ("files", "hf"):
        splits, rejected, skipped = load_files(cfg_dict, failed_report(key or "world"))
    else:
        sizes = {"rationale": d.n_rationale, "pool": d.n_pool, "eval": d.n_eval,
                 "scorer": cfg.scorer.n_train_items}
        splits = {s: generate(s, sizes[s], d, cfg.seed) for s in SPLITS}
        rejected = []
    counts = {s: write_records(splits[s], out / f"{s}.parquet") for s in SPLITS}
    _write_rejected(rejected, out / REJECTED)
    by_split = {s: len({r["row"] for r in rejected if r["split"] == s}) for s in SPLITS}
    log()(f"[world] {counts}; rejected rows {by_split}")
    return {"counts": counts, "rejected": by_split, "skipped": skipped}


@stage_task("world")
def world_task(key: str, cfg: dict) -> dict:
    from tasks.store import produce

    return produce(STAGE, key, lambda out: build_world(cfg, out, key))
