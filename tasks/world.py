"""Task: build the dataset splits of a run as parquet records: the built-in shapes world, your
tables (`data.world=files`) or a Hugging Face dataset (`data.world=hf`), validated row by row
(bad rows -> `rejected_rows.parquet`).

Your own data is also checked as a whole before any model work: rows too long for the base
model's context are rejected rows; eval rows that also appear in a training split (leakage)
are reported and, above `data.max_leak_frac` of eval, refused; a split with fewer valid rows
than asked for is reported (meta `short`). The shapes world is generated, so none of this
runs there.
"""

from __future__ import annotations

import hashlib
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable

from data.records import write_records
from data.schema import Example, REJECTED_FILE, RejectedRow, SPLIT_FILES
from data.shapes import generate
from data.validate import DataError, Limits, check_lengths, check_share, find_leaks
from infra.common import log, progress_logger, stage_task
from infra.store import state_dir, produce
from infra.reads import StageConfig
from models.builtin import resolve_base
from data.files import source_digest, load_split
from data.hf import FILE_SPLIT, load_hf_split, single_file
from models.chat import render_prompt
from models.loading import load_processor
from models.distill import MAX_FAILED
from models.teacher import TeacherClient, TeacherUnavailable, describe_images

# 2: multiple-choice rows list their options in the question, gold as the option text
# 3: scorer.reference: the dataset's, the teacher's description of each image, or none
STAGE, VERSION = "world", 3
READS = ("data", "model.base", "model.trust_remote_code", "rationale_sft.source", "scorer.model",
         "scorer.n_train_items", "scorer.reference", "teacher")  # the config this stage reads: its cache key hashes exactly this (infra/reads.py)
SPLITS = ("rationale", "pool", "eval", "scorer")
JUDGED_SPLITS = ("pool", "eval", "scorer")  # the splits whose rows the judge reads a reference for
TRAIN_SPLITS = ("rationale", "pool", "scorer")  # what eval rows must not appear in
REJECTED = REJECTED_FILE
REJECT_COLUMNS = tuple(RejectedRow.__annotations__)  # data/schema.py
CAP_FIELDS = {"rationale": "data.n_rationale", "pool": "data.n_pool", "eval": "data.n_eval",
              "scorer": "scorer.n_train_items"}
# a model folder's files that decide token counts: config, tokenizer, processor, chat template
TOKENIZING = ("config.json", "*tokenizer*", "*processor*", "chat_template*", "special_tokens_map.json",
              "added_tokens.json", "vocab.*", "merges.txt", "*.model")

Counter = tuple[Callable[[list[str]], list[int]], int, int]  # (count tokens, image tokens, context)


def model_digest(name: str) -> str:
    """What the length check depends on: a local model folder by its config, tokenizer,
    processor and chat template files (not its weights: retraining keeps the world), a hub id
    by name."""
    p = Path(resolve_base(name)).expanduser()
    if not p.is_dir():
        return f"hub:{name}"
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.is_file() and any(fnmatch(f.name, pat) for pat in TOKENIZING):
            h.update(f"{f.name}:".encode() + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:20]


def source_files(cfg_dict: dict) -> dict[str, str]:
    """The input digest of the world stage: the tables and image folder of data.world=files,
    the dataset of data.world=hf, and for both the base model's tokenizer and config (rows too
    long for it are rejected). The shapes world has none."""
    cfg = StageConfig(cfg_dict, READS, STAGE)
    if cfg.data.world == "hf":  # a local file or folder by content or listing; a hub id by name
        h = cfg.data.hf
        path = Path(h.dataset).expanduser()
        if path.is_file():
            src = source_digest([path], None, list_images=False)
        else:
            src = source_digest([], path) if path.is_dir() else f"hub:{h.dataset}:{h.name or ''}"
        return {"hf": src, "model": model_digest(cfg.model.base)}
    if cfg.data.world != "files":
        return {}
    f = cfg.data.files
    return {"files": source_digest([p for p in (f.rationale, f.pool, f.eval, f.scorer) if p], f.image_dir),
            "model": model_digest(cfg.model.base)}


def _write_rejected(rows: list[dict], path: Path) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(rows, columns=list(REJECT_COLUMNS)).astype({"id": object}).to_parquet(tmp, index=False)
    tmp.replace(path)


def _split_sources(cfg) -> dict[str, tuple[str, str, Callable[..., tuple]]]:
    """Our split -> (where, file as rejections name it,
    loader(need_rationale, limits) -> (records, rejected, rows read, skipped))."""
    d, f = cfg.data, cfg.data.files
    if d.world == "files":
        def table(s: str, path: str) -> Callable[..., tuple]:
            return lambda need, limits: (*load_split(path, s, f.columns, f.image_dir, need, limits,
                                                     f.append_choices), 0)
        paths = {s: getattr(f, s) or (f.rationale if s == "scorer" else None) for s in SPLITS}
        return {s: (f"data.files.{s} ({path})", str(Path(path)), table(s, path)) for s, path in paths.items()}

    h = d.hf
    caps = {"rationale": d.n_rationale, "pool": d.n_pool, "eval": d.n_eval}
    hf_split = {"rationale": h.rationale_split, "pool": h.pool_split, "eval": h.eval_split}
    if single_file(h.dataset):  # one file, one split: ours take consecutive rows of it
        log()(f"[world] data.hf.dataset {h.dataset} is one file: rationale, pool and eval read consecutive "
              f"rows of it (data.hf.*_split {sorted(set(hf_split.values()))} do not apply)")
        hf_split = dict.fromkeys(hf_split, FILE_SPLIT)
    start, used = {}, {}
    for s in ("rationale", "pool", "eval"):  # two of ours on one of theirs: consecutive row ranges
        start[s] = used.get(hf_split[s], 0)
        used[hf_split[s]] = start[s] + caps[s]
    start["scorer"], hf_split["scorer"], caps["scorer"] = 0, hf_split["rationale"], cfg.scorer.n_train_items

    def loader(s):
        return lambda need, limits: load_hf_split(h.dataset, hf_split[s], s, h.mapping, f.columns, need, limits,
                                                  start[s], caps[s], h.name, f.append_choices)
    return {s: (f"data.hf {h.dataset}[{hf_split[s]}]", f"{h.dataset}[{hf_split[s]}]", loader(s)) for s in SPLITS}


def token_counter(cfg) -> Counter | None:
    """(count tokens of texts, image and prompt tokens, context length) of model.base, from its
    tokenizer, processor and config only (no weights); None, logged, where it cannot be read.

    The image and prompt tokens are measured, not derived: the processor renders the chat prompt
    with an empty question and one 336-pixel image, as every stage does (any architecture; a
    dynamic-resolution model spends more on larger images)."""
    from PIL import Image
    from transformers import AutoConfig


    source = resolve_base(cfg.model.base)
    common = {"trust_remote_code": cfg.model.trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **common)
        processor = load_processor(source, config.model_type, common)
        max_len = getattr(config.get_text_config(), "max_position_embeddings", None)
        prompt = processor(images=[Image.new("RGB", (336, 336))], text=[render_prompt(processor, "")])
        image_tokens = len(prompt["input_ids"][0])
    except Exception as e:  # noqa: BLE001 - offline, missing files, an unusual processor
        log()(f"[world] length check skipped: cannot read the processor of model.base={cfg.model.base!r} "
              f"({type(e).__name__}: {str(e)[:120]})")
        return None
    if not isinstance(max_len, int):
        log()(f"[world] length check skipped: model.base={cfg.model.base!r} states no max_position_embeddings")
        return None
    tok = processor.tokenizer

    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tok(list(texts), add_special_tokens=False)["input_ids"]]
    return count, image_tokens, max_len


def check_leakage(splits: dict[str, list[dict]], max_frac: float) -> dict[str, int]:
    """Eval rows also in a training split, per pair (`eval~rationale`, ...); raises DataError
    when their share of eval is above `max_frac` (the held-out score would be inflated)."""
    counts, leaked = {}, set()
    ev = splits["eval"]
    for s in TRAIN_SPLITS:
        ids = find_leaks(ev, splits[s])
        counts[f"eval~{s}"] = len(ids)
        leaked.update(ids)
        if ids:
            log()(f"[world] leakage eval~{s}: {len(ids)} eval rows also in {s} (same id, or same image and "
                  f"question), e.g. {ids[:3]}")
    if ev and len(leaked) / len(ev) > max_frac:
        pairs = ", ".join(f"{k} {n}" for k, n in counts.items() if n)
        raise DataError(f"{len(leaked)} of {len(ev)} eval rows ({len(leaked) / len(ev):.1%}) also appear in "
                        f"training splits ({pairs}; e.g. {sorted(leaked)[:3]}), above data.max_leak_frac="
                        f"{max_frac:g}: held-out questions the model trains on inflate its score; remove them "
                        "from the eval data or raise data.max_leak_frac")
    return counts


def load_files(cfg_dict: dict, report: Path) -> tuple[dict[str, list[dict]], list[dict], dict]:
    """Every split of data.world=files or hf, validated; raises DataError (after writing
    `report`) when a split's share of bad rows is above data.max_reject_frac, or when too many
    eval rows leak into training. Also returns meta: the rows skipped by design per split
    (ScienceQA's text-only rows), the leakage counts and the splits short of their size."""
    cfg = StageConfig(cfg_dict, READS, STAGE)
    d, f = cfg.data, cfg.data.files
    limits = Limits(max_image_bytes=f.max_image_bytes, max_image_pixels=f.max_image_pixels,
                    allow_outside_image_dir=f.allow_outside_image_dir)
    caps = {"rationale": d.n_rationale, "pool": d.n_pool, "eval": d.n_eval, "scorer": cfg.scorer.n_train_items}
    need = {"rationale": cfg.rationale_sft.source == "dataset", "scorer": cfg.scorer.model == "train"}
    counter = token_counter(cfg)
    splits, rejected, failures, skipped, short = {}, [], [], {}, {}
    for split, (where, file, load) in _split_sources(cfg).items():
        rows, bad, n, skipped[split] = load(need.get(split, False), limits)
        if counter:
            rows, long = check_lengths(rows, *counter, split, file)
            bad = sorted(bad + long, key=lambda b: b["row"])
        rejected += bad
        try:
            check_share(n, bad, d.max_reject_frac, where, str(report))
        except DataError as e:
            failures.append(str(e))
        splits[split] = [{k: v for k, v in r.items() if k != "_row"} for r in rows[:caps[split]]]
        extra = f", {skipped[split]} skipped (text-only)" if skipped[split] else ""
        log()(f"[world] {split}: {len(rows)} of {n} rows valid, {len({b['row'] for b in bad})} rejected{extra}")
        if len(rows) < caps[split]:
            short[split] = {"asked": caps[split], "got": len(rows)}
            log()(f"[world] {split}: asked for {caps[split]} rows ({CAP_FIELDS[split]}), the data has "
                  f"{len(rows)} valid")
    if failures:
        _write_rejected(rejected, report)
        raise DataError("\n".join(failures))
    leakage = check_leakage(splits, d.max_leak_frac)
    return splits, rejected, {"skipped": skipped, "leakage": leakage, "short": short}


def set_references(cfg, splits: dict[str, list[dict]]) -> dict[str, int]:
    """scorer.reference on the judged splits, in place: 'dataset' keeps each row's own,
    'none' blanks it, 'teacher' writes the teacher's description of each image (cached in the
    state folder: a re-run asks nothing twice; a row the teacher gave none for has none).
    Returns how many rows of each judged split have a reference."""
    how = cfg.scorer.reference
    if how == "none":
        for s in JUDGED_SPLITS:
            for r in splits[s]:
                r["reference"] = None
    elif how == "teacher":
        client = TeacherClient(cfg.teacher, cache_dir=state_dir() / "teacher-cache")
        rows = [r for s in JUDGED_SPLITS for r in splits[s]]
        said, dropped = describe_images(client, rows, progress_logger("teacher describe"))
        failed = [d for d in dropped if d["reason"] == "request_failed"]
        if rows and len(failed) > MAX_FAILED * len(rows):
            raise TeacherUnavailable(f"teacher {client.url}: {len(failed)} of {len(rows)} describe requests failed "
                                     f"(last: {failed[-1]['raw']}); the answered ones are cached: re-run to resume")
        by_id = {(d["split"], d["id"]): d["reference"] for d in said}
        for r in rows:
            r["reference"] = by_id.get((r["split"], r["id"]))
        log()(f"[world] scorer.reference=teacher: {len(said)} of {len(rows)} images described by "
              f"{cfg.teacher.model}; {client.hits} from the cache, {client.misses} asked")
    return {s: sum(bool(r.get("reference")) for r in splits[s]) for s in JUDGED_SPLITS}


def failed_report(key: str) -> Path:
    """Where the rejected rows of a world stage that stopped on too many bad rows are kept."""
    return state_dir() / "rejected" / f"{key}-{REJECTED}"


def build_world(cfg_dict: dict, out: Path, key: str = "") -> dict:
    """Write `<split>.parquet` for every split and `rejected_rows.parquet`; returns the counts
    (and for your own data: skipped rows, leakage, splits short of their size)."""
    cfg = StageConfig(cfg_dict, READS, STAGE)
    d = cfg.data
    extra: dict = {"skipped": {}}
    if d.world in ("files", "hf"):
        splits, rejected, extra = load_files(cfg_dict, failed_report(key or "world"))
    else:
        sizes = {"rationale": d.n_rationale, "pool": d.n_pool, "eval": d.n_eval,
                 "scorer": cfg.scorer.n_train_items}
        splits = {s: generate(s, sizes[s], d, cfg.seed) for s in SPLITS}
        rejected = []
    extra["references"] = set_references(cfg, splits)
    counts = {s: write_records(splits[s], out / SPLIT_FILES[s], Example) for s in SPLITS}
    _write_rejected(rejected, out / REJECTED)
    by_split = {s: len({r["row"] for r in rejected if r["split"] == s}) for s in SPLITS}
    log()(f"[world] {counts}; rejected rows {by_split}")
    return {"counts": counts, "rejected": by_split, **extra}


@stage_task("world")
def world_task(key: str, cfg: dict) -> dict:
    return produce(STAGE, key, lambda out: build_world(cfg, out, key))


def key_parts(cfg) -> tuple[dict, dict]:
    """The world's inputs are its source files (your tables, a dataset) and the base model's
    tokenizer; the shapes world has none."""
    return {}, source_files(cfg)


BUILD, TASK = build_world, world_task  # the stage's logic, and it as a cached Prefect task (flows/runner.py)
